"""Dead letters exactly once per input position, across worker restarts (issue 15).

A message is dead-lettered, then acked; the consumer group commits its offset a little later.
A worker killed in between re-reads the message after its restart and would dead-letter it
again. So each dead-letter record carries its origin in a header (``snoopwatch-source``:
``topic:partition:offset[:record index]``, as by-actor messages do), and before its first
dead letter a worker reads back the dead-letter topic's tail: the records of the last
``WINDOW_MS`` before the newest one of each partition (a dead worker wrote the re-read ones
seconds before it died; the committed offset lags by about a checkpoint interval). An origin
found there is not sent again.

The context topic is read from its start by every worker at every start (each needs every
watchlist entry): its malformed entries are dead-lettered once, by one worker at a time,
tracked by the consumer group ``<app_id>-context-dlq``, whose committed offset says
"dead-lettered below here" (see :class:`ContextDeadLetters`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from detectors.settings import Settings
from stream.kafka_security import client_kwargs
from stream.shared import SOURCE_HEADER
from stream.topics import read_to_end

log = logging.getLogger("snoopwatch")

WINDOW_MS = 5 * 60_000  # how far back from a partition's newest dead letter a restart looks


def origin(source: dict[str, Any]) -> bytes:
    """``topic:partition:offset[:record]`` of a dead-letter record's ``source``."""
    tail = f":{source['record']}" if source.get("record") is not None else ""
    return f"{source['topic']}:{source['partition']}:{source['offset']}{tail}".encode()


def _origin_of(msg: Any) -> bytes | None:
    for name, value in msg.headers or ():
        if name == SOURCE_HEADER:
            return bytes(value)
    try:  # written before the header: the record's own ``source``
        return origin(orjson.loads(msg.value)["source"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The topic's partitions; [] if it does not exist (yet)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for d in described if not d.get("error_code")
                  for p in d["partitions"])


async def read_tail(settings: Settings, window_ms: int = WINDOW_MS) -> set[bytes]:
    """The origins of the dead-letter topic's records within ``window_ms`` of each
    partition's newest record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    seen: set[bytes] = set()
    try:
        tps = [TopicPartition(settings.dlq_topic, p)
               for p in await partitions_of(settings, settings.dlq_topic)]
        if not tps:
            return seen
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > firsts[tp]}
        for tp in todo:  # the newest record's time, then WINDOW_MS before it
            consumer.seek(tp, ends[tp] - 1)
        newest: dict[Any, int] = {}
        for _ in range(30):  # (a record gone to retention meanwhile: read from the start)
            if len(newest) == len(todo):
                break
            batch = await consumer.getmany(*[t for t in todo if t not in newest],
                                           timeout_ms=1000)
            for tp, msgs in batch.items():
                if msgs:
                    newest[tp] = msgs[-1].timestamp
        starts = await consumer.offsets_for_times(
            {tp: max(0, newest[tp] - window_ms) for tp in todo if tp in newest})
        for tp in todo:
            at = starts.get(tp)
            consumer.seek(tp, at.offset if at is not None else firsts[tp])

        def keep(msg: Any) -> None:
            got = _origin_of(msg)
            if got is not None:
                seen.add(got)

        await read_to_end(consumer, todo, ends, keep)
    finally:
        await consumer.stop()
    return seen


class DeadLetters:
    """Sends dead-letter records, skipping origins already on the topic (after a restart)."""

    def __init__(self, settings: Settings, topic: Any, metrics: Any = None) -> None:
        self.settings = settings
        self.topic = topic  # a faust topic (its send)
        self.metrics = metrics
        self.seen: set[bytes] | None = None  # read back lazily, before the first send
        self._loading: asyncio.Lock = asyncio.Lock()
        self.skipped = 0
        self.forgotten = 0  # forget() calls: a read-back a rebalance overtook is read again

    async def load(self) -> None:
        async with self._loading:
            while self.seen is None:
                forgotten = self.forgotten
                seen = await read_tail(self.settings)
                if forgotten != self.forgotten:
                    # A rebalance meanwhile: the tail may have been read before the previous
                    # holders of partitions this worker gained stopped dead-lettering them.
                    continue
                self.seen = seen
                if self.seen:
                    log.info("snoopwatch: %d dead letters of the last %.0f min read back "
                             "(not sent again)", len(self.seen), WINDOW_MS / 60_000)

    def forget(self) -> None:
        """Read the topic's tail back again before the next dead letter: call on a rebalance.

        The new holder of a partition, this worker included when it is given its own back,
        resumes from the group's committed offset, which lags behind the dead letters already
        sent (the revoke's checkpoint acks without a commit). What was read back at start does
        not hold those; the tail does (faust flushes the producer before the revoke).
        """
        self.seen = None
        self.forgotten += 1

    async def send(self, key: bytes | None, record: dict[str, Any], value: bytes,
                   current: Callable[[], bool] | None = None) -> bool | None:
        """Send ``value`` (the encoded ``record``) unless its origin was dead-lettered before
        this worker started; False if skipped. None, not sent, if ``current()`` is false once
        the topic is read back (a rebalance made the message one that is read again)."""
        if self.seen is None:
            await self.load()
        assert self.seen is not None
        if current is not None and not current():
            return None
        where = origin(record["source"])
        if where in self.seen:
            self.seen.discard(where)  # once: a later copy of that origin is a new message
            self.skipped += 1
            return False
        await self.topic.send(key=key, value=value, headers=[(SOURCE_HEADER, where)])
        return True


class ContextDeadLetters:
    """Context entries dead-lettered once: the group ``<app_id>-context-dlq`` commits, per
    context partition, the offset below which malformed entries were dead-lettered.

    Every worker reads every entry, so one worker sends: the *sender*, the holder of
    by-actor partition 0 (the app calls :meth:`become_sender` / :meth:`resign` on its
    assignment and revoke). Each worker keeps the malformed entries it read and not yet
    committed (``pending``; watchlists hold few); the sender reads the committed offsets
    again each time it becomes the sender, then sends and commits in offset order. A revoke
    waits for a send in progress, and the eager rebalance assigns the next sender only after
    every revoke: two workers started together no longer both send each entry (each had
    read the committed offset 0).
    """

    def __init__(self, settings: Settings,
                 send: Callable[[bytes | None, bytes, bytes], Awaitable[Any]]) -> None:
        self.settings = settings
        self.group = f"{settings.app_id}-context-dlq"
        self.send = send  # (key, value, origin): returns once the record is delivered
        self.done: dict[int, int] = {}  # partition -> committed offset
        # (partition, offset) -> (tp, key, dead-letter record, origin) of malformed entries
        self.pending: dict[tuple[int, int], tuple[Any, bytes | None, bytes, bytes]] = {}
        self.sender = False
        self._fresh = False  # ``done`` read since this worker became the sender
        self._lock = asyncio.Lock()
        self._consumer: Any = None
        self._tps: list[Any] = []

    async def start(self, tps: list[Any]) -> None:
        from aiokafka import AIOKafkaConsumer

        await self.stop()
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings), group_id=self.group,
            enable_auto_commit=False)
        await self._consumer.start()
        self._consumer.assign(tps)
        self._tps = tps
        await self._read_done()

    async def _read_done(self) -> None:
        for tp in self._tps:
            committed = await self._consumer.committed(tp)
            self.done[tp.partition] = committed if committed is not None else 0
        for at in [at for at in self.pending if at[1] < self.done.get(at[0], 0)]:
            del self.pending[at]

    def already(self, partition: int, offset: int) -> bool:
        return offset < self.done.get(partition, 0)

    async def offer(self, tp: Any, offset: int, key: bytes | None, value: bytes,
                    origin: bytes) -> None:
        """A malformed entry read: dead-lettered now if this worker is the sender, else kept
        for whichever worker is (or becomes) it."""
        if not self.already(tp.partition, offset):
            self.pending[tp.partition, offset] = (tp, key, value, origin)
            await self.flush()

    async def flush(self) -> None:
        """As the sender: send the pending entries not committed yet, each then committed."""
        async with self._lock:
            if not self.sender or self._consumer is None:
                return
            if not self._fresh:  # a previous sender may have sent some since we looked
                await self._read_done()
                self._fresh = True
            for at in sorted(self.pending):
                tp, key, value, origin = self.pending[at]
                if not self.already(*at):
                    await self.send(key, value, origin)
                    await self.mark(tp, at[1])
                del self.pending[at]

    def become_sender(self) -> None:
        self.sender, self._fresh = True, False

    async def resign(self) -> None:
        """Stop sending, once a send in progress is delivered and committed."""
        async with self._lock:
            self.sender = False

    async def mark(self, tp: Any, offset: int) -> None:
        """Commit ``offset + 1`` for ``tp`` (call once its dead letter is delivered)."""
        if offset + 1 > self.done.get(tp.partition, 0):
            self.done[tp.partition] = offset + 1
            await self._consumer.commit({tp: offset + 1})

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
