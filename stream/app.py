"""The faust app: topics, two thin agents, the context follower and ``/metrics``.

``ingest`` reads the input topic, validates each message (dead-lettering bad
ones with their reason and origin) and re-keys valid events by actor onto an
internal topic; ``detect`` reads that topic, so each actor's events reach the
one worker that holds that actor's state, and calls the detection core.

Events already where the re-key would put them (SPEC §1's key = actor, the default
murmur2 partitioner, equal partition counts: see :class:`Router`) are detected by
``ingest`` itself: no second produce, consume and parse for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TopicT

from detectors import core_build
from detectors.events import AccessEvent, InvalidEvent, decode_context, decode_event
from detectors.settings import Settings
from stream import web as webguard
from stream.deadletters import ContextDeadLetters, DeadLetters
from stream.kafka_security import broker_credentials, client_kwargs
from stream.kafka_security import describe as describe_security
from stream.merge import InputMerge
from stream.metrics import CONTENT_TYPE, Metrics
from stream.peerops import Barrier, follow
from stream.pipeline import (
    GC_THRESHOLDS,
    Pipeline,
    Rejected,
    dead_letter,
    encode,
    keyed_home,
)
from stream.shared import SOURCE_HEADER
from stream.sinks.ocsf import finding
from stream.sources import Source, parse_sources, source_for
from stream.state import ActorStore

TAKE_MAX = 256  # events per batch an agent takes
TAKE_WITHIN_S = 0.005  # the longest a batch waits to fill: added latency when traffic is low


def source_header(msg: Any, index: int | None = None) -> bytes:
    """``topic:partition:offset`` of an input message (a by-actor message's origin), plus
    ``:index`` for the index-th record of a message of a non-SPEC format."""
    tail = "" if index is None else f":{index}"
    return f"{msg.topic}:{msg.partition}:{msg.offset}{tail}".encode()


# A record's position among a multi-record message's records, in the watermark of its input
# partition: offset * RECORD_SLOTS + index (a message within the size limit holds fewer).
RECORD_SLOTS = 1 << 20


def input_source(msg: Any, input_topic: str) -> tuple[Any, int] | None:
    """(watermark key, position) from a by-actor message's source header.

    SPEC events of the input topic keep the key they always had (the input partition);
    other topics and multi-record formats key by ``topic:partition`` and order records of
    one message by their index, so the second record of a message is not taken for the
    first forwarded again.
    """
    for name, value in msg.headers or ():
        if name == SOURCE_HEADER:
            parts = value.decode().split(":")
            if len(parts) < 3:
                return None
            topic, part, off = parts[0], int(parts[1]), int(parts[2])
            if len(parts) == 3 and topic == input_topic:
                return part, off
            index = int(parts[3]) if len(parts) > 3 else 0
            return f"{topic}:{part}", off * RECORD_SLOTS + min(index, RECORD_SLOTS - 1)
    return None


log = logging.getLogger("snoopwatch")
METADATA_MAX_AGE_MS = 30_000
CONTEXT_RETRY_S = 5.0
IDLE_CHECK_S = 0.5  # how often idle partitions are looked for (peer-ops barrier)


class CheckpointPacing:
    """Spaces checkpoints out when they are expensive.

    A checkpoint pickles every actor changed since the last one: on a busy worker with many
    actors that is most of them, each time. The next one is due after the checkpoint interval
    or, if longer, after ``took / MAX_SHARE`` (at most ``MAX_STRETCH`` intervals): checkpoints
    then take at most ~``MAX_SHARE`` of the worker's time, and a longer gap lets each write
    cover more events per actor. Nothing is weakened: events stay unacked until a checkpoint
    holds them; a crash re-reads a few seconds more.

    >>> p = CheckpointPacing(1.0)
    >>> p.took(0.2); round(p.gap, 1)
    4.0
    >>> p.took(5.0); p.gap
    10.0
    """

    MAX_SHARE = 0.05
    MAX_STRETCH = 10

    def __init__(self, interval_s: float) -> None:
        self.interval = interval_s
        self.gap = interval_s
        self.last = time.monotonic()

    def due(self) -> bool:
        # The timer fires every interval; a small slack keeps its jitter from skipping a turn.
        return time.monotonic() - self.last >= self.gap - 0.25 * self.interval

    def took(self, seconds: float) -> None:
        self.last = time.monotonic()
        self.gap = min(max(self.interval, seconds / self.MAX_SHARE),
                       self.MAX_STRETCH * self.interval)


class Router:
    """Which input events the ingest agent may detect in place, skipping the re-key hop.

    An event is detected in place when it is keyed by its actor (SPEC §1), its actor's
    by-actor partition (murmur2 of the actor, as the producer chose) is the input partition it
    arrived on, both topics have the same partition count, and this worker holds that
    partition of both (faust assigns co-partitioned topics together). Then every event of
    that actor takes this path, in input order: per-actor order, and the input-offset
    watermark of stream/state.py, hold as with the hop alone. An event keyed otherwise takes
    the hop even on its home partition: detected here it would overtake the same actor's
    events hopping from the other partitions (an unkeyed backlog drained: ~73 % of its
    events reached detection after a later event of their actor, ~50 % with every one
    through the hop, 0-3 % through the hop merged by event time: stream/merge.py;
    ``tests/test_reliability.py``, ``snoopwatch_events_late_total``).
    """

    def __init__(self) -> None:
        self.partitions: int | None = None
        self.home: frozenset[int] = frozenset()

    def update(self, assignment: Any, input_partitions: int | None,
               by_actor_partitions: int | None, input_topic: str, by_actor_topic: str) -> None:
        """Recompute after a rebalance (an empty assignment: nothing in place)."""
        same = input_partitions is not None and input_partitions == by_actor_partitions
        self.partitions = input_partitions if same else None
        mine: dict[str, set[int]] = {input_topic: set(), by_actor_topic: set()}
        for tp in assignment:
            if tp.topic in mine:
                mine[tp.topic].add(tp.partition)
        self.home = frozenset(mine[input_topic] & mine[by_actor_topic]) if same else frozenset()

    def in_place(self, actor: str, partition: int, key: bytes | None) -> bool:
        return (partition in self.home and self.partitions is not None
                and keyed_home(actor, key, partition, self.partitions))


class OrderedAcks:
    """Acks each partition's messages in offset order, whatever order they are done in.

    faust commits the first run of consecutive acked offsets, and keeps a hole at its head
    only if it committed before and the hole is wider than one offset (faust 0.15,
    ``Consumer._new_offset``). A message acked while an earlier one of its partition still
    waits (for its epoch, or at the peer-ops barrier: a dead letter is done at once) could
    let the committed offset pass the waiting one, which a crash would then lose. A message
    taken before a rebalance is not acked at all: faust seeks every partition back to its
    committed offset after a rebalance, so it is read again, and acked then.
    """

    def __init__(self) -> None:
        self.waiting: dict[Any, deque[Any]] = {}  # tp -> its taken messages, in order
        self.tracked: dict[int, Any] = {}  # id -> event, for the events in ``waiting``
        self.ready: set[int] = set()  # ids of tracked events done, behind one that is not
        # (tp, offset) -> an event fetched before a rebalance, waiting for its copy (later)
        self.copies: dict[tuple[Any, int], Any] = {}

    def taken(self, event: Any) -> None:
        self.waiting.setdefault(event.message.tp, deque()).append(event)
        self.tracked[id(event)] = event

    def done(self, event: Any) -> None:
        if self.tracked.get(id(event)) is not event:
            return  # taken before a rebalance: read again from the committed offset
        self.ready.add(id(event))
        stale = self.copies.pop((event.message.tp, event.message.offset), None)
        if stale is not None and self.tracked.get(id(stale)) is stale:
            self.ready.add(id(stale))  # its copy read again is done: it may go too
        self._release(self.waiting[event.message.tp])

    def later(self, event: Any, ours: bool) -> None:
        """``event``, fetched before a rebalance, is left to its copy read again from the
        committed offset: acked (in order) when that copy is done, so that no hole lets
        faust commit past it first. Of a partition no longer ``ours``, nothing more is
        acked here."""
        if self.tracked.get(id(event)) is not event:
            return
        if ours:
            self.copies[event.message.tp, event.message.offset] = event
        else:
            self.forget([event.message.tp])

    def _release(self, waiting: deque[Any]) -> None:
        while waiting and id(waiting[0]) in self.ready:
            head = waiting.popleft()
            del self.tracked[id(head)]
            self.ready.discard(id(head))
            head.ack()

    def forget(self, tps: Any) -> None:
        """Revoked partitions: what was taken of them is read again after the rebalance."""
        for tp in tps:
            for event in self.waiting.pop(tp, ()):
                self.tracked.pop(id(event), None)
                self.ready.discard(id(event))
                self.copies.pop((tp, event.message.offset), None)


@dataclass
class Snoopwatch:
    """The faust app and the handles tests and the CLI need."""

    app: faust.App
    settings: Settings
    pipeline: Pipeline
    input_topic: TopicT
    by_actor_topic: TopicT
    alerts_topic: TopicT
    dlq_topic: TopicT
    ingest: Any
    detect: Any
    store: ActorStore | None = None
    router: Router | None = None
    dead_letters: DeadLetters | None = None
    context_ready: asyncio.Event | None = None
    barrier: Barrier | None = None


_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def _worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    """faust's worker consumer, with the fetch wait of our settings (faust fixes 1.5 s)."""
    consumer = _create_worker_consumer(self, transport)
    wait = getattr(self.app, "fetch_max_wait_ms", None)
    if wait is not None:
        consumer._fetch_max_wait_ms = wait  # read when the consumer starts its fetcher
    return consumer


# faust has no setting for it; the app carries ours (create_app), other apps are unchanged.
AIOKafkaConsumerThread._create_worker_consumer = _worker_consumer


async def _taken(stream: Any) -> AsyncIterator[Any]:
    """The stream's events, taken in batches and left unacked (the agents ack them).

    An agent resumed once per batch rather than once per event drains 14-22 % faster (side
    by side, ``make bench`` (c) on 200k events); a batch waits at most ``TAKE_WITHIN_S`` for more.
    faust's ``take_events`` acks each batch once it is worked through, which would commit
    offsets before the checkpoint holding their effect: that ack is switched off here.
    """
    unacked = stream.noack()
    unacked.ack = _leave_unacked
    async for batch in unacked.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
        for event in batch:
            yield event


async def _leave_unacked(event: Any) -> bool:
    return False


def _raw_topic(app: faust.App, *names: str, **kwargs: Any) -> TopicT:
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", **kwargs)


def create_app(settings: Settings | None = None, metrics: Metrics | None = None) -> Snoopwatch:
    """Build the worker's faust app from one settings object."""
    s = settings or Settings.from_env()
    # The web server's guard (stream/web.py): refused here, before anything starts, if it
    # would be open beyond this machine without a token.
    token = webguard.load_token(s)
    web_options = {"middlewares": [webguard.auth_middleware(token)]} if token else {}
    pipeline = Pipeline(s, metrics)
    app = faust.App(
        s.app_id,
        broker=s.broker,
        # TLS/SASL (SPEC §3): faust hands these to its producer, consumer and admin client.
        broker_credentials=broker_credentials(s),
        datadir=s.data_dir,
        store="memory://",
        autodiscover=False,
        topic_partitions=s.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_s,
        # detect's acks come from checkpoints (stream/state.py), not from the stream: do not
        # wait for them at shutdown (the closing checkpoint writes the state and acks).
        stream_wait_empty=False,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        # A worker that joins its group before the broker's metadata shows its new topics
        # is assigned nothing until the next metadata refresh: faust's 5 min, seen on a
        # freshly started broker. A refresh every 30 s costs the broker nothing.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        web_bind=s.web_host,
        web_host=s.web_host,
        web_port=s.web_port,
        web_ssl_context=webguard.ssl_context(s),
        web_application_options=web_options,
        # faust's own pages: the router one tells anyone the cluster's layout; not needed.
        web_router_enabled=False,
        web_graph_enabled=False,
    )
    app.fetch_max_wait_ms = s.fetch_max_wait_ms  # read by _worker_consumer
    # Input topics and their formats (SNOOPWATCH_SOURCES; default: SPEC events on the input
    # topic). Formats are checked here, so a bad mapping file stops the worker at start.
    sources: dict[str, Source] = {
        topic: source_for(fmt, cloudtrail_customer=s.cloudtrail_customer)
        for fmt, topic in parse_sources(s.sources, s.input_topic)}
    input_topic = _raw_topic(app, *sources)
    ocsf_topic = _raw_topic(app, s.ocsf_topic) if s.ocsf_topic else None
    by_actor = _raw_topic(app, f"{s.app_id}-events-by-actor", partitions=s.partitions,
                          internal=True)
    alerts_topic = _raw_topic(app, s.alerts_topic)
    dlq_topic = _raw_topic(app, s.dlq_topic)

    store = ActorStore(s, pipeline.engine, pipeline.metrics)
    # An epoch commits only once the alerts of the events it covers are delivered.
    store.before_commit = lambda: app.producer.flush()
    acks = OrderedAcks()
    store.ack = acks.done
    # The peer-ops barrier (stream/peerops.py): cross-actor state as one engine's.
    barrier = (Barrier(pipeline.engine, s.partitions, pipeline.metrics) if s.peer_barrier
               else None)
    store.barrier = barrier
    # By-actor partition -> its events waiting at the barrier (or behind one that is), in
    # order; unacked. Per partition, so that a partition waiting for the others does not
    # stop the agent from taking theirs (one agent reads every partition).
    held: dict[int, deque[tuple[Any, ...]]] = {}
    last_seen: dict[int, float] = {}  # by-actor partition -> monotonic time of its last event
    taken: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset after the last taken
    assigned_at = [time.monotonic()]
    if barrier is not None:
        pipeline.metrics.peer_held.set_function(lambda: sum(len(q) for q in held.values()))
    dead_letters = DeadLetters(s, dlq_topic)

    async def send_context_dead_letter(key: bytes | None, value: bytes, origin: bytes) -> None:
        await (await dlq_topic.send(key=key, value=value, headers=[(SOURCE_HEADER, origin)]))

    background: set[asyncio.Future] = set()  # (referenced until done)

    def in_background(coro: Any) -> None:
        """Run ``coro`` beside the agents (a rebalance callback must not wait for it)."""
        task = asyncio.ensure_future(coro)
        background.add(task)
        task.add_done_callback(background.discard)
    # Sent by the holder of by-actor partition 0 only (on_assigned, on_revoked).
    context_dead_letters = ContextDeadLetters(s, send_context_dead_letter)

    async def send_context_dead_letters() -> None:
        try:
            await context_dead_letters.flush()
        except Exception:  # broker away: the next assignment or malformed entry retries
            log.warning("snoopwatch: dead-lettering context entries failed", exc_info=True)
    # Set once the context topic is read to its end as of the start: events judged before
    # it would be judged without watchlists a restart would have (a different verdict).
    context_ready = asyncio.Event()
    # Cleared while a rebalance runs (revoke to assignment). An agent still working through a
    # batch taken before it waits, then handles the rest only if its partition is still ours:
    # else an input event would take the hop to a partition this worker no longer detects in
    # place, acked, and race the new holder's in-place detection of later events.
    settled = asyncio.Event()
    settled.set()

    def current(msg: Any) -> Callable[[], bool]:
        """Whether ``msg`` is still of the last assignment. One fetched before it is read
        again from the committed offset (unacked, it is not past it) by its partition's
        holder, perhaps this worker. The rest of a batch taken before a rebalance is worked
        through after it: a dead letter sent for such a message would come after the
        holder's read-back of the dead-letter topic (DeadLetters.load), which then would
        not stop the copy read again from being dead-lettered too."""
        generation = getattr(msg, "generation_id", None)
        return lambda: generation is None or generation == app.consumer_generation_id

    async def still_ours(msg: Any) -> bool:
        await settled.wait()
        return (msg.topic, msg.partition) in app.consumer.assignment()

    async def arrived(event: Any) -> bool:
        """Take ``event`` in (once the context is read); False if, after a rebalance, its
        partition is no longer ours: left unacked, its new holder reads it again."""
        if not context_ready.is_set():
            await context_ready.wait()
        acks.taken(event)
        return settled.is_set() or await still_ours(event.message)

    async def send_dead_letter(event: Any, record: dict[str, Any]) -> bool:
        """Dead-letter ``event``'s message as ``record``; False if it was fetched before a
        rebalance (see ``current``): left to its copy read again, and acked with it."""
        msg = event.message
        if await dead_letters.send(msg.key, record, encode(record), current(msg)) is None:
            acks.later(event, await still_ours(msg))
            return False
        return True
    router = Router()
    # Events that take the hop, forwarded in event-time order across the input partitions
    # (stream/merge.py); one forwarder at a time, so that the order is the merge's.
    merge = InputMerge(s.input_merge_wait_s)
    forwarding = asyncio.Lock()
    # Input partitions' first offsets, as of their assignment: one emptied by retention,
    # never committed by the group, has nothing unread although its high-water mark is > 0.
    log_starts: dict[Any, int] = {}
    recent: deque[dict[str, Any]] = deque(maxlen=webguard.RECENT_ALERTS)
    input_name, by_actor_name = s.input_topic, by_actor.get_topic_name()
    positions = pipeline.metrics.input_offsets  # snoopwatch_input_offset

    async def detect_one(ev: AccessEvent, event: Any, offset: int | None,
                         source: tuple[int, int] | None, started: float) -> Any:
        """Admit and detect one valid event of a partition this worker holds; its alert.

        ``event`` is acked by the checkpoint that holds its effect (stream/state.py).
        """
        store.unacked.append(event)
        if store.admit(ev.actor, ev.event_id, event.message.partition, offset,
                       source) != "process":
            return None
        _, alert = pipeline.detect(ev, started)
        if barrier is not None:
            barrier.made()  # (before any await: the ops are this event's)
        if alert is not None:
            recent.append(alert)
            await alerts_topic.send(key=ev.actor.encode(), value=encode(alert))
            if ocsf_topic is not None:
                await ocsf_topic.send(key=ev.actor.encode(), value=encode(finding(alert)))
        return alert

    async def gated(p: int, ev: AccessEvent, event: Any, offset: int | None,
                    source: tuple[int, int] | None, started: float) -> Any:
        """detect_one, or hold the event of by-actor partition ``p`` at the barrier."""
        last_seen[p] = time.monotonic()
        if barrier is not None and (held.get(p) or not barrier.admit(p, ev.time_ms)):
            held.setdefault(p, deque()).append((ev, event, offset, source, started))
            return None
        return await detect_one(ev, event, offset, source, started)

    # The agents yield nothing: a yielding agent costs faust a debug log line (formatted
    # whatever the level) and a reply check per event.
    @app.agent(input_topic, name="ingest")
    async def ingest(stream: Any) -> None:
        # Manual acks: an event detected in place is acked by the checkpoint that holds it;
        # the others as soon as they are forwarded or dead-lettered.
        async for event in _taken(stream):
            if not await arrived(event):
                continue
            msg = event.message
            started = time.perf_counter()
            part = msg.partition
            positions[msg.topic, part] = taken[msg.topic, part] = msg.offset + 1
            source = {"topic": msg.topic, "partition": part, "offset": msg.offset}
            src = sources.get(msg.topic)
            if src is not None and src.format != "spec":
                # Possibly several records, forwarded together at the earliest one's time.
                outs = pipeline.ingest_from(src, event.value, source, msg.key)
                merge.put(msg.tp, min((o.time_ms for o in outs if isinstance(o, AccessEvent)),
                                      default=-1), (event, outs))
                await forward_merged()
                continue
            out = pipeline.ingest(event.value, source, key=msg.key)
            if isinstance(out, Rejected):
                if await send_dead_letter(event, out.record):
                    acks.done(event)
            elif msg.topic == input_name and router.in_place(out.actor, part, msg.key):
                # The by-actor topic would put this event on partition ``part``, which this
                # worker holds too: detect it here and skip the hop (SPEC §1's key = actor).
                if part not in store.loaded and not await store.ensure_loaded(part):
                    continue  # revoked while its state was read: the new owner has it
                await gated(part, out, event, None, (part, msg.offset), started)
            else:
                merge.put(msg.tp, out.time_ms, (event, out))
                await forward_merged()

    def unread(tp: Any) -> bool:
        """Whether input partition ``tp`` has events this worker has not taken yet."""
        try:
            end = app.consumer.highwater(tp)
        except Exception:  # not (or no longer) assigned to the fetcher: unknown
            end = None
        if end is None:
            return True
        done = getattr(app.consumer, "_committed_offset", {}).get(tp) or 0
        return end > max(taken.get(tp, 0), done, log_starts.get(tp) or 0)

    async def learn_log_starts(tps: list[Any]) -> None:
        try:
            log_starts.update(await app.consumer.earliest_offsets(*tps))
        except Exception as err:  # rebalancing, broker away: unread() stays cautious
            log.debug("snoopwatch: input log starts not read: %r", err)
            return
        if settled.is_set():
            await forward_merged()  # (what waited for an emptied partition goes now)

    async def forward_merged() -> None:
        """Forward what the merge gives out (stream/merge.py), in its order."""
        async with forwarding:
            while (item := merge.next(unread)) is not None:
                await forward(*item)

    async def forward(event: Any, out: AccessEvent | list[AccessEvent | Rejected]) -> None:
        msg = event.message
        if isinstance(out, AccessEvent):
            # Re-keyed as the original bytes (detect decodes them the same way); the
            # origin rides along in a header, for dedup and ``snoopwatch audit``.
            await by_actor.send(key=out.actor.encode(), value=event.value,
                                headers=[(SOURCE_HEADER, source_header(msg))])
            acks.done(event)
            return
        # Each record is forwarded as its SPEC event (or dead-lettered), and the message is
        # acked once all of them are sent.
        for index, one in enumerate(out):
            if isinstance(one, Rejected):
                if not await send_dead_letter(event, one.record):
                    return  # (all of it read again)
            else:
                await by_actor.send(key=one.actor.encode(), value=encode(one.to_dict()),
                                    headers=[(SOURCE_HEADER, source_header(msg, index))])
        acks.done(event)

    if s.input_merge_wait_s > 0:
        @app.timer(interval=s.input_merge_wait_s / 2, name="snoopwatch.merge")
        async def forward_waited() -> None:
            # Held events whose wait ran out go even when no new event comes to send them.
            if merge.held and settled.is_set():
                await forward_merged()

    @app.agent(by_actor, name="detect")
    async def detect(stream: Any) -> None:
        # Manual acks: a message is acked (its offset committable) only once a checkpoint
        # holds its effect on the actor's state (stream/state.py).
        async for event in _taken(stream):
            if not await arrived(event):
                continue
            msg = event.message
            started = time.perf_counter()
            taken[msg.topic, msg.partition] = msg.offset + 1
            if msg.partition not in store.loaded and not await store.ensure_loaded(
                    msg.partition):
                continue  # revoked while its state was read: the new owner processes it
            try:
                ev = decode_event(event.value)
            except InvalidEvent as err:  # only if something else wrote to our internal topic
                pipeline.metrics.dead_lettered.labels(reason=err.reason).inc()
                source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
                rec = dead_letter(event.value, err, source, msg.key,
                                  redactor=pipeline.redactor)
                if await send_dead_letter(event, rec):
                    store.unacked.append(event)
                continue
            await gated(msg.partition, ev, event, msg.offset, input_source(msg, input_name),
                        started)

    pacing = CheckpointPacing(s.checkpoint_interval_s)

    @app.timer(interval=s.checkpoint_interval_s, name="snoopwatch.checkpoint")
    async def checkpoint_state() -> None:
        if not pacing.due():
            return
        started = time.perf_counter()
        try:
            await store.checkpoint()
        except Exception:  # broker away: the events stay unacked and are retried next time
            log.warning("snoopwatch: checkpoint failed; retrying", exc_info=True)
        pacing.took(time.perf_counter() - started)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        consumer = app.consumer
        assigned_at[0] = time.monotonic()
        if any(tp.topic == by_actor_name and tp.partition == 0 for tp in consumer.assignment()):
            context_dead_letters.become_sender()
            in_background(send_context_dead_letters())
        if barrier is not None:
            barrier.resize(consumer.topic_partitions(by_actor_name) or barrier.n)
            barrier.moved.set()  # (held events of partitions gone elsewhere are dropped)
        inputs = [tp for tp in consumer.assignment() if tp.topic in sources]
        merge.holding(inputs)
        if inputs and s.input_merge_wait_s > 0:
            in_background(learn_log_starts(inputs))
        try:
            if s.detect_in_place:
                router.update(consumer.assignment(), consumer.topic_partitions(input_name),
                              consumer.topic_partitions(by_actor_name), input_name,
                              by_actor_name)
        finally:
            settled.set()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        settled.clear()
        # (before the next sender is assigned: it reads what this one committed)
        await context_dead_letters.resign()
        router.update(set(), None, None, input_name, by_actor_name)
        merge.drop(revoked)  # (unacked: read again from the committed offset)
        merge.holding(())
        pipeline.metrics.forget_input_offsets({(tp.topic, tp.partition) for tp in revoked})
        dead_letters.forget()
        # Both topics: partition p of the input topic is detected in place into the state
        # of by-actor partition p.
        mine = {tp.partition for tp in revoked if tp.topic in (input_name, by_actor_name)}
        if mine:
            await store.revoke(mine)
        # (after the revoke's epoch acked what it covers) The rest is read again from the
        # committed offset once the rebalance ends, and acked then. Events held at the
        # barrier stay, in order: a partition given back goes on with them (their copies
        # read again are skipped as already applied), one gone elsewhere drops them
        # (release_held). Dropped here, the rest of a batch taken before the rebalance
        # would overtake them, and they would then be skipped as forwarded again.
        acks.forget(revoked)

    if barrier is not None:
        @app.task
        async def follow_peer_ops() -> None:
            while True:  # every record of every partition; a failed read is retried
                try:
                    await follow(s, barrier)
                except Exception:
                    log.warning("snoopwatch: reading the peer-ops topic failed; retrying in "
                                "%gs", CONTEXT_RETRY_S, exc_info=True)
                    await asyncio.sleep(CONTEXT_RETRY_S)

        @app.task
        async def publish_peer_ops() -> None:
            # A partition that entered a new hour waits for its record, which an epoch
            # carries: one is written at once rather than at the next checkpoint interval.
            while True:
                await barrier.wanted.wait()
                barrier.wanted.clear()
                if not barrier.outbox:
                    continue
                try:
                    await store.checkpoint()
                except Exception:
                    log.warning("snoopwatch: checkpoint for the peer-ops barrier failed; "
                                "retrying", exc_info=True)
                    await asyncio.sleep(1.0)
                    barrier.wanted.set()

        @app.task
        async def release_held() -> None:
            # Held events go, in order per partition, once the engine has entered their hour.
            while True:
                await barrier.moved.wait()
                barrier.moved.clear()
                for p in list(held):
                    waiting = held[p]
                    while waiting:
                        ev, event, offset, source, started = waiting[0]
                        msg = event.message
                        ours = await still_ours(msg)
                        if ours and p not in store.loaded:
                            ours = await store.ensure_loaded(p)
                        if not ours:  # unacked: its new holder reads it again
                            waiting.clear()
                            break
                        if not barrier.admit(p, ev.time_ms):
                            break
                        waiting.popleft()
                        # The wait is the barrier's (its own histogram); the processing
                        # latency, which the SOC's latency alert reads, starts now.
                        now = time.perf_counter()
                        pipeline.metrics.peer_wait.observe(now - started)
                        await detect_one(ev, event, offset, source, now)
                    if not waiting:
                        held.pop(p, None)

        @app.task
        async def close_idle_partitions() -> None:
            # Every IDLE_CHECK_S, and at once when a partition closes a new hour (an idle
            # partition follows the others without waiting for the next look).
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(barrier.news.wait(), IDLE_CHECK_S)
                barrier.news.clear()
                if not settled.is_set() or not context_ready.is_set():
                    continue
                try:
                    await close_idle(app.consumer)
                except Exception as err:  # rebalancing, broker away: next time
                    log.debug("snoopwatch: idle partitions not closed: %r", err)

        async def close_idle(consumer: Any) -> None:
            """Close the others' hour for partitions with no new event for
            SNOOPWATCH_IDLE_CLOSE_S and nothing left to read (stream/peerops.py)."""
            want = barrier.want()
            if want < 0:
                return
            assignment = consumer.assignment()
            now = time.monotonic()
            quiet = [tp.partition for tp in assignment if tp.topic == by_actor_name
                     and barrier.clock.get(tp.partition, -1) < want
                     and tp.partition not in barrier.outbox and not held.get(tp.partition)
                     and (tp.partition in barrier.idle or now - last_seen.get(
                         tp.partition, assigned_at[0]) >= s.idle_close_s)]
            if not quiet:
                return
            tps = [tp for tp in assignment if tp.partition in quiet
                   and tp.topic in (input_name, by_actor_name)]
            ends = await consumer.highwaters(*tps)
            starts = await consumer.earliest_offsets(*tps)
            done = getattr(consumer, "_committed_offset", {})
            behind = {tp.partition for tp in tps if (ends.get(tp) or 0) > max(
                taken.get((tp.topic, tp.partition), 0), done.get(tp) or 0, starts.get(tp) or 0)}
            for p in quiet:
                if p in behind or held.get(p) or barrier.clock.get(p, -1) >= barrier.want():
                    continue
                if p not in store.loaded and not await store.ensure_loaded(p):
                    continue
                if barrier.close_idle(p):
                    log.debug("snoopwatch: partition %d idle: closed up to hour %d", p,
                              barrier.clock[p])

    @app.task
    async def fence_dead_self() -> None:
        # At start, not at the first checkpoint: the transaction a previous run under the
        # same SNOOPWATCH_WORKER_ID left open holds restores and every worker's barrier.
        while True:
            try:
                await store.fence()
                return
            except Exception:
                log.warning("snoopwatch: starting the checkpoint producer failed; retrying "
                            "in %gs", CONTEXT_RETRY_S, exc_info=True)
                await asyncio.sleep(CONTEXT_RETRY_S)

    @app.service
    class StateCloser(faust.Service):
        async def on_stop(self) -> None:
            try:
                await store.checkpoint()
            finally:
                await store.stop()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(pipeline.metrics.exposition(), content_type=CONTENT_TYPE)

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/alerts")
    async def alerts_page(web: Any, request: Any) -> Any:
        # The alerts this worker raised lately, newest first; event values escaped.
        return web.html(webguard.alerts_page(reversed(recent)),
                        headers=dict(webguard.PAGE_HEADERS))

    @app.task
    async def follow_context() -> None:
        # Once per start: whether this worker runs the compiled core (detectors/build.py).
        log.info("snoopwatch: detection core %s; Kafka at %s, %s", core_build(), s.broker,
                 describe_security(s))
        while True:  # the agents wait for the context: a failed read is retried, not skipped
            try:
                await _follow_context(s, pipeline, context_dead_letters, context_ready)
            except Exception:
                log.warning("snoopwatch: reading the context topic failed; retrying in %gs",
                            CONTEXT_RETRY_S, exc_info=True)
                await asyncio.sleep(CONTEXT_RETRY_S)

    # --- Consumer lag per partition (issue 5): snoopwatch_consumer_lag_messages ---------------
    from stream.lag import LAG_INTERVAL_S, export_lag

    lag_topics = {*sources, by_actor.get_topic_name()}

    @app.timer(interval=LAG_INTERVAL_S, name="snoopwatch.consumer_lag")
    async def export_consumer_lag() -> None:
        await export_lag(app, pipeline.metrics, lag_topics)
    # --- end consumer lag ---------------------------------------------------------------------

    return Snoopwatch(app, s, pipeline, input_topic, by_actor, alerts_topic, dlq_topic,
                      ingest, detect, store, router, dead_letters, context_ready, barrier)


async def _follow_context(s: Settings, pipeline: Pipeline, once: ContextDeadLetters,
                          ready: asyncio.Event | None = None) -> None:
    """Read the whole compacted context topic, in every worker, from the beginning.

    Every worker needs every watchlist entry (a VIP customer can be read by any
    actor), so this is a group-less consumer of all partitions, not an agent. ``ready`` is
    set once the topic is read up to its end as of the start (the agents wait for it);
    malformed entries are dead-lettered once (stream/deadletters.py).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from stream.topics import topic_partitions

    kafka = client_kwargs(s)
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(s.context_topic, 1, 1,
                                                topic_configs={"cleanup.policy": "compact"})])
        parts = (await topic_partitions(admin, [s.context_topic]))[s.context_topic]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**kafka, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    tps = [TopicPartition(s.context_topic, p) for p in parts]
    try:
        await once.start(tps)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        behind = {tp for tp in tps if ends[tp] > 0}
        while True:
            if ready is not None and not behind and not ready.is_set():
                ready.set()
                log.info("snoopwatch: context topic read to its end; judging events")
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, msgs in batch.items():
                for msg in msgs:
                    await _context_entry(msg, tp, pipeline, once)
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
    finally:
        await consumer.stop()
        await once.stop()


async def _context_entry(msg: Any, tp: Any, pipeline: Pipeline,
                         once: ContextDeadLetters) -> None:
    key = None if msg.key is None else msg.key.decode("utf-8", "replace")
    try:
        entry = decode_context(msg.value, key)
    except InvalidEvent as err:
        pipeline.metrics.context_dead_lettered.labels(reason=err.reason).inc()
        if once.already(msg.partition, msg.offset):
            return  # dead-lettered by an earlier start
        source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
        await once.offer(tp, msg.offset, msg.key, encode(
            dead_letter(msg.value or b"", err, source, msg.key, redactor=pipeline.redactor)),
            f"{msg.topic}:{msg.partition}:{msg.offset}".encode())
        return
    if entry is not None:
        pipeline.engine.apply_context(entry)
        pipeline.metrics.context_entries.inc()


def run_worker(settings: Settings | None = None) -> None:
    """``snoopwatch worker``: run one faust worker until interrupted."""
    from faust.worker import Worker

    from stream.kafka_security import check_connection

    s = settings or Settings.from_env()
    sw = create_app(s)  # first: a bad setting or file is reported before any connection
    # Pre-flight: faust would retry a refused login or an untrusted certificate forever.
    asyncio.run(check_connection(s))
    worker = Worker(sw.app, loglevel=sw.settings.log_level)
    gc.collect()
    gc.freeze()  # what start-up allocated (modules, the faust app) is never garbage
    gc.set_threshold(*GC_THRESHOLDS)
    worker.execute_from_commandline()

