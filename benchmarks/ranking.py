"""``python benchmarks/ranking.py STEM...``: what keeps insider days out of the 5 % budget.

Recall at the 5 % daily budget (``snoopwatch evaluate``) counts the insider actor-days among
each day's top 5 % of actor-days by their highest risk. This lists what takes those slots:
each day, the honest actor-days ranked at or above the best insider day left out are the
slots lost (at most as many as insider days left out). Lost slots are shown by week of the
data and by the signal strongest at the honest day's peak, and the insider days left out by
scenario and the signal strongest at theirs, so a detection engineer sees which signal's
honest noise to work on, and when.

``STEM``: a company kept by ``benchmarks/heldout.py --keep DIR`` (``DIR/tuning-3`` for
``tuning-3.jsonl``, ``.labels`` and ``.ctx``). Only companies of the tuning family, or
held-out ones already reported, may be looked at this way: looking decides what to change.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from detectors.settings import Settings  # noqa: E402
from detectors.signals.accumulated import Accumulated  # noqa: E402
from detectors.signals.base import DAY_MS  # noqa: E402
from stream.evaluate import BUDGETS, load_labels  # noqa: E402
from stream.metrics import Metrics  # noqa: E402
from stream.pipeline import Pipeline  # noqa: E402
from stream.progress import Progress  # noqa: E402
from stream.replay import replay  # noqa: E402

BUDGET = BUDGETS[-1]  # the 5 % of issue 14's recall target
WEEK_DAYS = 7

# (actor, day) -> (highest risk, the signal strongest at it)
Peaks = dict[tuple[str, int], tuple[float, str]]
Row = tuple[Any, ...]  # (score, insider, ...) of one actor-day


def _slots(rows: list[Row], budget: float = BUDGET) -> tuple[list[Row], list[Row]]:
    """One day's rows (score, insider, ...): the honest ones in the top ``budget`` share
    scoring at least the best insider day left out, and the insider ones left out, each
    strongest first."""
    k = max(1, math.ceil(budget * len(rows)))
    ranked = sorted(rows, key=lambda r: -r[0])
    out = [r for r in ranked[k:] if r[1]]
    if not out:
        return [], []
    return [r for r in ranked[:k] if not r[1] and r[0] >= out[0][0]], out


def lost_slots(scored: list[tuple[float, bool]], budget: float = BUDGET) -> tuple[int, int]:
    """(slots lost, insider days left out) of one day's actor-days (score, insider): honest
    days in the top ``budget`` share scoring at least the best insider day left out, at
    most as many as those left out.

    >>> lost_slots([(0.9, False), (0.5, True), (0.1, False)], budget=0.2)  # one slot
    (1, 1)
    >>> lost_slots([(0.9, True), (0.5, False), (0.1, True)], budget=0.2)
    (0, 1)
    """
    thieves, out = _slots(scored, budget)
    return min(len(thieves), len(out)), len(out)


def peaks_of(stem: str, settings: Settings | None = None,
             progress: Progress | None = None) -> tuple[Peaks, dict[tuple[str, int], str]]:
    """Each actor-day's highest risk and its strongest signal; the insider days' labels."""
    labels = load_labels(f"{stem}.labels")
    pipeline = Pipeline(settings, Metrics(), wall_clock=False)
    engine = pipeline.engine
    peaks: Peaks = {}
    insider: dict[tuple[str, int], str] = {}

    def on_score(ev: Any, score: float, alert: Any) -> None:
        key = (ev.actor, ev.time_ms // DAY_MS)
        label = labels.get(ev.event_id)
        if label is not None:
            insider[key] = label
        if key in peaks and score <= peaks[key][0]:
            return
        st = engine.state_of(ev.actor)
        levels = dict(st.levels) if st is not None else {}
        if st is not None:
            levels["accumulated"] = Accumulated.level(st)
        top = max(levels, key=levels.__getitem__) if score > 0 and levels else "-"
        peaks[key] = (score, top)

    replay(f"{stem}.jsonl", os.devnull, context_path=f"{stem}.ctx", pipeline=pipeline,
           on_score=on_score, progress=progress)
    return peaks, insider


def _empty() -> dict[str, Counter]:
    return {k: Counter() for k in ("week", "thief", "left_out", "insider_week")}


def tally(peaks: Peaks, insider: dict[tuple[str, int], str]) -> dict[str, Counter]:
    """Lost slots by week and by the honest day's signal (the weakest honest days that took
    them), the insider days that lost them by (scenario, signal), insider days by week."""
    out = _empty()
    by_day: dict[int, list[tuple[float, bool, str]]] = defaultdict(list)
    for (actor, day), (score, _) in peaks.items():
        by_day[day].append((score, (actor, day) in insider, actor))
    first = min(by_day) if by_day else 0
    for day, rows in by_day.items():
        week = (day - first) // WEEK_DAYS
        out["insider_week"][week] += sum(bad for _, bad, _ in rows)
        thieves, left_out = _slots(rows)
        lost = min(len(thieves), len(left_out))
        if not lost:
            continue
        out["week"][week] += lost
        for _, _, actor in thieves[-lost:]:  # the weakest of them are the slots given up
            out["thief"][peaks[actor, day][1]] += 1
        for _, _, actor in left_out[:lost]:  # the strongest would have had those slots
            out["left_out"][insider[actor, day], peaks[actor, day][1]] += 1
    return out


def report(totals: dict[str, Counter]) -> str:
    weeks = sorted(totals["insider_week"])
    lines = ["slots lost / insider days, by week of the data: " + ", ".join(
        f"week {w + 1} {totals['week'][w]}/{totals['insider_week'][w]}" for w in weeks),
        "slots lost, by the honest day's strongest signal: " + ", ".join(
            f"{k} {n}" for k, n in totals["thief"].most_common()),
        "insider days that lost them, by scenario and strongest signal: " + ", ".join(
            f"{label}/{sig} {n}" for (label, sig), n in totals["left_out"].most_common())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stems", nargs="+", metavar="STEM",
                   help="kept companies (heldout.py --keep DIR: DIR/tuning-3)")
    args = p.parse_args(argv)
    totals = _empty()
    for stem in args.stems:
        for suffix in (".jsonl", ".labels", ".ctx"):
            if not Path(stem + suffix).is_file():
                p.error(f"{stem}{suffix}: no such file (STEM is the path without suffix)")
        peaks, insider = peaks_of(stem, Settings.from_env(),
                                  Progress(f"ranking {Path(stem).name}",
                                           enabled=sys.stderr.isatty()))
        one = tally(peaks, insider)
        print(f"{Path(stem).name}: {sum(one['week'].values())} slots lost")
        for k, c in one.items():
            totals[k].update(c)
    print(report(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
