"""``snoopwatch create-topics``: create snoopwatch's topics before the first worker starts.

A worker subscribes to the input topic when it joins its consumer group; if the topic does
not exist yet, the group ignores it until the consumer's next metadata refresh (minutes), so
deployments create the topics first. The input topic's partition count caps how many
workers share the ingest work; the internal by-actor topic (``SNOOPWATCH_PARTITIONS``) caps
the detect work (see docs/operations.md). Idempotent: existing topics are left as they are
and reported with their partition count, but for the peer-ops topic's retention
(stream/peerops.py), which is set on it if it differs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from detectors.settings import Settings
from stream.kafka_security import client_kwargs


async def topic_partitions(admin: Any, topics: list[str], timeout_s: float = 60.0
                           ) -> dict[str, list[int]]:
    """``{topic: [partition, ...]}``, waiting for topics just created to show theirs.

    Right after ``create_topics`` the broker answers UNKNOWN_TOPIC_OR_PARTITION
    with no partitions for a moment; a consumer assigned that empty list would
    read nothing for good.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        parts = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
        missing = [t for t in topics if not parts.get(t)]
        if not missing:
            return parts
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {missing} show no partitions after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def read_to_end(consumer: Any, todo: set[Any], ends: dict[Any, int],
                      visit: Callable[[Any], None]) -> None:
    """Hand ``visit`` every message of the assigned partitions in ``todo``, from where the
    consumer stands on each, until each reaches its offset in ``ends`` (a snapshot of the
    end offsets: what arrives later is not waited for). Empties ``todo``."""
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=1000)
        for msgs in batch.values():
            for msg in msgs:
                visit(msg)
        for tp in list(todo):
            if await consumer.position(tp) >= ends[tp]:
                todo.discard(tp)


async def create_topics(settings: Settings, partitions: int | None = None,
                        replication_factor: int = 1, out: IO[str] | None = None
                        ) -> dict[str, int]:
    """Create the input, alerts, dead-letter (``partitions`` each, default
    ``SNOOPWATCH_PARTITIONS``), compacted context topic, the peer-ops topic, and the internal
    by-actor topic (``SNOOPWATCH_PARTITIONS``); ``{topic: partitions}``. An existing
    peer-ops topic gets its retention (stream/peerops.py) if it has another."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    out = out or sys.stderr
    n = partitions or settings.partitions
    wanted = {
        settings.input_topic: NewTopic(settings.input_topic, n, replication_factor),
        settings.alerts_topic: NewTopic(settings.alerts_topic, n, replication_factor),
        settings.dlq_topic: NewTopic(settings.dlq_topic, n, replication_factor),
        settings.context_topic: NewTopic(settings.context_topic, 1, replication_factor,
                                         topic_configs={"cleanup.policy": "compact"}),
    }
    from stream.peerops import peer_ops_topic_name, reconcile_topic

    # The internal by-actor topic, with SNOOPWATCH_PARTITIONS partitions. Left to the worker,
    # a broker that auto-creates topics sometimes made it first, with its default of one
    # partition (its consumer asked for it before faust created it): every event then took
    # the re-key hop onto one partition, in no time order (late events for the barrier).
    by_actor = f"{settings.app_id}-events-by-actor"
    wanted[by_actor] = NewTopic(by_actor, settings.partitions, replication_factor)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [t for name, t in wanted.items() if name not in existing]
        if new:
            await admin.create_topics(new)
        states = {name: "exists" if name in existing else "created" for name in wanted}
        # The peer-ops barrier's records (stream/peerops.py): made, or an existing topic's
        # retention brought to SNOOPWATCH_PEER_OPS_RETENTION_S, as the worker does.
        states[peer_ops_topic_name(settings)] = await reconcile_topic(admin, settings,
                                                                      replication_factor)
        counts = {t: len(p) for t, p in (await topic_partitions(admin, list(states))).items()}
    finally:
        await admin.close()
    for name, state in states.items():
        k = counts.get(name, 0)
        print(f"{state:8} {name} ({k} partition{'' if k == 1 else 's'})", file=out)
    return counts
