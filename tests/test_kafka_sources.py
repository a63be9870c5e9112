"""A raw CloudTrail topic end to end on the real broker (issue 16): the worker reads it
beside the SPEC topic (``SNOOPWATCH_SOURCES``), alerts exactly as ``replay --format
cloudtrail`` does on the same records, dead-letters a bad record out of a ``Records`` batch
with its position, counts it per format, and writes every alert also as an OCSF 1.7.0
Detection Finding (``SNOOPWATCH_OCSF_TOPIC``) that validates.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import orjson
import pytest

from detectors.settings import Settings
from stream.demo import free_port
from stream.replay import replay
from stream.simulate import SimConfig, write_jsonl
from tests.cloudtrail_sim import to_cloudtrail
from tests.ocsf_schema import ocsf_errors
from tests.procs import require_broker, worker
from tests.test_kafka import _consume, _send, wait_for_metric
from tests.test_sources import SHARED

pytestmark = pytest.mark.kafka

BROKER = os.environ.get("SNOOPWATCH_TEST_BROKER", "kafka://127.0.0.1:9092")
SIM = SimConfig(seed=101, agents=16, days=4, insiders=1)
BATCH = 40  # CloudTrail records per Kafka message, as a log shipper batches them


async def _create(settings: Settings, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from detectors.settings import bootstrap_servers

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings.broker))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    finally:
        await admin.close()


def test_worker_turns_a_raw_cloudtrail_topic_into_alerts_and_ocsf_findings(
        tmp_path: Path) -> None:
    require_broker()
    run = uuid.uuid4().hex[:8]
    raw = f"t-{run}-raw-cloudtrail"
    s = Settings(broker=BROKER, input_topic=f"t-{run}-events", alerts_topic=f"t-{run}-alerts",
                 dlq_topic=f"t-{run}-dlq", context_topic=f"t-{run}-context",
                 ocsf_topic=f"t-{run}-ocsf", app_id=f"snoopwatch-ct-{run}",
                 sources=f"spec:t-{run}-events,cloudtrail:{raw}", web_port=free_port(),
                 partitions=1, data_dir=str(tmp_path / "worker"))
    asyncio.run(_create(s, [s.input_topic, raw, s.alerts_topic, s.dlq_topic, s.ocsf_topic]))

    spec = tmp_path / "events.jsonl"
    write_jsonl(SIM, str(spec), None)
    events = [orjson.loads(line) for line in spec.read_bytes().splitlines()]
    records = [to_cloudtrail(e) for e in events]
    broken = {**records[5], "eventID": "ct-broken", "eventTime": "not a time"}
    batches = [records[i:i + BATCH] for i in range(0, len(records), BATCH)]
    batches[0] = [*batches[0][:3], broken, *batches[0][3:]]  # record 3 of the first message
    messages = [orjson.dumps({"Records": b}) for b in batches]
    trail = tmp_path / "trail.jsonl"
    trail.write_bytes(b"\n".join(messages) + b"\n")
    replay(str(trail), str(tmp_path / "alerts.jsonl"), fmt="cloudtrail",
           ocsf_path=str(tmp_path / "ocsf.jsonl"))
    expected = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    assert expected, "replay raised no alert on the CloudTrail version of the simulation"

    (tmp_path / "worker").mkdir()
    with worker(s, tmp_path / "worker.log") as url:
        asyncio.run(_send(raw, [(None, m) for m in messages] + [(b"k", b"{not json")]))
        metrics = wait_for_metric(url, "snoopwatch_events_processed_total", len(records), 180)
        assert metrics['snoopwatch_source_records_total{format="cloudtrail"}'] == \
            len(records) + 2
        alerts_msgs = asyncio.run(_consume(s.alerts_topic,
                                           lambda got: len(got) >= len(expected), 60))
        ocsf_msgs = asyncio.run(_consume(s.ocsf_topic,
                                         lambda got: len(got) >= len(expected), 60))
        dlq_msgs = asyncio.run(_consume(s.dlq_topic, lambda got: len(got) >= 2, 60))
        # Then the real Stratus Red Team records, each file one message (a JSON array):
        # every one of them is an event (scrambled addresses are kept as attributes).
        stratus = sorted((SHARED / "stratus-red-team").glob("*.json")) if SHARED.is_dir() \
            else []
        asyncio.run(_send(raw, [(None, p.read_bytes()) for p in stratus]))
        n_stratus = sum(len(orjson.loads(p.read_bytes())) for p in stratus)
        final = wait_for_metric(url, "snoopwatch_events_valid_total",
                                len(records) + n_stratus, 120)

    alerts = [orjson.loads(m.value) for m in alerts_msgs]

    def same(a: dict) -> tuple:
        return a["alert_id"], a["severity"], a["score"], a["summary"], tuple(a["event_ids"])

    assert sorted(map(same, alerts)) == sorted(map(same, expected))
    assert all(a["actor"].startswith("arn:aws:iam::111122223333:user/") for a in alerts)

    findings = [orjson.loads(m.value) for m in ocsf_msgs]
    assert sorted(f["finding_info"]["uid"] for f in findings) == sorted(
        a["alert_id"] for a in alerts)
    for f in findings:
        assert ocsf_errors(f) == []

    dead = sorted((orjson.loads(m.value) for m in dlq_msgs), key=lambda r: r["reason"])
    assert [r["reason"] for r in dead] == ["bad_time", "invalid_json"]
    assert dead[0]["source"] == {"topic": raw, "partition": 0, "offset": 0, "record": 3}
    assert dead[0]["field"] == "eventTime" and orjson.loads(dead[0]["value"])["eventID"] == \
        "ct-broken"
    assert dead[1]["error"].startswith("cloudtrail: message is not valid JSON")
    assert final['snoopwatch_source_dead_lettered_total{format="cloudtrail",reason="bad_time"}'
                 ] == 1
    assert final['snoopwatch_source_dead_lettered_total{format="spec",reason="bad_time"}'] == 0
    assert final['snoopwatch_source_records_total{format="cloudtrail"}'] == \
        len(records) + 2 + n_stratus
    assert sum(v for k, v in final.items()
               if k.startswith("snoopwatch_events_dead_lettered_total")) == 2


def test_a_worker_with_an_unusable_source_stops_with_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    monkeypatch.setenv("SNOOPWATCH_SOURCES", "mapping:/nonexistent/app.yml:audit")
    assert main(["worker"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "snoopwatch worker: mapping file /nonexistent/app.yml: No such file or " \
        "directory", err
