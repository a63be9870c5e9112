"""Streaming calibration: tail probabilities of what an actor does, against what it and its
peers have done, as surprisal (``-log10`` of the tail probability).

Every signal turns its raw statistic into a surprisal here, so that "unusual" means the
same thing for every statistic and every company: an observation as rare as 1 in 10^S.
Constants are priors, in :mod:`detectors.priors`.
"""

from __future__ import annotations

import math

from detectors.priors import (
    BUDGET_HIGH_Q,
    BUDGET_LOW_Q,
    BUDGET_MIN_DAYS,
    HIST_MEMORY,
    PEER_SLACK,
    RAMP,
    SCALE,
    TAIL_STEP,
    TOLERATED,
)

LOG10 = math.log(10)


def saturate(excess: float, scale: float) -> float:
    """Map a non-negative excess to [0, 1): 0 stays 0, ``scale`` maps to 0.63."""
    return 0.0 if excess <= 0 else 1.0 - math.exp(-excess / scale)


def level(surprisal: float, tolerated: float = TOLERATED, weight: float = 1.0) -> float:
    """A signal's level (0 to ``weight``) from its surprisal in decades.

    Below the tolerated rarity a signal only whispers (up to ``RAMP``): not enough to alert
    on, but an actor with some evidence ranks above one with none.

    >>> [round(level(s), 3) for s in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)]
    [0.0, 0.01, 0.02, 0.641, 0.867, 0.952]
    """
    if surprisal <= 0:
        return 0.0
    if surprisal <= tolerated:
        return weight * RAMP * surprisal / tolerated
    return weight * (RAMP + (1.0 - RAMP) * saturate(surprisal - tolerated, SCALE))


def log_bin(x: float) -> int:
    """Half-octave bin of a non-negative count or size: 0 -> 0, 1 -> 2, 1000 -> 19.

    >>> [log_bin(x) for x in (0, 1, 3, 10, 1000, 10**9)]
    [0, 2, 4, 6, 19, 59]
    """
    return int(2.0 * math.log2(1.0 + x)) if x > 0 else 0


def bin_low(b: int) -> float:
    """The smallest value of bin ``b`` (for explanations)."""
    return 2.0 ** (b / 2.0) - 1.0


class LogHist:
    """A streaming distribution of a non-negative statistic, kept as counts per half-octave
    bin (a quantile sketch with ~41 % relative resolution, a few bins per actor).

    It forgets: past ``HIST_MEMORY`` observations every count is halved, so it follows a
    drifting normal. Beyond the largest bin seen, each further bin is ``TAIL_STEP`` times
    rarer than the top bin's own tail (a prior: "ten times the largest hour" is rarer than
    "twice", and "never seen" is not "impossible").

    >>> h = LogHist()
    >>> for x in [5, 6, 7, 5, 8, 6, 5, 9, 6, 7] * 10:
    ...     h.add(x)
    >>> round(h.surprisal(6), 2), round(h.surprisal(9), 2), round(h.surprisal(60), 1)
    (0.16, 0.69, 2.2)
    >>> h.quantile(0.5)
    5
    """

    __slots__ = ("bins", "n", "top")

    def __init__(self) -> None:
        self.bins: dict[int, float] = {}
        self.n = 0.0
        self.top = -1

    def add(self, x: float, weight: float = 1.0) -> None:
        b = log_bin(x)
        bins = self.bins
        bins[b] = bins.get(b, 0.0) + weight
        self.n += weight
        if b > self.top:
            self.top = b
        if self.n > HIST_MEMORY:
            for k in list(bins):
                bins[k] *= 0.5
            self.n *= 0.5

    def tail(self, x: float) -> float:
        """P(X >= x), smoothed: at least half an observation's worth, never 0."""
        b = log_bin(x)
        n1 = self.n + 1.0
        if b > self.top:  # from the top bin's own tail, each bin further TAIL_STEP rarer
            top = self.bins.get(self.top, 0.0)
            return (0.5 * top + 0.5) / n1 / TAIL_STEP ** (b - self.top)
        above = 0.5
        for k, w in self.bins.items():
            if k > b:
                above += w
            elif k == b:
                above += 0.5 * w
        return min(1.0, above / n1)

    def surprisal(self, x: float) -> float:
        return -math.log10(self.tail(x))

    def quantile(self, q: float) -> int:
        """The low edge of the bin holding the ``q`` quantile (0 when empty)."""
        need, acc = q * self.n, 0.0
        for k in sorted(self.bins):
            acc += self.bins[k]
            if acc >= need:
                return round(bin_low(k))
        return 0


def blend(own: float | None, peer: float | None) -> float:
    """One surprisal from the actor's own history and its peers': the actor's own once it
    has one, but what its peers do often is at most ``PEER_SLACK`` decades less telling.

    >>> blend(4.0, 0.5), blend(4.0, 3.5), blend(None, 2.0), blend(None, None)
    (1.5, 4.0, 2.0, 0.0)
    """
    if own is None:
        return peer or 0.0
    if peer is None:
        return own
    return min(own, peer + PEER_SLACK)


def poisson_sf(k: float, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam).

    >>> round(poisson_sf(3, 1.0), 4), poisson_sf(0, 2.0), round(poisson_sf(30, 5.0), 15)
    (0.0803, 1.0, 2.8e-14)
    """
    n: int = math.ceil(k)  # (a new name: Cython keeps k a double)
    if n <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    log_lam = math.log(lam)
    if n <= lam:  # the bulk: 1 - P(X < k)
        term, cdf = math.exp(-lam), 0.0
        for i in range(n):
            cdf += term
            term *= lam / (i + 1)
        return max(0.0, min(1.0, 1.0 - cdf))
    # The tail: terms shrink geometrically past the mode.
    log_term = -lam + n * log_lam - math.lgamma(n + 1)
    total, term, i = 0.0, 1.0, n
    while term > 1e-12 and i < n + 1000:
        total += term
        i += 1
        term *= lam / i
    return min(1.0, math.exp(log_term) * total)


def poisson_surprisal(k: float, lam: float) -> float:
    """-log10 P(X >= k), floored at 1e-300."""
    return -math.log10(max(poisson_sf(k, lam), 1e-300))


class Share:
    """A rate per unit of exposure (unjustified reads per customer read), learned from the
    actor's own days with a prior worth ``prior_weight`` units of exposure.

    >>> s = Share()
    >>> for _ in range(30):
    ...     s.update(15, 100)
    >>> round(s.value(0.1, 20.0), 3)
    0.15
    """

    __slots__ = ("den", "num")

    def __init__(self) -> None:
        self.num = 0.0
        self.den = 0.0

    def update(self, count: float, exposure: float, weight: float = 1.0) -> None:
        self.num += weight * count
        self.den += weight * exposure
        if self.den > HIST_MEMORY:
            self.num *= 0.5
            self.den *= 0.5

    def value(self, prior: float, prior_weight: float) -> float:
        return (self.num + prior * prior_weight) / (self.den + prior_weight)


class PoissonCusum:
    """Page's CUSUM for a Poisson count rising above its expected rate ``lam``: to ``ratio``
    times it, or by ``extra`` a period, whichever is more (a rate of 0.2 a day is not
    "doubled" by one more, it is multiplied by six).

    Each period adds the log-likelihood ratio of the raised rate against the usual:
    ``k ln(lam1 / lam) - (lam1 - lam)``; it never goes below 0, so a stable rate — however
    high — never accumulates, and a sustained rise does.

    >>> c = PoissonCusum()
    >>> for _ in range(20):
    ...     c.add(12, 12.0)          # a steady, honest 12 a day
    >>> c.s
    0.0
    >>> for _ in range(3):
    ...     c.add(10, 2.0)           # 10 a day where 2 are usual
    >>> round(c.s, 1)
    14.8
    """

    __slots__ = ("s",)

    def __init__(self) -> None:
        self.s = 0.0

    @staticmethod
    def increment(k: float, lam: float, ratio: float = 2.0, extra: float = 1.0) -> float:
        lam = max(lam, 1e-3)
        lam1 = max(ratio * lam, lam + extra)
        return k * math.log(lam1 / lam) - (lam1 - lam)

    def add(self, k: float, lam: float, ratio: float = 2.0) -> None:
        self.s = max(0.0, self.s + self.increment(k, lam, ratio))


def evidence_of(risk: float) -> float:
    """Risk (0-100) as unbounded evidence, ``-ln(1 - risk/100)``."""
    return -math.log(max(1e-9, 1.0 - risk / 100.0))


def risk_of(evidence: float) -> float:
    return 100.0 * (1.0 - math.exp(-evidence))


class DayPeaks:
    """The distribution of actor-days' peak risk, for the false-alert budget.

    The bar is the risk an ordinary actor-day exceeds with probability ``p``. It is
    extrapolated from the bulk (an exponential tail through the 90th and 99th
    percentiles of peak evidence), where a handful of insiders cannot move it.

    >>> d = DayPeaks()
    >>> import random
    >>> rng = random.Random(1)
    >>> for _ in range(5000):
    ...     d.add(risk_of(rng.expovariate(4.0)))
    >>> round(d.bar(0.001))      # exp(4) tail: P(e > 1.73) = 0.001, risk 82
    83
    """

    STEP = 0.05
    BINS = 200

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = [0.0] * self.BINS
        self.n = 0.0

    def add(self, risk: float) -> None:
        b = min(self.BINS - 1, int(evidence_of(risk) / self.STEP))
        self.counts[b] += 1.0
        self.n += 1.0

    def _quantile(self, q: float) -> float:
        need, acc = q * self.n, 0.0
        for b, c in enumerate(self.counts):
            acc += c
            if acc >= need:
                return (b + 0.5) * self.STEP
        return self.BINS * self.STEP

    def bar(self, p: float) -> float | None:
        """The risk with tail probability ``p`` among actor-days, or None while too few."""
        if self.n < BUDGET_MIN_DAYS:
            return None
        lo, hi = self._quantile(BUDGET_LOW_Q), self._quantile(BUDGET_HIGH_Q)
        spread = max(hi - lo, self.STEP)
        decades = math.log10((1.0 - BUDGET_HIGH_Q) / p)
        return round(risk_of(hi + spread * decades), 1)

    def tail(self, risk: float) -> float | None:
        """The probability that an ordinary actor-day reaches ``risk`` (the same model)."""
        if self.n < BUDGET_MIN_DAYS:
            return None
        lo, hi = self._quantile(BUDGET_LOW_Q), self._quantile(BUDGET_HIGH_Q)
        spread = max(hi - lo, self.STEP)
        return (1.0 - BUDGET_HIGH_Q) * 10 ** (-(evidence_of(risk) - hi) / spread)
