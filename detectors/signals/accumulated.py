"""``accumulated``: a sustained rise, over days, of the actor's unjustified and off-hours
customer reads above its own rate: a Poisson CUSUM per count (low-and-slow scraping, night
after night of camera views). A stable rate, however high, never accumulates."""

from __future__ import annotations

from typing import Any

from detectors.calibrate import PoissonCusum, Share, saturate
from detectors.models import Reason
from detectors.priors import (
    CUSUM_H,
    CUSUM_RATIO,
    CUSUM_SCALE,
    DOUBTFUL_WEIGHT,
    PRIOR_UNJUSTIFIED_SHARE,
    RAMP,
)
from detectors.signals.base import Access, Profile, Signal
from detectors.signals.unjustified import share_of

COUNTS = {"unjustified": "unjustified", "foreign": "foreign", "off": "offhours"}
# Off-hours reads per active day assumed before the actor has a history.
PRIOR_OFF_RATE = 1.0


def _off_rate(own: Profile, peer: Profile) -> float:
    theirs: Share = peer.of["accumulated"]["off_rate"]
    prior = theirs.value(PRIOR_OFF_RATE, 5.0)
    mine: Share = own.of["accumulated"]["off_rate"]
    return mine.value(prior, 5.0) + 1.0 / (mine.den + 5.0)


def _expected(counts: dict[str, int], own: Profile, peer: Profile, kind: str) -> float:
    if kind == "off":
        return _off_rate(own, peer)
    hi = share_of(own, peer, kind)[1] if "unjustified" in own.of else PRIOR_UNJUSTIFIED_SHARE
    return hi * max(counts.get("customers", 0), counts.get(COUNTS[kind], 0))


class Accumulated(Signal):
    name = "accumulated"

    def new(self, peer: str | None) -> dict[str, Any]:
        return {kind: PoissonCusum() for kind in COUNTS} | {"off_rate": Share()}

    def _running(self, counts: dict[str, int], own: Profile, peer: Profile) -> dict[str, float]:
        """Each CUSUM as it stands with the running day's counts folded in (nats)."""
        mine = own.of[self.name]
        return {kind: max(0.0, mine[kind].s + mine[kind].increment(
            counts.get(key, 0), _expected(counts, own, peer, kind), CUSUM_RATIO))
            for kind, key in COUNTS.items()}

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        if x.late or not (x.unjustified or x.hour.get("offhours")) or own.days < 2:
            return 0.0
        s = max(self._running(x.day, own, peer).values())
        return RAMP * min(s, CUSUM_H) / CUSUM_H + (1 - RAMP) * saturate(s - CUSUM_H, CUSUM_SCALE)

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        running = self._running(x.day, own, peer)
        kind = max(running, key=running.__getitem__)
        return {"kind": kind, "cusum": round(running[kind], 2),
                "before_today": round(own.of[self.name][kind].s, 2),
                "today": x.day.get(COUNTS[kind], 0),
                "expected": round(_expected(x.day, own, peer, kind), 1)}

    def end_day(self, counts: dict[str, int], own: Profile, peer: Profile) -> None:
        mine = own.of[self.name]
        rising = False
        for kind, key in COUNTS.items():
            k, lam = counts.get(key, 0), _expected(counts, own, peer, kind)
            if kind == "off":
                rising = mine[kind].increment(k, lam, CUSUM_RATIO) > 0
            mine[kind].add(k, lam, CUSUM_RATIO)
        weight = DOUBTFUL_WEIGHT if rising else 1.0
        off = counts.get("offhours", 0)
        mine["off_rate"].update(off, 1.0, weight)
        peer.of[self.name]["off_rate"].update(off, 1.0, weight)

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        what = {"unjustified": "unjustified customer reads",
                "foreign": "unjustified reads of other queues' customers",
                "off": "customer reads at hours they do not work"}[observed["kind"]]
        desc = (f"kept up more {what} than their own rate over days (evidence "
                f"{observed['cusum']:.1f} nats, {observed['before_today']:.1f} before today; "
                f"{observed['today']} today against {observed['expected']} expected)")
        return Reason(self.name, lvl, desc, observed, {"cusum_below": CUSUM_H})
