"""The signals the engine orchestrates, in the order they are scored.

Adding a signal: a module here with one :class:`~detectors.signals.base.Signal` subclass,
and one line in :func:`registry`.
"""

from __future__ import annotations

from detectors.signals.accumulated import Accumulated
from detectors.signals.base import Access, Profile, Signal
from detectors.signals.departing import Departing
from detectors.signals.egress import Egress
from detectors.signals.first_seen import FirstSeen
from detectors.signals.multivariate import Multivariate
from detectors.signals.off_hours import OffHours
from detectors.signals.unjustified import Unjustified
from detectors.signals.vip import Vip
from detectors.signals.volume import Volume

__all__ = ["Access", "Profile", "Signal", "registry"]


def registry(seed: int = 0, disabled: frozenset[str] = frozenset()) -> list[Signal]:
    """Every signal, less the ``disabled`` ones (by name)."""
    signals: list[Signal] = [
        OffHours(),  # first: the others read the time of week it keeps
        Volume(),
        Egress(),
        Unjustified(),
        Vip(),
        Accumulated(),
        FirstSeen(),
        Departing(),
        Multivariate(seed),
    ]
    unknown = disabled - {s.name for s in signals}
    if unknown:
        raise ValueError(f"SNOOPWATCH_DISABLED_SIGNALS: no signal named {sorted(unknown)}")
    return [s for s in signals if s.name not in disabled]
