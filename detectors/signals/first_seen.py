"""``first_seen``: an action on a resource type, a client, a network or a set of sensitive
fields the actor has rarely or never used, weighed by how rare it is among its peers too
(a new tool for the whole team counts little). One new trait alone stays below an alert."""

from __future__ import annotations

import math
from typing import Any

from detectors.calibrate import level
from detectors.models import FirstSeen as Counts
from detectors.models import Reason
from detectors.priors import MIN_EVENTS, PEER_PRIOR_WEIGHT, TRAIT_WEIGHT
from detectors.signals.base import Access, Profile, Signal


def rarity(trait: str, value: str, mine: Counts, theirs: Counts) -> float:
    """-log10 of the value's probability for the actor: its own frequency, with its peers'
    as a prior worth ``PEER_PRIOR_WEIGHT`` accesses."""
    peer_p = (theirs.counts.get(trait, {}).get(value, 0) + 0.5) / (theirs.n + 1)
    own = mine.counts.get(trait, {}).get(value, 0)
    return -math.log10((own + PEER_PRIOR_WEIGHT * peer_p) / (mine.n + PEER_PRIOR_WEIGHT))


class FirstSeen(Signal):
    name = "first_seen"

    def new(self, peer: str | None) -> Counts:
        return Counts(min_events=MIN_EVENTS, max_values=1024 if peer is not None else 256)

    def _levels(self, x: Access, own: Profile, peer: Profile) -> dict[str, float]:
        mine, theirs = own.of[self.name], peer.of[self.name]
        if mine.n + theirs.n < MIN_EVENTS:
            return {}
        out = {}
        for trait, value in x.traits.items():
            if value is not None:
                lvl = level(rarity(trait, value, mine, theirs), weight=TRAIT_WEIGHT)
                if lvl > 0.01:
                    out[trait] = lvl
        return out

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        keep = 1.0
        for lvl in self._levels(x, own, peer).values():
            keep *= 1.0 - lvl
        return 1.0 - keep

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        return {t: (x.traits[t], round(lvl, 3)) for t, lvl in self._levels(x, own, peer).items()}

    def learn_one(self, x: Access, own: Profile, peer: Profile) -> None:
        own.of[self.name].learn_one(x.traits)
        peer.of[self.name].learn_one(x.traits)

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        mine: Counts = own.of[self.name]
        parts, usual = [], {}
        for trait, (value, _) in observed.items():
            count = mine.counts.get(trait, {}).get(value, 0)
            common = mine.usual(trait, but=value) or peer.of[self.name].usual(trait, but=value)
            usual[trait] = dict(common)
            what = "for the first time" if count <= 1 else f"({count} of {mine.n} accesses)"
            parts.append(f"used {trait} {value} {what}"
                         + (f" (usually {', '.join(v for v, _ in common)})" if common else ""))
        return Reason(self.name, lvl, "; ".join(parts),
                      {t: v for t, (v, _) in observed.items()}, usual)
