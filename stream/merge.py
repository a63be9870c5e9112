"""The worker's input, forwarded in event-time order across the partitions it holds.

Input not keyed by actor spreads each actor's events over every input partition, and the
consumer reads those partitions in chunks: a drained backlog hands ingest hours of one
partition's events before the next partition's. Forwarded in that order, about half of an
actor's events reached detection after a later event of its own, and were judged without
being counted into their hour (``snoopwatch_events_late_total``; ``tests/test_reliability``).

:class:`InputMerge` holds each input partition's events in arrival order and gives out the
one with the earliest event time among the partitions' heads, as long as no partition that
still has events to read is empty (Kafka Streams' rule: a task processes the record with
the smallest timestamp among its partitions' buffered heads, and waits up to
``max.task.idle.ms`` for a partition whose buffer is empty but whose log is not). Held
longer than ``wait_s``, or more than ``held_max`` of them, events go anyway: a stuck or slow
partition delays the others by at most that much.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

# More held than this and the earliest goes without waiting: bounds memory (events are
# < 4 KB) when a partition lags for long. A prior, far above a second's traffic.
HELD_MAX = 50_000


class InputMerge:
    """Per-partition queues given out in event-time order.

    >>> m = InputMerge(wait_s=60.0, clock=lambda: 0.0)
    >>> m.holding({"p0", "p1"})
    >>> m.put("p0", 30, "a"); m.put("p0", 10, "b"); m.put("p1", 20, "c")
    >>> unread = {"p0": False, "p1": True}.get   # p1 has more to read: wait for it
    >>> m.next(unread), m.next(unread)
    ('c', None)
    >>> m.next(lambda tp: False), m.next(lambda tp: False)   # p1 read to its end: go on
    ('a', 'b')

    A partition's own order is kept ("a" before "b" although later), and nothing is held
    once ``wait_s`` has passed:

    >>> m = InputMerge(wait_s=1.0, clock=iter([0.0, 0.5, 2.0]).__next__)
    >>> m.holding({"p0", "p1"}); m.put("p0", 5, "x")
    >>> m.next(lambda tp: True), m.next(lambda tp: True)
    (None, 'x')
    """

    def __init__(self, wait_s: float, held_max: int = HELD_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self.held_max = held_max
        self.clock = clock
        self.queues: dict[Hashable, deque[tuple[int, float, Any]]] = {}
        self.held = 0
        self.partitions: frozenset[Hashable] = frozenset()

    def holding(self, partitions: Iterable[Hashable]) -> None:
        """The input partitions this worker holds (after a rebalance)."""
        self.partitions = frozenset(partitions)

    def put(self, tp: Hashable, time_ms: int, item: Any) -> None:
        self.queues.setdefault(tp, deque()).append((time_ms, self.clock(), item))
        self.held += 1

    def next(self, unread: Callable[[Hashable], bool]) -> Any:
        """The item to forward now, or None to wait. ``unread(tp)``: whether partition
        ``tp`` has events this worker has not taken yet (its consumer is behind its end)."""
        if not self.held:
            return None
        best: tuple[int, float, Any] | None = None
        best_tp: Hashable = None
        oldest = None
        for tp, queue in self.queues.items():
            if queue:
                head = queue[0]
                if best is None or head[0] < best[0]:
                    best, best_tp = head, tp
                if oldest is None or head[1] < oldest:
                    oldest = head[1]
        assert best is not None and oldest is not None
        if (self.held <= self.held_max and self.clock() - oldest < self.wait_s
                and any(not self.queues.get(tp) and unread(tp) for tp in self.partitions)):
            return None
        self.queues[best_tp].popleft()
        self.held -= 1
        return best[2]

    def drop(self, tps: Iterable[Hashable]) -> None:
        """Forget revoked partitions' held items (unacked: their new holder reads them
        again)."""
        for tp in tps:
            self.held -= len(self.queues.pop(tp, ()))
