"""The contract every signal follows, and what each one sees of an access.

A signal is one module with one class: river-style ``score_one`` and ``learn_one`` against
the actor's own profile and its peer group's, plus ``explain`` for the alert. Its levels are
calibrated (:mod:`detectors.calibrate`): 0 for what the actor and its peers do, rising to 1
(times the signal's weight) as what it observed becomes rarer. Adding a signal is a new
module and one line in :data:`detectors.signals.SIGNALS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from detectors.events import AccessEvent, ContextEntry
from detectors.models import Reason


@dataclass(slots=True)
class Access:
    """One access as the signals see it, built once per event by the engine."""

    ev: AccessEvent
    t: int
    late: bool  # an hour the actor already passed: judged, not counted
    hour: dict[str, int]  # the running hour's counts (records, customers, egress, ...)
    day: dict[str, int]  # the running day's counts
    traits: dict[str, str | None] = field(default_factory=dict)
    fresh: bool = False  # a customer not yet read in the running hour
    unjustified: bool = False  # a customer read with no ticket nor ticketed contact
    foreign: bool = False  # ... of a customer other teams' queues serve, not its own
    vip: bool = False  # ... of a customer on the VIP watchlist
    leaving: ContextEntry | None = None  # the actor is on the departing list, and leaving
    off: float = 0.0  # surprisal of the time of week for this actor (decades)
    vip_share: float = 0.0  # share of all customer reads that are VIP customers'


@dataclass(slots=True)
class Profile:
    """What is normal: for one actor, or pooled over a peer group. ``of`` holds each
    signal's own part; ``hours`` and ``days`` count the active ones learned."""

    of: dict[str, Any] = field(default_factory=dict)
    hours: int = 0
    days: int = 0


class Signal:
    """Base class: a signal that keeps no state and never speaks."""

    name: ClassVar[str] = ""
    weight: ClassVar[float] = 1.0  # the most this signal alone adds to the combined risk

    def new(self, peer: str | None) -> Any:
        """A fresh profile part, for an actor (``peer`` False) or a peer group."""
        return None

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        """The level (0 to ``weight``) this access raises the signal to."""
        return 0.0

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        """What to keep of the access to explain the level later (numbers, not text)."""
        return None

    def learn_one(self, x: Access, own: Profile, peer: Profile) -> None:
        """Fold the access into the actor's and its peers' normal."""

    def end_hour(self, counts: dict[str, int], own: Profile, peer: Profile) -> float:
        """An actor-hour is over (``counts``: its totals); a level, if the hour itself is odd."""
        return 0.0

    def end_day(self, counts: dict[str, int], own: Profile, peer: Profile) -> None:
        """An actor-day is over."""

    def explain(self, observed: Any, level: float, own: Profile, peer: Profile) -> Reason:
        """The reason behind a level: what was observed beside the actor's or peers' normal."""
        return Reason(self.name, level, self.name, observed, None)
