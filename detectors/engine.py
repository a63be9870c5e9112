"""The detection core: validated events in, risk and alerts out.

Both drivers call :meth:`Engine.process` once per valid event, in order per
actor. Per-actor state (:class:`ActorState`) is keyed by actor; peer-group
state (:class:`PeerGroup`, by role) is learned from the actors a driver holds,
which in a scaled-out worker is a random sample of each group. Time is event
time only; nothing reads the wall clock, so a replay of the same file gives the
same output.

The engine is an orchestrator: each signal is one module under :mod:`detectors.signals`
behind one contract (:class:`detectors.signals.Signal`), run in registry order through
explicit phases per event: roll the hour/day, count, score, learn, then risk and alert
(see :mod:`detectors.signals.base`). The signals (detectors in :mod:`detectors.models`):

- ``volume`` / ``egress``: the running hour's records, distinct customers,
  egress records and bytes against the actor's own normal hour (its peers'
  while it is new);
- ``first_seen_*``: an action, client, network or set of sensitive fields the
  actor rarely or never used — discounted when its peers use it commonly;
- ``unjustified``: customer reads without a ticket and with no ticketed
  contact with that customer in the last day (none at hours the actor never works),
  beyond the actor's own habit, and their daily count rising above its own rate;
- ``off_hours``: customer access at hours the actor (or its peers) never work;
- ``vip``: unjustified reads of customers on the VIP watchlist;
- ``departing``: staff on the watchlist downloading far more often than on
  their own days (and a lower tolerance for egress volume), never an alert for
  being on the list.

Short-term levels decay with a half-life of an hour; specific weak signals
(unjustified and VIP reads, off-hours egress) also feed a long-term
accumulator with a half-life of days, so low-and-slow behaviour adds up.

>>> from detectors.events import parse_event
>>> eng = Engine(Settings(min_history_hours=2, min_history_events=5))
>>> def ev(i, hour, customer, ticket="T1"):
...     return parse_event({"event_id": f"e{i}", "time": 1_700_000_000_000 + hour * 3_600_000 + i,
...                         "actor": "ann", "role": "support_agent", "action": "read",
...                         "resource_type": "customer_profile", "customer_id": customer,
...                         "ticket": ticket, "client": "crm", "source_ip": "10.0.0.5"})
>>> i = 0
>>> for hour in range(6):                    # six ordinary hours: 4 ticketed reads each
...     for k in range(4):
...         i += 1
...         assert eng.process(ev(i, hour, f"c{hour}{k}")).alert is None
>>> alerts = []
>>> for k in range(80):                      # then 80 customers, no tickets, in one hour
...     i += 1
...     v = eng.process(ev(i, 7, f"x{k}", ticket=None))
...     if v.alert:
...         alerts.append(v.alert)
>>> {"unjustified", "volume"} <= {r.detector for a in alerts for r in a.reasons}
True
>>> "without a ticket" in alerts[-1].summary
True
"""

from __future__ import annotations

import hashlib
import pickle
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import date
from operator import itemgetter
from typing import Any

from detectors.events import AccessEvent, ContextEntry
from detectors.models import Peaks, Reason, TicketHabit, VolumeBaseline
from detectors.priors import (
    BAR_CAP,
    BUDGET_MIN_DAYS,
    EPISODE_QUIET_DAYS,
    FURTHER_FAMILY_WEIGHT,
    JOB_REPEAT_MAX_GROWTH,
    LEAVING_BEFORE_NOTICE_DAYS,
    LEVEL_CAP,
    LONG_TERM_QUIET_HOURS,
    MAX_EVIDENCE,
    MAX_JOBS,
    NEGLIGIBLE,
    PEER_TICKET_ALPHA,
    SEVERITIES,
    SUMMARY_REASONS,
)
from detectors.settings import Settings
from detectors.signals import REGISTRY, Context, Signal
from detectors.signals.accumulated import LONG_TERM_SCALE, Accumulated
from detectors.signals.base import (
    DAY_MS,
    HOUR_MS,
    LONG_TERM_CAP,
    Profile,
    others_in,
    overrides,
    rfc3339,
    specificity,
)
from detectors.signals.base import restore_slots as _restore_slots
from detectors.signals.first_seen import network_of

# (HOUR_MS, DAY_MS, LONG_TERM_CAP, LONG_TERM_SCALE, rfc3339, specificity and network_of are
# re-exported: callers import them from here; so are the priors that were defined here:
# detectors.priors holds them.)
__all__ = ["BUDGET_MIN_DAYS", "DAY_MS", "FURTHER_FAMILY_WEIGHT", "HOUR_MS", "LONG_TERM_CAP",
           "LONG_TERM_SCALE", "MAX_EVIDENCE", "SEVERITIES", "ActorState", "Alert", "Engine",
           "Frozen", "PeerGroup", "Verdict", "network_of", "rfc3339", "severity_of",
           "specificity"]

LONG_TERM_QUIET_MS = LONG_TERM_QUIET_HOURS * HOUR_MS  # its share of the risk halves per quiet
SEVERITY_RANK = {name: rank for rank, (_, name) in enumerate(reversed(SEVERITIES))}  # low: 0
EPISODE_QUIET_MS = EPISODE_QUIET_DAYS * DAY_MS  # an episode ends this long below half the bar
_ORDINAL_1970 = date(1970, 1, 1).toordinal()  # days from 0001-01-01 (proleptic) to the epoch

# A scheduled change of cross-actor state (:meth:`Engine.schedule`), plain data:
# (event time, actor, sequence number, peer group key or None for engine-wide state,
#  target, method name, args). Applied in canonical order: time, actor, then sequence.
Op = tuple[int, str, int, "str | None", "str | None", str, tuple]
CANONICAL = itemgetter(0, 1, 2)


def signal_names(registry: list[type[Signal]] | None = None) -> tuple[str, ...]:
    """Every level a registered signal raises (its alerts' ``reasons[].detector`` prefix), for
    SNOOPWATCH_DISABLED_SIGNALS."""
    names: list[str] = []
    for cls in REGISTRY if registry is None else registry:
        names.extend(cls.raises or (cls.name,))
    return tuple(names)


SIGNALS = signal_names()  # (as registered at import; Engine reads the registry when made)


def signal_families(registry: list[type[Signal]] | None = None) -> dict[str, str]:
    """Each level's family (:attr:`Signal.family`; by default the level's own name).

    >>> fam = signal_families()
    >>> fam["egress"] == fam["daily_egress"], fam["vip"] == fam["unjustified"]
    (True, False)
    """
    return {level: cls.family or level
            for cls in (REGISTRY if registry is None else registry)
            for level in cls.raises or (cls.name,)}


def severity_of(risk: float) -> str:
    """
    >>> severity_of(62), severity_of(75), severity_of(90), severity_of(99)
    ('low', 'medium', 'high', 'critical')
    """
    return next(name for floor, name in SEVERITIES if risk >= floor)


@dataclass(slots=True)
class Alert:
    """An alert (SPEC §2); ``emitted_at`` is added by :meth:`to_dict`."""

    alert_id: str
    actor: str
    role: str | None
    time_ms: int
    severity: str
    score: float
    summary: str
    reasons: list[Reason]
    event_ids: list[str]
    customers: int
    episode_id: str = ""

    def to_dict(self, emitted_at_ms: int | None = None) -> dict[str, Any]:
        """SPEC §2 JSON; ``emitted_at`` defaults to the event time (deterministic replay)."""
        return {
            "alert_id": self.alert_id,
            "actor": self.actor,
            "role": self.role,
            "time": rfc3339(self.time_ms),
            "emitted_at": rfc3339(self.time_ms if emitted_at_ms is None else emitted_at_ms),
            "severity": self.severity,
            "score": self.score,
            "summary": self.summary,
            "reasons": [r.to_dict() for r in self.reasons],
            "event_ids": self.event_ids,
            "customers": self.customers,
            "episode_id": self.episode_id,
        }


@dataclass(slots=True)
class Verdict:
    """What one event did to its actor: risk after it (0-100), and an alert if one is due."""

    score: float
    alert: Alert | None = None
    late: bool = False  # of an hour the actor had left (input out of time order for it)


@dataclass(slots=True)
class PeerGroup:
    """What is normal for a role, pooled over the actors of that role."""

    # signal name -> that signal's state for the group (Signal.new_peer), registry order
    signals: Profile = field(default_factory=Profile)
    # Who of the group ran unusually hot (volume) or exported off hours, in the last day:
    # the group's busy day or night, shared by the volume-type and off-hours signals.
    hot: OrderedDict = field(default_factory=OrderedDict)  # actor -> last time it ran hot
    night: OrderedDict = field(default_factory=OrderedDict)  # actor -> last off-hours egress
    # Its actors' hourly peak risk (a histogram): the group's adaptive alert bar.
    risk: Any = None
    risk_hours: int = 0

    def __setstate__(self, state: Any) -> None:
        _restore_slots(self, _migrate_peer(state))

    # Ops (Engine.schedule) on the group itself:
    def learn_risk(self, peak: float) -> None:
        """One finished actor-hour's peak risk, into the group's adaptive bar."""
        self.risk.add(peak)
        self.risk_hours += 1

    def mark(self, which: str, actor: str, t: int) -> None:
        """``actor`` ran hot (``which``: ``"hot"``) or exported off hours (``"night"``) at
        ``t``."""
        others_in(getattr(self, which), actor, t)


@dataclass(slots=True)
class ActorState:
    """Everything snoopwatch remembers about one actor: the engine's running hour and day,
    its risk levels and alert episode, and each signal's own state (``signals``)."""

    actor: str
    peer: str
    # signal name -> that signal's state for the actor (Signal.new_actor), registry order
    signals: Profile = field(default_factory=Profile)
    role: str | None = None
    hour: int = -1
    hour_counts: dict[str, int] = field(default_factory=dict)  # the running hour's counts
    day: int = -1
    day_counts: dict[str, int] = field(default_factory=dict)  # the running day's egress
    hour_customers: set[str] = field(default_factory=set)
    long_term: float = 0.0  # slow-decaying sum of specific weak signals ("accumulated")
    levels: dict[str, float] = field(default_factory=dict)  # detector -> decaying score
    # detector -> (its score then, the reasons behind its current level)
    reasons: dict[str, tuple[float, list[Reason]]] = field(default_factory=dict)
    last_ms: int = 0
    hour_peak: float = 0.0  # highest risk in the running hour
    day_peak: float = 0.0  # highest risk in the running day (for the false-alert budget)
    evidence: deque | None = None  # (event_id, customer) behind the risk; made on first use
    open_severity: str | None = None  # severity of the open alert episode, if any
    last_signal_ms: int = 0  # the actor's last event that raised a signal
    episode_high_ms: int = 0  # the open episode's last event with risk >= half the bar
    episode_id: str = ""  # the open episode's id: every alert of one episode carries it
    # resource -> (largest records exported, runs, bits of the hours of the day it ran at)
    jobs: dict | None = None  # (made on the first egress)

    def __setstate__(self, state: Any) -> None:
        _restore_slots(self, _migrate_actor(state))


# A state written before the signals had their own modules (every signal's state a field of
# ActorState / PeerGroup) is moved into ``signals`` on restore: field -> (signal, attribute).
_OLD_ACTOR_FIELDS = {"volume": "volume", "egress": "egress", "daily": "daily_egress",
                     "first_seen": "first_seen", "hours": "off_hours"}
_OLD_UNJUSTIFIED = ("tickets", "foreign", "unjustified_days", "ticketed", "pending",
                    "unjustified", "customer_reads", "unjustified_customers", "hour_long_gain")
_OLD_PEER_FIELDS = {"volume": "volume", "egress": "egress", "daily": "daily_egress",
                    "first_seen": "first_seen", "hours": "off_hours", "tickets": "unjustified",
                    "model": "multivariate"}


def _values(state: Any) -> dict[str, Any]:
    return dict(state[1] if isinstance(state, tuple) else state)


def _as_profile(values: dict[str, Any]) -> dict[str, Any]:
    """A record written before :class:`Profile` (or moved from its old fields above) holds a
    plain dict in ``signals``: the engine calls Profile's methods on it."""
    signals = values.get("signals")
    if signals is not None and not isinstance(signals, Profile):
        values["signals"] = Profile(signals)
    return values


def _migrate_actor(state: Any) -> dict[str, Any]:
    values = _values(state)
    if "signals" in values or "volume" not in values:
        return _as_profile(values)
    from detectors.signals.departing import DepartingState
    from detectors.signals.unjustified import UnjustifiedState

    signals = {new: values.pop(old) for old, new in _OLD_ACTOR_FIELDS.items() if old in values}
    dep = DepartingState()
    for name in ("downloads", "leaving_streak"):
        if name in values:
            setattr(dep, name, values.pop(name))
    uj = UnjustifiedState(values.pop("tickets"))
    for name in _OLD_UNJUSTIFIED[1:]:
        if name in values:
            setattr(uj, name, values.pop(name))
    signals["departing"], signals["unjustified"] = dep, uj
    values["signals"] = {name: signals[name] for name in _REGISTRY_ORDER if name in signals}
    return _as_profile(values)


def _migrate_peer(state: Any) -> dict[str, Any]:
    values = _values(state)
    if not isinstance(values.get("risk"), Peaks):
        # (a group from before 2026-12-07 kept a running P-square estimate, which a hot first
        # day could leave ten points high; its bar relearns from the hours to come)
        values["risk"], values["risk_hours"] = Peaks(), 0
    if "signals" in values or "volume" not in values:
        signals = values.get("signals")
        if signals is not None and isinstance(signals.get("new_origin"), dict):
            # (a group from before shared hosts: its networks, as the signal's state)
            from detectors.signals.new_origin import PeerOrigins
            signals["new_origin"] = PeerOrigins(signals["new_origin"], since=0)
        if signals is not None and type(signals.get("egress")) is VolumeBaseline:
            # (a group from before its egress hours' sizes were kept: they start now)
            from detectors.signals.volume import PeerEgress
            signals["egress"] = PeerEgress.of(signals["egress"])
    else:
        signals = {new: values.pop(old) for old, new in _OLD_PEER_FIELDS.items() if old in values}
        values["signals"] = {name: signals[name] for name in _REGISTRY_ORDER if name in signals}
    habit = (values.get("signals") or {}).get("unjustified")
    if isinstance(habit, TicketHabit) and habit.rate.alpha > PEER_TICKET_ALPHA:
        # (a group's ticket habit from before 2026-12-07 followed its last ~50 reads: it keeps
        # its share, and follows the long memory from now on)
        habit.rate.alpha = PEER_TICKET_ALPHA
    return _as_profile(values)


_REGISTRY_ORDER = tuple(cls.name for cls in REGISTRY)


class Frozen:
    """A quiet actor's :class:`ActorState`, pickled and compressed until its next event.

    Lossless (a pickle round trip), so freezing never changes a result; it costs ~0.2 ms per
    freeze and thaw and saves ~75-85% of the actor's memory. ``last_ms`` stays readable so
    expiry does not need to thaw.
    """

    __slots__ = ("blob", "last_ms")

    def __init__(self, st: ActorState) -> None:
        self.last_ms = st.last_ms
        self.blob = zlib.compress(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL), 1)

    def thaw(self) -> ActorState:
        return pickle.loads(zlib.decompress(self.blob))


def _repeat_job(st: ActorState, ev: AccessEvent) -> tuple[bool, bool]:
    """Is this egress a job the actor ran before (the same resource, at most
    ``JOB_REPEAT_MAX_GROWTH`` times its largest size then)? A weekly scheduled export is its
    job's normal, however big; its first run is judged as any egress. And is it that job's
    routine: run again within an hour of an hour of the day it ran at before (a scheduler's
    time, which ``off_hours`` does not judge as the person's)? Remembers the size and hour.

    At most ``MAX_JOBS`` resources are remembered, the oldest forgotten first, but one run
    only once before one run again: an analyst's week of one-off downloads (60 on held-out
    130) must not push out the weekly job they come between."""
    resource = ev.resource_id
    if resource is None:
        return False, False
    jobs = st.jobs
    if jobs is None:
        jobs = st.jobs = {}
    of_day = ev.time_ms // HOUR_MS % 24
    hour = 1 << of_day
    before = jobs.pop(resource, None)  # (re-inserted last: the oldest job is forgotten first)
    if before is None:
        jobs[resource] = (ev.records, 1, hour)
    else:
        if type(before) is int:  # (a record from before runs were counted)
            before = (before, 1)
        hours = before[2] if len(before) > 2 else 0  # (a record from before hours were kept)
        jobs[resource] = (max(before[0], ev.records), before[1] + 1, hours | hour)
    if len(jobs) > MAX_JOBS:
        oldest = next(iter(jobs))
        del jobs[next((r for r, v in jobs.items() if type(v) is int or v[1] == 1), oldest)]
    if before is None or ev.records > JOB_REPEAT_MAX_GROWTH * before[0]:
        return False, False
    near = hour | 1 << (of_day + 1) % 24 | 1 << (of_day - 1) % 24
    return True, bool(hours & near)


class Engine:
    """Per-actor and per-peer-group detectors, risk and alerting, for one shard of actors."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # Every tracked actor: its state, or, while it is idle, the state frozen.
        self.actors: dict[str, ActorState | Frozen] = {}
        self._hot: OrderedDict[str, None] = OrderedDict()  # actors by last use, oldest first
        self.peers: dict[str, PeerGroup] = {}
        self.vip_customers: set[str] = set()
        self.departing: dict[str, ContextEntry] = {}
        # One instance of each registered signal, in registry order (it holds any
        # engine-wide state of its own, such as unjustified's queue map).
        self.signals: list[Signal] = [cls(self.settings) for cls in REGISTRY]
        known = signal_names(list(REGISTRY))
        for what, names in (("DISABLED", self.settings.disabled),
                            ("OPTIONAL", self.settings.optional)):
            unknown = set(names) - set(known)
            if unknown:
                raise ValueError(f"SNOOPWATCH_{what}_SIGNALS: unknown signal(s) "
                                 f"{', '.join(sorted(unknown))}; known: {', '.join(known)}")
        # (An optional signal runs and learns, but raises nothing unless named.)
        optional_off = signal_names([cls for cls in REGISTRY if cls.optional])
        self._disabled = frozenset(self.settings.disabled) | (
            frozenset(optional_off) - frozenset(self.settings.optional))
        self._family = signal_families(list(REGISTRY))
        by_name = {sig.name: sig for sig in self.signals}
        self._unjustified = by_name.get("unjustified")
        acc = by_name.get("accumulated")
        self._accumulated = acc if isinstance(acc, Accumulated) else Accumulated(self.settings)
        # Each phase calls only the signals taking part in it (bound methods, looked up once).
        self._end_hour = [sig.end_hour for sig in self.signals if overrides(sig, "end_hour")]
        self._end_day = [sig.end_day for sig in self.signals if overrides(sig, "end_day")]
        self._scorers = [sig.score_one for sig in self.signals if overrides(sig, "score_one")]
        self._learners = [sig.learn_one for sig in self.signals if overrides(sig, "learn_one")]
        self._actor_signals = [sig for sig in self.signals if overrides(sig, "new_actor")]
        self._peer_signals = [sig for sig in self.signals if overrides(sig, "new_peer")]
        # Every finished actor-day's peak risk: what the false-alert budget's bar is read from.
        self.day_peaks = Peaks()
        self._budget_bar: tuple[int, float] = (-1, 0.0)  # (day it was read, the bar)
        # The schedule of cross-actor state (peer groups, the queue map, the day peaks):
        # signals never change it while scoring; they schedule ops (Context.defer), which
        # wait here until the event-time clock (the highest event hour seen) enters a new
        # hour, and are then applied in canonical order (advance). So what an event of hour
        # h reads is what the events before h taught, however the actors are sharded.
        self.ops: list[Op] = []
        self.op_seq = 0  # (orders one actor's ops of one event time)
        self.clock_hour = -1
        # The latest event time that may move the clock: a driver with a wall clock (the
        # worker) sets it, so that one event stamped in 2199 (valid input) does not hold
        # every op until then; None (replay): the input's times are trusted.
        self.horizon_ms: int | None = None
        # Driven (the worker's peer-ops barrier, stream/peerops.py): the clock moves only by
        # the driver's advance(), with every partition's ops; process() never moves it.
        self.driven = False
        self._targets: dict[str, Signal] = by_name  # engine-wide op targets: the signals

    # The customer -> teams queue map is the unjustified signal's; checkpoints read it here.
    @property
    def customer_teams(self) -> dict[str, int]:
        return self._unjustified.queues.customer_teams if self._unjustified else {}

    @property
    def teams(self) -> dict[str, int]:
        return self._unjustified.queues.teams if self._unjustified else {}

    @property
    def team_links(self) -> dict[int, dict[int, int]]:
        return self._unjustified.queues.team_links if self._unjustified else {}

    def _queue(self, team: str | None) -> int:
        return self._unjustified.queues.queue(team) if self._unjustified else 0

    @property
    def tracked_actors(self) -> int:
        return len(self.actors)

    # Engine-wide state (stream/state.py checkpoints it in the same epoch as the actors').
    def shared_state(self) -> dict[str, Any]:
        """What spans actors: peer groups, the customer -> serving-teams map and the
        actor-day peaks of the false-alert budget (live objects: pickle them before the next
        event)."""
        return {"peers": self.peers, "customer_teams": self.customer_teams,
                "teams": self.teams, "team_links": self.team_links,
                "day_peaks": self.day_peaks, "budget_bar": self._budget_bar,
                "ops": self.ops, "op_seq": self.op_seq, "clock_hour": self.clock_hour}

    def load_shared(self, obj: dict[str, Any]) -> None:
        """Replace the engine-wide state with a :meth:`shared_state` of a checkpoint."""
        self.peers = dict(obj["peers"])
        if self._unjustified is not None:
            queues = self._unjustified.queues
            queues.customer_teams = dict(obj["customer_teams"])
            queues.teams = dict(obj["teams"])
            queues.team_links = {k: dict(v) for k, v in obj.get("team_links", {}).items()}
            queues.queues = {}  # derived from team_links
        if "day_peaks" in obj:  # (a checkpoint written before the false-alert budget: none)
            self.day_peaks = obj["day_peaks"]
            # The day's bar as it was read (the peaks may have grown since): exact recovery.
            self._budget_bar = tuple(obj.get("budget_bar", (-1, 0.0)))
        # The ops not yet applied and the clock (none in a checkpoint from before the
        # schedule: it starts at the next event).
        self.ops = list(obj.get("ops", ()))
        self.op_seq = obj.get("op_seq", 0)
        self.clock_hour = obj.get("clock_hour", -1)

    # --- the schedule of cross-actor state ---------------------------------------------

    def schedule(self, t: int, actor: str, key: str | None, target: str | None, method: str,
                 args: tuple) -> None:
        """Record an op: ``method(*args)`` on peer group ``key``'s state of signal ``target``
        (``target`` None: the :class:`PeerGroup` itself), or with ``key`` None on engine-wide
        state (signal ``target``'s instance, or the engine's attribute ``target``); applied
        by :meth:`advance`. ``args`` must not be changed afterwards (pass copies)."""
        self.op_seq += 1
        self.ops.append((t, actor, self.op_seq, key, target, method, args))

    def _op_method(self, key: str | None, target: str | None, method: str) -> Any:
        """The bound method an op calls (see :meth:`schedule`)."""
        if key is None:
            obj: Any = self._targets.get(target) or getattr(self, target)  # type: ignore[arg-type]
        else:
            peer = self._peer(key)
            obj = peer if target is None else peer.signals[target]
        for part in method.split("."):  # (a dotted method: an attribute's, "queues.served")
            obj = getattr(obj, part)
        return obj

    def take_ops(self) -> list[Op]:
        """The pending ops, handed over (a sharded driver merges every shard's)."""
        ops, self.ops = self.ops, []
        return ops

    def advance(self, hour: int, ops: list[Op] | None = None) -> None:
        """Enter event-time hour ``hour``: apply ``ops`` (by default this engine's pending
        ones), which must be in canonical order (:data:`CANONICAL`), and read the day's
        false-alert bar on a new day."""
        if ops is None:
            ops = self.take_ops()
            ops.sort(key=CANONICAL)
        # (~4 ops per event: each (group, target, method) is looked up once per batch; the
        # batch's ops replace no group or state object, so the bound methods stay valid)
        bound: dict[tuple, Any] = {}
        for _, _, _, key, target, method, args in ops:
            fn = bound.get((key, target, method))
            if fn is None:
                fn = bound[key, target, method] = self._op_method(key, target, method)
            fn(*args)
        if hour > self.clock_hour:
            self.clock_hour = hour
            self._budget(hour * HOUR_MS)  # (the day's bar, if a new day: as it starts)


    def apply_context(self, entry: ContextEntry) -> None:
        """Record (or remove) a watchlist fact."""
        if entry.kind == "vip_customer":
            if entry.removed:
                self.vip_customers.discard(entry.id)
            else:
                self.vip_customers.add(entry.id)
        elif entry.removed:
            self.departing.pop(entry.id, None)
        else:
            self.departing[entry.id] = entry

    def new_actor(self, actor: str, peer: str) -> ActorState:
        """A fresh state for ``actor`` in peer group ``peer`` (not yet tracked)."""
        return ActorState(actor=actor, peer=peer, signals=Profile.fresh(
            self._actor_signals, lambda sig: sig.new_actor()))

    def leaving(self, actor: str, t: int) -> ContextEntry | None:
        """The actor's watchlist entry while it is leaving (from two weeks before notice)."""
        entry = self.departing.get(actor)
        if entry is None:
            return None
        before = LEAVING_BEFORE_NOTICE_DAYS * DAY_MS
        if entry.notice_ms is not None and t < entry.notice_ms - before:
            return None
        if entry.last_day is not None:
            end = date.fromisoformat(entry.last_day)
            # Leaving until the end of the day after last_day (epoch day d + 2 starts after it).
            if t >= (end.toordinal() - _ORDINAL_1970 + 2) * DAY_MS:
                return None
        return entry

    def state_of(self, actor: str) -> ActorState | None:
        """The actor's state (thawed if it was frozen), or None if it is not tracked."""
        st = self.actors.get(actor)
        if isinstance(st, Frozen):
            st = self.actors[actor] = st.thaw()
        return st

    def _keep_warm(self, actor: str) -> None:
        """Mark ``actor`` as just used; freeze the least recently used beyond ``hot_actors``."""
        cap = self.settings.hot_actors
        if not cap:
            return  # never frozen: no need to track recency
        hot = self._hot
        hot[actor] = None
        hot.move_to_end(actor)
        while len(hot) > cap:
            oldest, _ = hot.popitem(last=False)
            st = self.actors.get(oldest)
            if isinstance(st, ActorState):
                self.actors[oldest] = Frozen(st)

    def _state(self, ev: AccessEvent) -> ActorState:
        st = self.state_of(ev.actor)
        self._keep_warm(ev.actor)
        if st is None:
            st = self.new_actor(ev.actor, ev.role or ev.team or "unknown")
            self.actors[ev.actor] = st
        elif len(st.signals) < len(self._actor_signals):  # (restored from before a signal)
            st.signals.complete(self._actor_signals, lambda sig: sig.new_actor())
        if ev.role and st.role is not None and ev.role != st.role:
            # A role change: the old normal no longer applies. Judge the actor against
            # its new peers until it has a history in the new role.
            st.peer = ev.role
            for sig in self._actor_signals:
                st.signals[sig.name] = sig.new_role(st.signals[sig.name])
            st.long_term = 0.0  # it was measured against the old role's habits
        if ev.role:
            st.role = ev.role
        return st

    def _peer(self, key: str) -> PeerGroup:
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = PeerGroup(
                signals=Profile.fresh(self._peer_signals, lambda sig: sig.new_peer(key)),
                risk=Peaks())
        elif len(peer.signals) < len(self._peer_signals):
            peer.signals.complete(self._peer_signals, lambda sig: sig.new_peer(key))
        return peer

    def process(self, ev: AccessEvent) -> Verdict:
        s = self.settings
        t = ev.time_ms
        if not self.driven:  # (driven, the driver's barrier moves the clock and takes the ops)
            if t // HOUR_MS > self.clock_hour and (self.horizon_ms is None
                                                   or t <= self.horizon_ms):
                self.advance(t // HOUR_MS)  # (what the events before this hour taught)
            elif len(self.ops) >= s.max_pending_ops:
                self.advance(self.clock_hour)  # (the clock is stuck: Settings.max_pending_ops)
        st = self._state(ev)
        peer = self._peer(st.peer)
        ctx = Context(self, st, peer, t)
        # --- 1. roll: decay the levels, age the episode, end the hour / day --------------
        ctx.decay = self._decay(st, t)
        if st.open_severity is not None:
            self._age_episode(st, peer, t)
        self._roll_hour(ctx, t)
        ctx.contributed = False  # (a level raised at the hour's end is not this event's)

        # --- 2. count: the running hour's and day's counts, the context -----------------
        # An event of an hour already rolled (out of order: input not keyed by actor, or a
        # backlog drained unevenly) is judged on its own, but not counted into the running
        # hour or day: a pile of late events is not a burst.
        late = ctx.late = t // HOUR_MS < st.hour
        hc = ctx.counts = {} if late else st.hour_counts
        ctx.ev = ev
        if ev.outcome != "success":
            hc["denied"] = hc.get("denied", 0) + 1
        if not ev.is_egress:  # egress volume has a signal of its own
            hc["records"] = hc.get("records", 0) + ev.records
        customer = ctx.customer = ev.customer_id
        ctx.network = network_of(ev.source_ip)  # (first_seen and new_origin both use it)
        fresh = ctx.fresh = customer is not None and customer not in st.hour_customers
        if fresh and not late and len(st.hour_customers) < s.max_tracked_customers:
            st.hour_customers.add(customer)
        if not late:
            hc["customers"] = len(st.hour_customers)
            if ev.is_egress:
                records, nbytes, dc = ev.records, ev.bytes or 0, st.day_counts
                for counts in (hc, dc):
                    counts["egress"] = counts.get("egress", 0) + records
                    counts["egress_bytes"] = counts.get("egress_bytes", 0) + nbytes
                repeat, ctx.routine = _repeat_job(st, ev)
                if repeat:
                    # A job run again: part of the normal the counts teach, but left out
                    # when the egress signals judge them (signals.volume.new_egress).
                    for counts in (hc, dc):
                        counts["egress_repeat"] = counts.get("egress_repeat", 0) + records
                        counts["egress_repeat_bytes"] = (counts.get("egress_repeat_bytes", 0)
                                                         + nbytes)
                # Departing staff: most leave quietly, so the list only lowers the tolerance.
                ctx.leaving = self.leaving(ev.actor, t)

        # --- 3. score, 4. learn: every signal, in registry order -------------------------
        for score_one in self._scorers:
            score_one(ctx)
        for learn_one in self._learners:
            learn_one(ctx)

        # --- 5. risk and alert -------------------------------------------------------------
        if ctx.contributed:
            st.last_signal_ms = t
            if st.evidence is None:
                st.evidence = deque(maxlen=MAX_EVIDENCE)
            st.evidence.append((ev.event_id, customer))
        risk = self._risk(st)
        st.hour_peak = max(st.hour_peak, risk)
        st.day_peak = max(st.day_peak, risk)
        return Verdict(score=risk, alert=self._maybe_alert(st, peer, ev, risk), late=ctx.late)

    # --- bookkeeping ---------------------------------------------------------------

    def _decay(self, st: ActorState, now_ms: int) -> float:
        """Decay every level by the event time elapsed since the actor's last event."""
        elapsed = max(0, now_ms - st.last_ms) / 1000 if st.last_ms else 0.0
        st.last_ms = max(st.last_ms, now_ms)
        s = self.settings
        factor = 0.5 ** (elapsed / s.decay_half_life_s)
        long_factor = 0.5 ** (elapsed / s.long_half_life_s)
        if factor < 1.0:
            levels = st.levels
            for name in list(levels):
                level = levels[name] * factor
                if level > NEGLIGIBLE:
                    levels[name] = level
                else:  # faded below what counts anywhere: forget it (and its reasons)
                    del levels[name]
                    st.reasons.pop(name, None)
            st.long_term *= long_factor
        return factor

    def _roll_hour(self, ctx: Context, now_ms: int) -> None:
        st = ctx.st
        hour = now_ms // HOUR_MS
        if hour <= st.hour:
            return  # same hour, or a late event: it counts toward the running hour
        counts = st.hour_counts if st.hour >= 0 else {}
        for end_hour in self._end_hour:
            end_hour(ctx, counts)
        if counts:
            ctx.defer(None, "learn_risk", st.hour_peak)
        day = now_ms // DAY_MS
        if day > st.day:
            if st.day >= 0:
                for end_day in self._end_day:
                    end_day(ctx)
                ctx.defer_shared("day_peaks", "add", st.day_peak)
            st.day, st.day_counts, st.day_peak = day, {}, 0.0
        st.hour = hour
        st.hour_peak = 0.0
        st.hour_counts = {}
        st.hour_customers = set()

    def _risk(self, st: ActorState, fade: bool = True) -> float:
        """Each family's strongest level, strongest family first, each further one counting
        :data:`FURTHER_FAMILY_WEIGHT` as much as the last.

        Levels of one family measure one act (an hour's and a day's egress), so only the
        strongest counts; different kinds of evidence add up. One strong signal or two
        moderate ones make an alert; a pile of weak ones (a new hire's first days, a new
        tool) does not.
        """
        # What accumulated over days sharpens the risk while the actor keeps raising
        # signals; between them (the quiet days after an episode) it fades within hours.
        long_score = (0.0 if "accumulated" in self._disabled
                      else self._accumulated.level(st))
        if not st.levels and long_score <= NEGLIGIBLE:
            return 0.0  # most actors, most of the time
        if fade:
            long_score *= 0.5 ** (max(0, st.last_ms - st.last_signal_ms) / LONG_TERM_QUIET_MS)
        strongest: dict[str, float] = {"accumulated": long_score}
        family = self._family
        for name, level in st.levels.items():
            fam = family.get(name, name)
            if level > strongest.get(fam, 0.0):
                strongest[fam] = level
        keep, weight = 1.0, 1.0
        for level in sorted(strongest.values(), reverse=True):
            if level <= NEGLIGIBLE:
                break
            keep *= 1.0 - weight * min(level, LEVEL_CAP)
            weight *= FURTHER_FAMILY_WEIGHT
        return round(100.0 * (1.0 - keep), 1)

    def threshold(self, peer: PeerGroup, now_ms: int = 0) -> float:
        """The alert bar: the configured floor, raised where a whole peer group runs hot and
        to what the false-alert budget allows ordinary actor-days."""
        floor = self.settings.alert_threshold
        raised = self._budget(now_ms)
        if peer.risk_hours >= self.settings.adaptive_min_hours:
            raised = max(raised, peer.risk.risk_at(self.settings.adaptive_quantile)
                         + self.settings.adaptive_margin)
        # The raise stops at BAR_CAP (critical risk always alerts); a bar configured above
        # that is kept as configured.
        return max(floor, min(raised, BAR_CAP))

    def _budget(self, now_ms: int) -> float:
        """The false-alert budget's bar, read once a day from the actor-days before it (so
        every event of a day meets the same bar), once there are enough of them. Read as the
        day starts on the schedule (:meth:`advance`); a late event meets the current day's."""
        budget = self.settings.false_alert_budget
        if not budget:
            return 0.0
        day = now_ms // DAY_MS
        if day > self._budget_bar[0]:
            peaks = self.day_peaks
            self._budget_bar = (day, peaks.bar(budget) if peaks.n >= BUDGET_MIN_DAYS else 0.0)
        return self._budget_bar[1]

    def _age_episode(self, st: ActorState, peer: PeerGroup, now_ms: int) -> None:
        """End the open alert episode once a whole day has passed without its risk at half
        the bar, judged as the risk stands before this event adds to it.

        A quiet spell fades the risk within hours, but the same behaviour picked up again
        hours later (the evening's reads, the next export) is the same episode; and the
        episode lasts while what accumulated over days does."""
        if self._risk(st, fade=False) >= self.threshold(peer, now_ms) * self.settings.close_ratio:
            st.episode_high_ms = now_ms
        elif now_ms - st.episode_high_ms >= EPISODE_QUIET_MS:
            st.open_severity = None

    def _maybe_alert(self, st: ActorState, peer: PeerGroup, ev: AccessEvent, risk: float
                     ) -> Alert | None:
        s = self.settings
        bar = self.threshold(peer, ev.time_ms)
        if st.open_severity is not None and risk >= bar * s.close_ratio:
            st.episode_high_ms = ev.time_ms  # (see _age_episode)
        if risk < bar:
            return None
        severity = severity_of(risk)
        opened = st.open_severity
        if opened is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[opened]:
            return None  # one alert per episode, raised again only when it escalates
        if opened is None:  # a new episode, named by its actor and first alert's event
            st.episode_id = hashlib.sha256(
                f"{ev.actor}\x00{ev.event_id}\x00episode".encode()).hexdigest()[:32]
        st.open_severity = severity
        st.episode_high_ms = ev.time_ms
        return self._alert(st, ev, risk, severity)

    def _alert(self, st: ActorState, ev: AccessEvent, risk: float, severity: str) -> Alert:
        reasons = self._current_reasons(st)
        evidence = st.evidence or ()
        ids = [ev.event_id] + [eid for eid, _ in reversed(evidence) if eid != ev.event_id]
        customers = {c for _, c in evidence if c is not None} | st.hour_customers
        who = f"{ev.actor} ({st.role})" if st.role else ev.actor
        summary = f"{who} " + "; ".join(r.description for r in reasons[:SUMMARY_REASONS]) + "."
        volume = st.signals.get("volume")
        uj = st.signals.get("unjustified")
        if volume is not None and uj is not None and (
                volume.hours < volume.min_hours or uj.tickets.rate.n < uj.tickets.min_events):
            # Cold start: an analyst should know the actor's own normal was not known yet.
            summary += (f" (Their baseline is young: {volume.hours} active hours of their "
                        "own history, judged against their peers.)")
        digest = hashlib.sha256(f"{ev.actor}\x00{ev.event_id}\x00{severity}".encode()).hexdigest()
        return Alert(alert_id=digest[:32], actor=ev.actor, role=st.role, time_ms=ev.time_ms,
                     severity=severity, score=risk, summary=summary, reasons=reasons,
                     event_ids=ids[:MAX_EVIDENCE], customers=len(customers),
                     episode_id=st.episode_id)

    def _current_reasons(self, st: ActorState) -> list[Reason]:
        """Each contributing detector's reasons, scaled to its decayed level."""
        out = []
        for name, level in st.levels.items():
            peak, reasons = st.reasons.get(name, (0.0, []))
            if level <= NEGLIGIBLE or peak <= 0:
                continue
            out.extend(Reason(r.detector, r.score * level / peak, r.description, r.observed,
                              r.expected) for r in reasons)
        standing = self._accumulated.explain(st)
        if standing is not None:
            out.append(standing)
        return sorted(out, key=lambda r: -r.score)

    def expire_idle(self, now_ms: int) -> list[str]:
        """Forget actors with no event in the last ``actor_ttl_s`` of event time; their names.

        Bounds memory to the actors active within the TTL. A returning actor starts afresh
        and is judged against its peers until it has a history again (never for being new).

        >>> eng = Engine(Settings(actor_ttl_s=3600))
        >>> eng.actors["old"] = eng.new_actor("old", "r")
        >>> eng.actors["old"].last_ms = 1_000
        >>> eng.expire_idle(2_000), eng.expire_idle(3_601_001), eng.tracked_actors
        ([], ['old'], 0)
        """
        ttl_ms = int(self.settings.actor_ttl_s * 1000)
        if ttl_ms <= 0:
            return []
        idle = [a for a, st in self.actors.items() if now_ms - st.last_ms >= ttl_ms]
        for actor in idle:
            del self.actors[actor]
        return idle
