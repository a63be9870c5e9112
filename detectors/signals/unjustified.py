"""``unjustified``: customers read without a ticket or a ticketed contact — and those of
them outside the actor's team's queue — beyond the actor's own share of such reads.

Two stages. The raw statistic is a Poisson surprisal: the running hour's (and day's)
count against the customers read times an upper credible bound of the actor's share
(wide while it rests on few reads; its peers' share is the prior). That raw statistic is
then calibrated against its own empirical distribution over the actor's hours and days and
its peer group's, because real ticketless reads come in clusters (a call-back session):
an agent whose hours often look like that is ordinary, and 40 ticketless lookups in an hour
are not for anyone."""

from __future__ import annotations

import math
from typing import Any

from detectors.calibrate import LogHist, PoissonCusum, Share, blend, level, poisson_surprisal
from detectors.models import Reason
from detectors.priors import (
    CUSUM_RATIO,
    DOUBTFUL_WEIGHT,
    MIN_OWN_DAYS,
    MIN_OWN_HOURS,
    MIN_PEER_DAYS,
    MIN_PEER_HOURS,
    PEER_PRIOR_WEIGHT,
    PRIOR_UNJUSTIFIED_SHARE,
    TOLERATED,
)
from detectors.signals.base import Access, Profile, Signal

NAME = "unjustified"
KINDS = ("unjustified", "foreign")  # foreign: outside the queue of the actor's team
LOG10_2 = math.log10(2)
PRIOR_WEIGHT = 2.0  # the global prior share counts as this many reads: a peer group's own
# reads soon outweigh it


def share_of(own: Profile, peer: Profile, kind: str = "unjustified") -> tuple[float, float]:
    """(point estimate, upper credible bound) of the actor's share of ``kind`` reads."""
    theirs: Share = peer.of[NAME][kind]
    peer_share = theirs.value(PRIOR_UNJUSTIFIED_SHARE, PRIOR_WEIGHT)
    mine: Share = own.of[NAME][kind]
    weight = min(PEER_PRIOR_WEIGHT, theirs.den + PRIOR_WEIGHT)
    p = mine.value(peer_share, weight)
    n = mine.den + weight
    return p, min(1.0, p + 2.0 * math.sqrt(p * (1.0 - p) / n) + 1.0 / n)


def raw(counts: dict[str, int], own: Profile, peer: Profile) -> float:
    """The Poisson surprisal of a period's counts (decades), the stronger of the two kinds."""
    s = 0.0
    for kind in KINDS:
        k = counts.get(kind, 0)
        if k:
            _, hi = share_of(own, peer, kind)
            s = max(s, poisson_surprisal(k, hi * max(counts.get("customers", 0), k)))
    return s


def _enc(s: float) -> float:
    """A surprisal as a histogram value: bins of log10(2) decades, so that beyond the
    largest seen each further bin (``TAIL_STEP`` = 2 times rarer) is what the raw
    statistic itself says: a decade per decade."""
    return 2.0 ** (min(s, 90.0) / (2.0 * LOG10_2)) - 1.0


def calibrated(x: Access, own: Profile, peer: Profile) -> float:
    mine, theirs = own.of[NAME], peer.of[NAME]
    best = 0.0
    for period, counts, n_own, n_peer, min_own, min_peer in (
            ("hour", x.hour, own.hours, peer.hours, MIN_OWN_HOURS, MIN_PEER_HOURS),
            ("day", x.day, own.days, peer.days, MIN_OWN_DAYS, MIN_PEER_DAYS)):
        r = raw(counts, own, peer)
        if r <= 0:
            continue
        v = _enc(r)
        s_own = mine[period].surprisal(v) if n_own >= min_own else None
        s_peer = theirs[period].surprisal(v) if n_peer >= min_peer else None
        best = max(best, r if s_own is None and s_peer is None else blend(s_own, s_peer))
    return best - math.log10(2)


class Unjustified(Signal):
    name = NAME

    def new(self, peer: str | None) -> dict[str, Any]:
        return {"unjustified": Share(), "foreign": Share(), "hour": LogHist(),
                "day": LogHist()}

    def score_one(self, x: Access, own: Profile, peer: Profile) -> float:
        if not x.unjustified or x.late:
            return 0.0
        s = calibrated(x, own, peer)
        # Unjustified and at an hour the actor never works: together worth more than apart.
        return level(s + 0.5 * max(0.0, x.off - TOLERATED))

    def observe(self, x: Access, own: Profile, peer: Profile) -> Any:
        return {"hour": [x.hour.get("unjustified", 0), x.hour.get("customers", 0)],
                "day": [x.day.get("unjustified", 0), x.day.get("customers", 0)],
                "foreign": x.day.get("foreign", 0), "last": x.ev.customer_id}

    def learn_one(self, x: Access, own: Profile, peer: Profile) -> None:
        if x.fresh:  # peers learn read by read (pooled: one insider barely moves them)
            part = peer.of[NAME]
            part["unjustified"].update(x.unjustified, 1.0)
            part["foreign"].update(x.foreign, 1.0)

    def end_hour(self, counts: dict[str, int], own: Profile, peer: Profile) -> float:
        v = _enc(raw(counts, own, peer))
        own.of[NAME]["hour"].add(v)
        peer.of[NAME]["hour"].add(v)
        return 0.0

    def end_day(self, counts: dict[str, int], own: Profile, peer: Profile) -> None:
        v = _enc(raw(counts, own, peer))
        mine = own.of[NAME]
        mine["day"].add(v)
        peer.of[NAME]["day"].add(v)
        n = counts.get("customers", 0)
        for kind in KINDS:
            k = counts.get(kind, 0)
            # A day above the actor's own rate (one its CUSUM grows on) teaches it little:
            # a slow scraper must not make its own habit normal.
            rising = PoissonCusum.increment(k, share_of(own, peer, kind)[1] * n, CUSUM_RATIO) > 0
            mine[kind].update(k, n, DOUBTFUL_WEIGHT if rising else 1.0)

    def explain(self, observed: Any, lvl: float, own: Profile, peer: Profile) -> Reason:
        p, _ = share_of(own, peer)
        pf, _ = share_of(own, peer, "foreign")
        whose = "their" if own.of[NAME]["unjustified"].den >= PEER_PRIOR_WEIGHT else "their peers'"
        k, n = observed["day"]
        desc = (f"read {k} of {n} customers today without a ticket or a ticketed contact "
                f"({observed['foreign']} outside their team's queue, {observed['hour'][0]} in "
                f"the last hour; the last {observed['last']}); usually {round(100 * p)}% of "
                f"{whose} customer reads are ({round(100 * pf, 1)}% outside the queue)")
        return Reason(self.name, lvl, desc, {"unjustified_today": k, "customers_today": n,
                                             "outside_queue_today": observed["foreign"],
                                             "unjustified_hour": observed["hour"][0]},
                      {"unjustified_share": round(p, 3), "outside_queue_share": round(pf, 4),
                       "expected_today": round(p * n, 1)})
