"""``multivariate``: a finished actor-hour as a whole against the peer group's actor-hours
(an isolation forest with a range-excess term, :mod:`detectors.multivariate`), calibrated by
the tail of the group's own hour scores. It catches combinations no single signal finds odd,
and only corroborates: its weight caps what it adds alone."""

from __future__ import annotations

import zlib
from typing import Any

from detectors.calibrate import LogHist, level
from detectors.models import Reason, fmt_count
from detectors.multivariate import StreamingOutlier
from detectors.priors import MIN_PEER_HOURS, MULTIVARIATE_WEIGHT
from detectors.signals.base import Profile, Signal

HOUR_FEATURES = ("records", "customers", "egress", "egress_bytes", "unjustified", "novel",
                 "offhours", "denied")
RESOLUTION = 10.0  # model units to the histogram's: its bins are half-octaves


class Multivariate(Signal):
    name = "multivariate"
    weight = MULTIVARIATE_WEIGHT

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def new(self, peer: str | None) -> Any:
        if peer is None:
            return {"last": None}
        return {"model": StreamingOutlier(seed=self.seed + zlib.crc32(peer.encode())),
                "scores": LogHist()}

    def end_hour(self, counts: dict[str, int], own: Profile, peer: Profile) -> float:
        part = peer.of[self.name]
        model: StreamingOutlier = part["model"]
        x = {f: counts.get(f, 0) for f in HOUR_FEATURES}
        score = model.score_one(x)
        model.learn_one(x)
        hist: LogHist = part["scores"]
        surprisal = hist.surprisal(score * RESOLUTION) if hist.n >= MIN_PEER_HOURS else 0.0
        hist.add(score * RESOLUTION)
        lvl = level(surprisal, weight=self.weight)
        if lvl > 0.01:
            own.of[self.name]["last"] = x
        return lvl

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        x = own.of[self.name]["last"] or {}
        top = peer.of[self.name]["model"].explain(x, top=3) if x else []
        desc = "an hour unlike its peers' hours: " + ", ".join(
            f"{c.feature} {fmt_count(c.observed)} (peers' normal {fmt_count(c.expected)})"
            for c in top)
        return Reason(self.name, lvl, desc, {c.feature: c.observed for c in top},
                      {c.feature: round(c.expected, 1) for c in top})
