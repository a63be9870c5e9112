"""The signal contract (detectors/signals), checked over every registered signal, and the
registry: a signal added by one class and one registration runs without touching the engine."""

from __future__ import annotations

import pickle
import random
from array import array
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.engine import HOUR_MS, Engine
from detectors.events import AccessEvent, ContextEntry, decode_context, decode_event, parse_event
from detectors.models import Reason
from detectors.settings import Settings
from detectors.signals import REGISTRY, Context, Signal, register, unregister
from detectors.signals.accumulated import Accumulated
from detectors.signals.base import Profile
from stream.simulate import SimConfig, write_jsonl

# A small company with one insider of each kind a small company holds (about 57k events).
COMPANY = SimConfig(seed=3, employees=60, days=12, scenarios={
    "selling_lookups": 1, "bulk_leak": 1, "vip_snooping": 1, "camera_spying": 1,
    "compromised_account": 1, "low_and_slow": 1})
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * HOUR_MS)  # a midnight (UTC)


def ev(i: int, t: int, *, actor: str = "ann", role: str = "support_agent",
       customer: str | None = "c1", ticket: str | None = "T1", action: str = "read",
       client: str = "crm", records: int = 1, nbytes: int | None = None) -> AccessEvent:
    return parse_event({"event_id": f"{actor}-{i}", "time": t, "actor": actor, "role": role,
                        "team": "support-a", "action": action,
                        "resource_type": "customer_profile", "customer_id": customer,
                        "ticket": ticket, "client": client, "source_ip": "10.0.0.5",
                        "records": records, **({"bytes": nbytes} if nbytes else {})})


def leaver() -> Iterator[AccessEvent]:
    """Ticketed 9-to-5 work, three downloads a day, then a dozen a day on the last days of
    an actor on the departing watchlist (the company above has no departing employee); each
    download of 100 records, so the day's egress rises too."""
    i = 0
    for day in range(14):
        downloads = 12 if day in (10, 11, 12) else 3
        for hour in range(9, 17):
            for k in range(4 + (downloads if hour == 15 else 0)):
                i += 1
                yield ev(i, T0 + day * 24 * HOUR_MS + hour * HOUR_MS + k * 200_000,
                         actor="leo", customer=f"c{day}-{hour}-{k}", ticket=f"T{i}",
                         action="download" if k >= 4 else "read", records=100 if k >= 4 else 1)


class Recorder:
    """Every level raised, per level name: (event index, score, reasons)."""

    def __init__(self) -> None:
        self.raised: dict[str, list[tuple[int, float, list[Reason]]]] = defaultdict(list)
        self.i = 0

    def install(self, mp: pytest.MonkeyPatch) -> None:
        """Record through ``Context.raise_`` (a function: it must bind to the context)."""
        def raise_(ctx: Context, name: str, score: float, reasons: list[Reason]) -> bool:
            done = ORIGINAL_RAISE(ctx, name, score, reasons)
            if done:
                self.raised[name].append((self.i, score, reasons))
            return done

        mp.setattr(Context, "raise_", raise_)


ORIGINAL_RAISE = Context.raise_


def run(files: dict[str, Path]) -> tuple[Recorder, list[Engine], list[float]]:
    rec = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        rec.install(mp)
        every = Settings(optional_signals=",".join(c.name for c in REGISTRY if c.optional))
        company, alone = Engine(every), Engine(every)  # (the contract covers optional ones)
        alone.apply_context(ContextEntry(kind="departing_actor", id="leo",
                                         last_day="2023-11-30"))
        for line in files["context"].read_bytes().splitlines():
            company.apply_context(decode_context(line, None))
        scores = []
        for line in files["events"].read_bytes().splitlines():
            rec.i += 1
            scores.append(company.process(decode_event(line)).score)
        for e in leaver():
            rec.i += 1
            scores.append(alone.process(e).score)
    return rec, [company, alone], scores


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Recorder, list[Engine],
                                                                 list[float]]]:
    d = tmp_path_factory.mktemp("company")
    files = {"events": d / "events.jsonl", "labels": d / "labels.jsonl",
             "context": d / "context.jsonl"}
    write_jsonl(COMPANY, *(str(p) for p in files.values()))
    return [run(files), run(files)]  # twice: the same input must give the same scores


def plain(obj: Any) -> Any:
    """A state as plain values, to compare (sets sorted: their order is not their value)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return sorted(map(repr, obj))
    if isinstance(obj, (list, tuple, deque)):
        return [plain(v) for v in obj]
    if isinstance(obj, array) or hasattr(obj, "tolist"):  # (numpy arrays too)
        return obj.tolist()
    if isinstance(obj, random.Random):
        return obj.getstate()
    if hasattr(obj, "bit_generator"):  # a numpy Generator
        return obj.bit_generator.state
    if hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
        names = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
        names += list(getattr(obj, "__dict__", {}))
        return (type(obj).__name__, {n: plain(getattr(obj, n)) for n in names
                                     if hasattr(obj, n)})
    return obj


def levels_of(cls: type[Signal]) -> tuple[str, ...]:
    return cls.raises or (cls.name,)


SIGNALS = [pytest.param(cls, id=cls.name) for cls in REGISTRY]


@pytest.mark.parametrize("cls", SIGNALS)
def test_its_states_pickle_round_trip(cls: type[Signal], runs: list) -> None:
    sig = cls(Settings())
    _, engines, _ = runs[0]
    states = [sig.new_actor(), sig.new_peer("agents")]
    for eng in engines:
        states += [eng.state_of(a).signals.get(cls.name) for a in list(eng.actors)]
        states += [p.signals.get(cls.name) for p in eng.peers.values()]
    for state in states:
        again = pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        assert type(again) is type(state) and plain(again) == plain(state)
    assert cls.name in {s.name for s in engines[0].signals}


@pytest.mark.parametrize("cls", SIGNALS)
def test_it_fires_deterministically_within_0_1_and_explains_itself(cls: type[Signal],
                                                                   runs: list) -> None:
    (first, engines, scores), (second, _, scores_again) = runs
    assert scores == scores_again
    if cls is Accumulated:  # a standing level, read at risk time, not raised per event
        acc = Accumulated(Settings())
        fired = [st for eng in engines for st in map(eng.state_of, list(eng.actors))
                 if acc.level(st) > 0.01]
        assert fired, "no actor accumulated a long-term level"
        for st in fired:
            assert 0.0 <= acc.level(st) <= 1.0
            reason = acc.explain(st)
            assert reason and reason.observed is not None and reason.expected is not None
        return
    for name in levels_of(cls):
        raised = first.raised[name]
        assert raised, f"{name} never fired: the contract test would check nothing"
        assert [(i, s) for i, s, _ in raised] == [(i, s) for i, s, _ in second.raised[name]]
        for _, score, reasons in raised:
            assert 0.0 <= score <= 1.0, (name, score)
            assert reasons and all(r.detector.startswith(name) and r.description
                                   and r.observed is not None and r.expected is not None
                                   for r in reasons)


@pytest.mark.parametrize("cls", SIGNALS)
def test_it_is_silent_before_its_minimum_history(cls: type[Signal]) -> None:
    """A new actor of a new group, in its first 25 events (under min_history_events) over
    three hours: unticketed VIP reads at night, big exports while leaving, a new client."""
    rec = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        rec.install(mp)
        eng = Engine()
        eng.apply_context(ContextEntry(kind="vip_customer", id="vip1"))
        eng.apply_context(ContextEntry(kind="departing_actor", id="ann"))
        for i in range(25):
            t = T0 + 2 * HOUR_MS + (i % 3) * HOUR_MS + i * 1000
            if i % 2:
                e = ev(i, t, customer="vip1" if i % 4 == 1 else f"x{i}", ticket=None,
                       client=f"tool{i}")
            else:
                e = ev(i, t, customer=None, action="export", records=100_000, nbytes=10**9)
            assert eng.process(e).score == 0.0
        eng.process(ev(99, T0 + 8 * HOUR_MS))  # the last hour ends
    assert not any(rec.raised[name] for name in levels_of(cls))
    assert Accumulated(Settings()).level(eng.state_of("ann")) == 0.0


class Deletes(Signal):
    """A toy signal: any delete, from the first one."""

    name = "deletes"

    def new_actor(self) -> dict[str, int]:
        return {"n": 0}

    def score_one(self, ctx: Context) -> None:
        if ctx.ev.action == "delete":
            ctx.st.signals["deletes"]["n"] += 1
            ctx.raise_("deletes", 0.99, [Reason("deletes", 0.99, "deleted a customer",
                                                ctx.st.signals["deletes"]["n"], 0)])


@pytest.fixture
def toy() -> Iterator[type[Signal]]:
    register(Deletes)
    try:
        yield Deletes
    finally:
        unregister(Deletes)


def test_a_new_signal_is_one_class_and_one_registration(toy: type[Signal]) -> None:
    eng = Engine()
    v = eng.process(ev(1, T0, action="delete"))
    assert v.alert is not None and v.alert.reasons[0].detector == "deletes"
    assert eng.state_of("ann").signals["deletes"] == {"n": 1}
    assert pickle.loads(pickle.dumps(eng.state_of("ann"))).signals["deletes"] == {"n": 1}
    off = Engine(Settings(disabled_signals="deletes"))  # a name SNOOPWATCH_DISABLED_SIGNALS takes
    assert off.process(ev(1, T0, action="delete")).score == 0.0
    with pytest.raises(ValueError, match="already"):
        register(Deletes)


def test_a_profile_from_before_a_signal_was_registered_gets_its_fresh_state(
        toy: type[Signal]) -> None:
    """A state restored from a record written before ``departing`` and the toy were
    registered (actor), or ``egress`` (peer group): on its next event each profile gets the
    missing signals' fresh states in registry order, and keeps the states it had."""
    eng = Engine()
    eng.process(ev(1, T0))
    st, peer = eng.state_of("ann"), eng.peers["support_agent"]
    order, peer_order, egress = list(st.signals), list(peer.signals), peer.signals["egress"]
    kept = {k: v for k, v in st.signals.items() if k not in ("departing", "deletes")}
    st.signals = Profile(kept)
    peer.signals = Profile((k, v) for k, v in peer.signals.items() if k != "egress")
    v = eng.process(ev(2, T0 + 1000, action="delete"))
    assert v.alert is not None and v.alert.reasons[0].detector == "deletes"
    assert list(st.signals) == order and order[-1] == "deletes" and order[1] == "departing"
    assert all(st.signals[k] is state for k, state in kept.items())
    assert st.signals["deletes"] == {"n": 1}
    assert list(peer.signals) == peer_order and peer.signals["egress"] is not egress
    assert isinstance(st.signals, Profile) and isinstance(peer.signals, Profile)


def test_without_the_toy_the_engine_knows_no_such_signal() -> None:
    assert "deletes" not in {cls.name for cls in REGISTRY}
    with pytest.raises(ValueError, match="unknown signal"):
        Engine(Settings(disabled_signals="deletes"))


def test_the_registry_order_is_the_engines_phase_order() -> None:
    """off_hours scores before unjustified (which reads ctx.off); the volume-type signals keep
    the order their levels were first raised in (it orders equal reasons in an alert)."""
    names = [cls.name for cls in REGISTRY]
    assert names.index("off_hours") < names.index("unjustified")
    assert names[:4] == ["volume", "departing", "egress", "daily_egress"]
    assert [s.name for s in Engine().signals] == names


def test_an_optional_signal_runs_but_raises_only_when_named(tmp_path: Path) -> None:
    """``multivariate`` is optional (docs/detection-history.md: on the tuning family it found no
    insider the other signals miss, and ranked honest actor-hours above weak insiders). It
    learns either way, so SNOOPWATCH_OPTIONAL_SIGNALS=multivariate raises it at once."""
    assert [c.name for c in REGISTRY if c.optional] == ["multivariate"]
    paths = [tmp_path / n for n in ("events.jsonl", "labels.jsonl", "context.jsonl")]
    write_jsonl(COMPANY, *(str(p) for p in paths))
    raised = []
    for eng in (Engine(), Engine(Settings(optional_signals="multivariate")),
                Engine(Settings(optional_signals="multivariate",
                                disabled_signals="multivariate"))):
        rec = Recorder()
        with pytest.MonkeyPatch.context() as mp:
            rec.install(mp)
            for line in paths[0].read_bytes().splitlines():
                eng.process(decode_event(line))
        raised.append(len(rec.raised["multivariate"]))
        assert eng.peers["support_agent"].signals["multivariate"].n > 0  # (it learns anyway)
    assert raised[0] == 0 < raised[1] and raised[2] == 0  # (disabled wins)
    with pytest.raises(ValueError, match="SNOOPWATCH_OPTIONAL_SIGNALS: unknown"):
        Engine(Settings(optional_signals="multivariat"))
