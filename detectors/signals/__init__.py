"""The signals, one module each, behind one contract (:class:`~detectors.signals.base.Signal`).

:data:`REGISTRY` lists them in the order the engine runs them in every phase; that order is
part of the output (a level first raised earlier is listed earlier among equal reasons, and
``off_hours`` must score before ``unjustified`` reads its score). Adding a signal: a module
with a :class:`Signal` subclass, and one line here (or :func:`register` at run time).
"""

from __future__ import annotations

from detectors.signals.accumulated import Accumulated
from detectors.signals.base import Context, Signal
from detectors.signals.departing import Departing
from detectors.signals.first_seen import FirstSeen
from detectors.signals.multivariate import Multivariate
from detectors.signals.new_origin import NewOrigin
from detectors.signals.off_hours import OffHours
from detectors.signals.peer_unjustified import PeerUnjustified
from detectors.signals.unjustified import Unjustified
from detectors.signals.vip import Vip
from detectors.signals.volume import DailyEgress, Egress, Volume

REGISTRY: list[type[Signal]] = [
    Volume,
    Departing,
    Egress,
    DailyEgress,
    OffHours,
    Unjustified,
    Vip,  # (after unjustified: it reads ctx.looked)
    PeerUnjustified,  # (after unjustified: it reads ctx.looked and its rolled daily count)
    FirstSeen,
    NewOrigin,
    Multivariate,
    Accumulated,
]


def register(cls: type[Signal]) -> type[Signal]:
    """Add a signal (a class decorator); engines made afterwards run it, after the others."""
    if any(c.name == cls.name for c in REGISTRY):
        raise ValueError(f"signal {cls.name!r} is registered already")
    REGISTRY.append(cls)
    return cls


def unregister(cls: type[Signal]) -> None:
    REGISTRY.remove(cls)


__all__ = ["REGISTRY", "Context", "Signal", "register", "unregister"]
