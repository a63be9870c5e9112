"""``volume``, ``egress``, ``daily_egress``: the running hour's (day's) counts against the
actor's own normal hour (day), its peers' while it is new.

One :class:`~detectors.models.VolumeBaseline` per actor and per peer group each: records and
distinct customers an hour; egress records and bytes an hour; the same a day (days with any
egress). When several of a group run hot the same day it is the group's day
(``PeerGroup.hot``, shared by the three), unless they are busy on unjustified reads.
"""

from __future__ import annotations

import math
from typing import Any

from detectors.models import UNITS, Reason, Tail, VolumeBaseline, saturate
from detectors.priors import (
    COLD_START_SLACK,
    DAILY_EGRESS_MIN,
    DAILY_EGRESS_MIN_DAYS,
    DAILY_EGRESS_PEER_MIN_DAYS,
    EGRESS_MIN,
    GROUP_MIN_OTHERS,
    GROUP_OTHERS_PER_SHARE,
    HOT_SCORE,
    LEAVING_SLACK,
    NEGLIGIBLE,
    PEER_HISTORY_FACTOR,
    PEER_ORDINARY_FACTOR,
    PEER_ORDINARY_MIN_HOURS,
    PEER_ORDINARY_NOTE,
    PEER_ORDINARY_TAIL,
    PEER_SPREAD_SHARE,
    RARE_FACTOR,
    RARE_MIN_HOURS,
    RARE_SCALE,
    SIZE_TAIL_BINS,
    SIZE_TAIL_PER_OCTAVE,
    SUSPECT_WEIGHT,
    UNJUSTIFIED_SUSPECT_LEVEL,
)
from detectors.signals.base import Context, Signal, fmt_count, others_recent

# (The priors that were defined here are re-exported; detectors.priors holds them.)
__all__ = ["DAILY_EGRESS_MIN", "EGRESS_FEATURES", "EGRESS_MIN", "HOT_SCORE", "RARE_FACTOR",
           "RARE_MIN_HOURS", "SUSPECT_WEIGHT", "VOLUME_FEATURES", "DailyEgress", "Egress",
           "PeerEgress", "SizeTail",
           "Volume", "VolumeSignal", "new_egress"]

VOLUME_FEATURES = ("records", "customers")
EGRESS_FEATURES = ("egress", "egress_bytes")


class SizeTail(Tail):
    """How many of a group's periods reached a size: a histogram of sizes in fractions of an
    octave (``SIZE_TAIL_PER_OCTAVE``).

    >>> tail = SizeTail()
    >>> for records in [2_000] * 95 + [300_000] * 5:
    ...     tail.add(records)
    >>> tail.reaching(250_000), tail.reaching(3_000_000), tail.n
    (5, 0, 100)
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(SIZE_TAIL_BINS)

    def _bin(self, size: float) -> int:
        return min(SIZE_TAIL_BINS - 1, int(SIZE_TAIL_PER_OCTAVE * math.log2(1.0 + max(0, size))))


class PeerEgress(VolumeBaseline):
    """A group's egress hours: the baseline, and how many of the hours not under suspicion
    reached each size (:class:`SizeTail` per feature), so that an hour as big as the group's
    scheduled jobs is ordinary for it, however rare among its hours of small downloads."""

    __slots__ = ("sizes",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes = {f: SizeTail() for f in self.features}

    @classmethod
    def of(cls, baseline: VolumeBaseline) -> PeerEgress:
        """A group's egress baseline restored from before the sizes were kept: the same
        baseline, its sizes learned from the hours to come."""
        new = cls.__new__(cls)
        for name in VolumeBaseline.__slots__:
            setattr(new, name, getattr(baseline, name))
        new.sizes = {f: SizeTail() for f in new.features}
        return new

    def learn_one(self, x: dict[str, int], weight: float = 1.0) -> None:
        super().learn_one(x, weight)
        if weight >= 1.0:
            for f, tail in self.sizes.items():
                tail.add(x.get(f, 0))

    def ordinary(self, x: dict[str, int]) -> bool:
        """Did ``PEER_ORDINARY_TAIL`` of the group's hours (and ``PEER_ORDINARY_MIN_HOURS``)
        reach each of ``x``'s sizes?"""
        for f, tail in self.sizes.items():
            if tail.reaching(x.get(f, 0)) < max(PEER_ORDINARY_MIN_HOURS,
                                                 PEER_ORDINARY_TAIL * tail.n):
                return False
        return True


class VolumeSignal(Signal):
    """A count baseline, judged per event against the running period's counts."""

    def ordinary_for_peers(self, peers: Any, counts: dict[str, int]) -> bool:
        """Do the peers' own periods say these counts are ordinary for the group (Egress:
        its hours' sizes)? Then being unusual for the actor alone counts for less."""
        return False

    def learning_weight(self, peak_risk: float) -> float:
        """How much a finished period whose risk peaked at ``peak_risk`` teaches."""
        return SUSPECT_WEIGHT if peak_risk >= self.settings.alert_threshold else 1.0

    def judge(self, ctx: Context, own: VolumeBaseline, peers: VolumeBaseline,
              counts: dict[str, int], slack: float) -> bool:
        floors = None
        ask_peers = False
        if own.hours >= own.min_hours:
            model, whose, z0 = own, "usually", own.z0 + slack
            if peers.hours >= peers.min_hours:
                # An actor can vary as much as its peers do, whatever its short past shows.
                floors = {f: PEER_SPREAD_SHARE * peers.stats[f].std for f in own.features}
                ask_peers = slack == 0.0
        elif (own.name == "egress" and peers.hours < peers.min_hours
              and ctx.peer.signals["volume"].hours >= RARE_MIN_HOURS):
            # Neither the actor nor its long-working peers do this (engineers exporting):
            # there is no spread to judge by, only the size against the smallest that counts.
            return self._rare(ctx, own, counts, peers.hours, ctx.peer.signals["volume"].hours)
        else:  # cold start: judged against peers, with extra tolerance
            model, whose, z0 = peers, "peers usually", peers.z0 + COLD_START_SLACK + slack
        score = model.score_one(counts, z0, floors)
        peer_factor = 1.0
        if score > NEGLIGIBLE and slack == 0.0:
            # Unusual for the actor but ordinary for its peers (a first scheduled export, a
            # big report) counts for less than unusual for both: as the group's own hours
            # show (held-out 194: an analyst's first job, as big as its peers' jobs, on 24
            # active hours of its own), or else as far as their normal's spread reaches.
            if self.ordinary_for_peers(peers, counts):
                peer_factor = PEER_ORDINARY_FACTOR
            elif ask_peers:
                peer_factor = (PEER_ORDINARY_FACTOR
                               + (1.0 - PEER_ORDINARY_FACTOR) * peers.score_one(counts))
            score *= peer_factor
        if score <= NEGLIGIBLE:
            return False
        # When several of the group are unusual at once (quarter end, a new tool), it is
        # the group's day, not this actor's: discount by how many others are running hot.
        others = 0
        if score > HOT_SCORE:
            others = others_recent(ctx.peer.hot, ctx.st.actor, ctx.t)
            # Busy on unjustified reads is not the group's busy day: several accounts
            # scraping at once (stolen credentials, a ring) must not excuse one another.
            if ctx.st.levels.get("unjustified", 0.0) < UNJUSTIFIED_SUSPECT_LEVEL:
                ctx.defer(None, "mark", "hot", ctx.st.actor, ctx.t)
        if others < GROUP_MIN_OTHERS:
            others = 0  # one busy colleague is a coincidence, not the group's day
        if others:
            score /= 1 + others / GROUP_OTHERS_PER_SHARE
        reasons = model.explain(counts, z0, whose, floors)
        for r in reasons:
            r.score = score
            if peer_factor < PEER_ORDINARY_NOTE:
                r.description += " (not unusual for their peers)"
            if others:
                r.description += f" ({others} peers also unusually busy today)"
        return ctx.raise_(own.name, score, reasons)

    @staticmethod
    def _rare(ctx: Context, own: VolumeBaseline, counts: dict[str, int], seen: int,
              active: int) -> bool:
        """Egress by an actor of a group that (almost) never has any: only its size counts,
        from ``RARE_FACTOR`` times the smallest amount the baseline counts at all."""
        score = max(saturate(math.log(max(counts.get(f, 0), 1)
                                      / (RARE_FACTOR * own.min_counts[f])), RARE_SCALE)
                    for f in own.features)
        if score <= NEGLIGIBLE:
            return False
        shown = ", ".join(f"{fmt_count(counts.get(f, 0))} {UNITS[f]}"
                          for f in own.features)
        desc = (f"{shown} in one {own.period}; their peers rarely do any "
                f"({seen} of {active} active hours)")
        return ctx.raise_(own.name, score, [Reason(
            own.name, score, desc, {f: counts.get(f, 0) for f in own.features},
            {"peer_periods_with_egress": seen, "peer_active_hours": active})])


class Volume(VolumeSignal):
    """Records and distinct customers in the running hour."""

    name = "volume"

    def new_actor(self) -> VolumeBaseline:
        return self._baseline(self.settings.min_history_hours)

    def new_peer(self, key: str) -> VolumeBaseline:
        return self._baseline(PEER_HISTORY_FACTOR * self.settings.min_history_hours)

    def _baseline(self, min_hours: int) -> VolumeBaseline:
        s = self.settings
        return VolumeBaseline(VOLUME_FEATURES, {f: s.volume_min_count for f in VOLUME_FEATURES},
                              min_hours=min_hours)

    def score_one(self, ctx: Context) -> None:
        if not ctx.late:
            self.judge(ctx, ctx.st.signals["volume"], ctx.peer.signals["volume"],
                          ctx.counts, 0.0)

    def end_hour(self, ctx: Context, counts: dict[str, int]) -> None:
        # Hours with reads ("records" counts every event but egress): an hour of only
        # downloads or exports is egress's to learn, as egress learns only hours with egress.
        # A night of scheduled exports must not teach a group that its members read nothing
        # in an hour, nor count as the history that lets the group judge.
        if "records" in counts:
            weight = self.learning_weight(ctx.st.hour_peak)
            ctx.st.signals["volume"].learn_one(counts, weight)
            ctx.defer("volume", "learn_one", dict(counts), weight)


def new_egress(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` with the egress of jobs run again left out (``Engine``: a resource the
    actor exported before, at most ``JOB_REPEAT_MAX_GROWTH`` times that size): a weekly
    scheduled export is judged as nothing new, though the baselines learn it as egress."""
    if "egress_repeat" not in counts:
        return counts
    return {**counts, "egress": counts["egress"] - counts["egress_repeat"],
            "egress_bytes": counts["egress_bytes"] - counts["egress_repeat_bytes"]}


class Egress(VolumeSignal):
    """Egress (downloads, exports) records and bytes in the running hour; a departing actor
    (``ctx.leaving``) is held to a lower tolerance."""

    name = "egress"
    family = "egress"

    def new_actor(self) -> VolumeBaseline:
        return VolumeBaseline(EGRESS_FEATURES, EGRESS_MIN,
                              min_hours=self.settings.min_history_hours, name="egress")

    def new_peer(self, key: str) -> PeerEgress:
        return PeerEgress(EGRESS_FEATURES, EGRESS_MIN,
                          min_hours=PEER_HISTORY_FACTOR * self.settings.min_history_hours,
                          name="egress")

    def ordinary_for_peers(self, peers: PeerEgress, counts: dict[str, int]) -> bool:
        return peers.hours >= peers.min_hours and peers.ordinary(counts)

    def score_one(self, ctx: Context) -> None:
        if not ctx.late and ctx.ev.is_egress:
            self.judge(ctx, ctx.st.signals["egress"], ctx.peer.signals["egress"],
                          new_egress(ctx.counts), LEAVING_SLACK if ctx.leaving else 0.0)

    def end_hour(self, ctx: Context, counts: dict[str, int]) -> None:
        if "egress" in counts:
            weight = self.learning_weight(ctx.st.hour_peak)
            ctx.st.signals["egress"].learn_one(counts, weight)
            ctx.defer("egress", "learn_one", dict(counts), weight)


class DailyEgress(VolumeSignal):
    """The day's egress records and bytes (``ActorState.day_counts``) against the actor's
    days with egress."""

    name = "daily_egress"
    family = "egress"

    def new_actor(self) -> VolumeBaseline:
        return self._baseline(DAILY_EGRESS_MIN_DAYS)

    def new_peer(self, key: str) -> VolumeBaseline:
        return self._baseline(DAILY_EGRESS_PEER_MIN_DAYS)

    @staticmethod
    def _baseline(min_days: int) -> VolumeBaseline:
        return VolumeBaseline(EGRESS_FEATURES, DAILY_EGRESS_MIN, min_hours=min_days,
                              name="daily_egress", period="day")

    def score_one(self, ctx: Context) -> None:
        if not ctx.late and ctx.ev.is_egress:
            self.judge(ctx, ctx.st.signals["daily_egress"], ctx.peer.signals["daily_egress"],
                          new_egress(ctx.st.day_counts), LEAVING_SLACK if ctx.leaving else 0.0)

    def end_day(self, ctx: Context) -> None:
        st = ctx.st
        if st.day_counts:  # days with egress: the normal size of a day's downloads
            st.signals["daily_egress"].learn_one(st.day_counts,
                                                 self.learning_weight(st.day_peak))
            ctx.defer("daily_egress", "learn_one", dict(st.day_counts))

