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
from typing import Any

from detectors.priors import (
    BUDGET_HIGH_QUANTILE,
    BUDGET_HIGH_TAIL,
    BUDGET_LOW_QUANTILE,
    BUDGET_TAIL_RATIO,
    DAILY_ALPHA,
    DAILY_FLOOR,
    DAILY_MIN_DAYS,
    DAILY_MULTIPLE,
    DAILY_RECENT_DAYS,
    DAILY_SCALE,
    DAILY_SIGMAS,
    DAY_MIN_SD,
    DISPLAY_WHOLE_FROM,
    FIRST_SEEN_FORGET_PARTS,
    FIRST_SEEN_MAX_VALUES,
    FIRST_SEEN_MIN_EVENTS,
    FIRST_SEEN_PSEUDO_COUNT,
    FIRST_SEEN_SCALE,
    FIRST_SEEN_TOLERATED,
    HOURS_ANY_DAY_SHARE,
    HOURS_MIN_EVENTS,
    HOURS_PSEUDO_COUNT,
    HOURS_SCALE,
    HOURS_TOLERATED,
    NOVELTY_WEIGHT,
    PEAK_FORGET,
    PEAK_MULTIPLE,
    PEAK_SCALE,
    PEAK_TOLERANCE_SHARE,
    PEAKS_BIN_WIDTH,
    PEAKS_TOP,
    REPEAT_DISCOUNT,
    REPEAT_MARGIN,
    RUNNING_ALPHA,
    TICKET_ALPHA,
    TICKET_MIN_EVENTS,
    USUAL_CACHE_FROM,
    USUAL_CACHE_REFRESH,
    USUAL_CACHE_SLACK,
    USUAL_HOURS_SHARE,
    USUAL_VALUES,
    VOLUME_ALPHA,
    VOLUME_MIN_COUNT,
    VOLUME_MIN_HOURS,
    VOLUME_SCALE,
    VOLUME_SD_FLOOR,
    VOLUME_Z0,
)

# Not priors: the calendar (slots of a week) and a guard that keeps a logarithm finite.
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_WEEKEND_FROM = 5  # Saturday
_RISK_MAX, _HAZARD_MIN = 99.99, 1e-9  # risk 100 has no finite hazard


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

    def __init__(self, alpha: float = RUNNING_ALPHA) -> None:
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


def _restore(obj: Any, state: Any, **added: Any) -> None:
    """Unpickle a slots class whose record may predate some slots: ``added`` (their values
    for an older record) first, then the record's own."""
    for name, value in {**added, **(state[1] if isinstance(state, tuple) else state)}.items():
        setattr(obj, name, value)


def saturate(excess: float, scale: float) -> float:
    """Map a non-negative excess to [0, 1): 0 stays 0, ``scale`` maps to 0.63."""
    return 0.0 if excess <= 0 else 1.0 - math.exp(-excess / scale)



_SHARED: dict[tuple, dict] = {}


def _shared(d: dict[str, int]) -> dict[str, int]:
    """One copy of a read-only settings dict for every instance that has it."""
    return _SHARED.setdefault(tuple(sorted(d.items())), d)


class Tail:
    """How many observations reached a value: a histogram whose bins a subclass defines
    (``_bin``, the last holding everything beyond); exact to a bin whatever order the values
    come in, mergeable, deterministic."""

    __slots__ = ("bins", "n")

    def __init__(self, size: int) -> None:
        self.bins = [0] * size
        self.n = 0

    def __getstate__(self) -> tuple:
        return (self.bins, self.n)

    def __setstate__(self, state: tuple) -> None:
        self.bins, self.n = state

    def _bin(self, value: float) -> int:
        raise NotImplementedError

    def add(self, value: float) -> None:
        self.bins[self._bin(value)] += 1
        self.n += 1

    def reaching(self, value: float) -> int:
        """The observations that fell in ``value``'s bin or above."""
        return sum(self.bins[self._bin(value):])


class VolumeBaseline:
    """Per-hour counts against a learned normal (the actor's own, or its peers').

    ``x`` is an hour's (or a running hour's) counts, e.g. ``{"records": int,
    "customers": int}``. The normal is learned in log space, where staff volumes
    are roughly symmetric, and a count is scored by how many standard deviations
    it sits above it (``z0`` of them are tolerated). Counts under their
    ``min_counts`` are never anomalous, and nothing is scored before ``min_hours``
    hours have been learned.

    >>> vb = VolumeBaseline(min_hours=3)
    >>> for n in (4, 6, 5, 3, 7, 5):
    ...     vb.learn_one({"records": n, "customers": n // 2 + 1})
    >>> vb.score_one({"records": 6, "customers": 3})
    0.0
    >>> round(vb.score_one({"records": 240, "customers": 200}), 2)
    0.97
    >>> vb.explain({"records": 240, "customers": 200})[0].expected
    {'records': 5, 'customers': 3, 'hours_learned': 6, 'largest': {'records': 7, 'customers': 4}}
    """

    # Slots and shared settings: every actor holds three of these (memory per actor, #6).
    __slots__ = ("alpha", "features", "floor", "min_counts", "min_hours", "name", "peak",
                 "period", "scale", "stats", "z0")

    def __init__(self, features: tuple[str, ...] = ("records", "customers"),
                 min_counts: dict[str, int] | None = None, alpha: float = VOLUME_ALPHA,
                 min_hours: int = VOLUME_MIN_HOURS, floor: float = VOLUME_SD_FLOOR,
                 z0: float = VOLUME_Z0, scale: float = VOLUME_SCALE,
                 name: str = "volume", period: str = "hour") -> None:
        self.features = features
        self.min_counts = _shared({f: VOLUME_MIN_COUNT for f in features} | (min_counts or {}))
        self.alpha = alpha
        self.min_hours = min_hours
        self.floor = floor
        self.z0 = z0
        self.scale = scale
        self.name = name
        self.period = period  # what one observation covers: "hour" or "day"
        self.stats = {f: RunningStats(alpha) for f in features}
        # The largest hour seen (log1p), slowly forgotten: "ten times their biggest
        # export" is telling even for an actor whose hours vary wildly.
        self.peak = {f: 0.0 for f in features}

    @property
    def hours(self) -> int:
        return self.stats[self.features[0]].n

    def learn_one(self, x: dict[str, int], weight: float = 1.0) -> None:
        """Learn one period's counts; ``weight`` < 1 for a period under suspicion, which
        also does not become the largest on record."""
        for f in self.features:
            v = math.log1p(x.get(f, 0))
            self.stats[f].update(v, weight)
            if weight >= 1.0:
                self.peak[f] = max(v, self.peak[f] - PEAK_FORGET)
            else:  # (not below no records at all)
                self.peak[f] = max(0.0, self.peak[f] - PEAK_FORGET)

    def z(self, f: str, value: float, floor: float | None = None) -> float:
        """Standard deviations of ``log1p(value)`` above the learned normal.

        ``floor`` bounds the standard deviation from below: a short or quiet history
        understates how much an hour can vary (the engine passes the peers' spread).
        """
        st = self.stats[f]
        return (math.log1p(value) - st.mean) / max(st.std, self.floor, floor or 0.0)

    def _feature_score(self, f: str, value: int, z0: float, floor: float | None) -> float:
        """One count's score, once enough hours are learned and it reaches ``min_counts``."""
        by_spread = saturate(self.z(f, value, floor) - z0, self.scale)
        if math.log1p(value) <= self.peak[f] + REPEAT_MARGIN:
            by_spread *= REPEAT_DISCOUNT  # no bigger than what it has done before
        # Beyond 3x the largest hour on record (z0 shifts it like the spread test).
        by_peak = saturate(math.log1p(value) - self.peak[f] - math.log(PEAK_MULTIPLE)
                           - (z0 - self.z0) * PEAK_TOLERANCE_SHARE, PEAK_SCALE)
        return max(by_spread, by_peak)

    def score_one(self, x: dict[str, int], z0: float | None = None,
                  floors: dict[str, float] | None = None) -> float:
        if self.hours < self.min_hours:
            return 0.0
        z0 = self.z0 if z0 is None else z0
        best = 0.0
        for f in self.features:  # a loop, not max(genexpr): it runs for nearly every event
            value = x.get(f, 0)
            if value >= self.min_counts[f]:
                best = max(best, self._feature_score(f, value, z0,
                                                     floors.get(f) if floors else None))
        return best

    def usual(self, f: str) -> int:
        """The typical hourly count (geometric mean) for feature ``f``."""
        return round(math.expm1(self.stats[f].mean))

    def explain(self, x: dict[str, int], z0: float | None = None, whose: str = "usually",
                floors: dict[str, float] | None = None) -> list[Reason]:
        score = self.score_one(x, z0, floors)
        if score <= 0:
            return []
        observed = {f: x.get(f, 0) for f in self.features}
        expected: dict[str, Any] = {f: self.usual(f) for f in self.features}
        expected["hours_learned"] = self.hours
        expected["largest"] = {f: round(math.expm1(self.peak[f])) for f in self.features}
        shown = ", ".join(f"{_fmt(observed[f])} {UNITS.get(f, f)}" for f in self.features)
        usual = ", ".join(f"{_fmt(expected[f])}" for f in self.features)
        largest = ", ".join(_fmt(expected["largest"][f]) for f in self.features)
        desc = (f"{shown} in one {self.period}; {whose} {usual} an active {self.period} "
                f"(at most {largest})")
        return [Reason(self.name, score, desc, observed, expected)]


UNITS = {"records": "records", "customers": "distinct customers",
          "egress": "records exported, downloaded or streamed", "egress_bytes": "bytes out"}


def _fmt(n: float) -> str:
    """Counts as people read them: 12, 3.4k, 12M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= DISPLAY_WHOLE_FROM * size:
            return f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


_MAD_PER_SIGMA = 1.4826  # a normal's standard deviation per median absolute deviation


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2 if n else 0.0


class DailyCount:
    """How often something happens per active day, and whether the last days exceed it.

    ``add()`` counts today's occurrences; ``roll()`` closes the day (learning it with a
    ``weight``, < 1 for a day under suspicion). ``score_one()`` tests today together with
    the two previous active days against the usual daily rate: the total must be a
    multiple (2.5x) of what is usual *and* well outside the actor's own day-to-day spread
    (at least Poisson noise, 3 sigma), so a sustained rise that no single day shows adds
    up, while one odd day among ordinary ones does not. ``floor`` is the least rate assumed,
    so a habit of "almost never" is not broken by a single occurrence.

    >>> dc = DailyCount(floor=0.25)
    >>> for n in (0, 1, 0, 0, 1, 0, 1):    # about one every three days
    ...     dc.add(n)
    ...     dc.roll()
    >>> dc.add(2)
    >>> dc.score_one()                      # two today: within the habit
    0.0
    >>> dc.roll(weight=0.1)                 # (a doubtful day is barely learned)
    >>> dc.add(3)
    >>> dc.roll(weight=0.1)
    >>> dc.add(3)                           # then three a day, day after day
    >>> round(dc.score_one(), 2)
    0.81
    """

    __slots__ = ("counted", "counted_sq", "days", "floor", "min_days", "recent", "today", "usual",
                 "window")

    def __init__(self, floor: float = DAILY_FLOOR, min_days: int = DAILY_MIN_DAYS,
                 alpha: float = DAILY_ALPHA, window: int = 0) -> None:
        self.floor = floor
        self.min_days = min_days
        self.usual = RunningStats(alpha)
        self.today = 0
        self.recent: tuple[int, ...] = ()  # the two previous active days' counts
        # With a window: the last ``window`` days as learned, for :meth:`robust_z`.
        self.window = window
        self.days: tuple[float, ...] = ()
        # The sum of what occurrences counted, and of its squares: the noise of a count of
        # weighted ones (add_weighted) is a compound Poisson's, not a plain count's.
        self.counted = 0.0
        self.counted_sq = 0.0

    def __setstate__(self, state: Any) -> None:
        # (A record written before the window, or the weights, restores without them.)
        _restore(self, state, window=0, days=(), counted=0.0, counted_sq=0.0)

    @property
    def rate(self) -> float:
        return max(self.usual.mean, self.floor)

    def add(self, n: int | float = 1) -> None:  # (a union: Cython keeps ints ints)
        """Count ``n`` occurrences."""
        self.today += n
        self.counted += n
        self.counted_sq += n

    def add_weighted(self, weight: float) -> None:
        """Count one occurrence as ``weight`` (a telling one counts more). Such a count is
        noisier than a plain one of the same size (a compound Poisson's variance is the
        rate times the mean squared weight), and the Poisson floor of its spread says so:

        >>> plain, weighted = DailyCount(floor=0.3, min_days=3), DailyCount(floor=0.3, min_days=3)
        >>> for _ in range(5):                  # quiet days
        ...     plain.roll()
        ...     weighted.roll()
        >>> plain.add(5)                        # five looks today
        >>> weighted.add_weighted(2.5)          # or two that count 2.5 each
        >>> weighted.add_weighted(2.5)
        >>> round(plain.score_one(), 2), round(weighted.score_one(), 2)
        (0.59, 0.0)
        """
        self.today += weight
        self.counted += weight
        self.counted_sq += weight * weight

    def roll(self, weight: float = 1.0) -> None:
        if self.window:
            # A doubtful day (weight < 1) enters the window at most one spread above the
            # centre: a run of them moves the usual only slowly, as the weight does the mean.
            day = float(self.today)
            if weight < 1.0 and len(self.days) >= self.min_days:
                centre, spread = self.robust()
                day = min(day, centre + spread)
            self.days = (*self.days, day)[-self.window:]
        self.usual.update(self.today, weight)
        self.recent = (*self.recent, self.today)[-DAILY_RECENT_DAYS:]
        self.today = 0

    def _excess(self, total: float, days: int, min_sd: float = 0.0,
                multiple: float = DAILY_MULTIPLE, sigmas: float = DAILY_SIGMAS) -> float:
        expected = days * self.rate
        # (Poisson noise, of a weighted count: the mean squared weight over the mean weight)
        unit = self.counted_sq / self.counted if self.counted else 1.0
        sd = max(math.sqrt(max(days * self.usual.var, expected * unit)), min_sd)
        return saturate(min(total / expected / multiple, (total - expected) / sd / sigmas)
                        - 1.0, DAILY_SCALE)

    def score_one(self, multiple: float = DAILY_MULTIPLE, sigmas: float = DAILY_SIGMAS,
                  cap: float = 0.0) -> float:
        """Today and the two previous active days against the usual rate (0 to 1). With a
        ``cap`` (and a window), each of them counts at most ``cap`` spreads above the usual
        day (:meth:`robust`): one huge day among ordinary ones is a single day's news, not a
        rise over three, on that day or the two after.

        >>> dc = DailyCount(window=15)
        >>> for n in (2, 3, 1, 2, 3, 2, 2):
        ...     dc.add(n)
        ...     dc.roll()
        >>> dc.add(15)                          # one export day
        >>> round(dc.score_one(1.75, 2.5), 2), dc.score_one(1.75, 2.5, cap=3.0)
        (0.75, 0.0)
        """
        if self.usual.n < self.min_days:
            return 0.0
        total = self.today + sum(self.recent)
        if cap and self.days:
            centre, spread = self.robust()
            most = centre + cap * spread
            total = min(self.today, most) + sum(min(day, most) for day in self.recent)
        return self._excess(total, 1 + len(self.recent), 0.0, multiple, sigmas)

    def excess_share(self) -> float:
        """How much of one more occurrence today lies beyond the usual rate and its Poisson
        noise (one standard deviation): 0 while the rate is unknown (the first
        ``min_days``) and within it, towards 1 as today's count outgrows it. The floor
        counts as nothing usual: an actor who almost never does it has no allowance.

        >>> dc = DailyCount(floor=0.3, min_days=3)
        >>> for n in (6, 8, 7):                 # a steady habit of about seven a day
        ...     dc.add(n)
        ...     dc.roll()
        >>> dc.add(4)
        >>> dc.excess_share()                   # the fifth today: within the habit
        0.0
        >>> dc.add(10)
        >>> round(dc.excess_share(), 2)         # the fifteenth: over a third beyond
        0.38
        """
        if self.usual.n < self.min_days:
            return 0.0
        usual = max(0.0, self.rate - self.floor)
        allowance = usual + math.sqrt(usual)  # (and a standard deviation of Poisson noise)
        return max(0.0, 1.0 - allowance / (self.today + 1))

    def z(self) -> float:
        """Today's count in units of the usual day-to-day spread (at least Poisson noise)."""
        rate = self.rate
        return (self.today - rate) / max(math.sqrt(self.usual.var), math.sqrt(rate))

    def robust(self) -> tuple[float, float]:
        """The usual day and its spread, robustly: the window's median, and its scaled median
        absolute deviation, at least the Poisson noise of the rate. One export day of 20
        downloads among days of 1 to 5 makes a mean and standard deviation of 6.4 and 6.9;
        the median and the spread stay 4 and 3.

        >>> dc = DailyCount(window=15)
        >>> for n in (4, 2, 20, 5, 1):
        ...     dc.add(n)
        ...     dc.roll()
        >>> [round(v, 1) for v in dc.robust()], round(dc.usual.mean, 1), round(dc.usual.std, 1)
        ([4.0, 3.0], 6.4, 6.9)
        """
        days = sorted(self.days)
        centre = _median(days)
        mad = _median(sorted(abs(d - centre) for d in days))
        # (The rate, not the median, sets the least spread: a habit of rare downloads has a
        # median of 0, and one or two on a day are its Poisson noise, not a rise.)
        return centre, max(_MAD_PER_SIGMA * mad, math.sqrt(self.rate))

    def robust_z(self) -> float:
        """Today's count in the window's spreads above its median, less half a count (a
        count exceeds the median by at least that: the continuity correction of a discrete
        count); :meth:`z` without a window."""
        if not self.window or not self.days:
            return self.z()
        centre, spread = self.robust()
        return (self.today - centre - 0.5) / spread

    def day_score(self, min_sd: float = DAY_MIN_SD) -> float:
        """Today alone, with at least ``min_sd`` of spread (one day is noisier than three)."""
        if self.usual.n < self.min_days:
            return 0.0
        return self._excess(self.today, 1, min_sd)


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

    def __init__(self, min_events: int = HOURS_MIN_EVENTS, tolerated: float = HOURS_TOLERATED,
                 scale: float = HOURS_SCALE) -> None:
        self.counts = array("L", bytes(2 * 24 * array("L").itemsize))  # no int object per slot
        self.n = 0
        self.min_events = min_events
        self.tolerated = tolerated
        self.scale = scale

    @staticmethod
    def slot(t_ms: int) -> int:
        hour = (t_ms // 3_600_000) % 24
        weekday = (t_ms // 86_400_000 + _EPOCH_WEEKDAY) % 7
        return hour + (24 if weekday >= _WEEKEND_FROM else 0)

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
        return (max(near, HOURS_ANY_DAY_SHARE * any_day) + HOURS_PSEUDO_COUNT) / (self.n + 1)

    def score_one(self, t_ms: int) -> float:
        if self.n < self.min_events:
            return 0.0
        return saturate(-math.log10(self.share(t_ms)) - self.tolerated, self.scale)

    def usual_hours(self) -> str:
        """The actor's busiest hours, e.g. '08-16 UTC'."""
        hours = [self.counts[h] + self.counts[h + 24] for h in range(24)]
        busy = [h for h in range(24) if hours[h] >= USUAL_HOURS_SHARE * max(1, self.n)]
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

    weights = {"access": NOVELTY_WEIGHT, "client": NOVELTY_WEIGHT, "network": NOVELTY_WEIGHT}
    __slots__ = ("_top", "adopters", "counts", "max_values", "min_events", "n", "pending",
                 "scale", "tolerated")

    def __init__(self, min_events: int = FIRST_SEEN_MIN_EVENTS,
                 max_values: int = FIRST_SEEN_MAX_VALUES, tolerated: float = FIRST_SEEN_TOLERATED,
                 scale: float = FIRST_SEEN_SCALE) -> None:
        self.min_events = min_events
        self.max_values = max_values
        self.tolerated = tolerated  # -log10 frequency tolerated: ~1 use in 20
        self.scale = scale
        self.n = 0
        self.counts: dict[str, dict[str, int]] = {}
        # trait -> (n when computed, its most used values): a peer group's profile holds
        # thousands of values, and sorting them for every explanation dominated the worker.
        self._top: dict[str, tuple[int, list[tuple[str, int]]]] | None = None
        # A peer group's: trait -> value -> how many actors took it up (:meth:`adopt`; the
        # first_seen signal counts clients).
        self.adopters: dict[str, dict[str, int]] = {}
        # An actor's: a new client's reason, judged when its hour ends.
        self.pending: Reason | None = None

    def __setstate__(self, state: Any) -> None:
        # (A record written before adopters restores without them.)
        _restore(self, state, adopters={}, pending=None)

    def usual(self, trait: str, but: str | None = None, k: int = USUAL_VALUES
              ) -> list[tuple[str, int]]:
        """The ``k`` most used values of ``trait`` (other than ``but``), with their counts."""
        seen = self.counts.get(trait, {})
        if len(seen) <= USUAL_CACHE_FROM * k:
            top = sorted(seen.items(), key=lambda vc: -vc[1])
        else:  # large profiles: refreshed after 5% more events, slightly stale in between
            cache = self._top if self._top is not None else {}
            n, top = cache.get(trait, (-1, []))
            if n < 0 or self.n > USUAL_CACHE_REFRESH * n + USUAL_CACHE_SLACK:
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
                forget = max(1, self.max_values // FIRST_SEEN_FORGET_PARTS)
                took = self.adopters.get(trait, {})
                for rare in sorted(seen, key=seen.__getitem__)[:forget]:
                    del seen[rare]
                    took.pop(rare, None)
            seen[value] = seen.get(value, 0) + 1

    def learn_shared(self, x: dict[str, str | None]) -> None:
        """:meth:`learn_one` for a peer group's profile (an op on the engine's schedule): its
        cache of most used values is dropped, so it is read again from the state every shard
        holds in the hour, whenever a shard first explains with it."""
        self.learn_one(x)
        self._top = None

    def adopt(self, trait: str, value: str) -> None:
        """Count one more actor taking up ``value`` of ``trait`` (a peer group's op, after the
        actor's use of it was learned here: values the profile forgot are not kept)."""
        if value in self.counts.get(trait, ()):
            took = self.adopters.setdefault(trait, {})
            took[value] = took.get(value, 0) + 1

    def adopted(self, trait: str, value: str | None) -> int:
        """How many actors took up ``value`` of ``trait``."""
        return self.adopters.get(trait, {}).get(value, 0) if value is not None else 0

    def _trait_score(self, trait: str, value: str | None) -> float:
        if value is None or self.n < self.min_events:
            return 0.0
        count = self.counts.get(trait, {}).get(value, 0)
        surprise = -math.log10((count + FIRST_SEEN_PSEUDO_COUNT) / (self.n + 1))
        return self.weights.get(trait, NOVELTY_WEIGHT) * saturate(surprise - self.tolerated,
                                                                  self.scale)

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


class TicketHabit:
    """Customer accesses without a ticket, from an actor whose accesses usually have one.

    ``x`` is ``{"customer": bool, "ticketed": bool}``. ``learn_one`` tracks the
    share of the actor's customer accesses that carry a ticket; ``score_one`` of
    an unticketed customer access is that share (0 for actors, such as fraud
    investigators, who normally work without tickets). The risk layer adds these
    up over time, so one forgotten ticket is nothing and dozens are an alert.

    >>> th = TicketHabit(min_events=10)
    >>> for i in range(40):
    ...     th.learn_one({"customer": True, "ticketed": i % 20 != 0})
    >>> round(th.score_one({"customer": True, "ticketed": False}), 2)
    0.95
    >>> th.score_one({"customer": True, "ticketed": True})
    0.0
    """

    __slots__ = ("min_events", "rate")

    def __init__(self, alpha: float = TICKET_ALPHA, min_events: int = TICKET_MIN_EVENTS) -> None:
        self.rate = RunningStats(alpha)
        self.min_events = min_events

    @property
    def ticketed_share(self) -> float:
        return self.rate.mean

    def learn_one(self, x: dict[str, bool], weight: float = 1.0) -> None:
        if x["customer"]:
            self.rate.update(1.0 if x["ticketed"] else 0.0, weight)

    def score_one(self, x: dict[str, bool]) -> float:
        if not x["customer"] or x["ticketed"] or self.rate.n < self.min_events:
            return 0.0
        return self.rate.mean


class Peaks:
    """A distribution of peak risk: ordinary actor-days' (and the bar a false-alert budget
    sets on it, issue 14: ``SNOOPWATCH_FALSE_ALERT_BUDGET``), or a peer group's actor-hours'
    (its adaptive bar, :meth:`risk_at`).

    Risk ``r`` (0-100) combines signals as ``1 - prod(1 - level)``, so ``x = -ln(1 - r/100)``
    adds up like a hazard; peaks are kept as a histogram of ``x`` (mergeable, exact to a bin,
    deterministic). The bar is where the tail of that distribution, extrapolated
    exponentially from its bulk (the median and the 90th percentile, which insiders, a few
    per cent of actor-days at most, move a few points), leaves ``budget`` per 1,000
    actor-days:

    >>> import random
    >>> rng, d = random.Random(1), Peaks()
    >>> for _ in range(20_000):                 # ordinary days: an exponential tail
    ...     d.add(100 * (1 - math.exp(-rng.expovariate(8.0))))
    >>> bar = d.bar(1.0)
    >>> round(bar), round(1000 * math.exp(-8 * -math.log(1 - bar / 100)), 1)  # tail left
    (58, 1.0)
    >>> for _ in range(600):                    # 3 % of days are insiders' at risk 95
    ...     d.add(95.0)
    >>> round(d.bar(1.0) - bar)                 # ...and move the bar a few points
    6
    >>> d.bar(3.0) < bar < d.bar(0.5)
    True

    Exact to a bin (risk 10 +- 0.9) whatever order the peaks come in; a running estimate
    such as river's P-square ``stats.Quantile`` stays near where a deployment's hot first
    hours put it (19.7 here):

    >>> h = Peaks()
    >>> for i in range(10_000):                 # 5 % hot first hours, then a 20 % trickle
    ...     h.add(30.0 if i < 500 else 10.0 if i % 5 == 0 else 0.0)
    >>> round(h.risk_at(0.9), 1)
    10.4
    """

    __slots__ = ("bins", "n")

    WIDTH = PEAKS_BIN_WIDTH  # bin width in hazard units
    TOP = PEAKS_TOP  # x of risk 99.9: the last bin holds everything above

    def __init__(self) -> None:
        self.bins = [0] * (int(self.TOP / self.WIDTH) + 1)
        self.n = 0

    def add(self, risk: float) -> None:
        x = -math.log(max(_HAZARD_MIN, 1.0 - min(risk, _RISK_MAX) / 100.0))
        self.bins[min(len(self.bins) - 1, int(x / self.WIDTH))] += 1
        self.n += 1

    def quantile(self, p: float) -> float:
        """The ``p`` quantile of ``x`` (a bin's middle)."""
        rank, seen = p * self.n, 0
        for i, count in enumerate(self.bins):
            seen += count
            if seen > rank:
                return (i + 0.5) * self.WIDTH
        return self.TOP

    def risk_at(self, p: float) -> float:
        """The ``p`` quantile as risk (0-100), to a bin (the bin's middle)."""
        return 100.0 * (1.0 - math.exp(-self.quantile(p)))

    def bar(self, budget: float) -> float:
        """The risk (0-100) an ordinary actor-day exceeds ``budget`` times per 1,000."""
        lo, hi = self.quantile(BUDGET_LOW_QUANTILE), self.quantile(BUDGET_HIGH_QUANTILE)
        # P(X > x) falls e-fold per slope
        slope = max(hi - lo, self.WIDTH) / math.log(BUDGET_TAIL_RATIO)
        x = hi + slope * math.log(BUDGET_HIGH_TAIL / (budget / 1000.0))
        return round(100.0 * (1.0 - math.exp(-x)), 1)


DayPeaks = Peaks  # (the name checkpoints written before 2026-12-07 were pickled under)
