"""The peer-ops barrier (issue 15 item 2): every worker applies every partition's cross-actor
ops at each event-time hour, so its cross-actor state is one engine's whatever it holds.

Each by-actor partition *p* has an event-time clock: the highest event hour it has entered
(an event more than a day past the wall clock does not move it, as ``Engine.horizon_ms``).
When an event of hour *h* > clock arrives on *p*, *p* enters *h*: the ops its events made
since its last record become ONE record ``(p, h)`` on the topic
``<app_id>-peer-ops``, written in the same Kafka transaction as the epoch that covers *p*'s
events up to that point (stream/state.py: a crash cannot re-make a visible record otherwise,
and a restored partition's clock is never behind a record of it that others applied). The
event, and every later event of *p*, then waits until the worker holds, for every partition
*q*, a record of an hour >= *h* (*q* has closed the hours before *h*). The worker then enters
*h* (``Engine.advance``) with the ops of every record made of events before *h*, merged and
sorted canonically; it also enters every hour some partition entered before *h*, in order, as
``replay`` does (the false-alert budget's bar is read as a day begins). Every worker reads
the whole topic (a group-less ``read_committed`` consumer, :func:`follow`) and buffers what
it has not applied yet.

A record ``(p, h)`` holds the ops of *p*'s events of hours < *h* not in an earlier record of
*p*: at the barrier of hour *x*, each partition's records are applied up to and including its
first of an hour >= *x*. For input sorted by time this gives every hour the ops of exactly
the events before it, as ``replay``, and ``replay --shards N``, do.

An idle partition would hold everyone back: its holder closes the hour the others are in
(the highest hour of any record) once the partition has had no event for
``SNOOPWATCH_IDLE_CLOSE_S`` and its consumers are at the log end, and from then on follows
the others at once until its next event. An event that arrives on it later, of an hour it
has closed, is a late event: judged with the state of the hours after it (replay would not
have applied them yet), so output can then differ from replay.

The engine is *driven* (``Engine.driven``): only :meth:`Barrier.advance_to` moves its clock.

Retention: the topic is ``cleanup.policy=delete`` with ``retention.ms`` from
``SNOOPWATCH_PEER_OPS_RETENTION_S`` (:func:`retention_ms`; 30 days), applied by
:func:`ensure_topic` to an existing topic too. A worker restoring a checkpoint needs every
record from the position stored in it onward; one whose position is below the topic's log
start (records expired before it read them) logs an error, counts
``snoopwatch_peer_ops_expired_total`` and goes on from the log start, its cross-actor state
missing those records' ops (:func:`follow`). A worker with no checkpoint yet does not build
its state from what retention left: it waits for its first partition's restore to take the
state whole, and starts at the log start only if no checkpoint holds any.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import zlib
from collections import deque
from typing import Any

from detectors.engine import CANONICAL, HOUR_MS, Engine, Op
from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.metrics import Metrics
from stream.pipeline import home_partition

log = logging.getLogger("snoopwatch")

# An event more than this past the wall clock does not move its partition's clock (valid
# input reaches 2199; see Engine.horizon_ms).
FUTURE_SLACK_MS = 86_400_000
PEER_OPS_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def peer_ops_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-peer-ops"


def retention_ms(settings: Settings) -> int:
    """``retention.ms`` of the peer-ops topic (``SNOOPWATCH_PEER_OPS_RETENTION_S``; 0: keep
    every record for ever, as Kafka's -1). It must be far longer than any checkpoint can be
    old when it is restored: an outage, or the input stopping (no epochs are written then).

    >>> [retention_ms(Settings(peer_ops_retention_s=s)) for s in (30 * 86400, 3600, 0)]
    [2592000000, 3600000, -1]
    """
    seconds = settings.peer_ops_retention_s
    return -1 if seconds == 0 else max(1, round(seconds * 1000))


def topic_configs(settings: Settings) -> dict[str, str]:
    """The peer-ops topic's configuration: deleted by age, not compacted (its keys never
    repeat, so compaction would keep every record for ever)."""
    return {"cleanup.policy": "delete", "retention.ms": str(retention_ms(settings)),
            "max.message.bytes": str(PEER_OPS_MAX_MESSAGE_BYTES)}


def encode_record(ops: list[Op]) -> bytes:
    return zlib.compress(pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL), 1)


def record_key(partition: int, hour: int) -> bytes:
    return f"{partition}:{hour}".encode()


class Barrier:
    """One worker's side of the barrier: its partitions' clocks and unpublished ops, and the
    records of every partition it has not applied yet.

    ``n`` is the by-actor topic's partition count. Not thread-safe; every method is
    synchronous (the agents, the follower and the checkpoint call them between awaits).
    """

    def __init__(self, engine: Engine, n: int, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        engine.driven = True
        self.n = n
        # Partitions this worker holds: clock (hour entered) and ops not in a record yet.
        self.clock: dict[int, int] = {}
        self.pending: dict[int, list[Op]] = {}
        # p -> (hour, ops): the record p made on entering hour, sent with the next epoch.
        self.outbox: dict[int, tuple[int, list[Op]]] = {}
        # Every partition: the hour of its last committed record; records not applied yet.
        self.closed = [-1] * n
        self.records: list[deque[tuple[int, list[Op]]]] = [deque() for _ in range(n)]
        self.prev = [-1] * n  # hour of each partition's last applied record
        # Hours some partition entered (a record's hour), not entered here yet: a record is
        # applied at the first of them at or past its hour, which may be before its own.
        self.hours: set[int] = set()
        self.applied = -1  # the engine's clock: the last hour entered (== engine.clock_hour)
        self.offset = 0  # the follower's position on the peer-ops topic (next to read)
        self.generation = 0  # bumped when a checkpoint's state replaces ours (re-seek)
        self.parked: dict[int, tuple[int, list[Op]]] = {}  # revoked: (clock, pending)
        self.assigned = False  # a partition was restored here (with a checkpoint or none)
        # Partitions closed while idle, with no event since: they follow the others at once.
        self.idle: set[int] = set()
        self.moved = asyncio.Event()  # set when the engine entered an hour (held events go)
        self.news = asyncio.Event()  # set when a partition closed a new hour (idle ones follow)
        self.wanted = asyncio.Event()  # set when a record waits for an epoch
        self.now_ms = lambda: int(time.time() * 1000)

    def resize(self, n: int) -> None:
        """The by-actor topic has ``n`` partitions (its real count, known at assignment: it
        can differ from SNOOPWATCH_PARTITIONS if the topic was made otherwise). The barrier
        waits for every partition, so it must count the ones that exist."""
        if n == self.n or n < 1:
            return
        if not self.blank:
            log.error("snoopwatch: the by-actor topic now has %d partitions, the peer-ops "
                      "barrier counted %d: restart the workers", n, self.n)
        keep = min(n, self.n)
        self.closed = self.closed[:keep] + [-1] * (n - keep)
        self.records = self.records[:keep] + [deque() for _ in range(n - keep)]
        self.prev = self.prev[:keep] + [-1] * (n - keep)
        self.n = n
        self.advance_to()

    # --- per event -------------------------------------------------------------------

    def admit(self, p: int, t: int) -> bool:
        """Whether an event of time ``t`` on partition ``p`` (held here, loaded) may be
        processed now; entering a new hour puts ``p``'s record in the outbox."""
        clock = self.clock.get(p, -1)
        h = t // HOUR_MS
        if h > clock and t <= self.now_ms() + FUTURE_SLACK_MS:
            self.enter(p, h)
            clock = h
        self.idle.discard(p)
        return self.applied >= min(h, clock)

    def enter(self, p: int, h: int) -> None:
        """``p`` enters hour ``h``: its record of the ops before it waits for the next epoch."""
        if p in self.outbox:  # (an idle close not sent yet: one record covers both)
            _, ops = self.outbox[p]
            ops.extend(self.pending.pop(p, []))
        else:
            ops = self.pending.pop(p, [])
        self.outbox[p] = (h, ops)
        self.clock[p] = h
        self.wanted.set()

    def made(self) -> None:
        """Take the ops the engine just made, to their actors' partitions' pending lists."""
        ops = self.engine.take_ops()
        if not ops:
            return
        n = self.n
        for op in ops:
            self.pending.setdefault(home_partition(op[1], n), []).append(op)

    # --- records -----------------------------------------------------------------------

    def take_outbox(self, partitions: set[int] | None) -> list[tuple[int, int, list[Op]]]:
        """The records to write in the epoch being cut (of ``partitions``, default all)."""
        out = [(p, h, ops) for p, (h, ops) in sorted(self.outbox.items())
               if partitions is None or p in partitions]
        for p, _, _ in out:
            del self.outbox[p]
        if self.metrics is not None:
            self.metrics.peer_records.inc(len(out))
        return out

    def put_back(self, records: list[tuple[int, int, list[Op]]]) -> None:
        """An epoch failed: its records go with the next one."""
        for p, h, ops in records:
            if p in self.clock:  # (still ours)
                later = self.outbox.pop(p, None)
                if later is not None:
                    ops = ops + later[1]
                    h = later[0]
                self.outbox[p] = (h, ops)
        if self.outbox:
            self.wanted.set()

    def committed(self, records: list[tuple[int, int, list[Op]]]) -> None:
        """Deliver committed records directly, without the topic (in-process tests). A worker
        takes even its own records from the topic (:func:`follow`): a partition's records
        must arrive in the order they were written, and one this worker writes after taking
        a partition over follows the ones its last holder wrote, which it may not have read
        yet."""
        for p, h, ops in records:
            self._receive(p, h, ops)
        self.advance_to()

    def receive(self, offset: int, key: bytes, value: bytes) -> None:
        """A record read from the topic at ``offset`` (ours or another worker's)."""
        if offset < self.offset:
            return
        self.offset = offset + 1
        p, h = (int(x) for x in key.decode().split(":"))
        if p < self.n and h > self.closed[p]:
            self._receive(p, h, pickle.loads(zlib.decompress(value)))

    def _receive(self, p: int, h: int, ops: list[Op]) -> None:
        if h > self.closed[p]:
            self.closed[p] = h
            self.records[p].append((h, ops))
            if h > self.applied:
                self.hours.add(h)
            self.news.set()

    def want(self) -> int:
        """The highest hour any partition has entered (what an idle one closes up to)."""
        entered = [h for h, _ in self.outbox.values()]
        return max([*self.closed, *entered])

    def advance_to(self) -> bool:
        """Enter every hour every partition has closed, in order; whether any was entered."""
        top = min(self.closed)
        if top <= self.applied:
            return False
        hours = sorted(h for h in self.hours if h <= top)
        self.hours.difference_update(hours)
        for hour in hours:
            ops: list[Op] = []
            for q in range(self.n):
                recs = self.records[q]
                while self.prev[q] < hour and recs:
                    h, more = recs.popleft()
                    ops.extend(more)
                    self.prev[q] = h
            ops.sort(key=CANONICAL)
            self.engine.advance(hour, ops)
            self.applied = hour
            if self.metrics is not None:
                self.metrics.peer_hour.set(hour * HOUR_MS / 1000)
        self.moved.set()
        return True

    # --- idle partitions ---------------------------------------------------------------

    def close_idle(self, p: int) -> bool:
        """Close the hours the others are in for ``p`` (idle, held here, loaded)."""
        want = self.want()
        if want <= self.clock.get(p, -1):
            return False
        self.enter(p, want)
        self.idle.add(p)
        if self.metrics is not None:
            self.metrics.peer_idle_closes.inc()
        return True

    # --- checkpoints, rebalances -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The barrier's state at an epoch's cut (live lists: pickle before the next event).

        ``clock`` / ``pending`` are this worker's partitions' (a restore takes its own
        partition's); the rest is the shared state's position: the records read and not
        applied, and where on the topic to read on."""
        return {"clock": dict(self.clock), "pending": self.pending,
                "closed": self.closed, "records": self.records, "prev": self.prev,
                "hours": self.hours, "applied": self.applied, "offset": self.offset}

    @property
    def blank(self) -> bool:
        """Nothing applied, nothing entered: a restored checkpoint's state may replace it."""
        return (self.applied < 0 and not self.outbox
                and all(c < 0 for c in self.clock.values()))

    def restore(self, p: int, snap: dict[str, Any] | None, whole: bool) -> None:
        """Partition ``p`` restored from an engine record's barrier state (None: none written:
        a partition never seen). ``whole``: the engine's shared state was loaded from the
        same record, so the topic's position and the unapplied records are taken too."""
        if snap is not None and whole:
            self.closed = list(snap["closed"])
            self.records = [deque(r) for r in snap["records"]]
            self.prev = list(snap["prev"])
            self.hours = set(snap.get("hours", ()))
            self.applied = snap["applied"]
            self.offset = snap["offset"]
            self.generation += 1
        self.assigned = True
        clock = -1 if snap is None else snap["clock"].get(p, -1)
        self.clock[p] = clock
        self.pending[p] = [] if snap is None else list(snap["pending"].get(p, ()))
        self.parked.pop(p, None)

    def forget(self, partitions: set[int]) -> None:
        """Revoked (after their epoch): set their clocks aside in case they come back."""
        for p in partitions:
            if p in self.clock:
                self.parked[p] = (self.clock.pop(p), self.pending.pop(p, []))
            self.outbox.pop(p, None)
            self.idle.discard(p)

    def unpark(self, p: int) -> None:
        """Given back with nobody writing to it since: as it was at the revoke."""
        parked = self.parked.pop(p, None)
        if parked is not None:
            self.clock[p], self.pending[p] = parked[0], list(parked[1])


async def ensure_topic(settings: Settings) -> str:
    """Create the peer-ops topic if missing, or bring an existing one's retention to
    :func:`topic_configs`; ``"created"``, ``"updated"`` or ``"exists"``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        return await reconcile_topic(admin, settings)
    finally:
        await admin.close()


async def reconcile_topic(admin: Any, settings: Settings, replication_factor: int = 1) -> str:
    """:func:`ensure_topic` with a started admin client."""
    from aiokafka.errors import TopicAlreadyExistsError

    name = peer_ops_topic_name(settings)
    if name not in set(await admin.list_topics()):
        # The answer carries a per-topic error code (not raised): a topic just made by
        # someone else may not be listed yet, and then exists (TOPIC_ALREADY_EXISTS).
        response = await admin.create_topics([new_topic(settings, replication_factor)])
        codes = [t[1] for t in getattr(response, "topic_errors", ()) if t[0] == name]
        if not any(codes):
            return "created"
        if codes != [TopicAlreadyExistsError.errno]:
            raise RuntimeError(f"creating the peer-ops topic {name}: error {codes}")
    return "updated" if await update_config(admin, name, topic_configs(settings)) else "exists"


async def update_config(admin: Any, topic: str, wanted: dict[str, str]) -> bool:
    """Set ``wanted`` on ``topic`` where it differs (a topic made before retention was
    compacted for ever); whether anything changed. A broker that refuses (no ALTER_CONFIGS
    right) is logged, not fatal: the barrier runs on, the topic as it was."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    current: dict[str, str] = {}
    overrides: dict[str, str] = {}
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        errors = [(r[0], r[1]) for response in described for r in response.resources if r[0]]
        for response in described:
            for resource in response.resources:
                for entry in resource[4]:
                    name, value, source = entry[0], entry[1], entry[3]
                    current[name] = value
                    if source == 1:  # DYNAMIC_TOPIC_CONFIG: set on the topic itself
                        overrides[name] = value
        if not errors and all(current.get(k) == v for k, v in wanted.items()):
            return False
        if not errors:
            # AlterConfigs (not the incremental one) replaces all of the topic's own
            # settings: keep the others (an operator's min.insync.replicas, say).
            responses = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {**overrides, **wanted})])
            errors = [(r[0], r[1]) for response in responses for r in response.resources
                      if r[0]]
    except Exception as err:  # (not authorised, say: the barrier must run regardless)
        errors = [(-1, repr(err))]
    if errors:
        log.error("snoopwatch: could not set %s on the peer-ops topic %s (%s): it keeps "
                  "its settings (%s) until this is fixed", wanted, topic, errors,
                  {k: current.get(k) for k in wanted})
        return False
    log.warning("snoopwatch: peer-ops topic %s: %s set (was %s)", topic,
                ", ".join(f"{k}={v}" for k, v in wanted.items()),
                ", ".join(f"{k}={current.get(k)}" for k in wanted))
    return True


def new_topic(settings: Settings, replication_factor: int = 1) -> Any:
    from aiokafka.admin import NewTopic

    return NewTopic(peer_ops_topic_name(settings), 1, replication_factor,
                    topic_configs=topic_configs(settings))


async def follow(settings: Settings, barrier: Barrier) -> None:
    """Read the peer-ops topic, ``read_committed``, from the barrier's position, for ever;
    hand each record to the barrier and enter the hours it completes."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import OffsetOutOfRangeError

    await ensure_topic(settings)
    # auto_offset_reset "none": a position below the log start (records expired) raises
    # instead of silently moving to the oldest record.
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="none",
                                isolation_level="read_committed",
                                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                                max_partition_fetch_bytes=PEER_OPS_MAX_MESSAGE_BYTES,
                                fetch_max_bytes=4 * PEER_OPS_MAX_MESSAGE_BYTES)
    await consumer.start()
    tp = TopicPartition(peer_ops_topic_name(settings), 0)
    try:
        consumer.assign([tp])
        generation = None
        while True:
            if generation != barrier.generation:
                generation = barrier.generation
                consumer.seek(tp, barrier.offset)
            try:
                batch = await consumer.getmany(tp, timeout_ms=500)
            except OffsetOutOfRangeError:
                start = (await consumer.beginning_offsets([tp]))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
                if not expired(barrier, start, end):
                    await asyncio.sleep(0.5)  # (waiting for a restore to take the state)
                generation = None  # seek again, to the barrier's position
                continue
            if generation != barrier.generation:
                continue  # a restore moved the position while we read: read again from it
            for msg in batch.get(tp, []):
                barrier.receive(msg.offset, msg.key, msg.value)
            if batch:
                barrier.advance_to()
    finally:
        await consumer.stop()


def expired(barrier: Barrier, start: int, end: int | None = None) -> bool:
    """The follower's position is below the topic's log start ``start``: the records before
    it expired (retention). Whether to read on from ``start`` (the barrier's position moved
    there); False: wait for a restore to take the cross-actor state whole. A position past
    the log ``end`` (the topic deleted and made again) is treated as expired too.

    A position from a checkpoint (or with records applied since) misses those records' ops
    for good: an error, counted, and the worker goes on without them (its cross-actor state
    then differs from the other workers' and replay's). A worker that has taken no
    checkpoint yet must not build its state from what retention left: it waits until a
    partition of its is restored, and starts at ``start`` only if none held a checkpoint (a
    new deployment on an old topic: every worker then starts there alike)."""
    if end is not None and barrier.offset > end:
        log.error("snoopwatch: the peer-ops position %d is past the topic's end %d (was the "
                  "topic deleted and made again?): reading it from %d; this worker's "
                  "cross-actor state can differ from the others'", barrier.offset, end, start)
        if barrier.metrics is not None:
            barrier.metrics.peer_expired.inc()
        barrier.offset = start
        return True
    if barrier.offset >= start:
        return True  # (a restore moved the position past it meanwhile)
    if barrier.generation == 0 and barrier.applied < 0:
        if not barrier.assigned:
            return False
        log.warning("snoopwatch: no checkpoint holds the cross-actor state; reading the "
                    "peer-ops topic from its log start %d (records 0-%d expired)", start,
                    start - 1)
    else:
        log.error("snoopwatch: the peer-ops records at offsets %d-%d expired before this "
                  "worker read them (its position came from a checkpoint older than "
                  "SNOOPWATCH_PEER_OPS_RETENTION_S): its cross-actor state misses their ops; "
                  "reading on from %d", barrier.offset, start - 1, start)
        if barrier.metrics is not None:
            barrier.metrics.peer_expired.inc()
    barrier.offset = start
    return True
