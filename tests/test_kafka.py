"""End to end on the real local broker (``make kafka-up``; ``make test`` starts it).

One real worker process (``snoopwatch worker``) per module, on topics of its
own, fed through Kafka: an injected insider comes out as an alert on the alerts
topic, malformed messages come out on the dead-letter topic with their reasons,
and ``/metrics`` serves every series SPEC §5 and the issue name.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors import core_build
from detectors.settings import Settings, bootstrap_servers
from stream.demo import free_port, scrape
from stream.processes import stop_process
from stream.replay import replay
from stream.simulate import SimConfig, generate, produce, write_jsonl
from tests.procs import require_broker, wait_until

pytestmark = pytest.mark.kafka

BROKER = os.environ.get("SNOOPWATCH_TEST_BROKER", "kafka://127.0.0.1:9092")
SERVERS = bootstrap_servers(BROKER)
SIM = SimConfig(seed=101, agents=16, days=4, insiders=1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    require_broker()
    run = uuid.uuid4().hex[:8]
    return Settings(broker=BROKER, input_topic=f"t-{run}-events", alerts_topic=f"t-{run}-alerts",
                    dlq_topic=f"t-{run}-dlq", context_topic=f"t-{run}-context",
                    app_id=f"snoopwatch-test-{run}", web_port=free_port(),
                    # One by-actor partition keeps the global event order, so peer-group
                    # statistics see what replay sees and the alerts must match exactly.
                    partitions=1,
                    data_dir=str(tmp_path_factory.mktemp("worker")))


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[str]:
    env = {**os.environ, **settings.to_env()}
    log = Path(settings.data_dir) / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while not scrape(url):
            assert proc.poll() is None, f"worker died:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker not serving:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc, 30)


async def _send(topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=SERVERS)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(topic: str, until: Any, timeout_s: float) -> list[Any]:
    """Read ``topic`` from the start until ``until(messages)`` is true or time runs out."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=SERVERS, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    got: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(got):
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(msgs)
    finally:
        await consumer.stop()
    return got


def wait_for_metric(url: str, name: str, at_least: float, timeout_s: float = 120
                    ) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = scrape(url)
        if metrics.get(name, 0) >= at_least:
            return metrics
        assert time.monotonic() < deadline, f"{name} stayed at {metrics.get(name)} < {at_least}"
        time.sleep(0.5)


def test_injected_insider_is_alerted_on_the_alerts_topic(settings: Settings, worker: str,
                                                         tmp_path: Path) -> None:
    # What the offline driver says about the same events: the worker must agree exactly.
    events, alerts_file = tmp_path / "events.jsonl", tmp_path / "alerts.jsonl"
    write_jsonl(SIM, str(events), None)
    replay(str(events), str(alerts_file))
    expected = [orjson.loads(line) for line in alerts_file.read_bytes().splitlines()]
    assert expected

    sim = asyncio.run(produce(SIM, settings.broker, settings.input_topic))
    insiders = set(sim["insiders"])
    assert len(insiders) == 1
    metrics = wait_for_metric(worker, "snoopwatch_events_processed_total", sim["events"])
    assert metrics["snoopwatch_events_valid_total"] == sim["events"]

    msgs = asyncio.run(_consume(settings.alerts_topic, lambda got: len(got) >= len(expected),
                                60))
    alerts = [orjson.loads(m.value) for m in msgs]
    assert [m.key.decode() for m in msgs] == [a["actor"] for a in alerts]  # keyed by actor
    caught = [a for a in alerts if a["actor"] in insiders]
    assert caught, f"insider not alerted; alerts: {[a['summary'] for a in alerts]}"
    assert sim["labels"].get(caught[0]["event_ids"][0]), "the trigger is an insider's event"
    assert "without a ticket" in caught[0]["summary"]
    false_alarms = {a["actor"] for a in alerts} - insiders
    assert len(false_alarms) <= 1, f"normal staff alerted: {false_alarms}"

    def same(a: dict) -> tuple:
        return a["alert_id"], a["severity"], a["score"], a["summary"], tuple(a["event_ids"])

    assert sorted(map(same, alerts)) == sorted(map(same, expected))


def test_malformed_messages_go_to_the_dead_letter_topic(settings: Settings, worker: str
                                                        ) -> None:
    before = scrape(worker)
    bad = [
        (b"k1", b"{broken"),
        (b"k2", b"\xff\xfe not utf-8"),
        (None, orjson.dumps({"event_id": "dl-1", "time": "whenever", "actor": "a",
                             "action": "read", "resource_type": "order"})),
        (b"k4", orjson.dumps({"event_id": "dl-2", "time": 1764338602123, "actor": "a",
                              "resource_type": "order"})),
    ]
    asyncio.run(_send(settings.input_topic, bad))
    msgs = asyncio.run(_consume(settings.dlq_topic, lambda got: len(got) >= len(bad), 60))
    records = [orjson.loads(m.value) for m in msgs]
    assert sorted(r["reason"] for r in records) == sorted(
        ["invalid_json", "invalid_utf8", "bad_time", "missing_field"])
    by_reason = {r["reason"]: r for r in records}
    assert by_reason["missing_field"]["field"] == "action"
    assert by_reason["invalid_json"]["value"] == "{broken"
    assert by_reason["invalid_utf8"]["value"] is None
    assert by_reason["invalid_utf8"]["value_b64"] == "//4gbm90IHV0Zi04"
    for r in records:
        assert r["source"]["topic"] == settings.input_topic
        assert isinstance(r["source"]["offset"], int) and r["source"]["partition"] >= 0

    after = wait_for_metric(
        worker, 'snoopwatch_events_dead_lettered_total{reason="invalid_utf8"}',
        before.get('snoopwatch_events_dead_lettered_total{reason="invalid_utf8"}', 0) + 1)
    for reason in ("invalid_json", "invalid_utf8", "bad_time", "missing_field"):
        key = f'snoopwatch_events_dead_lettered_total{{reason="{reason}"}}'
        assert after[key] == before.get(key, 0) + 1


def test_context_entries_reach_the_worker(settings: Settings, worker: str) -> None:
    before = scrape(worker).get("snoopwatch_context_entries_total", 0)
    asyncio.run(_send(settings.context_topic, [
        (b"vip_customer:c000001", orjson.dumps({"kind": "vip_customer", "id": "c000001"})),
        (b"departing_actor:bob", orjson.dumps({"kind": "departing_actor", "id": "bob",
                                               "last_day": "2026-12-01"})),
        (b"vip_customer:c000001", None),  # removal
        (b"junk", b"[1,2]"),  # malformed: dead-lettered
        # under another key: a removal by its key would never reach it
        (b"vip_customer:c000009", orjson.dumps({"kind": "vip_customer", "id": "c000002"})),
    ]))
    wait_for_metric(worker, "snoopwatch_context_entries_total", before + 3)
    metrics = wait_for_metric(worker, 'snoopwatch_context_dead_lettered_total{reason="bad_value"}',
                              1)
    assert metrics['snoopwatch_context_dead_lettered_total{reason="not_an_object"}'] == 1
    msgs = asyncio.run(_consume(settings.dlq_topic, lambda got: sum(
        orjson.loads(m.value)["source"]["topic"] == settings.context_topic for m in got) >= 2,
        60))
    rec = [orjson.loads(m.value) for m in msgs]
    assert {(r["reason"], r["field"]) for r in rec
            if r["source"]["topic"] == settings.context_topic} == {
        ("not_an_object", None), ("bad_value", "key")}


def test_metrics_serves_the_named_series(settings: Settings, worker: str) -> None:
    import urllib.request

    wait_for_metric(worker, "snoopwatch_events_processed_total", 1)
    with urllib.request.urlopen(worker) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    for series in (
        "snoopwatch_events_consumed_total",
        "snoopwatch_events_valid_total",
        'snoopwatch_events_dead_lettered_total{reason="bad_time"}',
        "snoopwatch_events_processed_total",
        "snoopwatch_alerts_total{",
        'snoopwatch_processing_latency_seconds_bucket{le="0.001"}',
        "snoopwatch_processing_latency_seconds_count",
        "snoopwatch_event_time_lag_seconds_bucket",
        "snoopwatch_tracked_actors",
    ):
        assert series in text, series
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert all(n.startswith("snoopwatch_") for n in names), names
    # No actor (or customer, or event id) is ever a label value.
    actors = {ev["actor"] for ev, _ in generate(SIM)}
    labelled = [line for line in text.splitlines() if "{" in line and not line.startswith("#")]
    assert not [line for line in labelled if any(f'"{a}"' in line for a in actors)]



def test_the_worker_logs_which_core_it_runs(settings: Settings, worker: str) -> None:
    # This process loads the same build as the worker (tests/test_compiled.py: compiled).
    line = f"snoopwatch: detection core {core_build()}"
    wait_until("the core build in the worker's log",
               lambda: line in (Path(settings.data_dir) / "worker.log").read_text(), 30)


def test_topics_just_created_show_their_partitions() -> None:
    # The broker briefly describes a brand-new (compacted, most often) topic with no
    # partitions; the context follower once assigned that empty list and never read a
    # watchlist entry. Several compacted topics at once make the window likely.
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from stream.topics import topic_partitions

    async def create_and_describe() -> dict[str, list[int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=SERVERS)
        await admin.start()
        try:
            names = [f"t-{uuid.uuid4().hex[:8]}-fresh{i}" for i in range(3)]
            await admin.create_topics([NewTopic(n, i + 1, 1, topic_configs={
                "cleanup.policy": "compact"}) for i, n in enumerate(names)])
            return await topic_partitions(admin, names)
        finally:
            await admin.close()

    assert sorted(asyncio.run(create_and_describe()).values()) == [[0], [0, 1], [0, 1, 2]]
