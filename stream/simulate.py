"""A seeded synthetic company: normal staff, false-alarm traps and labelled insiders.

The output is a stream of SPEC §1 access events in non-decreasing event time,
each paired with its ground-truth label (``None`` for normal traffic), plus the
SPEC §1 context a company would know (VIP customers, staff who handed in
notice), so that ``snoopwatch evaluate`` and the demo have something realistic
to chew on.

The company (``SimConfig(employees=...)``) has offices in four time zones
(``na`` UTC-5, ``emea`` UTC+1, ``apac`` UTC+8, ``latam`` UTC-3); everyone
works in local time, so "an odd hour" only means something per actor:

* customer-service agents (``support_agent``, ~72 %): day / evening / night
  shifts in their region's office, working that region's queue ticket by ticket
  (a few reads of one customer under one ticket id), lognormal productivity;
  some weekend rotas, a holiday skeleton crew, mobile console and VPN days,
  sloppy consoles that lose a ticket id, invoice downloads;
* camera-support technicians (``camera_tech``): tickets that read the customer
  and view their camera streams (``view_stream`` / ``camera_stream``);
* fraud investigators: dozens of customers a day, mostly without tickets;
* analysts: ad-hoc report queries and downloads, plus *scheduled* exports that
  the BI server runs under their name every week, even while they are away;
* engineers: log searches, rare customer reads under incident ids (sometimes
  none), and a weekly on-call rota with night-time incidents from the VPN;
* managers: dashboards, the odd escalation; service accounts (about one per
  100 employees, on top of them): huge, steady, around-the-clock volume with no
  tickets.

Traps that are legitimate and never labelled: weekends, public holidays,
week-long vacations (then a return), new hires who start mid-period, role
changes (an agent becomes a fraud investigator: same name, new ``role``),
on-call nights, a quarter-end export spike for the whole finance analytics
team, a new console rolled out to one support team on one day, staff on notice
who do nothing wrong, VIPs served under tickets.

Insider scenarios (labels per SPEC; only the malicious events are labelled,
the insider's normal work goes on unlabelled): ``selling_lookups``,
``bulk_leak``, ``vip_snooping``, ``camera_spying``, ``compromised_account``,
``low_and_slow``, ``departing_employee`` and the older ``bulk_no_ticket``.
See the ``_gen_*`` functions for how each is built.

``SimConfig(agents=N)`` without ``employees`` is the older, small demo company:
N agents, a couple of fraud investigators and two billing service accounts, in
one time zone and with the older simulator's simpler habits, with ``insiders``
(default one) ``bulk_no_ticket`` agents acting on ``insider_day``.

:func:`describe` returns the plan (cast, calendar, traps, who plays which
scenario on which days) as JSON data, for tests and evaluation.

Everything is a pure function of :class:`SimConfig` (no wall clock). Each
actor-day has its own random stream and the insiders have theirs, so adding an
insider does not change what anyone does (only event ids shift). Generation
streams one day at a time, so memory stays flat for long, wide runs.
"""

from __future__ import annotations

import gc
import math
import random
import sys
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import IO, Any

import orjson

from detectors.settings import Settings, bootstrap_servers
from stream.kafka_security import client_kwargs
from stream.progress import Progress

LABEL_SELLING_LOOKUPS = "selling_lookups"
LABEL_BULK_LEAK = "bulk_leak"
LABEL_VIP_SNOOPING = "vip_snooping"
LABEL_CAMERA_SPYING = "camera_spying"
LABEL_COMPROMISED_ACCOUNT = "compromised_account"
LABEL_LOW_AND_SLOW = "low_and_slow"
LABEL_DEPARTING_EMPLOYEE = "departing_employee"
LABEL_BULK_NO_TICKET = "bulk_no_ticket"

# The realistic mix used when SimConfig.scenarios is None (bulk_no_ticket is the
# older demo scenario: a blunt spree, kept for the demo but not in the mix).
DEFAULT_SCENARIOS = (LABEL_SELLING_LOOKUPS, LABEL_BULK_LEAK, LABEL_VIP_SNOOPING,
                     LABEL_CAMERA_SPYING, LABEL_COMPROMISED_ACCOUNT, LABEL_LOW_AND_SLOW,
                     LABEL_DEPARTING_EMPLOYEE)
SCENARIOS = (*DEFAULT_SCENARIOS, LABEL_BULK_NO_TICKET)

AGENT = "support_agent"
CAMERA = "camera_tech"
FRAUD = "fraud_investigator"
ANALYST = "analyst"
ENGINEER = "engineer"
MANAGER = "manager"
SERVICE = "service"

# Share of ``employees`` per role; agents take whatever the others leave.
ROLE_MIX = {CAMERA: 0.06, FRAUD: 0.04, ANALYST: 0.06, ENGINEER: 0.08, MANAGER: 0.04}
SERVICE_PER_EMPLOYEE = 0.01      # service accounts on top of the employees (at least 2)

# Region index -> (name, UTC offset in hours). Customer i lives in region i % regions.
SITES = (("na", -5), ("emea", 1), ("apac", 8), ("latam", -3))

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000

# Shift name -> local start hour; every shift is ~8 h (night runs past midnight).
SHIFTS = {"day": 8, "evening": 14, "night": 22}
_AGENT_SHIFT_W = (0.6, 0.25, 0.15)

SICK_RATE = 0.03               # unplanned absence per actor-workday
VPN_DAY_RATE = 0.04            # agent-days worked over the VPN instead of the office
WEEKEND_ROTA_RATE = 0.12       # agents / camera techs whose two days off are weekdays
HOLIDAY_CREW_RATE = 0.2        # agents / camera techs who staff the lines on holidays
MOBILE_AGENT_RATE = 0.1        # agents who sometimes use the mobile console
CALLBACK_RATE = 0.08           # tickets about a customer the agent recently handled
TRANSFER_RATE = 0.02           # tickets transferred in from another region's queue
FORGOTTEN_TICKET_RATE = 0.015  # whole tickets worked without entering the ticket id
INVOICE_RATE = 0.06            # tickets that download an invoice for the customer
VACATION_WEEKS_PER_YEAR = 4.5

# Events per ticket (1..5) and what the follow-up events of a ticket look at.
# Cumulative weights: random.choices skips re-summing them on every call (hot path).
_TICKET_LEN_CW = tuple(accumulate((0.15, 0.3, 0.25, 0.18, 0.12)))
_FOLLOWUPS = ("customer_profile", "order", "address", "payment_method", "update")
_FOLLOWUP_CW = tuple(accumulate((0.35, 0.3, 0.12, 0.08, 0.15)))
_PROFILE_FIELDS = (["email"], ["phone"], ["email", "phone"], ["address"],
                   ["email", "phone", "address"], ["dob"])
_PROFILE_FIELDS_CW = tuple(accumulate((0.3, 0.25, 0.2, 0.15, 0.07, 0.03)))
_UPDATE_FIELDS = (["email"], ["phone"], ["address"])

_VPN_NET = "172.16.200"        # VPN pool, a fresh address each session
_MOBILE_NET = "100.64"         # carrier-grade NAT of the mobile network
_SVC_NET = "10.200.0"
_BI_SERVER = "10.60.0.5"       # runs analysts' scheduled exports under their names
LEAK_NET = "198.51.100"        # a residential line nobody at the company uses
ATTACKER_NET = "203.0.113"     # where a stolen session is replayed from
ATTACKER_CLIENT = "python-requests/2.31.0"
ROLLOUT_CLIENT = "crm-console-next"

FINANCE_TEAM = "analytics-finance"
QUARTER_EXPORT_MAX = 400_000   # rows in one quarter-close export
_ANALYST_TEAMS = (FINANCE_TEAM, "analytics-marketing", "analytics-ops")
_ENGINEER_TEAMS = ("eng-platform", "eng-payments", "eng-data", "eng-mobile")
# Fiscal year ends in August: quarters close at the end of these months.
FISCAL_QUARTER_MONTHS = (2, 5, 8, 11)
_FOREVER = 1 << 30


@dataclass
class SimConfig:
    """What company to simulate. Every field has a default; all are optional.

    ``employees`` sizes the realistic company (roles by :data:`ROLE_MIX`, plus
    service accounts); ``agents`` alone gives the older small demo company
    (that many agents, fraud investigators and two billing services); both:
    ``employees`` people of whom exactly ``agents`` are agents.
    ``scenarios`` maps scenario label -> instances (``None``: the default mix,
    about one of each per 250 employees and one departing employee per 1,000;
    an impossible explicit request raises ``ValueError``); ``insiders`` is the
    older shorthand for ``{"bulk_no_ticket": insiders}`` (and the small
    company's default is one). ``insider_day`` pins the ``bulk_no_ticket`` day
    (default: the last day). ``quarter_end`` (a date; default the next fiscal
    quarter close, :data:`FISCAL_QUARTER_MONTHS`) and ``holidays`` (dates;
    default the company's fixed list) place those traps.
    """

    seed: int = 7
    employees: int | None = None   # people; None: 500, or the small company if agents is set
    agents: int | None = None      # customer-service agents (see above)
    days: int = 28
    start: str = "2026-11-02"      # first local date (a Monday)
    customers: int | None = None   # None: 100 per employee, at least 5,000
    regions: int = 4               # customer regions, one support office each
    scenarios: dict[str, int] | None = None
    insiders: int | None = None
    insider_day: int | None = None
    quarter_end: str | None = None
    holidays: tuple[str, ...] | None = None
    # The company's habits (see stream/family.py, which draws them per family and seed).
    # Every default reproduces the fixed company above.
    sites: tuple[tuple[str, float], ...] | None = None  # (name, UTC offset h) per region
    role_mix: dict[str, float] | None = None        # None: ROLE_MIX
    shift_weights: tuple[float, float, float] | None = None  # agents' day/evening/night
    shift_hours: dict[str, float] | None = None     # shift -> local start hour (None: SHIFTS)
    services_per_employee: float | None = None      # None: SERVICE_PER_EMPLOYEE, at least 2
    service_volume: float = 1.0                     # multiplies service accounts' volume
    ticketless: tuple[float, float] | None = None   # per-agent call-back share, uniform in
    overflow: tuple[float, float] | None = None     # per-agent other-queue share, uniform in
    export_scale: float = 1.0                       # multiplies scheduled export sizes
    busy_export_days: float = 0.0                   # analyst-workdays that are export-heavy
    vip_first_morning: int = 0                      # ticketed VIP reads on day 0's morning
    desk_moves: float = 0.0                         # staff moving to a new desk subnet
    intensity: float = 1.0                          # multiplies what each insider does
    fit_scenarios: bool = False                     # place what fits instead of raising


@dataclass(slots=True, eq=False)
class _Actor:
    idx: int                  # unique per actor object (seeds its random streams)
    name: str
    role: str
    team: str
    site: int
    off_ms: int               # UTC offset of the site: local = UTC + off_ms
    ip: str                   # office address
    client: str               # main tool
    shift: str = "office"
    rate: float = 1.0         # personal workload per workday (tickets, customers, queries)
    dl_rate: float = 0.0      # downloads per workday
    sloppy: float = 0.0       # share of reads that lose their ticket id
    days_off: frozenset[int] = frozenset((5, 6))
    mobile: float = 0.0       # share of tickets handled on the mobile console
    vpn: float = 0.0          # share of workdays over the VPN
    crew: bool = False        # works public holidays
    hire: int = 0             # first day on the job (> 0: a new hire)
    leave: int = _FOREVER     # last day on the job (departing staff, role change)
    vacation: frozenset[int] = frozenset()
    kind: str = ""            # service account kind
    schedules: tuple[tuple[int, int, int], ...] = ()  # (weekday, local hour, records)
    ticketless: float = 0.0   # steady share of tickets worked as call-backs, no ticket id
    overflow: float = TRANSFER_RATE  # share of tickets from another region's queue
    move: tuple[int, str] | None = None  # (day, new office address): a desk move
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=20))


@dataclass(slots=True, eq=False)
class _Instance:
    """One planned insider scenario: who, on which days, with what parameters."""

    label: str
    actor: _Actor
    days: tuple[int, ...]
    params: dict[str, Any]


def _sites(regions: int) -> list[tuple[str, int]]:
    return [SITES[q] if q < len(SITES) else (f"r{q}", 0) for q in range(regions)]


def _thanksgiving(year: int) -> date:
    first = date(year, 11, 1)
    return first + timedelta(days=(3 - first.weekday()) % 7 + 21)


def _default_holidays(first: date, last: date) -> set[date]:
    out: set[date] = set()
    for y in range(first.year, last.year + 1):
        tg = _thanksgiving(y)
        out |= {date(y, 1, 1), date(y, 5, 1), tg, tg + timedelta(days=1),
                date(y, 12, 25), date(y, 12, 26)}
    return {d for d in out if first <= d <= last}


def _quarter_close(first: date) -> date:
    d = first
    while True:
        if d.month in FISCAL_QUARTER_MONTHS:
            nxt = date(d.year + d.month // 12, d.month % 12 + 1, 1)
            return nxt - timedelta(days=1)
        d = date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Company:
    """The fixed cast, calendar, traps and insider plan derived from a config."""

    def __init__(self, cfg: SimConfig) -> None:
        _check(cfg)
        self.cfg = cfg
        self.seed = cfg.seed
        self.days = cfg.days
        self.start = date.fromisoformat(cfg.start)
        self.base_ms = int(datetime(self.start.year, self.start.month, self.start.day,
                                    tzinfo=UTC).timestamp()) * 1000
        self.small = cfg.employees is None and cfg.agents is not None
        self.sites = list(cfg.sites) if cfg.sites is not None else _sites(cfg.regions)
        self.shifts = dict(cfg.shift_hours) if cfg.shift_hours is not None else SHIFTS
        # The small demo company keeps the older simulator's simpler habits: one
        # time zone, a flat 3 % of reads without a ticket, no forgotten tickets,
        # invoices or fraud cases, so the demo's few days stay readable.
        self.forget_rate = 0.0 if self.small else FORGOTTEN_TICKET_RATE
        self.invoice_rate = 0.0 if self.small else INVOICE_RATE
        self.case_rate = 0.0 if self.small else 0.3
        if self.small:
            self.sites = [(name, 0) for name, _ in self.sites]
        # Events of local day d start no earlier than UTC midnight minus the
        # largest eastern offset; the day batches cut there.
        self.lead_ms = int(max(0, max(off for _, off in self.sites)) * HOUR_MS)
        self.n_regions = cfg.regions
        if self.small:
            self.employees = cfg.agents or 0
        else:
            self.employees = 500 if cfg.employees is None else cfg.employees
        self.customers = cfg.customers if cfg.customers is not None else (
            5000 if self.small else max(5000, 100 * self.employees))
        if self.customers < cfg.regions:
            raise ValueError("need at least one customer per region")
        self.cust_width = max(6, len(str(self.customers - 1)))
        r = cfg.regions
        # Customer i lives in region i % regions; region q holds indices q + r*k.
        self.region_size = [(self.customers - q + r - 1) // r for q in range(r)]

        rng = random.Random(f"{cfg.seed}:company")
        self.actors: list[_Actor] = []
        self._build_cast(rng)
        self._calendar()
        self.rollout: tuple[str, int] | None = None
        self.new_hires: list[_Actor] = []
        self.changes: list[tuple[_Actor, _Actor]] = []
        self.departing: list[tuple[_Actor, int, date]] = []  # (actor, last day, notice)
        self._traps(rng)
        n_vip = 5 if self.small else min(48, max(12, self.employees // 12))
        self.vips = sorted(rng.sample(range(self.customers), min(n_vip, self.customers)))
        self.vip_set = frozenset(self.vips)
        self.oncall_pool = [a for a in self.actors if a.role == ENGINEER and a.hire == 0]
        self.ramp = frozenset(a.idx for a in self.new_hires)
        self._habits()
        self.instances = self._plan(cfg)

    # -- the cast -----------------------------------------------------------------

    def _add(self, **kw: Any) -> _Actor:
        a = _Actor(idx=len(self.actors), **kw)
        self.actors.append(a)
        return a

    def _office_ip(self, site: int, subnet: int, counters: dict[tuple[int, int], int]) -> str:
        k = counters.get((site, subnet), 0)
        counters[site, subnet] = k + 1
        return f"10.{site + 1}.{subnet + k // 240}.{10 + k % 240}"

    def _build_cast(self, rng: random.Random) -> None:
        cfg, r = self.cfg, self.cfg.regions
        if self.small:
            counts = {FRAUD: max(2, self.employees // 50)}
            n_agents = self.employees
            services = ("billing", "billing")
        else:
            mix = ROLE_MIX if cfg.role_mix is None else cfg.role_mix
            counts = {role: max(1, round(self.employees * share))
                      for role, share in mix.items()}
            if cfg.agents is not None:
                n_agents = cfg.agents
                # The others share what is left of the headcount, in proportion.
                rest = self.employees - n_agents
                total = sum(mix.values())
                counts = {role: round(rest * share / total) for role, share in mix.items()}
            else:
                n_agents = self.employees - sum(counts.values())
            if n_agents < 1:
                raise ValueError("employees too few to staff every role (need >= 10)")
            n_svc = max(2, round(self.employees * SERVICE_PER_EMPLOYEE)) \
                if cfg.services_per_employee is None else \
                round(self.employees * cfg.services_per_employee)
            services = tuple(("billing", "notify", "etl")[i % 3] for i in range(n_svc))
        ips: dict[tuple[int, int], int] = {}

        def off(site: int) -> int:
            return int(self.sites[site][1] * HOUR_MS)

        shift_w = _AGENT_SHIFT_W if cfg.shift_weights is None else cfg.shift_weights

        for i in range(n_agents):
            site = rng.randrange(r)
            shift = rng.choices(tuple(SHIFTS), shift_w)[0]
            rota = rng.random() < WEEKEND_ROTA_RATE
            days_off = rng.choice(((0, 1), (1, 2), (2, 3), (3, 4))) if rota else (5, 6)
            mobile = rng.uniform(0.15, 0.35) if rng.random() < MOBILE_AGENT_RATE else 0.0
            rate = min(25.0, max(5.0, rng.lognormvariate(2.64, 0.45)))  # heavy-tailed
            self._add(name=f"agent-{i:04d}", role=AGENT, team=f"support-{self.sites[site][0]}"
                      f"-{shift}", site=site, off_ms=off(site), ip=self._office_ip(site, 8, ips),
                      client="crm-console", shift=shift, rate=rate,
                      dl_rate=rate * self.invoice_rate,
                      sloppy=0.03 if self.small else
                      min(0.06, 0.012 * rng.lognormvariate(0.0, 0.6)),
                      days_off=frozenset(days_off), mobile=mobile, vpn=VPN_DAY_RATE,
                      crew=rng.random() < HOLIDAY_CREW_RATE)
        for i in range(counts.get(CAMERA, 0)):
            site = rng.choice((0, 3 % r))
            shift = "day" if rng.random() < 0.7 else "evening"
            rota = rng.random() < WEEKEND_ROTA_RATE
            self._add(name=f"camtech-{i:03d}", role=CAMERA, team="camera-support", site=site,
                      off_ms=off(site), ip=self._office_ip(site, 30, ips),
                      client="camera-console", shift=shift,
                      rate=min(15.0, max(3.0, rng.lognormvariate(2.05, 0.35))),
                      sloppy=0.01, vpn=0.05, crew=rng.random() < HOLIDAY_CREW_RATE,
                      days_off=frozenset(rng.choice(((1, 2), (3, 4))) if rota else (5, 6)))
        for i in range(counts.get(FRAUD, 0)):
            site = 0 if i % 3 else 1 % r
            self._add(name=f"fraud-{i + 1:02d}", role=FRAUD, team="fraud", site=site,
                      off_ms=off(site), ip=self._office_ip(site, 20, ips),
                      client="fraud-workbench",
                      rate=min(80.0, max(12.0, rng.lognormvariate(3.5, 0.35))),
                      dl_rate=0.0 if self.small else rng.uniform(0.5, 2.0),
                      vpn=0.0 if self.small else 0.05)
        for i in range(counts.get(ANALYST, 0)):
            site = 0 if rng.random() < 0.7 else 1 % r
            team = _ANALYST_TEAMS[i % len(_ANALYST_TEAMS)]
            n_sched = rng.choice((1, 1, 2))
            # Scheduled exports: mostly Monday early morning, before the analyst is in.
            sched = tuple((0 if rng.random() < 0.75 else rng.randrange(1, 5),
                           rng.randint(5, 7),
                           int(int(rng.lognormvariate(math.log(60_000), 0.6))
                               * cfg.export_scale))
                          for _ in range(n_sched))
            self._add(name=f"analyst-{i:03d}", role=ANALYST, team=team, site=site,
                      off_ms=off(site), ip=self._office_ip(site, 50, ips), client="bi-studio",
                      rate=min(40.0, max(3.0, rng.lognormvariate(2.4, 0.4))),
                      dl_rate=rng.uniform(1.5, 4.0), vpn=0.1, schedules=sched)
        for i in range(counts.get(ENGINEER, 0)):
            site = rng.choice((0, 0, 1 % r, 2 % r))
            self._add(name=f"eng-{i:03d}", role=ENGINEER,
                      team=_ENGINEER_TEAMS[i % len(_ENGINEER_TEAMS)], site=site,
                      off_ms=off(site), ip=self._office_ip(site, 40, ips),
                      client="admin-console",
                      rate=min(30.0, max(1.0, rng.lognormvariate(1.9, 0.5))), vpn=0.25)
        for i in range(counts.get(MANAGER, 0)):
            site = rng.randrange(r)
            self._add(name=f"mgr-{i:03d}", role=MANAGER, team="management", site=site,
                      off_ms=off(site), ip=self._office_ip(site, 60, ips),
                      client="bi-studio", rate=rng.uniform(2, 8), mobile=0.2, vpn=0.1)
        per_kind: dict[str, int] = {}
        for i, kind in enumerate(services):
            per_kind[kind] = per_kind.get(kind, 0) + 1
            if self.small:
                rate = 288.0  # the older demo's volume: a lookup every five minutes
            else:
                rate = {"billing": 1500.0, "notify": 1000.0, "etl": 96.0}[kind]
                rate *= rng.uniform(0.7, 1.4) * cfg.service_volume
            team = {"billing": "billing", "notify": "notifications", "etl": "data-platform"}[kind]
            self._add(name=f"svc-{kind}-{per_kind[kind]}", role=SERVICE, team=team, site=0,
                      off_ms=0, ip=f"{_SVC_NET}.{11 + i}", client=f"{kind}-batch", rate=rate,
                      days_off=frozenset(), crew=True, kind=kind)

    # -- the calendar -------------------------------------------------------------

    def _calendar(self) -> None:
        cfg = self.cfg
        last = self.start + timedelta(days=cfg.days - 1)
        if cfg.holidays is not None:
            hol = {date.fromisoformat(h) for h in cfg.holidays}
        else:
            hol = _default_holidays(self.start, last)
        self.holidays = frozenset((h - self.start).days for h in hol
                                  if 0 <= (h - self.start).days < cfg.days)
        close = date.fromisoformat(cfg.quarter_end) if cfg.quarter_end else \
            _quarter_close(self.start)
        # The close window: the last five business days up to the quarter's end.
        window: list[int] = []
        d = close
        while len(window) < 5:
            if d.weekday() < 5 and d not in hol:
                window.append((d - self.start).days)
            d -= timedelta(days=1)
        self.quarter_close = close
        self.quarter_days = frozenset(i for i in window if 0 <= i < cfg.days)

    def weekday(self, day: int) -> int:
        return (self.start + timedelta(days=day)).weekday()

    def day_date(self, day: int) -> date:
        return self.start + timedelta(days=day)

    def scheduled(self, a: _Actor, day: int) -> bool:
        """Planned to work that day (before the sick-day roll)."""
        return (a.hire <= day <= a.leave and day not in a.vacation
                and self.weekday(day) not in a.days_off
                and (a.crew or day not in self.holidays))

    def actor_rng(self, a: _Actor, day: int) -> random.Random:
        return random.Random(f"{self.seed}:a{a.idx}:{day}")

    def works(self, a: _Actor, day: int) -> bool:
        """Actually works that day: the actor-day stream's first draw is the sick roll."""
        return self.scheduled(a, day) and self.actor_rng(a, day).random() >= SICK_RATE

    def on_call(self, a: _Actor, day: int) -> bool:
        pool = self.oncall_pool
        if not pool:
            return False
        per_week = max(1, len(pool) // 12)
        week = day // 7
        slots = {(week * per_week + j) % len(pool) for j in range(per_week)}
        return a in (pool[s] for s in slots) and day not in a.vacation

    def client_of(self, a: _Actor, day: int) -> str:
        if self.rollout is not None and a.team == self.rollout[0] and day >= self.rollout[1]:
            return ROLLOUT_CLIENT
        return a.client

    def customer_id(self, idx: int) -> str:
        return f"c{idx:0{self.cust_width}d}"

    def customer_in(self, rng: random.Random, region: int) -> int:
        return region + self.n_regions * rng.randrange(self.region_size[region])

    def customer_outside(self, rng: random.Random, region: int) -> int:
        if self.n_regions == 1:
            return rng.randrange(self.customers)
        while True:  # rejection sampling: other regions hold most customers
            c = rng.randrange(self.customers)
            if c % self.n_regions != region:
                return c

    # -- traps ---------------------------------------------------------------------

    def _traps(self, rng: random.Random) -> None:
        days = self.days
        humans = [a for a in self.actors if a.role != SERVICE]
        agents = [a for a in humans if a.role == AGENT]
        long_run = days >= 10
        # A new console for one support team, from one day on.
        teams = sorted({a.team for a in agents})
        big = [t for t in teams if sum(a.team == t for a in agents) >= 6]
        if long_run and big:
            # IT rolls out on a working day, a week or two in.
            when = [d for d in range(max(7, days // 3), max(8, days // 2 + 1))
                    if self.weekday(d) < 5 and d not in self.holidays] or [min(7, days - 1)]
            self.rollout = (rng.choice(big), rng.choice(when))
        # New hires: no history when they start mid-period.
        if long_run:
            n_new = max(1, round(0.02 * len(humans)))
            for a in rng.sample(humans, min(n_new, len(humans) // 4)):
                a.hire = rng.randint(max(5, days // 4), days - 5)
                self.new_hires.append(a)
        # Role changes: an agent joins the fraud team (same name, new role and team).
        if long_run:
            pool = [a for a in agents if a.hire == 0]
            for a in rng.sample(pool, min(max(1, self.employees // 500), len(pool))):
                day = rng.randint(max(8, days // 3), max(8, 2 * days // 3))
                a.leave = day - 1
                b = self._add(name=a.name, role=FRAUD, team="fraud", site=a.site,
                              off_ms=a.off_ms, ip=f"10.{a.site + 1}.20.{250 - len(self.changes)}",
                              client="fraud-workbench", rate=rng.uniform(15, 35),
                              dl_rate=rng.uniform(0.5, 1.5), vpn=0.05, hire=day)
                self.changes.append((a, b))
        changed = {a.idx for pair in self.changes for a in pair}
        # Staff on notice: a few whose downloads matter (analysts, fraud) and the rest.
        settled = [a for a in humans if a.hire == 0 and a.idx not in changed]
        self.download_leavers: set[int] = set()
        if self.small:
            weekday = [a for a in settled if a.role == AGENT and a.days_off == frozenset((5, 6))]
            if weekday or settled:
                a = rng.choice(weekday or settled)
                self.departing.append((a, days + 9, self.start - timedelta(days=14)))
        else:
            n_dep = max(2, min(10, round(self.employees / 60)))
            heavy = [a for a in settled if a.role in (ANALYST, FRAUD)]
            chosen = rng.sample(heavy, min(len(heavy), max(1, n_dep // 3)))
            self.download_leavers = {a.idx for a in chosen}
            rest = [a for a in settled if a.idx not in self.download_leavers]
            chosen += rng.sample(rest, min(len(rest), n_dep - len(chosen)))
            for a in chosen:
                inside = days >= 14 and (a.idx in self.download_leavers or rng.random() < 0.5)
                last = rng.randint(max(12, days // 2), days - 1) if inside else \
                    days + rng.randint(3, 30)
                notice = self.start + timedelta(days=last - rng.randint(14, 35))
                if inside:
                    a.leave = last  # the account is closed after the last day
                self.departing.append((a, last, notice))
        # Vacations: a week or two off (Saturday to Sunday), then back to work.
        p_vac = min(0.5, days * VACATION_WEEKS_PER_YEAR / 365)
        saturdays = [d for d in range(-6, days) if self.weekday(d) == 5]
        for a in humans:
            # (Not the staff whose trap or scenario needs them at work.)
            if rng.random() >= p_vac or a.hire > 0 or a.idx in self.download_leavers \
                    or a.idx in changed:
                continue
            s = rng.choice(saturdays)
            length = rng.choice((9, 9, 16))
            a.vacation = frozenset(d for d in range(s, s + length) if 0 <= d < days)

    def _habits(self) -> None:
        """Per-person habits of a family company, from their own stream (the defaults
        draw nothing, so the fixed company stays as it was)."""
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:habits")
        overflow_other = cfg.overflow is not None
        self.overflow_other = overflow_other
        for a in self.actors:
            if a.role != AGENT:
                continue
            # Phone call-backs: a steady personal share, the same every day.
            if cfg.ticketless is not None:
                a.ticketless = rng.uniform(*cfg.ticketless)
            # Overflow from other regions' queues, worked under their tickets.
            if cfg.overflow is not None:
                a.overflow = rng.uniform(*cfg.overflow)
        if cfg.desk_moves <= 0 or self.days < 10:
            return
        # Desk moves: office staff who get a desk on a subnet they never used, mid-run
        # (at least one manager: the "manager's first office-desk subnet").
        office = [a for a in self.actors if a.role in (MANAGER, ANALYST, ENGINEER, FRAUD)
                  and a.hire == 0 and a.leave >= self.days]
        managers = [a for a in office if a.role == MANAGER]
        n = max(1, round(cfg.desk_moves * len(office)))
        movers = rng.sample(managers, 1) if managers else []
        rest = [a for a in office if a not in movers]
        movers += rng.sample(rest, min(len(rest), n - len(movers)))
        for k, a in enumerate(movers):
            day = rng.randint(self.days // 3, 2 * self.days // 3)
            a.move = (day, f"10.{a.site + 1}.{90 + k // 200}.{20 + k % 200}")

    # -- the insider plan --------------------------------------------------------

    def _plan(self, cfg: SimConfig) -> list[_Instance]:
        explicit = cfg.scenarios is not None or cfg.insiders is not None
        if cfg.scenarios is not None:
            wanted = dict(cfg.scenarios)
        elif cfg.insiders is not None:
            wanted = {LABEL_BULK_NO_TICKET: cfg.insiders}
        elif self.small:
            wanted = {LABEL_BULK_NO_TICKET: 1}
        else:
            per = max(1, round(self.employees / 250))
            wanted = {label: per for label in DEFAULT_SCENARIOS}
            wanted[LABEL_DEPARTING_EMPLOYEE] = max(1, self.employees // 1000)
        # Own stream: the plan must not perturb the background (nor vice versa).
        rng = random.Random(f"{cfg.seed}:scenarios")
        days = self.days
        lo = min(7, days // 2)   # at least a week of history where the run allows
        changed = {a.idx for pair in self.changes for a in pair}
        leaving = {a.idx for a, _, _ in self.departing}
        taken: set[int] = set()

        def established(a: _Actor) -> bool:
            return (a.hire == 0 and a.leave >= days and a.idx not in changed
                    and a.idx not in leaving and not a.vacation and a.idx not in taken)

        def worked_days(a: _Actor, first: int, last: int) -> list[int]:
            return [d for d in range(max(0, first), min(days - 1, last) + 1) if self.works(a, d)]

        out: list[_Instance] = []
        for label in SCENARIOS:
            n = wanted.get(label, 0)
            if n <= 0:
                continue
            maker = _PLANNERS[label]
            pool = [a for a in self.actors if maker.roles and a.role in maker.roles
                    and (established(a) if label != LABEL_DEPARTING_EMPLOYEE else
                         a.idx in self.download_leavers and a.idx not in taken)]
            rng.shuffle(pool)
            if label == LABEL_BULK_NO_TICKET:
                # Established agents at work that day first (a weekend or sick day
                # leaves too few: then they come in anyway to do it).
                day = _insider_day(self)
                pool.sort(key=lambda a: not (self.works(a, day) and (
                    day == 0 or bool(worked_days(a, 0, day - 1)))))
            got = 0
            for a in pool:
                if got == n:
                    break
                inst = maker.plan(self, rng, a, lo, worked_days)
                if inst is not None:
                    out.append(inst)
                    taken.add(a.idx)
                    got += 1
            if got < n and explicit and not cfg.fit_scenarios:
                raise ValueError(f"cannot place {n} {label} insider(s) in this company "
                                 f"(only {got} suitable actor(s)); enlarge it or lower the count")
        return out


# -- insider planners: who is suitable and when they act --------------------------

# (actor, first day, last day) -> the days in that range the actor is at work.
_Worked = Callable[[_Actor, int, int], list[int]]


@dataclass(frozen=True)
class _Planner:
    """Which roles can play a scenario, and how to place one instance on an actor
    (``None``: this actor does not fit, e.g. not at work on enough days)."""

    roles: tuple[str, ...]
    plan: Callable[[_Company, random.Random, _Actor, int, _Worked], _Instance | None]


def _plan_selling(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                  ) -> _Instance | None:
    # Several working days, a week or two into the run, a handful of targets each day.
    if co.days < lo + 3:
        return None
    s = rng.randint(lo, max(lo, co.days - 11))
    ds = worked(a, s, s + rng.randint(6, 9))
    if len(ds) < min(4, co.days - lo):
        return None
    targets = [co.customer_outside(rng, a.site) for _ in range(60)]
    return _Instance(LABEL_SELLING_LOOKUPS, a, tuple(ds), {"targets": targets, "next": 0})


def _plan_vip(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
              ) -> _Instance | None:
    ds = worked(a, lo, co.days - 1)
    if not ds:
        return None
    d1 = rng.choice(ds)
    later = [d for d in ds if d1 < d <= d1 + 5]
    chosen = [d1] + ([rng.choice(later)] if later and rng.random() < 0.6 else [])
    vips = rng.sample(co.vips, min(len(co.vips), rng.randint(1, 3)))
    return _Instance(LABEL_VIP_SNOOPING, a, tuple(chosen), {"vips": vips})


def _plan_camera(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                 ) -> _Instance | None:
    if co.days <= lo:
        return None
    d0 = rng.randint(lo, max(lo, co.days - 2))
    span = list(range(d0, min(co.days, d0 + 7)))
    nights = sorted(rng.sample(span, min(len(span), rng.randint(2, 4))))
    return _Instance(LABEL_CAMERA_SPYING, a, tuple(nights), {})


def _plan_compromised(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                      ) -> _Instance | None:
    if co.days <= lo:
        return None
    d = rng.randint(lo, co.days - 1)
    # Stolen sessions are replayed when the owner is least likely to notice.
    hour = rng.choice((0, 1, 2, 3, 4, 19, 20, 21, 22, 23, 10, 15)) + rng.random()
    return _Instance(LABEL_COMPROMISED_ACCOUNT, a, (d,), {
        "hour": hour, "ip": f"{ATTACKER_NET}.{rng.randint(2, 254)}"})


def _plan_bulk_leak(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                    ) -> _Instance | None:
    if co.days <= lo:
        return None
    d = rng.randint(lo, co.days - 1)
    # Ten times and more the biggest export the actor makes in the normal course.
    normal = max([s[2] * 1.15 for s in a.schedules] or [0])
    if a.team == FINANCE_TEAM:
        normal = max(normal, QUARTER_EXPORT_MAX)
    records = int(max(1_500_000, 12 * normal) * rng.uniform(1.0, 2.0) * co.cfg.intensity)
    return _Instance(LABEL_BULK_LEAK, a, (d,), {
        "hour": rng.uniform(1.0, 4.5), "ip": f"{LEAK_NET}.{rng.randint(2, 254)}",
        "records": records})


def _plan_low_and_slow(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                       ) -> _Instance | None:
    # Starts early (little history to hide in is fine: it hides in the growth)
    # and runs to the end of the period.
    s = rng.randint(min(4, co.days - 1), max(min(4, co.days - 1), min(8, co.days // 3)))
    ds = worked(a, s, co.days - 1)
    if len(ds) < 3:
        return None
    return _Instance(LABEL_LOW_AND_SLOW, a, tuple(ds), {
        "start": s, "r0": rng.uniform(1.0, 2.0) * co.cfg.intensity,
        "growth": rng.uniform(1.10, 1.15)})


def _plan_departing(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                    ) -> _Instance | None:
    last = next(last for b, last, _ in co.departing if b is a)
    if last >= co.days:
        return None
    ds = worked(a, 0, last)
    k = rng.randint(3, 5)
    if len(ds) < k + 5:
        return None
    return _Instance(LABEL_DEPARTING_EMPLOYEE, a, tuple(ds[-k:]), {"last_day": last})


def _plan_bulk_no_ticket(co: _Company, rng: random.Random, a: _Actor, lo: int, worked: _Worked
                         ) -> _Instance | None:
    return _Instance(LABEL_BULK_NO_TICKET, a, (_insider_day(co),), {})


def _insider_day(co: _Company) -> int:
    return co.days - 1 if co.cfg.insider_day is None else co.cfg.insider_day


_PLANNERS: dict[str, _Planner] = {
    LABEL_SELLING_LOOKUPS: _Planner((AGENT,), _plan_selling),
    LABEL_BULK_LEAK: _Planner((ANALYST, ENGINEER), _plan_bulk_leak),
    LABEL_VIP_SNOOPING: _Planner((AGENT,), _plan_vip),
    LABEL_CAMERA_SPYING: _Planner((CAMERA,), _plan_camera),
    LABEL_COMPROMISED_ACCOUNT: _Planner((AGENT, CAMERA), _plan_compromised),
    LABEL_LOW_AND_SLOW: _Planner((AGENT,), _plan_low_and_slow),
    LABEL_DEPARTING_EMPLOYEE: _Planner((ANALYST, FRAUD, AGENT), _plan_departing),
    LABEL_BULK_NO_TICKET: _Planner((AGENT,), _plan_bulk_no_ticket),
}


def _check(cfg: SimConfig) -> None:
    if cfg.days < 1 or cfg.regions < 1:
        raise ValueError("days and regions must be >= 1")
    if cfg.employees is not None and cfg.employees < 1:
        raise ValueError("employees must be >= 1")
    if cfg.agents is not None and cfg.agents < 1:
        raise ValueError("agents must be >= 1")
    if cfg.employees is not None and cfg.agents is not None and cfg.agents > cfg.employees:
        raise ValueError("agents cannot exceed employees")
    if cfg.scenarios is not None and cfg.insiders is not None:
        raise ValueError("give scenarios or insiders, not both")
    if cfg.insiders is not None:
        if cfg.insiders < 0:
            raise ValueError("insiders must be >= 0")
        if cfg.agents is not None and cfg.insiders >= cfg.agents:
            raise ValueError("insiders must leave at least one normal agent")
    for label, n in (cfg.scenarios or {}).items():
        if label not in SCENARIOS:
            raise ValueError(f"unknown scenario {label!r}; known: {', '.join(SCENARIOS)}")
        if n < 0:
            raise ValueError(f"scenario {label} count must be >= 0")
    if cfg.insider_day is not None and not 0 <= cfg.insider_day < cfg.days:
        raise ValueError(f"insider_day must be in 0..{cfg.days - 1}")
    if cfg.customers is not None and cfg.customers < cfg.regions:
        raise ValueError("need at least one customer per region")
    date.fromisoformat(cfg.start)
    if cfg.quarter_end is not None:
        date.fromisoformat(cfg.quarter_end)
    for h in cfg.holidays or ():
        date.fromisoformat(h)


# An event under construction: (time_ms, event dict, label). The dict already
# has "event_id" and "time" keys (so they serialise first); both are filled in
# after the day is sorted, so ids increase with time.
_Item = tuple[int, dict[str, Any], str | None]


def _event(actor: str, action: str, resource_type: str, *, role: str, team: str,
           client: str, ip: str, customer: str | None = None,
           resource_id: str | None = None, fields: list[str] | None = None,
           records: int = 1, nbytes: int = 0, ticket: str | None = None,
           ticket_mode: int = 0, outcome: str = "success") -> dict[str, Any]:
    """Build an event dict; ``ticket_mode`` 0: set ticket, 1: omit it, 2: null."""
    ev: dict[str, Any] = {"event_id": "", "time": "", "actor": actor, "action": action,
                          "resource_type": resource_type}
    if resource_id is not None:
        ev["resource_id"] = resource_id
    if customer is not None:
        ev["customer_id"] = customer
    if fields:
        ev["fields"] = list(fields)  # fresh list: consumers may mutate events
    ev["records"] = records
    ev["bytes"] = nbytes
    ev["role"] = role
    ev["team"] = team
    ev["source_ip"] = ip
    ev["client"] = client
    if ticket_mode == 0 and ticket is not None:
        ev["ticket"] = ticket
    elif ticket_mode == 2:
        ev["ticket"] = None
    if outcome != "success":
        ev["outcome"] = outcome
    return ev


def _no_ticket_mode(rng: random.Random) -> int:
    # Real consoles both omit the field and send null; exercise both.
    return 1 if rng.random() < 0.5 else 2


def _vpn_ip(rng: random.Random) -> str:
    return f"{_VPN_NET}.{rng.randint(2, 254)}"


def _mobile_ip(rng: random.Random) -> str:
    return f"{_MOBILE_NET}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _scaled(n: int, k: float) -> int:
    """``n`` insider actions at intensity ``k`` (1: unchanged, at least one)."""
    return n if k == 1.0 else max(1, round(n * k))


def _spread(rng: random.Random, start: int, length: int, n: int) -> list[int]:
    return sorted(start + int(rng.random() * length) for _ in range(n))


class _Day:
    """Generates one local day for everyone; its events fall within about two UTC days."""

    def __init__(self, co: _Company, day: int) -> None:
        self.co = co
        self.day = day
        self.day_ms = co.base_ms + day * DAY_MS  # UTC midnight of the date
        self.weekday = co.weekday(day)
        self.holiday = day in co.holidays
        self.items: list[_Item] = []
        # Where each actor worked today (shift start, end, address, tool), for the insiders.
        self.ctx: dict[int, tuple[int, int, str, str]] = {}
        irng = random.Random(f"{co.seed}:incidents:{day}")
        self.incidents = [f"INC-{20_000 + day * 10 + j}" for j in range(1 + irng.randrange(3))]

    def run(self) -> list[_Item]:
        co, day = self.co, self.day
        gens = {AGENT: self._agent, CAMERA: self._camera, FRAUD: self._fraud,
                ANALYST: self._analyst, ENGINEER: self._engineer, MANAGER: self._manager,
                SERVICE: self._service}
        for a in co.actors:
            if not a.hire <= day <= a.leave:
                continue
            if a.move is not None and day == a.move[0]:
                a.ip = a.move[1]  # days run in order: from today on, the new desk
            rng = co.actor_rng(a, day)
            works = rng.random() >= SICK_RATE and co.scheduled(a, day)
            gens[a.role](a, rng, works)
        if day == 0 and co.cfg.vip_first_morning:
            self._vip_first_morning(co.cfg.vip_first_morning)
        for inst in co.instances:
            if day in inst.days:
                rng = random.Random(f"{co.seed}:scn:{inst.label}:{inst.actor.idx}:{day}")
                _GENERATORS[inst.label](self, inst, rng)
        return self.items

    def _vip_first_morning(self, n: int) -> None:
        """Legitimate, ticketed VIP reads in the first hour of the data's first morning,
        before anyone has a history (a first-morning trap)."""
        co = self.co
        rng = random.Random(f"{co.seed}:vip-morning")
        at_work = [a for a in co.actors if a.role == AGENT and a.idx in self.ctx]
        for k, a in enumerate(rng.sample(at_work, min(n, len(at_work)))):
            start, _, ip, client = self.ctx[a.idx]
            t = start + rng.randint(1, 20) * MIN_MS
            self._ticket(a, client, ip, rng.choice(co.vips), f"CSV{a.idx:05d}{k:02d}", t, rng,
                         0.0)

    def midnight(self, a: _Actor) -> int:
        """UTC epoch ms of the actor's local midnight starting this day."""
        return self.day_ms - a.off_ms

    def add(self, t: int, ev: dict[str, Any], label: str | None = None) -> None:
        self.items.append((t, ev, label))

    # -- roles ---------------------------------------------------------------------

    def _shift(self, a: _Actor, rng: random.Random, hour: float, hours: float
               ) -> tuple[int, int]:
        start = self.midnight(a) + int(hour * HOUR_MS) + rng.randint(-10, 15) * MIN_MS
        return start, int(hours * HOUR_MS) + rng.randint(-20, 30) * MIN_MS

    def _agent(self, a: _Actor, rng: random.Random, works: bool) -> None:
        if not works:
            return
        co = self.co
        ip = _vpn_ip(rng) if rng.random() < a.vpn else a.ip
        start, length = self._shift(a, rng, co.shifts[a.shift], 8)
        client = co.client_of(a, self.day)
        # New hires: half a load and a clumsy console for their first days.
        fresh = a.idx in co.ramp and self.day - a.hire < 3
        n = min(40, max(2, round(a.rate * (0.5 if fresh else 1.0)
                                 * rng.lognormvariate(0.0, 0.2))))
        sloppy = max(a.sloppy, 0.05) if fresh else a.sloppy
        mobile_ip = ""
        span = length - 15 * MIN_MS  # leave time to finish the last ticket
        for k, t in enumerate(_spread(rng, start, span, n)):
            r = rng.random()
            if a.recent and r < CALLBACK_RATE:
                cust = rng.choice(a.recent)
            elif r < CALLBACK_RATE + a.overflow:
                cust = co.customer_outside(rng, a.site) if co.overflow_other else \
                    co.customer_in(rng, rng.randrange(co.n_regions))
            else:
                cust = co.customer_in(rng, a.site)
            # A phone call-back: the agent rings a customer and works it without a ticket
            # id (half of them about a customer the agent served recently).
            callback = a.ticketless > 0 and rng.random() < a.ticketless
            if callback and a.recent and rng.random() < 0.5:
                cust = rng.choice(a.recent)
            a.recent.append(cust)
            c_client, c_ip = client, ip
            if a.mobile and rng.random() < a.mobile:
                # A phone on the carrier network (the small company: on the office Wi-Fi).
                mobile_ip = mobile_ip or (ip if co.small else _mobile_ip(rng))
                c_client, c_ip = "crm-mobile", mobile_ip
            self._ticket(a, c_client, c_ip, cust, f"CS{self.day:03d}{a.idx:05d}{k:02d}", t,
                         rng, sloppy, callback)
        self.ctx[a.idx] = (start, start + length, ip, client)

    def _ticket(self, a: _Actor, client: str, ip: str, cidx: int, ticket: str, t: int,
                rng: random.Random, sloppy: float, callback: bool = False) -> None:
        cust = self.co.customer_id(cidx)
        # Flagged (VIP) accounts cannot be opened without a case id in the console.
        vip = cidx in self.co.vip_set
        forgotten = not vip and (callback or rng.random() < self.co.forget_rate)
        k = rng.choices((1, 2, 3, 4, 5), cum_weights=_TICKET_LEN_CW)[0]
        # A ticket opens on the customer's profile (or, less often, an order).
        kinds = ["customer_profile" if rng.random() < 0.85 else "order"]
        kinds += rng.choices(_FOLLOWUPS, cum_weights=_FOLLOWUP_CW, k=k - 1)
        name, team = a.name, a.team
        for kind in kinds:
            action, rtype, outcome = "read", kind, "success"
            if kind == "customer_profile":
                fields = rng.choices(_PROFILE_FIELDS, cum_weights=_PROFILE_FIELDS_CW)[0]
                rid = cust
            elif kind == "order":
                fields = ["address"] if rng.random() < 0.3 else None
                rid = f"o{cust[1:]}-{rng.randint(1, 9)}"
            elif kind == "address":
                fields, rid = ["address"], f"addr-{cust[1:]}-1"
            elif kind == "payment_method":
                fields, rid = ["payment"], f"pm-{cust[1:]}-1"
                if rng.random() < 0.01:
                    outcome = "denied"  # masked card data the agent is not cleared for
            elif forgotten:  # without the ticket id the console only lets them look
                fields, rtype, rid = ["email", "phone"], "customer_profile", cust
            else:
                action = "update"
                fields = rng.choice(_UPDATE_FIELDS)
                rtype = "address" if fields == ["address"] else "customer_profile"
                rid = f"addr-{cust[1:]}-1" if rtype == "address" else cust
            # Updates always go through a ticket; reads sometimes lose theirs.
            mode = 0
            if action == "read" and not vip and (forgotten or rng.random() < sloppy):
                mode = _no_ticket_mode(rng)
            ev = _event(name, action, rtype, role=AGENT, team=team, client=client,
                        ip=ip, customer=cust, resource_id=rid, fields=fields,
                        nbytes=800 + int(rng.random() * 5200), ticket=ticket, ticket_mode=mode,
                        outcome=outcome)
            self.items.append((t, ev, None))
            t += 3_000 + int(rng.expovariate(1 / 40_000))
        if rng.random() < self.co.invoice_rate:
            ev = _event(name, "download", "invoice", role=AGENT, team=team, client=client,
                        ip=ip, customer=cust, resource_id=f"inv-{cust[1:]}-{rng.randint(1, 40)}",
                        nbytes=rng.randint(40_000, 400_000), ticket=ticket,
                        ticket_mode=_no_ticket_mode(rng) if forgotten else 0)
            self.items.append((t, ev, None))

    def _camera(self, a: _Actor, rng: random.Random, works: bool) -> None:
        if not works:
            return
        co = self.co
        ip = _vpn_ip(rng) if rng.random() < a.vpn else a.ip
        start, length = self._shift(a, rng, co.shifts[a.shift], 8)
        n = min(20, max(2, round(a.rate * rng.lognormvariate(0.0, 0.2))))
        for k, t in enumerate(_spread(rng, start, length - 20 * MIN_MS, n)):
            if a.recent and rng.random() < 0.05:
                cidx = rng.choice(a.recent)
            else:
                cidx = rng.randrange(co.customers)  # camera support is one global queue
            a.recent.append(cidx)
            cust = co.customer_id(cidx)
            ticket = f"CAM{self.day:03d}{a.idx:05d}{k:02d}"
            fields = ["address", "phone"] if rng.random() < 0.6 else ["email", "phone"]
            mode = _no_ticket_mode(rng) if rng.random() < a.sloppy else 0
            self.add(t, _event(a.name, "read", "customer_profile", role=CAMERA, team=a.team,
                               client=a.client, ip=ip, customer=cust, resource_id=cust,
                               fields=fields, nbytes=rng.randint(900, 4000), ticket=ticket,
                               ticket_mode=mode))
            if rng.random() < 0.25:
                t += rng.randint(20_000, 90_000)
                self.add(t, _event(a.name, "read", "device", role=CAMERA, team=a.team,
                                   client=a.client, ip=ip, customer=cust,
                                   resource_id=f"dev-{cust[1:]}-1",
                                   nbytes=rng.randint(500, 2000), ticket=ticket))
            for _ in range(rng.choice((1, 1, 2, 3))):
                t += rng.randint(30_000, 240_000)
                mode = _no_ticket_mode(rng) if rng.random() < 0.003 else 0
                self.add(t, _event(a.name, "view_stream", "camera_stream", role=CAMERA,
                                   team=a.team, client=a.client, ip=ip, customer=cust,
                                   resource_id=f"cam-{cust[1:]}-{rng.randint(1, 3)}",
                                   nbytes=rng.randint(5, 80) * 1_000_000, ticket=ticket,
                                   ticket_mode=mode))
        self.ctx[a.idx] = (start, start + length, ip, a.client)

    def _fraud(self, a: _Actor, rng: random.Random, works: bool) -> None:
        if not works:
            return
        co = self.co
        ip = _vpn_ip(rng) if rng.random() < a.vpn else a.ip
        start, length = self._shift(a, rng, 9, 8)
        n = max(3, round(a.rate * rng.lognormvariate(0.0, 0.25)))
        case: str | None = None
        case_left = 0
        role, team, name, client = a.role, a.team, a.name, a.client
        for t in _spread(rng, start, length - 30 * MIN_MS, n):
            # Work comes as cases (a ring of a few customers) or as unticketed triage.
            if case_left <= 0:
                case_left = rng.randint(2, 6)
                case = f"FRD-{self.day:03d}{a.idx:05d}{rng.randrange(100):02d}" \
                    if rng.random() < co.case_rate else None
            case_left -= 1
            if rng.random() < 0.05:  # an order search across a suspected fraud ring
                self.add(t, _event(name, "search", "order", role=role, team=team,
                                   client=client, ip=ip, records=rng.randint(5, 40),
                                   nbytes=rng.randint(5_000, 60_000), ticket=case,
                                   ticket_mode=0 if case else 1))
                t += 20_000
            cust = co.customer_id(rng.randrange(co.customers))
            extra = rng.choices(("order", "payment_method", "address"), k=rng.randint(0, 3))
            for kind in ["customer_profile", *extra]:
                fields = {"customer_profile": ["email", "phone", "address"],
                          "order": None, "payment_method": ["payment"],
                          "address": ["address"]}[kind]
                self.add(t, _event(name, "read", kind, role=role, team=team, client=client,
                                   ip=ip, customer=cust, resource_id=cust, fields=fields,
                                   nbytes=rng.randint(1000, 8000), ticket=case,
                                   ticket_mode=0 if case else 1))
                t += 5_000 + int(rng.expovariate(1 / 30_000))
        for t in _spread(rng, start, length, _poisson(rng, a.dl_rate)):
            recs = rng.randint(50, 3000)
            self.add(t, _event(name, "download", "transaction_history", role=role, team=team,
                               client=client, ip=ip,
                               customer=co.customer_id(rng.randrange(co.customers)),
                               resource_id=f"txh-{rng.randrange(10**6)}", records=recs,
                               nbytes=recs * rng.randint(100, 160), ticket_mode=1))
        self.ctx[a.idx] = (start, start + length, ip, client)

    def _analyst(self, a: _Actor, rng: random.Random, works: bool) -> None:
        co = self.co
        midnight = self.midnight(a)
        # Scheduled exports run on the BI server whether the analyst is in or not.
        if a.hire == 0 or self.day - a.hire >= 7:
            for j, (wd, hour, recs) in enumerate(a.schedules):
                if self.weekday == wd:
                    t = midnight + hour * HOUR_MS + rng.randint(0, 20) * MIN_MS
                    n = int(recs * rng.uniform(0.9, 1.15))
                    self.add(t, _event(a.name, "export", "report", role=a.role, team=a.team,
                                       client="bi-scheduler", ip=_BI_SERVER,
                                       resource_id=f"sched-{a.idx}-{j}", records=n,
                                       nbytes=n * rng.randint(250, 350), ticket_mode=1))
        if not works:
            return
        ip = _vpn_ip(rng) if rng.random() < a.vpn else a.ip
        start, length = self._shift(a, rng, 9, 8.5)
        name, role, team, client = a.name, a.role, a.team, a.client
        n = max(1, round(a.rate * rng.lognormvariate(0.0, 0.3)))
        for t in _spread(rng, start, length, n):
            if rng.random() < 0.65:
                recs = int(rng.lognormvariate(5.0, 1.2))
                self.add(t, _event(name, "read", "report", role=role, team=team, client=client,
                                   ip=ip, resource_id=f"rpt-{team}-{rng.randrange(40)}",
                                   records=recs, nbytes=recs * 150, ticket_mode=1))
            else:
                recs = rng.randint(20, 2000)
                self.add(t, _event(name, "search", "order", role=role, team=team,
                                   client=client, ip=ip, records=recs, nbytes=recs * 200,
                                   ticket_mode=1))
        for t in _spread(rng, start, length, _poisson(rng, a.dl_rate)):
            self.add(t, self._report_download(a, rng, ip, client))
        if team == FINANCE_TEAM and self.day in co.quarter_days:
            # Quarter close: the whole team exports big books, late into the evening.
            for t in _spread(rng, start, 13 * HOUR_MS, rng.randint(3, 8)):
                recs = min(QUARTER_EXPORT_MAX, int(rng.lognormvariate(math.log(120_000), 0.5)))
                self.add(t, _event(name, "export", "report", role=role, team=team,
                                   client=client, ip=ip,
                                   resource_id=f"qclose-{rng.randrange(30)}", records=recs,
                                   nbytes=recs * rng.randint(250, 350), ticket_mode=1))
        if co.cfg.busy_export_days and rng.random() < co.cfg.busy_export_days:
            # A busy export day (a deadline, an audit request): many downloads and a few
            # big ad-hoc exports, in office hours from the usual desk.
            for t in _spread(rng, start, length, rng.randint(6, 15)):
                self.add(t, self._report_download(a, rng, ip, client))
            for t in _spread(rng, start, length, rng.randint(1, 4)):
                recs = int(rng.lognormvariate(math.log(40_000), 0.6) * co.cfg.export_scale)
                rid = f"deadline-{a.idx}-{rng.randrange(100)}"
                self.add(t, _event(name, "export", "report", role=role, team=team,
                                   client=client, ip=ip, resource_id=rid,
                                   records=recs, nbytes=recs * rng.randint(250, 350),
                                   ticket_mode=1))
        self.ctx[a.idx] = (start, start + length, ip, client)

    def _report_download(self, a: _Actor, rng: random.Random, ip: str, client: str
                         ) -> dict[str, Any]:
        recs = int(rng.lognormvariate(math.log(2000), 0.9))
        return _event(a.name, "download", "report", role=a.role, team=a.team, client=client,
                      ip=ip, resource_id=f"dl-{a.idx}-{rng.randrange(10**6)}", records=recs,
                      nbytes=recs * rng.randint(200, 300), ticket_mode=1)

    def _engineer(self, a: _Actor, rng: random.Random, works: bool) -> None:
        co = self.co
        name, role, team, client = a.name, a.role, a.team, a.client
        midnight = self.midnight(a)
        if co.on_call(a, self.day) and rng.random() < 0.35:
            # Paged at night: logs first, then the affected customers, from home.
            ip = _vpn_ip(rng)
            t = midnight + int((22 + rng.random() * 7) * HOUR_MS)
            inc = rng.choice(self.incidents)
            for _ in range(rng.randint(2, 8)):
                t += rng.randint(30_000, 300_000)
                recs = rng.randint(100, 20_000)
                self.add(t, _event(name, "search", "log", role=role, team=team, client=client,
                                   ip=ip, records=recs, nbytes=recs * 300, ticket=inc))
            for _ in range(rng.randint(1, 6)):
                t += rng.randint(30_000, 400_000)
                cust = co.customer_id(rng.randrange(co.customers))
                self.add(t, _event(name, "read", rng.choice(("customer_profile", "order")),
                                   role=role, team=team, client=client, ip=ip, customer=cust,
                                   resource_id=cust, nbytes=rng.randint(500, 4000), ticket=inc,
                                   ticket_mode=0 if rng.random() < 0.85 else 1))
        if not works:
            return
        ip = _vpn_ip(rng) if rng.random() < a.vpn else a.ip
        start, length = self._shift(a, rng, 9, 9)
        for t in _spread(rng, start, length, max(1, round(a.rate * rng.lognormvariate(0, 0.3)))):
            recs = rng.randint(100, 20_000)
            self.add(t, _event(name, "search", "log", role=role, team=team, client=client, ip=ip,
                               records=recs, nbytes=recs * 300, ticket_mode=1))
        if rng.random() < 0.25:  # debugging one or two customers' data
            inc = rng.choice(self.incidents)
            mode = 0 if rng.random() < 0.8 else 1
            t = start + int(rng.random() * (length - HOUR_MS))
            for _ in range(rng.randint(1, 2)):
                cust = co.customer_id(rng.randrange(co.customers))
                for _ in range(rng.randint(1, 4)):
                    t += rng.randint(20_000, 200_000)
                    kind = rng.choice(("customer_profile", "order", "payment_method"))
                    self.add(t, _event(name, "read", kind, role=role, team=team, client=client,
                                       ip=ip, customer=cust, resource_id=cust,
                                       nbytes=rng.randint(500, 4000), ticket=inc,
                                       ticket_mode=mode))
        if rng.random() < 0.1:
            self.add(start + int(rng.random() * length),
                     _event(name, "download", "log_bundle", role=role, team=team, client=client,
                            ip=ip, nbytes=rng.randint(1, 50) * 1_000_000, ticket_mode=1))
        self.ctx[a.idx] = (start, start + length, ip, client)

    def _manager(self, a: _Actor, rng: random.Random, works: bool) -> None:
        if not works:
            return
        co = self.co
        ip = _vpn_ip(rng) if rng.random() < a.vpn else a.ip
        mobile_ip = _mobile_ip(rng)
        start, length = self._shift(a, rng, 9, 8)
        name, role, team = a.name, a.role, a.team
        for t in _spread(rng, start, length, max(1, round(a.rate * rng.uniform(0.6, 1.4)))):
            on_phone = rng.random() < a.mobile
            self.add(t, _event(name, "read", "report", role=role, team=team,
                               client="bi-mobile" if on_phone else a.client,
                               ip=mobile_ip if on_phone else ip,
                               resource_id=f"dash-{rng.randrange(12)}",
                               records=rng.randint(1, 50), nbytes=rng.randint(2_000, 40_000),
                               ticket_mode=1))
        if rng.random() < 0.15:  # an escalated complaint lands on the manager's desk
            cust = co.customer_id(rng.randrange(co.customers))
            ticket = f"ESC{self.day:03d}{a.idx:05d}"
            t = start + int(rng.random() * (length - HOUR_MS))
            for kind in ("customer_profile", "order"):
                t += rng.randint(30_000, 300_000)
                self.add(t, _event(name, "read", kind, role=role, team=team, client="crm-console",
                                   ip=ip, customer=cust, resource_id=cust,
                                   fields=["email", "phone"] if kind == "customer_profile"
                                   else None, nbytes=rng.randint(800, 5000), ticket=ticket))
        if rng.random() < 0.1:
            self.add(start + int(rng.random() * length),
                     self._report_download(a, rng, ip, a.client))
        self.ctx[a.idx] = (start, start + length, ip, a.client)

    def _service(self, a: _Actor, rng: random.Random, works: bool) -> None:
        co = self.co
        n = max(1, round(a.rate * rng.gauss(1.0, 0.04)))  # steady, around the clock
        name, team, client, ip = a.name, a.team, a.client, a.ip
        # Services run on UTC: their day is the UTC date.
        times = _spread(rng, self.day_ms, DAY_MS, n)
        items = self.items
        ncust = co.customers
        cid = co.customer_id
        if a.kind == "etl":
            for t in times:
                recs = rng.randint(500, 5000)
                items.append((t, _event(name, "read", "order", role=SERVICE, team=team,
                                        client=client, ip=ip, records=recs,
                                        nbytes=recs * 400, ticket_mode=1), None))
            return
        billing = a.kind == "billing"
        for t in times:
            cust = cid(rng.randrange(ncust))
            if billing and rng.random() < 0.7:
                rtype, fields, rid = "payment_method", ["payment"], f"pm-{cust[1:]}-1"
            else:
                rtype, rid = "customer_profile", cust
                fields = ["email"] if billing else rng.choice((["email"], ["phone"],
                                                               ["email", "phone"]))
            items.append((t, _event(name, "read", rtype, role=SERVICE, team=team, client=client,
                                    ip=ip, customer=cust, resource_id=rid, fields=fields,
                                    nbytes=300 + int(rng.random() * 1200), ticket_mode=1), None))


# -- insider generators: the labelled events of one scenario on one day ------------

def _read(a: _Actor, cust: str, client: str, ip: str, rng: random.Random,
          fields: list[str], rtype: str = "customer_profile") -> dict[str, Any]:
    rid = cust if rtype == "customer_profile" else f"o{cust[1:]}-{rng.randint(1, 9)}"
    return _event(a.name, "read", rtype, role=a.role, team=a.team, client=client, ip=ip,
                  customer=cust, resource_id=rid, fields=fields,
                  nbytes=rng.randint(1500, 3500), ticket_mode=_no_ticket_mode(rng))


def _gen_selling(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """A few no-ticket lookups a day of customers from a buyer's list, outside the
    agent's region, during the shift, from the usual desk: small enough to hide in
    the agent's normal volume, spread over several days."""
    ctx = d.ctx.get(inst.actor.idx)
    if ctx is None:
        return
    start, end, ip, client = ctx
    p = inst.params
    # A few a day: about a tenth of what a busy agent reads, less for a slow one.
    n = _scaled(rng.randint(2, max(3, round(inst.actor.rate * 0.4))), d.co.cfg.intensity)
    for t in _spread(rng, start + 20 * MIN_MS, end - start - 40 * MIN_MS, n):
        cidx = p["targets"][p["next"] % len(p["targets"])]
        p["next"] += 1
        d.add(t, _read(inst.actor, d.co.customer_id(cidx), client, ip, rng, ["email", "phone"]),
              LABEL_SELLING_LOOKUPS)


def _gen_vip(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """Curiosity: one to three looks at a celebrity's profile, no ticket, on shift."""
    ctx = d.ctx.get(inst.actor.idx)
    if ctx is None:
        return
    start, end, ip, client = ctx
    n = _scaled(rng.randint(2, 4), d.co.cfg.intensity)
    for t in _spread(rng, start + 10 * MIN_MS, end - start - 20 * MIN_MS, n):
        cust = d.co.customer_id(rng.choice(inst.params["vips"]))
        fields = rng.choice((["email", "phone", "address"], ["address"], ["phone"]))
        d.add(t, _read(inst.actor, cust, client, ip, rng, fields), LABEL_VIP_SNOOPING)
        if rng.random() < 0.3:
            d.add(t + rng.randint(20_000, 90_000),
                  _read(inst.actor, cust, client, ip, rng, ["address"], "order"),
                  LABEL_VIP_SNOOPING)


def _gen_camera(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """Between 00:30 and 04:30 local, from home over the VPN, with no ticket: views of
    customers' cameras, some of customers the technician served recently."""
    a = inst.actor
    ip = _vpn_ip(rng)
    mid = d.midnight(a)
    t = mid + int(rng.uniform(0.5, 2.5) * HOUR_MS)
    for _ in range(_scaled(rng.randint(3, 10), d.co.cfg.intensity)):
        if a.recent and rng.random() < 0.5:
            cidx = rng.choice(a.recent)
        else:
            cidx = rng.randrange(d.co.customers)
        cust = d.co.customer_id(cidx)
        ev = _event(a.name, "view_stream", "camera_stream", role=a.role, team=a.team,
                    client=a.client, ip=ip, customer=cust,
                    resource_id=f"cam-{cust[1:]}-{rng.randint(1, 3)}",
                    nbytes=rng.randint(20, 300) * 1_000_000, ticket_mode=_no_ticket_mode(rng))
        d.add(t, ev, LABEL_CAMERA_SPYING)
        t += rng.randint(2, 15) * MIN_MS
        if t > mid + int(4.5 * HOUR_MS):
            break


def _gen_compromised(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """A stolen session replayed by a script: an address and a client the actor never
    used, hundreds of distinct customers' contact and payment data within an hour."""
    a, p = inst.actor, inst.params
    co = d.co
    t0 = d.midnight(a) + int(p["hour"] * HOUR_MS)
    n = min(co.customers, _scaled(rng.randint(200, 600), co.cfg.intensity))
    custs = rng.sample(range(co.customers), n)
    for t, cidx in zip(_spread(rng, t0, rng.randint(35, 55) * MIN_MS, n), custs, strict=True):
        cust = co.customer_id(cidx)
        if rng.random() < 0.2:
            rtype, fields, rid = "payment_method", ["payment"], f"pm-{cust[1:]}-1"
        else:
            rtype, fields, rid = "customer_profile", ["email", "phone", "address"], cust
        outcome = "denied" if rng.random() < 0.03 else "success"
        d.add(t, _event(a.name, "read", rtype, role=a.role, team=a.team, client=ATTACKER_CLIENT,
                        ip=p["ip"], customer=cust, resource_id=rid, fields=fields,
                        nbytes=rng.randint(1000, 4000), ticket_mode=_no_ticket_mode(rng),
                        outcome=outcome), LABEL_COMPROMISED_ACCOUNT)


def _gen_bulk_leak(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """In the small hours, from a home line the company never saw, one to three
    exports whose rows add up to ten times the actor's biggest normal export."""
    a, p = inst.actor, inst.params
    t = d.midnight(a) + int(p["hour"] * HOUR_MS)
    parts = rng.randint(1, 3)
    for j in range(parts):
        recs = p["records"] // parts
        d.add(t, _event(a.name, "export", "report", role=a.role, team=a.team, client=a.client,
                        ip=p["ip"], resource_id=f"adhoc-{a.idx}-{j}",
                        fields=["email", "phone", "address", "dob"], records=recs,
                        nbytes=recs * rng.randint(300, 450), ticket_mode=1), LABEL_BULK_LEAK)
        t += rng.randint(3, 12) * MIN_MS


def _gen_low_and_slow(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """No-ticket reads of customers outside the agent's region, one or two a day at
    first and ~10-15 % more each calendar day, so no day stands out from the last."""
    ctx = d.ctx.get(inst.actor.idx)
    if ctx is None:
        return
    start, end, ip, client = ctx
    p = inst.params
    n = max(1, round(p["r0"] * p["growth"] ** (d.day - p["start"]) * rng.uniform(0.9, 1.1)))
    a = inst.actor
    for t in _spread(rng, start + 10 * MIN_MS, end - start - 20 * MIN_MS, n):
        cust = d.co.customer_id(d.co.customer_outside(rng, a.site))
        d.add(t, _read(a, cust, client, ip, rng, ["email", "phone"]), LABEL_LOW_AND_SLOW)


def _gen_departing(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """In the last working days before leaving, extra downloads of the kind the actor
    makes anyway, so that the day's downloads come to three or four times normal."""
    ctx = d.ctx.get(inst.actor.idx)
    if ctx is None:
        return
    a = inst.actor
    start, end, ip, client = ctx
    extra = _scaled(round(a.dl_rate * rng.uniform(2.6, 3.6)) + 1, d.co.cfg.intensity)
    for t in _spread(rng, start, end - start, extra):
        if a.role == FRAUD:
            recs = rng.randint(500, 5000)
            ev = _event(a.name, "download", "transaction_history", role=a.role, team=a.team,
                        client=client, ip=ip, resource_id=f"txh-{rng.randrange(10**6)}",
                        records=recs, nbytes=recs * 130, ticket_mode=1)
        elif a.role == AGENT:
            cust = d.co.customer_id(rng.randrange(d.co.customers))
            ev = _event(a.name, "download", "invoice", role=a.role, team=a.team, client=client,
                        ip=ip, customer=cust, resource_id=f"inv-{cust[1:]}-1",
                        nbytes=rng.randint(40_000, 400_000), ticket_mode=1)
        else:
            ev = d._report_download(a, rng, ip, client)
        d.add(t, ev, LABEL_DEPARTING_EMPLOYEE)


def _gen_bulk_no_ticket(d: _Day, inst: _Instance, rng: random.Random) -> None:
    """The older demo spree: hundreds of mostly out-of-region customers without
    tickets in an hour or two, late in the shift, from the usual desk and console."""
    a = inst.actor
    co = d.co
    ctx = d.ctx.get(a.idx)
    if ctx is None:  # came in anyway (or logged in from the office) to do it
        start = d.midnight(a) + int(co.shifts[a.shift] * HOUR_MS)
        ctx = (start, start + 8 * HOUR_MS, a.ip, co.client_of(a, d.day))
    start, end, ip, client = ctx
    shift_len = end - start
    t0 = start + shift_len // 2 + int(rng.random() * (shift_len // 2 + HOUR_MS))
    r = co.n_regions
    own = co.region_size[a.site]
    n = min(rng.randint(150, 400), co.customers)
    n_out = min(co.customers - own, round(n * rng.uniform(0.75, 0.9)))
    picked = [a.site + r * k for k in rng.sample(range(own), min(own, n - n_out))]
    seen: set[int] = set()
    while len(seen) < n_out:
        seen.add(co.customer_outside(rng, a.site))
    picked += sorted(seen)
    rng.shuffle(picked)
    times = _spread(rng, t0, rng.randint(60, 120) * MIN_MS, len(picked))
    for t, c in zip(times, picked, strict=True):
        d.add(t, _read(a, co.customer_id(c), client, ip, rng, ["email", "phone"]),
              LABEL_BULK_NO_TICKET)


_GENERATORS: dict[str, Callable[[_Day, _Instance, random.Random], None]] = {
    LABEL_SELLING_LOOKUPS: _gen_selling,
    LABEL_BULK_LEAK: _gen_bulk_leak,
    LABEL_VIP_SNOOPING: _gen_vip,
    LABEL_CAMERA_SPYING: _gen_camera,
    LABEL_COMPROMISED_ACCOUNT: _gen_compromised,
    LABEL_LOW_AND_SLOW: _gen_low_and_slow,
    LABEL_DEPARTING_EMPLOYEE: _gen_departing,
    LABEL_BULK_NO_TICKET: _gen_bulk_no_ticket,
}


class TimeFormatter:
    """Epoch ms -> RFC 3339 UTC with milliseconds, caching the date part."""

    def __init__(self) -> None:
        self._prefix: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        day, rest = divmod(ms, DAY_MS)
        prefix = self._prefix.get(day)
        if prefix is None:
            prefix = (date(1970, 1, 1) + timedelta(days=day)).isoformat() + "T"
            self._prefix[day] = prefix
        h, rest = divmod(rest, HOUR_MS)
        m, rest = divmod(rest, MIN_MS)
        s, milli = divmod(rest, 1000)
        return f"{prefix}{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a day is built (no caller code runs inside).

    A day is tens of thousands of fresh dicts and lists that all stay alive;
    each allocation burst otherwise triggers collections that re-scan them,
    which nearly doubles generation time at 1000 agents. Nothing here forms cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _batch_cut(co: _Company, day: int) -> int:
    """Events before this UTC ms are final once local day ``day`` is generated."""
    return co.base_ms + (day + 1) * DAY_MS - co.lead_ms


def _day_batches(cfg: SimConfig) -> Iterator[tuple[int, list[tuple[dict, str | None]]]]:
    """Yield (local day, that day's (event, label) pairs in time order).

    A local day's events spread over about two UTC days (time zones, night
    shifts), so whatever falls after the cut is carried into the next batch;
    memory stays at about one day of events. The last batch (day ``days``)
    holds whatever falls after the final cut.
    """
    co = _Company(cfg)
    fmt = TimeFormatter()
    counter = 0
    carry: list[_Item] = []
    for d in range(cfg.days + 1):
        if d < cfg.days:
            gen = _Day(co, d)
            with _gc_paused():
                items = carry + gen.run()
                items.sort(key=itemgetter(0))  # stable: ties keep generation order
            split = bisect_left(items, _batch_cut(co, d), key=itemgetter(0))
            carry = items[split:]
            del items[split:]
        else:
            items, carry = carry, []
            if not items:
                return
        batch: list[tuple[dict, str | None]] = []
        with _gc_paused():
            for t, ev, label in items:
                ev["event_id"] = f"e{cfg.seed}-{counter:09d}"
                ev["time"] = fmt(t)
                counter += 1
                batch.append((ev, label))
        del items
        yield d, batch


def generate(cfg: SimConfig) -> Iterator[tuple[dict, str | None]]:
    """Yield (event_dict, label_or_None) in non-decreasing event time order."""
    for _, batch in _day_batches(cfg):
        yield from batch


def _iso_ms(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def context_entries(cfg: SimConfig) -> list[dict[str, Any]]:
    """The SPEC §1 context (watchlist) entries the simulated company knows:
    its departing staff (notice time and last day) and its VIP customers."""
    co = _Company(cfg)
    entries: list[dict[str, Any]] = []
    for a, last, notice in co.departing:
        # Notice is handed in mid-afternoon, local time.
        ms = int(datetime(notice.year, notice.month, notice.day, tzinfo=UTC).timestamp()) \
            * 1000 + 15 * HOUR_MS + 30 * MIN_MS - a.off_ms
        entries.append({"kind": "departing_actor", "id": a.name,
                        "notice": _iso_ms(ms),
                        "last_day": co.day_date(last).isoformat()})
    entries += [{"kind": "vip_customer", "id": co.customer_id(c)} for c in co.vips]
    return entries


def describe(cfg: SimConfig) -> dict[str, Any]:
    """What the simulator planned, as plain JSON data (for tests, evaluation, docs).

    Keys: ``roles`` (actor count per role, by role held on day 0 or at hire),
    ``actors`` (name -> role, team, site, UTC offset in hours, first and last
    day), ``holidays``, ``quarter_end_team`` / ``quarter_end_days``, ``rollout``
    (team, client, day), ``role_changes``, ``new_hires``, ``vacations``,
    ``departing``, ``vips`` and ``scenarios`` (label, actor, days). Days are
    local ISO dates.
    """
    co = _Company(cfg)
    iso = co.day_date
    actors: dict[str, dict[str, Any]] = {}
    roles: dict[str, int] = {}
    for a in co.actors:
        if a.name in actors:
            continue  # the second half of a role change
        roles[a.role] = roles.get(a.role, 0) + 1
        actors[a.name] = {"role": a.role, "team": a.team, "site": co.sites[a.site][0],
                          "region": a.site,
                          "utc_offset": a.off_ms // HOUR_MS if a.off_ms % HOUR_MS == 0
                          else a.off_ms / HOUR_MS,
                          "shift": a.shift, "first_day": iso(a.hire).isoformat(),
                          "last_day": iso(a.leave).isoformat() if a.leave < co.days else None}
    for old, _new in co.changes:
        actors[old.name]["last_day"] = None  # the person stays, in another role
    return {
        "employees": sum(n for r, n in roles.items() if r != SERVICE),
        "customers": co.customers,
        "roles": roles,
        "actors": actors,
        "holidays": sorted(iso(d).isoformat() for d in co.holidays),
        "quarter_end": co.quarter_close.isoformat(),
        "quarter_end_team": FINANCE_TEAM,
        "quarter_end_days": sorted(iso(d).isoformat() for d in co.quarter_days),
        "rollout": None if co.rollout is None else {
            "team": co.rollout[0], "client": ROLLOUT_CLIENT, "day": iso(co.rollout[1]).isoformat()},
        "role_changes": [{"actor": old.name, "day": iso(new.hire).isoformat(),
                          "from": old.role, "to": new.role, "team": new.team}
                         for old, new in co.changes],
        "new_hires": [{"actor": a.name, "day": iso(a.hire).isoformat()} for a in co.new_hires],
        "vacations": {a.name: [iso(min(a.vacation)).isoformat(), iso(max(a.vacation)).isoformat()]
                      for a in co.actors if a.vacation},
        "departing": [{"actor": a.name, "last_day": iso(last).isoformat(),
                       "notice": notice.isoformat()} for a, last, notice in co.departing],
        "vips": [co.customer_id(c) for c in co.vips],
        "scenarios": [{"label": i.label, "actor": i.actor.name, "role": i.actor.role,
                       "days": [iso(d).isoformat() for d in i.days]} for i in co.instances],
    }


def _open_out(path: str) -> IO[bytes]:
    return sys.stdout.buffer if path == "-" else open(path, "wb", buffering=1 << 20)


def _scenario_actors(seen: dict[str, set[str]]) -> dict[str, list[str]]:
    return {label: sorted(actors) for label, actors in sorted(seen.items())}


def write_context(cfg: SimConfig, path: str) -> None:
    """Write the company's context (watchlist) entries as JSONL."""
    with open(path, "wb") as f:
        f.writelines(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE)
                     for e in context_entries(cfg))


def write_jsonl(cfg: SimConfig, events_path: str, labels_path: str | None,
                context_path: str | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Write events JSONL (one orjson-dumped object per line; ``-`` is stdout), labels
    JSONL (``{"event_id", "label"}`` per malicious event only) and, optionally, the
    context JSONL; return ``{"events": n, "malicious": m, "actors": k, "insiders":
    [sorted actors with labelled events], "scenarios": {label: [sorted actors]}}``."""
    _check(cfg)  # before any file is opened: a bad option leaves nothing behind
    if context_path is not None:
        write_context(cfg, context_path)
    nl = orjson.OPT_APPEND_NEWLINE
    n = m = 0
    actors: set[str] = set()
    seen: dict[str, set[str]] = {}
    bar = Progress("simulate", enabled=progress)
    ev_out = _open_out(events_path)
    lab_out = open(labels_path, "wb") if labels_path is not None else None  # noqa: SIM115
    try:
        for _day, batch in _day_batches(cfg):
            # One write per line into a large buffer: orjson 3.13 results each pin
            # ~8 KB of RSS while alive, so joining a day's lines costs ~300 MB.
            write = ev_out.write
            for ev, label in batch:
                write(orjson.dumps(ev, option=nl))
                actors.add(ev["actor"])
                if label is not None:
                    m += 1
                    seen.setdefault(label, set()).add(ev["actor"])
                    if lab_out is not None:
                        lab_out.write(orjson.dumps(
                            {"event_id": ev["event_id"], "label": label}, option=nl))
            n += len(batch)
            bar.update(n)
    finally:
        if ev_out is not sys.stdout.buffer:
            ev_out.close()
        else:
            ev_out.flush()
        if lab_out is not None:
            lab_out.close()
        bar.close()
    return {"events": n, "malicious": m, "actors": len(actors),
            "insiders": sorted(set().union(*seen.values())), "scenarios": _scenario_actors(seen)}


FLUSH_EVERY = 5_000  # bound in-flight futures; linger_ms does the real batching


async def produce(cfg: SimConfig, broker: str | Settings, topic: str, *,
                  context_topic: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Send every event to Kafka (key = actor, value = orjson bytes); labels stay local.

    With ``context_topic``, the company's context entries go there first (key
    ``kind:id``, SPEC §1). ``broker``: an address (plaintext) or settings, whose broker and
    connection security (SPEC §3) are used. Returns ``{"events", "malicious", "actors", "insiders",
    "scenarios", "context", "labels": {event_id: label}}``.
    """
    from aiokafka import AIOKafkaProducer  # lazy: file-only use needs no Kafka client

    kafka = (client_kwargs(broker) if isinstance(broker, Settings)
             else {"bootstrap_servers": bootstrap_servers(broker)})
    producer = AIOKafkaProducer(**kafka,
                                client_id="snoopwatch-simulate", linger_ms=20,
                                max_batch_size=256 * 1024)
    n = 0
    actors: set[str] = set()
    labels: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    bar = Progress("simulate", enabled=progress)
    pending: list[Any] = []
    try:
        await producer.start()  # inside try: a failed bootstrap must still close it
        context = context_entries(cfg) if context_topic else []
        for entry in context:
            pending.append(await producer.send(
                context_topic, value=orjson.dumps(entry),
                key=f"{entry['kind']}:{entry['id']}".encode()))
        await _drain(producer, pending)  # on its topic before the first event is sent
        for _day, batch in _day_batches(cfg):
            for ev, label in batch:
                actor = ev["actor"]
                actors.add(actor)
                if label is not None:
                    labels[ev["event_id"]] = label
                    seen.setdefault(label, set()).add(actor)
                # Event time stays in the payload only: stamping far-future or past
                # times on Kafka records can trip broker timestamp limits/retention.
                pending.append(await producer.send(topic, value=orjson.dumps(ev),
                                                   key=actor.encode()))
                n += 1
                if len(pending) >= FLUSH_EVERY:
                    await _drain(producer, pending)
                    bar.update(n)
            bar.update(n)
        await _drain(producer, pending)
    finally:
        await producer.stop()
        bar.close()
    return {"events": n, "malicious": len(labels), "actors": len(actors),
            "insiders": sorted(set().union(*seen.values())),
            "scenarios": _scenario_actors(seen), "context": len(context), "labels": labels}


async def _drain(producer: Any, pending: list[Any]) -> None:
    """Wait for everything in flight and surface the first delivery error."""
    await producer.flush()
    for fut in pending:
        await fut  # raises the delivery error, if any
    pending.clear()
