FROM python:3.11-slim
# mosquitto_passwd for `yukimizu device add` (Debian ships it in the mosquitto
# package; the broker itself never runs in this image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends mosquitto \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
# Every package of pyproject's [tool.setuptools.packages.find] include
# (tests/test_deploy.py keeps the two in step).
COPY sensors sensors
COPY core core
COPY ingest ingest
COPY simulators simulators
COPY rules rules
COPY dashboards dashboards
COPY alerts alerts
COPY reports reports
COPY provision provision
COPY publicpage publicpage
COPY devtools devtools
COPY cli cli
RUN pip install --no-cache-dir .
COPY config config
COPY scenarios scenarios
RUN mkdir -p /var/lib/yukimizu && chown nobody /var/lib/yukimizu
USER nobody
