"""Prometheus metrics (SPEC §5), on a registry of their own.

The object is injected into whatever counts (the faust agents, replay), like
faust's Prometheus sensor, so tests and several apps in one process never
share global state. Base units; no actor, customer or event id is ever a label.

>>> m = Metrics()
>>> m.dead_lettered.labels(reason="bad_time").inc()
>>> b"snoopwatch_events_dead_lettered_total{reason=\\"bad_time\\"} 1.0" in m.exposition()
True
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from detectors.engine import SEVERITY_RANK
from detectors.events import REASONS
from stream.sources import FORMATS

# The text exposition's media type; aiohttp wants the charset left out (it adds none
# for bytes bodies, and Prometheus assumes UTF-8).
CONTENT_TYPE = "text/plain; version=0.0.4"

# Latency of one event through the detection core and out (seconds).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
# Event-time lag: how far behind real time the events being processed are (seconds).
LAG_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400)


class Metrics:
    """Every snoopwatch series, on its own :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.consumed = Counter("snoopwatch_events_consumed_total",
                                "Messages read from the input topic.", registry=r)
        self.valid = Counter("snoopwatch_events_valid_total",
                             "Input messages that passed validation.", registry=r)
        self.dead_lettered = Counter("snoopwatch_events_dead_lettered_total",
                                     "Input messages sent to the dead-letter topic, by reason.",
                                     ["reason"], registry=r)
        self.processed = Counter("snoopwatch_events_processed_total",
                                 "Valid events run through the detection core.", registry=r)
        self.late = Counter("snoopwatch_events_late_total",
                            "Valid events of an hour their actor had already left (input not "
                            "in time order per actor): judged, not counted into that hour.",
                            registry=r)
        self.alerts = Counter("snoopwatch_alerts_total",
                              "Alerts emitted, by severity and top contributing detector.",
                              ["severity", "detector"], registry=r)
        self.context_entries = Counter("snoopwatch_context_entries_total",
                                       "Context (watchlist) entries applied.", registry=r)
        # Not input messages: every worker re-reads the whole context topic at start, so a
        # malformed entry still on it is counted (and dead-lettered) again each time.
        self.context_dead_lettered = Counter(
            "snoopwatch_context_dead_lettered_total",
            "Context entries sent to the dead-letter topic, by reason (again at each start).",
            ["reason"], registry=r)
        self.latency = Histogram("snoopwatch_processing_latency_seconds",
                                 "Time from reading an event to finishing its detection (a "
                                 "wait at the peer-ops barrier excluded: "
                                 "snoopwatch_peer_ops_wait_seconds).",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.event_lag = Histogram("snoopwatch_event_time_lag_seconds",
                                   "Wall-clock time minus event time, when processed.",
                                   buckets=LAG_BUCKETS, registry=r)
        self.tracked_actors = Gauge("snoopwatch_tracked_actors",
                                    "Actors whose state this worker holds.", registry=r)
        # Pre-create the bounded label sets so dashboards see zeros, not gaps.
        for reason in REASONS:
            self.dead_lettered.labels(reason=reason)
            self.context_dead_lettered.labels(reason=reason)
        self._init_consumer_lag()
        self._init_input_offsets()
        self._init_reliability()
        self._init_sources()

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    def count_alert(self, severity: str, detector: str) -> None:
        assert severity in SEVERITY_RANK
        self.alerts.labels(severity=severity, detector=detector).inc()

    # --- Consumer lag (issue 5) -------------------------------------------------------------
    # Set by the worker's periodic timer (stream/app.py) for the partitions it holds; topic and
    # partition are the only labels (bounded by the topics' partition counts).

    def _init_consumer_lag(self) -> None:
        self.consumer_lag = Gauge(
            "snoopwatch_consumer_lag_messages",
            "Messages in a partition this worker consumes that its consumer group has not "
            "committed yet (log-end offset minus committed offset).",
            ["topic", "partition"], registry=self.registry)
        self._lag_series: set[tuple[str, str]] = set()

    def set_consumer_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """Replace the lag series with ``{(topic, partition): messages}``.

        Partitions no longer assigned to this worker (after a rebalance) lose their series,
        so that summing over workers never counts a partition twice.

        >>> m = Metrics()
        >>> m.set_consumer_lag({("access-events", 0): 5, ("access-events", 1): 0})
        >>> m.set_consumer_lag({("access-events", 1): 2})
        >>> sorted(line for line in m.exposition().decode().splitlines()
        ...        if line.startswith("snoopwatch_consumer_lag_messages{"))
        ['snoopwatch_consumer_lag_messages{partition="1",topic="access-events"} 2.0']
        """
        current = {(topic, str(partition)) for topic, partition in lags}
        for topic, partition in self._lag_series - current:
            self.consumer_lag.remove(topic, partition)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))
        self._lag_series = current

    # --- Input position (issue 15) ----------------------------------------------------------
    # Where each input partition this worker consumes stands: the offset after the last message
    # it took. Kept in a plain dict (set per message, read when scraped: no label lookup on the
    # hot path); a revoked partition loses its series, so after a rebalance only its new owner
    # shows it, from where the group's committed offset made it resume.

    def _init_input_offsets(self) -> None:
        self.input_offsets: dict[tuple[str, int], int] = {}
        self.registry.register(_InputOffsets(self.input_offsets))

    def forget_input_offsets(self, revoked: set[tuple[str, int]]) -> None:
        """Drop the series of input partitions taken away in a rebalance.

        >>> m = Metrics()
        >>> m.input_offsets[("access-events", 0)] = 41
        >>> m.input_offsets[("access-events", 1)] = 7
        >>> m.forget_input_offsets({("access-events", 1)})
        >>> [line for line in m.exposition().decode().splitlines()
        ...  if line.startswith("snoopwatch_input_offset{")]
        ['snoopwatch_input_offset{partition="0",topic="access-events"} 41.0']
        """
        for key in revoked:
            self.input_offsets.pop(key, None)

    # --- Reliability (issue 4): de-duplication, checkpoints, restore -----------------------

    def _init_reliability(self) -> None:
        r = self.registry
        self.duplicates = Counter(
            "snoopwatch_events_duplicate_total",
            "Valid events skipped because their actor already processed their event_id.",
            registry=r)
        self.replayed = Counter(
            "snoopwatch_events_replayed_total",
            "By-actor messages skipped after a restart or rebalance because the restored "
            "state already includes them.", registry=r)
        self.checkpoints = Counter(
            "snoopwatch_state_checkpoints_total",
            "Checkpoints of changed actors' state written to the state topic.", registry=r)
        self.checkpointed_actors = Counter(
            "snoopwatch_state_checkpointed_actors_total",
            "Actor records written by checkpoints.", registry=r)
        self.restore_seconds = Histogram(
            "snoopwatch_state_restore_seconds",
            "Time to read one partition's actor state back after it is assigned.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        # The peer-ops barrier (stream/peerops.py).
        self.peer_records = Counter(
            "snoopwatch_peer_ops_records_total",
            "Peer-ops records this worker wrote (one per partition it holds and event-time "
            "hour it entered, or closed while idle).", registry=r)
        self.peer_idle_closes = Counter(
            "snoopwatch_peer_ops_idle_closes_total",
            "Hours closed for an idle partition (no new event, consumer at the log end).",
            registry=r)
        self.peer_held = Gauge(
            "snoopwatch_peer_ops_held_events",
            "Events waiting at the peer-ops barrier for other partitions to close their "
            "hour.", registry=r)
        self.peer_wait = Histogram(
            "snoopwatch_peer_ops_wait_seconds",
            "Time an event waited at the peer-ops barrier, its partition in an event-time "
            "hour the others had not closed yet (not in "
            "snoopwatch_processing_latency_seconds).",
            # 60-300 s in steps: a catch-up with 2 workers waits 60-80 s at p99, which
            # one 60-300 bucket interpolated to 144 s.
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 90, 120, 180, 240, 300),
            registry=r)
        self.peer_expired = Counter(
            "snoopwatch_peer_ops_expired_total",
            "Times this worker's position on the peer-ops topic, from a checkpoint, was below "
            "the topic's log start: records expired (SNOOPWATCH_PEER_OPS_RETENTION_S) before "
            "it read them, and its cross-actor state misses their ops.", registry=r)
        self.peer_hour = Gauge(
            "snoopwatch_peer_ops_hour_timestamp_seconds",
            "Start (event time, Unix seconds) of the last hour the engine entered with every "
            "partition's ops.", registry=r)


    # --- Source formats (issue 16) ----------------------------------------------------------
    # format is one of stream.sources.FORMATS (a mapping file's name is never a label).

    def _init_sources(self) -> None:
        r = self.registry
        self.source_records = Counter(
            "snoopwatch_source_records_total",
            "Records decoded from input messages, by source format (a CloudTrail message may "
            "hold many): each became an event or a dead letter.", ["format"], registry=r)
        self.source_dead_lettered = Counter(
            "snoopwatch_source_dead_lettered_total",
            "Input records dead-lettered, by source format and reason.",
            ["format", "reason"], registry=r)
        for fmt in FORMATS:
            self.source_records.labels(format=fmt)
            for reason in REASONS:
                self.source_dead_lettered.labels(format=fmt, reason=reason)


class _InputOffsets:
    """``snoopwatch_input_offset``, read from :attr:`Metrics.input_offsets` when scraped."""

    def __init__(self, offsets: dict[tuple[str, int], int]) -> None:
        self.offsets = offsets

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "snoopwatch_input_offset",
            "Per input partition this worker consumes: the offset after the last message it "
            "took (its position in the input).", labels=["topic", "partition"])
        for (topic, partition), offset in sorted(self.offsets.items()):
            family.add_metric([topic, str(partition)], offset)
        yield family
