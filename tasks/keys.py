"""Every Redis key and queue name, built in one place.

| key                        | type   | written by    | meaning                                |
|----------------------------|--------|---------------|----------------------------------------|
| ``{<p>}:miners``           | set    | heartbeat     | ids of miners that may be alive        |
| ``{<p>}:hb:<miner>``       | string | heartbeat     | last heartbeat JSON (TTL); gone = dead |
| ``{<p>}:beats``            | hash   | heartbeat     | miner -> ``<deadline ms>|<heartbeat>``:|
|                            |        |               | dispatch's copy of the heartbeat keys, |
|                            |        |               | read by ``reserve.lua`` (which declares|
|                            |        |               | its keys: a hash, not a key per miner) |
| ``{<p>}:inflight``         | hash   | reserve/done  | miner -> jobs dispatched to it and not |
|                            |        |               | finished                               |
| ``{<p>}:picks``            | hash   | reserve       | miner -> sequence of its last job      |
| ``{<p>}:seq``              | int    | reserve       | dispatch sequence (rotation on ties)   |
| ``{<p>}:idx``              | zset   | heartbeat     | dispatch index: live miners by load,   |
|                            |        | reserve/done  | then last pick (``lua/index.lua``)     |
| ``{<p>}:idx:<model>``      | zset   | heartbeat     | the same for the miners serving a model|
| ``{<p>}:indexed``          | hash   | heartbeat     | miner -> slots, eligible, models index |
| ``{<p>}:minerkey:<miner>`` | string | register      | cached key SHA-256 (``!revoked``)      |
| ``{<p>}:job:<job>``        | string | reserve       | where a job went, when (TTL)           |
| ``{<p>}:aff:<affinity>``   | string | reserve       | the miner a session (or a long system  |
|                            |        |               | prompt) ran on last (TTL: a session's) |
| ``{<p>}:running:<job>``    | string | miner         | a push miner started the job (TTL)     |
| ``{<p>}:keyowner:<hash>``  | string | register      | cached miner of a key (``!``: nobody)  |
| ``{<p>}:lease:<job>``      | hash   | get_work      | legacy lease: miner, id, deadline, msg |
| ``{<p>}:leases``           | zset   | get_work      | leased job ids by deadline             |
| ``{<p>}:attempts:<job>``   | int    | get_work      | how many times the job was leased      |
| ``{<p>}:shared:wake``      | list   | dispatch      | tokens that wake long-polling miners   |
| ``{<p>}:shared:dead``      | list   | get_work      | messages on shared that are not tasks  |
| ``{<p>}:polled``           | zset   | get_work      | legacy miners by last poll (epoch s),  |
|                            |        |               | trimmed after ``MIA_OFFLINE_WINDOW_S`` |
| ``{<p>}:leaving:<miner>``  | string | unregister    | a legacy miner stopping: no new lease  |
| ``{<p>}:wake:<miner>``     | list   | unregister    | tokens that end its long-polls at once |
| ``<p>:reply:<replica>``    | pubsub | miner, web    | one web process's results and streamed |
|                            |        |               | pieces, in order (its jobs' reply_to)  |
| ``<p>:stream:<job>``       | pubsub | miner         | a job's pieces when it has no reply_to |
| ``{<p>}:partial:<job>``    | hash   | miner         | its answer so far: owner (the attempt  |
|                            |        |               | writing it), text, pieces (TTL; gone   |
|                            |        |               | with the result: ``miners.resume``)    |
| ``<p>:abort``              | pubsub | web           | ids of jobs whose caller went away     |
| ``{<p>}:abort:<job>``      | string | web           | the same, for a job not started yet    |
| ``<p>:session:{<pr>:<id>}``| string | assistant     | a chat session: history, cart (TTL)    |
| ``<p>:sessions``           | zset   | assistant     | session keys by last use (LRU bound)   |
| ``<p>:turn:{<pr>:<id>}``   | string | web           | a session's turn lock (redis-py Lock)  |
| ``<p>:events``             | pubsub | heartbeat     | device state changes (WebSocket feed)  |
| ``{<p>}:loading:<model>``  | hash   | web           | op id -> device of loads in flight     |
| ``{<p>}:op:<op>``          | string | web           | an operation sent: action, model,      |
|                            |        |               | device (TTL ``MIA_RESULT_TTL_S``)      |
| ``{<p>}:obs``              | list   | web           | recent results: time, miner, latency   |
| ``{<p>}:baselines``        | hash   | web           | latency baselines (EWMA, deviation)    |
| ``{<p>}:alerts``           | list   | web           | recent anomaly alerts                  |
| ``{<p>}:drain:<miner>``    | string | web, admin    | the miner is drained (TTL or none)     |
| ``{<p>}:drained``          | hash   | web, admin    | miner -> until when (epoch ms, 0: no   |
|                            |        |               | end): the same, for ``reserve.lua``    |
| ``<p>:drains``             | pubsub | web, admin    | ids of miners drained or undrained now |
| ``{<p>}:known``            | set    | heartbeat     | every miner seen, not yet cleaned up   |
| ``{<p>}:rebooted``         | set    | heartbeat     | miners that came back as a new process |
| ``{<p>}:held:<miner>``     | hash   | miner         | job -> kombu delivery tag and boot id  |
| ``{<p>}:unconfirmed:<m>``  | string | register      | its key was never used in a heartbeat  |
| ``{<p>}:deaths``           | zset   | reaper        | dead miners by when first seen dead    |
| ``{<p>}:reaper``           | string | reaper        | the lock: one reaper at a time (TTL)   |
| ``{<p>}:breakers``         | hash   | miner, web    | miner -> circuit breaker state (JSON)  |
| ``{<p>}:failstreak``       | hash   | miner, web    | miner -> failures in a row             |
| ``{<p>}:lastseen``         | zset   | heartbeat     | miners by last heartbeat (epoch s),    |
|                            |        | reap          | trimmed after ``MIA_OFFLINE_WINDOW_S`` |
| ``{<p>}:ignored``          | zset   | web           | digests of unknown-field sets logged   |
|                            |        |               | (legacy endpoints), LRU-bounded        |
| ``<p>:rate:<proj>:<id>``   | hash   | mqtt gateway  | a client's token bucket (TTL)          |
| ``{<p>}:celery-task-meta-``| string | Celery result | and the job id: its result (Celery's   |
|                            |        |               | own key, under its global prefix)      |
| ``{<p>}:<kombu's keys>``   | lists  | kombu         | the queues (``queue_lists``),          |
|                            | hash   |               | ``unacked``, ``unacked_index`` and the |
|                            | sets   |               | rest, under kombu's global prefix      |

``<p>`` is ``MIA_KEY_PREFIX`` (default ``mia``). A part in braces is a Redis Cluster hash
tag: only it picks the key's slot. Every key of the job path (``{<p>}:...``: dispatch,
leases, miner state, a job's answer so far) shares one slot with kombu's keys and the
results, since its scripts move a job between them atomically, and so lives on one node
of a cluster (``tasks.cluster``). What grows with guests spreads over the shards: the
sessions and their turn locks (``<p>:session:{<pr>:<id>}``: a slot per session),
``<p>:sessions`` and the rate buckets (a slot each), on ``MIA_SESSIONS_REDIS_URL``'s
client (the slot families: docs/scaling.md). Channels have no slot. Queues are Celery's:
``gpu-<miner>`` per miner and ``shared`` for everything no miner could take at once.
"""

from __future__ import annotations

from tasks.broker.layout import UNACKED, UNACKED_INDEX, list_for, queue_lists

SHARED_QUEUE = "shared"
MINER_QUEUE_PREFIX = "gpu-"
RESULT_KEY_PREFIX = "celery-task-meta-"


def queue_for(miner_id: str) -> str:
    """The Celery queue a miner consumes first."""
    return f"{MINER_QUEUE_PREFIX}{miner_id}"


def miner_from_queue(queue: str) -> str | None:
    """The miner id in ``gpu-<id>``, or None for any other queue."""
    if queue.startswith(MINER_QUEUE_PREFIX) and len(queue) > len(MINER_QUEUE_PREFIX):
        return queue[len(MINER_QUEUE_PREFIX) :]
    return None


def text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def check_prefix(prefix: str) -> None:
    """A key prefix is a plain name: the hash tags (braces) are added by ``Keys``, and a
    glob character would widen the patterns the ACLs and sweeps match."""
    if not prefix or any(c in prefix for c in "{}*?[]\\ "):
        raise ValueError(
            f"MIA_KEY_PREFIX {prefix!r}: give a plain name such as 'mia', without"
            " braces, spaces or glob characters (the hash tags are added for you)"
        )


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "mia") -> None:
        check_prefix(prefix)
        self.prefix = prefix
        # The job path's slot: every key below except the spread families'
        self.tag = tag = f"{{{prefix}}}"
        self.miners = f"{tag}:miners"
        self.picks = f"{tag}:picks"
        self.seq = f"{tag}:seq"
        self.index = f"{tag}:idx"
        self.indexed = f"{tag}:indexed"
        self.leases = f"{tag}:leases"
        self.shared_wake = f"{tag}:shared:wake"
        self.dead_letters = f"{tag}:shared:dead"
        self.observations = f"{tag}:obs"
        self.baselines = f"{tag}:baselines"
        self.alerts = f"{tag}:alerts"
        self.known = f"{tag}:known"
        self.rebooted = f"{tag}:rebooted"
        self.deaths = f"{tag}:deaths"
        self.reaper = f"{tag}:reaper"
        self.breakers = f"{tag}:breakers"
        self.failstreak = f"{tag}:failstreak"
        self.last_seen = f"{tag}:lastseen"
        self.ignored = f"{tag}:ignored"
        self.polled = f"{tag}:polled"
        self.drained = f"{tag}:drained"
        self.beats = f"{tag}:beats"
        self.inflight = f"{tag}:inflight"
        # kombu's keys and Celery's results, in the same slot: kombu's and Celery's own
        # ``global_keyprefix`` (``tasks.celery_app``), so that a script may move a job
        # between a queue, ``unacked`` and its result in one step
        self.broker_prefix = f"{tag}:"
        self.unacked = f"{self.broker_prefix}{UNACKED}"
        self.unacked_index = f"{self.broker_prefix}{UNACKED_INDEX}"
        # What spreads over a cluster's shards: a slot of its own
        self.sessions = f"{prefix}:sessions"
        # Channels (no slot: a PUBLISH reaches the whole cluster)
        self.aborts = f"{prefix}:abort"
        self.events = f"{prefix}:events"
        self.drains = f"{prefix}:drains"

    def queue_lists(self, queue: str) -> list[str]:
        """The Redis lists behind a Celery queue, in the order kombu serves them."""
        return [self.broker_prefix + name for name in queue_lists(queue)]

    def queue_list(self, queue: str, priority: int) -> str:
        """The list a message of this (kombu) priority waits on."""
        return self.broker_prefix + list_for(queue, priority)

    def result(self, job_id: str) -> str:
        """A job's result, Celery's key (and the channel Celery announces it on)."""
        return f"{self.broker_prefix}{RESULT_KEY_PREFIX}{job_id}"

    def heartbeat(self, miner_id: str) -> str:
        return f"{self.tag}:hb:{miner_id}"

    def index_for(self, model: str) -> str:
        """The dispatch index of the miners serving ``model`` ('' = every miner)."""
        return f"{self.index}:{model}" if model else self.index

    def index_sets(self, models: list[str]) -> list[str]:
        """The dispatch index of every miner and those of ``models`` (sorted, once each):
        the sets a script that keeps the index declares (``lua/index.lua``)."""
        return sorted({self.index, *(self.index_for(m) for m in models if m)})

    def miner_key(self, miner_id: str) -> str:
        return f"{self.tag}:minerkey:{miner_id}"

    def job(self, job_id: str) -> str:
        return f"{self.tag}:job:{job_id}"

    def affinity(self, name: str) -> str:
        """The miner a session or a long system prompt ran on last (``reserve.lua``)."""
        return f"{self.tag}:aff:{name}"

    def key_owner(self, key_hash: str) -> str:
        return f"{self.tag}:keyowner:{key_hash}"

    def lease(self, job_id: str) -> str:
        return f"{self.tag}:lease:{job_id}"

    def attempts(self, job_id: str) -> str:
        return f"{self.tag}:attempts:{job_id}"

    def running(self, job_id: str) -> str:
        return f"{self.tag}:running:{job_id}"

    def reply(self, replica: str) -> str:
        """The channel one web process (replica) hears its jobs' results and pieces on."""
        return f"{self.prefix}:reply:{replica}"

    def stream(self, job_id: str) -> str:
        return f"{self.prefix}:stream:{job_id}"

    def partial(self, job_id: str) -> str:
        """A job's answer so far, for the attempt that resumes it (``miners.resume``);
        in its job's slot, with its abort key (``claim.lua`` and ``append.lua`` read both)."""
        return f"{self.tag}:partial:{job_id}"

    def abort(self, job_id: str) -> str:
        return f"{self.tag}:abort:{job_id}"

    def session(self, project: str, session_id: str) -> str:
        return f"{self.prefix}:session:{{{project}:{session_id}}}"

    def session_lock(self, project: str, session_id: str) -> str:
        return f"{self.prefix}:turn:{{{project}:{session_id}}}"

    def unconfirmed(self, miner_id: str) -> str:
        return f"{self.tag}:unconfirmed:{miner_id}"

    def held(self, miner_id: str) -> str:
        return f"{self.tag}:held:{miner_id}"

    def operation(self, op_id: str) -> str:
        """An operation sent (load, unload): its action, model and device."""
        return f"{self.tag}:op:{op_id}"

    def loading(self, model_id: str) -> str:
        """Loads of ``model_id`` in flight: op id -> device (``web.fleet.operations``)."""
        return f"{self.tag}:loading:{model_id}"

    def drain(self, miner_id: str) -> str:
        return f"{self.tag}:drain:{miner_id}"

    def leaving(self, miner_id: str) -> str:
        """A legacy miner that said it is stopping (``web.fleet.pollers``)."""
        return f"{self.tag}:leaving:{miner_id}"

    def wake(self, miner_id: str) -> str:
        """Tokens that end one legacy miner's long-polls (``web.fleet.leases``)."""
        return f"{self.tag}:wake:{miner_id}"

    def stats_lock(self, name: str) -> str:
        return f"{self.tag}:statslock:{name}"

    def rate(self, project: str, client: str) -> str:
        """A client's token bucket (the MQTT gateway's rate limit)."""
        return f"{self.prefix}:rate:{project}:{client}"
