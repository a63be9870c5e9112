"""What a driver does with one message, shared by the faust agents and ``replay``.

No faust here: the worker's agents and ``snoopwatch replay`` call the same
:class:`Pipeline`, so what replay tests offline is what the worker runs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from detectors.engine import Engine, rfc3339
from detectors.events import AccessEvent, InvalidEvent, decode_event
from detectors.redaction import Redactor, alert_redactor, dlq_redactor
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.sources import Source


def dead_letter(raw: bytes | str, err: InvalidEvent, source: dict[str, Any],
                key: bytes | None = None, *, wall_clock: bool = True,
                redactor: Redactor | None = None) -> dict[str, Any]:
    """The dead-letter record for a rejected message: reason, where it came from, the bytes.

    ``value`` holds the original text when it is UTF-8 (easy to read), and
    ``value_b64`` always holds the exact original bytes (nothing is lost). A ``redactor``
    (SNOOPWATCH_DLQ_PAYLOAD=redacted or none; detectors/redaction.py) keeps less.

    >>> from detectors.events import InvalidEvent
    >>> rec = dead_letter(b"{oops", InvalidEvent("invalid_json", "not JSON"),
    ...                   {"topic": "access-events", "partition": 0, "offset": 7})
    >>> rec["reason"], rec["value"], rec["value_b64"], rec["source"]["offset"]
    ('invalid_json', '{oops', 'e29vcHM=', 7)
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    size = len(data)
    original = data
    truncated = size > MAX_DLQ_VALUE_BYTES
    if truncated:  # the exact bytes stay on the input topic at ``source``
        data = data[:MAX_DLQ_VALUE_BYTES]
    try:
        text: str | None = None if truncated else data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    extra = {"truncated": True, "size": size} if truncated else {}
    record = {
        **extra,
        "reason": err.reason,
        "field": err.field,
        "error": err.detail,
        "source": source,
        "key": None if key is None else key.decode("utf-8", "replace"),
        "value": text,
        "value_b64": base64.b64encode(data).decode("ascii"),
    }
    if wall_clock:  # replay leaves it out, so that its output depends on the file only
        record["dead_lettered_at"] = rfc3339(int(time.time() * 1000))
    if redactor is not None:
        record = redactor.dead_letter(record, original)
    return record


# Event times beyond the wall clock by more than this do not move the engine's event-time
# clock in the worker (as stream/state.py's expiry clock: one event stamped in 2199).
FUTURE_SLACK_MS = 86_400_000

# Dead-letter records of larger messages keep only this prefix of the bytes (base64 grows it by
# a third, and a record must stay under the producer's 1 MB request limit).
MAX_DLQ_VALUE_BYTES = 64 * 1024


@dataclass(slots=True)
class Rejected:
    """A message that failed validation, with its dead-letter record."""

    reason: str
    record: dict[str, Any]


class Pipeline:
    """Validate, detect and count, for one shard of actors.

    ``clock`` gives wall-clock milliseconds for ``emitted_at`` and the event-time
    lag metric; ``replay`` passes ``None`` so its output depends on the file only.
    """

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None,
                 *, wall_clock: bool = True) -> None:
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self.engine = Engine(self.settings)
        self.wall_clock = wall_clock
        # What dead letters and alerts keep of customer data (SNOOPWATCH_DLQ_PAYLOAD,
        # SNOOPWATCH_ALERT_ATTRS); None: everything, as it came.
        self.redactor = dlq_redactor(self.settings)
        self.alert_redactor = alert_redactor(self.settings)
        # Bound once: a labelled child's lookup per event would cost the hot SPEC path.
        self._spec_records = self.metrics.source_records.labels(format="spec")
        # Read when scraped, not set per event: actors come and go in state restores and
        # expiry too.
        self.metrics.tracked_actors.set_function(lambda: self.engine.tracked_actors)

    def ingest(self, raw: bytes | str, source: dict[str, Any],
               key: bytes | None = None) -> AccessEvent | Rejected:
        """Decode and validate one message; count it as valid or dead-lettered."""
        m = self.metrics
        m.consumed.inc()
        try:
            if len(raw) > self.settings.max_message_bytes:
                raise InvalidEvent("bad_value", f"message is {len(raw)} bytes; at most "
                                   f"{self.settings.max_message_bytes} are accepted "
                                   "(SNOOPWATCH_MAX_MESSAGE_BYTES)")
            ev = decode_event(raw)
        except InvalidEvent as err:
            m.dead_lettered.labels(reason=err.reason).inc()
            self._spec_records.inc()
            m.source_dead_lettered.labels(format="spec", reason=err.reason).inc()
            return Rejected(err.reason, dead_letter(raw, err, source, key,
                                                    wall_clock=self.wall_clock,
                                                    redactor=self.redactor))
        m.valid.inc()
        self._spec_records.inc()
        return ev

    def ingest_from(self, src: Source, raw: bytes | str, source: dict[str, Any],
                    key: bytes | None = None) -> list[AccessEvent | Rejected]:
        """Decode one message of ``src``'s format: an event or a rejection per record.

        A SPEC message is exactly :meth:`ingest`. A record rejected out of a container
        (``{"Records": [...]}``, an array) is dead-lettered with its own bytes and its
        position (``source["record"]``); the message itself stays on the input topic.
        """
        if src.format == "spec":
            return [self.ingest(raw, source, key)]
        m = self.metrics
        m.consumed.inc()
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        if len(data) > self.settings.max_message_bytes:
            err = InvalidEvent("bad_value", f"{src.name}: message is {len(data)} bytes; at "
                               f"most {self.settings.max_message_bytes} are accepted "
                               "(SNOOPWATCH_MAX_MESSAGE_BYTES)")
            m.dead_lettered.labels(reason=err.reason).inc()
            m.source_records.labels(format=src.format).inc()
            m.source_dead_lettered.labels(format=src.format, reason=err.reason).inc()
            return [Rejected(err.reason, dead_letter(data, err, source, key,
                                                     wall_clock=self.wall_clock,
                                                     redactor=self.redactor))]
        out: list[AccessEvent | Rejected] = []
        for rec in src.decode(data):
            m.source_records.labels(format=src.format).inc()
            if rec.error is None and rec.event is not None:
                m.valid.inc()
                out.append(rec.event)
                continue
            err = rec.error or InvalidEvent("bad_value", f"{src.name}: record not mapped")
            where = source if rec.index is None else {**source, "record": rec.index}
            m.dead_lettered.labels(reason=err.reason).inc()
            m.source_dead_lettered.labels(format=src.format, reason=err.reason).inc()
            out.append(Rejected(err.reason, dead_letter(rec.raw, err, where, key,
                                                        wall_clock=self.wall_clock,
                                                        redactor=self.redactor)))
        return out

    def detect(self, ev: AccessEvent, started: float | None = None
               ) -> tuple[float, dict[str, Any] | None]:
        """Run one valid event through the core: the actor's risk after it, and any alert.

        ``started`` is the ``time.perf_counter()`` at which the driver received the
        message, so the latency metric covers decoding as well as detection.
        """
        started = time.perf_counter() if started is None else started
        now_ms = int(time.time() * 1000) if self.wall_clock else None
        if now_ms is not None:
            # An event stamped far ahead (valid up to 2199) must not move the engine's
            # event-time clock there: its peer statistics would wait for that hour.
            self.engine.horizon_ms = now_ms + FUTURE_SLACK_MS
        verdict = self.engine.process(ev)
        alert = None
        if verdict.alert is not None:
            a = verdict.alert
            alert = a.to_dict(now_ms)
            if self.alert_redactor is not None:
                alert = self.alert_redactor.alert(alert)
            top = a.reasons[0].detector if a.reasons else "none"
            self.metrics.count_alert(a.severity, top)
        m = self.metrics
        m.processed.inc()
        if verdict.late:
            m.late.inc()
        if now_ms is not None:
            m.event_lag.observe(max(0.0, (now_ms - ev.time_ms) / 1000))
        m.latency.observe(time.perf_counter() - started)
        return verdict.score, alert


# Cyclic-GC thresholds for the worker and replay. The engine keeps millions of long-lived
# objects (every actor's models) and allocates many short-lived ones per event: the defaults
# (700, 10, 10) re-scan that heap often for little garbage (~5% of replay's time).
GC_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run a block with :data:`GC_THRESHOLDS`, then restore the previous thresholds."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


@functools.lru_cache(maxsize=1 << 16)
def home_partition(actor: str, partitions: int) -> int:
    """The partition of the by-actor topic that ``actor``'s events are keyed to.

    The same murmur2 rule as the Kafka producers' default partitioner (aiokafka's, Java's),
    so the by-actor topic and this function agree; cached, as busy actors recur.

    >>> home_partition("ann", 4) == home_partition("ann", 4) < 4
    True
    """
    return (murmur2(actor.encode()) & 0x7FFFFFFF) % partitions


def keyed_home(actor: str, key: bytes | None, partition: int, partitions: int) -> bool:
    """Was this input event keyed by its actor, and is ``partition`` that actor's home? Then
    the ingest agent may detect it in place (stream/app.py ``Router``; ``snoopwatch audit``
    counts by the same rule): every event of the actor is on that partition, in order.

    >>> home = home_partition("ann", 4)
    >>> keyed_home("ann", b"ann", home, 4), keyed_home("ann", None, home, 4)
    (True, False)
    """
    return key == actor.encode() and home_partition(actor, partitions) == partition


def encode(obj: Any) -> bytes:
    """orjson with sorted keys, so equal records are equal bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
