"""What several views (and the MQTT gateway) share: reading input (validation,
parsing), errors as JSON, Server-Sent Events, request ids, the admin and miner guards,
and the heartbeat's one check."""
