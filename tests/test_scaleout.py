"""Scale-out on the real broker (issue 4, part 3): two workers in one consumer group.

Two ``snoopwatch worker`` processes share the 4-partition topics. The input is keyed by team,
not by actor, so ingest must re-key: each actor's events reach the one worker holding that
actor's partition of the by-actor topic. The worker that holds the insider is SIGKILLed
mid-stream; the other takes over its partitions with their checkpointed state.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.settings import Settings, bootstrap_servers
from stream.demo import free_port, scrape
from stream.simulate import SimConfig, generate
from stream.state import ENGINE_KEY, WRITER_HEADER, state_topic_name
from stream.topics import create_topics
from tests.procs import fresh_settings, require_broker, wait_until
from tests.test_reliability import read_alerts, read_topic, send, settled, start_worker

pytestmark = pytest.mark.kafka

SIM = SimConfig(seed=101, agents=16, days=4, insiders=1)
LAG = re.compile(r'snoopwatch_consumer_lag_messages\{partition="(\d+)",topic="([^"]+)"\}')


@pytest.fixture(autouse=True)
def _broker() -> None:
    require_broker()


def owned(url: str, topic: str) -> set[int]:
    """Partitions of ``topic`` a worker holds now (its consumer-lag gauges)."""
    return {int(m[1]) for key in scrape(url) if (m := LAG.fullmatch(key)) and m[2] == topic}


async def end_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings.broker))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def processed(url: str) -> float:
    m = scrape(url)
    return m.get("snoopwatch_events_processed_total", 0) + m.get(
        "snoopwatch_events_duplicate_total", 0)


def test_two_workers_split_the_actors_and_one_takes_over_when_the_other_is_killed(
        tmp_path: Path) -> None:
    settings = fresh_settings(tmp_path, partitions=4, session_timeout_s=6.0)
    asyncio.run(create_topics(settings, 4))
    by_actor = f"{settings.app_id}-events-by-actor"
    state_topic = state_topic_name(settings)
    events = [ev for ev, _ in generate(SIM)]
    labels = [label for _, label in generate(SIM)]
    insider = next(ev["actor"] for ev, label in zip(events, labels, strict=True) if label)
    first_bad = labels.index(next(label for label in labels if label))
    # Keyed by team: an actor's events stay in order, on an input partition whose owner is
    # usually not the owner of the actor's by-actor partition.
    msgs = [(ev["team"].encode(), orjson.dumps(ev)) for ev in events]
    total, head, cut = len(msgs), int(len(msgs) * 0.6), first_bad - 200
    assert head + 500 < cut

    procs = {}
    try:
        for name in ("a", "b"):
            s = settings.replace(web_port=free_port())
            procs[name] = start_worker(s, tmp_path / f"worker-{name}.log")
        urls = {name: url for name, (_, url) in procs.items()}

        def split() -> dict[str, set[int]] | None:
            parts = {name: owned(url, by_actor) for name, url in urls.items()}
            a, b = parts["a"], parts["b"]
            return parts if a and b and not a & b and a | b == set(range(4)) else None

        parts = wait_until("the group splits the partitions", split, 90, 0.5)
        # 60% of the stream, processed and checkpointed by both workers.
        asyncio.run(send(settings, msgs[:head], batch=True))
        wait_until("60% checkpointed", lambda: settled(settings), 120, 1)
        assert split() == parts, "a rebalance moved partitions before the kill"
        # Kill the worker holding the insider, while it works through the next events.
        from aiokafka.partitioner import DefaultPartitioner

        insider_part = DefaultPartitioner()(insider.encode(), list(range(4)), list(range(4)))
        victim = next(n for n, p in parts.items() if insider_part in p)
        survivor = "b" if victim == "a" else "a"
        restores_before = scrape(urls[survivor])["snoopwatch_state_restore_seconds_count"]
        asyncio.run(send(settings, msgs[head:cut], batch=True))
        wait_until("mid-stream", lambda: processed(urls[victim]) + processed(urls[survivor])
                   >= head + 300, 60, 0.02)
        proc = procs[victim][0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()
        # State records below these offsets were written before the survivor took over.
        before = asyncio.run(end_offsets(settings, state_topic, 4))
        # The rest, with the insider's misdeeds, reaches only the survivor (after it takes over).
        asyncio.run(send(settings, msgs[cut:], batch=True))
        audit = wait_until("every event processed or dead-lettered by the survivor",
                           lambda: settled(settings), 180, 1)
        takeover_s = time.monotonic() - killed_at
        m = scrape(urls[survivor])
        assert owned(urls[survivor], by_actor) == set(range(4))
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    print(f"\nscale-out: victim {victim} held partitions {sorted(parts[victim])}, survivor "
          f"{survivor} {sorted(parts[survivor])}; all caught up {takeover_s:.1f}s after the "
          f"kill; survivor restores {m['snoopwatch_state_restore_seconds_count']:.0f} "
          f"(before the kill {restores_before:.0f}), skipped as already in the state "
          f"{m.get('snoopwatch_events_replayed_total', 0):.0f}, duplicates "
          f"{m.get('snoopwatch_events_duplicate_total', 0):.0f}\n{audit.table()}")

    # The survivor's own partitions came back to it in the rebalance: kept, not read again
    # (each read once, when it first had events; one of them has events after the kill).
    log = (tmp_path / f"worker-{survivor}.log").read_text(errors="replace")
    for p in parts[survivor]:
        assert log.count(f" state records of partition {p} in ") == 1, f"{p} read back"
    assert "given back: kept" in log
    # Every input event was forwarded to detection (or dead-lettered), once.
    assert sum(p.forwarded + p.dead_lettered for p in audit.input) == total
    # The survivor read the victim's partitions' state back from the checkpoint topic.
    assert m["snoopwatch_state_restore_seconds_count"] >= restores_before + len(parts[victim])

    # Before the kill, each actor's state was written by exactly one worker: its partition's.
    records = asyncio.run(read_topic(settings, state_topic, committed=True))
    pids = {name: str(proc.pid).encode() for name, (proc, _) in procs.items()}
    writer_of = {v: k for k, v in pids.items()}
    early: dict[str, set[str]] = {}
    late: dict[str, set[str]] = {}
    final: dict[str, Any] = {}
    for r in records:
        if r.key == ENGINE_KEY:
            continue
        writer = writer_of[dict(r.headers)[WRITER_HEADER].rsplit(b":", 1)[1]]
        actor = r.key.decode()
        (early if r.offset < before[r.partition] else late).setdefault(actor, set()).add(writer)
        assert (writer == victim) == (r.partition in parts[victim]) or r.offset >= before[
            r.partition], f"{actor} (partition {r.partition}) written by {writer} before the kill"
        final[actor] = r.value
    assert all(len(w) == 1 for w in early.values()), early
    # (Not both writers necessarily: the state topic is compacted, and with a checkpoint per
    # event-time hour entered (the peer-ops barrier) a worker's early records may all have
    # been compacted away behind later ones by now.)
    assert early and {w for ws in early.values() for w in ws} <= {"a", "b"}
    # After it, the victim's actors went on at the survivor, from their checkpointed state:
    # each actor's state has learned every one of its events exactly once (a cold start would
    # have fewer, a double count more).
    assert late.get(insider) == {survivor}
    learned = {a: pickle.loads(v)["state"].signals["first_seen"].n for a, v in final.items() if v}
    assert learned == dict(Counter(ev["actor"] for ev in events))

    alerts = read_alerts(settings)
    caught = [a for a in alerts if a["actor"] == insider]
    assert caught, f"the insider was not caught: {[a['summary'] for a in alerts]}"
    # No cold-start alert storm for the actors taken over.
    noisy = [(a["actor"], a["summary"]) for a in alerts if a["actor"] != insider]
    assert len({actor for actor, _ in noisy}) <= 1, f"alerts around the takeover: {noisy}"
