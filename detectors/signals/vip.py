"""``vip``: reads of customers on the VIP watchlist without a ticket or a ticketed contact.

``unjustified`` decides whether a read is such a look (``ctx.looked``) and against which
ticketed share it was judged (``ctx.ticketed_share``: the actor's own, or its peers' while
it is new). How telling the look is comes from the data, not from a number: per peer group,
the share of its VIP reads that were justified. Where the group's VIP reads carry tickets (a
console that asks for a case id on a flagged account), an unticketed one is telling even
from an actor many of whose other reads go unticketed (call-backs); where they often do not,
the actor's own habit decides, as it does while the group has few VIP reads. A snooper's
looks after its first (its ``vip`` level still up) teach the group's share a quarter as much,
so a few snoopers do not make unticketed VIP reads look usual.
"""

from __future__ import annotations

from detectors.models import Reason, RunningStats
from detectors.priors import NEGLIGIBLE, SUSPECT_READ_WEIGHT, VIP_ALPHA, VIP_MIN_READS, VIP_WEIGHT
from detectors.signals.base import Context, Signal


class Vip(Signal):
    name = "vip"

    def new_peer(self, key: str) -> RunningStats:
        # The share of the group's VIP reads (per customer-hour) that were justified.
        return RunningStats(VIP_ALPHA)

    def score_one(self, ctx: Context) -> None:
        # Scores, then learns the group's VIP habit (learn_one would come after the level is
        # raised; the snooper's repeat looks must barely teach the group that they are usual).
        customer = ctx.customer
        if customer not in ctx.engine.vip_customers:
            return
        group = ctx.peer.signals["vip"]
        share = ctx.ticketed_share
        repeat = ctx.st.levels.get("vip", 0.0) > NEGLIGIBLE
        if share > 0.0:  # an unjustified look, from an actor who works under tickets
            if group.n >= VIP_MIN_READS:
                share = max(share, group.mean)
            score = VIP_WEIGHT * share
            desc = f"read VIP customer {customer} without a ticket"
            last = ctx.st.reasons.get("vip")
            if repeat and last is not None and last[1][0].observed != customer:
                # Another VIP while the last look is still telling: two unlikely looks, each
                # the evidence it is alone, together more (a repeat of one VIP is not).
                level = ctx.st.levels["vip"]
                score = 1.0 - (1.0 - level) * (1.0 - score)
                desc += f", after VIP customer {last[1][0].observed}"
            ctx.raise_("vip", score, [Reason("vip", score, desc, customer,
                                             "no VIP reads without a ticket")])
        if ctx.fresh:
            ctx.defer("vip", "update", 0.0 if ctx.looked else 1.0,
                      SUSPECT_READ_WEIGHT if repeat else 1.0)
