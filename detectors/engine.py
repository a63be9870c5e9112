"""The detection core: validated events in, risk and alerts out.

Both drivers call :meth:`Engine.process` once per valid event, in order per
actor. State is keyed by actor (:class:`ActorState`), so a driver may shard
actors across workers freely. Time is event time only; nothing reads the wall
clock, so a replay of the same file gives the same output.

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
>>> alerts[0].severity, alerts[0].reasons[0].detector
('low', 'unjustified')
>>> print(alerts[-1].summary)  # doctest: +ELLIPSIS
ann (support_agent) accessed 31 customers without a ticket; ...
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.events import AccessEvent, ContextEntry
from detectors.models import FirstSeen, Reason, TicketHabit, VolumeBaseline, saturate
from detectors.settings import Settings

HOUR_MS = 3_600_000
MAX_EVIDENCE = 50
# Severity bands of the risk score (0-100); an alert opens at the configured threshold.
SEVERITIES = ((95.0, "critical"), (85.0, "high"), (70.0, "medium"), (0.0, "low"))
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


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
    addr = ipaddress.ip_address(ip)
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


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


@dataclass(slots=True)
class ActorState:
    """Everything snoopwatch remembers about one actor."""

    volume: VolumeBaseline
    first_seen: FirstSeen
    tickets: TicketHabit
    role: str | None = None
    hour: int = -1
    hour_records: int = 0
    hour_customers: set[str] = field(default_factory=set)
    unjustified: float = 0.0  # decaying count of unticketed customer accesses
    customer_reads: float = 0.0  # decaying count of all customer accesses
    unjustified_customers: set[str] = field(default_factory=set)
    levels: dict[str, float] = field(default_factory=dict)  # detector -> decaying score
    # detector -> (its score then, the reasons behind its current level)
    reasons: dict[str, tuple[float, list[Reason]]] = field(default_factory=dict)
    last_ms: int = 0
    evidence: deque = field(default_factory=lambda: deque(maxlen=MAX_EVIDENCE))
    open_severity: str | None = None  # severity of the open alert episode, if any


class Engine:
    """Per-actor detectors, risk and alerting, for one shard of actors."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.actors: dict[str, ActorState] = {}
        self.vip_customers: set[str] = set()
        self.departing: dict[str, ContextEntry] = {}

    @property
    def tracked_actors(self) -> int:
        return len(self.actors)

    def apply_context(self, entry: ContextEntry) -> None:
        """Record (or remove) a watchlist fact. Used by later detectors; kept in state now."""
        book: Any = self.vip_customers if entry.kind == "vip_customer" else self.departing
        if entry.removed:
            book.discard(entry.id) if isinstance(book, set) else book.pop(entry.id, None)
        elif isinstance(book, set):
            book.add(entry.id)
        else:
            book[entry.id] = entry

    def _state(self, ev: AccessEvent) -> ActorState:
        st = self.actors.get(ev.actor)
        if st is None:
            s = self.settings
            st = ActorState(
                volume=VolumeBaseline(min_hours=s.min_history_hours, min_count=s.volume_min_count),
                first_seen=FirstSeen(min_events=s.min_history_events,
                                     max_values=s.max_profile_values),
                tickets=TicketHabit(min_events=s.min_history_events),
            )
            self.actors[ev.actor] = st
        return st

    def process(self, ev: AccessEvent) -> Verdict:
        st = self._state(ev)
        if ev.role:
            st.role = ev.role
        decay = self._decay(st, ev.time_ms)
        self._roll_hour(st, ev.time_ms)

        # Volume: the running hour against the actor's normal hour.
        st.hour_records += ev.records
        cap = self.settings.max_tracked_customers
        if ev.customer_id is not None and len(st.hour_customers) < cap:
            st.hour_customers.add(ev.customer_id)
        counts = {"records": st.hour_records, "customers": len(st.hour_customers)}
        contributed = self._raise(st, "volume", st.volume.score_one(counts),
                                  st.volume.explain(counts))

        # Unjustified: more unticketed customer reads than the actor's own habit explains.
        habit = {"customer": ev.customer_id is not None, "ticketed": bool(ev.ticket)}
        share = st.tickets.score_one(habit)
        st.unjustified *= decay
        st.customer_reads *= decay
        if habit["customer"]:
            st.customer_reads += 1.0
        if share > 0:
            st.unjustified += 1.0
            st.unjustified_customers.add(ev.customer_id)  # type: ignore[arg-type]
            n = len(st.unjustified_customers)
            excess = st.unjustified - (1.0 - share) * st.customer_reads
            score = share * saturate(excess, 4.0)
            desc = (f"accessed {n} customers without a ticket; {round(100 * share)}% of "
                    "their customer accesses normally carry one")
            contributed |= self._raise(st, "unjustified", score, [Reason(
                "unjustified", score, desc, {"unticketed_customers": n},
                {"ticketed_share": round(share, 3)})])
        if st.levels.get("unjustified", 0.0) < 0.5:
            # Don't let a run of unticketed reads teach the actor that they are normal.
            st.tickets.learn_one(habit)

        # First-seen traits of this access.
        traits = {"access": f"{ev.action}:{ev.resource_type}", "client": ev.client,
                  "network": network_of(ev.source_ip)}
        contributed |= self._raise(st, "first_seen", st.first_seen.score_one(traits),
                                   st.first_seen.explain(traits))
        st.first_seen.learn_one(traits)

        if contributed:
            st.evidence.append((ev.event_id, ev.customer_id))
        risk = self._risk(st)
        return Verdict(score=risk, alert=self._maybe_alert(st, ev, risk))

    def _decay(self, st: ActorState, now_ms: int) -> float:
        """Decay every level by the event time elapsed since the actor's last event."""
        elapsed = max(0, now_ms - st.last_ms) if st.last_ms else 0
        st.last_ms = max(st.last_ms, now_ms)
        factor = 0.5 ** (elapsed / 1000 / self.settings.decay_half_life_s)
        if factor < 1.0:
            for name in st.levels:
                st.levels[name] *= factor
        return factor

    def _roll_hour(self, st: ActorState, now_ms: int) -> None:
        hour = now_ms // HOUR_MS
        if hour <= st.hour:
            return  # same hour, or a late event: it counts toward the running hour
        if st.hour >= 0 and (st.hour_records or st.hour_customers):
            st.volume.learn_one({"records": st.hour_records,
                                 "customers": len(st.hour_customers)})
        st.hour, st.hour_records = hour, 0
        st.hour_customers = set()
        if st.unjustified < 0.5:
            st.unjustified_customers = set()

    @staticmethod
    def _raise(st: ActorState, name: str, score: float, reasons: list[Reason]) -> bool:
        """Raise a detector's level to ``score`` if higher; True if the event contributed."""
        if score <= 0.01:
            return False
        st.levels[name] = max(score, st.levels.get(name, 0.0))
        st.reasons[name] = (score, reasons)  # the latest observation explains the level
        return True

    @staticmethod
    def _risk(st: ActorState) -> float:
        keep = 1.0
        for level in st.levels.values():
            keep *= 1.0 - min(level, 0.999)
        return round(100.0 * (1.0 - keep), 1)

    def _maybe_alert(self, st: ActorState, ev: AccessEvent, risk: float) -> Alert | None:
        s = self.settings
        if st.open_severity is not None and risk < s.alert_threshold * s.close_ratio:
            st.open_severity = None  # the episode is over
        if risk < s.alert_threshold:
            return None
        severity = severity_of(risk)
        opened = st.open_severity
        if opened is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[opened]:
            return None  # one alert per episode, re-raised only when it escalates
        st.open_severity = severity
        return self._alert(st, ev, risk, severity)

    def _alert(self, st: ActorState, ev: AccessEvent, risk: float, severity: str) -> Alert:
        reasons = self._current_reasons(st)
        ids = [ev.event_id] + [eid for eid, _ in reversed(st.evidence) if eid != ev.event_id]
        customers = {c for _, c in st.evidence if c is not None} | st.hour_customers
        who = f"{ev.actor} ({st.role})" if st.role else ev.actor
        summary = f"{who} " + "; ".join(r.description for r in reasons[:3]) + "."
        digest = hashlib.sha256(f"{ev.actor}\x00{ev.event_id}\x00{severity}".encode()).hexdigest()
        return Alert(alert_id=digest[:32], actor=ev.actor, role=st.role, time_ms=ev.time_ms,
                     severity=severity, score=risk, summary=summary, reasons=reasons,
                     event_ids=ids[:MAX_EVIDENCE], customers=len(customers))

    @staticmethod
    def _current_reasons(st: ActorState) -> list[Reason]:
        """Each contributing detector's reasons, scaled to its decayed level."""
        out = []
        for name, level in st.levels.items():
            peak, reasons = st.reasons.get(name, (0.0, []))
            if level <= 0.01 or peak <= 0:
                continue
            out.extend(Reason(r.detector, r.score * level / peak, r.description, r.observed,
                              r.expected) for r in reasons)
        return sorted(out, key=lambda r: -r.score)
