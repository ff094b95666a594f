#!/bin/sh
# docker-compose `mqtt-init`: create or update the service accounts in the password
# file from the environment, keeping the device accounts `yukimizu device add` wrote.
set -eu
f=/mosquitto/auth/passwd
[ -f "$f" ] || { touch "$f"; echo "created $f"; }
mosquitto_passwd -b "$f" ingest "${MQTT_INGEST_PASSWORD:?set MQTT_INGEST_PASSWORD in .env}"
if [ -n "${MQTT_OPERATOR_PASSWORD:-}" ]; then
  mosquitto_passwd -b "$f" operator "$MQTT_OPERATOR_PASSWORD"
fi
chown mosquitto:mosquitto "$f" 2>/dev/null || true
chmod 0640 "$f"
echo "service accounts in $f: ingest${MQTT_OPERATOR_PASSWORD:+ operator}"
