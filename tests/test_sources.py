"""Source formats (issue 16, SPEC §1 "Sources in other formats") and OCSF findings (SPEC §2).

The shared real samples (``../shared/data/sources`` beside the repository) are used when
present: every record is an event or a dead letter with a specific reason.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.events import REASONS, InvalidEvent
from stream.cli import main
from stream.metrics import Metrics
from stream.pipeline import Pipeline, Rejected
from stream.replay import replay
from stream.simulate import SimConfig, write_jsonl
from stream.sinks.ocsf import finding
from stream.sources import file_units, parse_sources, source_for
from stream.sources.mapping import MappingError, MappingSource
from tests.ocsf_schema import ocsf_errors

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "sources"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAPPINGS = REPO / "deploy" / "mappings"


def ct(**over: Any) -> dict[str, Any]:
    """A CloudTrail record (an IAM user's S3 GetObject), with fields replaced."""
    rec: dict[str, Any] = {
        "eventVersion": "1.08", "eventID": "e-1", "eventTime": "2024-08-02T08:23:24Z",
        "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.4", "userAgent": "aws-cli/2.15",
        "recipientAccountId": "111122223333",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/ann",
                         "accountId": "111122223333", "userName": "ann"},
        "requestParameters": {"bucketName": "crm-exports", "key": "c/1.json"},
        "additionalEventData": {"bytesTransferredOut": 512.0},
    }
    rec.update(over)
    return rec


def one(src: Any, rec: dict[str, Any]) -> Any:
    (res,) = src.decode(orjson.dumps(rec))
    return res


# --- CloudTrail ---------------------------------------------------------------------------

def test_cloudtrail_maps_an_s3_data_event() -> None:
    ev = one(source_for("cloudtrail"), ct()).event
    assert (ev.event_id, ev.actor, ev.action, ev.resource_type, ev.resource_id) == (
        "e-1", "arn:aws:iam::111122223333:user/ann", "download", "s3", "crm-exports/c/1.json")
    assert (ev.customer_id, ev.bytes, ev.source_ip, ev.client, ev.outcome, ev.role) == (
        "crm-exports", 512, "198.51.100.4", "aws-cli/2.15", "success", "IAMUser")
    assert ev.is_egress and ev.time_ms == 1722587004000
    assert ev.attrs["api"] == "GetObject" and ev.attrs["aws_region"] == "us-east-1"


def test_cloudtrail_assumed_role_sessions_are_one_stable_actor() -> None:
    src = source_for("cloudtrail")
    actors, sessions = set(), set()
    for i, session in enumerate(("i-0aaa", "i-0bbb")):
        ui = {"type": "AssumedRole",
              "arn": f"arn:aws:sts::111122223333:assumed-role/app-role/{session}",
              "sessionContext": {"sessionIssuer": {
                  "type": "Role", "arn": "arn:aws:iam::111122223333:role/app-role"}}}
        ev = one(src, ct(eventID=f"s{i}", userIdentity=ui)).event
        actors.add(ev.actor)
        sessions.add(ev.attrs["session"])
    assert actors == {"arn:aws:iam::111122223333:role/app-role"}
    assert sessions == {"i-0aaa", "i-0bbb"}
    # no sessionIssuer (trimmed records): the role ARN is derived from the session ARN
    ev = one(src, ct(userIdentity={"type": "AssumedRole",
                                   "arn": "arn:aws:sts::1:assumed-role/ci/run-7"})).event
    assert ev.actor == "arn:aws:iam::1:role/ci" and ev.attrs["session"] == "run-7"


def test_cloudtrail_aws_services_are_kept_apart_from_people() -> None:
    src = source_for("cloudtrail")
    ev = one(src, ct(userIdentity={"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
                     sourceIPAddress="ec2.amazonaws.com")).event
    assert (ev.actor, ev.role, ev.source_ip) == ("service:ec2.amazonaws.com", "aws_service",
                                                 None)
    assert ev.attrs["source_host"] == "ec2.amazonaws.com"  # not an IP: kept as an attribute
    ev = one(src, ct(userIdentity={"type": "IAMUser", "arn": "arn:aws:iam::1:user/ann",
                                   "invokedBy": "athena.amazonaws.com"})).event
    assert ev.actor == "service:athena.amazonaws.com" and ev.role == "aws_service"
    assert ev.attrs["on_behalf_of"] == "arn:aws:iam::1:user/ann"


def test_cloudtrail_outcomes_customers_and_bad_addresses() -> None:
    src = source_for("cloudtrail")
    assert one(src, ct(errorCode="AccessDenied")).event.outcome == "denied"
    assert one(src, ct(errorCode="Client.UnauthorizedOperation")).event.outcome == "denied"
    assert one(src, ct(errorCode="NoSuchKey")).event.outcome == "error"
    ev = one(src, ct(sourceIPAddress="256.1.2.3", awsRegion="mars-north-9")).event
    assert ev.source_ip is None and ev.attrs["source_host"] == "256.1.2.3"
    assert ev.attrs["aws_region"] == "mars-north-9"  # unknown regions are kept as they are
    mgmt = ct(eventSource="iam.amazonaws.com", eventName="CreateUser", requestParameters={})
    assert one(src, mgmt).event.customer_id == "111122223333"  # no bucket: the account
    assert one(source_for("cloudtrail", cloudtrail_customer="account"),
               ct()).event.customer_id == "111122223333"
    assert one(source_for("cloudtrail", cloudtrail_customer="none"),
               ct()).event.customer_id is None
    # exports that drop the Z: CloudTrail times are UTC
    assert one(src, ct(eventTime="2024-08-02 08:23:24.000000000")).event.time_ms == 1722587004000


@pytest.mark.parametrize(("change", "reason", "field", "detail"), [
    ({"eventTime": "yesterday"}, "bad_time", "eventTime", "cloudtrail: eventTime: time"),
    ({"eventID": None}, "missing_field", "eventID", "cloudtrail: eventID missing"),
    ({"userIdentity": "root"}, "wrong_type", "userIdentity", "cloudtrail: userIdentity must"),
    ({"userIdentity": {"type": "Unknown"}}, "missing_field", "userIdentity.arn",
     "cloudtrail: userIdentity.arn missing"),
    ({"additionalEventData": {"bytesTransferredOut": -5}}, "bad_value",
     "additionalEventData.bytesTransferredOut", "cloudtrail: additionalEventData."),
    ({"userAgent": 7}, "wrong_type", "userAgent", "cloudtrail: userAgent: client must"),
])
def test_cloudtrail_rejections_name_the_format_and_source_field(
        change: dict[str, Any], reason: str, field: str, detail: str) -> None:
    err = one(source_for("cloudtrail"), ct(**change)).error
    assert isinstance(err, InvalidEvent)
    assert (err.reason, err.field) == (reason, field)
    assert err.detail.startswith(detail), err.detail


def test_a_records_message_dead_letters_only_its_bad_record(tmp_path: Path) -> None:
    pipe = Pipeline(metrics=Metrics(), wall_clock=False)
    msg = orjson.dumps({"Records": [ct(eventID="a"), ct(eventID="b", eventTime="soon"),
                                    ct(eventID="c")]})
    out = pipe.ingest_from(source_for("cloudtrail"), msg, {"topic": "raw", "partition": 0,
                                                           "offset": 9})
    assert [o.event_id for o in out if not isinstance(o, Rejected)] == ["a", "c"]
    (rej,) = [o for o in out if isinstance(o, Rejected)]
    assert rej.record["source"] == {"topic": "raw", "partition": 0, "offset": 9, "record": 1}
    assert orjson.loads(rej.record["value"])["eventID"] == "b"  # the record itself, kept
    assert rej.record["field"] == "eventTime"
    m = pipe.metrics.exposition().decode()
    assert 'snoopwatch_source_records_total{format="cloudtrail"} 3.0' in m
    assert ('snoopwatch_source_dead_lettered_total{format="cloudtrail",reason="bad_time"} 1.0'
            in m)
    assert 'snoopwatch_events_dead_lettered_total{reason="bad_time"} 1.0' in m


def test_file_shapes_records_array_jsonl_and_gzip(tmp_path: Path) -> None:
    recs = [ct(eventID=f"r{i}") for i in range(3)]
    shapes = {
        "records.json": json.dumps({"Records": recs}, indent=2).encode(),
        "array.json": json.dumps(recs, indent=1).encode(),
        "lines.jsonl": b"\n".join(orjson.dumps(r) for r in recs) + b"\n",
        "batches.jsonl": orjson.dumps({"Records": recs[:2]}) + b"\n" + orjson.dumps(recs[2:]),
    }
    src = source_for("cloudtrail")
    for name, data in shapes.items():
        for path in (tmp_path / name, tmp_path / (name + ".gz")):
            path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
            ids = [r.event.event_id for _, unit in file_units(str(path), src)
                   for r in src.decode(unit)]
            assert ids == ["r0", "r1", "r2"], (path.name, ids)


def test_replay_format_cloudtrail_names_file_record_and_field(tmp_path: Path,
                                                                capsys: Any) -> None:
    path = tmp_path / "trail.json"
    path.write_text(json.dumps({"Records": [ct(), ct(eventID="x", eventTime="never")]},
                               indent=2))
    dlq = tmp_path / "dlq.jsonl"
    assert main(["replay", str(path), "--format", "cloudtrail", "--alerts",
                 str(tmp_path / "a.jsonl"), "--dlq", str(dlq)]) == 0
    err = capsys.readouterr().err
    assert f"{path} record 1: bad_time (eventTime): cloudtrail: eventTime: time 'never'" in err
    assert "2 records" not in err and "1 valid, 1 dead-lettered" in err
    (rec,) = [orjson.loads(line) for line in dlq.read_bytes().splitlines()]
    assert rec["source"] == {"file": str(path), "record": 1}
    assert main(["replay", str(path), "--format", "syslog", "--alerts",
                 str(tmp_path / "b.jsonl")]) == 1
    assert "unknown source format 'syslog'" in capsys.readouterr().err


def test_sources_setting_parses_and_refuses_what_it_cannot_use() -> None:
    assert parse_sources("spec:access-events,cloudtrail:raw-cloudtrail", "x") == [
        ("spec", "access-events"), ("cloudtrail", "raw-cloudtrail")]
    for bad in ("cloudtrail", "spec:a,ocsf:a", ":topic"):
        with pytest.raises(ValueError):
            parse_sources(bad, "x")


# --- the shared real samples --------------------------------------------------------------

def _shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the shared samples sit beside the repository)")
    return SHARED


def sample_table() -> dict[str, dict[str, Any]]:
    """Per shared file: records, events and dead letters by reason (cloudtrail format)."""
    root = _shared()
    src = source_for("cloudtrail")
    table: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "stratus-red-team").glob("*.json")):
        row = table[path.name] = {"records": 0, "events": 0, "dead": Counter()}
        for _, unit in file_units(str(path), src):
            for res in src.decode(unit):
                row["records"] += 1
                if res.error is None:
                    row["events"] += 1
                else:
                    row["dead"][res.error.reason] += 1
    for line in (root / "panther_cloudtrail_rule_tests.jsonl").read_bytes().splitlines():
        test = orjson.loads(line)
        row = table.setdefault(f"panther {test['log_type']}",
                               {"records": 0, "events": 0, "dead": Counter()})
        for res in src.decode(orjson.dumps(test["record"])):
            row["records"] += 1
            if res.error is None:
                row["events"] += 1
            else:
                row["dead"][res.error.reason] += 1
                assert res.error.detail.startswith("cloudtrail: ") and res.error.field
    return table


def test_every_shared_record_is_an_event_or_a_specific_dead_letter() -> None:
    table = sample_table()
    for name, row in table.items():
        assert row["events"] + sum(row["dead"].values()) == row["records"], name
        assert set(row["dead"]) <= set(REASONS), name
    stratus = [r for n, r in table.items() if n.startswith("aws.")]
    assert len(stratus) == 35 and sum(r["records"] for r in stratus) == 310
    # Stratus detonations are real CloudTrail (scrambled IPs and regions kept as attributes)
    assert all(not r["dead"] for r in stratus)
    # S3 server access, EKS and OneLogin records are not CloudTrail: named as such
    for other in ("AWS.S3ServerAccess", "Amazon.EKS.Audit", "OneLogin.Events"):
        row = table[f"panther {other}"]
        assert row["events"] == 0 and set(row["dead"]) == {"missing_field"}
    ct_row = table["panther AWS.CloudTrail"]
    assert ct_row["records"] == 463 and ct_row["events"] >= 390


def test_every_stratus_sample_replays_with_ocsf_findings_valid(tmp_path: Path) -> None:
    root = _shared()
    for path in sorted((root / "stratus-red-team").glob("*.json")):
        summary = replay(str(path), str(tmp_path / "alerts.jsonl"), fmt="cloudtrail",
                         ocsf_path=str(tmp_path / "ocsf.jsonl"),
                         dlq_path=str(tmp_path / "dlq.jsonl"))
        assert summary.valid == summary.records and not summary.dead_lettered, path.name
        alerts = (tmp_path / "alerts.jsonl").read_bytes().splitlines()
        findings = [orjson.loads(x) for x in (tmp_path / "ocsf.jsonl").read_bytes()
                    .splitlines()]
        assert len(findings) == len(alerts)
        for f in findings:
            assert ocsf_errors(f) == [], path.name


# --- OCSF in ------------------------------------------------------------------------------

OCSF_EXPECTED = {
    6003: ("arn:aws:iam::111122223333:user/ann", "read", "secret", "success", "111122223333"),
    6004: ("agent9@corp.example", "read", "customer_profile", "denied", None),
    6005: ("bob", "query", "datastore", "success", "acme"),
    6006: ("carol@corp.example", "download", "file", "success", None),
}


@pytest.mark.parametrize("path", sorted((FIXTURES / "ocsf").glob("*.json")), ids=lambda p: p.stem)
def test_ocsf_fixtures_are_schema_valid_and_map_to_events(path: Path) -> None:
    rec = orjson.loads(path.read_bytes())
    assert ocsf_errors(rec) == []  # the fixture is real OCSF 1.7.0
    res = one(source_for("ocsf"), rec)
    assert res.error is None, res.error
    ev = res.event
    assert (ev.actor, ev.action, ev.resource_type, ev.outcome, ev.customer_id) == \
        OCSF_EXPECTED[rec["class_uid"]]
    assert ev.event_id == rec["metadata"]["uid"] and ev.time_ms == rec["time"]
    assert ev.source_ip == rec["src_endpoint"]["ip"]
    assert ev.attrs["class_uid"] == rec["class_uid"]


def test_ocsf_rejections_name_the_source_field() -> None:
    rec = orjson.loads((FIXTURES / "ocsf" / "file_hosting_6006.json").read_bytes())
    src = source_for("ocsf")
    for change, field in (({"class_uid": 2004}, "class_uid"), ({"time": "noon"}, "time"),
                          ({"metadata": {"version": "1.7.0"}}, "metadata.uid"),
                          ({"actor": {}}, "actor.user.uid"),
                          ({"src_endpoint": {"ip": "10.0.0.300"}}, "src_endpoint.ip")):
        err = one(src, {**rec, **change}).error
        assert err is not None and err.field == field and err.detail.startswith("ocsf: "), \
            (change, err and err.detail)


# --- OCSF out -----------------------------------------------------------------------------

def test_replay_writes_a_valid_ocsf_finding_per_alert(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(SimConfig(seed=5, agents=12, days=4, insiders=1), str(events), None)
    assert main(["replay", str(events), "--alerts", str(tmp_path / "alerts.jsonl"),
                 "--ocsf", str(tmp_path / "ocsf.jsonl")]) == 0
    alerts = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    findings = [orjson.loads(x) for x in (tmp_path / "ocsf.jsonl").read_bytes().splitlines()]
    assert alerts and len(findings) == len(alerts)
    for a, f in zip(alerts, findings, strict=True):
        assert ocsf_errors(f) == []
        assert f["finding_info"]["uid"] == a["alert_id"] == f["metadata"]["uid"]
        assert f["evidences"][0]["actor"]["user"]["uid"] == a["actor"]
        assert [e["uid"] for e in f["finding_info"]["related_events"]] == a["event_ids"]
        assert f["risk_score"] == round(a["score"]) and f["message"] == a["summary"]
        assert len(f["anomaly_analyses"]) == len(a["reasons"])
        if a.get("episode_id"):
            assert f["metadata"]["correlation_uid"] == a["episode_id"]


def test_a_finding_of_every_severity_and_odd_values_validates() -> None:
    for sev in ("low", "medium", "high", "critical"):
        f = finding({"alert_id": "x", "actor": "a", "role": None, "severity": sev,
                     "time": "2026-11-28T14:03:22Z", "emitted_at": "2026-11-28T14:03:23Z",
                     "score": 99.6, "summary": "s", "customers": 0, "event_ids": ["e"],
                     "reasons": [{"detector": "d", "score": 1, "description": "x",
                                  "observed": {"n": 3}, "expected": None}]})
        assert ocsf_errors(f) == [] and f["risk_score"] == 100
        assert "correlation_uid" not in f["metadata"]  # no episode_id: none invented


# --- mapping:FILE -------------------------------------------------------------------------

def _decode_file(src: Any, path: Path) -> list[Any]:
    return [r for _, unit in file_units(str(path), src) for r in src.decode(unit)]


def test_nginx_json_mapping() -> None:
    src = source_for(f"mapping:{MAPPINGS / 'nginx-json.yml'}")
    out = _decode_file(src, FIXTURES / "mappings" / "nginx-json.log")
    ok = [r.event for r in out if r.event]
    assert [(e.event_id, e.actor, e.action, e.resource_type, e.customer_id, e.outcome)
            for e in ok] == [
        ("7f3a1", "ann", "read", "customer_profile", "c42", "success"),
        ("7f3a2", "ann", "delete", "address", "c42", "denied"),
        ("7f3a3", "bob", "read", "http_request", None, "success")]
    assert ok[0].bytes == 5120 and ok[0].source_ip == "10.0.4.17" and ok[0].attrs["status"] == 200
    bad = [(r.error.reason, r.error.field) for r in out if r.error]
    assert bad == [("bad_value", "method"), ("bad_value", "remote_addr"),
                   ("missing_field", "remote_user")]
    assert all(r.error.detail.startswith("mapping nginx-json: ") for r in out if r.error)


def test_app_audit_mapping() -> None:
    src = source_for(f"mapping:{MAPPINGS / 'app-audit.yml'}")
    out = _decode_file(src, FIXTURES / "mappings" / "app-audit.jsonl")
    ok = [r.event for r in out if r.event]
    assert [(e.event_id, e.actor, e.action, e.customer_id, e.records, e.outcome)
            for e in ok] == [
        ("a-1", "carol@corp.example", "read", "c77", 1, "success"),
        ("a-2", "u-55", "export", None, 250, "success"),
        ("a-3", "u-55", "delete", "c1", 1, "denied")]
    assert ok[0].time_ms == 1795874602500 and ok[0].fields == ("email", "phone")
    assert ok[0].ticket == "T-1001" and ok[0].role == "support" and ok[0].team == "emea"
    assert [(r.error.reason, r.error.field) for r in out if r.error] == [
        ("bad_time", "timestamp"), ("missing_field", "target.type")]


def test_mapping_json_files_hash_ids_and_bad_mapping_files(tmp_path: Path) -> None:
    spec = {"name": "min", "hash_id": True, "fields": {
        "time": "t", "actor": "u", "action": {"value": "read"},
        "resource_type": {"value": "row"}}}
    (tmp_path / "m.json").write_bytes(orjson.dumps(spec))
    src = source_for(f"mapping:{tmp_path / 'm.json'}")
    a, b = (one(src, {"t": "2026-11-28T14:03:22Z", "u": "x"}).event for _ in range(2))
    assert a.event_id == b.event_id and len(a.event_id) == 32  # the same record, the same id
    for broken, says in (({"fields": {"actor": "u"}}, "no mapping for required"),
                         ({"fields": {**spec["fields"], "colour": "c"}}, "not a SPEC event"),
                         ({"fields": {**spec["fields"], "event_id": {"pth": "x"}}},
                          "must be a path")):
        (tmp_path / "bad.json").write_bytes(orjson.dumps(broken))
        with pytest.raises(MappingError, match=says):
            MappingSource.from_file(str(tmp_path / "bad.json"))
    (tmp_path / "bad.yml").write_text("fields: [oops")
    with pytest.raises(MappingError, match=r"bad\.yml: not valid YAML/JSON"):
        MappingSource.from_file(str(tmp_path / "bad.yml"))


def test_replay_reads_gzipped_spec_files_too(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(SimConfig(seed=5, agents=6, days=1), str(events), None)
    (tmp_path / "events.jsonl.gz").write_bytes(gzip.compress(events.read_bytes()))
    plain = replay(str(events), str(tmp_path / "a.jsonl"))
    packed = replay(str(tmp_path / "events.jsonl.gz"), str(tmp_path / "b.jsonl"))
    assert packed.valid == plain.valid > 0 and packed.lines == plain.lines
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
