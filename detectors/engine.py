"""The detection core: validated events in, risk and alerts out.

Both drivers call :meth:`Engine.process` once per valid event, in order per
actor. Per-actor state (:class:`ActorState`) is keyed by actor; peer-group
state (:class:`PeerGroup`, by role) is learned from the actors a driver holds,
which in a scaled-out worker is a random sample of each group. Time is event
time only; nothing reads the wall clock, so a replay of the same file gives the
same output.

Signals per event (each a river-style detector in :mod:`detectors.models`):

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
import ipaddress
import math
import pickle
import zlib
from collections import OrderedDict, deque
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, date, datetime
from sys import intern
from typing import Any

from detectors.events import AccessEvent, ContextEntry
from detectors.models import (
    UNITS,
    DailyCount,
    FirstSeen,
    Reason,
    RunningStats,
    TicketHabit,
    TimeOfWeek,
    VolumeBaseline,
    saturate,
)
from detectors.multivariate import StreamingOutlier
from detectors.settings import Settings

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_EVIDENCE = 50
# A ticketed contact with a customer justifies unticketed reads of it for this long.
TICKET_CONTEXT_MS = DAY_MS
# An unticketed read followed this soon by a ticketed one was a forgotten ticket.
LATE_TICKET_MS = HOUR_MS
_TAKEN_BACK = (0.0, 0.0)  # a pending look's (weight, count) once its suspicion is withdrawn
MAX_TICKETED = 64  # recent ticketed customers remembered per actor
# a team shares a queue with the teams holding at least this share (and this many) of the
# customers it shares at all: another region's team meets it only by chance
QUEUE_LINK_SHARE, QUEUE_MIN_LINKS = 0.1, 5
LONG_TERM_QUIET_MS = 6 * HOUR_MS  # its share of the risk halves per quiet 6 h
LONG_TERM_CAP = 6.0  # long-term risk is ~0.9 here, and forgets a burst within a week
# The long-term sum counts above 1.0; this much above it is a long-term score of 0.63.
LONG_TERM_SCALE = 1.75
# Severity bands of the risk score (0-100); an alert opens at the configured threshold.
SEVERITIES = ((95.0, "critical"), (85.0, "high"), (70.0, "medium"), (0.0, "low"))
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
VOLUME_FEATURES = ("records", "customers")
EGRESS_FEATURES = ("egress", "egress_bytes")
# egress by a group that has worked this many hours but (almost) never exported
RARE_MIN_HOURS, RARE_FACTOR = 500, 2000  # from 100k records an hour
# A volume score above this puts the actor among its group's hot ones for a day (the
# group's busy day: see _volume_signal).
HOT_SCORE = 0.2
EGRESS_MIN = {"egress": 50, "egress_bytes": 20_000_000}
DAILY_EGRESS_MIN = {"egress": 20, "egress_bytes": 5_000_000}
EPISODE_QUIET_MS = DAY_MS  # an alert episode ends after this long below half the bar
LONG_TERM_GAIN_PER_HOUR = 1.0  # bursts are the short-term levels' job
# What the multivariate model sees of each finished actor-hour.
HOUR_FEATURES = ("records", "customers", "egress", "egress_bytes", "unjustified", "novel",
                 "offhours", "denied")
MULTIVARIATE_TOLERATED = 3.0  # model units; ~1 is the 90th percentile of normal hours
MULTIVARIATE_WEIGHT = 0.5  # it corroborates; alone it never makes an alert


def specificity(share: float) -> float:
    """How telling an unticketed read is, from the share of the actor's reads with a ticket.

    Only actors who nearly always work under tickets make a missing one meaningful:

    >>> [round(specificity(s), 2) for s in (0.3, 0.6, 0.9, 0.97, 1.0)]
    [0.0, 0.04, 0.64, 0.88, 1.0]
    """
    return max(0.0, (share - 0.5) / 0.5) ** 2


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _busy_day(dl: DailyCount) -> bool:
    """Today's count is over twice the usual rate and beyond its Poisson noise (two sigma):
    two downloads by someone who makes one most days is chance, not a busy day."""
    rate = dl.rate
    return dl.usual.n >= dl.min_days and dl.today > max(2 * rate, rate + 2 * math.sqrt(rate))


def _fmt_count(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.1f}"


def severity_of(risk: float) -> str:
    """
    >>> severity_of(62), severity_of(75), severity_of(90), severity_of(99)
    ('low', 'medium', 'high', 'critical')
    """
    return next(name for floor, name in SEVERITIES if risk >= floor)


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def network_of(ip: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to: staff move within one.

    >>> network_of("10.1.2.3"), network_of("2001:db8:1:2::5")
    ('10.1.2.0/24', '2001:db8:1::/48')
    """
    if ip is None:
        return None
    if "." in ip and ":" not in ip:  # fast path for IPv4, the common case
        return ip[:ip.rfind(".")] + ".0/24"
    return str(ipaddress.ip_network(f"{ip}/48", strict=False))


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
        }


@dataclass(slots=True)
class Verdict:
    """What one event did to its actor: risk after it (0-100), and an alert if one is due."""

    score: float
    alert: Alert | None = None


def _volume(s: Settings, min_hours: int) -> VolumeBaseline:
    return VolumeBaseline(VOLUME_FEATURES, {f: s.volume_min_count for f in VOLUME_FEATURES},
                          min_hours=min_hours)


def _egress(min_hours: int) -> VolumeBaseline:
    return VolumeBaseline(EGRESS_FEATURES, EGRESS_MIN, min_hours=min_hours, name="egress")


def _daily_egress(min_days: int) -> VolumeBaseline:
    return VolumeBaseline(EGRESS_FEATURES, DAILY_EGRESS_MIN, min_hours=min_days,
                          name="daily_egress", period="day")


def _restore_slots(obj: Any, state: Any) -> None:
    """Unpickle a slots dataclass; fields added since the record was written take their
    defaults, so a worker can read the state topic an older version wrote."""
    values = state[1] if isinstance(state, tuple) else state
    for f in fields(obj):
        if f.name in values:
            value = values[f.name]
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            raise pickle.UnpicklingError(f"{type(obj).__name__}: no {f.name} in the record")
        object.__setattr__(obj, f.name, value)


@dataclass(slots=True)
class PeerGroup:
    """What is normal for a role, pooled over the actors of that role."""

    volume: VolumeBaseline
    egress: VolumeBaseline
    daily: VolumeBaseline
    first_seen: FirstSeen
    tickets: TicketHabit
    hours: TimeOfWeek
    hot: OrderedDict = field(default_factory=OrderedDict)  # actor -> last time it ran hot
    night: OrderedDict = field(default_factory=OrderedDict)  # actor -> last off-hours egress
    # Running quantile of its actors' hourly peak risk: the group's adaptive alert bar.
    risk: Any = None
    risk_hours: int = 0
    # The multivariate model of the group's actor-hours (see _hour_model).
    model: StreamingOutlier | None = None

    __setstate__ = _restore_slots

    @classmethod
    def new(cls, s: Settings, name: str = "") -> PeerGroup:
        from river import stats

        return cls(risk=stats.Quantile(s.adaptive_quantile),
                   model=StreamingOutlier(seed=s.seed + zlib.crc32(name.encode())),
                   volume=_volume(s, 4 * s.min_history_hours),
                   egress=_egress(4 * s.min_history_hours),
                   daily=_daily_egress(20),
                   first_seen=FirstSeen(min_events=10 * s.min_history_events, max_values=1024),
                   tickets=TicketHabit(min_events=3 * s.min_history_events),
                   hours=TimeOfWeek(min_events=10 * s.min_history_events))


@dataclass(slots=True)
class ActorState:
    """Everything snoopwatch remembers about one actor."""

    actor: str
    peer: str
    volume: VolumeBaseline
    egress: VolumeBaseline
    daily: VolumeBaseline
    first_seen: FirstSeen
    tickets: TicketHabit
    hours: TimeOfWeek
    role: str | None = None
    # share of its customer accesses that are customers other teams serve
    foreign: RunningStats = field(default_factory=lambda: RunningStats(0.02))
    hour: int = -1
    hour_counts: dict[str, int] = field(default_factory=dict)
    hour_long_gain: float = 0.0  # long-term weight added in the running hour
    day: int = -1
    day_counts: dict[str, int] = field(default_factory=dict)
    # downloads and exports per active day: what a departing actor's last days are judged by
    downloads: DailyCount = field(default_factory=DailyCount)
    leaving_streak: int = 0  # busy download days in a row while leaving
    # unjustified customers per active day: a sustained rise is low-and-slow scraping
    unjustified_days: DailyCount = field(
        default_factory=lambda: DailyCount(floor=0.3, min_days=3))
    hour_customers: set[str] = field(default_factory=set)
    ticketed: dict[str, int] = field(default_factory=dict)  # customer -> last ticketed ms
    # customer -> (last look, long-term weight, unjustified count) of an unticketed look
    pending: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    unjustified: float = 0.0  # decaying count of unjustified customer reads
    customer_reads: float = 0.0  # decaying count of all customer reads
    unjustified_customers: set[str] | None = None  # created on the first one (memory)
    long_term: float = 0.0  # slow-decaying sum of specific weak signals
    levels: dict[str, float] = field(default_factory=dict)  # detector -> decaying score
    # detector -> (its score then, the reasons behind its current level)
    reasons: dict[str, tuple[float, list[Reason]]] = field(default_factory=dict)
    last_ms: int = 0
    hour_peak: float = 0.0  # highest risk in the running hour
    evidence: deque | None = None  # (event_id, customer) behind the risk; made on first use
    open_severity: str | None = None  # severity of the open alert episode, if any
    last_signal_ms: int = 0  # the actor's last event that raised a signal
    episode_high_ms: int = 0  # the open episode's last event with risk >= half the bar

    __setstate__ = _restore_slots


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
        # customer -> bit set of the teams that served it under a ticket (the "queue" map)
        self.customer_teams: dict[str, int] = {}
        self.teams: dict[str, int] = {}
        # team -> {other team: customers both served}: shifts of one region share a queue
        self.team_links: dict[int, dict[int, int]] = {}
        self._queues: dict[int, int] = {}  # team bit -> bits of the teams sharing its queue

    @property
    def tracked_actors(self) -> int:
        return len(self.actors)

    # Engine-wide state (stream/state.py checkpoints it in the same epoch as the actors').
    def shared_state(self) -> dict[str, Any]:
        """What spans actors: peer groups and the customer → serving-teams map (live objects:
        pickle them before the next event)."""
        return {"peers": self.peers, "customer_teams": self.customer_teams,
                "teams": self.teams, "team_links": self.team_links}

    def load_shared(self, obj: dict[str, Any]) -> None:
        """Replace the engine-wide state with a :meth:`shared_state` of a checkpoint."""
        self.peers = dict(obj["peers"])
        self.customer_teams = dict(obj["customer_teams"])
        self.teams = dict(obj["teams"])
        self.team_links = {k: dict(v) for k, v in obj.get("team_links", {}).items()}
        self._queues = {}  # derived from team_links

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

    def _profile(self) -> dict[str, Any]:
        """Fresh per-actor baselines: for a new actor, or one that changed role."""
        s = self.settings
        return {"volume": _volume(s, s.min_history_hours),
                "egress": _egress(s.min_history_hours),
                "daily": _daily_egress(5),
                "first_seen": FirstSeen(min_events=s.min_history_events,
                                        max_values=s.max_profile_values),
                "tickets": TicketHabit(min_events=3 * s.min_history_events),
                "hours": TimeOfWeek(min_events=2 * s.min_history_events)}

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
            st = ActorState(actor=ev.actor, peer=ev.role or ev.team or "unknown",
                            **self._profile())
            self.actors[ev.actor] = st
        elif ev.role and st.role is not None and ev.role != st.role:
            # A role change: the old normal no longer applies. Judge the actor against
            # its new peers until it has a history in the new role.
            st.peer = ev.role
            for name, model in self._profile().items():
                setattr(st, name, model)
            st.long_term = 0.0  # it was measured against the old role's habits
        if ev.role:
            st.role = ev.role
        return st

    def _peer(self, key: str) -> PeerGroup:
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = PeerGroup.new(self.settings, key)
        return peer

    def process(self, ev: AccessEvent) -> Verdict:
        s = self.settings
        st = self._state(ev)
        peer = self._peer(st.peer)
        t = ev.time_ms
        decay = self._decay(st, t)
        if st.open_severity is not None:
            self._age_episode(st, peer, t)
        self._roll_hour(st, peer, t)
        # An event of an hour already rolled (out of order: input not keyed by actor, or a
        # backlog drained unevenly) is judged on its own, but not counted into the running
        # hour or day: a pile of late events is not a burst.
        late = t // HOUR_MS < st.hour

        # --- hourly volume, own normal (peers' while the actor is new) -------------
        hc = {} if late else st.hour_counts
        if ev.outcome != "success":
            _bump(hc, "denied")
        if not ev.is_egress:  # egress volume has a detector of its own
            hc["records"] = hc.get("records", 0) + ev.records
        customer = ev.customer_id
        fresh = customer is not None and customer not in st.hour_customers
        if fresh and not late and len(st.hour_customers) < s.max_tracked_customers:
            st.hour_customers.add(customer)
        contributed = False
        if not late:
            hc["customers"] = len(st.hour_customers)
            contributed = self._volume_signal(st, peer, st.volume, peer.volume, hc, 0.0, t)
        if ev.is_egress and not late:
            hc["egress"] = hc.get("egress", 0) + ev.records
            hc["egress_bytes"] = hc.get("egress_bytes", 0) + (ev.bytes or 0)
            # Departing staff: most leave quietly, so the list only lowers the tolerance.
            leaving = self._departing(ev.actor, t)
            slack = -1.0 if leaving else 0.0
            st.downloads.add()
            if leaving:
                contributed |= self._leaving_downloads(st, leaving)
            contributed |= self._volume_signal(st, peer, st.egress, peer.egress, hc, slack, t)
            dc = st.day_counts
            dc["egress"] = dc.get("egress", 0) + ev.records
            dc["egress_bytes"] = dc.get("egress_bytes", 0) + (ev.bytes or 0)
            contributed |= self._volume_signal(st, peer, st.daily, peer.daily, dc, slack, t)

        # Hours are personal (shifts, time zones): judged only once the actor has its own.
        judged = (customer is not None or ev.is_egress) and st.hours.n >= st.hours.min_events
        off = 0.5 * st.hours.score_one(t) if judged else 0.0

        # --- unjustified customer access -------------------------------------------
        if customer is not None:
            contributed |= self._justification(st, peer, ev, customer, decay, fresh, off)

        # --- first-seen traits, against the actor and its peers ---------------------
        # Interned: the profiles of thousands of actors share one copy of each value.
        network = network_of(ev.source_ip)
        traits = {"access": intern(f"{ev.action}:{ev.resource_type}"),
                  "client": intern(ev.client) if ev.client else None,
                  "network": intern(network) if network else None,
                  "fields": intern(",".join(sorted(ev.fields))) if ev.fields else None}
        contributed |= self._first_seen(st, peer, traits)
        st.first_seen.learn_one(traits)
        peer.first_seen.learn_one(traits)

        # --- time of week -----------------------------------------------------------
        if off > 0.01:
            _bump(hc, "offhours")
            when, usual = rfc3339(t)[11:16], st.hours.usual_hours()
            contributed |= self._raise(st, "off_hours", off, [Reason(
                "off_hours", off, f"worked at {when} UTC; usually {usual}", when, usual)])
            if ev.is_egress:
                # Several of the group exporting off their hours the same day (a quarter
                # close worked late) is the group's night: it adds less up over days.
                others = self._others_in(peer.night, st, t)
                add = off / (1 + others / 2) if others >= 2 else off
                st.long_term = min(st.long_term + add, LONG_TERM_CAP)
        # Learn working hours from every access, though only data access is judged.
        st.hours.learn_one(t)
        peer.hours.learn_one(t)

        if contributed:
            st.last_signal_ms = t
            if st.evidence is None:
                st.evidence = deque(maxlen=MAX_EVIDENCE)
            st.evidence.append((ev.event_id, customer))
        risk = self._risk(st)
        st.hour_peak = max(st.hour_peak, risk)
        return Verdict(score=risk, alert=self._maybe_alert(st, peer, ev, risk))

    # --- signals -------------------------------------------------------------------

    def _rare_egress(self, st: ActorState, own: VolumeBaseline, counts: dict[str, int],
                     seen: int, active: int) -> bool:
        """Egress by an actor of a group that (almost) never has any: only its size counts,
        from ``RARE_FACTOR`` times the smallest amount the baseline counts at all."""
        score = max(saturate(math.log(max(counts.get(f, 0), 1)
                                      / (RARE_FACTOR * own.min_counts[f])), 1.0)
                    for f in own.features)
        if score <= 0.01:
            return False
        shown = ", ".join(f"{_fmt_count(counts.get(f, 0))} {UNITS[f]}"
                          for f in own.features)
        desc = (f"{shown} in one {own.period}; their peers rarely do any "
                f"({seen} of {active} active hours)")
        return self._raise(st, own.name, score, [Reason(
            own.name, score, desc, {f: counts.get(f, 0) for f in own.features},
            {"peer_periods_with_egress": seen, "peer_active_hours": active})])

    def _volume_signal(self, st: ActorState, peer: PeerGroup, own: VolumeBaseline,
                       peers: VolumeBaseline, counts: dict[str, int], slack: float, t: int
                       ) -> bool:
        floors = None
        ask_peers = False
        if own.hours >= own.min_hours:
            model, whose, z0 = own, "usually", own.z0 + slack
            if peers.hours >= peers.min_hours:
                # An actor can vary as much as its peers do, whatever its short past shows.
                floors = {f: 0.75 * peers.stats[f].std for f in own.features}
                ask_peers = slack == 0.0
        elif (own.name == "egress" and peers.hours < peers.min_hours
              and peer.volume.hours >= RARE_MIN_HOURS):
            # Neither the actor nor its long-working peers do this (engineers exporting):
            # there is no spread to judge by, only the size against the smallest that counts.
            return self._rare_egress(st, own, counts, peers.hours, peer.volume.hours)
        else:  # cold start: judged against peers, with extra tolerance
            model, whose, z0 = peers, "peers usually", peers.z0 + 1.0 + slack
        score = model.score_one(counts, z0, floors)
        peer_factor = 1.0
        if ask_peers and score > 0.01:
            # Unusual for the actor but ordinary for its peers (a first scheduled export, a
            # big report) counts for less than unusual for both.
            peer_factor = 0.3 + 0.7 * peers.score_one(counts)
            score *= peer_factor
        if score <= 0.01:
            return False
        # When several of the group are unusual at once (quarter end, a new tool), it is
        # the group's day, not this actor's: discount by how many others are running hot.
        others = self._others_in(peer.hot, st, t) if score > HOT_SCORE else 0
        if others < 2:
            others = 0  # one busy colleague is a coincidence, not the group's day
        if others:
            score /= 1 + others / 2
        reasons = model.explain(counts, z0, whose, floors)
        for r in reasons:
            r.score = score
            if peer_factor < 0.5:
                r.description += " (not unusual for their peers)"
            if others:
                r.description += f" ({others} peers also unusually busy today)"
        return self._raise(st, own.name, score, reasons)

    @staticmethod
    def _others_in(recent: OrderedDict, st: ActorState, t: int) -> int:
        """Put the actor in ``recent`` (actor -> last time) and count the others there in
        the last day."""
        recent[st.actor] = t
        recent.move_to_end(st.actor)
        while recent and next(iter(recent.values())) < t - DAY_MS:
            recent.popitem(last=False)
        return len(recent) - 1

    def _justification(self, st: ActorState, peer: PeerGroup, ev: AccessEvent, customer: str,
                       decay: float, fresh: bool, off: float) -> bool:
        """Unticketed reads, counted per customer: one forgotten ticket is one customer."""
        t = ev.time_ms
        habit = {"customer": True, "ticketed": bool(ev.ticket)}
        st.customer_reads *= decay
        st.unjustified *= decay
        if fresh:
            st.customer_reads += 1.0
        tickets = st.tickets if st.tickets.rate.n >= st.tickets.min_events else peer.tickets
        contributed = False
        served_by = self.customer_teams.get(customer, 0)
        in_queue = bool(served_by and served_by & self._queue(ev.team))
        if served_by:
            st.foreign.update(0.0 if in_queue else 1.0)
        if ev.ticket:
            self._served(customer, ev.team)
            st.ticketed[customer] = t
            if len(st.ticketed) > MAX_TICKETED:
                del st.ticketed[next(iter(st.ticketed))]  # the oldest insertion
            late = st.pending.pop(customer, None)
            if late is not None and t - late[0] <= LATE_TICKET_MS:
                # A forgotten ticket, supplied after all: take the suspicion back.
                self._take_back(st, tickets, late)
        elif off >= 0.3 or t - st.ticketed.get(customer, -TICKET_CONTEXT_MS) >= TICKET_CONTEXT_MS:
            # (A day's ticketed contact justifies a later look, but not at an hour the actor
            # never works: night views of customers it served are the camera-spying case.)
            recent = st.pending.get(customer)
            if recent is not None and t - recent[0] < LATE_TICKET_MS:
                if off < 0.3 and recent[1:] != _TAKEN_BACK:
                    # Looked at again within the hour, at an hour the actor works: a case
                    # worked without its ticket, not a lookup (one read per customer).
                    self._take_back(st, tickets, recent)
                    recent = (t, *_TAKEN_BACK)
                st.pending[customer] = (t, *recent[1:])  # the same look, still going on
            else:
                share = tickets.score_one(habit)
                if share > 0:
                    contributed = self._unjustified(st, tickets, customer, served_by,
                                                    in_queue, share, t, off)
        if fresh:
            # Every customer pays back what the actor's own habit lets through
            # unticketed, so the long-term sum only grows on more than that.
            share = tickets.ticketed_share if tickets.rate.n >= tickets.min_events else 0.0
            st.long_term = max(0.0, st.long_term - self.settings.long_term_weight
                               * specificity(share) * (1.0 - share))
        # Reads under suspicion count a quarter: low-and-slow must not quickly teach
        # the actor that unticketed reads are normal, nor freeze an honest one forever.
        suspicious = not ev.ticket and (st.levels.get("unjustified", 0.0) >= 0.3
                                        or st.long_term >= 1.0)
        weight = 0.25 if suspicious else 1.0
        if fresh:  # per customer (-hour), like the unjustified count and its payback
            st.tickets.learn_one(habit, weight)
            peer.tickets.learn_one(habit, weight)
        return contributed

    def _unjustified(self, st: ActorState, tickets: TicketHabit, customer: str,
                     served_by: int, in_queue: bool, share: float, t: int, off: float = 0.0
                     ) -> bool:
        """An unticketed read of ``customer`` (``served_by``: the teams that serve it under
        tickets; ``in_queue``: one of them shares the actor's queue)."""
        if t // HOUR_MS >= st.hour:  # not a late event (see process)
            _bump(st.hour_counts, "unjustified")
        if st.unjustified_customers is None:
            st.unjustified_customers = set()
        if len(st.unjustified_customers) < self.settings.max_tracked_customers:
            st.unjustified_customers.add(customer)  # bounded, like the hour's customers
        count = 1.0
        if in_queue:
            where, weight = "", 0.5  # a customer of the actor's own team's queue
        else:
            # Outside the population it serves: telling only for an actor who normally
            # stays within its team's queue (not, say, a fraud investigator). A customer no
            # team has served yet counts half as much: it may be the queue's next one.
            inside = 1.0 - st.foreign.mean if st.foreign.n >= 20 else 1 / 6
            if not served_by:
                inside /= 2
            where = (", outside its team's queue" if served_by
                     else ", one no team has served under a ticket")
            weight = 0.5 + 3.0 * inside
            count = 1.0 + 1.5 * inside
        st.unjustified += count
        weight *= self.settings.long_term_weight * specificity(share)
        vip = customer in self.vip_customers
        if vip:
            weight *= 4
        # Capped per hour and overall: a burst is the short-term levels' job.
        weight = min(weight, max(0.0, LONG_TERM_GAIN_PER_HOUR - st.hour_long_gain))
        st.hour_long_gain += weight
        st.long_term = min(st.long_term + weight, LONG_TERM_CAP)
        st.pending[customer] = (t, weight, count)
        if len(st.pending) > MAX_TICKETED:
            del st.pending[next(iter(st.pending))]
        n = len(st.unjustified_customers)
        excess = st.unjustified - (1.0 - share) * st.customer_reads
        # Unticketed and at an hour the actor never works: together worth more than apart.
        score = min(1.0, specificity(share) * saturate(excess, 4.0) * (1.0 + off))
        whose = "their" if tickets is st.tickets else "their peers'"
        desc = (f"accessed {n} customers without a ticket or a ticketed contact (the last "
                f"{customer}{where}); {round(100 * share)}% of {whose} customer "
                "accesses carry one")
        observed: dict[str, Any] = {"unticketed_customers": n, "last": customer}
        expected: dict[str, Any] = {"ticketed_share": round(share, 3)}
        # Day after day more of them than the actor's own rate: low-and-slow scraping.
        days = st.unjustified_days
        if t // DAY_MS >= st.day:
            days.add()
        trend = specificity(share) * days.score_one()
        if trend > score:
            score = trend
            recent = days.today + sum(days.recent)
            desc += (f"; {recent} such customers in the last {1 + len(days.recent)} active "
                     f"days, usually {_fmt_count(days.rate)} a day")
            observed["unticketed_last_days"] = recent
            expected["unticketed_per_day"] = round(days.rate, 2)
        contributed = self._raise(st, "unjustified", score, [Reason(
            "unjustified", score, desc, observed, expected)])
        if vip:
            vip_score = 0.75 * share
            contributed |= self._raise(st, "vip", vip_score, [Reason(
                "vip", vip_score, f"read VIP customer {customer} without a ticket",
                customer, "no VIP reads without a ticket")])
        return contributed

    @staticmethod
    def _take_back(st: ActorState, tickets: TicketHabit, look: tuple) -> None:
        """Withdraw the suspicion an unticketed look added (``look``: its pending record)."""
        st.unjustified = max(0.0, st.unjustified - (look[2] if len(look) > 2 else 1.0))
        if look[1:] != _TAKEN_BACK:
            st.unjustified_days.today = max(0, st.unjustified_days.today - 1)
        st.long_term = max(0.0, st.long_term - look[1])
        share = tickets.ticketed_share
        st.levels["unjustified"] = min(
            st.levels.get("unjustified", 0.0),
            specificity(share) * saturate(st.unjustified - (1.0 - share) * st.customer_reads, 4.0))

    def _team_bit(self, team: str | None) -> int:
        if team is None:
            return 0
        index = self.teams.get(team)
        if index is None:
            index = self.teams[team] = len(self.teams)
        return 1 << index

    def _queue(self, team: str | None) -> int:
        """Bits of the teams whose customers ``team``'s are: itself and the teams it shares
        customers with often (the other shifts of a region's queue), learned from tickets."""
        bit = self._team_bit(team)
        if not bit:
            return 0
        mask = self._queues.get(bit)
        if mask is None:
            links = self.team_links.get(bit.bit_length() - 1, {})
            floor = max(QUEUE_MIN_LINKS, QUEUE_LINK_SHARE * sum(links.values()))
            mask = bit
            for other, n in links.items():
                if n >= floor:
                    mask |= 1 << other
            self._queues[bit] = mask
        return mask

    def _served(self, customer: str, team: str | None) -> None:
        """Remember which teams work this customer under tickets (a bounded LRU)."""
        book = self.customer_teams
        before = book.pop(customer, 0)
        bit = self._team_bit(team)
        book[customer] = before | bit
        if len(book) > self.settings.max_customers:
            del book[next(iter(book))]
        if before and not before & bit:  # a customer new to this team: the teams share it
            me = bit.bit_length() - 1
            links = self.team_links
            for other in range(before.bit_length()):
                if before >> other & 1:
                    mine, theirs = links.setdefault(me, {}), links.setdefault(other, {})
                    mine[other] = mine.get(other, 0) + 1
                    theirs[me] = theirs.get(me, 0) + 1
            self._queues.clear()

    def _first_seen(self, st: ActorState, peer: PeerGroup, traits: dict[str, str | None]
                    ) -> bool:
        own = st.first_seen
        if own.n >= own.min_events:
            reasons = own.explain(traits)
            # What the actor's peers use commonly (a new tool for the team) counts far less.
            for r in reasons:
                trait = r.detector.removeprefix("first_seen_")
                common = peer.first_seen.counts.get(trait, {}).get(traits[trait], 0)
                if peer.first_seen.n and common / peer.first_seen.n >= 0.01:
                    r.score *= 0.3
                    r.description += " (common among peers)"
        else:  # cold start: only what is rare for the peers too
            reasons = peer.first_seen.explain(traits)
            for r in reasons:
                r.description = r.description.replace("usually", "peers usually")
        if not reasons:
            return False
        _bump(st.hour_counts, "novel")
        keep = 1.0
        for r in reasons:
            keep *= 1.0 - r.score
        return self._raise(st, "first_seen", 1.0 - keep, reasons)

    def _departing(self, actor: str, t: int) -> ContextEntry | None:
        """The actor's watchlist entry while it is leaving (from two weeks before notice)."""
        entry = self.departing.get(actor)
        if entry is None:
            return None
        if entry.notice_ms is not None and t < entry.notice_ms - 14 * DAY_MS:
            return None
        if entry.last_day is not None:
            end = date.fromisoformat(entry.last_day)
            if t >= (end.toordinal() - 719162 + 1) * DAY_MS:
                return None
        return entry

    def _leaving_downloads(self, st: ActorState, entry: ContextEntry) -> bool:
        """A leaving actor downloading far more often than on its own ordinary days.

        The count must be both a multiple of the actor's usual and well outside its own
        day-to-day spread (or Poisson noise), so one extra download by someone who makes one
        a day is not a signal, but a tripled habit is.
        """
        dl = st.downloads
        # Honest leavers have busy days too; days in a row are what a last grab looks like.
        # The last three active days together catch a rise no single day shows.
        streak = st.leaving_streak
        score = max(dl.day_score() * (1.0 if streak else 0.6), dl.score_one())
        if streak and _busy_day(dl):
            # Another busy day right after busy ones: each in a row doubles what is left.
            score = max(score, 1.0 - 0.5 ** streak)
        if score <= 0.01:
            return False
        leaves = f" (last day {entry.last_day})" if entry.last_day else ""
        again = f", after {streak} such day{'s' if streak > 1 else ''} in a row" if streak else ""
        desc = (f"is leaving{leaves} and made {dl.today} downloads or exports today{again}; "
                f"usually {_fmt_count(dl.rate)} a day")
        return self._raise(st, "departing", score, [Reason(
            "departing", score, desc, {"downloads_today": dl.today},
            {"downloads_per_day": round(dl.rate, 1)})])

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
                if level > 0.01:
                    levels[name] = level
                else:  # faded below what counts anywhere: forget it (and its reasons)
                    del levels[name]
                    st.reasons.pop(name, None)
            st.long_term *= long_factor
        return factor

    def _roll_hour(self, st: ActorState, peer: PeerGroup, now_ms: int) -> None:
        hour = now_ms // HOUR_MS
        if hour <= st.hour:
            return  # same hour, or a late event: it counts toward the running hour
        if st.hour >= 0 and st.hour_counts:
            counts = st.hour_counts
            self._hour_model(st, peer, counts)
            st.volume.learn_one(counts)
            peer.volume.learn_one(counts)
            if "egress" in counts:
                st.egress.learn_one(counts)
                peer.egress.learn_one(counts)
            peer.risk.update(st.hour_peak)
            peer.risk_hours += 1
        day = now_ms // DAY_MS
        if day > st.day:
            if st.day >= 0:
                # A leaving actor's busy days are the suspicion itself: barely learned.
                dl = st.downloads
                busy = _busy_day(dl)
                doubtful = busy and self._departing(st.actor, now_ms) is not None
                dl.roll(0.1 if doubtful else 1.0)
                st.leaving_streak = st.leaving_streak + 1 if doubtful else 0
                # Likewise days of unjustified reads well above the actor's rate: a slow
                # scraper must not teach its baseline that this is normal.
                uj = st.unjustified_days
                uj.roll(0.1 if uj.usual.n >= uj.min_days and uj.today > 2 * uj.rate else 1.0)
            if st.day_counts:  # days with egress: the normal size of a day's downloads
                st.daily.learn_one(st.day_counts)
                peer.daily.learn_one(st.day_counts)
            st.day, st.day_counts = day, {}
        st.hour = hour
        st.hour_peak = 0.0
        st.hour_long_gain = 0.0
        st.hour_counts = {}
        st.hour_customers = set()
        if st.unjustified < 0.5:
            st.unjustified_customers = None

    def _hour_model(self, st: ActorState, peer: PeerGroup, counts: dict[str, int]) -> None:
        """Score a finished actor-hour as a whole against the peer group's actor-hours.

        The per-signal detectors judge one measure at a time; this model (an isolation
        forest with a range-excess term) catches combinations no single one finds odd. It
        runs once per actor-hour, not per event.
        """
        model = peer.model
        if model is None:
            return
        x = {f: counts.get(f, 0) for f in HOUR_FEATURES}
        score = model.score_one(x)
        model.learn_one(x)
        level = MULTIVARIATE_WEIGHT * saturate(score - MULTIVARIATE_TOLERATED, 2.0)
        if level <= 0.01:
            return
        top = model.explain(x, top=3)
        desc = "an hour unlike its peers' hours: " + ", ".join(
            f"{c.feature} {_fmt_count(c.observed)} (peers' normal {_fmt_count(c.expected)})"
            for c in top)
        self._raise(st, "multivariate", level, [Reason(
            "multivariate", level, desc, {c.feature: c.observed for c in top},
            {c.feature: round(c.expected, 1) for c in top})])

    @staticmethod
    def _raise(st: ActorState, name: str, score: float, reasons: list[Reason]) -> bool:
        """Raise a detector's level to ``score`` if higher; True if the event contributed."""
        if score <= 0.01:
            return False
        st.levels[name] = max(score, st.levels.get(name, 0.0))
        st.reasons[name] = (score, reasons)  # the latest observation explains the level
        return True

    @staticmethod
    def _risk(st: ActorState, fade: bool = True) -> float:
        """Strongest signal first, each further one counting half as much as the last.

        One strong signal or two moderate ones make an alert; a pile of weak ones
        (a new hire's first days, a new tool) does not.
        """
        # What accumulated over days sharpens the risk while the actor keeps raising
        # signals; between them (the quiet days after an episode) it fades within hours.
        long_score = saturate(st.long_term - 1.0, LONG_TERM_SCALE)
        if not st.levels and long_score <= 0.01:
            return 0.0  # most actors, most of the time
        if fade:
            long_score *= 0.5 ** (max(0, st.last_ms - st.last_signal_ms) / LONG_TERM_QUIET_MS)
        levels = sorted((*st.levels.values(), long_score), reverse=True)
        keep, weight = 1.0, 1.0
        for level in levels:
            if level <= 0.01:
                break
            keep *= 1.0 - weight * min(level, 0.999)
            weight *= 0.5
        return round(100.0 * (1.0 - keep), 1)

    def threshold(self, peer: PeerGroup) -> float:
        """The alert bar: the configured floor, raised where a whole peer group runs hot."""
        floor = self.settings.alert_threshold
        if peer.risk_hours < self.settings.adaptive_min_hours:
            return floor
        adaptive = peer.risk.get() + self.settings.adaptive_margin
        # The raise stops at 95 (critical risk always alerts); a bar configured above that
        # is kept as configured.
        return max(floor, min(adaptive, 95.0))

    def _age_episode(self, st: ActorState, peer: PeerGroup, now_ms: int) -> None:
        """End the open alert episode once a whole day has passed without its risk at half
        the bar, judged as the risk stands before this event adds to it.

        A quiet spell fades the risk within hours, but the same behaviour picked up again
        hours later (the evening's reads, the next export) is the same episode; and the
        episode lasts while what accumulated over days does."""
        if self._risk(st, fade=False) >= self.threshold(peer) * self.settings.close_ratio:
            st.episode_high_ms = now_ms
        elif now_ms - st.episode_high_ms >= EPISODE_QUIET_MS:
            st.open_severity = None

    def _maybe_alert(self, st: ActorState, peer: PeerGroup, ev: AccessEvent, risk: float
                     ) -> Alert | None:
        s = self.settings
        bar = self.threshold(peer)
        if st.open_severity is not None and risk >= bar * s.close_ratio:
            st.episode_high_ms = ev.time_ms  # (see _age_episode)
        if risk < bar:
            return None
        severity = severity_of(risk)
        opened = st.open_severity
        if opened is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[opened]:
            return None  # one alert per episode, raised again only when it escalates
        st.open_severity = severity
        st.episode_high_ms = ev.time_ms
        return self._alert(st, ev, risk, severity)

    def _alert(self, st: ActorState, ev: AccessEvent, risk: float, severity: str) -> Alert:
        reasons = self._current_reasons(st)
        evidence = st.evidence or ()
        ids = [ev.event_id] + [eid for eid, _ in reversed(evidence) if eid != ev.event_id]
        customers = {c for _, c in evidence if c is not None} | st.hour_customers
        who = f"{ev.actor} ({st.role})" if st.role else ev.actor
        summary = f"{who} " + "; ".join(r.description for r in reasons[:3]) + "."
        digest = hashlib.sha256(f"{ev.actor}\x00{ev.event_id}\x00{severity}".encode()).hexdigest()
        return Alert(alert_id=digest[:32], actor=ev.actor, role=st.role, time_ms=ev.time_ms,
                     severity=severity, score=risk, summary=summary, reasons=reasons,
                     event_ids=ids[:MAX_EVIDENCE], customers=len(customers))

    def _current_reasons(self, st: ActorState) -> list[Reason]:
        """Each contributing detector's reasons, scaled to its decayed level."""
        out = []
        for name, level in st.levels.items():
            peak, reasons = st.reasons.get(name, (0.0, []))
            if level <= 0.01 or peak <= 0:
                continue
            out.extend(Reason(r.detector, r.score * level / peak, r.description, r.observed,
                              r.expected) for r in reasons)
        long_score = saturate(st.long_term - 1.0, LONG_TERM_SCALE)
        if long_score > 0.01:
            out.append(Reason("accumulated", long_score,
                              "kept up unjustified or off-hours access over days "
                              f"(weight {st.long_term:.1f}, halving every "
                              f"{self.settings.long_half_life_s / 86400:g} days)",
                              round(st.long_term, 2), "under 1.0"))
        return sorted(out, key=lambda r: -r.score)

    def expire_idle(self, now_ms: int) -> list[str]:
        """Forget actors with no event in the last ``actor_ttl_s`` of event time; their names.

        Bounds memory to the actors active within the TTL. A returning actor starts afresh
        and is judged against its peers until it has a history again (never for being new).

        >>> eng = Engine(Settings(actor_ttl_s=3600))
        >>> eng.actors["old"] = ActorState("old", "r", **eng._profile())
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
