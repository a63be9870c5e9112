"""Every constant the detectors use, with the reason it is what it is.

None of these says what normal looks like in a company: volumes, rates, shares and
hours are learned from the data (the actor's own history, its peers', every actor's
days). What is left are priors — how much evidence is needed before a rarity counts,
how fast things are forgotten, how two sources of evidence are weighed — each a
property of the method, not of one company's habits.
"""

from __future__ import annotations

# --- time ----------------------------------------------------------------------------
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# --- turning rarity into a score ------------------------------------------------------
# A signal's evidence is its surprisal, -log10 of the tail probability of what it
# observed (3 = a 1-in-1,000 observation). Every actor makes several comparisons an hour,
# so rarities up to TOLERATED decades are ordinary; each further SCALE decades brings the
# signal's level to 0.63, 0.86, 0.95 of its weight.
TOLERATED = 2.0
SCALE = 1.0
# Below that, a signal's level rises only to RAMP: it ranks an actor with weak evidence
# above one with none, and never alerts.
RAMP = 0.02
# A value never seen is still possible: beyond the largest value in a histogram, each
# further log bin (a factor sqrt(2)) is taken to be TAIL_STEP times rarer.
TAIL_STEP = 2.0
# A histogram forgets: once it holds HIST_MEMORY observations, all counts are halved.
HIST_MEMORY = 4000.0
# What the actor's peers do often is at most PEER_SLACK decades less telling for the
# actor than its own history says (an analyst's first quarter-close export).
PEER_SLACK = 1.0
# An actor's own history counts as this many observations of its peers' (a Beta/Dirichlet
# prior): a new actor is judged by its peers, an old one by itself.
PEER_PRIOR_WEIGHT = 20.0

# --- history needed before a signal speaks --------------------------------------------
MIN_OWN_HOURS = 8  # active hours before an actor's own hourly normal counts
MIN_OWN_DAYS = 3  # active days before its own daily normal counts
MIN_PEER_HOURS = 40  # actor-hours before a peer group's normal counts
MIN_PEER_DAYS = 10
MIN_EVENTS = 30  # accesses before first-seen and time-of-week profiles count

# --- justification --------------------------------------------------------------------
# A ticketed contact with a customer justifies unticketed reads of it for a day; a ticket
# supplied within an hour of an unticketed read was a forgotten one.
TICKET_CONTEXT_MS = DAY_MS
LATE_TICKET_MS = HOUR_MS
MAX_TICKETED = 64  # recent ticketed / pending customers remembered per actor
# Before any actor has a history, the share of customer reads without a justification is
# assumed to be this (a weak prior, worth PEER_PRIOR_WEIGHT reads).
PRIOR_UNJUSTIFIED_SHARE = 0.1
# a team shares a queue with the teams holding at least this share (and this many) of the
# customers it shares at all: another region's team meets it only by chance
QUEUE_LINK_SHARE, QUEUE_MIN_LINKS = 0.1, 5

# --- accumulation over days (CUSUM) ----------------------------------------------------
# Long-term risk is a Poisson CUSUM of the actor's daily unjustified (and off-hours) counts
# against its own rate: it grows only on a rate CUSUM_RATIO times the usual or more, and
# CUSUM_H nats of evidence for that (several ordinary-looking days of a doubled rate) are a
# long-term score of 0.63.
CUSUM_RATIO = 2.0
CUSUM_H = 3.0
CUSUM_SCALE = 3.0
# Days on which the CUSUM grows teach the actor's own rate only this much: a slow scraper
# must not make its own habit normal.
DOUBTFUL_WEIGHT = 0.1
# A day's own rate is learned with this weight (an EWMA over about 1/alpha active days).
RATE_ALPHA = 0.05

# --- risk -----------------------------------------------------------------------------
# Detector levels decay with the settings' half-life; below this they are forgotten.
FORGET_LEVEL = 0.001
# The multivariate model corroborates: its weight caps what it alone can add.
MULTIVARIATE_WEIGHT = 0.5
# One new trait (client, network, access, fields) alone stays below an alert.
TRAIT_WEIGHT = 0.3
# Off-hours alone stays below an alert; it sharpens what it accompanies.
OFF_HOURS_WEIGHT = 0.5
# Being on the departing list lowers the tolerance of egress by this many decades.
LEAVING_DECADES = 1.0
MAX_EVIDENCE = 50  # event ids kept as an alert's evidence
EPISODE_QUIET_MS = DAY_MS  # an alert episode ends after this long below half the bar

# --- the false-alert budget -----------------------------------------------------------
# The bar is extrapolated from the bulk of actor-days (their 90th and 99th percentiles of
# peak evidence), where insiders are too few to move it; it needs this many actor-days.
BUDGET_MIN_DAYS = 300
BUDGET_LOW_Q, BUDGET_HIGH_Q = 0.90, 0.99
