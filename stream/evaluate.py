"""``snoopwatch evaluate``: detection quality of the replay pipeline on labelled events.

An actor-day is positive when the actor did at least one labelled event that
day (UTC); an alert is true when its actor-day is positive. A scenario
instance (actor, label) is detected when an alert for that actor is raised at
or after its first labelled event.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from detectors.engine import HOUR_MS
from detectors.events import AccessEvent
from detectors.settings import Settings
from stream.progress import Progress
from stream.replay import read_lines, replay

DAY_MS = 24 * HOUR_MS


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
    sorted_s = s[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
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
    hits = np.cumsum(y)
    precision = hits / np.arange(1, len(y) + 1)
    return float(precision[y].mean())


@dataclass
class Report:
    events: int = 0
    malicious_events: int = 0
    event_auc: float = float("nan")
    actor_days: int = 0
    malicious_actor_days: int = 0
    actor_day_auc: float = float("nan")
    actor_day_ap: float = float("nan")
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def alert_precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else float("nan")

    @property
    def false_per_1000_actor_days(self) -> float:
        negatives = self.actor_days - self.malicious_actor_days
        return 1000 * self.false_alerts / negatives if negatives else float("nan")

    def table(self) -> str:
        rows = [
            ("events (malicious)", f"{self.events} ({self.malicious_events})"),
            ("event ROC AUC", f"{self.event_auc:.4f}"),
            ("actor-days (malicious)", f"{self.actor_days} ({self.malicious_actor_days})"),
            ("actor-day ROC AUC", f"{self.actor_day_auc:.4f}"),
            ("actor-day average precision", f"{self.actor_day_ap:.4f}"),
            ("alerts (true / false)", f"{self.alerts} ({self.true_alerts} / {self.false_alerts})"),
            ("alert precision", f"{self.alert_precision:.3f}"),
            ("false alerts per 1,000 actor-days", f"{self.false_per_1000_actor_days:.2f}"),
        ]
        for name, sc in sorted(self.scenarios.items()):
            ttd = sc["median_minutes_to_detect"]
            rows.append((f"scenario {name}: detected",
                         f"{sc['detected']}/{sc['instances']}, median time to detect "
                         + ("-" if ttd is None else f"{ttd:.1f} min")))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["alert_precision"] = self.alert_precision
        d["false_per_1000_actor_days"] = self.false_per_1000_actor_days
        return d


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


def evaluate(events_path: str, labels_path: str, *, context_path: str | None = None,
             settings: Settings | None = None, progress: Progress | None = None) -> Report:
    labels = load_labels(labels_path)
    scores: list[float] = []
    truth: list[bool] = []
    day_score: dict[tuple[str, int], float] = defaultdict(float)
    day_bad: dict[tuple[str, int], bool] = defaultdict(bool)
    first_bad: dict[tuple[str, str], int] = {}  # (actor, scenario) -> first labelled time
    alerts: list[tuple[str, int]] = []

    def on_score(ev: AccessEvent, score: float, alert: dict | None) -> None:
        label = labels.get(ev.event_id)
        scores.append(score)
        truth.append(label is not None)
        key = (ev.actor, ev.time_ms // DAY_MS)
        day_score[key] = max(day_score[key], score)
        if label is not None:
            day_bad[key] = True
            first_bad.setdefault((ev.actor, label), ev.time_ms)
        if alert is not None:
            alerts.append((ev.actor, ev.time_ms))

    replay(events_path, os.devnull, context_path=context_path, settings=settings,
           progress=progress, on_score=on_score)

    rep = Report(events=len(scores), malicious_events=sum(truth))
    rep.event_auc = roc_auc(scores, truth)
    keys = list(day_score)
    rep.actor_days = len(keys)
    rep.malicious_actor_days = sum(day_bad[k] for k in keys)
    rep.actor_day_auc = roc_auc([day_score[k] for k in keys], [day_bad[k] for k in keys])
    rep.actor_day_ap = average_precision([day_score[k] for k in keys],
                                         [day_bad[k] for k in keys])
    rep.alerts = len(alerts)
    rep.true_alerts = sum(day_bad.get((a, t // DAY_MS), False) for a, t in alerts)
    rep.false_alerts = rep.alerts - rep.true_alerts
    by_label: dict[str, list[float | None]] = defaultdict(list)
    for (actor, label), t0 in first_bad.items():
        hits = [t for a, t in alerts if a == actor and t >= t0]
        by_label[label].append((min(hits) - t0) / 60000 if hits else None)
    for label, delays in by_label.items():
        found = [d for d in delays if d is not None]
        rep.scenarios[label] = {"instances": len(delays), "detected": len(found),
                                "median_minutes_to_detect":
                                    statistics.median(found) if found else None}
    return rep
