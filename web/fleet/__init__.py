"""What the web process does with the fleet, with no Flask in it (testable without a
server): the miner registry (heartbeats), miner auth and the audit log, the job client
and the result waiter, legacy leases, model placement, the reaper, the watchdog and
Prometheus gauges, housekeeping, and the database (SQLAlchemy + Alembic migrations)."""
