"""``snoopwatch evaluate``: detection quality on labelled events, beside a baseline.

Two methods score the same file in one run: snoopwatch (the replay pipeline)
and river's ``HalfSpaceTrees`` with defaults on min-max scaled per-event
features. Both are scored the same way:

- event ROC AUC: each valid event's score against its label;
- actor-day: an actor's highest score that (UTC) day; the actor-day is positive
  when the actor did at least one labelled event that day; ROC AUC and average
  precision over actor-days;
- recall at a daily investigation budget of 1% and 5% of the day's active actors
  (the top-ranked actors each day; ties at the cut are shared out evenly), beside
  its ceiling — what a perfect ranking gets when a day holds more malicious
  actors than the budget;
- alerts: an alert is true when it falls inside a scenario instance of its actor
  (from the instance's first labelled event to a day after its last); precision,
  and false alerts per 1,000 negative actor-days;
- per scenario (label): an instance is an (actor, label) pair; detected when a
  true alert for it is raised; median time from its first labelled event to that
  alert (``--json`` also lists each instance's time, ``null`` when missed).

The baseline raises an alert when its score passes the running 99.9th
percentile of its scores, at most once per actor per hour.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from detectors.engine import DAY_MS, HOUR_MS
from detectors.events import AccessEvent, InvalidEvent, decode_event
from detectors.settings import Settings
from stream.progress import Progress
from stream.replay import read_lines, replay

BUDGETS = (0.01, 0.05)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half).

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # average rank of ties
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(scores: Any, labels: Any) -> float:
    """
    >>> average_precision([0.9, 0.8, 0.1], [1, 0, 1])
    0.8333333333333333
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)[np.argsort(-s, kind="mergesort")]
    if not y.any():
        return float("nan")
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float(precision[y].mean())


def budget_recall(day_scores: dict[int, list[tuple[float, bool]]], budget: float
                  ) -> tuple[float, float]:
    """(recall, ceiling) when each day the top ``budget`` share of active actors is examined.

    >>> budget_recall({0: [(0.9, True), (0.5, False), (0.5, True), (0.1, False)]}, 0.5)
    (0.75, 1.0)
    """
    hits = best = positives = 0.0
    for scored in day_scores.values():
        k = max(1, math.ceil(budget * len(scored)))
        bad = sum(b for _, b in scored)
        positives += bad
        best += min(k, bad)
        ranked = sorted(scored, key=lambda sb: -sb[0])
        cut = ranked[k - 1][0]
        above = [b for s, b in ranked if s > cut]
        tied = [b for s, b in ranked if s == cut]
        hits += sum(above) + (k - len(above)) * sum(tied) / len(tied)
    if not positives:
        return float("nan"), float("nan")
    return hits / positives, best / positives


@dataclass
class Report:
    """One method's figures on one file."""

    events: int = 0
    malicious_events: int = 0
    event_auc: float = float("nan")
    actor_days: int = 0
    malicious_actor_days: int = 0
    actor_day_auc: float = float("nan")
    actor_day_ap: float = float("nan")
    recall_at: dict[float, tuple[float, float]] = field(default_factory=dict)
    alerts: int = 0
    true_alerts: int = 0
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def false_alerts(self) -> int:
        return self.alerts - self.true_alerts

    @property
    def alert_precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else float("nan")

    @property
    def false_per_1000_actor_days(self) -> float:
        negatives = self.actor_days - self.malicious_actor_days
        return 1000 * self.false_alerts / negatives if negatives else float("nan")

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("events (malicious)", f"{self.events} ({self.malicious_events})"),
            ("event ROC AUC", f"{self.event_auc:.4f}"),
            ("actor-days (malicious)", f"{self.actor_days} ({self.malicious_actor_days})"),
            ("actor-day ROC AUC", f"{self.actor_day_auc:.4f}"),
            ("actor-day average precision", f"{self.actor_day_ap:.4f}"),
        ]
        for b, (recall, ceiling) in sorted(self.recall_at.items()):
            rows.append((f"recall at {b:.0%} budget (ceiling)", f"{recall:.3f} ({ceiling:.3f})"))
        rows += [
            ("alerts (true / false)", f"{self.alerts} ({self.true_alerts} / {self.false_alerts})"),
            ("alert precision", f"{self.alert_precision:.3f}"),
            ("false alerts per 1,000 actor-days", f"{self.false_per_1000_actor_days:.2f}"),
        ]
        for name, sc in sorted(self.scenarios.items()):
            ttd = sc["median_minutes_to_detect"]
            rows.append((f"{name}: detected, median time",
                         f"{sc['detected']}/{sc['instances']}, "
                         + format_minutes(ttd)))
        return rows

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["recall_at"] = {f"{b:g}": {"recall": r, "ceiling": c}
                          for b, (r, c) in self.recall_at.items()}
        d.update(false_alerts=self.false_alerts, alert_precision=self.alert_precision,
                 false_per_1000_actor_days=self.false_per_1000_actor_days)
        return d


def format_minutes(minutes: float | None, day_digits: int = 1) -> str:
    """A time to detect as minutes, hours or days (``-`` for none)."""
    if minutes is None:
        return "-"
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 2880:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.{day_digits}f} days"


@dataclass
class Evaluation:
    """Every method's report on one file, printed side by side."""

    reports: dict[str, Report]

    def table(self) -> str:
        names = list(self.reports)
        columns = [dict(r.rows()) for r in self.reports.values()]
        keys = list(dict.fromkeys(k for c in columns for k in c))
        width = max(len(k) for k in keys)
        cols = [max(len(n), *(len(c.get(k, "")) for k in keys)) for n, c in zip(names, columns,
                                                                                 strict=True)]
        lines = [" " * width + "".join(f"  {n:>{w}}" for n, w in zip(names, cols, strict=True))]
        for k in keys:
            lines.append(f"{k:<{width}}" + "".join(
                f"  {c.get(k, '-'):>{w}}" for c, w in zip(columns, cols, strict=True)))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {name: r.to_dict() for name, r in self.reports.items()}


def load_labels(path: str) -> dict[str, str]:
    labels = {}
    for n, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            labels[str(obj["event_id"])] = str(obj["label"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a label line "
                             f'{{"event_id": ..., "label": ...}}: {err}') from None
    return labels


class _Scores:
    """One method's per-event scores and alerts, reduced to a :class:`Report`."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.scores: list[float] = []
        self.truth: list[bool] = []
        self.day_score: dict[tuple[str, int], float] = defaultdict(float)
        self.day_bad: dict[tuple[str, int], bool] = defaultdict(bool)
        # (actor, label) -> [first labelled ms, last labelled ms]
        self.instances: dict[tuple[str, str], list[int]] = {}
        self.alerts: list[tuple[str, int]] = []

    def add(self, ev: AccessEvent, score: float, alerted: bool) -> None:
        label = self.labels.get(ev.event_id)
        self.scores.append(score)
        self.truth.append(label is not None)
        key = (ev.actor, ev.time_ms // DAY_MS)
        self.day_score[key] = max(self.day_score[key], score)
        if label is not None:
            self.day_bad[key] = True
            span = self.instances.setdefault((ev.actor, label), [ev.time_ms, ev.time_ms])
            span[1] = ev.time_ms
        if alerted:
            self.alerts.append((ev.actor, ev.time_ms))

    def report(self) -> Report:
        rep = Report(events=len(self.scores), malicious_events=sum(self.truth))
        rep.event_auc = roc_auc(self.scores, self.truth)
        keys = list(self.day_score)
        bad = [self.day_bad[k] for k in keys]
        rep.actor_days, rep.malicious_actor_days = len(keys), sum(bad)
        day_scores = [self.day_score[k] for k in keys]
        rep.actor_day_auc = roc_auc(day_scores, bad)
        rep.actor_day_ap = average_precision(day_scores, bad)
        by_day: dict[int, list[tuple[float, bool]]] = defaultdict(list)
        for k, s, b in zip(keys, day_scores, bad, strict=True):
            by_day[k[1]].append((s, b))
        rep.recall_at = {b: budget_recall(by_day, b) for b in BUDGETS}

        def instance_of(actor: str, t: int) -> tuple[str, str] | None:
            for (a, label), (t0, t1) in self.instances.items():
                if a == actor and t0 <= t <= t1 + DAY_MS:
                    return a, label
            return None

        rep.alerts = len(self.alerts)
        first_hit: dict[tuple[str, str], int] = {}
        for actor, t in self.alerts:
            inst = instance_of(actor, t)
            if inst is not None:
                rep.true_alerts += 1
                first_hit.setdefault(inst, t)
        by_label: dict[str, list[float | None]] = defaultdict(list)
        for inst, (t0, _) in self.instances.items():
            hit = first_hit.get(inst)
            by_label[inst[1]].append(None if hit is None else (hit - t0) / 60000)
        for label, delays in by_label.items():
            found = [d for d in delays if d is not None]
            rep.scenarios[label] = {"instances": len(delays), "detected": len(found),
                                    "median_minutes_to_detect":
                                        statistics.median(found) if found else None,
                                    "minutes_to_detect": delays}
        return rep


def hst_features(ev: AccessEvent) -> dict[str, float]:
    """Numeric per-event features for the HalfSpaceTrees baseline."""
    hour = (ev.time_ms // HOUR_MS) % 24
    return {
        "records": math.log1p(ev.records),
        "bytes": math.log1p(ev.bytes or 0),
        "hour": float(hour),
        "weekend": float((ev.time_ms // DAY_MS + 3) % 7 >= 5),
        "egress": float(ev.is_egress),
        "ticket": float(bool(ev.ticket)),
        "customer": float(ev.customer_id is not None),
        "fields": float(len(ev.fields)),
        "denied": float(ev.outcome != "success"),
    }


def _baseline(events_path: str, sink: _Scores, seed: int, progress: Progress) -> None:
    from river import anomaly, compose, preprocessing, stats

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))
    quantile = stats.Quantile(0.999)
    last_alert: dict[str, int] = {}
    for n, line in read_lines(events_path):
        try:
            ev = decode_event(line)
        except InvalidEvent:
            continue
        x = hst_features(ev)
        score = model.score_one(x)
        model.learn_one(x)
        q = quantile.get()
        alerted = (q is not None and score > q
                   and ev.time_ms - last_alert.get(ev.actor, -HOUR_MS) >= HOUR_MS)
        if alerted:
            last_alert[ev.actor] = ev.time_ms
        quantile.update(score)
        sink.add(ev, score, alerted)
        progress.update(n, "lines (baseline)")


def evaluate(events_path: str, labels_path: str, *, context_path: str | None = None,
             settings: Settings | None = None, progress: Progress | None = None,
             baseline: bool = True, seed: int = 42, shards: int = 1) -> Evaluation:
    """Score ``events_path`` with snoopwatch (and the baseline) and report both (``shards``:
    snoopwatch on that many actor-disjoint engines, see :class:`stream.replay.Shards`)."""
    labels = load_labels(labels_path)
    progress = progress or Progress("evaluate", enabled=False)
    ours = _Scores(labels)

    def on_score(ev: AccessEvent, score: float, alert: dict | None) -> None:
        ours.add(ev, score, alert is not None)

    replay(events_path, os.devnull, context_path=context_path, settings=settings,
           progress=progress, on_score=on_score, shards=shards)
    reports = {"snoopwatch": ours.report()}
    if baseline:
        theirs = _Scores(labels)
        _baseline(events_path, theirs, seed, progress)
        progress.close()
        reports["HalfSpaceTrees"] = theirs.report()
    return Evaluation(reports)

