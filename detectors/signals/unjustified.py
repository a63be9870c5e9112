"""``unjustified``: customer reads without a ticket and with no ticketed contact with that
customer in the last day (none at hours the actor never works), beyond the actor's own habit,
and their daily count rising above its own rate. It tells the signals after it (``vip``)
which reads were such looks (``ctx.looked``, ``ctx.ticketed_share``).

Engine-wide it learns which teams serve which customers under tickets (the "queue" map,
:class:`QueueMap`): a read outside the actor's team's queue is more telling. Each unjustified
read also adds to the actor's long-term sum (``ActorState.long_term``), and every customer
pays back what the actor's own habit lets through unticketed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.models import DailyCount, Reason, RunningStats, TicketHabit, saturate
from detectors.priors import (
    FOREIGN_ALPHA,
    FOREIGN_MIN_READS,
    IN_QUEUE_WEIGHT,
    INSIDE_PRIOR,
    JUSTIFIED_ALPHA,
    JUSTIFIED_MIN_READS,
    LATE_TICKET_HOURS,
    LONG_TERM_FROM,
    LONG_TERM_GAIN_PER_HOUR,
    MAX_TICKETED,
    NEVER_WORKED_OFF,
    OUTSIDE_QUEUE_COUNT,
    OUTSIDE_QUEUE_WEIGHT,
    PEER_TICKET_ALPHA,
    QUEUE_LINK_SHARE,
    QUEUE_MIN_LINKS,
    SHARE_DECIMALS,
    SUSPECT_READ_WEIGHT,
    TICKET_ALPHA,
    TICKET_CONTEXT_DAYS,
    TICKET_HISTORY,
    UNJUSTIFIED_DAILY_FLOOR,
    UNJUSTIFIED_DOUBTFUL_MULTIPLE,
    UNJUSTIFIED_DOUBTFUL_WEIGHT,
    UNJUSTIFIED_MIN_DAYS,
    UNJUSTIFIED_SCALE,
    UNJUSTIFIED_SUSPECT_LEVEL,
    UNSERVED_FACTOR,
    VIP_LONG_TERM_FACTOR,
    YOUNG_HABIT_PRIOR,
)
from detectors.signals.base import (
    DAY_MS,
    HOUR_MS,
    LONG_TERM_CAP,
    Context,
    Signal,
    bump,
    fmt_count,
    restore_slots,
    specificity,
)

# (MAX_TICKETED, QUEUE_LINK_SHARE, QUEUE_MIN_LINKS, LONG_TERM_GAIN_PER_HOUR and
# JUSTIFIED_MIN_READS, priors in detectors.priors defined here before, are re-exported.)
__all__ = ["JUSTIFIED_MIN_READS", "LATE_TICKET_MS", "LONG_TERM_GAIN_PER_HOUR", "MAX_TICKETED",
           "QUEUE_LINK_SHARE", "QUEUE_MIN_LINKS", "TICKET_CONTEXT_MS", "QueueMap", "Unjustified",
           "UnjustifiedState"]

# A ticketed contact with a customer justifies unticketed reads of it for this long.
TICKET_CONTEXT_MS = TICKET_CONTEXT_DAYS * DAY_MS
# An unticketed read followed this soon by a ticketed one was a forgotten ticket.
LATE_TICKET_MS = LATE_TICKET_HOURS * HOUR_MS
_TAKEN_BACK = (0.0, 0.0)  # a pending look's (weight, count) once its suspicion is withdrawn


@dataclass(slots=True)
class UnjustifiedState:
    """One actor's ticket habit and the unticketed reads it is judged on."""

    tickets: TicketHabit  # its share of customer reads with a ticket (reset on a role change)
    # share of its customer accesses that are customers other teams serve
    foreign: RunningStats = field(default_factory=lambda: RunningStats(FOREIGN_ALPHA))
    # unjustified customers per active day: a sustained rise is low-and-slow scraping
    unjustified_days: DailyCount = field(default_factory=lambda: DailyCount(
        floor=UNJUSTIFIED_DAILY_FLOOR, min_days=UNJUSTIFIED_MIN_DAYS))
    ticketed: dict[str, int] = field(default_factory=dict)  # customer -> last ticketed ms
    # customer -> (last look, long-term weight, unjustified count) of an unticketed look
    pending: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    unjustified: float = 0.0  # decaying count of unjustified customer reads
    customer_reads: float = 0.0  # decaying count of all customer reads
    unjustified_customers: set[str] | None = None  # created on the first one (memory)
    hour_long_gain: float = 0.0  # long-term weight added in the running hour
    # share of its customer reads (per customer-hour) that were justified: a ticket, or a
    # ticketed contact with the customer in the last day (call-backs are justified)
    justified: RunningStats = field(default_factory=lambda: RunningStats(JUSTIFIED_ALPHA))

    __setstate__ = restore_slots


class QueueMap:
    """Which teams serve which customers under tickets, and so which teams share a queue."""

    def __init__(self, max_customers: int) -> None:
        self.max_customers = max_customers
        # customer -> bit set of the teams that served it under a ticket (the "queue" map)
        self.customer_teams: dict[str, int] = {}
        self.teams: dict[str, int] = {}
        # team -> {other team: customers both served}: shifts of one region share a queue
        self.team_links: dict[int, dict[int, int]] = {}
        self.queues: dict[int, int] = {}  # team bit -> bits of the teams sharing its queue

    def team_bit(self, team: str | None) -> int:
        if team is None:
            return 0
        index = self.teams.get(team)
        if index is None:
            index = self.teams[team] = len(self.teams)
        return 1 << index

    def queue(self, team: str | None) -> int:
        """Bits of the teams whose customers ``team``'s are: itself and the teams it shares
        customers with often (the other shifts of a region's queue), learned from tickets."""
        index = None if team is None else self.teams.get(team)
        if index is None:
            return 0  # (a team not yet seen serving: numbered when it does, on the schedule)
        bit = 1 << index
        mask = self.queues.get(bit)
        if mask is None:
            links = self.team_links.get(bit.bit_length() - 1, {})
            floor = max(QUEUE_MIN_LINKS, QUEUE_LINK_SHARE * sum(links.values()))
            mask = bit
            for other, n in links.items():
                if n >= floor:
                    mask |= 1 << other
            self.queues[bit] = mask
        return mask

    def served(self, customer: str, team: str | None) -> None:
        """Remember which teams work this customer under tickets (a bounded LRU)."""
        book = self.customer_teams
        before = book.pop(customer, 0)
        bit = self.team_bit(team)
        book[customer] = before | bit
        if len(book) > self.max_customers:
            del book[next(iter(book))]
        if before and not before & bit:  # a customer new to this team: the teams share it
            me = bit.bit_length() - 1
            links = self.team_links
            for other in range(before.bit_length()):
                if before >> other & 1:
                    mine, theirs = links.setdefault(me, {}), links.setdefault(other, {})
                    mine[other] = mine.get(other, 0) + 1
                    theirs[me] = theirs.get(me, 0) + 1
            self.queues.clear()


class Unjustified(Signal):
    """Unticketed reads, counted per customer: one forgotten ticket is one customer."""

    name = "unjustified"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.queues = QueueMap(settings.max_customers)

    def _habit(self, alpha: float = TICKET_ALPHA) -> TicketHabit:
        return TicketHabit(alpha, min_events=TICKET_HISTORY * self.settings.min_history_events)

    def new_actor(self) -> UnjustifiedState:
        return UnjustifiedState(self._habit())

    def new_peer(self, key: str) -> TicketHabit:
        # (the group's share over a long memory: a young actor is judged by it, and the last
        # fifty of the group's reads are whoever happened to work that hour)
        return self._habit(PEER_TICKET_ALPHA)

    def new_role(self, state: UnjustifiedState) -> UnjustifiedState:
        state.tickets = self._habit()  # the rest is about the actor, not its role
        return state

    def end_hour(self, ctx: Context, counts: dict[str, int]) -> None:
        state = ctx.st.signals["unjustified"]
        state.hour_long_gain = 0.0
        if state.unjustified < 0.5:
            state.unjustified_customers = None

    def end_day(self, ctx: Context) -> None:
        # Days of unjustified reads well above the actor's rate: a slow scraper must not
        # teach its baseline that this is normal.
        uj = ctx.st.signals["unjustified"].unjustified_days
        doubtful = uj.usual.n >= uj.min_days and uj.today > UNJUSTIFIED_DOUBTFUL_MULTIPLE * uj.rate
        uj.roll(UNJUSTIFIED_DOUBTFUL_WEIGHT if doubtful else 1.0)

    def score_one(self, ctx: Context) -> None:
        # Scores, then learns the ticket habit: how suspicious this read is decides how much
        # it teaches (and off-hours' long-term gain, in its learn_one, comes after).
        customer = ctx.customer
        if customer is None:
            return
        st, ev, t, off = ctx.st, ctx.ev, ctx.t, ctx.off
        state: UnjustifiedState = st.signals["unjustified"]
        peer_tickets = ctx.peer.signals["unjustified"]
        decay, fresh = ctx.decay, ctx.fresh
        habit = {"customer": True, "ticketed": bool(ev.ticket)}
        looked = False  # an unjustified look (not a ticket, nor a call-back, nor a repeat)
        state.customer_reads *= decay
        state.unjustified *= decay
        if fresh:
            state.customer_reads += 1.0
        tickets = state.tickets if state.tickets.rate.n >= state.tickets.min_events \
            else peer_tickets
        queues = self.queues
        served_by = queues.customer_teams.get(customer, 0)
        in_queue = bool(served_by and served_by & queues.queue(ev.team))
        if served_by:
            state.foreign.update(0.0 if in_queue else 1.0)
        if ev.ticket:
            ctx.defer_shared("unjustified", "queues.served", customer, ev.team)
            state.ticketed[customer] = t
            if len(state.ticketed) > MAX_TICKETED:
                del state.ticketed[next(iter(state.ticketed))]  # the oldest insertion
            late = state.pending.pop(customer, None)
            if late is not None and t - late[0] <= LATE_TICKET_MS:
                # A forgotten ticket, supplied after all: take the suspicion back.
                _take_back(st, state, tickets, late)
        elif (off >= NEVER_WORKED_OFF
              or t - state.ticketed.get(customer, -TICKET_CONTEXT_MS) >= TICKET_CONTEXT_MS):
            # (A day's ticketed contact justifies a later look, but not at an hour the actor
            # never works: night views of customers it served are the camera-spying case.)
            recent = state.pending.get(customer)
            if recent is not None and t - recent[0] < LATE_TICKET_MS:
                if off < NEVER_WORKED_OFF and recent[1:] != _TAKEN_BACK:
                    # Looked at again within the hour, at an hour the actor works: a case
                    # worked without its ticket, not a lookup (one read per customer).
                    _take_back(st, state, tickets, recent)
                    recent = (t, *_TAKEN_BACK)
                state.pending[customer] = (t, *recent[1:])  # the same look, still going on
            else:
                looked = ctx.looked = True
                share = tickets.score_one(habit)
                if share > 0 and tickets is state.tickets:
                    # A young habit does not yet excuse: learned from few reads (perhaps
                    # while a scraper began), it is shrunk toward the peers' when lower.
                    n = tickets.rate.n
                    k = YOUNG_HABIT_PRIOR * tickets.min_events
                    share = max(share, (n * share + k * peer_tickets.ticketed_share) / (n + k))
                ctx.ticketed_share = share
                if share > 0:
                    self._unjustified(ctx, state, tickets, customer, served_by, in_queue,
                                      share)
        if not fresh:
            return  # learned per customer (-hour), like the unjustified count and its payback
        # Every customer pays back what the actor's own habit lets through unticketed, so
        # the long-term sum only grows on more than that.
        share = tickets.ticketed_share if tickets.rate.n >= tickets.min_events else 0.0
        st.long_term = max(0.0, st.long_term - self.settings.long_term_weight
                           * specificity(share) * (1.0 - share))
        # Reads under suspicion count a quarter: low-and-slow must not quickly teach the
        # actor that unticketed reads are normal, nor freeze an honest one forever. A daily
        # count rising above the actor's own rate is suspicion by itself: for an agent with
        # a heavy call-back habit the level stays low, and without this its scraping would
        # lower its own ticketed and justified shares, and so its scores.
        suspicious = not ev.ticket and (
            st.levels.get("unjustified", 0.0) >= UNJUSTIFIED_SUSPECT_LEVEL
            or st.long_term >= LONG_TERM_FROM
            or state.unjustified_days.score_one() > 0.0)
        weight = SUSPECT_READ_WEIGHT if suspicious else 1.0
        state.justified.update(0.0 if looked else 1.0, weight)
        state.tickets.learn_one(habit, weight)
        ctx.defer("unjustified", "learn_one", habit, weight)  # (habit: made per event)

    def _unjustified(self, ctx: Context, state: UnjustifiedState, tickets: TicketHabit,
                     customer: str, served_by: int, in_queue: bool, share: float) -> None:
        """An unticketed read of ``customer`` (``served_by``: the teams that serve it under
        tickets; ``in_queue``: one of them shares the actor's queue)."""
        st, t, off = ctx.st, ctx.t, ctx.off
        if t // HOUR_MS >= st.hour:  # not a late event (see Engine.process)
            bump(st.hour_counts, "unjustified")
        if state.unjustified_customers is None:
            state.unjustified_customers = set()
        if len(state.unjustified_customers) < self.settings.max_tracked_customers:
            state.unjustified_customers.add(customer)  # bounded, like the hour's customers
        count = 1.0
        if in_queue:
            where, weight = "", IN_QUEUE_WEIGHT  # a customer of the actor's own team's queue
        else:
            # Outside the population it serves: telling only for an actor who normally
            # stays within its team's queue (not, say, a fraud investigator). A customer no
            # team has served yet counts half as much: it may be the queue's next one.
            inside = (1.0 - state.foreign.mean if state.foreign.n >= FOREIGN_MIN_READS
                      else INSIDE_PRIOR)
            if not served_by:
                inside *= UNSERVED_FACTOR
            where = (", outside its team's queue" if served_by
                     else ", one no team has served under a ticket")
            weight = IN_QUEUE_WEIGHT + OUTSIDE_QUEUE_WEIGHT * inside
            count = 1.0 + OUTSIDE_QUEUE_COUNT * inside
        state.unjustified += count
        weight *= self.settings.long_term_weight * specificity(share)
        vip = customer in ctx.engine.vip_customers
        if vip:
            weight *= VIP_LONG_TERM_FACTOR
        else:
            # Only reads beyond the actor's own daily rate add up over days: a steady habit
            # of ticketless call-backs, however large, never accumulates; a scraper's extra
            # reads do. Nothing accumulates before the rate is known (its first days).
            weight *= state.unjustified_days.excess_share()
        # Capped per hour and overall: a burst is the short-term levels' job.
        weight = min(weight, max(0.0, LONG_TERM_GAIN_PER_HOUR - state.hour_long_gain))
        state.hour_long_gain += weight
        st.long_term = min(st.long_term + weight, LONG_TERM_CAP)
        state.pending[customer] = (t, weight, count)
        if len(state.pending) > MAX_TICKETED:
            del state.pending[next(iter(state.pending))]
        n = len(state.unjustified_customers)
        excess = state.unjustified - (1.0 - share) * state.customer_reads
        # Unticketed and at an hour the actor never works: together worth more than apart.
        score = min(1.0, specificity(share) * saturate(excess, UNJUSTIFIED_SCALE) * (1.0 + off))
        whose = "their" if tickets is state.tickets else "their peers'"
        desc = (f"accessed {n} customers without a ticket or a ticketed contact (the last "
                f"{customer}{where}); {round(100 * share)}% of {whose} customer "
                "accesses carry one")
        observed: dict[str, Any] = {"unticketed_customers": n, "last": customer}
        expected: dict[str, Any] = {"ticketed_share": round(share, SHARE_DECIMALS)}
        # Day after day more of them than the actor's own rate: low-and-slow scraping.
        days = state.unjustified_days
        if t // DAY_MS >= st.day:
            # (as many as the read counts: one outside the queue counts more, for an actor
            # who normally stays within it, so selling to order rises over its own habit)
            days.add_weighted(count)
        # How telling a rising count is: the geometric mean of what the ticket habit says
        # and what the share of justified reads says. Call-backs to customers worked under
        # a ticket are justified, so an agent who makes many (a quarter of its reads
        # unticketed) is not deaf to a rise; one many of whose reads go unjustified (a
        # fraud investigator) still barely counts.
        justified = (state.justified.mean if state.justified.n >= JUSTIFIED_MIN_READS
                     else share)
        trend = (specificity(share) * specificity(max(share, justified))) ** 0.5 \
            * days.score_one()
        if trend > score:
            score = trend
            recent = days.today + sum(days.recent)
            desc += (f"; {fmt_count(recent)} such customers in the last "
                     f"{1 + len(days.recent)} active days, usually {fmt_count(days.rate)} a "
                     f"day (one outside its queue counting up to "
                     f"{fmt_count(1.0 + OUTSIDE_QUEUE_COUNT)})")
            observed["unticketed_last_days"] = round(recent, 1)
            expected["unticketed_per_day"] = round(days.rate, 2)
        ctx.raise_("unjustified", score, [Reason("unjustified", score, desc, observed, expected)])


def _take_back(st: Any, state: UnjustifiedState, tickets: TicketHabit, look: tuple) -> None:
    """Withdraw the suspicion an unticketed look added (``look``: its pending record)."""
    count = look[2] if len(look) > 2 else 1.0
    state.unjustified = max(0.0, state.unjustified - count)
    if look[1:] != _TAKEN_BACK:
        days = state.unjustified_days
        days.today = max(0, days.today - count)
    st.long_term = max(0.0, st.long_term - look[1])
    share = tickets.ticketed_share
    st.levels["unjustified"] = min(
        st.levels.get("unjustified", 0.0),
        specificity(share) * saturate(state.unjustified - (1.0 - share) * state.customer_reads,
                                      UNJUSTIFIED_SCALE))
