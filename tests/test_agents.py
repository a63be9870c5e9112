"""The faust agents, in-process with faust's ``agent.test_context()`` (no broker).

Sends to other topics are replaced by recorders, as faust's testing guide
recommends; the real-broker path is in ``test_kafka.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from unittest.mock import AsyncMock, patch

import orjson
import pytest
from faust.types import TP

from detectors.settings import Settings
from stream.app import Snoopwatch, create_app
from tests.test_detectors import HOUR_MS, T0


@pytest.fixture
def sw() -> Iterator[Snoopwatch]:
    # No peer-ops barrier: with no broker there is no topic to share the ops through, and
    # the agents here are fed one partition of several (tests/test_peerops.py tests it).
    app = create_app(Settings(app_id="snoopwatch-agent-test", peer_barrier=False))
    app.app.conf.store = "memory://"
    app.store.durable = False  # no broker here: state stays in memory
    app.context_ready.set()  # no context topic to read first
    app.dead_letters.seen = set()  # no dead-letter topic to read back
    yield app


async def settle(done: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``done()``: the agents take events in batches, which wait for more for a
    few milliseconds before they are worked through."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the agent did not work through its batch"
        await asyncio.sleep(0.001)


def event(i: int, t_ms: int, customer: str, ticket: str | None, actor: str = "ann") -> bytes:
    return orjson.dumps({"event_id": f"{actor}-{i}", "time": t_ms, "actor": actor,
                         "role": "support_agent", "action": "read",
                         "resource_type": "customer_profile", "customer_id": customer,
                         "ticket": ticket, "client": "crm", "source_ip": "10.1.2.3"})


async def test_ingest_rekeys_valid_events_by_actor(sw: Snoopwatch) -> None:
    with patch.object(sw.by_actor_topic, "send", AsyncMock()) as rekey, \
            patch.object(sw.dlq_topic, "send", AsyncMock()) as dlq:
        async with sw.ingest.test_context() as agent:
            await agent.put(event(1, T0, "c1", "T1"), key=b"wrong-key")
    dlq.assert_not_called()
    (call,) = rekey.call_args_list
    assert call.kwargs["key"] == b"ann"  # re-keyed by actor, whatever the input key was
    assert call.kwargs["value"] == event(1, T0, "c1", "T1")  # the original bytes
    m = sw.pipeline.metrics
    assert m.consumed._value.get() == 1 and m.valid._value.get() == 1


async def test_ingest_dead_letters_with_reason_and_origin(sw: Snoopwatch) -> None:
    bad = [b"{nope", b"[]", orjson.dumps({"event_id": "x", "time": "soon", "actor": "a",
                                          "action": "read", "resource_type": "order"})]
    with patch.object(sw.by_actor_topic, "send", AsyncMock()) as rekey, \
            patch.object(sw.dlq_topic, "send", AsyncMock()) as dlq:
        async with sw.ingest.test_context() as agent:
            for raw in bad:
                await agent.put(raw, key=b"k", partition=3)
    rekey.assert_not_called()
    records = [orjson.loads(c.kwargs["value"]) for c in dlq.call_args_list]
    assert [r["reason"] for r in records] == ["invalid_json", "not_an_object", "bad_time"]
    assert records[2]["field"] == "time"
    assert [r["value"].encode() for r in records] == bad  # the original bytes, kept
    assert records[0]["source"]["partition"] == 3
    assert [r["source"]["offset"] for r in records] == [0, 1, 2]
    assert all(r["dead_lettered_at"].endswith("Z") for r in records)  # the worker's clock
    dl = sw.pipeline.metrics.dead_lettered
    assert dl.labels(reason="bad_time")._value.get() == 1
    assert dl.labels(reason="invalid_json")._value.get() == 1


async def test_detect_emits_an_alert_for_an_insider(sw: Snoopwatch) -> None:
    with patch.object(sw.alerts_topic, "send", AsyncMock()) as alerts:
        async with sw.detect.test_context() as agent:
            i = 0
            for day in range(6):
                for hour in range(9, 17):
                    for k in range(4):
                        i += 1
                        t = T0 + day * 24 * HOUR_MS + hour * HOUR_MS + k * 600_000
                        await agent.put(event(i, t, f"c{i}", f"T{i}"), key=b"ann")
            processed = sw.pipeline.metrics.processed._value
            await settle(lambda: processed.get() == i)
            alerts.assert_not_called()
            t = T0 + 6 * 24 * HOUR_MS + 20 * HOUR_MS
            for k in range(100):
                i += 1
                await agent.put(event(i, t + k * 10_000, f"x{k}", None), key=b"ann")
    assert alerts.call_args_list, "no alert was sent"
    first = orjson.loads(alerts.call_args_list[0].kwargs["value"])
    assert alerts.call_args_list[0].kwargs["key"] == b"ann"
    assert first["actor"] == "ann" and first["severity"] in ("low", "medium", "high", "critical")
    assert "without a ticket" in first["summary"]
    m = sw.pipeline.metrics
    assert m.processed._value.get() == i
    assert m.registry.get_sample_value("snoopwatch_tracked_actors") == 1
    assert sum(s.value for s in m.alerts.collect()[0].samples
               if s.name.endswith("_total")) == len(alerts.call_args_list)


async def test_ingest_detects_in_place_what_the_hop_would_bring_back(sw: Snoopwatch) -> None:
    """An event whose actor the by-actor topic would put on the partition it came from (and
    that partition of both topics is this worker's) skips the hop; it is acked only by the
    checkpoint that holds it, and a re-read of it after a restart changes nothing."""
    from faust.types import TP

    from stream.pipeline import home_partition

    parts = 4
    home = home_partition("ann", parts)
    other = (home + 1) % parts
    topics = (sw.settings.input_topic, sw.by_actor_topic.get_topic_name())
    sw.router.update({TP(t, p) for t in topics for p in range(parts)}, parts, parts, *topics)
    with patch.object(sw.by_actor_topic, "send", AsyncMock()) as rekey:
        async with sw.ingest.test_context() as agent:
            await agent.put(event(1, T0, "c1", "T1"), key=b"ann", partition=home)
            await agent.put(event(2, T0 + 1000, "c2", "T2"), key=b"ann", partition=home)
            await settle(lambda: len(sw.store.unacked) == 2)
            assert [e.message.offset for e in sw.store.unacked] == [0, 1]
            assert not any(e.message.acked for e in sw.store.unacked)
            await agent.put(event(3, T0 + 2000, "c3", "T3"), key=b"ann", partition=other)
            await settle(lambda: rekey.call_count > 0)
            rekey.assert_called_once()  # only the event of another partition took the hop
            # Not keyed by its actor: the hop even from its home partition (detected here it
            # would overtake the actor's events hopping from the others).
            await agent.put(event(4, T0 + 3000, "c4", "T4"), key=b"x", partition=home)
            await agent.put(event(5, T0 + 4000, "c5", "T5"), key=None, partition=home)
            await settle(lambda: rekey.call_count == 3)
            assert len(sw.store.unacked) == 2
            # Re-read after a restart: at or below the actor's watermark of that partition.
            assert sw.store.admit("ann", "ann-1", home, None, (home, 1)) != "process"
            unacked = list(sw.store.unacked)
            await sw.store.checkpoint()
            assert all(e.message.acked for e in unacked) and not sw.store.unacked
    m = sw.pipeline.metrics
    assert m.processed._value.get() == 2 and m.valid._value.get() == 5
    assert sw.store.meta["ann"].sources == {home: 1}


async def test_the_worker_consumer_fetch_wait_and_metadata_refresh() -> None:
    """faust fixes the broker's fetch wait at 1.5 s; an idle partition's fetch then holds the
    busy ones back that long (~1 s alerts with in-place detection). Ours comes from settings;
    another faust app in the process keeps faust's."""
    import faust

    ours = create_app(Settings(fetch_max_wait_ms=40)).app
    other = faust.App("not-snoopwatch", broker="kafka://127.0.0.1:1", autodiscover=False)
    waits, ages = [], []
    for app in (ours, other):
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        waits.append(consumer._fetch_max_wait_ms)
        ages.append(consumer._client._metadata_max_age_ms)
        await consumer.stop()
    assert waits == [40, 1500]
    # New topics are noticed within 30 s, not faust's 5 min (a worker that joined before the
    # broker's metadata showed them sat idle that long on a freshly started broker).
    assert ages == [30_000, 300_000]


async def test_a_rebalance_makes_dead_letters_read_the_topic_back_again(sw: Snoopwatch) -> None:
    # After a rebalance the partition's holder (maybe this worker) resumes from the committed
    # offset, behind dead letters already sent: what was read back at start misses them.
    sw.dead_letters.seen = {b"events:0:7"}
    sw.pipeline.metrics.input_offsets["events", 0] = 8
    await sw.app.on_partitions_revoked.send({TP("events", 0)})
    assert sw.dead_letters.seen is None  # read back again before the next dead letter
    assert sw.pipeline.metrics.input_offsets == {}  # its position: the new holder's now


@pytest.mark.parametrize("kept", [True, False])
async def test_an_event_in_hand_during_a_rebalance_waits_for_its_end(
        sw: Snoopwatch, kept: bool) -> None:
    # An event of a batch taken before a rebalance: handled during it, it would take the hop
    # (the router is empty) and be acked, and race the next holder's in-place detection.
    topic = sw.settings.input_topic
    await sw.app.on_partitions_revoked.send(set())
    assignment = {TP(topic, 0)} if kept else set()
    with patch.object(sw.by_actor_topic, "send", AsyncMock()) as rekey, \
            patch.object(type(sw.app.consumer), "assignment", return_value=assignment), \
            patch.object(type(sw.app.consumer), "topic_partitions", return_value=None):
        async with sw.ingest.test_context() as agent:
            await agent.put(event(1, T0, "c1", "T1"), key=b"ann", partition=0, wait=False)
            with pytest.raises(AssertionError):  # nothing happens while the rebalance runs
                await settle(lambda: rekey.called or sw.pipeline.metrics.input_offsets,
                             timeout_s=0.3)
            await sw.app.on_partitions_assigned.send(set())
            if kept:  # still ours: handled (here by the hop: no in-place topics patched in)
                await settle(lambda: rekey.called)
            else:  # gone: left unacked for the new holder, never handled here
                with pytest.raises(AssertionError):
                    await settle(lambda: rekey.called or sw.pipeline.metrics.input_offsets,
                                 timeout_s=0.3)


async def test_a_dead_letter_fetched_before_a_rebalance_is_left_to_its_copy(
        sw: Snoopwatch) -> None:
    """A malformed message whose partition went through a rebalance while the dead-letter
    topic was read back (the first dead letter after a rebalance) is not dead-lettered: it
    is read again from the committed offset (it is unacked), and that copy is dead-lettered,
    once. Sent, it came after the read-back, which then did not stop the copy: twice."""
    topic = sw.settings.input_topic
    sw.dead_letters.seen = None  # read back before the first dead letter

    async def rebalanced_meanwhile(settings: Settings) -> set[bytes]:
        sw.app.consumer_generation_id += 1  # (faust's, set as partitions are assigned)
        return set()  # (nothing of it on the topic yet)

    with patch("stream.deadletters.read_tail", rebalanced_meanwhile), \
            patch.object(sw.dlq_topic, "send", AsyncMock()) as dlq, \
            patch.object(type(sw.app.consumer), "assignment", return_value={TP(topic, 0)}):
        async with sw.ingest.test_context() as agent:
            first = await agent.put(b"{oops", key=b"k", partition=0)
            await settle(lambda: sw.dead_letters.seen is not None)
            dlq.assert_not_called()
            assert not first.message.acked  # (faust would commit past it)
            agent.sent_offset = 0  # the copy read again from the committed offset
            copy = await agent.put(b"{oops", key=b"k", partition=0)
            await settle(lambda: dlq.called)
    (call,) = dlq.call_args_list
    assert orjson.loads(call.kwargs["value"])["source"]["offset"] == 0
    assert first.message.acked and copy.message.acked  # acked with its copy


async def test_a_read_back_a_rebalance_overtook_is_read_again(sw: Snoopwatch) -> None:
    """The dead-letter topic read back while a rebalance gives this worker partitions: the
    previous holders may send dead letters until their revoke, after the read began, and
    this worker re-reads their messages. That read is discarded and the topic read again,
    else such a message was dead-lettered twice."""
    topic: list[bytes] = []  # origins on the dead-letter topic
    gate = asyncio.Event()
    reads = 0

    async def read_tail(settings: Settings) -> set[bytes]:
        nonlocal reads
        reads += 1
        seen = set(topic)  # as of the read's start
        await gate.wait()
        return seen

    async def send(key: bytes | None, value: bytes, headers: list) -> None:
        topic.append(headers[0][1])

    record = {"source": {"topic": "events", "partition": 1, "offset": 50}}
    dead_letters = sw.dead_letters
    dead_letters.seen = None
    with patch("stream.deadletters.read_tail", read_tail), \
            patch.object(dead_letters.topic, "send", side_effect=send):
        mine = asyncio.ensure_future(dead_letters.send(None, {"source": {
            "topic": "events", "partition": 0, "offset": 7}}, b"a"))
        await settle(lambda: reads == 1)
        topic.append(b"events:1:50")  # partition 1's holder, before its revoke
        dead_letters.forget()  # the rebalance: partition 1 is this worker's now
        gate.set()
        assert await mine is True
        assert await dead_letters.send(None, record, b"b") is False  # read again: skipped
    assert reads == 2 and topic.count(b"events:1:50") == 1
