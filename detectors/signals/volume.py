"""``volume``: the running hour's records and distinct customers against the actor's own
hours and its peer group's actor-hours (a burst of lookups, a scrape)."""

from __future__ import annotations

import math
from typing import Any

from detectors.calibrate import LogHist, blend, level, log_bin
from detectors.models import UNITS, Reason, fmt_count
from detectors.priors import MIN_OWN_HOURS, MIN_PEER_HOURS
from detectors.signals.base import Access, Profile, Signal

FEATURES = ("records", "customers")


def surprisal_of(hists: dict[str, Any], own: Profile, peer: Profile, peer_hists: dict[str, Any],
                 f: str, value: float, min_own: int = MIN_OWN_HOURS,
                 min_peer: int = MIN_PEER_HOURS, own_n: int | None = None,
                 peer_n: int | None = None) -> float:
    """Blended surprisal of ``value`` for feature ``f`` (own once it has ``min_own``)."""
    s_own = hists[f].surprisal(value) if (own.hours if own_n is None else own_n) >= min_own \
        else None
    s_peer = peer_hists[f].surprisal(value) if (peer.hours if peer_n is None else peer_n) \
        >= min_peer else None
    return blend(s_own, s_peer)


class Volume(Signal):
    name = "volume"

    def new(self, peer: str | None) -> dict[str, Any]:
        return {f: LogHist() for f in FEATURES} | {"at": (-1, -1)}

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        if x.late:
            return 0.0
        mine = own.of[self.name]
        key = (log_bin(x.hour.get("records", 0)), log_bin(x.hour.get("customers", 0)))
        if key == mine["at"]:
            return 0.0  # the same bins as the last score this hour: its level stands
        mine["at"] = key
        theirs = peer.of[self.name]
        best = max(surprisal_of(mine, own, peer, theirs, f, x.hour.get(f, 0)) for f in FEATURES)
        return level(best - math.log10(len(FEATURES)))

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        return {f: x.hour.get(f, 0) for f in FEATURES}

    def end_hour(self, counts: dict[str, int], own: Profile, peer: Profile) -> float:
        mine, theirs = own.of[self.name], peer.of[self.name]
        for f in FEATURES:
            v = counts.get(f, 0)
            mine[f].add(v)
            theirs[f].add(v)
        mine["at"] = (-1, -1)
        return 0.0

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        mine, theirs = own.of[self.name], peer.of[self.name]
        src, whose = (mine, "usually") if own.hours >= MIN_OWN_HOURS else (theirs, "peers usually")
        usual = {f: src[f].quantile(0.5) for f in FEATURES}
        p99 = {f: src[f].quantile(0.99) for f in FEATURES}
        shown = ", ".join(f"{fmt_count(observed[f])} {UNITS[f]}" for f in FEATURES)
        typical = ", ".join(fmt_count(usual[f]) for f in FEATURES)
        rare = ", ".join(fmt_count(p99[f]) for f in FEATURES)
        desc = f"{shown} in one hour; {whose} {typical} an active hour (1 hour in 100: {rare})"
        return Reason(self.name, lvl, desc, observed, {"median": usual, "p99": p99,
                                                      "hours_learned": own.hours})
