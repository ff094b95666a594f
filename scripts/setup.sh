#!/usr/bin/env bash
# Install everything yukimizu needs on a fresh Debian 12 machine (idempotent):
# Debian packages (mosquitto, influxdb, victoria-metrics, docker-compose, chromium and
# its driver for the public page's browser tests, python3-venv),
# a virtual environment in .venv and the package with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=()
need() { command -v "$1" >/dev/null 2>&1 || PKGS+=("$2"); }
need mosquitto mosquitto
need mosquitto_pub mosquitto-clients
need influx influxdb-client
need influxd influxdb
need victoria-metrics victoria-metrics
need docker-compose docker-compose
need python3 python3
# Browser tests of the public page (tests/test_public_browser.py): headless Chromium.
need chromium chromium
need chromedriver chromium-driver
# The printed plowing report's test (tests/test_reports.py): Chromium prints it to PDF,
# poppler-utils counts its pages and reads its text; a Japanese font to lay it out.
need pdfinfo poppler-utils
if ! fc-list :lang=ja 2>/dev/null | grep -q .; then PKGS+=(fonts-ipafont-gothic); fi
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  PKGS+=(python3-venv)
fi
if [ ${#PKGS[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${PKGS[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: yukimizu needs Python >= 3.11, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtual environment .venv"
  python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.yukimizu-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv"
  mkdir -p .yukimizu
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e '.[dev]'; } >.yukimizu/pip.log 2>&1; then
    cat .yukimizu/pip.log >&2
    echo "setup: pip install failed (log above, also in .yukimizu/pip.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version), $(mosquitto -h 2>/dev/null | head -1 | cut -c1-40))"
