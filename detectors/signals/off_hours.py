"""``off_hours``: customer data or egress at hours the actor never works.

Hours are personal (shifts, time zones): judged only once the actor has its own
(:class:`~detectors.models.TimeOfWeek`), learned from every access. Its score is set on the
context in the score phase (``ctx.off``: ``unjustified`` weighs a read at a never-worked hour
more), raised in the learn phase; off-hours egress also adds to the long-term sum.
"""

from __future__ import annotations

from detectors.models import Reason, TimeOfWeek
from detectors.priors import (
    GROUP_MIN_OTHERS,
    GROUP_OTHERS_PER_SHARE,
    NEGLIGIBLE,
    OFF_HOURS_ACTOR_HISTORY,
    OFF_HOURS_PEER_HISTORY,
    OFF_HOURS_WEIGHT,
)
from detectors.signals.base import LONG_TERM_CAP, Context, Signal, bump, others_recent, rfc3339


class OffHours(Signal):
    name = "off_hours"

    def new_actor(self) -> TimeOfWeek:
        return TimeOfWeek(min_events=OFF_HOURS_ACTOR_HISTORY * self.settings.min_history_events)

    def new_peer(self, key: str) -> TimeOfWeek:
        return TimeOfWeek(min_events=OFF_HOURS_PEER_HISTORY * self.settings.min_history_events)

    def score_one(self, ctx: Context) -> None:
        ev = ctx.ev
        hours = ctx.st.signals["off_hours"]
        # (A scheduled job run again at its hour keeps the scheduler's hours, not the
        # person's: an analyst's weekly 08:00 export ranked its days above weak insiders'.)
        judged = ((ctx.customer is not None or ev.is_egress) and not ctx.routine
                  and hours.n >= hours.min_events)
        ctx.off = OFF_HOURS_WEIGHT * hours.score_one(ctx.t) if judged else 0.0
        # (raised in learn_one: after the signals scored, as the levels' order has it)

    def learn_one(self, ctx: Context) -> None:
        st, t, off = ctx.st, ctx.t, ctx.off
        hours = st.signals["off_hours"]
        if off > NEGLIGIBLE:
            bump(ctx.counts, "offhours")
            when, usual = rfc3339(t)[11:16], hours.usual_hours()
            ctx.raise_("off_hours", off, [Reason(
                "off_hours", off, f"worked at {when} UTC; usually {usual}", when, usual)])
            if ctx.ev.is_egress:
                # Several of the group exporting off their hours the same day (a quarter
                # close worked late) is the group's night: it adds less up over days.
                others = others_recent(ctx.peer.night, st.actor, t)
                ctx.defer(None, "mark", "night", st.actor, t)
                add = (off / (1 + others / GROUP_OTHERS_PER_SHARE)
                       if others >= GROUP_MIN_OTHERS else off)
                st.long_term = min(st.long_term + add, LONG_TERM_CAP)
        # Learn working hours from every access, though only data access is judged.
        hours.learn_one(t)
        ctx.defer("off_hours", "learn_one", t)
