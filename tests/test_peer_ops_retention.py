"""The peer-ops topic's retention (stream/peerops.py; docs/operations.md, "The peer-ops
barrier"): deleted by age (``SNOOPWATCH_PEER_OPS_RETENTION_S``), set on a topic made before
it, and a follower whose position is below the log start says so instead of silently reading
on from the oldest record.

The broker tests use ``delete_records`` to move the log start as retention would (the
broker's retention check runs every few minutes).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scaleout import drop_topics
from detectors.engine import Engine
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.peerops import (
    Barrier,
    encode_record,
    ensure_topic,
    expired,
    follow,
    peer_ops_topic_name,
    record_key,
    retention_ms,
    topic_configs,
)
from tests.procs import BROKER, require_broker, wait_until


def test_retention_setting() -> None:
    assert retention_ms(Settings()) == 30 * 86400 * 1000
    env = {"SNOOPWATCH_PEER_OPS_RETENTION_S": "7200"}
    assert retention_ms(Settings.from_env(env)) == 7_200_000
    assert retention_ms(Settings(peer_ops_retention_s=0)) == -1  # for ever
    for bad in ("-1", "a week"):
        with pytest.raises(ValueError, match="SNOOPWATCH_PEER_OPS_RETENTION_S"):
            Settings.from_env({"SNOOPWATCH_PEER_OPS_RETENTION_S": bad})
    configs = topic_configs(Settings.from_env(env))
    assert configs["cleanup.policy"] == "delete" and configs["retention.ms"] == "7200000"


def _barrier(n: int = 2) -> tuple[Barrier, Metrics]:
    metrics = Metrics()
    return Barrier(Engine(Settings()), n, metrics), metrics


def _expired_count(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("snoopwatch_peer_ops_expired_total") or 0.0


def test_a_position_from_a_checkpoint_below_the_log_start_is_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    b, metrics = _barrier()
    b.restore(0, {"clock": {0: 5}, "pending": {}, "closed": [5, 5], "records": [[], []],
                  "prev": [5, 5], "hours": [], "applied": 5, "offset": 10}, whole=True)
    with caplog.at_level(logging.WARNING, "snoopwatch"):
        assert expired(b, 14)
    assert b.offset == 14 and _expired_count(metrics) == 1
    assert any(r.levelno == logging.ERROR and "10-13 expired" in r.getMessage()
               for r in caplog.records)
    assert expired(b, 12) and b.offset == 14  # (already past it: nothing to say)
    assert _expired_count(metrics) == 1
    # past the end: the topic was made again (else the follower would ask for it for ever)
    assert expired(b, 0, 9) and b.offset == 0 and _expired_count(metrics) == 2


def test_a_worker_without_a_checkpoint_waits_for_its_restore(
        caplog: pytest.LogCaptureFixture) -> None:
    b, metrics = _barrier()
    assert not expired(b, 7) and b.offset == 0  # no partition yet: wait for a restore
    b.restore(1, None, False)  # its partition has no checkpoint: start at the log start
    with caplog.at_level(logging.WARNING, "snoopwatch"):
        assert expired(b, 7)
    assert b.offset == 7 and _expired_count(metrics) == 0
    assert "no checkpoint holds the cross-actor state" in caplog.text


# --- on the broker -------------------------------------------------------------------------


def _settings() -> Settings:
    return Settings(broker=BROKER, app_id=f"snoopwatch-retention-{uuid.uuid4().hex[:8]}")


async def _admin(settings: Settings) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    from stream.kafka_security import client_kwargs

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    return admin


async def _configs(settings: Settings) -> dict[str, str]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = await _admin(settings)
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, peer_ops_topic_name(settings))])
        return {e[0]: e[1] for resource in response.resources for e in resource[4]}
    finally:
        await admin.close()


def _configs_soon(settings: Settings, **wanted: str) -> dict[str, str]:
    """The topic's configuration once it shows ``wanted`` (``retention_ms=...``): the broker
    applies a change through its metadata log, so a describe right after may be older."""
    wanted = {k.replace("_", "."): v for k, v in wanted.items()}

    def check() -> dict[str, str] | None:
        configs = asyncio.run(_configs(settings))
        return configs if all(configs.get(k) == v for k, v in wanted.items()) else None

    try:
        return wait_until(f"the topic's {wanted}", check, 15, 0.2)
    except AssertionError:
        return asyncio.run(_configs(settings))  # (the caller's assert shows what it is)


async def _drop(settings: Settings) -> None:
    admin = await _admin(settings)
    try:
        await admin.delete_topics([peer_ops_topic_name(settings)])
    finally:
        await admin.close()


@pytest.mark.kafka
def test_the_topic_is_made_with_retention() -> None:
    require_broker()
    s = _settings().replace(peer_ops_retention_s=86400)
    try:
        assert asyncio.run(ensure_topic(s)) == "created"
        configs = _configs_soon(s, retention_ms="86400000")
        assert configs["cleanup.policy"] == "delete"
        assert configs["retention.ms"] == "86400000"
        assert asyncio.run(ensure_topic(s)) == "exists"
    finally:
        asyncio.run(_drop(s))


@pytest.mark.kafka
def test_a_topic_made_before_retention_gets_it(tmp_path: Path) -> None:
    """A deployment upgraded from the compacted, kept-for-ever topic: the worker (and
    create-topics) switch it to deletion by age, keeping the operator's other settings."""
    import io

    from aiokafka.admin import NewTopic

    from stream.topics import create_topics

    require_broker()
    s = _settings()

    async def old_topic() -> None:
        admin = await _admin(s)
        try:
            await admin.create_topics([NewTopic(peer_ops_topic_name(s), 1, 1, topic_configs={
                "cleanup.policy": "compact", "max.message.bytes": "16777216",
                "segment.bytes": "10485760"})])
        finally:
            await admin.close()

    asyncio.run(old_topic())
    try:
        assert asyncio.run(ensure_topic(s)) == "updated"
        configs = _configs_soon(s, cleanup_policy="delete")
        assert configs["cleanup.policy"] == "delete"
        assert configs["retention.ms"] == str(30 * 86400 * 1000)
        assert configs["segment.bytes"] == "10485760"  # (an override of its own: kept)
        assert asyncio.run(ensure_topic(s)) == "exists"
        # create-topics does the same, and says so
        out = io.StringIO()
        s2 = s.replace(input_topic=f"{s.app_id}-in", alerts_topic=f"{s.app_id}-alerts",
                       dlq_topic=f"{s.app_id}-dlq", context_topic=f"{s.app_id}-ctx",
                       peer_ops_retention_s=3600)
        asyncio.run(create_topics(s2, 1, out=out))
        assert f"updated  {peer_ops_topic_name(s)}" in out.getvalue()
        assert _configs_soon(s, retention_ms="3600000")["retention.ms"] == "3600000"
    finally:
        asyncio.run(drop_topics(s))  # (create-topics made the others)


async def _write_and_expire(settings: Settings, hours: list[int], expire_before: int) -> int:
    """One record per hour of partition 0, then everything before offset ``expire_before``
    deleted as retention would; the log start offset."""
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import RecordsToDelete

    from stream.kafka_security import client_kwargs

    await ensure_topic(settings)
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for h in hours:
            await producer.send_and_wait(peer_ops_topic_name(settings), encode_record([]),
                                         key=record_key(0, h), partition=0)
    finally:
        await producer.stop()
    admin = await _admin(settings)
    try:
        tp = TopicPartition(peer_ops_topic_name(settings), 0)
        low = await admin.delete_records({tp: RecordsToDelete(expire_before)})
        return low[tp]
    finally:
        await admin.close()


async def _follow_until(barrier: Barrier, settings: Settings, done: Any,
                        timeout_s: float = 30) -> None:
    task = asyncio.ensure_future(follow(settings, barrier))
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done():
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "follower did not get there"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.kafka
def test_a_follower_below_the_log_start_reports_and_reads_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """A worker restored from a checkpoint whose stored position has expired: without the
    check the consumer would silently jump to the oldest record."""
    require_broker()
    s = _settings()
    try:
        start = asyncio.run(_write_and_expire(s, [10, 11, 12, 13, 14, 15], 3))
        assert start == 3
        b, metrics = _barrier(1)
        b.restore(0, {"clock": {0: 10}, "pending": {}, "closed": [10], "records": [[]],
                      "prev": [10], "hours": [], "applied": 10, "offset": 1}, whole=True)
        with caplog.at_level(logging.WARNING, "snoopwatch"):
            asyncio.run(_follow_until(b, s, lambda: b.offset >= 6))
        assert _expired_count(metrics) == 1
        assert "1-2 expired" in caplog.text
        assert b.closed == [15]  # the records from the log start on were read
    finally:
        asyncio.run(_drop(s))


@pytest.mark.kafka
def test_a_fresh_follower_takes_its_state_from_a_restore_not_from_what_is_left() -> None:
    require_broker()
    s = _settings()
    try:
        asyncio.run(_write_and_expire(s, [20, 21, 22, 23], 2))
        b, metrics = _barrier(1)

        async def go() -> None:
            task = asyncio.ensure_future(follow(s, b))
            try:
                await asyncio.sleep(3)  # (several rounds of the follower's wait)
                assert b.closed == [-1] and b.offset == 0, "read what retention left"
                # its partition's checkpoint: the state whole, and a position past the gap
                b.restore(0, {"clock": {0: 22}, "pending": {}, "closed": [22],
                              "records": [[]], "prev": [22], "hours": [], "applied": 22,
                              "offset": 3}, whole=True)
                while b.closed != [23]:
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.1)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(asyncio.wait_for(go(), 60))
        assert _expired_count(metrics) == 0 and b.offset == 4
    finally:
        asyncio.run(_drop(s))
