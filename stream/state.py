"""Durable per-actor state for the worker (issue 4): checkpoints, restore, de-duplication.

The ``detect`` agent reads ``<app_id>-events-by-actor``; partition *p* of it holds every event
of the actors hashed to *p*. Their state is checkpointed to the compacted topic
``<app_id>-actor-state`` (same partition count, same partition *p*, key = actor), one record
per actor::

    pickle({"v": 1, "offset": <last by-actor offset applied>, "ids": [recent event_ids],
            "state": ActorState})

plus, per partition, an ``ENGINE_KEY`` record with the worker's engine-wide state (peer
groups, the customer → serving-teams map).

The guarantee is *at-least-once delivery, exactly-once effect on state*:

- the agent does not ack a by-actor message until a checkpoint holding its effect has been
  written (``acks=all``), so the consumer group's committed offset never passes state that
  is not durable;
- after a crash the worker restarts at the committed offset and re-reads the messages
  processed since; a message whose offset is ``<=`` its actor's checkpointed ``offset`` is
  already in the state and is skipped (``snoopwatch_events_replayed_total``);
- an event whose ``event_id`` is among the actor's last ``SNOOPWATCH_DEDUP_WINDOW`` ids (a
  producer retry, an ingest re-forward after a crash) is skipped and counted in
  ``snoopwatch_events_duplicate_total``;
- alerts are sent before the checkpoint that covers their event; a crash in between re-sends
  the alert with the same ``alert_id`` (de-duplicate on it downstream, as the forwarder does).

State is restored lazily: the first time a worker sees an event of partition *p* (after start
or a rebalance) it reads partition *p* of the state topic to its end, keeps the records as
bytes and unpickles an actor's record when its first event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from detectors.engine import Engine
from detectors.settings import Settings, bootstrap_servers
from stream.metrics import Metrics

log = logging.getLogger("snoopwatch")

ENGINE_KEY = b"\x00engine"
RECORD_VERSION = 1
# Engine-wide state (peer groups, the customer map) is re-written at most this often; 0: with
# every checkpoint, so restored peers match the restored actors (costly with a huge customer map).
ENGINE_CHECKPOINT_EVERY_S = 0.0
STATE_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def state_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-actor-state"


@dataclass(slots=True)
class ActorMeta:
    """What the worker keeps next to an actor's :class:`ActorState`."""

    partition: int
    offset: int = -1
    ids: OrderedDict = field(default_factory=OrderedDict)
    # input partition -> highest input offset applied: an event that ingest forwards again
    # after a restart (its input offset not yet committed) is recognised, however old.
    sources: dict[int, int] = field(default_factory=dict)


def encode_record(meta: ActorMeta, state: Any) -> bytes:
    return pickle.dumps({"v": RECORD_VERSION, "offset": meta.offset, "ids": list(meta.ids),
                         "sources": meta.sources, "state": state},
                        protocol=pickle.HIGHEST_PROTOCOL)


def decode_record(blob: bytes, partition: int) -> tuple[ActorMeta, Any]:
    rec = pickle.loads(blob)
    meta = ActorMeta(partition, rec["offset"], OrderedDict.fromkeys(rec["ids"]),
                     dict(rec.get("sources", {})))
    return meta, rec["state"]


def engine_snapshot(engine: Engine) -> bytes:
    return pickle.dumps({"v": RECORD_VERSION, "at": time.time(), "peers": engine.peers,
                         "customer_teams": engine.customer_teams, "teams": engine.teams},
                        protocol=pickle.HIGHEST_PROTOCOL)


class ActorStore:
    """Checkpoints and restores one worker's actors; decides which events to skip."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.topic = state_topic_name(settings)
        self.meta: dict[str, ActorMeta] = {}
        self.loaded: set[int] = set()
        self.blobs: dict[str, tuple[int, bytes]] = {}  # restored, not yet unpickled
        self.dirty: set[str] = set()
        self.unacked: list[Any] = []  # faust events whose effect is not checkpointed yet
        self.engine_written = 0.0
        self.engine_restored = False
        self.lock = asyncio.Lock()
        self._producer: Any = None
        self._topic_ready = False
        # False: keep state in memory only (in-process agent tests, which have no broker).
        self.durable = True

    # --- setup -------------------------------------------------------------------------

    async def ensure_topic(self) -> None:
        """Create the compacted state topic (``SNOOPWATCH_PARTITIONS`` partitions) if missing."""
        if self._topic_ready:
            return
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(self.settings.broker))
        await admin.start()
        try:
            if self.topic not in set(await admin.list_topics()):
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(
                        self.topic, self.settings.partitions, 1, topic_configs={
                            "cleanup.policy": "compact",
                            "max.message.bytes": str(STATE_MAX_MESSAGE_BYTES)})])
        finally:
            await admin.close()
        self._topic_ready = True

    async def producer(self) -> Any:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            p = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(self.settings.broker),
                                 client_id=f"{self.settings.app_id}-state", acks="all",
                                 linger_ms=5, max_request_size=STATE_MAX_MESSAGE_BYTES,
                                 request_timeout_ms=30_000)
            await p.start()
            self._producer = p
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # --- restore -------------------------------------------------------------------------

    async def load_partition(self, partition: int) -> int:
        """Read partition ``partition`` of the state topic to its end; returns records read."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if not self.durable:
            self.loaded.add(partition)
            return 0
        await self.ensure_topic()
        started = time.perf_counter()
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(self.settings.broker),
                                    group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=STATE_MAX_MESSAGE_BYTES,
                                    fetch_max_bytes=4 * STATE_MAX_MESSAGE_BYTES)
        await consumer.start()
        n = 0
        engine_blob: bytes | None = None
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.seek_to_beginning(tp)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    n += 1
                    if msg.key == ENGINE_KEY:
                        engine_blob = msg.value
                        continue
                    actor = msg.key.decode()
                    if msg.value is None:
                        self.blobs.pop(actor, None)
                    elif actor not in self.meta:  # never overwrite live state
                        self.blobs[actor] = (partition, msg.value)
        finally:
            await consumer.stop()
        if engine_blob is not None:
            self._restore_engine(engine_blob)
        self.loaded.add(partition)
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("snoopwatch: restored %d state records of partition %d in %.2fs", n,
                 partition, elapsed)
        return n

    def _restore_engine(self, blob: bytes) -> None:
        snap = pickle.loads(blob)
        eng = self.engine
        if not self.engine_restored and not eng.peers:
            eng.peers.update(snap["peers"])
            eng.customer_teams.update(snap["customer_teams"])
            eng.teams.update(snap["teams"])
        else:  # a partition gained in a rebalance: adopt only peer groups we lack
            for role, group in snap["peers"].items():
                eng.peers.setdefault(role, group)
        self.engine_restored = True

    def actor_meta(self, actor: str, partition: int) -> ActorMeta:
        """The actor's meta, unpickling its restored record into the engine on first use."""
        meta = self.meta.get(actor)
        if meta is None:
            restored = self.blobs.pop(actor, None)
            if restored is not None:
                meta, state = decode_record(restored[1], partition)
                self.engine.actors[actor] = state
            else:
                meta = ActorMeta(partition)
            self.meta[actor] = meta
        return meta

    # --- per event ---------------------------------------------------------------------

    def admit(self, actor: str, event_id: str, partition: int, offset: int,
              source: tuple[int, int] | None = None) -> str:
        """``"process"``, ``"replayed"`` (already in the state) or ``"duplicate"``.

        ``source`` is the event's (input partition, input offset), from the by-actor
        message's header: ingest keeps an actor's events in input order, so one at or
        below the highest already applied was forwarded twice.
        """
        meta = self.actor_meta(actor, partition)
        if offset <= meta.offset:
            self.metrics.replayed.inc()
            return "replayed"
        meta.offset = offset
        self.dirty.add(actor)
        forwarded_again = False
        if source is not None:
            part, off = source
            forwarded_again = off <= meta.sources.get(part, -1)
            meta.sources[part] = max(off, meta.sources.get(part, -1))
        if forwarded_again or event_id in meta.ids:
            self.metrics.duplicates.inc()
            return "duplicate"
        meta.ids[event_id] = None
        if len(meta.ids) > self.settings.dedup_window:
            meta.ids.popitem(last=False)
        return "process"

    # --- checkpoint ----------------------------------------------------------------------

    async def checkpoint(self, partitions: set[int] | None = None) -> int:
        """Write every changed actor (of ``partitions``, default all), then ack their events."""
        async with self.lock:
            if not self.dirty and not self.unacked:
                return 0
            # One synchronous block: the snapshot and the events it covers match exactly.
            records: list[tuple[int, bytes, bytes]] = []
            keep: set[str] = set()
            for actor in self.dirty:
                meta = self.meta.get(actor)
                state = self.engine.actors.get(actor)
                if meta is None or state is None:
                    continue
                if partitions is not None and meta.partition not in partitions:
                    keep.add(actor)
                    continue
                records.append((meta.partition, actor.encode(), encode_record(meta, state)))
            now = time.monotonic()
            if records and now - self.engine_written >= ENGINE_CHECKPOINT_EVERY_S:
                snap = engine_snapshot(self.engine)
                for p in {r[0] for r in records} | self.loaded:
                    records.append((p, ENGINE_KEY, snap))
                self.engine_written = now
            if partitions is None:
                events, self.unacked = self.unacked, []
            else:
                events = [e for e in self.unacked if e.message.partition in partitions]
                self.unacked = [e for e in self.unacked if e.message.partition not in partitions]
            self.dirty = keep
            if records and self.durable:
                producer = await self.producer()
                futures = [await producer.send(self.topic, value=blob, key=key, partition=p)
                           for p, key, blob in records]
                await asyncio.gather(*futures)
            for event in events:
                event.ack()
            self.metrics.checkpoints.inc()
            self.metrics.checkpointed_actors.inc(sum(1 for r in records if r[1] != ENGINE_KEY))
            return len(records)

    async def revoke(self, partitions: set[int]) -> None:
        """Checkpoint, then forget, the actors of partitions taken away in a rebalance."""
        try:
            await self.checkpoint(partitions)
        except Exception:  # the new owner replays from the last checkpoint
            log.exception("snoopwatch: checkpoint on revoke failed")
        for actor, meta in list(self.meta.items()):
            if meta.partition in partitions:
                del self.meta[actor]
                self.engine.actors.pop(actor, None)
                self.dirty.discard(actor)
        for actor, (p, _) in list(self.blobs.items()):
            if p in partitions:
                del self.blobs[actor]
        self.loaded -= partitions
        self.metrics.tracked_actors.set(self.engine.tracked_actors)
