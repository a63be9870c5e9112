"""``vip``: reads of customers on the VIP watchlist without a ticket or a ticketed contact.

``unjustified`` decides whether a read is such a look (``ctx.looked``) and against which
ticketed share it was judged (``ctx.ticketed_share``: the actor's own, or its peers' while
it is new). How telling the look is comes from the data, not from a number: per peer group,
the share of its VIP reads that were justified. Where the group's VIP reads carry tickets (a
console that asks for a case id on a flagged account), an unticketed one is telling even
from an actor many of whose other reads go unticketed (call-backs); where they often do not,
the actor's own habit decides, as it does while the group has few VIP reads.
"""

from __future__ import annotations

from detectors.models import Reason, RunningStats
from detectors.priors import VIP_ALPHA, VIP_MIN_READS, VIP_WEIGHT
from detectors.signals.base import Context, Signal


class Vip(Signal):
    name = "vip"

    def new_peer(self, key: str) -> RunningStats:
        # The share of the group's VIP reads (per customer-hour) that were justified.
        return RunningStats(VIP_ALPHA)

    def score_one(self, ctx: Context) -> None:
        share = ctx.ticketed_share
        if share <= 0.0 or ctx.customer not in ctx.engine.vip_customers:
            return  # not an unjustified look, or one from an actor who works without tickets
        group = ctx.peer.signals["vip"]
        if group.n >= VIP_MIN_READS:
            share = max(share, group.mean)
        score = VIP_WEIGHT * share
        ctx.raise_("vip", score, [Reason(
            "vip", score, f"read VIP customer {ctx.customer} without a ticket", ctx.customer,
            "no VIP reads without a ticket")])

    def learn_one(self, ctx: Context) -> None:
        if ctx.fresh and ctx.customer in ctx.engine.vip_customers:
            ctx.peer.signals["vip"].update(0.0 if ctx.looked else 1.0)
