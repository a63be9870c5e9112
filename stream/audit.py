"""``snoopwatch audit``: prove that every input event was processed or dead-lettered.

Kafka is the ledger. For each partition of the input topic it reports the first and end
offsets, the consumer group's committed offset (``SNOOPWATCH_APP_ID``), how many of the
messages below the committed offset were forwarded to detection or dead-lettered (the
dead-letter record's ``source``), and how many are *unaccounted* (neither: must be 0).
Forwarded is either through the by-actor topic (each such message carries its origin in the
``snoopwatch-source`` header) or *in place*: a valid event keyed by its actor, which the
by-actor topic would put on the partition it arrived on, is detected by the ingest agent
itself (same partition counts; see ``Router`` in stream/app.py), and its input offset is
committed only once a state checkpoint holds it, so the committed offset is its ledger
entry. For each partition of the internal by-actor topic it reports the committed offset:
the detect agent acks a message only once a state checkpoint includes it (stream/state.py),
so everything below it is in the durable state. Workers' counters (``--metrics URL``) are
added when given: they reset when a worker restarts, the offsets do not.

It reads the by-actor and dead-letter topics from their start: minutes for tens of millions
of messages. Offsets below a topic's first offset are gone by retention and not counted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from detectors.events import InvalidEvent, decode_event
from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.pipeline import keyed_home
from stream.shared import SOURCE_HEADER
from stream.topics import read_to_end


@dataclass
class PartitionAudit:
    topic: str
    partition: int
    first: int
    end: int
    committed: int | None
    forwarded: int = 0  # to detection: through the by-actor topic or in place
    in_place: int = 0   # ... of which detected in place (no by-actor hop)
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return max(0, (self.committed or self.first) - self.first)

    @property
    def lag(self) -> int:
        return self.end - max(self.first, self.committed or self.first)

    @property
    def unaccounted(self) -> int:
        return self.done - self.forwarded - self.dead_lettered

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "first": self.first,
                "end": self.end, "committed": self.committed, "lag": self.lag,
                "forwarded": self.forwarded, "in_place": self.in_place,
                "dead_lettered": self.dead_lettered,
                "reasons": self.reasons, "unaccounted": self.unaccounted}


@dataclass
class Audit:
    input: list[PartitionAudit]
    by_actor: list[PartitionAudit]
    workers: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every input message below the committed offsets is accounted for."""
        return all(p.unaccounted == 0 for p in self.input)

    @property
    def caught_up(self) -> bool:
        return all(p.lag == 0 for p in self.input + self.by_actor)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "caught_up": self.caught_up,
                "input": [p.to_dict() for p in self.input],
                "by_actor": [p.to_dict() for p in self.by_actor], "workers": self.workers}

    def table(self) -> str:
        lines = [f"input topic {self.input[0].topic if self.input else '?'}",
                 f"  {'partition':>9} {'first':>8} {'end':>8} {'committed':>9} {'lag':>6} "
                 f"{'forwarded':>9} {'in place':>9} {'dead-let.':>9} {'unaccounted':>11}"]
        for p in self.input:
            lines.append(f"  {p.partition:>9} {p.first:>8} {p.end:>8} {p.committed!s:>9} "
                         f"{p.lag:>6} {p.forwarded:>9} {p.in_place:>9} {p.dead_lettered:>9} "
                         f"{p.unaccounted:>11}")
        reasons: dict[str, int] = {}
        for p in self.input:
            for r, n in p.reasons.items():
                reasons[r] = reasons.get(r, 0) + n
        if reasons:
            lines.append("  dead letters: " + ", ".join(f"{r} {n}"
                                                         for r, n in sorted(reasons.items())))
        lines.append(f"by-actor topic {self.by_actor[0].topic if self.by_actor else '?'} "
                     "(committed = in the checkpointed state)")
        lines.append(f"  {'partition':>9} {'first':>8} {'end':>8} {'committed':>9} {'lag':>6}")
        for p in self.by_actor:
            lines.append(f"  {p.partition:>9} {p.first:>8} {p.end:>8} {p.committed!s:>9} "
                         f"{p.lag:>6}")
        for url, m in self.workers.items():
            keys = ("consumed", "valid", "processed", "duplicate", "replayed")
            vals = ", ".join(f"{k} {m.get(f'snoopwatch_events_{k}_total', 0):.0f}" for k in keys)
            lines.append(f"worker {url}: {vals} (since it started)")
        total = sum(p.unaccounted for p in self.input)
        lines.append(("OK: every input event below the committed offsets was forwarded to "
                      "detection or dead-lettered" if self.ok else
                      f"PROBLEM: {total} input event(s) neither forwarded nor dead-lettered")
                     + ("; all caught up" if self.caught_up else "; workers still catching up"))
        return "\n".join(lines)


async def _read_all(consumer: Any, tps: list[Any], ends: dict[Any, int], visit: Any) -> None:
    consumer.assign(tps)
    for tp in tps:
        await consumer.seek_to_beginning(tp)
    await read_to_end(consumer, {tp for tp in tps if ends[tp] > 0}, ends, visit)


async def run_audit(settings: Settings, metrics_urls: list[str] | None = None) -> Audit:
    """Collect the audit from the broker (and from workers' ``/metrics``, if given)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    kafka = client_kwargs(settings)
    by_actor_topic = f"{settings.app_id}-events-by-actor"
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.input_topic, by_actor_topic,
                                                 settings.dlq_topic])
        committed_raw = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    parts = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described
             if not d.get("error_code")}
    committed = {(tp.topic, tp.partition): meta.offset for tp, meta in committed_raw.items()
                 if meta.offset >= 0}
    consumer = AIOKafkaConsumer(**kafka, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        result: dict[str, list[PartitionAudit]] = {}
        ends_all: dict[Any, int] = {}
        for topic in (settings.input_topic, by_actor_topic, settings.dlq_topic):
            tps = [TopicPartition(topic, p) for p in parts.get(topic, [])]
            if not tps:
                result[topic] = []
                continue
            firsts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            ends_all.update(ends)
            result[topic] = [PartitionAudit(topic, tp.partition, firsts[tp], ends[tp],
                                            committed.get((topic, tp.partition)))
                             for tp in tps]
        inputs = {p.partition: p for p in result[settings.input_topic]}
        forwarded: dict[int, set[int]] = {p: set() for p in inputs}
        dead: dict[int, dict[int, str]] = {p: {} for p in inputs}
        # Input messages that the ingest agent detects in place: only with equal partition
        # counts (stream/app.py's Router), valid, keyed by an actor homed on their own
        # partition.
        n_parts = len(inputs) if len(inputs) == len(parts.get(by_actor_topic, [])) else 0
        in_place: dict[int, set[int]] = {p: set() for p in inputs}

        def on_input(msg: Any) -> None:
            if not n_parts or (msg.value is not None
                               and len(msg.value) > settings.max_message_bytes):
                return
            try:
                actor = decode_event(msg.value).actor
            except InvalidEvent:
                return
            if keyed_home(actor, msg.key, msg.partition, n_parts):
                in_place[msg.partition].add(msg.offset)

        def on_by_actor(msg: Any) -> None:
            for name, value in msg.headers or ():
                if name == SOURCE_HEADER:
                    # topic:partition:offset[:record index] (stream/app.py source_header)
                    topic, part, off = value.decode().split(":")[:3]
                    if topic == settings.input_topic and int(part) in forwarded:
                        forwarded[int(part)].add(int(off))

        def on_dlq(msg: Any) -> None:
            try:
                rec = orjson.loads(msg.value)
                src = rec["source"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return
            if src.get("topic") == settings.input_topic and src.get("partition") in dead:
                dead[src["partition"]][src["offset"]] = rec.get("reason", "?")

        for topic, visit in ((by_actor_topic, on_by_actor), (settings.dlq_topic, on_dlq),
                             (settings.input_topic, on_input)):
            tps = [TopicPartition(topic, p) for p in parts.get(topic, [])]
            if tps:
                await _read_all(consumer, tps, ends_all, visit)
    finally:
        await consumer.stop()

    for p, pa in inputs.items():
        upto = pa.committed if pa.committed is not None else pa.first
        fw = {o for o in forwarded[p] if pa.first <= o < upto}
        dl = {o: r for o, r in dead[p].items() if pa.first <= o < upto and o not in fw}
        here = {o for o in in_place[p] if pa.first <= o < upto and o not in fw and o not in dl}
        pa.forwarded, pa.in_place, pa.dead_lettered = len(fw) + len(here), len(here), len(dl)
        for r in dl.values():
            pa.reasons[r] = pa.reasons.get(r, 0) + 1
    audit = Audit(result[settings.input_topic], result[by_actor_topic])
    if metrics_urls:
        from stream.shared import scrape

        audit.workers = {url: scrape(url) for url in metrics_urls}
    return audit


def print_audit(audit: Audit, out: IO[str] | None = None, as_json: bool = False) -> None:
    out = out or sys.stdout
    print(orjson.dumps(audit.to_dict()).decode() if as_json else audit.table(), file=out)
