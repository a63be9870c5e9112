"""A multivariate online anomaly detector with river's ``learn_one``/``score_one`` contract.

:class:`StreamingOutlier` scores a feature dict (e.g. one actor-hour's aggregates: records,
distinct customers, egress bytes, unticketed reads, off-hours share, distinct networks) against
everything it has learned. It combines

* an **isolation forest** rebuilt, one tree at a time, from a bounded uniform reservoir of past
  vectors (Liu, Ting & Zhou 2008). Points that random axis-parallel cuts separate from the rest in
  few steps are anomalous; this catches joint anomalies ("many records *and* many networks") and
  copes with multi-modal normals;
* a **range-excess** term: how far each feature lies beyond the range held in the reservoir, in
  units of the feature's robust spread. An isolation forest cannot split on a feature that was
  constant in its sample (say ``unticketed_reads`` always 0) and scores a point 100x beyond the
  range about like one just beyond it; this term makes a first-ever or record spike on a single
  feature count in proportion to its size.

Every value goes through a signed ``log1p`` first, so heavy-tailed counts and byte totals compare
by ratio rather than by difference, and no per-feature scaling is needed (trees are scale-free).
Missing keys are 0. Memory is fixed: ``window`` rows of at most ``max_features`` columns plus
``n_trees`` arrays of ``2 ** (height + 1)`` nodes, whatever the length of the stream.

Scores are calibrated so that a typical learned vector scores about 0 and one at the forest's
90th percentile scores about 1; anomalies score several units higher. Before ``warmup`` vectors
have been learned every score is 0.

Why this design (ADBench http/smtp/shuttle, prequential, beside river's HalfSpaceTrees; see
``benchmarks/adbench.py``): a kNN distance over a 512-row reservoir in robust-z log space lost on
shuffled http (0.993 vs 0.996) whatever the scaling, because a zero-inflated feature makes its rare
normal non-zero values look as far out as the attacks; per-feature histograms (HBOS) had the same
weakness and hurt smtp; an isolation forest on a 512-row reservoir won on average but not on every
seed (a handful of duplicated attacks in the sample masks the rest). With a 4096-row reservoir it
won on all six streams for every seed tried, at roughly 20-35k events/s.
"""

from __future__ import annotations

import math
import random
from typing import Any, NamedTuple

import numpy as np
from river import base

from detectors.priors import (
    FOREST_CALIBRATION_QUANTILE,
    FOREST_CALIBRATION_ROWS,
    FOREST_EARLY_REBUILD,
    FOREST_EXCESS_WEIGHT,
    FOREST_EXPLAIN_NEIGHBOURS,
    FOREST_EXPLAIN_TOP,
    FOREST_MAX_FEATURES,
    FOREST_MIN_RANGE,
    FOREST_RANGE_UNITS,
    FOREST_REFRESH,
    FOREST_SAMPLE_SIZE,
    FOREST_TREES,
    FOREST_UNIT_FLOOR,
    FOREST_WARMUP,
    FOREST_WINDOW,
)

# Not priors: mathematical constants.
_EULER = 0.5772156649015329  # the Euler-Mascheroni constant, in iForest's c(m)
_QUARTILES = [0.25, 0.75]  # the interquartile range ...
_IQR_PER_SIGMA = 1.349  # ... is 1.349 standard deviations of a normal distribution
_TINY = 1e-6  # a spread that is no spread: keeps a division finite


def _avg_path(m: float) -> float:
    """Expected path length of an unsuccessful BST search among ``m`` points (iForest's c(m))."""
    if m <= 1:
        return 0.0
    if m <= 2:
        return 1.0
    return 2.0 * (math.log(m - 1) + _EULER) - 2.0 * (m - 1) / m


def _slog(v: float) -> float:
    """Signed log1p: compresses heavy tails, keeps 0 at 0 and the sign of negative values."""
    return math.copysign(math.log1p(abs(v)), v)


def _unslog(v: float) -> float:
    return math.copysign(math.expm1(abs(v)), v)


class Contribution(NamedTuple):
    """One feature's part in a score (see :meth:`StreamingOutlier.explain`)."""

    feature: str
    observed: float
    expected: float
    contribution: float


class StreamingOutlier(base.AnomalyDetector):
    """Online isolation forest over a reservoir, plus a range-excess term.

    Parameters
    ----------
    n_trees
        Trees in the forest.
    sample_size
        Rows per tree (the iForest paper's psi); tree height is ``ceil(log2(sample_size))``.
    window
        Reservoir capacity: the detector's memory of normal, a uniform sample of everything
        learned (or of roughly the last ``horizon`` vectors if that is set).
    refresh
        Learned vectors between rebuilding the oldest tree and recalibrating the score.
    warmup
        Vectors to learn before scoring; until then ``score_one`` returns 0.
    excess_weight
        Score added per unit of range excess. A feature's unit is its robust spread in log1p
        space (IQR / 1.349), at least a tenth of its range (or of ``min_range``).
    min_range
        Smallest range (log1p units) used for that floor, so a feature that has always been
        constant does not turn a tiny change into an enormous score (0 -> 1 is 6.9 units).
    horizon
        ``None`` keeps a uniform sample of the whole stream. An integer makes the reservoir
        forget: once ``horizon`` vectors have been learned, each new vector enters with
        probability ``window / horizon``, so the sample covers roughly the last ``horizon``.
    max_features
        Features beyond the first ``max_features`` distinct names are ignored (bounded memory).
    seed
        Random seed; equal seeds and inputs give equal scores.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> model = StreamingOutlier(seed=42)
    >>> for _ in range(2000):
    ...     model.learn_one({"records": rng.gauss(100, 10), "networks": rng.choice([1, 2])})
    >>> normal = model.score_one({"records": 98, "networks": 1})
    >>> far = model.score_one({"records": 5000, "networks": 9})
    >>> far > normal
    True
    >>> model.explain({"records": 5000, "networks": 1})[0].feature
    'records'
    """

    def __init__(self, n_trees: int = FOREST_TREES, sample_size: int = FOREST_SAMPLE_SIZE,
                 window: int = FOREST_WINDOW, refresh: int = FOREST_REFRESH,
                 warmup: int = FOREST_WARMUP, excess_weight: float = FOREST_EXCESS_WEIGHT,
                 min_range: float = FOREST_MIN_RANGE, horizon: int | None = None,
                 max_features: int = FOREST_MAX_FEATURES, seed: int | None = None) -> None:
        if not 1 <= warmup <= window:
            raise ValueError("need 1 <= warmup <= window")
        if horizon is not None and horizon < window:
            raise ValueError("horizon must be None or at least window")
        self.n_trees = n_trees
        self.sample_size = sample_size
        self.window = window
        self.refresh = refresh
        self.warmup = warmup
        self.excess_weight = excess_weight
        self.min_range = min_range
        self.horizon = horizon
        self.max_features = max_features
        self.seed = seed
        self.n = 0  # vectors learned
        self._rand = random.Random(seed)  # reservoir decisions (cheap per call)
        self._rng = np.random.default_rng(seed)  # tree sampling
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self._res = np.zeros((window, 0))
        self._filled = 0
        self._since = 0
        self._next_tree = 0
        self._built = False
        # Trees are complete binary trees in one flat array per attribute; node i of tree t is at
        # t * size + i, its children at 2i+1 and 2i+2. A branch that stops early gets an
        # always-left split (threshold +inf), so every traversal takes exactly `height` steps and
        # ends on a leaf holding that tree's normalised path length.
        self._height = max(1, math.ceil(math.log2(max(2, sample_size))))
        size = 2 ** (self._height + 1) - 1
        local = np.arange(size)
        self._size = size
        self._feat = np.zeros(n_trees * size, dtype=np.intp)
        self._thr = np.full(n_trees * size, np.inf)
        self._left = (np.arange(n_trees)[:, None] * size + np.minimum(2 * local + 1, size - 1)
                      ).ravel()
        self._path = np.zeros(n_trees * size)
        self._roots = np.arange(n_trees) * size
        self._lo = np.zeros(0)
        self._hi = np.zeros(0)
        self._inv_unit = np.zeros(0)
        self._center = 0.0
        self._spread = 1.0

    # -- vectors ------------------------------------------------------------------------------
    def _grow(self, x: dict[str, Any]) -> None:
        for key in x:
            if key not in self._index and len(self._index) < self.max_features:
                self._index[key] = len(self._index)
                self._names.append(key)
        pad = len(self._index) - self._res.shape[1]
        if pad > 0:  # a new feature: absent from every stored row, i.e. 0 there
            self._res = np.hstack([self._res, np.zeros((self.window, pad))])
            self._lo = np.concatenate([self._lo, np.zeros(pad)])
            self._hi = np.concatenate([self._hi, np.zeros(pad)])
            # Never seen away from 0: the narrowest unit, a tenth of min_range.
            self._inv_unit = np.concatenate([self._inv_unit,
                                             np.full(pad, FOREST_RANGE_UNITS / self.min_range)])

    def _vector(self, x: dict[str, Any]) -> tuple[np.ndarray, float]:
        """Known features as a log-space vector, plus the summed excess of unknown features."""
        v = [0.0] * self._res.shape[1]
        unknown = 0.0
        index = self._index
        log1p = math.log1p
        for key, val in x.items():
            j = index.get(key)
            if j is not None:  # _slog, inlined (hot path); NaN counts as missing, i.e. 0
                v[j] = log1p(val) if val >= 0 else -log1p(-val) if val < 0 else 0.0
            elif val and val == val and len(index) < self.max_features:
                unknown += FOREST_RANGE_UNITS * abs(_slog(val)) / self.min_range
        return np.array(v), unknown

    # -- learning -----------------------------------------------------------------------------
    def learn_one(self, x: dict[str, Any]) -> None:
        """Add ``x`` to the model's memory of normal."""
        self._grow(x)
        v, _ = self._vector(x)
        self.n += 1
        if self._filled < self.window:
            slot = self._filled
            self._filled += 1
        else:
            span = self.n if self.horizon is None else min(self.n, self.horizon)
            slot = self._rand.randrange(span)  # reservoir sampling (Vitter's algorithm R)
        if slot < self.window:
            self._res[slot] = v
            # Keep the seen range current on every learn, not only at refresh.
            np.minimum(self._lo, v, out=self._lo)
            np.maximum(self._hi, v, out=self._hi)
        if self._filled < self.warmup:
            return
        # Build the whole forest when first warm and again while the reservoir is still small
        # (each doubling), then replace one tree every `refresh` vectors.
        if not self._built or (self._filled == self.n
                               and self.n <= FOREST_EARLY_REBUILD * self.sample_size
                               and self.n & (self.n - 1) == 0 and self.n > self.warmup):
            for t in range(self.n_trees):
                self._build_tree(t)
            self._built = True
            self._since = 0
            self._recalibrate()
            return
        self._since += 1
        if self._since >= self.refresh:
            self._since = 0
            self._build_tree(self._next_tree)
            self._next_tree = (self._next_tree + 1) % self.n_trees
            self._recalibrate()

    def _build_tree(self, t: int) -> None:
        data = self._res[: self._filled]
        m = min(self.sample_size, len(data))
        sample = data[self._rng.choice(len(data), m, replace=False)]
        off = t * self._size
        leaf0 = 2**self._height - 1
        norm = _avg_path(max(m, 2))
        feat, thr, path = self._feat, self._thr, self._path
        rng = self._rng
        stack = [(0, sample)]
        while stack:
            node, s = stack.pop()
            if node < leaf0 and len(s) > 1:
                lo = s.min(axis=0)
                hi = s.max(axis=0)
                varying = np.flatnonzero(hi > lo)
                if len(varying):
                    j = int(varying[rng.integers(len(varying))])
                    cut = float(rng.uniform(lo[j], hi[j]))
                    feat[off + node] = j
                    thr[off + node] = cut
                    left = s[:, j] < cut
                    stack.append((2 * node + 1, s[left]))
                    stack.append((2 * node + 2, s[~left]))
                    continue
            # Isolated, or identical rows: route left to the leaf level and store the path length
            # (depth plus the expected depth still needed to isolate the remaining rows).
            depth = (node + 1).bit_length() - 1
            value = (depth + _avg_path(len(s))) / norm
            while node < leaf0:
                feat[off + node] = 0
                thr[off + node] = np.inf
                node = 2 * node + 1
            path[off + node] = value

    def _recalibrate(self) -> None:
        """Refresh the excess term's ranges and units; centre and scale the forest score."""
        data = self._res[: self._filled]
        self._lo = data.min(axis=0)
        self._hi = data.max(axis=0)
        q25, q75 = np.quantile(data, _QUARTILES, axis=0)
        floor = FOREST_UNIT_FLOOR * np.maximum(self._hi - self._lo, self.min_range)
        self._inv_unit = 1.0 / np.maximum((q75 - q25) / _IQR_PER_SIGMA, floor)
        rows = data[self._rng.choice(len(data), min(FOREST_CALIBRATION_ROWS, len(data)),
                                     replace=False)]
        raw = self._forest(rows)
        center = float(np.median(raw))
        self._center = center
        self._spread = max(float(np.quantile(raw, FOREST_CALIBRATION_QUANTILE)) - center, _TINY)

    # -- scoring ------------------------------------------------------------------------------
    def _forest(self, rows: np.ndarray) -> np.ndarray:
        """iForest score 2 ** -E[h / c(psi)] of each row of ``rows`` (shape n x d)."""
        d = rows.shape[1]
        flat = rows.ravel()
        node = np.broadcast_to(self._roots, (len(rows), self.n_trees))
        offset = (np.arange(len(rows)) * d)[:, None]
        feat, thr, left = self._feat, self._thr, self._left
        for _ in range(self._height):
            go_right = flat[offset + feat[node]] >= thr[node]
            node = left[node] + go_right
        return np.exp2(-self._path[node].mean(axis=1))

    def _excess(self, v: np.ndarray) -> np.ndarray:
        """Per feature: distance beyond the range held in the reservoir, in spread units."""
        return (np.maximum(v - self._hi, 0.0) + np.maximum(self._lo - v, 0.0)) * self._inv_unit

    def score_one(self, x: dict[str, Any]) -> float:
        """Anomaly score of ``x``: about 0 for typical vectors, higher is more anomalous."""
        if not self._built:
            return 0.0
        v, unknown = self._vector(x)
        feat, thr, left = self._feat, self._thr, self._left
        node = self._roots
        for _ in range(self._height):
            node = left[node] + (v[feat[node]] >= thr[node])
        forest = math.exp2(-float(self._path[node].sum()) / self.n_trees)
        excess = float(self._excess(v).sum()) + unknown
        return (forest - self._center) / self._spread + self.excess_weight * excess

    # -- explanation --------------------------------------------------------------------------
    def explain(self, x: dict[str, Any], top: int | None = FOREST_EXPLAIN_TOP,
                k: int = FOREST_EXPLAIN_NEIGHBOURS) -> list[Contribution]:
        """The features that make ``x`` unusual, largest contribution first.

        ``expected`` is the model's normal for a feature *given the others*: its median over the
        ``k`` stored vectors nearest to ``x`` on all the *other* features (log space, each feature
        in units of its robust spread). ``contribution`` is the feature's share (0-1) of the
        squared deviations from those normals, so the shares of all features sum to 1. A key
        never learned counts as a feature whose normal is 0. ``top=None`` returns every feature.
        """
        if self._filled == 0:
            return []
        v, _ = self._vector(x)
        data = self._res[: self._filled]
        q25, q75 = np.quantile(data, _QUARTILES, axis=0)
        floor = FOREST_UNIT_FLOOR * np.maximum(data.max(axis=0) - data.min(axis=0),
                                               self.min_range)
        scale = np.maximum((q75 - q25) / _IQR_PER_SIGMA, floor)
        z2 = ((data - v) / scale) ** 2
        total = z2.sum(axis=1)
        k = min(k, len(data))
        parts: dict[str, float] = {}
        expected: dict[str, float] = {}
        for j, name in enumerate(self._names):
            others = total - z2[:, j]
            near = np.argpartition(others, k - 1)[:k]
            normal = float(np.median(data[near, j]))
            parts[name] = float((v[j] - normal) / scale[j]) ** 2
            expected[name] = _unslog(normal)
        for key, val in x.items():
            if key not in self._index and val and val == val:
                parts[key] = (_slog(val) / (FOREST_UNIT_FLOOR * self.min_range)) ** 2
                expected[key] = 0.0
        whole = sum(parts.values())
        out = [Contribution(name, float(x.get(name, 0.0)), expected[name],
                            share / whole if whole > 0 else 0.0)
               for name, share in parts.items()]
        out.sort(key=lambda c: (-c.contribution, c.feature))
        return out if top is None else out[:top]
