"""The synthetic company (stream.simulate): valid, ordered, deterministic, labelled."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import types
from collections import defaultdict
from datetime import date

import orjson
import pytest

from detectors.events import parse_context, parse_event
from detectors.settings import bootstrap_servers
from stream import simulate
from stream.simulate import (
    LABEL_BULK_NO_TICKET,
    SimConfig,
    context_entries,
    generate,
    produce,
    write_jsonl,
)

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def default_run() -> list[tuple[dict, str | None]]:
    return list(generate(SimConfig()))


def _no_ticket_customers(run):
    """(actor, UTC date) -> distinct customers touched without a ticket."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ev, _ in run:
        if ev.get("ticket") is None and ev.get("customer_id"):
            out[ev["actor"], ev["time"][:10]].add(ev["customer_id"])
    return out


def test_same_seed_same_stream_other_seed_differs() -> None:
    cfg = SimConfig(agents=12, days=3)
    a = orjson.dumps(list(generate(cfg)))
    assert a == orjson.dumps(list(generate(SimConfig(agents=12, days=3))))
    assert a != orjson.dumps(list(generate(SimConfig(seed=8, agents=12, days=3))))


def test_every_event_is_valid_and_time_ordered(default_run) -> None:
    last = -1
    ids = set()
    for ev, _ in default_run:
        parsed = parse_event(ev)
        assert TIME_RE.match(ev["time"]), ev["time"]
        assert parsed.time_ms >= last
        last = parsed.time_ms
        ids.add(parsed.event_id)
    assert len(ids) == len(default_run)
    assert 10_000 <= len(default_run) <= 30_000  # the advertised 40 x 5 scale
    first, final = default_run[0][0]["time"][:10], default_run[-1][0]["time"][:10]
    assert first == "2026-11-02"
    assert final <= "2026-11-07"  # only the last night shift spills past day 4


def test_labels_only_on_the_established_insider(default_run) -> None:
    labelled = [ev for ev, label in default_run if label is not None]
    assert labelled
    assert {label for _, label in default_run if label} == {LABEL_BULK_NO_TICKET}
    insiders = {ev["actor"] for ev in labelled}
    assert len(insiders) == 1
    insider = insiders.pop()
    for ev in labelled:
        assert ev["role"] == "support_agent"
        assert ev.get("ticket") is None
        assert ev["action"] == "read" and ev["resource_type"] == "customer_profile"
        assert ev["fields"] == ["email", "phone"]
        assert ev["time"][:10] == "2026-11-06"  # default insider day: the last day
    # Established: worked normally, with tickets, on earlier days.
    earlier = {ev["time"][:10] for ev, label in default_run
               if ev["actor"] == insider and label is None and ev.get("ticket")}
    assert any(day < "2026-11-06" for day in earlier)
    # An insider, not a hacker: usual console, same network as their work that day.
    usual_ips = {ev["source_ip"] for ev, label in default_run
                 if ev["actor"] == insider and label is None and ev["time"][:10] == "2026-11-06"}
    assert {ev["source_ip"] for ev in labelled} <= usual_ips
    assert {ev["client"] for ev in labelled} == {"crm-console"}


def test_insider_dwarfs_every_normal_agent_day(default_run) -> None:
    insider = next(ev["actor"] for ev, label in default_run if label)
    per_day = _no_ticket_customers(default_run)
    spree = max(len(c) for (actor, _), c in per_day.items() if actor == insider)
    normal = max(len(c) for (actor, _), c in per_day.items()
                 if actor.startswith("agent-") and actor != insider)
    assert spree >= 150
    assert spree > 10 * normal
    # Mostly outside the insider's own region (customer i lives in region i % regions).
    labelled = [ev for ev, label in default_run if label]
    region = int(labelled[0]["team"].rsplit("-", 1)[1])
    outside = sum(int(ev["customer_id"][1:]) % 4 != region for ev in labelled)
    assert outside / len(labelled) > 0.6


def test_normal_agents_rarely_lack_a_ticket(default_run) -> None:
    total: dict[str, int] = defaultdict(int)
    bare: dict[str, int] = defaultdict(int)
    for ev, label in default_run:
        if ev["role"] == "support_agent" and label is None:
            total[ev["actor"]] += 1
            bare[ev["actor"]] += ev.get("ticket") is None
    assert 0 < sum(bare.values()) / sum(total.values()) < 0.05
    assert all(bare[a] / total[a] < 0.15 for a in total)


def test_traps_exist_and_are_not_labelled(default_run) -> None:
    roles = {ev["actor"]: ev["role"] for ev, _ in default_run}
    assert sorted(a for a, r in roles.items() if r == "service") == [
        "svc-billing-1", "svc-billing-2"]
    investigators = [a for a, r in roles.items() if r == "fraud_investigator"]
    assert len(investigators) == 2
    assert not any(label for ev, label in default_run if roles[ev["actor"]] != "support_agent")
    per_day = _no_ticket_customers(default_run)
    assert max(len(c) for (a, _), c in per_day.items() if a in investigators) >= 20
    assert max(len(c) for (a, _), c in per_day.items() if a.startswith("svc-")) >= 150


def test_insiders_do_not_change_the_background() -> None:
    def background(insiders: int) -> list[dict]:
        out = []
        for ev, label in generate(SimConfig(agents=15, days=3, insiders=insiders)):
            if label is None:
                out.append({k: v for k, v in ev.items() if k != "event_id"})
        return out

    assert background(0) == background(2)
    assert not any(label for _, label in generate(SimConfig(agents=15, days=3, insiders=0)))


def test_insider_day_and_count_are_honoured() -> None:
    run = list(generate(SimConfig(agents=20, days=4, insiders=2, insider_day=2)))
    labelled = [ev for ev, label in run if label]
    assert {ev["time"][:10] for ev in labelled} <= {"2026-11-04", "2026-11-05"}
    assert len({ev["actor"] for ev in labelled}) == 2


def test_day_batches_stay_within_their_day() -> None:
    cfg = SimConfig(agents=30, days=4)
    start = date.fromisoformat(cfg.start).toordinal()
    for day, batch in simulate._day_batches(cfg):
        dates = {date.fromisoformat(ev["time"][:10]).toordinal() - start for ev, _ in batch}
        if day < cfg.days:
            assert dates == {day}
        else:  # the spill after the final midnight
            assert dates == {cfg.days}


def test_write_jsonl_files(tmp_path, capsys) -> None:
    cfg = SimConfig(agents=20, days=3)
    ev_path, lab_path, ctx_path = (tmp_path / n for n in ("ev.jsonl", "lab.jsonl", "ctx.jsonl"))
    counts = write_jsonl(cfg, str(ev_path), str(lab_path), str(ctx_path))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""

    events = [orjson.loads(line) for line in ev_path.read_bytes().splitlines()]
    assert events == [ev for ev, _ in generate(cfg)]
    labels = [orjson.loads(line) for line in lab_path.read_bytes().splitlines()]
    assert counts == {"events": len(events), "malicious": len(labels),
                      "actors": len({ev["actor"] for ev in events}),
                      "insiders": sorted({ev["actor"] for ev, lab in generate(cfg) if lab})}
    assert counts["malicious"] > 0
    ids = {ev["event_id"] for ev in events}
    for row in labels:  # SPEC §1: {"event_id", "label"}, malicious events only
        assert set(row) == {"event_id", "label"}
        assert row["event_id"] in ids and row["label"] == LABEL_BULK_NO_TICKET

    ctx = [orjson.loads(line) for line in ctx_path.read_bytes().splitlines()]
    assert ctx == context_entries(cfg)
    entries = [parse_context(obj) for obj in ctx]
    departing = [e for e in entries if e.kind == "departing_actor"]
    assert len(departing) == 1 and departing[0].last_day and departing[0].notice_ms
    insider = {ev["actor"] for ev, label in generate(cfg) if label}
    assert departing[0].id.startswith("agent-") and departing[0].id not in insider
    assert departing[0].id in {ev["actor"] for ev in events}
    assert sum(e.kind == "vip_customer" for e in entries) >= 3


def test_write_jsonl_progress_goes_to_stderr(tmp_path, capsys) -> None:
    write_jsonl(SimConfig(agents=5, days=2), str(tmp_path / "ev.jsonl"), None, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("\r") and "events" in captured.err
    assert captured.err.endswith("\r\033[K")  # the line is cleared at the end


@pytest.mark.parametrize("bad", [
    {"agents": 0}, {"days": 0}, {"insiders": 5, "agents": 5}, {"insiders": -1},
    {"insider_day": 5, "days": 5}, {"customers": 2}, {"start": "not a date"},
])
def test_bad_config_is_rejected(bad) -> None:
    with pytest.raises(ValueError):
        next(generate(SimConfig(**bad)))


def test_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://127.0.0.1:9092") == "127.0.0.1:9092"
    assert bootstrap_servers("127.0.0.1:9092") == "127.0.0.1:9092"
    assert bootstrap_servers("kafka://a:9092, kafka://b:9093") == "a:9092,b:9093"
    with pytest.raises(ValueError):
        bootstrap_servers("kafka://")


class _FakeProducer:
    """Stands in for aiokafka.AIOKafkaProducer: records what would be sent."""

    instances: list[_FakeProducer] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushes = 0
        self.started = self.stopped = False
        _FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic, value=None, key=None, **_):
        self.sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_and_wait(self, *args, **kwargs):  # pragma: no cover - must not be used
        raise AssertionError("produce must batch with send(), not send_and_wait()")

    async def flush(self) -> None:
        self.flushes += 1


def test_produce_sends_every_event_keyed_by_actor(monkeypatch) -> None:
    fake = types.ModuleType("aiokafka")
    fake.AIOKafkaProducer = _FakeProducer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiokafka", fake)
    monkeypatch.setattr(simulate, "FLUSH_EVERY", 500)
    _FakeProducer.instances.clear()
    cfg = SimConfig(agents=10, days=2)

    result = asyncio.run(produce(cfg, "kafka://127.0.0.1:9092", "access-events"))

    (producer,) = _FakeProducer.instances
    assert producer.kwargs["bootstrap_servers"] == "127.0.0.1:9092"
    assert producer.kwargs["linger_ms"] == 20
    assert producer.started and producer.stopped
    assert producer.flushes >= len(producer.sent) // 500  # periodic, not per message
    expected = list(generate(cfg))
    assert [(t, k, orjson.loads(v)) for t, k, v in producer.sent] == [
        ("access-events", ev["actor"].encode(), ev) for ev, _ in expected]
    assert result["labels"] == {ev["event_id"]: label for ev, label in expected if label}
    assert result["events"] == len(expected)
    assert result["malicious"] == len(result["labels"]) > 0
    assert result["actors"] == len({ev["actor"] for ev, _ in expected})


def test_no_faust_or_kafka_import_at_module_level() -> None:
    code = ("import sys, stream.simulate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('faust', 'aiokafka')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
