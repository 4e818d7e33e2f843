"""The miner's Celery app: a plain worker plus worker signals.

``celery -A miners worker -Q gpu-<id> -n gpu-<id>@%h`` is all an operator types.
When the worker is set up it finds its miner id (``MIA_MINER_ID``, else the
``gpu-<id>`` queue it was given), loads its engine and adds the ``shared`` queue after
its own (unless it is drained: ``miners.intake`` adds and cancels ``shared`` from then
on); once it consumes, it registers and starts heartbeating; when it shuts down it
says so at once, so dispatch stops before the TTL would notice.

With ``MIA_AUTOTUNE=1`` the engine is loaded earlier, at ``worker_init``: the slot
count ``miners.autotune`` chooses there becomes the worker's concurrency before
Celery builds the pool from it (the hook Celery itself uses to resolve ``-c auto``),
and the miner's settings get the same count, so its heartbeat's ``slots`` (what
dispatch reserves against) is the number of jobs its pool really runs at once. The
choice wins over ``-c``. Logging is not set up yet at that point, so the choice is
logged with the "ready" line.

Each time the worker's consumer connects (at start, and again after it lost Redis),
before it consumes, ``PutBack`` returns to their queue the jobs Celery let go of when
the connection dropped (``miners.bookkeeping``, "Let go of").
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import redis
from celery import Celery, bootsteps, current_app, signals
from celery.worker import state as worker_state

from miners.autotune import Tuning, tune
from miners.engines import Loaded, load_engine
from miners.heartbeat import HeartbeatSender, key_file
from miners.runtime import MinerRuntime
from tasks import logs, tracing
from tasks.broker import qos
from tasks.celery_app import create_celery
from tasks.errors import ConfigError
from tasks.jobs import GENERATE
from tasks.keys import SHARED_QUEUE, miner_from_queue
from tasks.settings import Settings
from tasks.tokens import registration_token

log = logging.getLogger(__name__)


class MinerApp(Celery):
    """A Celery app that carries the miner's runtime once the worker is set up."""

    runtime: MinerRuntime | None = None
    heartbeats: HeartbeatSender | None = None
    settings: Settings
    tuned: tuple[Loaded, Tuning] | None = None
    tune_note: str = ""  # what went wrong with auto-tuning, logged once logging is set up


class PutBack(bootsteps.StartStopStep):
    """A consumer step: once connected, before consuming, the jobs this process noted as
    held that Celery no longer runs or holds (nor its pool: ``miners.thread``) go back to
    their queue."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: Any) -> None:
        runtime = getattr(parent.app, "runtime", None)
        if runtime is None:
            return
        kept = {r.id for r in (*worker_state.active_requests, *worker_state.reserved_requests)}
        waiting = getattr(parent.pool, "waiting", None)  # miners.thread.TaskPool's
        kept |= waiting() if waiting is not None else set()
        try:
            moved = runtime.books.put_back(kept)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # kombu's connection errors: the consumer connects again, and this runs again
        except redis.RedisError as exc:  # refused (an ACL, a read-only replica): not fatal
            log.error("could not put back the jobs dropped with the connection: %s", exc)
            return
        if moved:
            log.warning("put %d job(s) back on their queue: dropped with the connection", moved)


def create_miner_app(settings: Settings | None = None) -> MinerApp:
    settings = settings or Settings.from_env()
    app: MinerApp = create_celery("miners", settings, cls=MinerApp)
    app.settings = settings
    app.steps["consumer"].add(PutBack)
    app.conf.worker_pool = "miners.thread:TaskPool"  # Celery's threads, and what they hold
    return app


def miner_id_for(settings: Settings, queues: list[str], nodename: str) -> str:
    """``MIA_MINER_ID``, else the id in the worker's ``gpu-<id>`` queue or node name."""
    if settings.miner_id:
        return settings.miner_id
    for name in [*queues, nodename.split("@")[0]]:
        found = miner_from_queue(name)
        if found:
            return found
    raise ConfigError("a miner needs a queue gpu-<id>: celery -A miners worker -Q gpu-<id>")


def _shut_down(reason: str) -> None:
    """A revoked miner stops taking work: a warm shutdown, as Ctrl-C would."""
    log.error("stopping this worker: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


@signals.worker_init.connect
def _autotune(sender: Any, **_: Any) -> None:
    app = sender.app
    if not isinstance(app, MinerApp) or not app.settings.autotune:
        return
    try:
        loaded, tuning = tune(app.settings)
    except Exception as exc:  # noqa: BLE001 - the miner still starts, with MIA_SLOTS
        app.tune_note = f"auto-tuning failed, serving with MIA_SLOTS: {exc!r}"
        return
    if sender.concurrency != max(app.settings.slots, 1):
        app.tune_note = f"the tuned slots replace -c {sender.concurrency}"
    app.tuned = loaded, tuning
    app.settings = app.settings.with_overrides(slots=tuning.choice.slots)
    sender.concurrency = tuning.choice.slots


@signals.celeryd_after_setup.connect
def _setup_miner(sender: str, instance: Any, **_: Any) -> None:
    app = instance.app
    if not isinstance(app, MinerApp):
        return
    tracing.setup("mia-miner")
    queues = list(app.amqp.queues.consume_from or app.amqp.queues)
    miner_id = miner_id_for(app.settings, queues, sender)
    loaded = app.tuned[0] if app.tuned else load_engine(app.settings)
    app.runtime = MinerRuntime(app.settings, miner_id, loaded)
    if app.runtime.intake.wants_shared():
        app.amqp.queues.select_add(SHARED_QUEUE)
    qos.delivery_notes[:] = [app.runtime.books.note_held]
    log.info("miner %s ready with engine %s", miner_id, app.runtime.engine.name)
    if app.tune_note:
        log.warning("miner %s: %s", miner_id, app.tune_note)
    if app.tuned:
        app.runtime.autotune = app.tuned[1].report()
        log.info("miner %s: %s", miner_id, app.tuned[1].summary())


@signals.worker_ready.connect
def _start_heartbeats(sender: Any, **_: Any) -> None:
    app = sender.app
    if not isinstance(app, MinerApp) or app.runtime is None:
        return
    runtime = app.runtime
    app.heartbeats = HeartbeatSender(
        app.settings.api_url,
        runtime.miner_id,
        registration_token(app.settings),
        runtime.heartbeat,
        app.settings.heartbeat_interval_s,
        key_file=key_file(app.settings, runtime.miner_id),
        on_revoked=_shut_down,
    )
    runtime.on_change = app.heartbeats.beat_now
    runtime.intake.started(
        sender, SHARED_QUEUE in (app.amqp.queues.consume_from or app.amqp.queues)
    )
    app.heartbeats.start()


@signals.after_setup_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    app = current_app._get_current_object()
    if not isinstance(app, MinerApp):
        return
    for handler in logger.handlers:
        logs.decorate(handler, app.settings.log_format)


@signals.task_prerun.connect
def _take_request_id(task: Any = None, args: tuple[Any, ...] | None = None, **_: Any) -> None:
    payload = args[0] if args else None
    rid = payload.get("request_id", "") if isinstance(payload, dict) else ""
    logs.request_id.set(rid)
    if tracing.enabled() and task is not None:
        carrier = {k: getattr(task.request, k, None) for k in ("traceparent", "tracestate")}
        carrier = {k: v for k, v in carrier.items() if v}
        task.request.mia_trace = tracing.start(task.name, carrier, request_id=rid)


@signals.task_postrun.connect
def _drop_request_id(
    task: Any = None, task_id: str = "", state: str | None = None, **_: Any
) -> None:
    logs.request_id.set("")
    if task is None:
        return
    tracing.end(getattr(task.request, "mia_trace", None))
    runtime = getattr(task.app, "runtime", None)
    if task.name == GENERATE and runtime is not None:
        runtime.books.finished(task_id, ok=state in ("SUCCESS", "IGNORED"))  # IGNORED: superseded


@signals.worker_shutting_down.connect
def _stop_heartbeats(**_: Any) -> None:
    app = current_app._get_current_object()
    if isinstance(app, MinerApp):
        if app.heartbeats is not None:
            app.heartbeats.stop()
        if app.runtime is not None:
            app.runtime.close()
    tracing.shutdown()
