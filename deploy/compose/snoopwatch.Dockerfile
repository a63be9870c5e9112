# The snoopwatch image: `snoopwatch worker` by default; every subcommand works
# (create-topics, alerts, forward-alertmanager, simulate, ...). Build from the repository root:
#   docker build -f deploy/compose/snoopwatch.Dockerfile -t snoopwatch:0.1.0 .
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY detectors ./detectors
COPY stream ./stream
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/snoopwatch snoopwatch \
    && mkdir -p /var/lib/snoopwatch && chown snoopwatch /var/lib/snoopwatch

USER 10001
# Serve /metrics on every interface inside the container; keep state out of /app.
ENV PYTHONUNBUFFERED=1 \
    SNOOPWATCH_WEB_HOST=0.0.0.0 \
    SNOOPWATCH_WEB_PORT=6066 \
    SNOOPWATCH_DATA_DIR=/var/lib/snoopwatch
EXPOSE 6066
ENTRYPOINT ["snoopwatch"]
CMD ["worker"]
