"""Consumer lag per partition, for ``snoopwatch_consumer_lag_messages`` (issue 5).

The worker's timer (``stream/app.py``) calls :func:`partition_lags` every
:data:`LAG_INTERVAL_S` seconds with faust's consumer. For each partition this
worker holds of the given topics, lag is the partition's log-end offset (asked
from the broker, ``highwaters``) minus the group's committed offset (the next
offset to process, as Kafka's own tools count it). Where the group has never
committed (a new group), nothing is committed yet: lag counts from the
partition's first offset, where a restart would read again.

>>> import asyncio
>>> from faust.types import TP
>>> class FakeConsumer:
...     _committed_offset = {TP("in", 0): 40}
...     def assignment(self):
...         return {TP("in", 0), TP("in", 1), TP("other", 0)}
...     async def highwaters(self, *tps):
...         return {tp: 100 for tp in tps}
...     async def earliest_offsets(self, *tps):
...         return {tp: 10 for tp in tps}
>>> sorted(asyncio.run(partition_lags(FakeConsumer(), {"in"})).items())
[(('in', 0), 60), (('in', 1), 90)]
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

log = logging.getLogger("snoopwatch")

# How often each worker refreshes its consumer-lag gauges (seconds).
LAG_INTERVAL_S = 1.0


async def partition_lags(consumer: Any, topics: Collection[str]) -> dict[tuple[str, int], int]:
    """``{(topic, partition): messages not yet committed}`` for the assigned partitions."""
    assigned = sorted(tp for tp in consumer.assignment() if tp.topic in topics)
    if not assigned:
        return {}
    ends = await consumer.highwaters(*assigned)
    # faust keeps the offsets it committed (Kafka's "next offset to read"); it is not in
    # faust's public API, so read it defensively.
    committed = getattr(consumer, "_committed_offset", {})
    never = [tp for tp in assigned if committed.get(tp) is None]
    starts = await consumer.earliest_offsets(*never) if never else {}
    lags: dict[tuple[str, int], int] = {}
    for tp in assigned:
        end = ends.get(tp)
        done = committed.get(tp)
        if done is None:
            done = starts.get(tp)
        if end is None or done is None:
            continue
        lags[(tp.topic, tp.partition)] = max(0, int(end) - int(done))
    return lags


async def export_lag(app: Any, metrics: Any, topics: Collection[str]) -> None:
    """Refresh ``metrics``' consumer-lag gauges; never raises (a timer must not die)."""
    try:
        lags = await partition_lags(app.consumer, topics)
    except Exception as err:  # consumer not started yet, rebalancing, broker away, ...
        log.debug("consumer lag not available: %r", err)
        return
    metrics.set_consumer_lag(lags)
