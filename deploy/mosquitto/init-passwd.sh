#!/bin/sh
# docker-compose `mqtt-init`: refuse placeholder secrets, then create or update the
# service accounts in services.passwd (the services listener, 1883) from the
# environment. Device accounts live in passwd (the device listener, 8883), written
# by `yukimizu device add`; a service account found there (an older layout kept
# both in one file) is removed, so ingest's password never works where devices
# connect. README "Securing the broker".
set -eu
dir=${MQTT_AUTH_DIR:-/mosquitto/auth}
services="$dir/services.passwd"
devices="$dir/passwd"

# A value still as .env.example had it (older copies said CHANGE-ME-…) would put a
# published password live on 8883 or 3000.
for var in MQTT_INGEST_PASSWORD MQTT_OPERATOR_PASSWORD INFLUX_PASSWORD INFLUX_TOKEN \
    GRAFANA_ADMIN_PASSWORD; do
  eval "value=\${$var:-}"
  case "$value" in
    CHANGE-ME*|CHANGE_ME*|changeme*)
      echo "refused: $var in .env is still the placeholder from .env.example; set a secret (openssl rand -base64 32)" >&2
      exit 1 ;;
  esac
done

[ -f "$services" ] || { touch "$services"; echo "created $services"; }
[ -f "$devices" ] || { touch "$devices"; echo "created $devices"; }
mosquitto_passwd -b "$services" ingest "${MQTT_INGEST_PASSWORD:?set MQTT_INGEST_PASSWORD in .env}"
if [ -n "${MQTT_OPERATOR_PASSWORD:-}" ]; then
  mosquitto_passwd -b "$services" operator "$MQTT_OPERATOR_PASSWORD"
elif grep -q '^operator:' "$services"; then
  mosquitto_passwd -D "$services" operator
fi
for user in ingest operator; do
  if grep -q "^$user:" "$devices"; then
    mosquitto_passwd -D "$devices" "$user"
    echo "removed service account $user from the device accounts ($devices)"
  fi
done
for f in "$services" "$devices"; do
  chown mosquitto:mosquitto "$f" 2>/dev/null || true
  chmod 0640 "$f"
done
echo "service accounts in $services: ingest${MQTT_OPERATOR_PASSWORD:+ operator}"
