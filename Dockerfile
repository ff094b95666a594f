FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY sensors sensors
COPY simulators simulators
COPY dashboards dashboards
RUN pip install --no-cache-dir .
COPY config config
COPY scenarios scenarios
RUN mkdir -p /var/lib/yukimizu && chown nobody /var/lib/yukimizu
USER nobody
