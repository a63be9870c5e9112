"""The synthetic company (stream.simulate): valid, ordered, deterministic, labelled.

Most tests share one realistic run (150 employees x 28 days, the default
scenario mix: one instance of each) and check that every scenario has its
defining property and that every false-alarm trap is there and unlabelled.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import subprocess
import sys
import types
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import orjson
import pytest

from detectors.events import parse_context, parse_event
from detectors.settings import bootstrap_servers
from stream import simulate
from stream.simulate import (
    DEFAULT_SCENARIOS,
    LABEL_BULK_LEAK,
    LABEL_BULK_NO_TICKET,
    LABEL_CAMERA_SPYING,
    LABEL_COMPROMISED_ACCOUNT,
    LABEL_DEPARTING_EMPLOYEE,
    LABEL_LOW_AND_SLOW,
    LABEL_SELLING_LOOKUPS,
    LABEL_VIP_SNOOPING,
    SimConfig,
    context_entries,
    describe,
    generate,
    produce,
    write_jsonl,
)

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FULL = SimConfig(employees=150, days=28)


@pytest.fixture(scope="module")
def run() -> list[tuple[dict, str | None]]:
    return list(generate(FULL))


@pytest.fixture(scope="module")
def plan() -> dict:
    return describe(FULL)


def _utc(ev: dict) -> datetime:
    return datetime.fromisoformat(ev["time"].replace("Z", "+00:00"))


def _local(ev: dict, plan: dict) -> datetime:
    return _utc(ev) + timedelta(hours=plan["actors"][ev["actor"]]["utc_offset"])


def _labelled(run, label: str) -> list[dict]:
    return [ev for ev, lab in run if lab == label]


_BY_ACTOR: dict[int, dict[str, list[dict]]] = {}


def _normal(run, actor: str) -> list[dict]:
    """The actor's unlabelled events (indexed once per run: the run is big)."""
    index = _BY_ACTOR.get(id(run))
    if index is None:
        index = _BY_ACTOR[id(run)] = defaultdict(list)
        for ev, lab in run:
            if lab is None:
                index[ev["actor"]].append(ev)
    return index.get(actor, [])


def _actor_of(plan: dict, label: str) -> str:
    (actor,) = [s["actor"] for s in plan["scenarios"] if s["label"] == label]
    return actor


def _work_day(ev: dict, plan: dict) -> date:
    """The local date the actor's shift started (a night shift ends the next morning)."""
    return (_local(ev, plan) - timedelta(hours=7)).date()


def _per_work_day(events: list[dict], plan: dict) -> Counter:
    return Counter(_work_day(ev, plan) for ev in events)


# -- the stream as a whole --------------------------------------------------------

def test_same_seed_same_stream_other_seed_differs() -> None:
    cfg = SimConfig(employees=40, days=10)
    a = orjson.dumps(list(generate(cfg)))
    assert a == orjson.dumps(list(generate(SimConfig(employees=40, days=10))))
    assert a != orjson.dumps(list(generate(SimConfig(seed=8, employees=40, days=10))))
    assert context_entries(cfg) == context_entries(SimConfig(employees=40, days=10))


def test_every_event_is_valid_and_time_ordered(run) -> None:
    last = -1
    ids = set()
    for ev, _ in run:
        parsed = parse_event(ev)
        assert TIME_RE.match(ev["time"]), ev["time"]
        assert parsed.time_ms >= last
        last = parsed.time_ms
        ids.add(parsed.event_id)
    assert len(ids) == len(run)
    assert 100_000 <= len(run) <= 300_000


def test_context_is_valid(plan) -> None:
    entries = [parse_context(obj) for obj in context_entries(FULL)]
    assert all(e is not None for e in entries)
    vips = [e for e in entries if e.kind == "vip_customer"]
    departing = [e for e in entries if e.kind == "departing_actor"]
    assert 12 <= len(vips) <= 48
    assert len(departing) >= 2 and all(e.notice_ms and e.last_day for e in departing)
    assert {e.id for e in departing} <= set(plan["actors"])


def test_roles_teams_and_mix(run, plan) -> None:
    roles = plan["roles"]
    assert set(roles) == {"support_agent", "camera_tech", "fraud_investigator", "analyst",
                          "engineer", "manager", "service"}
    assert roles["support_agent"] > 0.6 * sum(roles.values())  # agents dominate
    assert plan["employees"] == 150
    seen = {(ev["role"], ev["team"]) for ev, _ in run}
    assert {r for r, _ in seen} == set(roles)
    assert ("support_agent", "support-na-day") in seen
    assert {ev["action"] for ev, _ in run} >= {"read", "search", "update", "export", "download",
                                               "view_stream"}


def test_each_role_behaves_like_itself(run, plan) -> None:
    per_day: dict[str, Counter] = defaultdict(Counter)
    bare: Counter = Counter()
    total: Counter = Counter()
    for ev, label in run:
        if label is None:
            per_day[ev["role"]][ev["actor"], ev["time"][:10]] += 1
            total[ev["role"]] += 1
            bare[ev["role"]] += ev.get("customer_id") is not None and ev.get("ticket") is None
    med = {r: statistics.median(c.values()) for r, c in per_day.items()}
    # Service accounts: huge and steady, every day; agents: tickets; fraud: many, unticketed.
    assert med["service"] > 10 * med["support_agent"]
    assert med["support_agent"] > 3 * med["engineer"]
    assert med["fraud_investigator"] > med["support_agent"]
    assert bare["support_agent"] / total["support_agent"] < 0.05
    assert bare["fraud_investigator"] / total["fraud_investigator"] > 0.5
    assert bare["camera_tech"] / total["camera_tech"] < 0.02
    # Analysts' scheduled exports run from the BI server on their weekday.
    sched = [ev for ev, lab in run if ev["client"] == "bi-scheduler"]
    assert sched and all(ev["action"] == "export" and ev["role"] == "analyst" for ev in sched)
    assert Counter(_local(ev, plan).weekday() for ev in sched).most_common(1)[0][0] == 0
    # Camera techs view streams under tickets.
    views = [ev for ev, lab in run if ev["action"] == "view_stream" and lab is None]
    assert views and all(ev["resource_type"] == "camera_stream" for ev in views)
    assert sum(bool(ev.get("ticket")) for ev in views) / len(views) > 0.98


def test_agents_work_their_shift_in_local_time(run, plan) -> None:
    hours: dict[str, Counter] = defaultdict(Counter)
    utc_hours: Counter = Counter()
    for ev, label in run:
        info = plan["actors"][ev["actor"]]
        if label is None and ev["role"] == "support_agent" and info["shift"] == "day":
            hours[info["site"]][_local(ev, plan).hour] += 1
            if info["site"] == "apac":
                utc_hours[_utc(ev).hour] += 1
    for site, c in hours.items():
        assert sum(n for h, n in c.items() if 8 <= h <= 17) / sum(c.values()) > 0.97, site
    # A day shift in Asia is the middle of the night in UTC.
    assert sum(n for h, n in utc_hours.items() if h < 10) / sum(utc_hours.values()) > 0.9


# -- insider scenarios ---------------------------------------------------------------

def test_default_mix_has_every_scenario_once_per_insider(run, plan) -> None:
    labels = {label for _, label in run if label}
    assert labels == set(DEFAULT_SCENARIOS)
    insiders = [s["actor"] for s in plan["scenarios"]]
    assert len(insiders) == len(set(insiders)) == len(DEFAULT_SCENARIOS)
    by_label = defaultdict(set)
    for ev, label in run:
        if label:
            by_label[label].add(ev["actor"])
    for s in plan["scenarios"]:
        assert by_label[s["label"]] == {s["actor"]}, s
        # The insider's normal work goes on, unlabelled.
        assert _normal(run, s["actor"])


def test_scenario_counts_scale_and_can_be_chosen() -> None:
    big = describe(SimConfig(employees=500, days=28))
    assert Counter(s["label"] for s in big["scenarios"]) == {
        **{label: 2 for label in DEFAULT_SCENARIOS}, LABEL_DEPARTING_EMPLOYEE: 1}
    one = describe(SimConfig(employees=60, days=14, scenarios={LABEL_CAMERA_SPYING: 2}))
    assert [s["label"] for s in one["scenarios"]] == [LABEL_CAMERA_SPYING] * 2
    labels = {lab for _, lab in generate(SimConfig(employees=60, days=14,
                                                   scenarios={LABEL_BULK_NO_TICKET: 1}))}
    assert labels == {None, LABEL_BULK_NO_TICKET}


def test_selling_lookups(run, plan) -> None:
    evs = _labelled(run, LABEL_SELLING_LOOKUPS)
    actor = _actor_of(plan, LABEL_SELLING_LOOKUPS)
    region = plan["actors"][actor]["region"]
    for ev in evs:
        assert ev["action"] == "read" and ev["resource_type"] == "customer_profile"
        assert ev["fields"] == ["email", "phone"] and ev.get("ticket") is None
        assert int(ev["customer_id"][1:]) % 4 != region  # outside the agent's queue
    days = _per_work_day(evs, plan)
    assert len(days) >= 3  # spread over several days
    normal = _per_work_day(_normal(run, actor), plan)
    # Within the agent's normal volume: a small share of a normal day.
    assert max(days.values()) <= 0.5 * statistics.median(normal.values())
    assert all(normal[d] > 0 for d in days)  # on days the agent was at work anyway


def test_bulk_leak(run, plan) -> None:
    evs = _labelled(run, LABEL_BULK_LEAK)
    actor = _actor_of(plan, LABEL_BULK_LEAK)
    assert 1 <= len(evs) <= 3
    normal = _normal(run, actor)
    usual_ips = {ev["source_ip"] for ev in normal}
    biggest = max([ev["records"] for ev in normal if ev["action"] == "export"] or [0])
    assert plan["actors"][actor]["role"] in ("analyst", "engineer")
    for ev in evs:
        assert ev["action"] == "export" and ev["source_ip"] not in usual_ips
        assert 1 <= _local(ev, plan).hour < 6
    total = sum(ev["records"] for ev in evs)
    assert total >= 1_000_000 and total >= 10 * biggest


def test_vip_snooping(run, plan) -> None:
    evs = _labelled(run, LABEL_VIP_SNOOPING)
    vips = {e["id"] for e in context_entries(FULL) if e["kind"] == "vip_customer"}
    assert 2 <= len(evs) <= 16
    assert {ev["customer_id"] for ev in evs} <= vips
    assert all(ev.get("ticket") is None for ev in evs)
    # Ordinary VIP reads happen too, but always under a ticket.
    normal_vip = [ev for ev, lab in run if lab is None and ev.get("customer_id") in vips
                  and ev["role"] == "support_agent"]
    assert all(ev.get("ticket") for ev in normal_vip)


def test_camera_spying(run, plan) -> None:
    evs = _labelled(run, LABEL_CAMERA_SPYING)
    actor = _actor_of(plan, LABEL_CAMERA_SPYING)
    assert plan["actors"][actor]["role"] == "camera_tech"
    assert len(evs) >= 6
    for ev in evs:
        assert ev["action"] == "view_stream" and ev["resource_type"] == "camera_stream"
        assert ev.get("ticket") is None
        assert _local(ev, plan).hour < 5  # the small hours, local time
    assert len(_per_work_day(evs, plan)) >= 2
    # In normal work the technician never views a stream at night.
    assert all(_local(ev, plan).hour >= 7 for ev in _normal(run, actor))


def test_compromised_account(run, plan) -> None:
    evs = _labelled(run, LABEL_COMPROMISED_ACCOUNT)
    actor = _actor_of(plan, LABEL_COMPROMISED_ACCOUNT)
    normal = _normal(run, actor)
    assert {ev["source_ip"] for ev in evs}.isdisjoint(ev["source_ip"] for ev in normal)
    assert {ev["client"] for ev in evs}.isdisjoint(ev["client"] for ev in normal)
    assert len({ev["customer_id"] for ev in evs}) >= 200
    times = [_utc(ev) for ev in evs]
    assert max(times) - min(times) <= timedelta(hours=1)


def test_low_and_slow(run, plan) -> None:
    evs = _labelled(run, LABEL_LOW_AND_SLOW)
    assert all(ev.get("ticket") is None and ev["action"] == "read" for ev in evs)
    per_day = sorted(_per_work_day(evs, plan).items())
    counts = [n for _, n in per_day]
    assert counts[0] <= 3
    assert (per_day[-1][0] - per_day[0][0]).days >= 14  # runs for weeks
    assert statistics.mean(counts[-3:]) >= 2.5 * statistics.mean(counts[:3])
    # No single step is a jump: at most doubling from one working day to the next.
    assert all(b <= max(3, 2 * a) for a, b in itertools.pairwise(counts))


def test_departing_employee(run, plan) -> None:
    actor = _actor_of(plan, LABEL_DEPARTING_EMPLOYEE)
    departing = {e["id"]: e for e in context_entries(FULL) if e["kind"] == "departing_actor"}
    assert actor in departing
    last_day = date.fromisoformat(departing[actor]["last_day"])
    evs = _labelled(run, LABEL_DEPARTING_EMPLOYEE)
    assert all(ev["action"] == "download" for ev in evs)
    window = set(_per_work_day(evs, plan))
    assert 3 <= len(window) <= 5 and max(window) <= last_day
    mine = [ev for ev, _ in run if ev["actor"] == actor]
    assert all(_work_day(ev, plan) <= last_day for ev in mine)  # gone after
    downloads = _per_work_day([ev for ev in mine if ev["action"] == "download"], plan)
    worked = set(_per_work_day(mine, plan))
    earlier = [downloads[d] for d in worked if d < min(window)]
    late = [downloads[d] for d in window]
    assert statistics.mean(late) >= 3 * statistics.mean(earlier)


def test_most_departing_staff_do_nothing_wrong(run, plan) -> None:
    departing = [e for e in context_entries(FULL) if e["kind"] == "departing_actor"]
    insiders = {ev["actor"] for ev, lab in run if lab}
    innocent = [e for e in departing if e["id"] not in insiders]
    assert len(innocent) >= len(departing) / 2
    big = [e for e in context_entries(SimConfig(employees=500, days=28))
           if e["kind"] == "departing_actor"]
    assert 5 <= len(big) <= 10
    # Those who leave inside the period stop appearing after their last day.
    last_seen: dict[str, str] = {}
    for ev, _ in run:
        last_seen[ev["actor"]] = ev["time"][:10]
    for e in departing:
        if e["last_day"] < "2026-11-29":
            assert last_seen[e["id"]] <= (date.fromisoformat(e["last_day"])
                                          + timedelta(days=1)).isoformat()


# -- traps: legitimate, never labelled ----------------------------------------------

def test_quarter_end_spike_is_not_labelled(run, plan) -> None:
    qdays = set(plan["quarter_end_days"])
    assert len(qdays) >= 3
    exports: dict[bool, Counter] = {True: Counter(), False: Counter()}
    for ev, label in run:
        if ev["team"] == plan["quarter_end_team"] and ev["action"] == "export" \
                and ev["client"] != "bi-scheduler":
            assert label is None or label == LABEL_BULK_LEAK
            if label is None:
                exports[_work_day(ev, plan).isoformat() in qdays][ev["actor"]] += 1
    assert len(exports[True]) >= 2          # the whole team, not one person
    assert sum(exports[True].values()) >= 10
    assert not exports[False]               # only at quarter close


def test_new_tool_rollout_is_not_labelled(run, plan) -> None:
    ro = plan["rollout"]
    users = [(ev, lab) for ev, lab in run if ev["client"] == ro["client"]]
    assert all(ev["team"] == ro["team"] for ev, _ in users)
    # Labelled only if an insider of that team uses the team's new console for it.
    insiders = {s["actor"] for s in plan["scenarios"]}
    assert all(lab is None or ev["actor"] in insiders for ev, lab in users)
    assert sum(lab is None for _, lab in users) > 100
    first = min(_work_day(ev, plan).isoformat() for ev, _ in users)
    assert first == ro["day"]
    assert len({ev["actor"] for ev, _ in users if _work_day(ev, plan).isoformat()
                == ro["day"]}) >= 3  # the whole team switched that day


def test_role_change_is_not_labelled(run, plan) -> None:
    (change,) = plan["role_changes"]
    evs = [(ev, lab) for ev, lab in run if ev["actor"] == change["actor"]]
    assert not any(lab for _, lab in evs)
    before = {ev["role"] for ev, _ in evs if _work_day(ev, plan).isoformat() < change["day"]}
    after = {ev["role"] for ev, _ in evs if _work_day(ev, plan).isoformat() >= change["day"]}
    assert before == {"support_agent"} and after == {"fraud_investigator"}


def test_new_hires_have_no_history_and_no_labels(run, plan) -> None:
    assert plan["new_hires"]
    for hire in plan["new_hires"]:
        evs = [(ev, lab) for ev, lab in run if ev["actor"] == hire["actor"]]
        assert evs and not any(lab for _, lab in evs)
        assert min(_work_day(ev, plan).isoformat() for ev, _ in evs) >= hire["day"]


def test_calendar_traps(run, plan) -> None:
    agents_per_day: Counter = Counter()
    for ev, label in run:
        if ev["role"] == "support_agent" and label is None:
            agents_per_day[_work_day(ev, plan).isoformat()] += 1
    weekdays = [n for d, n in agents_per_day.items() if date.fromisoformat(d).weekday() < 5
                and d not in plan["holidays"]]
    weekends = [n for d, n in agents_per_day.items() if date.fromisoformat(d).weekday() >= 5]
    typical = statistics.median(weekdays)
    assert plan["holidays"] == ["2026-11-26", "2026-11-27"]
    for h in plan["holidays"]:
        assert 0 < agents_per_day[h] < 0.4 * typical  # a skeleton crew
    assert max(weekends) < 0.4 * typical
    # Vacations: a week or more away, then back.
    back = 0
    for actor, (first, last) in plan["vacations"].items():
        # The BI server's schedules run on while they are away.
        days = {_work_day(ev, plan).isoformat() for ev in _normal(run, actor)
                if ev["client"] != "bi-scheduler"}
        assert not any(first <= d <= last for d in days), actor
        back += any(d > last for d in days) and any(d < first for d in days)
    assert back >= 5


def test_night_on_call_vpn_and_mobile_are_not_labelled(run, plan) -> None:
    night_eng = [ev for ev, lab in run if ev["role"] == "engineer" and lab is None
                 and (_local(ev, plan).hour >= 22 or _local(ev, plan).hour < 6)]
    assert night_eng and any(ev.get("customer_id") for ev in night_eng)
    assert all(ev["source_ip"].startswith("172.16.200.") for ev in night_eng)
    remote = Counter(ev["source_ip"].split(".")[0] + "." + ev["source_ip"].split(".")[1]
                     for ev, lab in run if ev["role"] == "support_agent" and lab is None)
    assert remote["172.16"] > 100 and remote["100.64"] > 100
    forgotten = [ev for ev, lab in run if lab is None and ev["role"] == "support_agent"
                 and ev.get("ticket") is None]
    assert len(forgotten) > 100


def test_insiders_do_not_change_the_background() -> None:
    def background(scenarios: dict | None) -> tuple[list[dict], int]:
        run = list(generate(SimConfig(employees=40, days=12, scenarios=scenarios)))
        return ([{k: v for k, v in ev.items() if k != "event_id"}
                 for ev, label in run if label is None], sum(bool(lab) for _, lab in run))

    clean, none = background({})
    busy, some = background(None)
    assert none == 0 and some > 0
    assert clean == busy


# -- the small demo company (SimConfig(agents=...)) ----------------------------------

@pytest.fixture(scope="module")
def small_run() -> list[tuple[dict, str | None]]:
    return list(generate(SimConfig(agents=40, days=5)))


def test_small_company_keeps_the_demo_shape(small_run) -> None:
    assert 8_000 <= len(small_run) <= 20_000
    roles = Counter(ev["role"] for ev, _ in small_run)
    assert set(roles) == {"support_agent", "fraud_investigator", "service"}
    assert {ev["actor"] for ev, _ in small_run if ev["role"] == "service"} == {
        "svc-billing-1", "svc-billing-2"}
    assert small_run[0][0]["time"][:10] == "2026-11-02"
    assert small_run[-1][0]["time"][:10] <= "2026-11-07"
    ctx = [parse_context(e) for e in context_entries(SimConfig(agents=40, days=5))]
    (dep,) = [e for e in ctx if e.kind == "departing_actor"]
    assert dep.id.startswith("agent-") and sum(e.kind == "vip_customer" for e in ctx) == 5


def test_small_company_insider_is_established_and_blunt(small_run) -> None:
    labelled = [ev for ev, label in small_run if label is not None]
    assert {label for _, label in small_run if label} == {LABEL_BULK_NO_TICKET}
    (insider,) = {ev["actor"] for ev in labelled}
    for ev in labelled:
        assert ev["role"] == "support_agent" and ev.get("ticket") is None
        assert ev["action"] == "read" and ev["resource_type"] == "customer_profile"
        assert ev["fields"] == ["email", "phone"]
    assert {ev["time"][:10] for ev in labelled} <= {"2026-11-06", "2026-11-07"}
    earlier = {ev["time"][:10] for ev, label in small_run
               if ev["actor"] == insider and label is None and ev.get("ticket")}
    assert any(day < "2026-11-06" for day in earlier)
    usual_ips = {ev["source_ip"] for ev, label in small_run
                 if ev["actor"] == insider and label is None}
    assert {ev["source_ip"] for ev in labelled} <= usual_ips
    # The spree dwarfs any normal agent's unticketed customers in a day.
    bare: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ev, _ in small_run:
        if ev.get("ticket") is None and ev.get("customer_id") and ev["role"] == "support_agent":
            bare[ev["actor"], ev["time"][:10]].add(ev["customer_id"])
    spree = max(len(c) for (a, _), c in bare.items() if a == insider)
    normal = max(len(c) for (a, _), c in bare.items() if a != insider)
    assert spree >= 150 and spree > 10 * normal


def test_small_company_insider_day_and_count_are_honoured() -> None:
    run = list(generate(SimConfig(agents=20, days=4, insiders=2, insider_day=2)))
    labelled = [ev for ev, label in run if label]
    assert {ev["time"][:10] for ev in labelled} <= {"2026-11-04", "2026-11-05"}
    assert len({ev["actor"] for ev in labelled}) == 2
    assert not any(label for _, label in generate(SimConfig(agents=15, days=3, insiders=0)))


def test_small_company_background_is_independent_of_insiders() -> None:
    def background(insiders: int) -> list[dict]:
        return [{k: v for k, v in ev.items() if k != "event_id"}
                for ev, label in generate(SimConfig(agents=15, days=3, insiders=insiders))
                if label is None]

    assert background(0) == background(2)


# -- plumbing -----------------------------------------------------------------------

def test_day_batches_stay_within_their_cut() -> None:
    cfg = SimConfig(employees=40, days=6)
    co = simulate._Company(cfg)
    lo = -(1 << 62)
    for day, batch in simulate._day_batches(cfg):
        hi = simulate._batch_cut(co, day) if day < cfg.days else 1 << 62
        times = [parse_event(ev).time_ms for ev, _ in batch]
        assert all(lo <= t < hi for t in times), day
        lo = hi


def test_write_jsonl_files(tmp_path, capsys) -> None:
    cfg = SimConfig(employees=40, days=10)
    ev_path, lab_path, ctx_path = (tmp_path / n for n in ("ev.jsonl", "lab.jsonl", "ctx.jsonl"))
    counts = write_jsonl(cfg, str(ev_path), str(lab_path), str(ctx_path))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""

    events = [orjson.loads(line) for line in ev_path.read_bytes().splitlines()]
    expected = list(generate(cfg))
    assert events == [ev for ev, _ in expected]
    labels = [orjson.loads(line) for line in lab_path.read_bytes().splitlines()]
    scenarios: dict[str, set[str]] = defaultdict(set)
    for ev, lab in expected:
        if lab:
            scenarios[lab].add(ev["actor"])
    assert counts == {"events": len(events), "malicious": len(labels),
                      "actors": len({ev["actor"] for ev in events}),
                      "insiders": sorted({ev["actor"] for ev, lab in expected if lab}),
                      "scenarios": {k: sorted(v) for k, v in sorted(scenarios.items())}}
    assert counts["malicious"] > 0 and len(counts["scenarios"]) >= 4
    ids = {ev["event_id"] for ev in events}
    truth = {ev["event_id"]: lab for ev, lab in expected if lab}
    for row in labels:  # SPEC §1: {"event_id", "label"}, malicious events only
        assert set(row) == {"event_id", "label"}
        assert row["event_id"] in ids and truth[row["event_id"]] == row["label"]
    assert len(labels) == len(truth)
    ctx = [orjson.loads(line) for line in ctx_path.read_bytes().splitlines()]
    assert ctx == context_entries(cfg)


def test_write_jsonl_progress_goes_to_stderr(tmp_path, capsys) -> None:
    write_jsonl(SimConfig(agents=5, days=2), str(tmp_path / "ev.jsonl"), None, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("\r") and "events" in captured.err
    assert captured.err.endswith("\r\033[K")  # the line is cleared at the end


@pytest.mark.parametrize("bad", [
    {"agents": 0}, {"days": 0}, {"insiders": 5, "agents": 5}, {"insiders": -1},
    {"insider_day": 5, "days": 5}, {"customers": 2}, {"start": "not a date"},
    {"employees": 5}, {"employees": 10, "agents": 20}, {"scenarios": {"nonsense": 1}},
    {"scenarios": {LABEL_VIP_SNOOPING: -1}}, {"scenarios": {}, "insiders": 1},
    {"agents": 10, "scenarios": {LABEL_CAMERA_SPYING: 1}},  # no camera techs there
    {"employees": 60, "days": 14, "scenarios": {LABEL_BULK_LEAK: 50}},
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
    assert result["insiders"] == sorted({ev["actor"] for ev, lab in expected if lab})
    assert result["scenarios"] == {LABEL_BULK_NO_TICKET: result["insiders"]}


def test_produce_sends_the_context_first_keyed_by_kind_and_id(monkeypatch) -> None:
    fake = types.ModuleType("aiokafka")
    fake.AIOKafkaProducer = _FakeProducer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiokafka", fake)
    _FakeProducer.instances.clear()
    cfg = SimConfig(employees=40, days=3)

    result = asyncio.run(produce(cfg, "kafka://127.0.0.1:9092", "events",
                                 context_topic="context"))

    (producer,) = _FakeProducer.instances
    context = context_entries(cfg)
    assert context and result["context"] == len(context)
    head = producer.sent[:len(context)]
    assert [(t, k, orjson.loads(v)) for t, k, v in head] == [
        ("context", f"{e['kind']}:{e['id']}".encode(), e) for e in context]
    assert {t for t, _, _ in producer.sent[len(context):]} == {"events"}
    assert result["events"] == len(producer.sent) - len(context)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_cli_rejects_zero_days(tmp_path) -> None:
    out = _cli("simulate", "--days", "0", "--out", str(tmp_path / "ev.jsonl"))
    assert out.returncode == 1 and "days" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ev.jsonl").exists()


def test_cli_kafka_unreachable_is_one_line_and_still_writes_the_context(tmp_path) -> None:
    import os

    env = {**os.environ, "SNOOPWATCH_BROKER": "kafka://127.0.0.1:9"}  # nothing listens there
    ctx = tmp_path / "ctx.jsonl"
    out = _cli("simulate", "--kafka", "--employees", "40", "--days", "3", "--context", str(ctx),
               env=env)
    assert out.returncode == 1
    assert "snoopwatch simulate: Kafka at kafka://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr
    assert [orjson.loads(line) for line in ctx.read_bytes().splitlines()] == context_entries(
        SimConfig(employees=40, days=3))


def test_no_faust_or_kafka_import_at_module_level() -> None:
    code = ("import sys, stream.simulate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('faust', 'aiokafka')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
