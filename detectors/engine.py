"""The detection core: validated events in, risk and alerts out.

Both drivers call :meth:`Engine.process` once per valid event, in order per actor. The
engine orchestrates the signals of :mod:`detectors.signals` in explicit phases:

1. **roll** — close the actor's finished hour and day: each signal learns from them
   (``end_hour``, ``end_day``), and the day's peak risk joins the false-alert budget;
2. **features** — count the access into the running hour and day, decide whether a
   customer read is justified (a ticket, a ticketed contact in the last day, a forgotten
   ticket supplied within the hour), build the :class:`~detectors.signals.Access`;
3. **score** — every signal scores the access against the actor's own profile and its
   peer group's; a level decays with a half-life of an hour;
4. **learn** — every signal folds the access into both profiles;
5. **risk** — the strongest level first, each further one counting half as much;
6. **alert** — when risk passes the bar: the configured floor, raised to the risk an
   ordinary actor-day exceeds with probability ``false_alert_budget`` / 1,000.

Time is event time only; nothing reads the wall clock, so a replay of the same file gives
the same output.

>>> from detectors.events import parse_event
>>> eng = Engine(Settings())
>>> def ev(i, hour, customer, ticket="T1"):
...     return parse_event({"event_id": f"e{i}", "time": 1_700_000_000_000 + hour * 3_600_000 + i,
...                         "actor": "ann", "role": "support_agent", "action": "read",
...                         "resource_type": "customer_profile", "customer_id": customer,
...                         "ticket": ticket, "client": "crm", "source_ip": "10.0.0.5"})
>>> i = 0
>>> for hour in range(12):                   # twelve ordinary hours: 4 ticketed reads each
...     for k in range(4):
...         i += 1
...         assert eng.process(ev(i, hour, f"c{hour}{k}")).alert is None
>>> alerts = []
>>> for k in range(80):                      # then 80 customers, no tickets, in one hour
...     i += 1
...     v = eng.process(ev(i, 13, f"x{k}", ticket=None))
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
import pickle
import zlib
from collections import OrderedDict, deque
from dataclasses import MISSING, dataclass, field, fields
from datetime import date
from sys import intern
from typing import Any

from detectors.calibrate import DayPeaks, Share
from detectors.events import AccessEvent, ContextEntry
from detectors.models import Reason, rfc3339
from detectors.priors import (
    DAY_MS,
    EPISODE_QUIET_MS,
    FORGET_LEVEL,
    HOUR_MS,
    LATE_TICKET_MS,
    MAX_EVIDENCE,
    MAX_TICKETED,
    MIN_OWN_HOURS,
    QUEUE_LINK_SHARE,
    QUEUE_MIN_LINKS,
    TICKET_CONTEXT_MS,
    TOLERATED,
)
from detectors.settings import Settings
from detectors.signals import Access, Profile, Signal, registry
from detectors.signals import off_hours as time_of_week

__all__ = ["DAY_MS", "HOUR_MS", "ActorState", "Alert", "Engine", "Frozen", "Verdict",
           "network_of", "rfc3339", "severity_of"]

# Severity bands of the risk score (0-100), while the budget has too few actor-days.
SEVERITIES = ((95.0, "critical"), (85.0, "high"), (70.0, "medium"), (0.0, "low"))
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
# VIP customers' share of all customer reads, before any is seen (weight: reads).
PRIOR_VIP_SHARE, PRIOR_VIP_WEIGHT = 0.01, 100.0


def severity_of(risk: float, tail: float | None = None, budget: float = 1.0) -> str:
    """Triage order: from how rare the risk is among ordinary actor-days (``tail``) against
    the budget's probability, or from fixed bands while that is unknown.

    >>> severity_of(62), severity_of(75), severity_of(90), severity_of(99)
    ('low', 'medium', 'high', 'critical')
    >>> severity_of(80, tail=0.0004), severity_of(80, tail=0.00001, budget=1.0)
    ('medium', 'critical')
    """
    if tail is None:
        return next(name for floor, name in SEVERITIES if risk >= floor)
    p = budget / 1000.0
    return ("critical" if tail <= p / 100 else "high" if tail <= p / 10
            else "medium" if tail <= p else "low")


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


def _bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


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
class ActorState:
    """Everything snoopwatch remembers about one actor."""

    actor: str
    peer: str
    profile: Profile
    role: str | None = None
    hour: int = -1
    hour_counts: dict[str, int] = field(default_factory=dict)
    hour_customers: set[str] = field(default_factory=set)
    day: int = -1
    day_counts: dict[str, int] = field(default_factory=dict)
    day_peak: float = 0.0  # highest risk of the running day (the false-alert budget's unit)
    ticketed: dict[str, int] = field(default_factory=dict)  # customer -> last ticketed ms
    pending: dict[str, int] = field(default_factory=dict)  # customer -> unticketed look ms
    levels: dict[str, float] = field(default_factory=dict)  # signal -> decaying level
    # signal -> (its level then, what it observed): explained only if an alert is raised
    observed: dict[str, tuple[float, Any]] = field(default_factory=dict)
    last_ms: int = 0
    evidence: deque | None = None  # (event_id, customer) behind the risk; made on first use
    open_severity: str | None = None  # severity of the open alert episode, if any
    episode_id: str = ""
    episode_high_ms: int = 0  # the open episode's last event with risk >= half the bar

    __setstate__ = _restore_slots


class Frozen:
    """A quiet actor's :class:`ActorState`, pickled and compressed until its next event.

    Lossless (a pickle round trip), so freezing never changes a result. ``last_ms`` stays
    readable so expiry does not need to thaw.
    """

    __slots__ = ("blob", "last_ms")

    def __init__(self, st: ActorState) -> None:
        self.last_ms = st.last_ms
        self.blob = zlib.compress(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL), 1)

    def thaw(self) -> ActorState:
        return pickle.loads(zlib.decompress(self.blob))


class Engine:
    """Orchestrates the signals over per-actor and per-peer-group profiles, for one shard."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = s = settings or Settings()
        disabled = frozenset(n.strip() for n in s.disabled_signals.split(",") if n.strip())
        self.signals: list[Signal] = registry(s.seed, disabled)
        self._by_name = {sig.name: sig for sig in self.signals}
        # Every tracked actor: its state, or, while it is idle, the state frozen.
        self.actors: dict[str, ActorState | Frozen] = {}
        self._hot: OrderedDict[str, None] = OrderedDict()  # actors by last use, oldest first
        self.peers: dict[str, Profile] = {}
        self.vip_customers: set[str] = set()
        self.departing: dict[str, ContextEntry] = {}
        # customer -> bit set of the teams that served it under a ticket (the "queue" map)
        self.customer_teams: dict[str, int] = {}
        self.teams: dict[str, int] = {}
        # team -> {other team: customers both served}: shifts of one region share a queue
        self.team_links: dict[int, dict[int, int]] = {}
        self._queues: dict[int, int] = {}  # team bit -> bits of the teams sharing its queue
        self.vip_reads = Share()  # VIP customers' share of all distinct customer reads
        self.day_peaks = DayPeaks()  # every actor-day's peak risk: the false-alert budget

    @property
    def tracked_actors(self) -> int:
        return len(self.actors)

    # --- state shared across actors (checkpointed beside them) ------------------------

    SHARED = ("peers", "customer_teams", "teams", "team_links", "vip_reads", "day_peaks")

    def shared_state(self) -> dict[str, Any]:
        """Everything cross-actor, picklable (context is re-read from its topic)."""
        return {name: getattr(self, name) for name in self.SHARED}

    def load_shared(self, state: dict[str, Any]) -> None:
        """Replace the cross-actor state with ``state`` (from :meth:`shared_state`)."""
        for name in self.SHARED:
            if name in state:
                setattr(self, name, state[name])
        self._queues.clear()

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

    def new_profile(self, peer: str | None = None) -> Profile:
        """Fresh baselines for an actor (``peer`` None) or for the peer group so named."""
        return Profile(of={sig.name: sig.new(peer) for sig in self.signals})

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
                            profile=self.new_profile())
            self.actors[ev.actor] = st
        elif ev.role and st.role is not None and ev.role != st.role:
            # A role change: the old normal no longer applies. Judge the actor against
            # its new peers until it has a history in the new role.
            st.peer = ev.role
            st.profile = self.new_profile()
            # The running hour and day belonged to the old role: not learned into the new.
            st.hour = st.day = -1
            st.hour_counts, st.day_counts, st.hour_customers = {}, {}, set()
        if ev.role:
            st.role = ev.role
        return st

    def _peer(self, key: str) -> Profile:
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = self.new_profile(key)
        return peer

    # --- the phases -----------------------------------------------------------------

    def process(self, ev: AccessEvent) -> Verdict:
        st = self._state(ev)
        peer = self._peer(st.peer)
        t = ev.time_ms
        self._decay(st, t)
        if st.open_severity is not None:
            self._age_episode(st, t)
        self._roll(st, peer, t)
        x = self._features(st, peer, ev)
        own = st.profile
        contributed = False
        for sig in self.signals:
            lvl = sig.score_one(x, own, peer)
            if lvl > FORGET_LEVEL and lvl >= st.levels.get(sig.name, 0.0):
                st.levels[sig.name] = lvl
                st.observed[sig.name] = (lvl, sig.observe(x, own, peer))
                contributed = True
        for sig in self.signals:
            sig.learn_one(x, own, peer)
        if contributed:
            if st.evidence is None:
                st.evidence = deque(maxlen=MAX_EVIDENCE)
            st.evidence.append((ev.event_id, ev.customer_id))
        risk = self._risk(st)
        st.day_peak = max(st.day_peak, risk)
        return Verdict(score=risk, alert=self._maybe_alert(st, ev, risk))

    def _decay(self, st: ActorState, now_ms: int) -> None:
        """Decay every level by the event time elapsed since the actor's last event."""
        elapsed = max(0, now_ms - st.last_ms) / 1000 if st.last_ms else 0.0
        st.last_ms = max(st.last_ms, now_ms)
        if elapsed <= 0 or not st.levels:
            return
        factor = 0.5 ** (elapsed / self.settings.decay_half_life_s)
        levels = st.levels
        for name in list(levels):
            lvl = levels[name] * factor
            if lvl > FORGET_LEVEL:
                levels[name] = lvl
            else:  # faded below what counts anywhere: forget it (and what it observed)
                del levels[name]
                st.observed.pop(name, None)

    def _roll(self, st: ActorState, peer: Profile, now_ms: int) -> None:
        """Close the actor's finished hour and day."""
        hour = now_ms // HOUR_MS
        if hour <= st.hour:
            return  # the same hour, or a late event
        own = st.profile
        if st.hour >= 0 and st.hour_counts:
            for sig in self.signals:
                lvl = sig.end_hour(st.hour_counts, own, peer)
                if lvl > FORGET_LEVEL and lvl >= st.levels.get(sig.name, 0.0):
                    st.levels[sig.name] = lvl
                    st.observed[sig.name] = (lvl, None)
            own.hours += 1
            peer.hours += 1
        day = now_ms // DAY_MS
        if day > st.day:
            if st.day >= 0:
                for sig in self.signals:
                    sig.end_day(st.day_counts, own, peer)
                own.days += 1
                peer.days += 1
                self.day_peaks.add(st.day_peak)
            st.day, st.day_counts, st.day_peak = day, {}, 0.0
        st.hour, st.hour_counts, st.hour_customers = hour, {}, set()

    def _features(self, st: ActorState, peer: Profile, ev: AccessEvent) -> Access:
        """Count the access into the running hour and day; what the signals see of it."""
        t = ev.time_ms
        # An event of an hour already rolled (out of order: input not keyed by actor, or a
        # backlog drained unevenly) is judged on its own, but not counted into the running
        # hour or day: a pile of late events is not a burst.
        late = t // HOUR_MS < st.hour
        hc = {} if late else st.hour_counts
        dc = {} if late or t // DAY_MS < st.day else st.day_counts
        own = st.profile
        off = time_of_week.surprisal(t, own, peer) if "off_hours" in own.of else 0.0
        if ev.outcome != "success":
            _bump(hc, "denied")
        customer = ev.customer_id
        if ev.is_egress:
            for counts in (hc, dc):
                _bump(counts, "egress", ev.records)
                _bump(counts, "egress_bytes", ev.bytes or 0)
                _bump(counts, "downloads")
        else:
            _bump(hc, "records", ev.records)
            _bump(dc, "records", ev.records)
        fresh = customer is not None and customer not in st.hour_customers
        if fresh and not late and len(st.hour_customers) < self.settings.max_tracked_customers:
            st.hour_customers.add(customer)
            _bump(dc, "customers")
            self.vip_reads.update(customer in self.vip_customers, 1.0)
        hc["customers"] = len(st.hour_customers)
        if off > TOLERATED and (customer is not None or ev.is_egress):
            _bump(hc, "offhours")
            _bump(dc, "offhours")
        network = network_of(ev.source_ip)
        # Interned: the profiles of thousands of actors share one copy of each value.
        traits = {"access": intern(f"{ev.action}:{ev.resource_type}"),
                  "client": intern(ev.client) if ev.client else None,
                  "network": intern(network) if network else None,
                  "fields": intern(",".join(sorted(ev.fields))) if ev.fields else None}
        x = Access(ev=ev, t=t, late=late, hour=hc, day=dc, traits=traits, off=off,
                   leaving=self._departing(ev.actor, t) if ev.is_egress else None,
                   vip_share=self.vip_reads.value(PRIOR_VIP_SHARE, PRIOR_VIP_WEIGHT))
        if customer is not None:
            x.fresh = fresh and not late
            served_by = self.customer_teams.get(customer, 0)
            counted = self._unjustified(st, ev, customer, fresh, off, hc, dc)
            x.unjustified = counted
            x.vip = x.unjustified and customer in self.vip_customers
            # Outside its team's queue: served by other teams only, or by none yet.
            x.foreign = x.unjustified and not served_by & self._queue(ev.team)
            if counted:
                for key, flag in (("vip_unjustified", x.vip), ("foreign", x.foreign)):
                    if flag:
                        _bump(hc, key)
                        _bump(dc, key)
        return x

    def _unjustified(self, st: ActorState, ev: AccessEvent, customer: str, fresh: bool,
                     off: float, hc: dict[str, int], dc: dict[str, int]) -> bool:
        """Whether this customer read is counted as unjustified (once per customer and hour;
        a forgotten ticket supplied within the hour takes it back)."""
        t = ev.time_ms
        served_by = self.customer_teams.get(customer, 0)
        if ev.ticket:
            self._served(customer, ev.team)
            st.ticketed[customer] = t
            if len(st.ticketed) > MAX_TICKETED:
                del st.ticketed[next(iter(st.ticketed))]  # the oldest insertion
            looked = st.pending.pop(customer, None)
            if looked is not None and t - looked <= LATE_TICKET_MS:
                # A forgotten ticket, supplied after all: take the suspicion back.
                for counts in (hc, dc):
                    if counts.get("unjustified", 0) > 0:
                        counts["unjustified"] -= 1
            return False
        at_night = off > TOLERATED
        if not at_night and t - st.ticketed.get(customer, -TICKET_CONTEXT_MS) < TICKET_CONTEXT_MS:
            return False  # a day's ticketed contact justifies a look (not at night)
        if not at_night and served_by and served_by & self._queue(ev.team) \
                and t - st.pending.get(customer, -HOUR_MS) < HOUR_MS:
            return False  # its own queue's customer, looked at again: a case being worked
        if not fresh:
            return False  # counted once per customer and hour
        st.pending[customer] = t
        if len(st.pending) > MAX_TICKETED:
            del st.pending[next(iter(st.pending))]
        _bump(hc, "unjustified")
        _bump(dc, "unjustified")
        return True

    def _team_bit(self, team: str | None) -> int:
        if not team:
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

    @staticmethod
    def _risk(st: ActorState) -> float:
        """Strongest level first, each further one counting half as much as the last.

        One strong signal or two moderate ones make an alert; a pile of weak ones
        (a new hire's first days, a new tool) does not.
        """
        if not st.levels:
            return 0.0  # most actors, most of the time
        keep, weight = 1.0, 1.0
        for lvl in sorted(st.levels.values(), reverse=True):
            keep *= 1.0 - weight * min(lvl, 0.999)
            weight *= 0.5
        return round(100.0 * (1.0 - keep), 1)

    # --- alerts ---------------------------------------------------------------------

    def threshold(self) -> float:
        """The alert bar: the configured floor, raised to the risk that an ordinary
        actor-day exceeds with probability ``false_alert_budget`` / 1,000."""
        floor = self.settings.alert_threshold
        bar = self.day_peaks.bar(self.settings.false_alert_budget / 1000.0)
        return floor if bar is None else max(floor, min(bar, 99.0))

    def _age_episode(self, st: ActorState, now_ms: int) -> None:
        """End the open alert episode once a whole day has passed without its risk at half
        the bar, judged as the risk stands before this event adds to it."""
        if self._risk(st) >= self.threshold() * self.settings.close_ratio:
            st.episode_high_ms = now_ms
        elif now_ms - st.episode_high_ms >= EPISODE_QUIET_MS:
            st.open_severity = None

    def _maybe_alert(self, st: ActorState, ev: AccessEvent, risk: float) -> Alert | None:
        bar = self.threshold()
        if st.open_severity is not None and risk >= bar * self.settings.close_ratio:
            st.episode_high_ms = ev.time_ms  # (see _age_episode)
        if risk < bar:
            return None
        severity = severity_of(risk, self.day_peaks.tail(risk), self.settings.false_alert_budget)
        opened = st.open_severity
        if opened is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[opened]:
            return None  # one alert per episode, raised again only when it escalates
        if opened is None:
            st.episode_id = hashlib.sha256(
                f"{ev.actor}\x00{ev.event_id}\x00episode".encode()).hexdigest()[:32]
        st.open_severity = severity
        st.episode_high_ms = ev.time_ms
        return self._alert(st, ev, risk, severity)

    def _alert(self, st: ActorState, ev: AccessEvent, risk: float, severity: str) -> Alert:
        reasons = self.reasons(st)
        evidence = st.evidence or ()
        ids = [ev.event_id] + [eid for eid, _ in reversed(evidence) if eid != ev.event_id]
        customers = {c for _, c in evidence if c is not None} | st.hour_customers
        who = f"{ev.actor} ({st.role})" if st.role else ev.actor
        summary = f"{who} " + "; ".join(r.description for r in reasons[:3]) + "."
        if st.profile.hours < MIN_OWN_HOURS:
            summary += " Their own baseline is still young: judged against their peers."
        elif self.day_peaks.bar(1.0) is None:
            summary += " The deployment's baseline is still young: few actor-days learned."
        digest = hashlib.sha256(f"{ev.actor}\x00{ev.event_id}\x00{severity}".encode()).hexdigest()
        return Alert(alert_id=digest[:32], actor=ev.actor, role=st.role, time_ms=ev.time_ms,
                     severity=severity, score=risk, summary=summary, reasons=reasons,
                     event_ids=ids[:MAX_EVIDENCE], customers=len(customers),
                     episode_id=st.episode_id)

    def reasons(self, st: ActorState) -> list[Reason]:
        """Each contributing signal's explanation at its decayed level, strongest first:
        text is built here, when an alert is, never per event."""
        peer = self._peer(st.peer)
        out = []
        for name, lvl in st.levels.items():
            sig = self._by_name.get(name)
            seen = st.observed.get(name)
            if sig is None or seen is None or lvl <= FORGET_LEVEL:
                continue
            out.append(sig.explain(seen[1], lvl, st.profile, peer))
        return sorted(out, key=lambda r: -r.score)

    def expire_idle(self, now_ms: int) -> list[str]:
        """Forget actors with no event in the last ``actor_ttl_s`` of event time; their names.

        Bounds memory to the actors active within the TTL. A returning actor starts afresh
        and is judged against its peers until it has a history again (never for being new).

        >>> eng = Engine(Settings(actor_ttl_s=3600))
        >>> eng.actors["old"] = ActorState("old", "r", eng.new_profile())
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
