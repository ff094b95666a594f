#!/usr/bin/env bash
# The main job: install what is missing, start private Mosquitto + InfluxDB and ingest,
# publish every payload format and a simulated heavy-snow night, print what arrived.
# Stop everything with: .venv/bin/yukimizu demo stop
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/yukimizu demo "$@"
