"""The contract every signal implements, and the per-event context the engine hands it.

A signal is one module under ``detectors/signals/``: a :class:`Signal` subclass holding its
engine-wide state (if any) and making its per-actor and per-peer-group state, listed once in
:data:`detectors.signals.REGISTRY`. The engine (:mod:`detectors.engine`) runs, per event:

1. roll: on a new hour, every signal's :meth:`Signal.end_hour` (registry order), then, on a
   new day, every :meth:`Signal.end_day`;
2. count: the engine updates the running hour's and day's counts and fills the
   :class:`Context`;
3. score: every :meth:`Signal.score_one`, in registry order (each may raise its level);
4. learn: every :meth:`Signal.learn_one`, in registry order;
5. risk and alert: the levels combined, with the ``accumulated`` standing level.

Only the hooks a signal overrides are called (the engine looks them up once), so a signal
costs nothing in the phases it takes no part in. An actor's and a peer group's signal states
make one :class:`Profile` each (``ActorState.signals``, ``PeerGroup.signals``), which also
completes a baseline restored from before a signal was registered.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, fields
from datetime import UTC, datetime
from typing import Any

from detectors.models import DailyCount, Reason
from detectors.priors import (
    BUSY_MULTIPLE,
    BUSY_SIGMAS,
    DISPLAY_WHOLE_FROM,
    LONG_TERM_CAP,
    NEGLIGIBLE,
    SPECIFIC_FROM,
)
from detectors.settings import Settings

# (LONG_TERM_CAP, a prior in detectors.priors, is re-exported: the signals import it here.)
__all__ = ["DAY_MS", "HOUR_MS", "LONG_TERM_CAP", "Context", "Profile", "Signal", "bump",
           "busy_day", "fmt_count", "others_in", "others_recent", "overrides", "restore_slots",
           "rfc3339", "specificity"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def specificity(share: float) -> float:
    """How telling an unticketed read is, from the share of the actor's reads with a ticket.

    Only actors who nearly always work under tickets make a missing one meaningful:

    >>> [round(specificity(s), 2) for s in (0.3, 0.6, 0.9, 0.97, 1.0)]
    [0.0, 0.04, 0.64, 0.88, 1.0]
    """
    return max(0.0, (share - SPECIFIC_FROM) / (1.0 - SPECIFIC_FROM)) ** 2


def bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def busy_day(dl: DailyCount) -> bool:
    """Today's count is over twice the usual rate and beyond its Poisson noise (two sigma):
    two downloads by someone who makes one most days is chance, not a busy day."""
    rate = dl.rate
    return dl.usual.n >= dl.min_days and dl.today > max(BUSY_MULTIPLE * rate,
                                                         rate + BUSY_SIGMAS * math.sqrt(rate))


def fmt_count(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= DISPLAY_WHOLE_FROM or v == int(v) else f"{v:.1f}"


def others_in(recent: OrderedDict, actor: str, t: int) -> int:
    """Put ``actor`` in ``recent`` (actor -> last time) and count the others there in the
    last day."""
    recent[actor] = t
    recent.move_to_end(actor)
    while recent and next(iter(recent.values())) < t - DAY_MS:
        recent.popitem(last=False)
    return len(recent) - 1


def others_recent(recent: OrderedDict, actor: str, t: int) -> int:
    """How many others ``recent`` (actor -> last time) holds in the last day before ``t``:
    :func:`others_in` without putting ``actor`` in (that is an op: ``PeerGroup.mark``)."""
    since = t - DAY_MS
    return sum(1 for other, when in recent.items() if when >= since and other != actor)


def restore_slots(obj: Any, state: Any) -> None:
    """Unpickle a slots dataclass; fields added since the record was written take their
    defaults, so a worker can read the state topic an older version wrote."""
    values = state[1] if isinstance(state, tuple) else state
    for f in fields(obj):
        if f.name in values:
            value = values[f.name]
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            raise pickle.UnpicklingError(f"{type(obj).__name__}: no {f.name} in the record")
        object.__setattr__(obj, f.name, value)


class Context:
    """What one event brings to every signal: the cross-signal values live here, explicitly.

    Filled by the engine before the score phase (``engine`` .. ``leaving``, ``network``);
    ``off`` is the off-hours signal's score of the event, set in its ``score_one`` (registry
    order puts it before ``unjustified``, which weighs an unticketed read at a never-worked
    hour more); ``looked`` and ``ticketed_share`` are ``unjustified``'s verdict on the read,
    set in its ``score_one`` (``vip`` reads them).
    Signals feed the actor's long-term sum (``ActorState.long_term``, the ``accumulated``
    signal) and its hour's counts (``counts``: what the ``multivariate`` signal sees of the
    finished hour, and the hourly volume baselines learn) directly on ``st``.

    State that spans actors (``peer`` and engine-wide state such as a signal's map) is read
    here but never changed: a signal schedules the change (:meth:`defer`,
    :meth:`defer_shared`), and the engine applies it once the event-time clock enters a new
    hour, with every other op of the hours before, in canonical order (``Engine.advance``).
    """

    __slots__ = ("contributed", "counts", "customer", "decay", "disabled", "engine", "ev",
                 "fresh", "late", "leaving", "looked", "network", "off", "peer", "routine",
                 "settings", "st", "t", "ticketed_share")

    def __init__(self, engine: Any, st: Any, peer: Any, t: int) -> None:
        self.engine = engine  # the Engine (watchlists: vip_customers, leaving(actor, t))
        self.settings: Settings = engine.settings
        self.disabled: frozenset[str] = engine._disabled
        self.st = st  # the actor's ActorState (its signals' states: st.signals[name])
        self.peer = peer  # its PeerGroup (the group's states: peer.signals[name])
        self.t = t  # the event's time (epoch ms); in the roll phase, the time rolled to
        self.ev: Any = None  # the AccessEvent (None in the roll phase)
        self.late = False  # of an hour already rolled: judged, not counted
        self.decay = 1.0  # the short-term levels' decay factor since the actor's last event
        self.counts: dict[str, int] = {}  # the running hour's counts ({} for a late event)
        self.customer: str | None = None
        self.network: str | None = None  # the source address's /24 or /48 (network_of)
        self.fresh = False  # the customer's first access this hour
        self.leaving: Any = None  # the actor's departing watchlist entry while it leaves
        self.routine = False  # egress of a job run again at an hour it ran at (_repeat_job)
        self.off = 0.0  # the off-hours score (0.5 x how rarely the actor works at this hour)
        # Set by ``unjustified``: the read is a look with no ticket or ticketed contact (not
        # a repeat within the hour), judged against this ticketed share (0: not judged).
        self.looked = False
        self.ticketed_share = 0.0
        self.contributed = False  # a signal raised its level on this event (see raise_)

    def defer(self, target: str | None, method: str, *args: Any) -> None:
        """Schedule ``peer.signals[target].<method>(*args)`` on the actor's peer group
        (``target`` None: on the ``PeerGroup`` itself), applied when the event-time clock
        enters the next hour; ``args`` must not change afterwards (pass copies)."""
        eng = self.engine  # (Engine.schedule, inline: ~4 ops per event)
        eng.op_seq += 1
        eng.ops.append((self.t, self.st.actor, eng.op_seq, self.st.peer, target, method, args))

    def defer_shared(self, target: str, method: str, *args: Any) -> None:
        """Schedule ``<method>(*args)`` on engine-wide state: signal ``target``'s instance
        (a dotted ``method`` reaches an attribute of it), or the engine's ``target``."""
        self.engine.schedule(self.t, self.st.actor, None, target, method, args)

    def raise_(self, name: str, score: float, reasons: list[Reason]) -> bool:
        """Raise the level ``name`` to ``score`` if higher; True if the event contributed."""
        if score <= NEGLIGIBLE or name in self.disabled:
            return False
        st = self.st
        st.levels[name] = max(score, st.levels.get(name, 0.0))
        st.reasons[name] = (score, reasons)  # the latest observation explains the level
        self.contributed = True  # (the event joins the evidence; unused in the roll phase)
        return True


class Signal:
    """One signal. Subclasses set :attr:`name` and override the hooks they need.

    State: :meth:`new_actor` / :meth:`new_peer` return the signal's own per-actor /
    per-peer-group state (kept in ``ActorState.signals[name]`` / ``PeerGroup.signals[name]``,
    pickled with them, so it must pickle), or None for none. Engine-wide state (a map
    learned across actors) lives on the instance: the engine makes one per signal.
    """

    name: str = ""
    # The level (reason) names it raises: SNOOPWATCH_DISABLED_SIGNALS takes these.
    raises: tuple[str, ...] = ()
    # Signals measuring one behaviour (an hour's and a day's egress; two kinds of novelty)
    # share a family: the risk counts only the strongest level of each family, so one act
    # is not counted twice. None: each level it raises is a family of its own.
    family: str | None = None
    # Optional: it runs and learns, but raises nothing unless named in
    # SNOOPWATCH_OPTIONAL_SIGNALS (measured to add nothing by default; on at once, no warm-up).
    optional: bool = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def new_actor(self) -> Any:
        """A new actor's state (None: the signal keeps none per actor)."""
        return None

    def new_peer(self, key: str) -> Any:
        """A new peer group's state (``key``: the group's name)."""
        return None

    def new_role(self, state: Any) -> Any:
        """The actor's state after a role change: by default a fresh one (its old normal no
        longer applies); a signal keeps what is not about the role."""
        return self.new_actor()

    def score_one(self, ctx: Context) -> None:
        """Score the event, raising the signal's level if it is unusual (``ctx.raise_``).
        May keep the running counts its score needs (observe, then score)."""

    def learn_one(self, ctx: Context) -> None:
        """Learn the event, after every signal has scored it."""

    def end_hour(self, ctx: Context, counts: dict[str, int]) -> None:
        """The actor's hour ended (``counts``: its counts; empty if nothing was counted)."""

    def end_day(self, ctx: Context) -> None:
        """The actor's day ended (``ctx.st.day`` still the finished day)."""


class Profile(dict[str, Any]):
    """The baseline of one actor or one peer group: signal name -> that signal's state
    (:meth:`Signal.new_actor` / :meth:`Signal.new_peer`), in registry order.

    A dict, so a signal reads its state as ``ctx.st.signals[name]`` at a dict lookup's cost;
    ``__slots__ = ()`` keeps it as small as a dict (no instance ``__dict__``).
    """

    __slots__ = ()

    @classmethod
    def fresh(cls, signals: Iterable[Signal], make: Callable[[Signal], Any]) -> Profile:
        """A new baseline: ``make(sig)`` (the signal's fresh state) for each of ``signals``."""
        return cls((sig.name, make(sig)) for sig in signals)

    def complete(self, signals: Sequence[Signal], make: Callable[[Signal], Any]) -> None:
        """Give a baseline restored from before a signal was registered that signal's fresh
        state, ``make(sig)``, in registry order: adding a signal needs no checkpoint
        migration. (A profile lacking a signal is shorter than the list of signals: the
        engine compares lengths per event and calls this only then.)"""
        merged = {sig.name: self[sig.name] if sig.name in self else make(sig)
                  for sig in signals}
        self.clear()
        self.update(merged)


def overrides(sig: Signal, hook: str) -> bool:
    """Whether ``sig`` implements ``hook`` (the engine calls only those)."""
    return getattr(type(sig), hook) is not getattr(Signal, hook)
