"""The detection guard of `make bench` fails on worse figures and passes on equal ones."""

from __future__ import annotations

from benchmarks.detection_guard import REFERENCE, compare

REF = {"event_auc": 0.97, "actor_day_auc": 0.99, "actor_day_ap": 0.9, "recall_at_1%": 0.9,
       "recall_at_5%": 1.0, "false_per_1000_actor_days": 0.5,
       "detected": {"bulk_leak": 2, "low_and_slow": 2}}


def test_equal_or_better_figures_pass() -> None:
    better = {**REF, "actor_day_auc": 0.995, "false_per_1000_actor_days": 0.3,
              "detected": {"bulk_leak": 2, "low_and_slow": 2}}
    assert compare(dict(REF), REF) == []
    assert compare(better, REF) == []


def test_each_kind_of_drop_is_reported() -> None:
    worse = {**REF, "actor_day_auc": 0.98, "false_per_1000_actor_days": 0.6,
             "detected": {"bulk_leak": 2, "low_and_slow": 1}}
    msgs = compare(worse, REF)
    assert any(m.startswith("actor_day_auc") for m in msgs)
    assert any(m.startswith("false_per_1000") for m in msgs)
    assert any(m.startswith("low_and_slow detected 1") for m in msgs)
    assert len(msgs) == 3


def test_the_reference_covers_every_checked_figure() -> None:
    import json

    ref = json.loads(REFERENCE.read_text())
    assert set(REF) <= set(ref) and ref["detected"]
