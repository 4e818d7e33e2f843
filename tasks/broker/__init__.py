r"""Every hook into Celery's and kombu's internals, in one package.

Where the service does more than Celery's public API offers (reuse one Redis client
per channel, wait for a pooled connection, note a delivery in kombu's own MULTI,
store a result with a miner's bookkeeping, read and rewrite task messages by hand,
lease from and recover to kombu's lists), the code that depends on how the pinned
Celery and kombu (``requirements.txt``) work inside lives here. Below is each private
API, attribute or format it depends on, and why. ``tests/test_broker_pins.py``,
``test_kombu_transport.py`` and ``test_celery_formats.py`` check every one against the
installed versions and fail naming it; after upgrading either, re-check this list
against the new code.

``transport.py``: kombu's Redis transport, subclassed (``broker_transport``), with its
delivery bookkeeping (``QoS``) in ``qos.py``.

- ``kombu.transport.redis.QoS.append``: overridden; it writes the same two records as
  kombu (the message in ``unacked``, its time in ``unacked_index``) in one MULTI, adds
  the miner's held note to that MULTI, and waits for Redis if it went away meanwhile.
  Inside kombu's consumer callback the MULTI is sent here and its answer read after
  the callback (``QoS.confirm``), so the job is handed over meanwhile.
- ``kombu.transport.redis.Channel.basic_consume``: overridden to wrap the delivery
  callback kombu registers for the queue; ``kombu.transport.virtual.Channel.basic_consume``
  registers it in ``kombu.transport.virtual.Transport._callbacks`` (queue -> callback),
  a closure that calls ``QoS.append`` and then the consumer's callback.
- ``kombu.transport.redis.Channel.global_keyprefix``: kombu's key prefix (the job
  path's tag, ``tasks.celery_app``). kombu's client prefixes the names it is given, so
  that MULTI goes through a plain client on the same connections, with whole names,
  and so do the notes (whose keys are whole names already).
- ``kombu.transport.redis.QoS.unacked_key``: the hash it writes (under the prefix),
  the same as ``tasks.keys.Keys.unacked``, which a miner's ``settle.lua`` empties.
- ``kombu.transport.redis.QoS.unacked_index_key``: the zset it writes, likewise.
- ``kombu.transport.redis.QoS.ack``: overridden; an entry the miner removed with its
  result is not removed again (one round trip less per job).
- ``kombu.transport.redis.QoS.reject``: overridden to forget that note, then kombu's.
- ``kombu.transport.virtual.QoS.append``: called past kombu's Redis QoS: the
  in-process delivered set, without kombu's Redis writes (ours replace them).
- ``kombu.transport.virtual.QoS.ack``: called likewise when the entry is gone already.
- ``kombu.transport.virtual.Message._raw``: the message as it lay on the list; kombu
  stores it in ``unacked`` and so do we (same bytes, kombu's ``dumps``).
- ``kombu.transport.redis.Channel._get_pool``: overridden: a ``BlockingConnectionPool``
  (threads wait up to ``pool_timeout`` instead of "Too many connections").
- ``kombu.transport.redis.Channel._connparams``: called for that pool's parameters,
  exactly kombu's.
- ``kombu.transport.redis.Channel.keyprefix_fanout``: formatted with the db number,
  as kombu's own ``_get_pool`` does.
- ``kombu.transport.redis.Channel._create_client``: called once per channel.
- ``kombu.transport.redis.Channel.conn_or_acquire``: overridden to yield that one
  client instead of a new ``redis.Redis`` per call (about 0.3 ms each).
- ``kombu.transport.redis.Channel.from_transport_options``: extended with
  ``pool_timeout`` and ``delivery_retry_s`` (kombu copies only the names listed).
- ``kombu.transport.redis.Channel.QoS``: the class our QoS replaces.
- ``kombu.transport.redis.Transport.Channel``: the class our Channel replaces.
- ``kombu.utils.functional.retry_over_time``: kombu's back-off, for the delivery's
  wait; called with an errback ``(exc, intervals, retries)``.
- ``kombu.transport.redis.Channel._put``: overridden: inside ``confirming`` (a job's
  publish), the same ``LPUSH`` followed by ``WAIT`` in one round trip
  (``tasks.replication``); kombu's own otherwise, and for a publish batch or a queue
  with an expiry (``kombu.transport.redis.Channel._expires``).
- ``kombu.transport.virtual.Channel._get_message_priority``: called for that list's
  priority step, as kombu's ``_put`` does.
- ``kombu.transport.redis.SentinelChannel._get_pool``: overridden for a ``sentinel://``
  URL: a ``tasks.sentinel.BlockingSentinelPool`` from the sentinels in the URL list
  (``kombu.connection.Connection.alt``), with ``_connparams``' parameters as kombu's.
- ``kombu.transport.redis.SentinelChannel.from_transport_options``: extended as the
  Channel's (``master_name``, ``sentinel_kwargs`` and the rest stay kombu's).
- ``kombu.transport.redis.SentinelChannel.connection_class``: redis-py's
  ``SentinelManagedConnection``, which follows the master.
- ``kombu.transport.redis.Channel._sentinel_manager`` and
  ``kombu.transport.redis.Channel._async_sentinel_manager``: set to the ``Sentinel``
  objects, which kombu closes with the channel.
- ``kombu.transport.redis.SentinelTransport.Channel``: the class our SentinelChannel
  replaces.

``backend.py``: Celery's Redis result backend, subclassed (``result_backend``).

- ``celery.backends.redis.RedisBackend._store_result``: overridden: one Lua call that
  keeps the first final result, optionally in the miner's own pipeline. Celery's
  ``store_result`` calls it as ``(task_id, result, state, traceback, request=...)``.
- ``celery.backends.redis.RedisBackend._get_result_meta``: called, so the stored meta
  is what Celery itself would store.
- ``celery.backends.redis.RedisBackend._MAX_STR_VALUE_SIZE``: Celery's size limit,
  enforced the same way.
- ``celery.backends.redis.RedisBackend.get_key_for_task``: the result's key,
  ``celery-task-meta-<id>`` (``tasks.keys.result_key`` names it too).
- ``celery.backends.redis.RedisBackend.on_task_call``: overridden to do nothing: no
  subscription per sent task (``web.fleet.results`` listens once per process).
- ``celery.backends.redis.RedisBackend.client``: the backend's Redis client, which
  registers the Lua script.
- ``celery.backends.redis.RedisBackend.expires``: the TTL of a stored result.
- ``celery.backends.redis.RedisBackend.failure_expires``: the TTL of a failure.
- ``celery.backends.redis.RedisBackend._transport_options``: where ``wait_replicas``
  and ``wait_timeout_ms`` are read (``result_backend_transport_options``).
- ``celery.backends.redis.SentinelBackend._params_from_url`` and
  ``celery.backends.redis.SentinelBackend._get_pool``: Celery's Sentinel variant,
  composed with ours (``SentinelResultBackend``); it reads the database and the password
  from the first URL of the list, which ``tasks.sentinel`` normalizes for it.

``publish.py``: dispatch's publish, Celery's task message built by hand
(``messages.task_message``) and handed to the broker channel.

- ``kombu.transport.redis.Channel._put``: called with that message and the queue, as
  kombu's ``basic_publish`` calls it for the default exchange (our override above).
- ``celery.app.base.Celery.thread_oid``: the ``reply_to`` property ``send_task`` writes.
- ``celery.utils.nodenames.anon_nodename``: the ``origin`` header ``send_task`` writes.
- Celery's ``send_task`` message with this service's configuration (``task_serializer``
  ``json``, ``task_protocol`` 2, no compression or routes): the headers and properties
  ``messages.task_message`` writes, compared with ``send_task``'s own in the pins.

``messages.py``: Celery's formats on Redis, read and written by hand (the legacy
``/get_work`` path, the reaper and dispatch).

- Celery's task message, protocol 2, as kombu's Redis transport stores it: a JSON
  envelope with ``headers`` (``task``, ``id``, ``redelivered``), ``body`` holding
  ``[args, kwargs, embed]`` (base64 when ``properties.body_encoding`` is ``base64``),
  ``content-type``, and ``properties`` (``priority``, ``delivery_tag``,
  ``delivery_info``: ``exchange``, ``routing_key``, ``redelivered``).
- Celery's result meta (``status``, ``result``, ``traceback``, ``children``,
  ``date_done``, ``task_id``) and a failure's serialized exception (``exc_type``,
  ``exc_module``, ``exc_message``): written so that ``AsyncResult`` and
  ``web.fleet.results`` read it as Celery's own.

``layout.py``: kombu's Redis keys, for code that reads or writes them directly
(``web.fleet.leases``, ``web.fleet.recovery``, ``lease.lua``, ``recover.lua``,
``settle.lua``, ``scripts/redis_acl.py``), as kombu names them before its
``global_keyprefix``; ``tasks.keys.Keys`` adds the prefix (``queue_lists``,
``unacked``), and Celery's ``KeyValueStoreBackend`` adds it to the result keys
(``Keys.result``; both checked in ``tests/test_kombu_transport.py``).

- ``kombu.transport.redis.Channel._q_for_pri``: one list per priority step,
  ``<queue>\x06\x16<step>`` (plain ``<queue>`` for step 0).
- ``kombu.transport.redis.Channel.priority_steps``: ``[0, 3, 6, 9]``, served lowest
  first; kombu LPUSHes and serves from the right end, so ``lease.lua`` RPOPs the lists
  in that order and ``recover.lua`` RPUSHes a recovered job to be served next.
- ``kombu.transport.redis.Channel.sep``: the ``\x06\x16`` in those names.
- ``kombu.transport.redis.Channel.unacked_key``: ``unacked``, delivery tag ->
  ``[raw message, exchange, routing_key]`` (``unacked_message`` reads it); kombu's
  visibility timeout puts back what a miner wrote there, and the reaper moves it.
- ``kombu.transport.redis.Channel.unacked_index_key``: ``unacked_index``, delivery tag
  -> delivery time.
"""
