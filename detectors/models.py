"""Per-actor detectors, each with river's two-method contract.

``learn_one(x)`` folds one observation into the actor's normal, ``score_one(x)``
says how anomalous ``x`` is against it (0 = ordinary, 1 = as anomalous as it
gets; high means anomalous), and ``explain(x)`` returns :class:`Reason` objects
that put the observed value beside the actor's normal. Nothing here is random,
so every detector is deterministic, and all state is plain attributes, so it
pickles.
"""

from __future__ import annotations

import heapq
import math
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from detectors.calibrate import saturate


@dataclass(slots=True)
class Reason:
    """One detector's contribution to an alert (SPEC §2 ``reasons``)."""

    detector: str
    score: float
    description: str
    observed: Any
    expected: Any

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "score": round(100 * self.score, 1),
                "description": self.description, "observed": self.observed,
                "expected": self.expected}


class RunningStats:
    """Mean and variance that track a drifting normal.

    Exact (Welford) for the first ``1/alpha`` values, then exponentially weighted
    with weight ``alpha``, so a new actor's normal settles quickly and an old
    actor's normal follows slow change.

    >>> s = RunningStats(alpha=0.1)
    >>> for v in (1.0, 2.0, 3.0):
    ...     s.update(v)
    >>> s.n, s.mean, round(s.std, 3)
    (3, 2.0, 0.816)
    """

    __slots__ = ("alpha", "mean", "n", "var")

    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha = alpha
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def update(self, value: float, weight: float = 1.0) -> None:
        """Fold in ``value``; ``weight`` < 1 lets a doubtful value count for less."""
        self.n += 1
        weight *= max(1.0 / self.n, self.alpha)
        delta = value - self.mean
        self.mean += weight * delta
        self.var = (1.0 - weight) * (self.var + weight * delta * delta)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


UNITS = {"records": "records", "customers": "distinct customers",
         "egress": "records exported, downloaded or streamed", "egress_bytes": "bytes out"}


def fmt_count(n: float) -> str:
    """Counts as people read them: 7, 2.5, 12, 3.4k, 12M.

    >>> [fmt_count(v) for v in (7, 2.5, 12, 3400, 12_000_000)]
    ['7', '2.5', '12', '3.4k', '12M']
    """
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit if n < 10 * size \
                else f"{n / size:.0f}{unit}"
    return f"{n:.0f}" if abs(n) >= 10 or n == int(n) else f"{n:.1f}"


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class TimeOfWeek:
    """When an actor (or a peer group) usually works: 24 hours x weekday/weekend.

    ``score_one(t_ms)`` is how surprising activity at that time is: 0 for the
    actor's usual hours, rising for hours it has (almost) never worked.

    >>> tw = TimeOfWeek(min_events=20)
    >>> nine_am = 1_793_577_600_000 + 9 * 3_600_000     # Monday 2026-11-02, 09:00 UTC
    >>> for day in range(5):
    ...     for k in range(10):
    ...         tw.learn_one(nine_am + day * 86_400_000 + k * 60_000)
    >>> tw.score_one(nine_am + 7 * 86_400_000)
    0.0
    >>> round(tw.score_one(nine_am - 6 * 3_600_000), 2)  # 3 am
    0.64
    """

    __slots__ = ("counts", "min_events", "n", "scale", "tolerated")

    def __init__(self, min_events: int = 50, tolerated: float = 1.5, scale: float = 0.5
                 ) -> None:
        self.counts = array("L", bytes(48 * array("L").itemsize))  # no int object per slot
        self.n = 0
        self.min_events = min_events
        self.tolerated = tolerated
        self.scale = scale

    @staticmethod
    def slot(t_ms: int) -> int:
        hour = (t_ms // 3_600_000) % 24
        weekday = (t_ms // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday
        return hour + (24 if weekday >= 5 else 0)

    def learn_one(self, t_ms: int) -> None:
        self.counts[self.slot(t_ms)] += 1
        self.n += 1

    def share(self, t_ms: int) -> float:
        """Smoothed share of activity in this slot, over the neighbouring hours too."""
        s = self.slot(t_ms)
        base, hour = s - s % 24, s % 24
        c = self.counts
        h0, h2 = (hour - 1) % 24, (hour + 1) % 24  # (spelled out: this runs per event)
        near = c[base + h0] + c[base + hour] + c[base + h2]
        # The same hours on any day: a weekend shift at one's usual hours is not odd.
        any_day = c[h0] + c[hour] + c[h2] + c[24 + h0] + c[24 + hour] + c[24 + h2]
        return (max(near, 0.3 * any_day) + 0.5) / (self.n + 1)

    def score_one(self, t_ms: int) -> float:
        if self.n < self.min_events:
            return 0.0
        return saturate(-math.log10(self.share(t_ms)) - self.tolerated, self.scale)

    def usual_hours(self) -> str:
        """The actor's busiest hours, e.g. '08-16 UTC'."""
        hours = [self.counts[h] + self.counts[h + 24] for h in range(24)]
        busy = [h for h in range(24) if hours[h] >= 0.02 * max(1, self.n)]
        if not busy:
            return "no usual hours yet"
        # The shortest span of the day (it may wrap past midnight) that holds them all.
        gaps = [((busy[(i + 1) % len(busy)] - h) % 24 or 24, i) for i, h in enumerate(busy)]
        _, last = max(gaps)
        start, end = busy[(last + 1) % len(busy)], busy[last]
        return f"{start:02d}-{(end + 1) % 24:02d} UTC"


class FirstSeen:
    """How rare each categorical trait of an access is in the actor's own history.

    ``x`` maps trait name to value, e.g. ``{"access": "export:report",
    "client": "curl", "network": "203.0.113.0/24"}``. A value's surprise is
    ``-log10`` of its smoothed frequency in the actor's history; a value the actor
    never used, once it has ``min_events`` of history, is the strongest case.
    Each trait's score is capped by its weight, so one new client or network
    alone stays below an alert: it takes several unusual traits at once, or
    another detector agreeing.

    >>> fs = FirstSeen(min_events=5)
    >>> for _ in range(50):
    ...     fs.learn_one({"client": "crm-console", "network": "10.1.2.0/24"})
    >>> fs.score_one({"client": "crm-console", "network": "10.1.2.0/24"})
    0.0
    >>> round(fs.score_one({"client": "curl", "network": "203.0.113.0/24"}), 2)
    0.4
    """

    weights = {"access": 0.3, "client": 0.3, "network": 0.3}
    __slots__ = ("_top", "counts", "max_values", "min_events", "n", "scale", "tolerated")

    def __init__(self, min_events: int = 30, max_values: int = 256,
                 tolerated: float = 1.3, scale: float = 0.5) -> None:
        self.min_events = min_events
        self.max_values = max_values
        self.tolerated = tolerated  # -log10 frequency tolerated: ~1 use in 20
        self.scale = scale
        self.n = 0
        self.counts: dict[str, dict[str, int]] = {}
        # trait -> (n when computed, its most used values): a peer group's profile holds
        # thousands of values, and sorting them for every explanation dominated the worker.
        self._top: dict[str, tuple[int, list[tuple[str, int]]]] | None = None

    def usual(self, trait: str, but: str | None = None, k: int = 3) -> list[tuple[str, int]]:
        """The ``k`` most used values of ``trait`` (other than ``but``), with their counts."""
        seen = self.counts.get(trait, {})
        if len(seen) <= 4 * k:
            top = sorted(seen.items(), key=lambda vc: -vc[1])
        else:  # large profiles: refreshed after 5% more events, slightly stale in between
            cache = self._top if self._top is not None else {}
            n, top = cache.get(trait, (-1, []))
            if n < 0 or self.n > 1.05 * n + 20:
                top = heapq.nlargest(k + 1, seen.items(), key=lambda vc: vc[1])
                cache[trait] = (self.n, top)
                self._top = cache
        return [(v, c) for v, c in top if v != but][:k]

    def learn_one(self, x: dict[str, str | None]) -> None:
        self.n += 1
        for trait, value in x.items():
            if value is None:
                continue
            seen = self.counts.setdefault(trait, {})
            if value not in seen and len(seen) >= self.max_values:
                # Forget the rarest quarter, so the profile stays bounded: at once, since a
                # peer group's profile is full and meets new values (networks) all the time.
                for rare in sorted(seen, key=seen.__getitem__)[: max(1, self.max_values // 4)]:
                    del seen[rare]
            seen[value] = seen.get(value, 0) + 1

    def _trait_score(self, trait: str, value: str | None) -> float:
        if value is None or self.n < self.min_events:
            return 0.0
        count = self.counts.get(trait, {}).get(value, 0)
        surprise = -math.log10((count + 0.5) / (self.n + 1))
        return self.weights.get(trait, 0.3) * saturate(surprise - self.tolerated, self.scale)

    def score_one(self, x: dict[str, str | None]) -> float:
        keep = 1.0
        for trait, value in x.items():
            keep *= 1.0 - self._trait_score(trait, value)
        return 1.0 - keep

    def explain(self, x: dict[str, str | None]) -> list[Reason]:
        out = []
        for trait, value in x.items():
            score = self._trait_score(trait, value)
            if score <= 0:
                continue
            count = self.counts.get(trait, {}).get(value, 0)  # type: ignore[arg-type]
            usual = self.usual(trait, but=value)
            if not usual:  # its normal is to have none (most accesses return no fields)
                without = self.n - sum(self.counts.get(trait, {}).values())
                usual = [(f"no {trait}", without)] if without > 0 else []
            what = "for the first time" if count == 0 else f"({count} of {self.n} accesses)"
            desc = f"used {trait} {value} {what}"
            if usual:
                desc += "; usually " + ", ".join(v for v, _ in usual)
            out.append(Reason(f"first_seen_{trait}", score, desc, value, dict(usual)))
        return out
