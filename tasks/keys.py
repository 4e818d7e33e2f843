"""Every Redis key and queue name, built in one place.

| key                        | type   | written by    | meaning                                |
|----------------------------|--------|---------------|----------------------------------------|
| ``<p>:miners``             | set    | heartbeat     | ids of miners that may be alive        |
| ``<p>:hb:<miner>``         | string | heartbeat     | last heartbeat JSON (TTL); gone = dead |
| ``<p>:beats``              | hash   | heartbeat     | miner -> ``<deadline ms>|<heartbeat>``:|
|                            |        |               | dispatch's copy of the heartbeat keys, |
|                            |        |               | read by ``reserve.lua`` (which declares|
|                            |        |               | its keys: a hash, not a key per miner) |
| ``<p>:inflight``           | hash   | reserve/done  | miner -> jobs dispatched to it and not |
|                            |        |               | finished                               |
| ``<p>:picks``              | hash   | reserve       | miner -> sequence of its last job      |
| ``<p>:seq``                | int    | reserve       | dispatch sequence (rotation on ties)   |
| ``<p>:idx``                | zset   | heartbeat     | dispatch index: live miners by load,   |
|                            |        | reserve/done  | then last pick (``lua/index.lua``)     |
| ``<p>:idx:<model>``        | zset   | heartbeat     | the same for the miners serving a model|
| ``<p>:indexed``            | hash   | heartbeat     | miner -> slots, eligible, models index |
| ``<p>:minerkey:<miner>``   | string | register      | cached key SHA-256 (``!revoked``)      |
| ``<p>:job:<job>``          | string | reserve       | where a job went, when (TTL)           |
| ``<p>:aff:<affinity>``     | string | reserve       | the miner a session (or a long system  |
|                            |        |               | prompt) ran on last (TTL: a session's) |
| ``<p>:running:<job>``      | string | miner         | a push miner started the job (TTL)     |
| ``<p>:keyowner:<sha256>``  | string | register      | cached miner of a key (``!``: nobody)  |
| ``<p>:lease:<job>``        | hash   | get_work      | legacy lease: miner, id, deadline, msg |
| ``<p>:leases``             | zset   | get_work      | leased job ids by deadline             |
| ``<p>:attempts:<job>``     | int    | get_work      | how many times the job was leased      |
| ``<p>:shared:wake``        | list   | dispatch      | tokens that wake long-polling miners   |
| ``<p>:shared:dead``        | list   | get_work      | messages on shared that are not tasks  |
| ``<p>:polled``             | zset   | get_work      | legacy miners by last poll (epoch s),  |
|                            |        |               | trimmed after ``MIA_OFFLINE_WINDOW_S`` |
| ``<p>:leaving:<miner>``    | string | unregister    | a legacy miner stopping: no new lease  |
| ``<p>:wake:<miner>``       | list   | unregister    | tokens that end its long-polls at once |
| ``<p>:reply:<replica>``    | pubsub | miner, web    | one web process's results and streamed |
|                            |        |               | pieces, in order (its jobs' reply_to)  |
| ``<p>:stream:<job>``       | pubsub | miner         | a job's pieces when it has no reply_to |
| ``<p>:partial:{<job>}``    | hash   | miner         | its answer so far: owner (the attempt  |
|                            |        |               | writing it), text, pieces (TTL; gone   |
|                            |        |               | with the result: ``miners.resume``)    |
| ``<p>:abort``              | pubsub | web           | ids of jobs whose caller went away     |
| ``<p>:abort:{<job>}``      | string | web           | the same, for a job not started yet    |
| ``<p>:session:{<pr>:<id>}``| string | assistant     | a chat session: history, cart (TTL)    |
| ``<p>:sessions``           | zset   | assistant     | session keys by last use (LRU bound)   |
| ``<p>:turn:{<pr>:<id>}``   | string | web           | a session's turn lock (redis-py Lock)  |
| ``<p>:events``             | pubsub | heartbeat     | device state changes (WebSocket feed)  |
| ``<p>:loading:<model>``    | hash   | web           | op id -> device of loads in flight     |
| ``<p>:op:<op>``            | string | web           | an operation sent: action, model,      |
|                            |        |               | device (TTL ``MIA_RESULT_TTL_S``)      |
| ``<p>:obs``                | list   | web           | recent results: time, miner, latency   |
| ``<p>:baselines``          | hash   | web           | latency baselines (EWMA, deviation)    |
| ``<p>:alerts``             | list   | web           | recent anomaly alerts                  |
| ``<p>:drain:<miner>``      | string | web, admin    | the miner is drained (TTL or none)     |
| ``<p>:drained``            | hash   | web, admin    | miner -> until when (epoch ms, 0: no   |
|                            |        |               | end): the same, for ``reserve.lua``    |
| ``<p>:drains``             | pubsub | web, admin    | ids of miners drained or undrained now |
| ``<p>:known``              | set    | heartbeat     | every miner seen and not yet cleaned up |
| ``<p>:rebooted``           | set    | heartbeat     | miners that came back as a new process |
| ``<p>:held:<miner>``       | hash   | miner         | job -> kombu delivery tag and boot id  |
| ``<p>:unconfirmed:<miner>``| string | register      | its key was never used in a heartbeat  |
| ``<p>:deaths``             | zset   | reaper        | dead miners by when first seen dead    |
| ``<p>:reaper``             | string | reaper        | the lock: one reaper at a time (TTL)   |
| ``{<p>}:breakers``         | hash   | miner, web    | miner -> circuit breaker state (JSON)  |
| ``{<p>}:failstreak``       | hash   | miner, web    | miner -> failures in a row             |
| ``<p>:lastseen``           | zset   | heartbeat     | miners by last heartbeat (epoch s),    |
|                            |        | reap          | trimmed after ``MIA_OFFLINE_WINDOW_S`` |
| ``<p>:ignored``            | zset   | web           | digests of unknown-field sets logged   |
|                            |        |               | (legacy endpoints), LRU-bounded        |
| ``<p>:rate:<proj>:<id>``   | hash   | mqtt gateway  | a client's token bucket (TTL)          |
| ``celery-task-meta-<job>`` | string | Celery result | the job's result (Celery's own key)    |

``<p>`` is ``MIA_KEY_PREFIX`` (default ``mia``). A part in braces is a Redis Cluster hash
tag: only it picks the key's slot, so the keys one script reads share a slot (the slot
families, and which scripts already declare every key, are in docs/scaling.md). Queues
are Celery's: ``gpu-<miner>`` per miner and ``shared`` for everything no miner could take
at once.
"""

from __future__ import annotations

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


def result_key(job_id: str) -> str:
    return f"{RESULT_KEY_PREFIX}{job_id}"


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "mia") -> None:
        self.prefix = prefix
        self.miners = f"{prefix}:miners"
        self.picks = f"{prefix}:picks"
        self.seq = f"{prefix}:seq"
        self.index = f"{prefix}:idx"
        self.indexed = f"{prefix}:indexed"
        self.leases = f"{prefix}:leases"
        self.shared_wake = f"{prefix}:shared:wake"
        self.dead_letters = f"{prefix}:shared:dead"
        self.aborts = f"{prefix}:abort"
        self.sessions = f"{prefix}:sessions"
        self.events = f"{prefix}:events"
        self.observations = f"{prefix}:obs"
        self.baselines = f"{prefix}:baselines"
        self.alerts = f"{prefix}:alerts"
        self.known = f"{prefix}:known"
        self.rebooted = f"{prefix}:rebooted"
        self.deaths = f"{prefix}:deaths"
        self.reaper = f"{prefix}:reaper"
        self.dispatch_tag = f"{{{prefix}}}"
        self.breakers = f"{self.dispatch_tag}:breakers"
        self.failstreak = f"{self.dispatch_tag}:failstreak"
        self.last_seen = f"{prefix}:lastseen"
        self.ignored = f"{prefix}:ignored"
        self.polled = f"{prefix}:polled"
        self.drains = f"{prefix}:drains"
        self.drained = f"{prefix}:drained"
        self.beats = f"{prefix}:beats"
        self.inflight = f"{prefix}:inflight"

    def heartbeat(self, miner_id: str) -> str:
        return f"{self.prefix}:hb:{miner_id}"

    def index_for(self, model: str) -> str:
        """The dispatch index of the miners serving ``model`` ('' = every miner)."""
        return f"{self.index}:{model}" if model else self.index

    def index_sets(self, models: list[str]) -> list[str]:
        """The dispatch index of every miner and those of ``models`` (sorted, once each):
        the sets a script that keeps the index declares (``lua/index.lua``)."""
        return sorted({self.index, *(self.index_for(m) for m in models if m)})

    def miner_key(self, miner_id: str) -> str:
        return f"{self.prefix}:minerkey:{miner_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def affinity(self, name: str) -> str:
        """The miner a session or a long system prompt ran on last (``reserve.lua``)."""
        return f"{self.prefix}:aff:{name}"

    def key_owner(self, key_hash: str) -> str:
        return f"{self.prefix}:keyowner:{key_hash}"

    def lease(self, job_id: str) -> str:
        return f"{self.prefix}:lease:{job_id}"

    def attempts(self, job_id: str) -> str:
        return f"{self.prefix}:attempts:{job_id}"

    def running(self, job_id: str) -> str:
        return f"{self.prefix}:running:{job_id}"

    def reply(self, replica: str) -> str:
        """The channel one web process (replica) hears its jobs' results and pieces on."""
        return f"{self.prefix}:reply:{replica}"

    def stream(self, job_id: str) -> str:
        return f"{self.prefix}:stream:{job_id}"

    def partial(self, job_id: str) -> str:
        """A job's answer so far, for the attempt that resumes it (``miners.resume``);
        in its job's slot, with its abort key (``claim.lua`` reads both)."""
        return f"{self.prefix}:partial:{{{job_id}}}"

    def abort(self, job_id: str) -> str:
        return f"{self.prefix}:abort:{{{job_id}}}"

    def session(self, project: str, session_id: str) -> str:
        return f"{self.prefix}:session:{{{project}:{session_id}}}"

    def session_lock(self, project: str, session_id: str) -> str:
        return f"{self.prefix}:turn:{{{project}:{session_id}}}"

    def unconfirmed(self, miner_id: str) -> str:
        return f"{self.prefix}:unconfirmed:{miner_id}"

    def held(self, miner_id: str) -> str:
        return f"{self.prefix}:held:{miner_id}"

    def operation(self, op_id: str) -> str:
        """An operation sent (load, unload): its action, model and device."""
        return f"{self.prefix}:op:{op_id}"

    def loading(self, model_id: str) -> str:
        """Loads of ``model_id`` in flight: op id -> device (``web.fleet.operations``)."""
        return f"{self.prefix}:loading:{model_id}"

    def drain(self, miner_id: str) -> str:
        return f"{self.prefix}:drain:{miner_id}"

    def leaving(self, miner_id: str) -> str:
        """A legacy miner that said it is stopping (``web.fleet.pollers``)."""
        return f"{self.prefix}:leaving:{miner_id}"

    def wake(self, miner_id: str) -> str:
        """Tokens that end one legacy miner's long-polls (``web.fleet.leases``)."""
        return f"{self.prefix}:wake:{miner_id}"

    def stats_lock(self, name: str) -> str:
        return f"{self.prefix}:statslock:{name}"

    def rate(self, project: str, client: str) -> str:
        """A client's token bucket (the MQTT gateway's rate limit)."""
        return f"{self.prefix}:rate:{project}:{client}"
