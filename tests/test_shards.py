"""Cross-actor state on the event-time schedule (issue 15 item 2): a company replayed on one
engine and on four actor-disjoint ones (``replay --shards 4``: what four workers would do,
sharing their ops at each hour boundary) gives the same alerts, scores, ``evaluate`` figures
and, at the end, the same peer groups, queue map and day peaks.

An op applied at once instead of on the schedule changes one shard's state only (or, on one
engine, lets an hour's events see each other's learning), so these comparisons fail.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.engine import Engine
from detectors.events import parse_context, parse_event
from detectors.settings import Settings
from stream.evaluate import evaluate
from stream.replay import Shards, replay
from stream.simulate import SimConfig, context_entries, generate, write_jsonl

# A company with peers, shifts, VIPs and a mix of insiders (51,876 events, 13 alerts; no
# departing employee fits in it, hence fit_scenarios), small enough for a quick test.
SIM = SimConfig(seed=11, employees=80, days=10, fit_scenarios=True,
                scenarios={"bulk_no_ticket": 1, "vip_snooping": 1, "selling_lookups": 1,
                           "compromised_account": 1, "departing_employee": 1})


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("company")
    paths = {"events": d / "events.jsonl", "labels": d / "labels.jsonl",
             "context": d / "context.jsonl"}
    write_jsonl(SIM, str(paths["events"]), str(paths["labels"]), str(paths["context"]))
    return paths


def outputs(company: dict[str, Path], out: Path, shards: int) -> tuple[list[dict], bytes]:
    out.mkdir()
    replay(str(company["events"]), str(out / "alerts.jsonl"),
           scores_path=str(out / "scores.jsonl"), context_path=str(company["context"]),
           shards=shards)
    alerts = [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    for a in alerts:
        a.pop("emitted_at")
    return alerts, (out / "scores.jsonl").read_bytes()


def test_two_and_four_shards_raise_the_alerts_one_engine_does(company: dict[str, Path],
                                                      tmp_path: Path) -> None:
    one_alerts, one_scores = outputs(company, tmp_path / "one", 1)
    assert len(one_alerts) >= 3, "the company's insiders raised too few alerts to compare"
    for n in (2, 4):
        alerts, scores = outputs(company, tmp_path / f"shards{n}", n)
        assert [a["alert_id"] for a in alerts] == [a["alert_id"] for a in one_alerts]
        assert alerts == one_alerts  # content too: scores, reasons, evidence
        assert scores == one_scores  # every event's risk


def test_two_and_four_shards_evaluate_as_one_engine(company: dict[str, Path]) -> None:
    figures = [evaluate(str(company["events"]), str(company["labels"]),
                        context_path=str(company["context"]), baseline=False,
                        shards=n).to_dict() for n in (1, 2, 4)]
    assert figures[0]["snoopwatch"]["actor_days"] > 0
    assert figures[1] == figures[0]
    assert figures[2] == figures[0]


def shared(eng: Engine) -> dict[str, Any]:
    """An engine's cross-actor state as comparable bytes: peer groups by name (a shard makes
    them in the order its actors come), without caches a read fills in."""
    state = eng.shared_state()
    out = {}
    for key, group in state["peers"].items():
        group = pickle.loads(pickle.dumps(group))
        group.signals["first_seen"]._top = None  # (filled by whichever shard explains)
        out[f"peer:{key}"] = pickle.dumps(group)
    for name in ("customer_teams", "teams", "team_links", "day_peaks", "budget_bar"):
        out[name] = pickle.dumps(state[name])
    return out


def test_every_shard_ends_with_one_engines_cross_actor_state() -> None:
    settings = Settings()
    one, four = Shards(settings, 1), Shards(settings, 4)
    for raw in context_entries(SIM):  # (VIPs: the groups' VIP habits are learned too)
        entry = parse_context(raw)
        assert entry is not None
        one.apply_context(entry)
        four.apply_context(entry)
    last = 0
    for raw, _ in generate(SIM):
        ev = parse_event(raw)
        one.process(ev)
        four.process(ev)
        last = ev.time_ms
    hour = last // 3_600_000 + 1  # (the last hour's ops too)
    one.advance(hour)
    four.advance(hour)
    want = shared(one.engines[0])
    assert len(want) > 5 and all(not eng.ops for eng in four.engines)
    for eng in four.engines:
        assert shared(eng) == want


def ticketed_read(i: int, t: int, actor: str) -> Any:
    """A support agent's ticketed read of customer ``c{i}`` at ``t``."""
    return parse_event({"event_id": f"e{i}", "time": t, "actor": actor, "role": "support_agent",
                        "action": "read", "resource_type": "customer_profile",
                        "customer_id": f"c{i}", "ticket": f"T{i}", "client": "crm",
                        "source_ip": "10.0.0.5"})


def test_an_hours_events_read_the_peer_state_of_the_hours_before() -> None:
    """One engine: the peers' learning of an hour waits until the clock leaves it."""
    eng = Engine()
    t0 = 1_793_577_600_000  # an hour's start

    def read(i: int, t: int, actor: str) -> None:
        eng.process(ticketed_read(i, t, actor))

    for i in range(5):
        read(i, t0 + i * 60_000, f"a{i}")
    peer = eng.peers["support_agent"]
    assert peer.signals["first_seen"].n == 0 and peer.signals["off_hours"].n == 0
    assert eng.customer_teams == {} and len(eng.ops) > 10
    pending = pickle.loads(pickle.dumps(eng.shared_state()))
    read(9, t0 + 3_600_000, "a9")  # the next hour: the first hour's ops are applied
    assert peer.signals["first_seen"].n == 5 and peer.signals["off_hours"].n == 5
    assert len(eng.customer_teams) == 5
    # The pending ops are part of the checkpointed engine-wide state: a restored engine
    # applies them as the uninterrupted one did.
    restored = Engine()
    restored.load_shared(pending)
    restored.process(parse_event({"event_id": "e9", "time": t0 + 3_600_000, "actor": "a9",
                                  "role": "support_agent", "action": "read",
                                  "resource_type": "customer_profile", "customer_id": "c9",
                                  "ticket": "T9", "client": "crm", "source_ip": "10.0.0.5"}))
    assert restored.peers["support_agent"].signals["first_seen"].n == 5
    assert restored.customer_teams == eng.customer_teams


def test_a_checkpoint_mid_hour_restores_the_pending_ops_exactly() -> None:
    """A checkpoint cut in the middle of an hour holds that hour's ops, not yet applied: an
    engine restored from it (actors and engine-wide state, as stream/state.py writes them)
    carries on with the uninterrupted engine's scores and alerts."""
    events = [parse_event(raw) for raw, _ in generate(SimConfig(seed=4, employees=40, days=3))]
    cut = next(i for i in range(len(events) // 2, len(events))
               if events[i].time_ms % 3_600_000 > 1_800_000)  # half an hour in
    eng = Engine()
    for ev in events[:cut]:
        eng.process(ev)
    assert eng.ops, "nothing pending at the cut"
    actors, shared_blob = pickle.dumps(dict(eng.actors)), pickle.dumps(eng.shared_state())
    restored = Engine()
    restored.actors.update(pickle.loads(actors))
    restored.load_shared(pickle.loads(shared_blob))
    for ev in events[cut:]:
        a, b = eng.process(ev), restored.process(ev)
        assert (b.score, b.alert) == (a.score, a.alert), ev.event_id


def test_an_event_stamped_far_ahead_does_not_hold_the_workers_schedule() -> None:
    """In the worker (a wall clock), an event stamped in 2199 (valid input) does not move the
    engine's clock there: the next hour's events still find the peers' learning applied."""
    from stream.pipeline import Pipeline

    pipe = Pipeline(wall_clock=True)
    hour = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 3 * 3_600_000

    def read(i: int, t: int, actor: str) -> None:
        pipe.detect(ticketed_read(i, t, actor))

    for i in range(5):
        read(i, hour + i * 60_000, f"a{i}")
    read(5, 7_258_000_000_000, "clock-skewed")  # (2199)
    read(6, hour + 3_600_000, "a6")
    # (six: the skewed event's learning too, which came before the hour began)
    assert pipe.engine.peers["support_agent"].signals["first_seen"].n == 6
    assert pipe.engine.clock_hour == (hour + 3_600_000) // 3_600_000


def test_input_dated_ahead_of_the_worker_still_learns_and_stays_bounded() -> None:
    """Input stamped wholly more than a day past the worker's wall clock never moves the
    schedule: its ops wait only until ``max_pending_ops`` are pending, and are then applied,
    so the peers keep learning and memory stays bounded."""
    from stream.pipeline import Pipeline

    pipe = Pipeline(Settings(max_pending_ops=50), wall_clock=True)
    ahead = (int(time.time() * 1000) // 3_600_000 + 24 * 30) * 3_600_000  # a month ahead
    for i in range(200):
        pipe.detect(ticketed_read(i, ahead + i * 60_000, f"a{i % 7}"))
    engine = pipe.engine
    assert engine.clock_hour < ahead // 3_600_000  # (the clock did not follow the input)
    assert len(engine.ops) < 50 + 10  # (at most one event's ops past the cap)
    assert engine.peers["support_agent"].signals["first_seen"].n >= 150
