"""``vip``: unjustified reads of customers on the VIP watchlist, beyond what the actor's
unjustified reads would meet by chance (VIPs' share of all customer reads)."""

from __future__ import annotations

from typing import Any

from detectors.calibrate import level, poisson_surprisal
from detectors.models import Reason
from detectors.signals.base import Access, Profile, Signal


class Vip(Signal):
    name = "vip"

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        if x.late or not (x.unjustified and x.vip):
            return 0.0
        k = x.day.get("vip_unjustified", 0)
        lam = max(1, x.day.get("unjustified", 0)) * x.vip_share
        return level(poisson_surprisal(k, lam))

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        return {"vip_unjustified_today": x.day.get("vip_unjustified", 0),
                "unjustified_today": x.day.get("unjustified", 0),
                "vip_share": round(x.vip_share, 4), "last": x.ev.customer_id}

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        k, u = observed["vip_unjustified_today"], observed["unjustified_today"]
        desc = (f"read {k} VIP customer{'s' if k != 1 else ''} without a ticket today (the last "
                f"{observed['last']}); by chance {u} unjustified reads would meet "
                f"{u * observed['vip_share']:.2f}")
        return Reason(self.name, lvl, desc, observed,
                      {"vip_by_chance": round(u * observed["vip_share"], 2)})
