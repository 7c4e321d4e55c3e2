# One image for every component: its edge run | process inference | process analytics | sink clickhouse ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    ITS_DATA_DIR=/var/lib/its ITS_LOG_FORMAT=json
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY its its
COPY schemas schemas
COPY producers producers
COPY processors processors
COPY connectors connectors
COPY infra infra
RUN pip install . && useradd --system --uid 10001 --home /var/lib/its its \
    && mkdir -p /var/lib/its /assets && chown its /var/lib/its
# Numeric, so Kubernetes' runAsNonRoot can verify it (infra/k8s runs as 10001 with fsGroup 10001).
USER 10001
# Every component serves /metrics + /healthz on ITS_METRICS_HOST; in a container that must be all interfaces.
ENV ITS_METRICS_HOST=0.0.0.0
ENTRYPOINT ["its"]
CMD ["--help"]
