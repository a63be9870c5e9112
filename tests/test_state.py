"""The worker's per-actor admission: replays, duplicates and events forwarded twice."""

from __future__ import annotations

import pickle

from detectors.engine import Engine
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.state import ActorMeta, ActorStore, decode_record, encode_record, id_digest


def test_an_event_forwarded_again_after_an_ingest_restart_counts_once() -> None:
    metrics = Metrics()
    store = ActorStore(Settings(dedup_window=2), Engine(), metrics)
    # By-actor offsets 0..2 carry input offsets 10..12 of input partition 3.
    assert [store.admit("ann", f"e{i}", 0, i, (3, 10 + i)) for i in range(3)] == ["process"] * 3
    # Ingest restarted before committing: input offsets 10..12 arrive again, with new
    # by-actor offsets and ids already out of the (tiny) id window.
    again = [store.admit("ann", f"e{i}", 0, 3 + i, (3, 10 + i)) for i in range(3)]
    assert again == ["duplicate"] * 3
    assert store.admit("ann", "e3", 0, 6, (3, 13)) == "process"  # the next new event
    assert store.admit("ann", "e3", 0, 6, (3, 13)) == "replayed"  # same by-actor offset
    assert metrics.duplicates._value.get() == 3


def test_the_forwarding_watermark_survives_a_checkpoint() -> None:
    store = ActorStore(Settings(), Engine(), Metrics())
    store.admit("ann", "e1", 0, 0, (1, 41))
    meta = store.meta["ann"]
    restored, _ = decode_record(encode_record(meta, object()), 0)
    assert restored.sources == {1: 41} and restored.offset == 0


def test_the_id_window_remembers_the_last_n_ids_and_survives_a_checkpoint() -> None:
    store = ActorStore(Settings(dedup_window=3), Engine(), Metrics())
    ids = [f"e{i}" for i in range(5)]
    assert [store.admit("ann", i, 0, None) for i in ids] == ["process"] * 5
    meta = store.meta["ann"]
    assert len(meta.ids) == 3 * 8  # three 8-byte digests: a window, not a history
    restored, _ = decode_record(encode_record(meta, object()), 0)
    for m in (meta, restored):  # the last three are duplicates; e0, e1 fell out of it
        store.meta["ann"] = m
        assert [store.admit("ann", i, 0, None) for i in ids[2:]] == ["duplicate"] * 3
    store.meta["ann"] = restored
    assert store.admit("ann", "e1", 0, None) == "process"  # it takes the oldest slot (e2)
    assert store.admit("ann", "e2", 0, None) == "process"
    assert store.admit("ann", "e4", 0, None) == "duplicate"


def test_a_digest_straddling_two_slots_is_not_a_match() -> None:
    meta = ActorMeta(0)
    a, b = id_digest("a"), id_digest("b")
    assert not meta.seen(a, 4) and not meta.seen(b, 4)
    straddle = (a + b)[4:12]
    assert not meta.seen(straddle, 4)
    assert meta.seen(a, 4) and meta.seen(b, 4) and meta.seen(straddle, 4)


def test_a_checkpoint_written_with_id_strings_still_restores() -> None:
    old = pickle.dumps({"v": 1, "offset": 7, "ids": ["e1", "e2"], "sources": {0: 3},
                        "state": None})
    meta, _ = decode_record(old, 0)
    store = ActorStore(Settings(), Engine(), Metrics())
    store.meta["ann"] = meta
    assert store.admit("ann", "e2", 0, 8) == "duplicate"
    assert store.admit("ann", "e3", 0, 9) == "process"
