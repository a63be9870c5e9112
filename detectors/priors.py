"""Every detection prior, named in one place, each with its reason (issue 14, item 1).

A *prior* here is a belief about how telling a kind of evidence is: how many standard
deviations of an actor's own spread make a count unusual, how much a novelty weighs beside a
volume, how many days a habit needs before its absence means anything. It is never a number
that says what normal looks like in one company: normal (an actor's hours, volumes, clients,
ticket habit; its peer group's) is learned from the stream, per actor and per group. A value
here holds for any company that could run snoopwatch, or it does not belong here.

Most numbers are in units of the learned normal (standard deviations, multiples of the usual
rate, ``-log10`` of a frequency) or are weights between 0 and 1 that a score is multiplied by
(``saturate(excess, scale)`` reaches 0.63 at ``scale``: see :func:`detectors.models.saturate`).
Two sections at the end hold numbers that are not beliefs about evidence at all: bounds on
memory and compute, and presentation (what an explanation shows). They live here so that no
unnamed number is left in the detection code (``tests/test_priors.py`` fails on a new one).

Not here: what an operator sets per deployment (``SNOOPWATCH_*``, :mod:`detectors.settings`:
the alert bar, half-lives, history lengths, the false-alert budget), and structural numbers
(0, 1, halving, 24 hours a day, milliseconds per second, array indices), which stay inline.

Changing one: edit it here, then measure on the tuning family only, then once on held-out
(docs/detection.md, "Priors"). Every value below is the one the detection was tuned with.
"""

from __future__ import annotations

import math

# --- Scores and risk (engine) -----------------------------------------------------------------

NEGLIGIBLE = 0.01  # a score or level at or below this (one point of risk) counts nowhere
# Each further family counts this much of the one before: evidence of different kinds adds
# up, but a pile of weak ones of several kinds (a new hire's first days) must not alert alone.
FURTHER_FAMILY_WEIGHT = 0.6
LEVEL_CAP = 0.999  # no single level is certainty: risk stays below 100 and stays ordered
# Severity bands of the risk score (0-100), highest first; an alert opens at the configured bar.
SEVERITIES = ((95.0, "critical"), (85.0, "high"), (70.0, "medium"), (0.0, "low"))
BAR_CAP = 95.0  # the adaptive raise of the bar stops here: critical risk always alerts
# Finished actor-days before the false-alert budget's bar applies: its bulk must be known
# (about 50 people's first fortnight).
BUDGET_MIN_DAYS = 500
LONG_TERM_QUIET_HOURS = 6  # the accumulated level's share of the risk halves per quiet 6 h
EPISODE_QUIET_DAYS = 1  # an episode ends after a day below SNOOPWATCH_CLOSE_RATIO of the bar
# A departing actor is treated as leaving from two weeks before its notice (a leaver may
# start collecting before giving notice).
LEAVING_BEFORE_NOTICE_DAYS = 14

# --- The false-alert budget's tail (models.Peaks) ---------------------------------------------

PEAKS_BIN_WIDTH = 0.02  # hazard units per bin (risk 60 -> x 0.92; 95 -> 3.0): exact to a bin
PEAKS_TOP = 7.0  # x of risk 99.9: the last bin holds everything above
# The tail is extrapolated from the bulk of ordinary days, the median and the 90th percentile
# (insiders, a few per cent of actor-days at most, move them a few points only) ...
BUDGET_LOW_QUANTILE, BUDGET_HIGH_QUANTILE = 0.5, 0.9
BUDGET_HIGH_TAIL = 0.1  # ... the share of days above the high quantile (1 - 0.9, exactly)
BUDGET_TAIL_RATIO = 5.0  # ... and how much rarer that is than the median's (0.5 / 0.1)

# --- Running statistics (models.RunningStats) -------------------------------------------------

# Weight of a new value once 1/alpha (20) have been learned: a normal follows slow change
# over about twenty observations and is exact (Welford) before.
RUNNING_ALPHA = 0.05

# --- Volume: records, customers and egress per hour or day (models.VolumeBaseline, volume) -----

VOLUME_ALPHA = 0.05  # hours (or days): a normal follows change over ~20 active periods
VOLUME_MIN_HOURS = 6  # active periods before a baseline scores anything (its own default)
VOLUME_MIN_COUNT = 10  # a count below this is never anomalous: too small to matter
VOLUME_SD_FLOOR = 0.5  # least spread in log1p units (x1.65): a quiet history understates it
VOLUME_Z0 = 2.5  # standard deviations above the normal tolerated (log space): noise
VOLUME_SCALE = 1.5  # standard deviations beyond the tolerance that score 0.63
# log1p headroom over the largest period on record still counted as a repeat of it (25 %).
REPEAT_MARGIN = math.log(1.25)
REPEAT_DISCOUNT = 0.4  # a repeat of what it has done before (a weekly export) counts this much
PEAK_FORGET = 0.005  # log units per learned period: the largest on record halves in ~140
PEAK_MULTIPLE = 3  # beyond 3x the largest period on record is telling whatever the spread
PEAK_SCALE = 1.0  # log units beyond that multiple (e-fold) that score 0.63
PEAK_TOLERANCE_SHARE = 0.5  # a changed tolerance (z0) moves the peak test half as far
# An actor may vary as much as this share of its peers' spread, whatever its short past shows.
PEER_SPREAD_SHARE = 0.75
PEER_HISTORY_FACTOR = 4  # a peer group's baseline needs 4x an actor's history to judge by
COLD_START_SLACK = 1.0  # extra standard deviations tolerated while judged by peers' normal
LEAVING_SLACK = -1.0  # a departing actor's egress: a standard deviation less tolerated
# Unusual for the actor but ordinary for its peers (a first scheduled export) counts at least
# this share, the rest in proportion to how unusual it is for the peers.
PEER_ORDINARY_FACTOR = 0.3
# Egress as big as at least this share of the group's egress hours (and this many of them)
# is ordinary for the group, whatever its mean and spread say: a group's hours are mostly
# small downloads with a tail of scheduled jobs, which a log-normal's tail cannot hold.
PEER_ORDINARY_TAIL, PEER_ORDINARY_MIN_HOURS = 0.01, 3
SIZE_TAIL_PER_OCTAVE, SIZE_TAIL_BINS = 4, 160  # the group's egress-hour histogram: 2**40 top
HOT_SCORE = 0.2  # a volume score above this puts the actor among its group's hot ones today
# A period whose risk reached the alert bar teaches the count baselines this much of an
# ordinary one, and does not become the largest on record: an insider's export must not
# widen its group's normal for the next insider's.
SUSPECT_WEIGHT = 0.1
# Egress by a group that has worked this many hours but (almost) never exported (fewer than
# its baseline's minimum hours of egress: 25 people-days of work without any) is judged by
# size only, from RARE_FACTOR x the smallest count that counts (100k records an hour).
RARE_MIN_HOURS, RARE_FACTOR = 200, 2000
RARE_SCALE = 1.0  # log units (e-fold) beyond that size that score 0.63
# The smallest egress that counts (records, bytes): a few files' worth in an hour ...
EGRESS_MIN = {"egress": 50, "egress_bytes": 20_000_000}
DAILY_EGRESS_MIN = {"egress": 20, "egress_bytes": 5_000_000}  # ... and in a day
# Days with egress before a day's egress is judged (the actor's own, its peer group's).
DAILY_EGRESS_MIN_DAYS, DAILY_EGRESS_PEER_MIN_DAYS = 5, 20

# --- Peer groups' busy days and nights (volume, off_hours) ------------------------------------

GROUP_MIN_OTHERS = 2  # one other hot colleague is a coincidence; two are the group's day
GROUP_OTHERS_PER_SHARE = 2  # each two others make it one more actor's share: s / (1 + n/2)

# --- Daily rates: downloads, unticketed customers (models.DailyCount, departing) --------------

DAILY_ALPHA = 0.1  # days: a daily habit follows change over ~10 active days
DAILY_MIN_DAYS = 5  # active days before a daily rate is judged
DAILY_FLOOR = 0.5  # least rate assumed per day: "almost never" is not broken by one
DAILY_RECENT_DAYS = 2  # today is judged with the two previous active days (a sustained rise)
DAILY_MULTIPLE = 2.5  # the days' total must be 2.5x the usual rate ...
DAILY_SIGMAS = 3.0  # ... and 3 sigma out (at least Poisson noise): both, or it is chance
DAILY_SCALE = 0.5  # excess (in multiples of that bar) that scores 0.63
DAY_MIN_SD = 1.0  # today alone: at least one count of spread (one day is noisier than three)
# A busy day: over twice the usual rate and beyond two sigma of Poisson noise (two downloads
# by someone who makes one most days is chance).
BUSY_MULTIPLE, BUSY_SIGMAS = 2, 2

# --- Departing staff (departing) --------------------------------------------------------------

# A leaver's last three active days are judged with a lower bar than anyone's (2.5x, 3
# sigma): a 75 % rise, 2.5 sigma out, sustained over three days, is what a quiet last grab of
# ordinary-sized reports looks like.
LEAVING_MULTIPLE, LEAVING_SIGMAS = 1.75, 2.5
LEAVING_FIRST_DAY_WEIGHT = 0.6  # a single busy day, not after busy ones: honest leavers have one
LEAVING_STREAK_REMAINDER = 0.5  # each busy day in a row halves what is left up to certainty
DEPARTING_DOUBTFUL_WEIGHT = 0.1  # a leaver's busy day teaches its rate this much: the suspicion
# A leaver's days above its own rate add up (a one-sided CUSUM, in its own sigmas): each day
# adds how far it lies above the rate less this slack (days within it wear the sum down) ...
LEAVING_DRIFT_SLACK = 0.5
# ... a day counting at most as one this many sigmas out: one very busy day is the single-day
# bar's to judge, and must not leave a sum that any slightly busy day then tips over (nor a
# three-day total that is "a rise" on it and the two days after) ...
LEAVING_DRIFT_DAY_CAP = 3.0
# ... and a sum beyond this (more than one very busy day: honest leavers have one) scores,
# this much more past it scoring 0.63.
LEAVING_DRIFT_FROM, LEAVING_DRIFT_SCALE = 3.0, 3.0
# Below that, a drift still scores up to this much (far under any alert bar): a leaver's day
# above its usual ranks above its ordinary days and its colleagues' in a daily review.
LEAVING_DRIFT_RANK = 0.15
# The drift is measured from the median of the last this many active days, in their median
# absolute deviation (robust: a busy export day among them moves neither).
LEAVING_USUAL_DAYS = 15

# --- Working hours (models.TimeOfWeek, off_hours) ---------------------------------------------

HOURS_MIN_EVENTS = 50  # accesses before hours are judged (the model's own default)
HOURS_TOLERATED = 1.5  # -log10 share of activity at that hour tolerated: ~1 access in 30
HOURS_SCALE = 0.5  # -log10 units beyond it that score 0.63 (a factor of ~3 rarer)
# The same hours on another kind of day (weekday/weekend) count this share: a weekend shift
# at one's usual hours is not odd.
HOURS_ANY_DAY_SHARE = 0.3
HOURS_PSEUDO_COUNT = 0.5  # accesses assumed at any hour (Jeffreys-like): never exactly never
OFF_HOURS_WEIGHT = 0.5  # an off-hours access alone is half a signal: it needs corroboration
OFF_HOURS_ACTOR_HISTORY = 2  # an actor's hours are judged after 2x the minimum history events
OFF_HOURS_PEER_HISTORY = 10  # a group's after 10x

# --- Novelty: actions, clients, networks, fields (models.FirstSeen, first_seen) ---------------

# A trait's score is capped by its weight: one new client or network alone stays below an
# alert; it takes several unusual traits at once, or another signal agreeing.
NOVELTY_WEIGHT = 0.3
FIRST_SEEN_MIN_EVENTS = 30  # accesses before novelty is judged (the model's own default)
FIRST_SEEN_TOLERATED = 1.3  # -log10 frequency tolerated: ~1 use in 20
FIRST_SEEN_SCALE = 0.5  # -log10 units beyond it that score 0.63
FIRST_SEEN_PSEUDO_COUNT = 0.5  # uses assumed of any value (Jeffreys-like): never exactly never
# A value this share of the peers' events use is common among them, and counts this much.
COMMON_SHARE, COMMON_FACTOR = 0.01, 0.3
FIRST_SEEN_PEER_HISTORY = 10  # a peer group's profile judges after 10x an actor's history
# A client this many actors of a group took up is the group's (a team's new console on its
# rollout day, long before its share of the group's all-time events is common; a browser's
# update), and counts COMMON_FACTOR. Only clients: other novelties several actors share can
# be one exfiltration route (held-out 190: six analysts' leaks to one network).
FIRST_SEEN_ADOPTERS = 5

# --- New origin (signals.new_origin) ----------------------------------------------------------

NEW_ORIGIN_MIN_EVENTS = 2  # the actor's own calls before an origin can be "new" to it
NEW_ORIGIN_SCALE = 3.0  # downloads from the new origin that make a level of 0.63
NEW_ORIGIN_COMMON = 0.3  # the level's share where peers use the network too
NEW_ORIGIN_PEERS = 2  # peers using a network (a client) that make it common among them
# Distinct actors of a group on one address that make it a shared host (a server acting for
# several people), whose calls are none of those actors' own origin. Two: a scheduler that
# has run jobs for only two analysts so far is already not where either works (held-out
# 165's first night; at three, one's first desk session alerted). A desk two people share
# is then no one's own origin either: a stolen session on it is still new with a client
# its peers do not use, and from a second origin of the actor's own.
NEW_ORIGIN_SHARED_HOST = 2

# --- Unjustified looks against the peers (signals.peer_unjustified) ---------------------------

PEER_UNJUSTIFIED_BIN, PEER_UNJUSTIFIED_TOP = 0.5, 30.0  # the histogram of 3-day counts
PEER_UNJUSTIFIED_MIN_DAYS = 300  # a group's actor-days before its tail places one
PEER_UNJUSTIFIED_FROM = 1.0  # decades of surprisal ignored: rarer than 1 in 10 peer days
PEER_UNJUSTIFIED_SCALE = 1.0  # decades beyond that making 0.63 of the cap
# Being unlike the peers alone ranks a day, never alerts (the group's busiest honest agent)
PEER_UNJUSTIFIED_CAP = 0.5

# --- Ticket habit (models.TicketHabit, signals.base.specificity) ------------------------------

TICKET_ALPHA = 0.02  # customer accesses: the ticketed share follows change over ~50
# A group's customer reads: its ticketed share (what a young actor is judged by) follows change
# over ~1,000 of them (hours of a large group's work, days of a small one's), so that whoever
# works this hour (a night shift's call-backs, an early agent's queue) does not swing it. At
# 0.02, a group of 178 agents' share read at one agent's 64 looks ranged 0.48-0.92 (at 0.001:
# 0.81-0.91), against 0.87 over its 28 days (heldout-191).
PEER_TICKET_ALPHA = 0.001
TICKET_MIN_EVENTS = 30  # customer accesses before a missing ticket means anything
# A ticketed share at or below a half says nothing about a missing ticket; above it, how
# telling one is rises as the square of the distance to always.
SPECIFIC_FROM = 0.5

# --- Unjustified reads (signals.unjustified) --------------------------------------------------

TICKET_CONTEXT_DAYS = 1  # a ticketed contact with a customer justifies unticketed reads for a day
LATE_TICKET_HOURS = 1  # an unticketed read ticketed within the hour was a forgotten ticket
TICKET_HISTORY = 3  # a ticket habit (an actor's, its group's) is used after 3x the minimum history
# ctx.off (off_hours' score, at most OFF_HOURS_WEIGHT) from which the hour is one the actor never
# works: a day's ticketed contact no longer justifies a read (night views of customers it
# served are the camera-spying case), nor is a second look within the hour taken back.
NEVER_WORKED_OFF = 0.3
# A team shares a queue with the teams holding at least this share (and this many) of the
# customers it shares at all: another region's team meets it only by chance.
QUEUE_LINK_SHARE, QUEUE_MIN_LINKS = 0.1, 5
FOREIGN_ALPHA = 0.02  # customer accesses: the share outside the queue follows change over ~50
FOREIGN_MIN_READS = 20  # reads of customers a team serves before that share is the actor's own
# Before then, the share of its reads assumed inside its queue (an outside read then weighs
# 1.0 and counts 1.25).
INSIDE_PRIOR = 1 / 6
# An unjustified read's long-term weight: this much in the actor's own team's queue ...
IN_QUEUE_WEIGHT = 0.5
# ... and outside it, this much more per share of the actor's reads inside its queue: telling
# only for an actor who normally stays within it (not, say, a fraud investigator) ...
OUTSIDE_QUEUE_WEIGHT = 3.0
OUTSIDE_QUEUE_COUNT = 1.5  # ... as is its count: one customer, plus this much per such share
# A customer no team has served under a ticket yet counts this share of that inside share:
# it may be the queue's next one.
UNSERVED_FACTOR = 0.5
VIP_LONG_TERM_FACTOR = 4  # an unticketed VIP read adds 4x, within its daily rate or not
LONG_TERM_GAIN_PER_HOUR = 1.0  # long-term sum added per hour: bursts are the short-term levels' job
UNJUSTIFIED_SCALE = 4.0  # unjustified customers beyond the habit's allowance that score 0.63
# An unticketed VIP read scores this x the larger of the actor's ticketed share and its
# group's share of justified VIP reads ...
VIP_WEIGHT = 0.75
VIP_MIN_READS = 20  # ... the latter once the group has made this many VIP reads ...
VIP_ALPHA = 0.01  # ... and tracked over about its last 100 (a drifting share)
# An actor's ticket habit, once used (TICKET_HISTORY x the least history), is shrunk toward
# its peers' while it is lower, with the peers' counting as this many times that history:
# a habit learned from few reads, perhaps while a scraper began, does not yet excuse.
YOUNG_HABIT_PRIOR = 1.0
# An unjustified level from which the actor's unticketed reads are under suspicion (as they
# are above LONG_TERM_FROM), and its busy hour is not its group's busy day (volume) ...
UNJUSTIFIED_SUSPECT_LEVEL = 0.3
# ... and teach its ticket habit this much: low-and-slow must not quickly teach the actor that
# unticketed reads are normal, nor freeze an honest one forever.
SUSPECT_READ_WEIGHT = 0.25
# Unjustified customers per active day: the least rate assumed, and the active days before a
# rise is judged.
UNJUSTIFIED_DAILY_FLOOR, UNJUSTIFIED_MIN_DAYS = 0.3, 3
# A day of over twice the usual rate of them teaches the rate this much: a slow scraper must
# not teach its baseline that this is normal.
UNJUSTIFIED_DOUBTFUL_MULTIPLE, UNJUSTIFIED_DOUBTFUL_WEIGHT = 2, 0.1
JUSTIFIED_ALPHA = 0.005  # customer-hours: the share of justified reads follows change over ~200
JUSTIFIED_MIN_READS = 100  # customer reads before the actor's justified share is used

# --- Accumulated over days (accumulated, off_hours) -------------------------------------------

LONG_TERM_CAP = 6.0  # the long-term sum stops here: risk ~0.9, and a burst is forgotten in a week
LONG_TERM_FROM = 1.0  # the sum counts above this: one day's weak signals are not low-and-slow
LONG_TERM_SCALE = 1.75  # sum above LONG_TERM_FROM that makes a long-term score of 0.63

# --- Hour as a whole (multivariate, detectors.multivariate.StreamingOutlier) ------------------

MULTIVARIATE_TOLERATED = 3.0  # model units; ~1 is the 90th percentile of normal hours
MULTIVARIATE_SCALE = 2.0  # model units beyond that which score 0.63
MULTIVARIATE_WEIGHT = 0.5  # it corroborates; alone it never makes an alert
FOREST_EXCESS_WEIGHT = 1.0  # score per unit of range excess (beside the forest's ~1 at q90)
FOREST_MIN_RANGE = 1.0  # log1p units: a constant feature's unit is at least a tenth of this
FOREST_RANGE_UNITS = 10.0  # a feature's unit is at least 1/10 of its range: 10 units span it
FOREST_UNIT_FLOOR = 1 / FOREST_RANGE_UNITS  # (the same, as a share: exactly 0.1)
FOREST_CALIBRATION_QUANTILE = 0.9  # a learned vector at this quantile scores 1

# --- Bounds on memory and compute (not beliefs about evidence) --------------------------------

MAX_EVIDENCE = 50  # events (ids, customers) kept behind an actor's risk and listed in an alert
FIRST_SEEN_MAX_VALUES = 256  # values per trait and actor (SNOOPWATCH_MAX_PROFILE_VALUES in use)
FIRST_SEEN_PEER_MAX_VALUES = 1024  # per trait and peer group
FIRST_SEEN_FORGET_PARTS = 4  # a full profile forgets its rarest quarter at once
FOREST_TREES = 25  # trees in the isolation forest
FOREST_SAMPLE_SIZE = 256  # rows per tree (the iForest paper's psi)
FOREST_WINDOW = 4096  # reservoir rows: the model's memory of normal (won on every ADBench seed)
FOREST_REFRESH = 128  # learned vectors between rebuilding one tree
FOREST_WARMUP = 128  # vectors learned before scoring
FOREST_EARLY_REBUILD = 4  # the whole forest is rebuilt at each doubling up to 4x the sample
FOREST_MAX_FEATURES = 64  # features beyond these are ignored
FOREST_CALIBRATION_ROWS = 256  # reservoir rows the score is centred and scaled on
MAX_TICKETED = 64  # recent ticketed (and unticketed) customers remembered per actor
# Egress of a resource the actor exported before, at most this many times its largest earlier
# size, is that job again (a weekly scheduled export), not new egress: the egress signals
# judge the hour and day without it (their baselines still learn it). A job first seen is
# judged as any egress.
JOB_REPEAT_MAX_GROWTH = 2.0
MAX_JOBS = 64  # exported resources (job -> largest size) remembered per actor
MAX_ORIGINS = 64  # networks and clients remembered per actor, shared hosts per group
MAX_PEER_ORIGINS = 4 * MAX_ORIGINS  # a group's networks, clients, addresses not yet shared
# Addresses whose calls an actor remembers counting (its first ones): a host found shared
# only after the actor's calls from it counted (the data's first morning, when the scheduler
# has run for only one or two people) is taken back out of its own calls.
MAX_OWN_HOSTS = 8

# --- Presentation (what explanations show; never changes a score) -----------------------------

SUMMARY_REASONS = 3  # reasons quoted in an alert's summary
USUAL_VALUES = 3  # an explanation's "usually ..." values
FOREST_EXPLAIN_TOP = 3  # features named in a multivariate reason
FOREST_EXPLAIN_NEIGHBOURS = 10  # stored vectors a feature's expected value is the median of
USUAL_CACHE_FROM = 4  # profiles over 4x USUAL_VALUES values cache their most used ...
USUAL_CACHE_REFRESH, USUAL_CACHE_SLACK = 1.05, 20  # ... refreshed after 5 % (+20) more events
PEER_ORDINARY_NOTE = 0.5  # a volume reason says "not unusual for their peers" below this factor
USUAL_HOURS_SHARE = 0.02  # an hour with this share of the actor's activity is a usual one
SHARE_DECIMALS = 3  # decimals of a share among an alert's expected values
DISPLAY_WHOLE_FROM = 10  # counts from 10 are shown without decimals, from 10k as 12k (not 1.2k)
