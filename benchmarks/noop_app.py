"""A minimal faust app whose one agent does nothing per event: faust's own per-message cost.

Run by ``bench.py`` in a process of its own, configured by environment variables:
``BENCH_BROKER`` (faust URL), ``BENCH_TOPIC``, ``BENCH_APP_ID`` (consumer group, fresh per
run), ``BENCH_COUNT`` (messages to wait for), ``BENCH_RESULT`` (JSON file written once
``BENCH_COUNT`` messages went through) and ``BENCH_DATADIR``. Raw key and value
serializers, so faust decodes nothing; same app settings as the snoopwatch worker's.
``BENCH_TAKE=256`` takes the events in batches the way the worker does (``make bench``
leaves it unset: per event; side by side the two drain within ~2 % of each other).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust
import orjson

from detectors.settings import Settings
from stream.kafka_security import broker_credentials

BROKER = os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092")
TOPIC = os.environ.get("BENCH_TOPIC", "bench-noop")
APP_ID = os.environ.get("BENCH_APP_ID", "bench-noop")
COUNT = int(os.environ.get("BENCH_COUNT", "0"))
RESULT = os.environ.get("BENCH_RESULT", "")
TAKE = int(os.environ.get("BENCH_TAKE", "0"))  # > 0: take events in batches of this many

app = faust.App(
    APP_ID,
    broker=BROKER,
    broker_credentials=broker_credentials(Settings.from_env()),  # SNOOPWATCH_SECURITY_* etc.
    datadir=os.environ.get("BENCH_DATADIR", "state/bench/noop"),
    store="memory://",
    autodiscover=False,
    topic_partitions=4,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
)
topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw")


class _State:
    count = 0
    first = 0.0


def _write_result(seconds: float) -> None:
    tmp = RESULT + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps({"events": _State.count, "seconds": seconds}))
    os.replace(tmp, RESULT)


def _count() -> None:
    if _State.count == 0:
        _State.first = time.perf_counter()
    _State.count += 1
    if _State.count == COUNT and RESULT:
        _write_result(time.perf_counter() - _State.first)


@app.agent(topic, name="noop")
async def noop(stream: Any) -> None:
    if TAKE:  # batches, taken the way the snoopwatch worker takes them
        async for batch in stream.noack().take_events(TAKE, within=0.005):
            for _event in batch:
                _count()
    else:
        async for _value in stream:
            _count()


def main() -> None:
    from faust.worker import Worker

    sys.argv = [sys.argv[0], "worker"]
    Worker(app, loglevel=os.environ.get("BENCH_LOGLEVEL", "info")).execute_from_commandline()


if __name__ == "__main__":
    main()
