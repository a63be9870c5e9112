"""``off_hours``: customer access or egress at a time of week the actor (almost) never
works, against its own hours blended with its peers' (a new actor works its peers' hours).
Alone it stays below an alert; it sharpens what it accompanies and adds up over days
(:mod:`detectors.signals.accumulated`)."""

from __future__ import annotations

import math
from typing import Any

from detectors.calibrate import level
from detectors.models import Reason, TimeOfWeek, rfc3339
from detectors.priors import MIN_EVENTS, OFF_HOURS_WEIGHT, PEER_PRIOR_WEIGHT
from detectors.signals.base import Access, Profile, Signal

NAME = "off_hours"


def surprisal(t: int, own: Profile, peer: Profile) -> float:
    """-log10 of the (smoothed) share of the actor's activity at this time of week."""
    mine: TimeOfWeek = own.of[NAME]
    theirs: TimeOfWeek = peer.of[NAME]
    if mine.n + theirs.n < MIN_EVENTS:
        return 0.0
    prior = theirs.share(t) if theirs.n else 1.0 / 16
    share = (mine.share(t) * (mine.n + 1) + PEER_PRIOR_WEIGHT * prior) / (
        mine.n + 1 + PEER_PRIOR_WEIGHT)
    return -math.log10(share)


class OffHours(Signal):
    name = NAME
    weight = OFF_HOURS_WEIGHT

    def new(self, peer: str | None) -> TimeOfWeek:
        return TimeOfWeek(min_events=MIN_EVENTS)

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        if x.ev.customer_id is None and not x.ev.is_egress:
            return 0.0
        return level(x.off, weight=self.weight)

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        return {"at": rfc3339(x.t)[11:16], "surprisal": round(x.off, 2)}

    def learn_one(self, x: Access, own: Profile, peer: Profile) -> None:
        own.of[NAME].learn_one(x.t)
        peer.of[NAME].learn_one(x.t)

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        mine: TimeOfWeek = own.of[NAME]
        usual = mine.usual_hours() if mine.n >= MIN_EVENTS else peer.of[NAME].usual_hours()
        desc = (f"worked at {observed['at']} UTC (1 in {10 ** observed['surprisal']:.0f} of "
                f"their activity falls then); usually {usual}")
        return Reason(self.name, lvl, desc, observed["at"], usual)
