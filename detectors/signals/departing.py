"""``departing``: staff on the departing list downloading or exporting far more often than
on their own days (today, or the last three active days together); never an alert for being
on the list. Counts are tested as Poisson against the actor's own daily rate, widened by its
own day-to-day spread (overdispersion), so a habit of busy days is not a grab."""

from __future__ import annotations

import math
from typing import Any

from detectors.calibrate import level, poisson_surprisal
from detectors.models import Reason, RunningStats, fmt_count
from detectors.priors import DOUBTFUL_WEIGHT, MIN_OWN_DAYS, RATE_ALPHA, TOLERATED
from detectors.signals.base import Access, Profile, Signal


def _test(k: float, rate: float, dispersion: float) -> float:
    return poisson_surprisal(k / dispersion, rate / dispersion)


class Departing(Signal):
    name = "departing"

    def new(self, peer: str | None) -> dict[str, Any]:
        return {"daily": RunningStats(RATE_ALPHA), "recent": (), "leaving": False}

    @staticmethod
    def _rate(part: dict[str, Any]) -> tuple[float, float]:
        st: RunningStats = part["daily"]
        rate = max(st.mean, 0.5)
        return rate, max(1.0, st.var / rate)

    def _surprisal(self, x: Access, part: dict[str, Any]) -> float:
        rate, disp = self._rate(part)
        today = x.day.get("downloads", 0)
        recent = part["recent"]
        three = _test(today + sum(recent), rate * (1 + len(recent)), disp)
        return max(_test(today, rate, disp), three) - math.log10(2)

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        part = own.of[self.name]
        if x.leaving is None or not x.ev.is_egress or part["daily"].n < MIN_OWN_DAYS:
            return 0.0
        part["leaving"] = True
        return level(self._surprisal(x, part))

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        part = own.of[self.name]
        return {"downloads_today": x.day.get("downloads", 0),
                "last_days": list(part["recent"]), "last_day": x.leaving and x.leaving.last_day}

    def end_day(self, counts: dict[str, int], own: Profile, peer: Profile) -> None:
        part = own.of[self.name]
        today = counts.get("downloads", 0)
        rate, disp = self._rate(part)
        # A leaving actor's busy days are the suspicion itself: barely learned.
        doubtful = part["leaving"] and _test(today, rate, disp) > TOLERATED
        part["daily"].update(today, DOUBTFUL_WEIGHT if doubtful else 1.0)
        part["recent"] = (*part["recent"], today)[-2:]
        part["leaving"] = False

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        rate, _ = self._rate(own.of[self.name])
        leaves = f" (last day {observed['last_day']})" if observed["last_day"] else ""
        desc = (f"is leaving{leaves} and made {observed['downloads_today']} downloads or exports "
                f"today (the days before: {observed['last_days']}); usually "
                f"{fmt_count(rate)} a day")
        return Reason(self.name, lvl, desc, observed, {"downloads_per_day": round(rate, 1)})
