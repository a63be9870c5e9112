"""``multivariate``: a finished actor-hour as a whole against its peer group's actor-hours.

The per-signal detectors judge one measure at a time; this model (an isolation forest with a
range-excess term, :class:`~detectors.multivariate.StreamingOutlier`, one per peer group)
catches combinations no single one finds odd. It runs once per actor-hour, not per event, on
the hour's counts the engine and the other signals kept (``ActorState.hour_counts``).
"""

from __future__ import annotations

import zlib

from detectors.models import Reason, saturate
from detectors.multivariate import StreamingOutlier
from detectors.priors import (
    FOREST_EXPLAIN_TOP,
    MULTIVARIATE_SCALE,
    MULTIVARIATE_TOLERATED,
    MULTIVARIATE_WEIGHT,
    NEGLIGIBLE,
)
from detectors.signals.base import Context, Signal, fmt_count

# (MULTIVARIATE_TOLERATED and MULTIVARIATE_WEIGHT, priors defined here before, are re-exported.)
__all__ = ["HOUR_FEATURES", "MULTIVARIATE_TOLERATED", "MULTIVARIATE_WEIGHT", "Multivariate"]

# What the multivariate model sees of each finished actor-hour.
HOUR_FEATURES = ("records", "customers", "egress", "egress_bytes", "unjustified", "novel",
                 "offhours", "denied")


class Multivariate(Signal):
    name = "multivariate"
    # Off unless SNOOPWATCH_OPTIONAL_SIGNALS names it: on the tuning family it found no
    # insider the other signals miss, and ranked honest actor-hours above weak insiders.
    optional = True

    def new_peer(self, key: str) -> StreamingOutlier:
        return StreamingOutlier(seed=self.settings.seed + zlib.crc32(key.encode()))

    def end_hour(self, ctx: Context, counts: dict[str, int]) -> None:
        model = ctx.peer.signals.get("multivariate")
        if not counts or model is None:
            return
        x = {f: counts.get(f, 0) for f in HOUR_FEATURES}
        score = model.score_one(x)
        ctx.defer("multivariate", "learn_one", x)
        level = MULTIVARIATE_WEIGHT * saturate(score - MULTIVARIATE_TOLERATED, MULTIVARIATE_SCALE)
        if level <= NEGLIGIBLE:
            return
        top = model.explain(x, top=FOREST_EXPLAIN_TOP)
        desc = "an hour unlike its peers' hours: " + ", ".join(
            f"{c.feature} {fmt_count(c.observed)} (peers' normal {fmt_count(c.expected)})"
            for c in top)
        ctx.raise_("multivariate", level, [Reason(
            "multivariate", level, desc, {c.feature: c.observed for c in top},
            {c.feature: round(c.expected, 1) for c in top})])
