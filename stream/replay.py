"""``snoopwatch replay``: the worker's pipeline over a JSONL file, in file order, no Kafka.

Output depends on the input files only (``emitted_at`` is the triggering
event's time, not the wall clock), so two runs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from detectors.events import InvalidEvent, decode_json, parse_context
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.pipeline import Pipeline, Rejected, dead_letter, encode, fewer_gc_passes
from stream.progress import Progress

# How many rejected lines replay names on stderr before it only counts them.
SHOWN_ERRORS = 10


@dataclass
class ReplaySummary:
    lines: int = 0
    valid: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    alerts: Counter = field(default_factory=Counter)
    context_entries: int = 0

    def describe(self) -> str:
        dlq = sum(self.dead_lettered.values())
        parts = [f"replayed {self.lines} lines: {self.valid} valid, {dlq} dead-lettered"]
        if dlq:
            parts.append("(" + ", ".join(f"{r} {n}" for r, n in
                                         sorted(self.dead_lettered.items())) + ")")
        total = sum(self.alerts.values())
        parts.append(f"; {total} alerts")
        if total:
            parts.append("(" + ", ".join(f"{s} {n}" for s, n in
                                         sorted(self.alerts.items())) + ")")
        return " ".join(parts)


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line bytes without the newline) of a JSONL file."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            yield n, line.rstrip(b"\r\n")


def load_context(path: str, pipeline: Pipeline, dlq: IO[bytes] | None) -> int:
    """Apply a context JSONL file; malformed entries are dead-lettered like events."""
    applied = 0
    for n, line in read_lines(path):
        try:
            entry = parse_context(decode_json(line))
        except InvalidEvent as err:
            pipeline.metrics.dead_lettered.labels(reason=err.reason).inc()
            _reject(dead_letter(line, err, {"file": path, "line": n}), dlq, show=True)
            continue
        if entry is not None:
            pipeline.engine.apply_context(entry)
            applied += 1
    return applied


def _reject(record: dict[str, Any], dlq: IO[bytes] | None, show: bool) -> None:
    """Write a dead-letter record, and name the file, line and field on stderr."""
    if dlq is not None:
        dlq.write(encode(record) + b"\n")
    if show:
        src = record["source"]
        field = f" ({record['field']})" if record["field"] else ""
        print(f"{src['file']}:{src['line']}: {record['reason']}{field}: {record['error']}",
              file=sys.stderr)


def replay(events_path: str, alerts_path: str, *, scores_path: str | None = None,
           dlq_path: str | None = None, context_path: str | None = None,
           settings: Settings | None = None, progress: Progress | None = None,
           on_score: Any = None) -> ReplaySummary:
    """Run every line of ``events_path`` through the pipeline and write the outputs.

    ``on_score(event, score, alert)`` is called per valid event (``evaluate`` uses it).
    """
    pipeline = Pipeline(settings, Metrics(), wall_clock=False)
    summary = ReplaySummary()
    progress = progress or Progress("replay", enabled=False)
    shown = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(fewer_gc_passes())
        alerts = stack.enter_context(open(alerts_path, "wb"))
        scores = stack.enter_context(open(scores_path, "wb")) if scores_path else None
        dlq = stack.enter_context(open(dlq_path, "wb")) if dlq_path else None
        if context_path:
            summary.context_entries = load_context(context_path, pipeline, dlq)
        for n, line in read_lines(events_path):
            summary.lines += 1
            out = pipeline.ingest(line, {"file": events_path, "line": n})
            if isinstance(out, Rejected):
                summary.dead_lettered[out.reason] += 1
                _reject(out.record, dlq, show=shown < SHOWN_ERRORS)
                shown += 1
                continue
            summary.valid += 1
            score, alert = pipeline.detect(out)
            if scores is not None:
                scores.write(encode({"event_id": out.event_id, "score": score}) + b"\n")
            if alert is not None:
                summary.alerts[alert["severity"]] += 1
                alerts.write(encode(alert) + b"\n")
            if on_score is not None:
                on_score(out, score, alert)
            progress.update(summary.lines, "lines")
    progress.close()
    hidden = shown - SHOWN_ERRORS
    if hidden > 0:
        print(f"{events_path}: {hidden} more rejected lines not shown", file=sys.stderr)
    return summary
