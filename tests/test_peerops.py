"""The peer-ops barrier without Kafka (issue 15 item 2): workers holding the by-actor
partitions of a time-sorted company, each partition read at its own pace, sharing one
record per partition and hour, raise the alerts ``snoopwatch replay`` does, byte for byte.

This checks the claim that replay is the barrier's reference: with time-sorted input, a
partition's record of hour h holds the ops of its events before h, so each hour applies the
ops of exactly the events before it, as replay's one engine does. The in-process stand-ins
for the topic and the epochs commit each record as soon as it is asked for; the broker
version is tests/test_peer_barrier.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from detectors.engine import Engine
from detectors.events import parse_context, parse_event
from detectors.settings import Settings
from stream.peerops import Barrier
from stream.pipeline import home_partition
from stream.replay import replay
from stream.simulate import SimConfig, context_entries, generate, write_jsonl

SIM = SimConfig(seed=21, employees=40, days=5, fit_scenarios=True,
                scenarios={"bulk_no_ticket": 1, "vip_snooping": 1, "selling_lookups": 1})
PARTITIONS = 4


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("company")
    events, context = d / "events.jsonl", d / "context.jsonl"
    write_jsonl(SIM, str(events), None, str(context))
    replay(str(events), str(d / "alerts.jsonl"), context_path=str(context))
    expected = [orjson.loads(line) for line in (d / "alerts.jsonl").read_bytes().splitlines()]
    return {"events": [parse_event(ev) for ev, _ in generate(SIM)],
            "context": [parse_context(e) for e in context_entries(SIM)],
            "expected": expected}


def run_workers(company: dict[str, object], owners: list[int], seed: int,
                barrier_on: bool = True) -> list[dict]:
    """Workers (``owners[p]``: the worker holding partition p) taking their partitions'
    events in a seeded random interleaving; every alert, in the order raised."""
    rng = random.Random(seed)
    workers = sorted(set(owners))
    engines = {w: Engine(Settings()) for w in workers}
    for eng in engines.values():
        for entry in company["context"]:  # type: ignore[attr-defined]
            eng.apply_context(entry)
    barriers = {w: Barrier(engines[w], PARTITIONS) for w in workers}
    for b in barriers.values():
        b.now_ms = lambda: 1 << 60
        for p in range(PARTITIONS):
            if owners[p] in barriers and b is barriers[owners[p]]:
                b.restore(p, None, False)
    streams = [[ev for ev in company["events"]  # type: ignore[attr-defined]
                if home_partition(ev.actor, PARTITIONS) == p] for p in range(PARTITIONS)]
    at = [0] * PARTITIONS
    alerts = []

    def publish() -> None:  # every outbox committed, and read by every worker
        for w in workers:
            records = barriers[w].take_outbox(None)
            for other in workers:
                barriers[other].committed(records)

    while True:
        ready = [p for p in range(PARTITIONS) if at[p] < len(streams[p])]
        if not ready:
            break
        moved = False
        for p in rng.sample(ready, len(ready)):
            b, eng = barriers[owners[p]], engines[owners[p]]
            for _ in range(rng.randint(1, 300)):  # a batch of p, at its own pace
                if at[p] == len(streams[p]):
                    break
                ev = streams[p][at[p]]
                if barrier_on and not b.admit(p, ev.time_ms):
                    break
                verdict = eng.process(ev)
                if barrier_on:
                    b.made()
                if verdict.alert is not None:
                    alerts.append(verdict.alert.to_dict())
                at[p] += 1
                moved = True
        if barrier_on:
            publish()
            if not moved:  # all waiting: the exhausted partitions close as idle
                for p in range(PARTITIONS):
                    if at[p] == len(streams[p]):
                        barriers[owners[p]].close_idle(p)
                publish()
    return alerts


def by_id(alerts: list[dict]) -> dict[str, dict]:
    return {a["alert_id"]: a for a in alerts}


@pytest.mark.parametrize("owners", [[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 2]])
def test_workers_at_the_barrier_raise_replays_alerts(company: dict[str, object],
                                                     owners: list[int]) -> None:
    expected = company["expected"]
    assert len(expected) >= 3  # type: ignore[arg-type]
    for seed in (1, 2):
        got = run_workers(company, owners, seed)
        assert sorted(by_id(got)) == sorted(by_id(expected))  # type: ignore[arg-type]
        assert by_id(got) == by_id(expected)  # type: ignore[arg-type]  # byte for byte


def test_without_the_barrier_workers_differ_from_replay(company: dict[str, object]) -> None:
    # (each worker its own clock and ops: what the worker did before the barrier)
    got = run_workers(company, [0, 1, 0, 1], 1, barrier_on=False)
    assert by_id(got) != by_id(company["expected"])  # type: ignore[arg-type]


def test_a_record_holds_the_ops_before_its_hour_and_the_engine_waits_for_all(
        tmp_path: Path) -> None:
    eng = Engine(Settings())
    b = Barrier(eng, 2)
    b.now_ms = lambda: 1 << 60
    b.restore(0, None, False)
    hour = 3_600_000
    assert not b.admit(0, 10 * hour)  # enters 10: its record waits for an epoch
    assert b.outbox == {0: (10, [])}
    b.committed(b.take_outbox(None))
    assert b.applied == -1  # partition 1 has not closed hour 10
    b._receive(1, 12, [])  # partition 1 entered 12 (closing 10 and 11)
    assert b.advance_to() and b.applied == 10
    assert b.admit(0, 10 * hour + 5) and not b.admit(0, 11 * hour)
    assert b.want() == 12
    b.committed(b.take_outbox(None))
    assert b.applied == 11 and not b.admit(0, 12 * hour)


class FakeEvent:
    def __init__(self, tp: str, offset: int, log: list) -> None:
        self.message = type("M", (), {"tp": tp, "offset": offset})()
        self.log = log

    def ack(self) -> None:
        self.log.append((self.message.tp, self.message.offset))


def test_acks_go_in_offset_order_per_partition() -> None:
    from stream.app import OrderedAcks

    log: list = []
    acks = OrderedAcks()
    a = [FakeEvent("in-0", i, log) for i in range(4)]
    b = FakeEvent("in-1", 0, log)
    for e in [*a, b]:
        acks.taken(e)
    acks.done(a[2])  # (a dead letter behind events held at the barrier)
    acks.done(b)
    assert log == [("in-1", 0)]  # in-0's offset 2 waits for 0 and 1
    acks.done(a[1])
    acks.done(a[0])
    assert log == [("in-1", 0), ("in-0", 0), ("in-0", 1), ("in-0", 2)]
    acks.forget(["in-0"])  # revoked: read again from the committed offset
    acks.done(a[3])
    assert len(log) == 4  # (taken before the rebalance: not acked)


def test_a_message_left_to_its_copy_is_acked_with_it_in_order() -> None:
    from stream.app import OrderedAcks

    log: list = []
    acks = OrderedAcks()
    stale = [FakeEvent("in-0", i, log) for i in (5, 6)]  # fetched before a rebalance
    for e in stale:
        acks.taken(e)
    acks.later(stale[0], ours=True)  # (a dead letter: its copy is read again)
    acks.done(stale[1])
    assert log == []  # no hole at 5 for faust to commit past
    copy = FakeEvent("in-0", 5, log)
    acks.taken(copy)
    acks.done(copy)
    assert log == [("in-0", 5), ("in-0", 6), ("in-0", 5)]
    gone = FakeEvent("in-1", 3, log)
    acks.taken(gone)
    acks.later(gone, ours=False)  # its partition is another worker's now
    assert "in-1" not in acks.waiting and not acks.tracked


def test_an_hour_is_entered_even_when_its_record_was_applied_at_an_earlier_one() -> None:
    # Partition 1 enters 216, partition 0 (no events before) 224, then partition 1 225: the
    # engine enters 216 with 0's record of 224 (ops of events before 216), then 224.
    b = Barrier(Engine(Settings()), 2)
    b._receive(1, 216, [])
    b._receive(0, 224, [])
    b.advance_to()
    assert b.applied == 216
    b._receive(1, 225, [])
    b.advance_to()
    assert b.applied == 224
