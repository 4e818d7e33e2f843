"""Choosing a miner for a job: ``reserve.lua``, which picks the least-loaded live miner
that serves the job's model and reserves one of its slots in one atomic step, and
``release.lua``, which gives a slot back; with affinity, a related job goes where the
last one ran. ``tasks.dispatch`` publishes the job where this chose."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.client

from tasks.index_records import IndexChanging, indexed_models, remember
from tasks.jobs import Job
from tasks.keys import MINER_QUEUE_PREFIX, SHARED_QUEUE, Keys, queue_for, text
from tasks.lua import Scripts

WAKE_TOKENS_KEPT = 1000
UNSERVED = "!unserved"  # reserve.lua's answer when no live miner serves the model
DRAINED = "!drained"  # ... when every live miner serving it (or the target) is drained
REFUSED = (UNSERVED, DRAINED)  # answers that reserve nothing: the job is not queued
MODELS_DECLARED_MAX = 1000  # models whose index sets a reservation declares, at most
# Miner queues whose lists a reservation that publishes declares, at most: past it, the
# one learnt longest ago is dropped (0: the job is published after the choice).
QUEUES_DECLARED_MAX = 64


@dataclass
class Publish:
    """A task message for ``reserve.lua`` to push where it chooses, in the same call:
    ``queue_token`` and ``miner_token`` stand for the queue and the reserved miner in
    it; ``suffix`` ends the name of the list (the priority step). ``sent``: it was
    (and if on the shared queue, a long-polling legacy miner was woken with it)."""

    message: str
    queue_token: str
    miner_token: str
    suffix: str
    sent: bool = False


class MinerSelector(Protocol):
    """Chooses a miner for a job and reserves a slot on it (None: no miner free)."""

    def choose(self, job: Job, shared_only: bool = False, exclude: str = "") -> str | None: ...

    def release(self, miner_id: str) -> None: ...

    def wake_shared(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Affinity:
    """Which jobs would rather run where a related one ran last, and for how long."""

    ttl_s: int  # how long the miner of a session (or a prompt) is remembered
    prompt_chars: int = 1000  # a system prompt at least this long shares a miner (0: never)

    def of(self, job: Job) -> str:
        """The job's affinity: its session, else its long system prompt; '' none."""
        if job.affinity:
            return f"s:{job.affinity}"
        head = job.messages[0] if job.messages else None
        if not (self.prompt_chars and head and head.get("role") == "system"):
            return ""
        prompt = head.get("content", "")
        if len(prompt) < self.prompt_chars:
            return ""
        return f"p:{job.model}:{hashlib.blake2b(prompt.encode(), digest_size=12).hexdigest()}"


class RedisSelector:
    """The least-loaded live miner that serves the model, reserved atomically in Redis.

    The choice reads the dispatch index (``lua/index.lua``) a few miners at a time, so
    it costs the same with 2 or 2,000 live miners. With ``affinity``, a job related to
    an earlier one goes where that one ran when it has a free slot."""

    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        keys: Keys,
        job_ttl_s: int,
        affinity: Affinity | None = None,
    ) -> None:
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._job_ttl_s = job_ttl_s
        self._affinity = affinity
        # miner -> the models of its index record as last seen here: the index sets a
        # release declares (``release.lua`` refuses, naming the record, when one is missing)
        self._indexed: dict[str, list[str]] = {}
        self._serving: dict[str, list[str]] = {}  # miner -> its models now (``serving``)
        # the models whose index sets a reservation declares: every model of the fleet
        # as last seen here (None: not read yet)
        self._models: frozenset[str] | None = None
        self._learning = threading.Lock()
        self._shared_lists = keys.queue_lists(SHARED_QUEUE)
        self._queues: dict[str, None] = {}  # miners whose queues a publish declares, in use order

    def choose(
        self, job: Job, shared_only: bool = False, exclude: str = "", publish: Publish | None = None
    ) -> str | None:
        """Reserve a slot on the best miner (never ``exclude``), or record that the job
        goes to ``shared``; ``UNSERVED`` when no live miner serves its model, ``DRAINED``
        when every one that does (or the job's target device) is drained. With
        ``publish``, its message goes on the queue chosen in the same call (unless
        ``QUEUES_DECLARED_MAX`` is 0): its ``sent`` says whether it did (on shared, a
        legacy miner is woken in the same call, as ``wake_shared`` would)."""
        record = json.dumps({"accepted_at": job.accepted_at, "model": job.model})
        keys = [
            self._keys.picks,
            self._keys.seq,
            self._keys.job(job.job_id),
            self._keys.breakers,
            self._keys.inflight,
            self._keys.beats,
            self._keys.drained,
            self._keys.indexed,
            *self._shared_lists,
        ]
        affinity = self._affinity
        named = "" if affinity is None or shared_only or job.device else affinity.of(job)
        if named:
            keys.append(self._keys.affinity(named))
        args = [
            self._keys.tag,
            job.model,
            record,
            self._job_ttl_s,
            SHARED_QUEUE,
            MINER_QUEUE_PREFIX,
            "1" if shared_only else "0",
            job.device,
            exclude,
            affinity.ttl_s if affinity else 0,
            len(self._shared_lists),
            "1" if named else "0",
        ]
        if QUEUES_DECLARED_MAX <= 0:
            publish = None  # no queue may be declared: the caller publishes after
        if publish is not None:
            args += [publish.message, publish.queue_token, publish.miner_token, publish.suffix]
            args += [self._keys.shared_wake, job.job_id, WAKE_TOKENS_KEPT]
        if self._models is None:  # once: the models of the fleet as indexed now
            self._learn([text(r) for r in self._redis.hvals(self._keys.indexed)])
        for _ in range(4):  # again with what it met: a miner's index sets, or queue
            sets = self._keys.index_sets([job.model, *(self._models or ())])
            lists = self._queue_lists(publish.suffix) if publish is not None else []
            wake = [self._keys.shared_wake] if publish is not None else []
            picked = self._scripts("reserve", keys=keys + sets + lists + wake, args=args)
            if not isinstance(picked, list):
                answer = text(picked) if picked else None
                if publish is not None:
                    publish.sent = answer not in REFUSED
                return answer
            if text(picked[0]) == "!queue":
                self._learn_queue(text(picked[1]))
            else:
                self._learn([text(picked[1])])
        raise IndexChanging("the dispatch index records kept naming new models")

    def _queue_lists(self, suffix: str) -> list[str]:
        return [self._keys.broker_prefix + queue_for(m) + suffix for m in list(self._queues)]

    def _learn_queue(self, miner_id: str) -> None:
        """Declare ``miner_id``'s queue from now on, in place of the one learnt longest
        ago past ``QUEUES_DECLARED_MAX`` (a fleet larger than that pays a round trip
        more per choice of a miner not among them)."""
        with self._learning:
            self._queues.pop(miner_id, None)
            self._queues[miner_id] = None
            while len(self._queues) > QUEUES_DECLARED_MAX:
                del self._queues[next(iter(self._queues))]

    def placed(self, job_id: str) -> tuple[bool, str | None]:
        """Whether ``reserve.lua`` recorded ``job_id`` (and so, with a message, queued
        it), and the miner it reserved (None: ``shared``)."""
        raw = self._redis.get(self._keys.job(job_id))
        if raw is None:
            return False, None
        return True, json.loads(raw).get("miner_id")

    def _learn(self, records: Iterable[str]) -> None:
        """Add the models these index records name to those a reservation declares
        (the sets of every model the fleet serves, since it may meet any miner)."""
        found = {m for record in records for m in indexed_models(record)}
        with self._learning:  # request threads learn at once: none loses another's
            models = found | (self._models or frozenset())
            # past the bound (models came and went), read the fleet's again next time
            self._models = frozenset(models) if len(models) <= MODELS_DECLARED_MAX else None

    def release(self, miner_id: str) -> None:
        for _ in range(3):  # again with the index sets the miner's record names
            if not self.refused(miner_id, self._scripts("release", *self._release_call(miner_id))):
                return
        raise IndexChanging(f"the index record of miner {miner_id} kept changing")

    def serving(self, miner_id: str, models: list[str]) -> None:
        """The models ``miner_id`` serves now (a miner's own, as its heartbeat says):
        its releases declare their index sets too, so that one right after a model
        change is not refused (and so not a round trip after its result)."""
        self._serving[miner_id] = list(models)

    def queue_release(self, pipe: redis.client.Pipeline, miner_id: str) -> None:
        """``release`` queued on ``pipe`` by the script's hash (``Scripts.queue``); if
        ``refused`` says so of its reply, call ``release``."""
        self._scripts.queue(pipe, "release", *self._release_call(miner_id))

    def refused(self, miner_id: str, answer: Any) -> bool:
        """Whether ``release.lua`` refused (an index set of the miner's record was not
        declared); the record's models are kept for the next call."""
        if not isinstance(answer, list):
            return False
        remember(self._indexed, miner_id, indexed_models(text(answer[1])))
        return True

    def _release_call(self, miner_id: str) -> tuple[list[str], list[Any]]:
        if miner_id not in self._indexed:  # once per miner: a refusal is a round trip late
            record = self._redis.hget(self._keys.indexed, miner_id)
            remember(self._indexed, miner_id, indexed_models(text(record)) if record else [])
        keys = [self._keys.inflight, self._keys.picks, self._keys.indexed]
        models = self._indexed.get(miner_id, []) + self._serving.get(miner_id, [])
        keys += self._keys.index_sets(models)
        return keys, [self._keys.tag, miner_id]

    def wake_shared(self, job_id: str) -> None:
        """Wake one long-polling legacy miner (the list is capped: nobody may be polling)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(self._keys.shared_wake, job_id)
        pipe.ltrim(self._keys.shared_wake, 0, WAKE_TOKENS_KEPT - 1)
        pipe.execute()
