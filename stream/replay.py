"""``snoopwatch replay``: the worker's pipeline over a JSONL file, in file order, no Kafka.

Output depends on the input files only (``emitted_at`` is the triggering
event's time, not the wall clock; dead-letter records carry no wall-clock time),
so two runs give byte-identical files.

``--shards N`` runs N engines on actor-disjoint shards (:class:`Shards`: the worker's
by-actor partitioning) that share cross-actor state on the engine's event-time schedule, as
workers do through the peer-ops topic (stream/peerops.py): its output is the same as one
engine's.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from detectors.engine import CANONICAL, HOUR_MS, Engine, Verdict
from detectors.events import AccessEvent, ContextEntry, InvalidEvent, decode_context, decode_json
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.pipeline import (
    Pipeline,
    Rejected,
    dead_letter,
    encode,
    fewer_gc_passes,
    home_partition,
)
from stream.progress import Progress
from stream.sinks.ocsf import finding
from stream.sources import file_units, open_input, source_for
from stream.state import ActorMeta, id_digest

# How many rejected lines replay names on stderr before it only counts them.
SHOWN_ERRORS = 10


@dataclass
class ReplaySummary:
    lines: int = 0
    records: int = 0  # events and dead letters: more than lines when a line holds several
    valid: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    alerts: Counter = field(default_factory=Counter)
    duplicates: int = 0
    context_entries: int = 0
    context_dead_lettered: int = 0

    def describe(self) -> str:
        dlq = sum(self.dead_lettered.values())
        unit = f"{self.lines} lines" + (f" ({self.records} records)"
                                         if self.records != self.lines else "")
        parts = [f"replayed {unit}: {self.valid} valid, {dlq} dead-lettered"]
        if self.duplicates:
            parts.append(f"({self.duplicates} valid ones repeated an event_id: skipped)")
        if dlq:
            parts.append("(" + ", ".join(f"{r} {n}" for r, n in
                                         sorted(self.dead_lettered.items())) + ")")
        total = sum(self.alerts.values())
        parts.append(f"; {total} alerts")
        if total:
            parts.append("(" + ", ".join(f"{s} {n}" for s, n in
                                         sorted(self.alerts.items())) + ")")
        if self.context_entries or self.context_dead_lettered:
            parts.append(f"; context: {self.context_entries} entries applied, "
                         f"{self.context_dead_lettered} dead-lettered")
        return " ".join(parts)


class Shards:
    """``n`` engines on actor-disjoint shards (an actor's is its by-actor partition,
    :func:`~stream.pipeline.home_partition`), fed events in input order, sharing cross-actor
    state as workers do through the peer-ops topic: when the event-time clock (the highest event
    hour seen) enters a new hour, every shard's pending ops are gathered, sorted canonically
    and applied to every shard (:meth:`Engine.advance`). It stands in for one engine.
    """

    def __init__(self, settings: Settings, n: int) -> None:
        if n < 1:
            raise ValueError(f"shards: {n}; at least 1")
        self.engines = [Engine(settings) for _ in range(n)]
        self.clock_hour = -1

    def process(self, ev: AccessEvent) -> Verdict:
        hour = ev.time_ms // HOUR_MS
        if hour > self.clock_hour:
            self.advance(hour)
        return self.engines[home_partition(ev.actor, len(self.engines))].process(ev)

    def advance(self, hour: int) -> None:
        """Enter ``hour`` on every shard, with the ops every shard made before it."""
        ops = [op for eng in self.engines for op in eng.take_ops()]
        ops.sort(key=CANONICAL)
        for eng in self.engines:
            eng.advance(hour, ops)
        self.clock_hour = max(self.clock_hour, hour)

    def apply_context(self, entry: ContextEntry) -> None:
        for eng in self.engines:  # (the context topic is read by every worker)
            eng.apply_context(entry)

    @property
    def tracked_actors(self) -> int:
        return sum(eng.tracked_actors for eng in self.engines)


def read_lines(path: str | IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line bytes without the newline) of a JSONL file (or one open)."""
    with open(path, "rb") if isinstance(path, str) else path as fh:
        for n, line in enumerate(fh, 1):
            yield n, line.rstrip(b"\r\n")


def load_context(fh: IO[bytes], pipeline: Pipeline, dlq: IO[bytes] | None) -> tuple[int, int]:
    """Apply a context JSONL file; malformed entries are dead-lettered like events.

    Returns how many entries were applied and how many dead-lettered."""
    applied = rejected = 0
    for n, line in read_lines(fh):
        try:
            # As on the context topic (JSON null is malformed), but an empty line is no
            # removal here (a file has no keys): decode_json rejects it as invalid_json.
            entry = decode_context(line, None) if line else decode_json(line)
        except InvalidEvent as err:
            pipeline.metrics.context_dead_lettered.labels(reason=err.reason).inc()
            _reject(dead_letter(line, err, {"file": fh.name, "line": n}, wall_clock=False,
                                redactor=pipeline.redactor),
                    dlq, show=True)
            rejected += 1
            continue
        if entry is not None:
            pipeline.engine.apply_context(entry)
            applied += 1
    return applied, rejected


def _check_outputs(inputs: list[str], outputs: list[str]) -> None:
    """Refuse an output that is an input or another output: opening it would empty that."""
    seen: dict[Any, str] = {}
    for path in [*inputs, *outputs]:
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                continue  # /dev/null and the like may be named twice
            key: Any = (st.st_dev, st.st_ino)  # catches links and other spellings too
        except FileNotFoundError:
            key = os.path.realpath(path)
        if key in seen and path in outputs:
            raise ValueError(f"{path} is the same file as {seen[key]}: it would be overwritten")
        seen.setdefault(key, path)


def _reject(record: dict[str, Any], dlq: IO[bytes] | None, show: bool) -> None:
    """Write a dead-letter record, and name the file, line and field on stderr."""
    if dlq is not None:
        dlq.write(encode(record) + b"\n")
    if show:
        src = record["source"]
        field = f" ({record['field']})" if record["field"] else ""
        where = ":".join(str(src[k]) for k in ("file", "line") if k in src)
        if "record" in src:
            where += f" record {src['record']}"
        # A redacted dead letter has no error text (it may quote a value): nor has stderr.
        detail = record.get("error") or "details not kept (SNOOPWATCH_DLQ_PAYLOAD)"
        print(f"{where}: {record['reason']}{field}: {detail}", file=sys.stderr)


def replay(events_path: str, alerts_path: str, *, scores_path: str | None = None,
           dlq_path: str | None = None, context_path: str | None = None,
           settings: Settings | None = None, progress: Progress | None = None,
           on_score: Any = None, fmt: str = "spec", ocsf_path: str | None = None,
           shards: int = 1, pipeline: Pipeline | None = None) -> ReplaySummary:
    """Run every line of ``events_path`` through the pipeline and write the outputs.

    ``fmt`` is the file's source format (stream/sources: ``spec``, ``cloudtrail``, ``ocsf``,
    ``mapping:FILE``); ``ocsf_path`` also writes each alert as an OCSF Detection Finding.
    ``on_score(event, score, alert)`` is called per valid event (``evaluate`` uses it).
    ``shards`` > 1 runs that many engines on actor-disjoint shards (:class:`Shards`).
    ``pipeline``: one to run instead of a new one (a tool that reads the engine's state as
    the events go through: benchmarks/ranking.py).
    """
    pipeline = pipeline or Pipeline(settings, Metrics(), wall_clock=False)
    if shards != 1:
        pipeline.engine = Shards(pipeline.settings, shards)  # type: ignore[assignment]
    src = source_for(fmt, cloudtrail_customer=pipeline.settings.cloudtrail_customer)
    summary = ReplaySummary()
    progress = progress or Progress("replay", enabled=False)
    shown = 0
    recent: dict[str, ActorMeta] = {}  # actor -> its last event ids
    last_score: dict[str, float] = {}
    dedup = pipeline.settings.dedup_window
    inputs = [events_path, *([context_path] if context_path else [])]
    _check_outputs(inputs, [p for p in (alerts_path, scores_path, dlq_path, ocsf_path) if p])
    with contextlib.ExitStack() as stack:
        # Inputs first: a missing one must fail before any output is emptied.
        events = stack.enter_context(open_input(events_path))  # gzip or not
        context = stack.enter_context(open(context_path, "rb")) if context_path else None
        stack.enter_context(fewer_gc_passes())
        alerts = stack.enter_context(open(alerts_path, "wb"))
        scores = stack.enter_context(open(scores_path, "wb")) if scores_path else None
        dlq = stack.enter_context(open(dlq_path, "wb")) if dlq_path else None
        ocsf = stack.enter_context(open(ocsf_path, "wb")) if ocsf_path else None
        if context is not None:
            summary.context_entries, summary.context_dead_lettered = load_context(
                context, pipeline, dlq)
        if src.format == "spec":
            units = (({"file": events_path, "line": n}, line) for n, line in read_lines(events))
        else:  # .gz, whole-file {"Records": [...]} and arrays as well as JSONL
            events.close()
            units = file_units(events_path, src)
        for where, line in units:
            summary.lines += 1
            for out in pipeline.ingest_from(src, line, where):
                summary.records += 1
                if isinstance(out, Rejected):
                    summary.dead_lettered[out.reason] += 1
                    _reject(out.record, dlq, show=shown < SHOWN_ERRORS)
                    shown += 1
                    continue
                summary.valid += 1
                # An event_id among the actor's recent ones is skipped, as the worker does.
                window = recent.get(out.actor)
                if window is None:
                    window = recent[out.actor] = ActorMeta(0)
                if window.seen(id_digest(out.event_id), dedup):
                    summary.duplicates += 1
                    pipeline.metrics.duplicates.inc()
                    if scores is not None:  # still one line per valid event: risk unchanged
                        scores.write(encode({"event_id": out.event_id,
                                             "score": last_score.get(out.actor, 0.0)}) + b"\n")
                    continue
                score, alert = pipeline.detect(out)
                last_score[out.actor] = score
                if scores is not None:
                    scores.write(encode({"event_id": out.event_id, "score": score}) + b"\n")
                if alert is not None:
                    summary.alerts[alert["severity"]] += 1
                    alerts.write(encode(alert) + b"\n")
                    if ocsf is not None:
                        ocsf.write(encode(finding(alert)) + b"\n")
                if on_score is not None:
                    on_score(out, score, alert)
            progress.update(summary.lines, "lines")
    progress.close()
    hidden = shown - SHOWN_ERRORS
    if hidden > 0:
        print(f"{events_path}: {hidden} more rejected lines not shown", file=sys.stderr)
    return summary
