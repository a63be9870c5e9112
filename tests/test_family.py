"""Families of companies (stream.family): deterministic draws, the documented ranges, and
each drawn habit visible in the simulated events."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import date

import orjson
import pytest

from detectors.events import parse_event
from stream.family import FAMILIES, draw, record
from stream.simulate import DEFAULT_SCENARIOS, describe, generate

SEEDS = range(1, 13)
# One small held-out company for the behaviour checks (100 x 21: a few seconds).
SMALL = draw("heldout", 2, employees=100, days=21)[0]


@pytest.fixture(scope="module")
def small_run() -> list[tuple[dict, str | None]]:
    return list(generate(SMALL))


@pytest.fixture(scope="module")
def small_plan() -> dict:
    return describe(SMALL)


def test_the_draw_is_a_function_of_family_and_seed() -> None:
    assert draw("heldout", 5) == draw("heldout", 5)
    assert draw("heldout", 5)[0] != draw("heldout", 6)[0]
    assert draw("tuning", 5)[0] != draw("heldout", 5)[0]
    cfg, _ = draw("tuning", 5, employees=150, days=14)
    assert (cfg.employees, cfg.days) == (150, 14)
    # Overriding the size keeps every other drawn parameter.
    sized = ("employees", "days", "scenarios", "holidays")
    assert replace(cfg, **dict.fromkeys(sized)) == replace(draw("tuning", 5)[0],
                                                           **dict.fromkeys(sized))
    with pytest.raises(ValueError, match="unknown family 'prod'"):
        draw("prod", 1)


@pytest.mark.parametrize("family", ["tuning", "heldout"])
def test_draws_stay_within_the_documented_ranges(family: str) -> None:
    f = FAMILIES[family]
    for seed in SEEDS:
        cfg, params = draw(family, seed)
        assert f["employees"][0] <= cfg.employees <= f["employees"][1]
        assert f["ticketless_max"][0] <= cfg.ticketless[1] <= f["ticketless_max"][1]
        assert f["overflow_max"][0] <= cfg.overflow[1] <= f["overflow_max"][1]
        assert f["intensity"][0] <= cfg.intensity <= f["intensity"][1]
        assert f["density"][0] <= params["density_per_1000_actor_days"] <= f["density"][1]
        assert set(cfg.scenarios) == set(DEFAULT_SCENARIOS)
        assert min(cfg.scenarios.values()) >= 1
        assert date.fromisoformat(cfg.start).weekday() == 0


def test_heldout_differs_in_ways_tuning_never_sees() -> None:
    tun = [draw("tuning", s)[0] for s in SEEDS]
    held = [draw("heldout", s)[0] for s in SEEDS]
    assert max(c.ticketless[1] for c in tun) <= min(c.ticketless[1] for c in held)
    assert max(c.overflow[1] for c in tun) <= min(c.overflow[1] for c in held)
    assert all(off % 1 == 0 for c in tun for _, off in c.sites)
    assert all(any(off % 1 for _, off in c.sites) for c in held)  # a half-hour zone
    assert {date.fromisoformat(c.start).month for c in tun} <= {10, 11, 12}
    assert {date.fromisoformat(c.start).month for c in held} <= {9, 12}
    assert all(c.vip_first_morning == 0 for c in tun)
    assert all(c.vip_first_morning >= 1 for c in held)
    assert max(c.busy_export_days for c in tun) < min(c.busy_export_days for c in held)
    assert max(c.services_per_employee for c in tun) < min(c.services_per_employee
                                                          for c in held)
    assert all(draw("heldout", s)[1]["holiday_week"] for s in SEEDS)


def test_record_says_what_was_drawn_and_placed() -> None:
    cfg, params = draw("tuning", 3)
    rec = record(cfg, params)
    assert rec["family"] == "tuning" and rec["seed"] == 3
    assert rec["config"]["intensity"] == cfg.intensity
    assert set(rec["scenarios_placed"]) <= set(DEFAULT_SCENARIOS)
    for label, n in rec["scenarios_placed"].items():
        assert 1 <= n <= cfg.scenarios[label]
    orjson.dumps(rec)  # plain JSON data


def _agent_reads(run: list, plan: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for ev, label in run:
        if label is None and ev["action"] == "read" and ev["role"] == "support_agent":
            out[ev["actor"]].append(ev)
    return out


def test_agents_have_steady_personal_ticketless_shares(small_run, small_plan) -> None:
    reads = _agent_reads(small_run, small_plan)
    shares = sorted(sum(not ev.get("ticket") for ev in evs) / len(evs)
                    for evs in reads.values() if len(evs) >= 100)
    # Per-agent shares spread over the drawn range (plus the odd forgotten ticket id).
    assert shares[0] < 0.06 and shares[-1] > 0.8 * SMALL.ticketless[1]
    # ...and each agent's share is steady: its first and second halves agree.
    agent = max(reads, key=lambda a: sum(not ev.get("ticket") for ev in reads[a]))
    evs = reads[agent]
    half = len(evs) // 2
    first, second = (sum(not e.get("ticket") for e in part) / len(part)
                     for part in (evs[:half], evs[half:]))
    assert abs(first - second) < 0.1 and min(first, second) > 0.1


def test_overflow_tickets_come_from_other_queues_with_tickets(small_run, small_plan) -> None:
    regions = len(SMALL.sites)
    other = total = 0
    for ev, label in small_run:
        actor = small_plan["actors"][ev["actor"]]
        if label is None and actor["role"] == "support_agent" and ev.get("ticket") and \
                ev["resource_type"] == "customer_profile":
            total += 1
            other += int(ev["customer_id"][1:]) % regions != actor["region"]
    # Overflow plus callbacks of earlier overflow; well above the fixed company's ~1.5 %.
    assert 0.5 * SMALL.overflow[1] / 2 < other / total < SMALL.overflow[1]


def test_first_morning_vip_reads_carry_tickets(small_run, small_plan) -> None:
    vips = set(small_plan["vips"])
    first = parse_event(small_run[0][0]).time_ms
    morning = [ev for ev, label in small_run if str(ev.get("ticket")).startswith("CSV")]
    assert len({ev["actor"] for ev in morning}) == SMALL.vip_first_morning
    assert all(ev["customer_id"] in vips and ev["role"] == "support_agent"
               and parse_event(ev).time_ms < first + 86_400_000 for ev in morning)


def test_desk_moves_and_holiday_week(small_run, small_plan) -> None:
    ips: dict[str, list[str]] = defaultdict(list)
    for ev, label in small_run:
        if label is None and small_plan["actors"][ev["actor"]]["role"] == "manager":
            ips[ev["actor"]].append(ev["source_ip"])
    moved = [a for a, seen in ips.items() if any(ip.split(".")[2] == "90" for ip in seen)]
    assert moved, "at least one manager moves to a new desk subnet"
    seen = ips[moved[0]]
    # The old desk before, the new one after, never back.
    k = next(i for i, ip in enumerate(seen) if ip.split(".")[2] == "90")
    assert any(ip.split(".")[2] == "60" for ip in seen[:k])
    assert not any(ip.split(".")[2] == "60" for ip in seen[k:])
    _, params = draw("heldout", 2, employees=100, days=21)
    week = date.fromisoformat(params["holiday_week"])
    assert week.isoformat() in small_plan["holidays"]
    # Only the holiday crews (and the services) work: people's events fall by half or more.
    by_day = Counter(ev["time"][:10] for ev, _ in small_run if ev["role"] != "service")
    normal = by_day[date.fromordinal(week.toordinal() - 7).isoformat()]
    assert by_day[week.isoformat()] < 0.5 * normal


def test_intensity_scales_what_insiders_do() -> None:
    base = draw("tuning", 4, employees=120, days=14)[0]
    counts = {}
    for k in (0.5, 2.0):
        cfg = replace(base, intensity=k)
        counts[k] = Counter(label for _, label in generate(cfg) if label)
    assert sum(counts[2.0].values()) > 2.5 * sum(counts[0.5].values())


def test_cli_family_writes_the_parameters_beside_the_events(tmp_path) -> None:
    out = tmp_path / "c.jsonl"
    subprocess.run([sys.executable, "-m", "stream.cli", "simulate", "--family", "heldout",
                    "--seed", "2", "--employees", "100", "--days", "7", "--out", str(out),
                    "--labels", str(tmp_path / "c.labels")], check=True, capture_output=True)
    rec = orjson.loads((tmp_path / "c.jsonl.family.json").read_bytes())
    assert rec["config"] == orjson.loads(orjson.dumps(record(*draw(
        "heldout", 2, employees=100, days=7))))["config"]
    desc = subprocess.run([sys.executable, "-m", "stream.cli", "simulate", "--family",
                           "heldout", "--seed", "2", "--employees", "100", "--days", "7",
                           "--describe"], check=True, capture_output=True)
    assert orjson.loads(desc.stdout) == rec
    bad = subprocess.run([sys.executable, "-m", "stream.cli", "simulate", "--family", "tuning",
                          "--agents", "5", "--describe"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--family draws the company" in bad.stderr
