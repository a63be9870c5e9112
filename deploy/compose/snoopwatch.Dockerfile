# The snoopwatch image: `snoopwatch worker` by default; every subcommand works
# (create-topics, alerts, forward-alertmanager, simulate, ...). Build from the repository root:
#   docker build -f deploy/compose/snoopwatch.Dockerfile -t snoopwatch:0.1.0 .

# The detection core compiled with Cython (detectors/build.py), where a C compiler is at hand.
FROM python:3.11 AS core
WORKDIR /app
COPY detectors ./detectors
RUN pip install --no-cache-dir "cython>=3.0,<4" setuptools \
    && python -m detectors.build && rm -f detectors/*.py

FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY detectors ./detectors
# the compiled modules and their manifest (package data: pip installs them beside the source)
COPY --from=core /app/detectors/ ./detectors/
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
