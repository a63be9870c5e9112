"""Durable per-actor state for the worker (issue 4): checkpoints, restore, de-duplication.

The ``detect`` agent reads ``<app_id>-events-by-actor``; partition *p* of it holds every event
of the actors hashed to *p*. Their state is checkpointed to the compacted topic
``<app_id>-actor-state`` (same partition count, same partition *p*, key = actor), one record
per actor::

    pickle({"v": 1, "offset": <last by-actor offset applied>, "ids": <recent event_ids'
            8-byte digests>, "ring_at": <where the next one goes>, "sources": {...},
            "state": ActorState})

plus, per partition, an ``ENGINE_KEY`` record (format v2)::

    pickle({"v": 2, "epoch": n, "at": <wall time>, "offsets": {partition: offset},
            "shared": Engine.shared_state() (+ "barrier": Barrier.snapshot())})

and, in the same transaction, the peer-ops records of the partitions that entered a new
event-time hour (stream/peerops.py).

A checkpoint is one *epoch*: a consistent cut of this worker's state. The engine-wide state
(peer groups, the customer → serving-teams map) is pickled at the cut, and each changed actor
as it was at the cut: in slices while the agents run on, except that an actor about to take
an event is pickled first (copy-on-write). All of it is written in ONE Kafka transaction,
which is read back with ``isolation_level="read_committed"``: a crash mid-write leaves the previous
epoch whole (an aborted or unfinished transaction is never read), so the events re-read after
a crash meet exactly the state that had not seen them (issue 15). Alerts sent before the cut
are flushed before the transaction commits, so no acked event's alert is lost.

v1 engine records (``{"v": 1, "peers": ...}``, written beside the actors, not with them) are
still read for an upgrade; their restore is not exact (a warning per partition).

The guarantee is *at-least-once delivery, exactly-once effect on state*:

- the agent does not ack a by-actor message until the epoch holding its effect has been
  committed, so the consumer group's committed offset never passes state that is not
  durable;
- after a crash the worker restarts at the committed offset and re-reads the messages
  processed since; a message whose offset is ``<=`` its actor's checkpointed ``offset`` is
  already in the state and is skipped (``snoopwatch_events_replayed_total``);
- an event whose ``event_id`` is among the actor's last ``SNOOPWATCH_DEDUP_WINDOW`` ids (a
  producer retry, an ingest re-forward after a crash) is skipped and counted in
  ``snoopwatch_events_duplicate_total``;
- alerts are sent before the epoch that covers their event; a crash in between re-sends
  the alert with the same ``alert_id`` (de-duplicate on it downstream, as the forwarder does),
  byte for byte: with the peer-ops barrier (stream/peerops.py) the engine-wide state an event
  meets is that of its hour, whichever worker judges it (without it, and several partitions,
  the engine-wide state is re-learned in another interleaving of them).

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
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detectors.engine import Engine
from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.metrics import Metrics
from stream.peerops import Barrier, peer_ops_topic_name, record_key
from stream.peerops import encode_record as encode_ops

log = logging.getLogger("snoopwatch")

ENGINE_KEY = b"\x00engine"
RECORD_VERSION = 1  # actor records
ENGINE_RECORD_VERSION = 2  # engine records: {"epoch", "shared"} (v1: peers etc. at the top)
# An open transaction of a worker that died blocks read_committed readers of its partitions
# (the last stable offset) until the broker aborts it, SNOOPWATCH_TRANSACTION_TIMEOUT_S later
# (plus up to this, the broker's transaction.abort.timed.out.transaction.cleanup.interval.ms),
# unless the worker is restarted under the same SNOOPWATCH_WORKER_ID: a restore waits for it.
ABORT_CHECK_S = 10.0
ID_BYTES = 8  # per remembered event_id (see id_digest)
STATE_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
ENGINE_RECORD_SLACK = 64 * 1024  # (the record's key, headers and batch overhead)
# A checkpoint pickles (and sends) this many actors at a time, then leaves the agents as long
# again times CHECKPOINT_YIELD: a bare sleep(0) lets each agent take one event only, and a busy
# worker's input would queue up behind the whole checkpoint (seconds with 10k actors).
CHECKPOINT_SLICE = 100
CHECKPOINT_YIELD = 2.0
# The state producer's batch per partition: a full batch makes send() wait for it to drain,
# which leaves the agents a turn (aiokafka's 16 KB: every ~4 actors).
STATE_BATCH_BYTES = 1024 * 1024
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


class StateTooLarge(ValueError):
    """An epoch's engine record does not fit in one message of the state topic."""


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


def engine_snapshot(engine: Engine, epoch: int, offsets: dict[int, int],
                    barrier: Barrier | None = None) -> bytes:
    """The v2 engine record of one epoch: the engine-wide state at the cut (with the
    peer-ops barrier's, under ``shared["barrier"]``)."""
    shared = engine.shared_state()
    if barrier is not None:
        shared = {**shared, "barrier": barrier.snapshot()}
    return pickle.dumps({"v": ENGINE_RECORD_VERSION, "epoch": epoch, "at": time.time(),
                         "offsets": offsets, "shared": shared},
                        protocol=pickle.HIGHEST_PROTOCOL)


def pack_engine(snap: bytes) -> bytes:
    """An engine record as written: zlib at level 1, ~4x smaller (mostly the barrier's
    pending ops, which grow with an hour's events) for ~0.1 s per 17 MB."""
    return zlib.compress(snap, 1)


def decode_engine(blob: bytes) -> tuple[int, dict[str, Any]]:
    """(epoch, shared state) of an engine record; epoch -1 for a v1 record. Records written
    before 2026-12-08 are bare pickles (first byte 0x80), later ones zlib (0x78)."""
    snap = pickle.loads(zlib.decompress(blob) if blob[:1] == b"\x78" else blob)
    version = snap.get("v", 1)
    if version == 1:
        return -1, {k: snap.get(k, {}) for k in ("peers", "customer_teams", "teams",
                                                   "team_links")}
    if version != ENGINE_RECORD_VERSION:
        raise ValueError(f"state topic: engine record version {version} is newer than this "
                         f"worker's ({ENGINE_RECORD_VERSION}); upgrade the worker")
    return snap["epoch"], snap["shared"]


class _Slicer:
    """Every ``CHECKPOINT_SLICE`` ticks, sleep ``CHECKPOINT_YIELD`` times the slice's duration
    (after ``budget_s``, only yield: a transaction must commit within its timeout). While
    ``hurry()``, go on without a turn for the agents: events held at the peer-ops barrier
    wait for the epoch, and each turn would make them wait longer."""

    def __init__(self, budget_s: float | None = None,
                 hurry: Callable[[], bool] | None = None) -> None:
        self.n = 0
        self.started = self.began = time.perf_counter()
        self.budget_s = budget_s
        self.hurry = hurry

    async def tick(self) -> None:
        self.n += 1
        if self.n % CHECKPOINT_SLICE == 0:
            if self.hurry is not None and self.hurry():
                return
            if self.budget_s is not None and self.started - self.began > self.budget_s:
                await asyncio.sleep(0)
                self.started = time.perf_counter()
                return
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
        self.engine_restored = False
        self.epoch = 0  # the last epoch written or restored
        # (seconds the cut held the agents, records, bytes) of the last checkpoint
        self.last_cut: tuple[float, int, int] = (0.0, 0, 0)
        # Actors changed before the cut that is being written and not pickled yet: one that
        # is about to take an event is pickled first (see admit).
        self.cutting: dict[str, None] = {}
        self.cut_records: list[tuple[int, bytes, bytes | None, int]] = []
        # partition -> highest by-actor offset applied (the cut's offsets, in the engine record)
        self.applied: dict[int, int] = {}
        # How an event the epoch covers is acked (the app acks each partition in order).
        self.ack: Any = lambda event: event.ack()
        # Awaited after the cut, before its transaction commits: the app flushes the alerts
        # sent for the events the epoch covers.
        self.before_commit: Any = None
        # Bumped by every revoke: a restore that a rebalance overtook is discarded.
        self.revision = 0
        self.event_time_ms = 0  # highest event time among checkpointed actors
        self.expired_at = (0.0, 0)  # (monotonic s, event_time_ms) of the last expiry scan
        self.writer = f"{socket.gethostname()}:{os.getpid()}".encode()
        # The checkpoints' transactional id: the same after a restart of this worker (given a
        # SNOOPWATCH_WORKER_ID), so the restart fences its dead self (see fence).
        self.transactional_id = (f"{settings.app_id}-state-"
                                 f"{settings.worker_id or self.writer.decode()}")
        self.known_end: dict[int, int] = {}  # state partition -> end offset as this worker saw it
        self.parked: dict[int, Parked] = {}
        self.loading: dict[int, asyncio.Future] = {}
        self.lock = asyncio.Lock()
        self._producer: Any = None
        self._topic_ready = False
        # False: keep state in memory only (in-process agent tests, which have no broker).
        self.durable = True
        # The peer-ops barrier (stream/peerops.py): its records go in the epochs.
        self.barrier: Barrier | None = None
        self.peer_topic = peer_ops_topic_name(settings)

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
            if self.barrier is not None:
                from stream.peerops import reconcile_topic

                await reconcile_topic(admin, self.settings)
        finally:
            await admin.close()
        self._topic_ready = True

    async def producer(self) -> Any:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            # One transactional id per live worker: starting it (init_transactions) fences
            # an earlier producer of the same id and aborts its open transaction.
            p = AIOKafkaProducer(**client_kwargs(self.settings),
                                 client_id=f"{self.settings.app_id}-state", acks="all",
                                 linger_ms=5, max_request_size=STATE_MAX_MESSAGE_BYTES,
                                 max_batch_size=STATE_BATCH_BYTES,
                                 request_timeout_ms=30_000, enable_idempotence=True,
                                 transactional_id=self.transactional_id,
                                 transaction_timeout_ms=int(
                                     self.settings.transaction_timeout_s * 1000))
            try:
                await p.start()
            except BaseException:  # broker away: close it, a new one is tried next time
                await p.stop()
                raise
            self._producer = p
        return self._producer

    async def fence(self) -> None:
        """Start the checkpoint producer now, not at the first checkpoint: under a stable
        SNOOPWATCH_WORKER_ID, this aborts the transaction this worker's previous run left
        open when it died, which otherwise holds every restore of its partitions and every
        worker's peer-ops barrier until the broker times it out."""
        if self.durable:
            async with self.lock:  # (a checkpoint, which holds it, may be creating one)
                await self.producer()
            log.info("snoopwatch: checkpoint producer started (transactional id %s)",
                     self.transactional_id)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _drop_producer(self) -> None:
        """Close a producer whose transaction failed (the broker aborts it); a new one next time."""
        p, self._producer = self._producer, None
        if p is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.stop(), 10)

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
            if self.barrier is not None:
                self.barrier.restore(partition, None, False)
            return 0
        revision = self.revision
        await self.ensure_topic()
        started = time.perf_counter()
        tp = TopicPartition(self.topic, partition)
        # read_committed: only whole epochs (an aborted or unfinished transaction is skipped).
        consumer = AIOKafkaConsumer(**client_kwargs(self.settings),
                                    group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    isolation_level="read_committed",
                                    max_partition_fetch_bytes=STATE_MAX_MESSAGE_BYTES,
                                    fetch_max_bytes=4 * STATE_MAX_MESSAGE_BYTES)
        await consumer.start()
        n = 0
        engine_blob: bytes | None = None
        blobs: dict[str, tuple[int, bytes, int] | None] = {}
        try:
            consumer.assign([tp])
            end = await self._stable_end(consumer, tp)
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
            self._restore_engine(engine_blob, partition)
        elif self.barrier is not None:
            self.barrier.restore(partition, None, False)  # (a partition never written)
        self.loaded.add(partition)
        self.known_end[partition] = end
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("snoopwatch: restored %d state records of partition %d in %.2fs", n,
                 partition, elapsed)
        return n

    async def _stable_end(self, consumer: Any, tp: Any) -> int:
        """The partition's end for a read_committed reader, once no transaction begun before
        now is open: a dead worker's unfinished one is aborted by the broker after
        SNOOPWATCH_TRANSACTION_TIMEOUT_S (at once if it restarts under its worker id), and a
        commit whose markers are not written yet lands within milliseconds (its epoch must be
        read: the group may have committed offsets past it)."""
        from aiokafka import AIOKafkaConsumer

        probe = AIOKafkaConsumer(**client_kwargs(self.settings),
                                 group_id=None, enable_auto_commit=False)
        await probe.start()
        try:
            high = (await probe.end_offsets([tp]))[tp]
        finally:
            await probe.stop()
        longest = self.settings.transaction_timeout_s + ABORT_CHECK_S
        deadline = time.monotonic() + longest
        stable = (await consumer.end_offsets([tp]))[tp]
        waited = False
        while stable < high and time.monotonic() < deadline:
            if not waited:
                log.info("snoopwatch: state partition %d: waiting for an open transaction "
                         "(up to %.0fs)", tp.partition, longest)
                waited = True
            await asyncio.sleep(0.2)
            stable = (await consumer.end_offsets([tp]))[tp]
        if stable < high:
            log.warning("snoopwatch: state partition %d: a transaction is still open; "
                        "restoring the epochs committed before it", tp.partition)
        return stable

    def _unpark(self, partition: int, parked: Parked, started: float) -> int:
        for actor, (meta, state) in parked.actors.items():
            if actor not in self.meta:
                self.meta[actor] = meta
                self.engine.actors[actor] = state
        for actor, blob in parked.blobs.items():
            if actor not in self.meta:
                self.blobs[actor] = blob
        self.loaded.add(partition)
        if self.barrier is not None:
            self.barrier.unpark(partition)
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("snoopwatch: partition %d given back: kept its %d actors (no one else wrote "
                 "to its state) in %.2fs", partition, len(parked.actors) + len(parked.blobs),
                 elapsed)
        return len(parked.actors) + len(parked.blobs)

    def _restore_engine(self, blob: bytes, partition: int) -> None:
        epoch, shared = decode_engine(blob)
        if epoch < 0:
            log.warning("snoopwatch: state partition %d holds a v1 engine record (written "
                        "beside the actors, not with them): restored, but not exactly; the "
                        "next checkpoint writes v2", partition)
        eng = self.engine
        barrier = self.barrier
        if barrier is not None:
            # Every worker's cross-actor state at an hour is the same: taken whole only by a
            # worker that has applied nothing yet; else only the partition's clock and ops.
            whole = barrier.blank and "barrier" in shared
            if whole or (barrier.blank and not eng.peers):
                eng.load_shared(shared)
            barrier.restore(partition, shared.get("barrier"), whole)
        elif not self.engine_restored and not eng.peers:
            eng.load_shared(shared)
        else:  # a partition gained in a rebalance: adopt only peer groups we lack
            for role, group in shared["peers"].items():
                eng.peers.setdefault(role, group)
        self.epoch = max(self.epoch, epoch)
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
        if actor in self.cutting:  # its state as of the cut, before this event changes it
            self._cut_one(actor)
        meta = self.actor_meta(actor, partition)
        if offset is not None:
            if offset <= meta.offset:
                self.metrics.replayed.inc()
                return "replayed"
            meta.offset = offset
            if offset > self.applied.get(partition, -1):
                self.applied[partition] = offset
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
        """Write one epoch: every changed actor (of ``partitions``, default all) and the
        engine-wide state, as of one cut, in one transaction; then ack the events it covers."""
        async with self.lock:
            now = time.monotonic()
            for p in [p for p, parked in self.parked.items() if now - parked.at > PARKED_S]:
                del self.parked[p]
            barrier = self.barrier
            if (not self.dirty and not self.unacked and not self._expiry_due()
                    and not (barrier is not None and barrier.outbox)):
                return 0
            cut_started = time.perf_counter()
            # --- the cut: the engine-wide state is pickled here, with no await until the
            # actors are set aside in ``cutting``; each is pickled as of this point (below,
            # or by admit() before its next event), so the epoch is one point of the stream.
            if partitions is None:
                events, self.unacked = self.unacked, []
                dirty, self.dirty = self.dirty, set()
                targets = None
            else:  # a revoke (the agents are paused): those partitions only
                events = [e for e in self.unacked if e.message.partition in partitions]
                self.unacked = [e for e in self.unacked if e.message.partition not in partitions]
                dirty = {a for a in self.dirty
                         if (m := self.meta.get(a)) is not None and m.partition in partitions}
                self.dirty -= dirty
                targets = partitions
            self.cut_records = []
            written = {a for a in dirty if a in self.meta and a in self.engine.actors}
            horizon = int(time.time() * 1000) + FUTURE_SLACK_MS
            actors = self.engine.actors
            for actor in written:  # expiry's clock: the newest event time in the epoch
                self.event_time_ms = max(self.event_time_ms, min(
                    getattr(actors[actor], "last_ms", 0), horizon))
            tombstones = self._expire_idle(written) if partitions is None else []
            parts = {self.meta[a].partition for a in written} | {r[0] for r in tombstones}
            epoch = self.epoch + 1
            engine_parts = (parts | self.loaded if targets is None
                            else targets & (self.loaded | parts))
            # The records of partitions that entered a new hour go in this epoch, which
            # covers their events up to it (stream/peerops.py).
            publish = barrier.take_outbox(targets) if barrier is not None else []
            engine_parts |= {p for p, _, _ in publish}
            snap = engine_snapshot(self.engine, epoch, {
                p: o for p, o in self.applied.items() if p in engine_parts}, barrier
            ) if engine_parts else b""
            self.cutting = dict.fromkeys(written)
            held = time.perf_counter() - cut_started

            def hurry() -> bool:
                """A partition waits at the barrier for this epoch (its record is in it) or
                for the next one, which this one holds back."""
                return bool(publish) or (barrier is not None and bool(barrier.outbox))
            # --- the agents run again between slices (not during a revoke: they are paused)
            pace = _Slicer(hurry=hurry)
            for actor in list(self.cutting):
                if partitions is None:
                    await pace.tick()
                if actor in self.cutting:
                    self._cut_one(actor)
            records = self.cut_records + tombstones  # (a tombstone wins: sent after)
            self.cut_records = []
            packed = pack_engine(snap) if snap else b""  # (after the cut: bytes by now)
            records.extend((p, ENGINE_KEY, packed, -1) for p in sorted(engine_parts))
            self.last_cut = (held, len(records), sum(len(r[2] or b"") for r in records))
            if records and self.durable:
                try:
                    if len(packed) > STATE_MAX_MESSAGE_BYTES - ENGINE_RECORD_SLACK:
                        err = StateTooLarge(
                            f"the engine record is {len(packed) / 1e6:.1f} MB, over the state "
                            f"topic's {STATE_MAX_MESSAGE_BYTES / 1e6:.0f} MB: this worker "
                            "holds more cross-actor ops of one event-time hour than fit; run "
                            "more workers (docs/operations.md, \"An hour's ops must fit "
                            "one message\")")
                        log.error("snoopwatch: checkpoint not written: %s", err)
                        raise err
                    if self.before_commit is not None:
                        await self.before_commit()
                    await self._send(records, publish, hurry)
                except BaseException:
                    # Broker away: keep the actors dirty and their events unacked, so that
                    # the next epoch writes them (the committed offset must not move).
                    self.dirty |= {a for a in written if a in self.meta}
                    self.unacked[:0] = events
                    if barrier is not None:
                        barrier.put_back(publish)
                    raise
            if barrier is not None and publish and not self.durable:
                barrier.committed(publish)  # (no topic: in-process tests deliver them here)
            if engine_parts:
                self.epoch = epoch
            for event in events:
                self.ack(event)
            self.metrics.checkpoints.inc()
            self.metrics.checkpointed_actors.inc(len(written))
            return len(records)

    def _cut_one(self, actor: str) -> None:
        """Pickle ``actor``'s record for the epoch being written (its state at the cut)."""
        del self.cutting[actor]
        meta = self.meta.get(actor)
        state = self.engine.actors.get(actor)
        if meta is None or state is None:
            return
        last_ms = getattr(state, "last_ms", 0)
        self.cut_records.append((meta.partition, actor.encode(), encode_record(meta, state),
                                 last_ms))

    async def _send(self, records: list[tuple[int, bytes, bytes | None, int]],
                    publish: list[tuple[int, int, list]] | None = None,
                    hurry: Callable[[], bool] | None = None) -> None:
        """Send ``records``, and the peer-ops records ``publish`` ((partition, hour, ops)), in
        one transaction (all visible to read_committed, or none)."""
        producer = await self.producer()
        try:
            await producer.begin_transaction()
            futures = []
            # Paced for at most a quarter of the transaction timeout, then sent flat out.
            pace = _Slicer(budget_s=self.settings.transaction_timeout_s / 4, hurry=hurry)
            for p, key, blob, last_ms in records:
                await pace.tick()
                headers = [(WRITER_HEADER, self.writer)]
                if last_ms >= 0:
                    headers.append((LAST_MS_HEADER, str(last_ms).encode()))
                futures.append(await producer.send(self.topic, value=blob, key=key,
                                                   partition=p, headers=headers))
            sent = await asyncio.gather(*futures)
            if publish:
                await asyncio.gather(*[await producer.send(
                    self.peer_topic, value=encode_ops(ops), key=record_key(p, h), partition=0,
                    headers=[(WRITER_HEADER, self.writer)]) for p, h, ops in publish])
            await producer.commit_transaction()
        except BaseException as err:
            from aiokafka.errors import ProducerFenced

            if isinstance(err, ProducerFenced):  # (the epoch is retried with a new producer)
                log.error("snoopwatch: checkpoint producer fenced: another live worker uses "
                          "transactional id %s (SNOOPWATCH_WORKER_ID must differ between "
                          "workers)", self.transactional_id)
            await self._drop_producer()
            raise
        last: dict[int, int] = {}
        for md in sent:
            last[md.partition] = max(last.get(md.partition, -1), md.offset)
        for p, off in last.items():  # the commit marker follows our last record
            self.known_end[p] = max(self.known_end.get(p, 0), off + 2)

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
        if self.barrier is not None:
            self.barrier.forget(partitions)
        self.revision += 1
