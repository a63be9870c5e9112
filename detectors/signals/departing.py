"""``departing``: staff on the departing watchlist downloading far more often than on their
own days. Being on the list is never an alert by itself; it only lowers the egress
baselines' tolerance (``Context.leaving``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.models import DailyCount, Reason, saturate
from detectors.priors import (
    DEPARTING_DOUBTFUL_WEIGHT,
    LEAVING_DRIFT_DAY_CAP,
    LEAVING_DRIFT_FROM,
    LEAVING_DRIFT_RANK,
    LEAVING_DRIFT_SCALE,
    LEAVING_DRIFT_SLACK,
    LEAVING_FIRST_DAY_WEIGHT,
    LEAVING_MULTIPLE,
    LEAVING_SIGMAS,
    LEAVING_STREAK_REMAINDER,
    LEAVING_USUAL_DAYS,
    NEGLIGIBLE,
)
from detectors.signals.base import Context, Signal, busy_day, fmt_count, restore_slots

# (LEAVING_MULTIPLE and LEAVING_SIGMAS, priors defined here before, are re-exported.)
__all__ = ["LEAVING_MULTIPLE", "LEAVING_SIGMAS", "Departing", "DepartingState"]


@dataclass(slots=True)
class DepartingState:
    """Downloads and exports per active day: what a departing actor's last days are judged
    by (kept across a role change)."""

    downloads: DailyCount = field(default_factory=lambda: DailyCount(window=LEAVING_USUAL_DAYS))
    leaving_streak: int = 0  # busy download days in a row while leaving
    # leaving days' excess over the usual day, in its spreads, added up (a one-sided CUSUM)
    drift: float = 0.0

    __setstate__ = restore_slots



class Departing(Signal):
    name = "departing"

    def new_actor(self) -> DepartingState:
        return DepartingState()

    def new_role(self, state: DepartingState) -> DepartingState:
        return state

    def score_one(self, ctx: Context) -> None:
        if ctx.late or not ctx.ev.is_egress:
            return
        state = ctx.st.signals["departing"]
        state.downloads.add()
        if ctx.leaving is not None:
            self._leaving_downloads(ctx, state, ctx.leaving)

    @staticmethod
    def _leaving_downloads(ctx: Context, state: DepartingState, entry: object) -> bool:
        """A leaving actor downloading far more often than on its own ordinary days.

        The count must be both a multiple of the actor's usual and well outside its own
        day-to-day spread (or Poisson noise), so one extra download by someone who makes one
        a day is not a signal, but a tripled habit is.
        """
        dl = state.downloads
        # Honest leavers have busy days too; days in a row are what a last grab looks like.
        # The last three active days together catch a rise no single day shows; in them a
        # day counts at most as much as in the drift, so an honest leaver's one export day
        # is judged as one day (with the first day's weight), not as three days' rise.
        streak = state.leaving_streak
        score = max(dl.day_score() * (1.0 if streak else LEAVING_FIRST_DAY_WEIGHT),
                    dl.score_one(LEAVING_MULTIPLE, LEAVING_SIGMAS, LEAVING_DRIFT_DAY_CAP))
        if streak and busy_day(dl):
            # Another busy day right after busy ones: each in a row doubles what is left.
            score = max(score, 1.0 - LEAVING_STREAK_REMAINDER ** streak)
        drifting = False
        above = _above(dl)
        if above > 0.0:
            # Days above the own rate, none busy on its own, that keep coming: a grab spread
            # thin. (Judged on a day that is itself above the rate, with what it has so far.)
            drift = state.drift + above
            # (Below the bar, the drift still ranks the day above the actor's ordinary ones.)
            drift_score = max(saturate(drift - LEAVING_DRIFT_FROM, LEAVING_DRIFT_SCALE),
                              LEAVING_DRIFT_RANK * saturate(drift, LEAVING_DRIFT_SCALE))
            drifting = drift_score > score
            score = max(score, drift_score)
        if score <= NEGLIGIBLE:
            return False
        last_day = entry.last_day  # type: ignore[attr-defined]
        leaves = f" (last day {last_day})" if last_day else ""
        again = f", after {streak} such day{'s' if streak > 1 else ''} in a row" if streak else ""
        if drifting:
            again += ", and its leaving days keep running above its usual rate"
        desc = (f"is leaving{leaves} and made {dl.today} downloads or exports today{again}; "
                f"usually {fmt_count(dl.rate)} a day")
        return ctx.raise_("departing", score, [Reason(
            "departing", score, desc, {"downloads_today": dl.today},
            {"downloads_per_day": round(dl.rate, 1)})])

    def end_day(self, ctx: Context) -> None:
        # A leaving actor's busy days are the suspicion itself: barely learned.
        state = ctx.st.signals["departing"]
        dl = state.downloads
        busy = busy_day(dl)
        leaving = ctx.engine.leaving(ctx.st.actor, ctx.t) is not None
        above = _above(dl) if leaving else 0.0
        state.drift = max(0.0, state.drift + above) if leaving else 0.0
        # (A leaving day above the rate, busy or not, is barely learned either.)
        dl.roll(DEPARTING_DOUBTFUL_WEIGHT if leaving and (busy or above > 0) else 1.0)
        state.leaving_streak = state.leaving_streak + 1 if leaving and busy else 0


def _above(dl: DailyCount) -> float:
    """What today adds to a leaver's drift: its spreads above the own usual day (median and
    MAD of the last days: an honest export day in them does not hide a grab), at most
    ``LEAVING_DRIFT_DAY_CAP``, less the slack; 0 before the usual is known."""
    if dl.usual.n < dl.min_days:
        return 0.0
    return min(dl.robust_z(), LEAVING_DRIFT_DAY_CAP) - LEAVING_DRIFT_SLACK
