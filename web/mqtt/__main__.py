"""``python -m web.mqtt``: the MQTT gateway."""

import sys

from web.mqtt.gateway import main

sys.exit(main())
