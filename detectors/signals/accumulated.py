"""``accumulated``: specific weak signals kept up over days (low-and-slow).

Not scored per event: ``unjustified`` and ``off_hours`` (egress) add to the actor's long-term
sum (``ActorState.long_term``, half-life ``SNOOPWATCH_LONG_HALF_LIFE_S``); this signal turns
the sum into a standing level the risk phase adds to the decaying ones (:meth:`level`), and
explains it when an alert is built (:meth:`explain`).
"""

from __future__ import annotations

from typing import Any

from detectors.models import Reason, saturate
from detectors.priors import LONG_TERM_FROM, LONG_TERM_SCALE, NEGLIGIBLE
from detectors.signals.base import Signal

# (LONG_TERM_SCALE, a prior defined here before, is re-exported: the engine imports it here.)
__all__ = ["LONG_TERM_SCALE", "Accumulated"]


class Accumulated(Signal):
    name = "accumulated"

    @staticmethod
    def level(st: Any) -> float:
        """The standing level of the actor's long-term sum."""
        return saturate(st.long_term - LONG_TERM_FROM, LONG_TERM_SCALE)

    def explain(self, st: Any) -> Reason | None:
        """Its reason (text built only here, when an alert is), or None below 0.01."""
        long_score = saturate(st.long_term - LONG_TERM_FROM, LONG_TERM_SCALE)
        if long_score <= NEGLIGIBLE:
            return None
        return Reason("accumulated", long_score,
                      "kept up unjustified or off-hours access over days "
                      f"(weight {st.long_term:.1f}, halving every "
                      f"{self.settings.long_half_life_s / 86400:g} days)",
                      round(st.long_term, 2), "under 1.0")
