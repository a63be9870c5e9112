"""``peer_unjustified``: unjustified looks over the last three active days, as rare among the
peer group's actor-days as a tail probability says.

``unjustified`` judges a rise against the actor's own daily rate, and a scraper whose pace
sits within it shows none: one scraping from its first days teaches the rate its pace, one
with a heavy call-back habit had it already (held-out 179's: 1.3 looks a day, against its
peers' 0.3). This judges the same count, the actor's last three active days together,
against its peer group's actor-days (a histogram, :class:`CountTail`, learned on the hourly
schedule), so a pace no peer keeps ranks above one burst. Weighed by how telling a look is
for this actor (the larger of its ticketed and justified shares), and capped at
``PEER_UNJUSTIFIED_CAP``: being unlike the peers alone ranks a day, it does not
alert (an honest agent may be the group's busiest). One family with ``unjustified``: one
act is counted once; ``SNOOPWATCH_DISABLED_SIGNALS=unjustified`` switches both off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.models import Reason, Tail, saturate
from detectors.priors import (
    JUSTIFIED_MIN_READS,
    PEER_UNJUSTIFIED_BIN,
    PEER_UNJUSTIFIED_CAP,
    PEER_UNJUSTIFIED_FROM,
    PEER_UNJUSTIFIED_MIN_DAYS,
    PEER_UNJUSTIFIED_SCALE,
    PEER_UNJUSTIFIED_TOP,
)
from detectors.signals.base import Context, Signal, fmt_count, restore_slots, specificity

__all__ = ["CountTail", "PeerUnjustified", "PeerUnjustifiedState"]


class CountTail(Tail):
    """How many of a group's actor-days reached a count: a histogram of counts (bins of
    ``PEER_UNJUSTIFIED_BIN``, the last holding everything from ``PEER_UNJUSTIFIED_TOP``).

    >>> tail = CountTail()
    >>> for total in [0.0] * 90 + [1.0] * 8 + [6.0] * 2:
    ...     tail.add(total)
    >>> tail.share_from(0.0), tail.share_from(1.0), tail.share_from(5.0), tail.share_from(9.0)
    (1.0, 0.1, 0.02, 0.0)
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(int(PEER_UNJUSTIFIED_TOP / PEER_UNJUSTIFIED_BIN) + 1)

    def _bin(self, count: float) -> int:
        return min(len(self.bins) - 1, int(max(0.0, count) / PEER_UNJUSTIFIED_BIN))

    def share_from(self, count: float) -> float:
        """The share of the days whose count fell in ``count``'s bin or above."""
        return self.reaching(count) / self.n if self.n else 1.0


@dataclass(slots=True)
class PeerUnjustifiedState:
    """The looks of the active day before the two ``unjustified`` remembers: the third of a
    closed day's three."""

    older: float = 0.0

    __setstate__ = restore_slots


class PeerUnjustified(Signal):
    name = "peer_unjustified"
    family = "unjustified"

    def new_actor(self) -> PeerUnjustifiedState:
        return PeerUnjustifiedState()

    def new_role(self, state: PeerUnjustifiedState) -> PeerUnjustifiedState:
        return state  # (its looks are the actor's, whatever its role)

    def new_peer(self, key: str) -> CountTail:
        return CountTail()

    def end_day(self, ctx: Context) -> None:
        # (after ``unjustified`` rolled its daily count: ``recent`` ends with the closed day)
        state = ctx.st.signals["peer_unjustified"]
        recent = ctx.st.signals["unjustified"].unjustified_days.recent
        ctx.defer("peer_unjustified", "add", state.older + sum(recent))
        state.older = recent[0] if len(recent) > 1 else 0.0

    def score_one(self, ctx: Context) -> None:
        share = ctx.ticketed_share
        if not ctx.looked or share <= 0.0 or "unjustified" in ctx.disabled:
            return  # (it judges unjustified's looks: switched off with it)
        group: CountTail = ctx.peer.signals["peer_unjustified"]
        if group.n < PEER_UNJUSTIFIED_MIN_DAYS:
            return  # (cold start: too few of the group's days to place one in their tail)
        uj = ctx.st.signals["unjustified"]
        days = uj.unjustified_days
        total = days.today + sum(days.recent)
        tail = max(group.share_from(total), 1.0 / group.n)
        surprisal = -math.log10(tail)
        if surprisal <= PEER_UNJUSTIFIED_FROM:
            return
        # How telling a look is for this actor: the larger of its ticketed and justified
        # shares, as a linear specificity (a fraud investigator's looks barely count).
        justified = uj.justified.mean if uj.justified.n >= JUSTIFIED_MIN_READS else share
        telling = specificity(max(share, justified)) ** 0.5
        score = PEER_UNJUSTIFIED_CAP * telling * saturate(surprisal - PEER_UNJUSTIFIED_FROM,
                                                          PEER_UNJUSTIFIED_SCALE)
        ctx.raise_("peer_unjustified", score, [Reason(
            "peer_unjustified", score,
            f"{fmt_count(total)} customers without a ticket or a ticketed contact in its last "
            f"{1 + len(days.recent)} active days; {100 * tail:.2g}% of its peers' days reach "
            "as many",
            {"unticketed_last_days": round(total, 1)}, {"peer_days_reaching": round(tail, 4)})])
