#!/bin/bash
# InfluxDB 2.x init script (/docker-entrypoint-initdb.d, run once after setup):
# map the InfluxQL database/retention policy "$DOCKER_INFLUXDB_INIT_BUCKET/autogen"
# to the bucket, so InfluxQL (Grafana's datasource, yukimizu rules) finds it.
# The entrypoint runs this with the influx CLI configured for the admin token and
# exports DOCKER_INFLUXDB_INIT_BUCKET_ID.
set -euo pipefail
bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID:-}"
if [ -z "$bucket_id" ]; then
  bucket_id="$(influx bucket list --name "$DOCKER_INFLUXDB_INIT_BUCKET" --hide-headers | cut -f1)"
fi
influx v1 dbrp create \
  --db "$DOCKER_INFLUXDB_INIT_BUCKET" --rp autogen --default --bucket-id "$bucket_id"
influx v1 dbrp list
