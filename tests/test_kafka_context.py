"""On the real broker: the worker applies VIP and departing context, not only counts it.

One worker of its own (own topics, one partition) is fed the company of
tests/context_case.py through Kafka, its context on the context topic first (as
``snoopwatch simulate --kafka`` publishes it). Every VIP snoop must be alerted within the
hour and the departing grab at all; tests/test_replay.py shows the same company without
its context catches none of them, so a worker that reads context entries but never applies
them fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from detectors.settings import Settings
from stream.replay import replay
from stream.simulate import generate, produce, write_jsonl
from tests import procs
from tests.context_case import SIM, caught, instances
from tests.test_kafka import _consume, wait_for_metric

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    procs.require_broker()
    # One partition keeps the global order, so the worker must agree with replay exactly.
    return procs.fresh_settings(tmp_path_factory.mktemp("ctx-worker"), partitions=1)


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[str]:
    with procs.worker(settings, Path(settings.data_dir) / "worker.log") as url:
        yield url


def test_the_worker_catches_what_only_context_reveals(settings: Settings, worker: str,
                                                      tmp_path: Path) -> None:
    events, context, alerts_file = (tmp_path / n for n in ("e.jsonl", "c.jsonl", "a.jsonl"))
    write_jsonl(SIM, str(events), None, str(context))
    replay(str(events), str(alerts_file), context_path=str(context))
    expected = [orjson.loads(line) for line in alerts_file.read_bytes().splitlines()]
    spans = instances(list(generate(SIM)))

    sim = asyncio.run(produce(SIM, settings.broker, settings.input_topic,
                              context_topic=settings.context_topic))
    assert sim["context"] > 0
    wait_for_metric(worker, "snoopwatch_context_entries_total", sim["context"], 60)
    wait_for_metric(worker, "snoopwatch_events_processed_total", sim["events"], 300)
    msgs = asyncio.run(_consume(settings.alerts_topic,
                                lambda got: len(got) >= len(expected), 60))
    alerts = [orjson.loads(m.value) for m in msgs]
    found = caught(spans, alerts)
    assert all(found.values()), found
    assert sorted(a["alert_id"] for a in alerts) == sorted(a["alert_id"] for a in expected)
