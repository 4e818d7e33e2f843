#!/bin/sh
# Starts this pod's Redis or its Sentinel: sh start.sh redis | sh start.sh sentinel
#
# The master is the one the sentinels name. When none answers (a new set, or every
# sentinel down), it is ordinal 0: redis-0 starts as master and the others replicate
# it. A pod that comes back after a failover asks first, so it rejoins as a replica of
# the new master instead of starting a second one. Everything is addressed by its
# stable DNS name (redis-N.redis-headless.<namespace>.svc...), never by pod IP, which
# changes when a pod is rescheduled: hence resolve-hostnames and announce-hostnames.
# Needs: MIA_REDIS_SENTINEL_MASTER (the ConfigMap's master name), REDIS_NODES. (REDIS_CONF,
# REDIS_DIR and SENTINEL_DIR move its files elsewhere, for tests/test_k8s.py.)
set -eu

role=${1:?redis or sentinel}
me=$(hostname -f)
domain=${me#*.}
quorum=$((REDIS_NODES / 2 + 1))

master=""
i=0
while [ "$i" -lt "$REDIS_NODES" ] && [ -z "$master" ]; do
    master=$(timeout 3 redis-cli -h "redis-$i.$domain" -p 26379 --raw \
        sentinel get-master-addr-by-name "$MIA_REDIS_SENTINEL_MASTER" 2>/dev/null | head -n 1) || master=""
    case "$master" in *" "*) master="" ;; esac  # an error, not a host name
    i=$((i + 1))
done
[ -n "$master" ] || master="redis-0.$domain"
echo "start.sh: $role on $me; master: $master"

if [ "$role" = redis ]; then
    # Sentinel saves what it changes in a Redis with CONFIG REWRITE, which the read-only
    # ConfigMap would refuse: Redis runs on a copy on its data volume, fresh at each start
    conf=${REDIS_DIR:-/data}/redis.conf
    cp "${REDIS_CONF:-/etc/mia-redis/redis.conf}" "$conf"
    set -- redis-server "$conf" --replica-announce-ip "$me"
    if [ "$master" != "$me" ]; then
        set -- "$@" --replicaof "$master" 6379
    fi
    exec "$@"
fi

# Sentinel rewrites its own file, so it gets a fresh copy on a writable volume at each
# start; what it learnt before (replicas, other sentinels) it learns again in seconds.
conf=${SENTINEL_DIR:-/sentinel}/sentinel.conf
cat > "$conf" <<CONF
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor $MIA_REDIS_SENTINEL_MASTER $master 6379 $quorum
sentinel down-after-milliseconds $MIA_REDIS_SENTINEL_MASTER 5000
sentinel failover-timeout $MIA_REDIS_SENTINEL_MASTER 60000
sentinel parallel-syncs $MIA_REDIS_SENTINEL_MASTER 1
CONF
exec redis-server "$conf" --sentinel
