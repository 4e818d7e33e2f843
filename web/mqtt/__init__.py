"""The MQTT gateway, a process of its own: ``python -m web.mqtt``."""
