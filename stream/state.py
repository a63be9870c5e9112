"""Durable per-actor state for the worker (issue 4): checkpoints, restore, de-duplication.

The ``detect`` agent reads ``<app_id>-events-by-actor``; partition *p* of it holds every event
of the actors hashed to *p*. Their state is checkpointed to the compacted topic
``<app_id>-actor-state`` (same partition count, same partition *p*, key = actor), one record
per actor::

    pickle({"v": 1, "offset": <last by-actor offset applied>, "ids": <recent event_ids'
            8-byte digests>, "ring_at": <where the next one goes>, "sources": {...},
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
  the alert with the same ``alert_id`` (de-duplicate on it downstream, as the forwarder does):
  byte for byte from a worker holding one partition; with several, the engine-wide state is
  re-learned in another interleaving of them, which can change the score and reasons.

State is restored lazily: the first time a worker sees an event of partition *p* (after start
or a rebalance) it reads partition *p* of the state topic to its end, keeps the records as
bytes and unpickles an actor's record when its first event arrives. A rebalance revokes every
partition of every worker (aiokafka's eager protocol): the revoke checkpoints them and sets
their actors aside; a partition given back to the same worker is taken from there, without
reading, if the state topic's partition ends where this worker's own last write left it
(nobody else has written to it since), and read back otherwise. What is set aside and not
given back within ``PARKED_S`` is dropped.

Actors idle for ``SNOOPWATCH_ACTOR_TTL_S`` of event time (the highest event time this worker
has processed) are expired: forgotten in memory and deleted from the state topic (a
tombstone), including restored records never touched since (their last event time rides in a
header, so they are not unpickled for it).

Each record carries headers naming its writer (``host:pid``: which worker held the actor) and
the actor's last event time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pickle
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from detectors.engine import Engine
from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.metrics import Metrics

log = logging.getLogger("snoopwatch")

ENGINE_KEY = b"\x00engine"
RECORD_VERSION = 1
ID_BYTES = 8  # per remembered event_id (see id_digest)
# Engine-wide state (peer groups, the customer map) is re-written at most this often; 0: with
# every checkpoint, so restored peers match the restored actors (costly with a huge customer map).
ENGINE_CHECKPOINT_EVERY_S = 0.0
STATE_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A checkpoint pickles (and sends) this many actors at a time, then leaves the agents as long
# again times CHECKPOINT_YIELD: a bare sleep(0) lets each agent take one event only, and a busy
# worker's input would queue up behind the whole checkpoint (seconds with 10k actors).
CHECKPOINT_SLICE = 100
CHECKPOINT_YIELD = 2.0
WRITER_HEADER = "snoopwatch-writer"
LAST_MS_HEADER = "snoopwatch-last-ms"
# Idle actors are looked for at most this often (a scan of every actor this worker holds).
EXPIRE_EVERY_S = 10.0
# Event times beyond the wall clock by more than this do not advance expiry's clock: one
# event stamped in 2199 (valid input) must not expire every actor.
FUTURE_SLACK_MS = 86_400_000
PARKED_S = 60.0  # how long revoked partitions' actors wait to be given back


@dataclass(slots=True)
class Parked:
    """A revoked partition's actors, kept in case the same worker is given it back."""

    end: int  # the state partition's end offset after this worker's last write to it
    at: float  # monotonic time of the revoke
    actors: dict[str, tuple[ActorMeta, Any]]
    blobs: dict[str, tuple[int, bytes, int]]


def state_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-actor-state"


def id_digest(event_id: str) -> bytes:
    """The 8 bytes an event_id is remembered by (a collision among an actor's last few hundred
    ids has odds of ~1e-17; the strings themselves cost ~35 kB per busy actor)."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


@dataclass(slots=True)
class ActorMeta:
    """What the worker keeps next to an actor's :class:`ActorState`."""

    partition: int
    offset: int = -1
    # The actor's last SNOOPWATCH_DEDUP_WINDOW event ids, as 8-byte digests in a ring: once
    # full, the oldest (at ``ring_at``) is overwritten.
    ids: bytearray = field(default_factory=bytearray)
    ring_at: int = 0
    # input partition -> highest input offset applied: an event that ingest forwards again
    # after a restart (its input offset not yet committed) is recognised, however old.
    sources: dict[int, int] = field(default_factory=dict)

    def seen(self, digest: bytes, window: int) -> bool:
        """Whether ``digest`` is among the remembered ids; if not, remember it."""
        ids = self.ids
        at = ids.find(digest)
        while at >= 0:
            if at % ID_BYTES == 0:
                return True
            at = ids.find(digest, at + 1)  # matched across two digests: look on
        if window <= 0:
            return False
        if len(ids) < window * ID_BYTES:
            ids += digest
        else:
            at = self.ring_at % len(ids)
            ids[at:at + ID_BYTES] = digest
            self.ring_at = at + ID_BYTES
        return False


def encode_record(meta: ActorMeta, state: Any) -> bytes:
    return pickle.dumps({"v": RECORD_VERSION, "offset": meta.offset, "ids": bytes(meta.ids),
                         "ring_at": meta.ring_at, "sources": meta.sources, "state": state},
                        protocol=pickle.HIGHEST_PROTOCOL)


def decode_record(blob: bytes, partition: int) -> tuple[ActorMeta, Any]:
    rec = pickle.loads(blob)
    ids = rec["ids"]
    if isinstance(ids, list):  # written before ids were kept as digests: oldest first
        ids = b"".join(id_digest(i) for i in ids)
    meta = ActorMeta(partition, rec["offset"], bytearray(ids), rec.get("ring_at", 0),
                     dict(rec.get("sources", {})))
    return meta, rec["state"]


def engine_snapshot(engine: Engine) -> bytes:
    return pickle.dumps({"v": RECORD_VERSION, "at": time.time(), "peers": engine.peers,
                         "customer_teams": engine.customer_teams, "teams": engine.teams,
                         "team_links": engine.team_links, "day_peaks": engine.day_peaks},
                        protocol=pickle.HIGHEST_PROTOCOL)


class _Slicer:
    """Every ``CHECKPOINT_SLICE`` ticks, sleep ``CHECKPOINT_YIELD`` times the slice's duration."""

    def __init__(self) -> None:
        self.n = 0
        self.started = time.perf_counter()

    async def tick(self) -> None:
        self.n += 1
        if self.n % CHECKPOINT_SLICE == 0:
            await asyncio.sleep(CHECKPOINT_YIELD * (time.perf_counter() - self.started))
            self.started = time.perf_counter()


class ActorStore:
    """Checkpoints and restores one worker's actors; decides which events to skip."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.topic = state_topic_name(settings)
        self.meta: dict[str, ActorMeta] = {}
        self.loaded: set[int] = set()
        # restored, not yet unpickled: actor -> (partition, record, last event ms or -1)
        self.blobs: dict[str, tuple[int, bytes, int]] = {}
        self.dirty: set[str] = set()
        self.unacked: list[Any] = []  # faust events whose effect is not checkpointed yet
        self.engine_written = 0.0
        self.engine_restored = False
        # Bumped by every revoke: a restore that a rebalance overtook is discarded.
        self.revision = 0
        self.event_time_ms = 0  # highest event time among checkpointed actors
        self.expired_at = (0.0, 0)  # (monotonic s, event_time_ms) of the last expiry scan
        self.writer = f"{socket.gethostname()}:{os.getpid()}".encode()
        self.known_end: dict[int, int] = {}  # state partition -> end offset as this worker saw it
        self.parked: dict[int, Parked] = {}
        self.loading: dict[int, asyncio.Future] = {}
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

        admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
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

            p = AIOKafkaProducer(**client_kwargs(self.settings),
                                 client_id=f"{self.settings.app_id}-state", acks="all",
                                 linger_ms=5, max_request_size=STATE_MAX_MESSAGE_BYTES,
                                 request_timeout_ms=30_000)
            try:
                await p.start()
            except BaseException:  # broker away: close it, a new one is tried next time
                await p.stop()
                raise
            self._producer = p
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # --- restore -------------------------------------------------------------------------

    async def ensure_loaded(self, partition: int) -> bool:
        """Restore ``partition`` unless done; False if a rebalance revoked it meanwhile.

        Concurrent callers (the ingest agent detecting in place, the detect agent) share one
        restore of a partition.
        """
        if partition in self.loaded:
            return True
        task = self.loading.get(partition)
        if task is None:
            task = asyncio.ensure_future(self.load_partition(partition))
            self.loading[partition] = task

            def done(t: asyncio.Future, p: int = partition) -> None:
                if self.loading.get(p) is t:
                    del self.loading[p]

            task.add_done_callback(done)
        return await asyncio.shield(task) >= 0

    async def load_partition(self, partition: int) -> int:
        """Read partition ``partition`` of the state topic to its end; returns records read.

        -1 if the partition was revoked while it was being read: what was read is dropped, as
        the partition's new owner may already be writing newer state.
        """
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if not self.durable:
            self.loaded.add(partition)
            return 0
        revision = self.revision
        await self.ensure_topic()
        started = time.perf_counter()
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(**client_kwargs(self.settings),
                                    group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=STATE_MAX_MESSAGE_BYTES,
                                    fetch_max_bytes=4 * STATE_MAX_MESSAGE_BYTES)
        await consumer.start()
        n = 0
        engine_blob: bytes | None = None
        blobs: dict[str, tuple[int, bytes, int] | None] = {}
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            parked = self.parked.pop(partition, None)
            if parked is not None and parked.end == end and revision == self.revision:
                return self._unpark(partition, parked, started)
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
                        blobs[actor] = None
                    else:
                        last_ms = dict(msg.headers or ()).get(LAST_MS_HEADER)
                        blobs[actor] = (partition, msg.value,
                                        int(last_ms) if last_ms is not None else -1)
        finally:
            await consumer.stop()
        if revision != self.revision:
            log.info("snoopwatch: partition %d was revoked while its state was read", partition)
            return -1
        for actor, blob in blobs.items():
            if blob is None:
                self.blobs.pop(actor, None)
            elif actor not in self.meta:  # never overwrite live state
                self.blobs[actor] = blob
        if engine_blob is not None:
            self._restore_engine(engine_blob)
        self.loaded.add(partition)
        self.known_end[partition] = end
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("snoopwatch: restored %d state records of partition %d in %.2fs", n,
                 partition, elapsed)
        return n

    def _unpark(self, partition: int, parked: Parked, started: float) -> int:
        for actor, (meta, state) in parked.actors.items():
            if actor not in self.meta:
                self.meta[actor] = meta
                self.engine.actors[actor] = state
        for actor, blob in parked.blobs.items():
            if actor not in self.meta:
                self.blobs[actor] = blob
        self.loaded.add(partition)
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("snoopwatch: partition %d given back: kept its %d actors (no one else wrote "
                 "to its state) in %.2fs", partition, len(parked.actors) + len(parked.blobs),
                 elapsed)
        return len(parked.actors) + len(parked.blobs)

    def _restore_engine(self, blob: bytes) -> None:
        snap = pickle.loads(blob)
        eng = self.engine
        if not self.engine_restored and not eng.peers:
            eng.peers.update(snap["peers"])
            eng.customer_teams.update(snap["customer_teams"])
            eng.teams.update(snap["teams"])
            eng.team_links.update(snap.get("team_links", {}))
            if "day_peaks" in snap:  # (records written before the false-alert budget lack it)
                eng.day_peaks = snap["day_peaks"]
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

    def admit(self, actor: str, event_id: str, partition: int, offset: int | None,
              source: tuple[int, int] | None = None) -> str:
        """``"process"``, ``"replayed"`` (already in the state) or ``"duplicate"``.

        ``source`` is the event's (input partition, input offset), from the by-actor
        message's header: ingest keeps an actor's events in input order, so one at or
        below the highest already applied was forwarded twice. ``offset`` is None for an
        event that did not come through the by-actor topic (``source`` alone decides).
        """
        meta = self.actor_meta(actor, partition)
        if offset is not None:
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
        if forwarded_again or meta.seen(id_digest(event_id), self.settings.dedup_window):
            self.metrics.duplicates.inc()
            return "duplicate"
        return "process"

    # --- checkpoint ----------------------------------------------------------------------

    async def checkpoint(self, partitions: set[int] | None = None) -> int:
        """Write every changed actor (of ``partitions``, default all), then ack their events."""
        async with self.lock:
            now = time.monotonic()
            for p in [p for p, parked in self.parked.items() if now - parked.at > PARKED_S]:
                del self.parked[p]
            if not self.dirty and not self.unacked and not self._expiry_due():
                return 0
            records: list[tuple[int, bytes, bytes | None, int]] = []
            keep: set[str] = set()
            written: set[str] = set()
            horizon = int(time.time() * 1000) + FUTURE_SLACK_MS
            dirty = self.dirty
            if partitions is None:
                # Take the work first, then pickle in slices with the agents running between
                # them (10k actors are ~0.5 s of pickling: one block would hold alerts back that
                # long). Each record pickles an actor's state with its watermarks, so an event
                # applied meanwhile is either in the record (skipped if read again) or left
                # for the next checkpoint; every event acked here was applied before.
                events, self.unacked = self.unacked, []
                self.dirty = set()
            pace = _Slicer()
            for actor in dirty:
                if partitions is None:
                    await pace.tick()
                meta = self.meta.get(actor)
                state = self.engine.actors.get(actor)
                if meta is None or state is None:
                    continue
                if partitions is not None and meta.partition not in partitions:
                    keep.add(actor)
                    continue
                last_ms = getattr(state, "last_ms", 0)
                self.event_time_ms = max(self.event_time_ms, min(last_ms, horizon))
                written.add(actor)
                records.append((meta.partition, actor.encode(), encode_record(meta, state),
                                last_ms))
            if partitions is None:
                records.extend(self._expire_idle(written))
            now = time.monotonic()
            if records and now - self.engine_written >= ENGINE_CHECKPOINT_EVERY_S:
                snap = engine_snapshot(self.engine)
                for p in {r[0] for r in records} | self.loaded:
                    records.append((p, ENGINE_KEY, snap, -1))
                self.engine_written = now
            if partitions is not None:  # (revoke: the agents are paused)
                events = [e for e in self.unacked if e.message.partition in partitions]
                self.unacked = [e for e in self.unacked if e.message.partition not in partitions]
                self.dirty = keep
            if records and self.durable:
                try:
                    await self._send(records)
                except BaseException:
                    # Broker away: keep the actors dirty and their events unacked, so that
                    # the next checkpoint writes them (the committed offset must not move).
                    self.dirty |= {a for a in written if a in self.meta}
                    self.unacked[:0] = events
                    raise
            for event in events:
                event.ack()
            self.metrics.checkpoints.inc()
            self.metrics.checkpointed_actors.inc(len(written))
            return len(records)

    async def _send(self, records: list[tuple[int, bytes, bytes | None, int]]) -> None:
        producer = await self.producer()
        futures = []
        pace = _Slicer()
        for p, key, blob, last_ms in records:
            await pace.tick()
            headers = [(WRITER_HEADER, self.writer)]
            if last_ms >= 0:
                headers.append((LAST_MS_HEADER, str(last_ms).encode()))
            futures.append(await producer.send(self.topic, value=blob, key=key, partition=p,
                                               headers=headers))
        for md in await asyncio.gather(*futures):
            self.known_end[md.partition] = max(self.known_end.get(md.partition, 0), md.offset + 1)

    def _expiry_due(self) -> bool:
        last_scan, last_event_ms = self.expired_at
        return (self.settings.actor_ttl_s > 0 and self.event_time_ms > last_event_ms
                and time.monotonic() - last_scan >= EXPIRE_EVERY_S)

    def _expire_idle(self, written: set[str]) -> list[tuple[int, bytes, bytes | None, int]]:
        """Tombstones for actors idle past ``actor_ttl_s`` (event time); forgets them here.

        Runs every ``EXPIRE_EVERY_S`` at most, and only once event time has moved on.
        """
        if not self._expiry_due():
            return []
        self.expired_at = (time.monotonic(), self.event_time_ms)
        tombstones: list[tuple[int, bytes, bytes | None, int]] = []
        for actor in self.engine.expire_idle(self.event_time_ms):
            meta = self.meta.pop(actor, None)
            written.discard(actor)
            if meta is not None:
                tombstones.append((meta.partition, actor.encode(), None, -1))
        ttl_ms = self.settings.actor_ttl_s * 1000
        for actor, (p, _, last_ms) in list(self.blobs.items()):
            if 0 <= last_ms <= self.event_time_ms - ttl_ms:
                del self.blobs[actor]
                tombstones.append((p, actor.encode(), None, -1))
        if tombstones:
            # Records already built for these actors this round go too (tombstone wins:
            # it is sent after them).
            log.info("snoopwatch: expired %d actors idle for %gs of event time",
                     len(tombstones), self.settings.actor_ttl_s)
        return tombstones

    async def revoke(self, partitions: set[int]) -> None:
        """Checkpoint, then forget, the actors of partitions taken away in a rebalance."""
        durable = True
        try:
            await self.checkpoint(partitions)
        except Exception:  # the new owner replays from the last checkpoint
            durable = False
            log.exception("snoopwatch: checkpoint on revoke failed")
        # Set aside only what the state topic holds: memory ahead of it must be read back.
        now = time.monotonic()
        parked = {p: Parked(self.known_end[p], now, {}, {}) for p in partitions & self.loaded
                  if durable and self.durable and p in self.known_end}
        for actor, meta in list(self.meta.items()):
            if meta.partition in partitions:
                del self.meta[actor]
                state = self.engine.actors.pop(actor, None)
                self.dirty.discard(actor)
                if meta.partition in parked and state is not None:
                    parked[meta.partition].actors[actor] = (meta, state)
        for actor, blob in list(self.blobs.items()):
            if blob[0] in partitions:
                del self.blobs[actor]
                if blob[0] in parked:
                    parked[blob[0]].blobs[actor] = blob
        self.parked.update(parked)
        self.loaded -= partitions
        self.revision += 1
