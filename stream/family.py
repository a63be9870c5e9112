"""Families of simulated companies: the company itself drawn per (family, seed).

``snoopwatch simulate --family tuning|heldout --seed N`` draws one company from its
family's ranges (:data:`FAMILIES`) and simulates it. Both families share the insider
ranges (intensity 0.5-2x, one to six instances per 1,000 actor-days, the seven scenario
kinds); the held-out family differs from the tuning family in ways tuning never sees:
heavier ticketless habits and cross-queue overflow, more and odd time zones (half-hour
offsets), an earlier and later shift layout with more nights, another role mix, many
busy service accounts, heavier export habits, VIP reads on the first morning, desk moves,
and September or Christmas starts with a holiday week. docs/detection.md "Families"
describes the ranges; :func:`draw` is a pure function of (family, seed, overrides).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

from stream.simulate import (
    ANALYST,
    CAMERA,
    DEFAULT_SCENARIOS,
    ENGINEER,
    FRAUD,
    LABEL_DEPARTING_EMPLOYEE,
    MANAGER,
    SITES,
    SimConfig,
    _default_holidays,
)

# Time zones a held-out company may have besides the four the tuning family uses;
# half-hour offsets and far-west/far-east ones never occur in tuning.
_HELDOUT_SITES = (("in", 5.5), ("au", 10.0), ("uswest", -8.0), ("jp", 9.0),
                  ("za", 2.0), ("gulf", 4.0), ("nz", 12.0), ("nl", 1.0))


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


# Each family's ranges, as shown by ``--describe`` and docs/detection.md.
FAMILIES: dict[str, dict[str, Any]] = {
    "tuning": {
        "employees": (100, 500),        # log-uniform
        "sites": "2-4 of na/emea/apac/latam (whole-hour offsets)",
        "shift_hours": {"day": (7.5, 8.5), "evening": (13.5, 14.5), "night": (21.5, 22.5)},
        "night_share": (0.05, 0.2),
        "ticketless_max": (0.0, 0.15),  # per agent uniform(0, company max)
        "overflow_max": (0.0, 0.08),    # per agent uniform(0, company max), with tickets
        "role_scale": (0.7, 1.3),       # each non-agent role's share of ROLE_MIX x this
        "services_per_employee": (0.0, 0.006),
        "service_volume": (0.7, 1.3),
        "export_scale": (0.5, 1.5),
        "busy_export_days": (0.0, 0.02),
        "vip_first_morning": (0, 0),
        "desk_moves": (0.0, 0.02),
        "start": "a Monday in October or November 2026",
        "holiday_week": 0.0,            # chance of a company-wide holiday week
        "intensity": (0.5, 2.0),        # log-uniform
        "density": (1.0, 6.0),          # instances per 1,000 actor-days
    },
    "heldout": {
        "employees": (150, 600),
        "sites": "3-6: one to three of na/emea/apac/latam and others (in +5:30, au +10, "
                 "uswest -8, jp +9, za +2, gulf +4, nz +12, nl +1)",
        "shift_hours": {"day": (6.0, 7.0), "evening": (15.0, 16.0), "night": (23.0, 23.5)},
        "night_share": (0.2, 0.35),
        "ticketless_max": (0.15, 0.25),
        "overflow_max": (0.08, 0.15),
        "role_scale": "camera 0.03-0.08, fraud 0.04-0.08, analyst 0.08-0.12, "
                      "engineer 0.10-0.14, manager 0.05-0.08",
        "services_per_employee": (0.01, 0.03),
        "service_volume": (1.0, 3.0),
        "export_scale": (1.0, 3.0),
        "busy_export_days": (0.03, 0.08),
        "vip_first_morning": (1, 3),
        "desk_moves": (0.05, 0.10),
        "start": "a Monday in September 2026 or in the first half of December 2026",
        "holiday_week": 1.0,
        "intensity": (0.5, 2.0),
        "density": (1.0, 6.0),
    },
}


def _scenario_counts(rng: random.Random, density: float, employees: int, days: int
                     ) -> dict[str, int]:
    """``density`` instances per 1,000 actor-days over the seven kinds, each at least once
    (departing staff rarely more: few leave within a month)."""
    total = max(len(DEFAULT_SCENARIOS), round(density * employees * days / 1000))
    counts = dict.fromkeys(DEFAULT_SCENARIOS, 1)
    kinds = list(DEFAULT_SCENARIOS)
    weights = [0.3 if k == LABEL_DEPARTING_EMPLOYEE else 1.0 for k in kinds]
    for k in rng.choices(kinds, weights, k=total - len(kinds)):
        counts[k] += 1
    return counts


def draw(family: str, seed: int, *, employees: int | None = None, days: int | None = None
         ) -> tuple[SimConfig, dict[str, Any]]:
    """The company of ``family`` for ``seed``: its :class:`SimConfig` and the drawn
    parameters as JSON data. ``employees``/``days`` override the draw (the rest stays)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    held = family == "heldout"
    rng = random.Random(f"family:{family}:{seed}")
    # Size-dependent draws take their own streams, so --employees/--days change nothing else.
    sized = random.Random(f"family:{family}:{seed}:sized")
    sim_seed = rng.randrange(1 << 31)
    f = FAMILIES[family]
    lo, hi = f["employees"]
    n_emp = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if employees is not None:
        n_emp = employees
    n_days = 28 if days is None else days

    if held:
        classic = rng.sample(SITES, rng.randint(1, 3))
        extra = rng.sample(_HELDOUT_SITES, rng.randint(2, 3))
        if not any(off % 1 for _, off in extra):
            extra[0] = _HELDOUT_SITES[0]  # always one half-hour offset
        sites = tuple((n, float(o)) for n, o in classic) + tuple(extra)
        sites = sites[:6]
        roles = {CAMERA: rng.uniform(0.03, 0.08), FRAUD: rng.uniform(0.04, 0.08),
                 ANALYST: rng.uniform(0.08, 0.12), ENGINEER: rng.uniform(0.10, 0.14),
                 MANAGER: rng.uniform(0.05, 0.08)}
        first = date(2026, 9, 1) if rng.random() < 0.5 else date(2026, 12, 1)
        start = _monday(first + timedelta(days=7 + rng.randrange(14)))
    else:
        sites = tuple((n, float(o)) for n, o in rng.sample(SITES, rng.randint(2, 4)))
        base = {CAMERA: 0.06, FRAUD: 0.04, ANALYST: 0.06, ENGINEER: 0.08, MANAGER: 0.04}
        roles = {r: s * rng.uniform(*f["role_scale"]) for r, s in base.items()}
        start = _monday(date(2026, 10, 1) + timedelta(days=7 + rng.randrange(56)))
    shift_hours = {k: round(rng.uniform(*v) * 4) / 4 for k, v in f["shift_hours"].items()}
    night = rng.uniform(*f["night_share"])
    evening = rng.uniform(0.2, 0.3)
    shift_weights = (round(1 - night - evening, 3), round(evening, 3), round(night, 3))
    last = start + timedelta(days=n_days - 1)
    holidays = _default_holidays(start, last)
    holiday_week = None
    if sized.random() < f["holiday_week"] and n_days >= 14:
        # A company-wide week off (a shutdown, a national holiday week) after the first week.
        monday = start + timedelta(days=7 * sized.randint(1, max(1, n_days // 7 - 1)))
        week = [monday + timedelta(days=i) for i in range(5)]
        holidays |= {d for d in week if d <= last}
        holiday_week = monday.isoformat()
    ticketless_max = rng.uniform(*f["ticketless_max"])
    overflow_max = rng.uniform(*f["overflow_max"])
    ilo, ihi = f["intensity"]
    intensity = math.exp(rng.uniform(math.log(ilo), math.log(ihi)))
    density = rng.uniform(*f["density"])
    scenarios = _scenario_counts(sized, density, n_emp, n_days)
    cfg = SimConfig(
        seed=sim_seed, employees=n_emp, days=n_days, start=start.isoformat(),
        regions=len(sites), sites=sites, role_mix=roles, shift_weights=shift_weights,
        shift_hours=shift_hours, holidays=tuple(sorted(d.isoformat() for d in holidays)),
        services_per_employee=rng.uniform(*f["services_per_employee"]),
        service_volume=rng.uniform(*f["service_volume"]),
        ticketless=(0.0, ticketless_max), overflow=(0.0, overflow_max),
        export_scale=rng.uniform(*f["export_scale"]),
        busy_export_days=rng.uniform(*f["busy_export_days"]),
        vip_first_morning=rng.randint(*f["vip_first_morning"]),
        desk_moves=rng.uniform(*f["desk_moves"]),
        intensity=intensity, scenarios=scenarios, fit_scenarios=True)
    params = {"family": family, "seed": seed, "density_per_1000_actor_days": density,
              "holiday_week": holiday_week, "config": asdict(cfg)}
    return cfg, params


def record(cfg: SimConfig, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` plus what the simulator made of them: headcount per role, the
    scenario instances actually placed (``fit_scenarios`` places what fits), sites."""
    from stream.simulate import describe

    plan = describe(cfg)
    placed: dict[str, int] = {}
    for inst in plan["scenarios"]:
        placed[inst["label"]] = placed.get(inst["label"], 0) + 1
    return {**params, "roles": plan["roles"], "scenarios_placed": placed,
            "holidays": plan["holidays"], "employees": plan["employees"]}
