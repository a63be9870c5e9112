"""``snoopwatch create-topics``: create snoopwatch's topics before the first worker starts.

A worker subscribes to the input topic when it joins its consumer group; if the topic does
not exist yet, the group ignores it until the consumer's next metadata refresh (minutes), so
deployments create the topics first. The input topic's partition count caps how many
workers share the ingest work; the internal by-actor topic (``SNOOPWATCH_PARTITIONS``) caps
the detect work (see docs/operations.md). Idempotent: existing topics are left as they are
and reported with their partition count.
"""

from __future__ import annotations

import sys
from typing import IO

from detectors.settings import Settings, bootstrap_servers


async def create_topics(settings: Settings, partitions: int | None = None,
                        replication_factor: int = 1, out: IO[str] | None = None
                        ) -> dict[str, int]:
    """Create the input, alerts, dead-letter (``partitions`` each, default
    ``SNOOPWATCH_PARTITIONS``) and compacted context topics; ``{topic: partitions}``."""
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
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings.broker))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [t for name, t in wanted.items() if name not in existing]
        if new:
            await admin.create_topics(new)
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    for name in wanted:
        state = "created" if name not in existing else "exists"
        k = counts.get(name, 0)
        print(f"{state:8} {name} ({k} partition{'' if k == 1 else 's'})", file=out)
    return counts
