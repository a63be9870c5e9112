"""stream.topics without a broker: a fake admin client answers as the broker does."""

from __future__ import annotations

import asyncio

import pytest


def test_topic_partitions_waits_out_a_topic_without_partitions() -> None:
    from stream.topics import topic_partitions

    class Admin:  # answers as the broker does for a moment after create_topics
        def __init__(self, ready_after: int) -> None:
            self.calls, self.ready_after = 0, ready_after

        async def describe_topics(self, topics: list[str]) -> list[dict]:
            self.calls += 1
            parts = [{"partition": 1}, {"partition": 0}] if self.calls > self.ready_after else []
            return [{"topic": t, "error_code": 0 if parts else 3, "partitions": parts}
                    for t in topics]

    admin = Admin(ready_after=2)
    assert asyncio.run(topic_partitions(admin, ["ctx"])) == {"ctx": [0, 1]}
    assert admin.calls == 3
    with pytest.raises(RuntimeError, match=r"\['never'\] show no partitions"):
        asyncio.run(topic_partitions(Admin(ready_after=10**9), ["never"], timeout_s=0.3))
