"""stream/merge.py: the worker's input forwarded in event-time order across partitions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.merge import InputMerge

# Each partition's events in its own (time) order, as a backlog of three partitions.
partitions = st.lists(st.lists(st.integers(0, 10_000), max_size=30).map(sorted),
                      min_size=1, max_size=3)


def drained(merge: InputMerge, unread: object) -> list[tuple[int, int]]:
    out = []
    while (item := merge.next(unread)) is not None:  # type: ignore[arg-type]
        out.append(item)
    return out


@given(partitions)
def test_a_backlog_read_to_its_end_comes_out_in_event_time_order(parts: list[list[int]]) -> None:
    merge = InputMerge(wait_s=60.0, clock=lambda: 0.0)
    merge.holding(range(len(parts)))
    for p, times in enumerate(parts):
        for t in times:
            merge.put(p, t, (t, p))
    out = drained(merge, lambda tp: False)
    assert [t for t, _ in out] == sorted(t for times in parts for t in times)
    for p, times in enumerate(parts):  # and each partition's own order
        assert [t for t, q in out if q == p] == times
    assert merge.held == 0


@given(partitions)
def test_nothing_goes_while_a_partition_with_unread_events_is_empty(
        parts: list[list[int]]) -> None:
    parts = [times for times in parts if times]  # (an empty one with unread events: all wait)
    merge = InputMerge(wait_s=60.0, clock=lambda: 0.0)
    merge.holding(range(len(parts) + 1))  # the last one has events still to read
    for p, times in enumerate(parts):
        for t in times:
            merge.put(p, t, (t, p))
    assert drained(merge, lambda tp: True) == []
    assert merge.held == sum(map(len, parts))
    merge.put(len(parts), 10_001, (10_001, len(parts)))  # it comes, later than all of them
    out = [t for t, _ in drained(merge, lambda tp: True)]
    # The earliest go, until a partition with unread events is empty again.
    everything = sorted([10_001, *(t for times in parts for t in times)])
    assert out and out == everything[:len(out)]


def test_a_lagging_partition_holds_the_others_back_at_most_the_wait_or_the_cap() -> None:
    now = [0.0]
    merge = InputMerge(wait_s=1.0, held_max=3, clock=lambda: now[0])
    merge.holding({"a", "b"})
    merge.put("a", 1, "x")
    assert merge.next(lambda tp: True) is None
    now[0] = 1.0
    assert merge.next(lambda tp: True) == "x"
    for t in range(4):  # over the cap: the earliest goes at once
        merge.put("a", t, t)
    assert merge.next(lambda tp: True) == 0
    assert merge.next(lambda tp: True) is None  # within the cap again, and not overdue
    merge.drop({"a"})  # revoked: forgotten, read again by the new holder
    assert merge.held == 0 and merge.next(lambda tp: True) is None
