"""``egress``: records and bytes exported, downloaded or streamed, in the running hour and
the running day, against the actor's own and its peers' (a bulk leak; for a departing
actor, less is tolerated). An actor that rarely exports at all is judged by how rare an
export is for it, and its size against its own hourly reads."""

from __future__ import annotations

import math
from typing import Any

from detectors.calibrate import LogHist, blend, level, log_bin
from detectors.models import UNITS, Reason, fmt_count
from detectors.priors import (
    LEAVING_DECADES,
    MIN_OWN_DAYS,
    MIN_OWN_HOURS,
    MIN_PEER_DAYS,
    MIN_PEER_HOURS,
)
from detectors.signals.base import Access, Profile, Signal

FEATURES = ("egress", "egress_bytes")
PERIODS = (("hour", "hours", MIN_OWN_HOURS, MIN_PEER_HOURS),
           ("day", "days", MIN_OWN_DAYS, MIN_PEER_DAYS))


def _part(peer: bool) -> dict[str, Any]:
    return {f"{p}:{f}": LogHist() for p, *_ in PERIODS for f in FEATURES} | {
        "hours": 0, "days": 0}  # periods with any egress


def _surprisal(part: dict[str, Any], active: int, period: str, plural: str,
               counts: dict[str, int]) -> float:
    """How rare a period with this much egress is: P(any egress) x P(this size | egress);
    with no egress on record, its size says nothing yet."""
    rate = (part[plural] + 0.5) / (active + 1.0)
    size = 0.0
    for f in FEATURES:
        hist = part[f"{period}:{f}"]
        if hist.n >= 1:
            size = max(size, hist.surprisal(counts.get(f, 0)))
    return -math.log10(rate) + size


class Egress(Signal):
    name = "egress"

    def new(self, peer: str | None) -> dict[str, Any]:
        return _part(peer) | {"at": (-1, -1, -1, -1)}

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        if x.late or not x.ev.is_egress:
            return 0.0
        mine, theirs = own.of[self.name], peer.of[self.name]
        key = tuple(log_bin(c.get(f, 0)) for c in (x.hour, x.day) for f in FEATURES)
        if key == mine["at"]:
            return 0.0
        mine["at"] = key
        best = 0.0
        for (period, plural, min_own, min_peer), counts in zip(PERIODS, (x.hour, x.day),
                                                               strict=True):
            active_own = own.hours if period == "hour" else own.days
            active_peer = peer.hours if period == "hour" else peer.days
            s_own = (_surprisal(mine, active_own, period, plural, counts)
                     if active_own >= min_own else None)
            s_peer = (_surprisal(theirs, active_peer, period, plural, counts)
                      if active_peer >= min_peer else None)
            best = max(best, blend(s_own, s_peer))
        if x.leaving is not None:
            best += LEAVING_DECADES
        return level(best - math.log10(len(PERIODS)))

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        return {"hour": {f: x.hour.get(f, 0) for f in FEATURES},
                "day": {f: x.day.get(f, 0) for f in FEATURES},
                "leaving": x.leaving is not None}

    def _learn(self, period: str, plural: str, counts: dict[str, int], own: Profile,
               peer: Profile) -> None:
        if not counts.get("egress"):
            return
        for part in (own.of[self.name], peer.of[self.name]):
            part[plural] += 1
            for f in FEATURES:
                part[f"{period}:{f}"].add(counts.get(f, 0))

    def end_hour(self, counts: dict[str, int], own: Profile, peer: Profile) -> float:
        self._learn("hour", "hours", counts, own, peer)
        own.of[self.name]["at"] = (-1, -1, -1, -1)
        return 0.0

    def end_day(self, counts: dict[str, int], own: Profile, peer: Profile) -> None:
        self._learn("day", "days", counts, own, peer)

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        mine = own.of[self.name]
        src, whose = (mine, "they") if own.hours >= MIN_OWN_HOURS else (peer.of[self.name],
                                                                      "their peers")
        active = own.days if src is mine else peer.days
        day = observed["day"]
        usual = {f: src[f"day:{f}"].quantile(0.5) for f in FEATURES}
        shown = ", ".join(f"{fmt_count(day[f])} {UNITS[f]}" for f in FEATURES)
        desc = (f"{shown} today; {whose} exported on {src['days']} of {active} active days, "
                f"usually {', '.join(fmt_count(usual[f]) for f in FEATURES)} on such a day")
        if observed["leaving"]:
            desc += " (on the departing list: less is tolerated)"
        return Reason(self.name, lvl, desc, observed, {"day_median": usual,
                                                      "days_with_egress": src["days"],
                                                      "active_days": active})
