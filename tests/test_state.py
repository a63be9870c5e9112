"""The worker's per-actor admission: replays, duplicates and events forwarded twice."""

from __future__ import annotations

from detectors.engine import Engine
from detectors.settings import Settings
from stream.metrics import Metrics
from stream.state import ActorStore, decode_record, encode_record


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
