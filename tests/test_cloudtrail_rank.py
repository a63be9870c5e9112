"""Issue 16 item 3, measured: a principal taken over and used from a new client and network
to list and download S3 objects, among routine CloudTrail traffic (benchmarks/cloudtrail_rank.py
says how the capture and its labels are built from the shared samples)."""

from __future__ import annotations

import pytest

from benchmarks.cloudtrail_rank import SHARED, build_capture, measure
from detectors.events import parse_time
from detectors.settings import Settings


@pytest.fixture(scope="module")
def figures() -> dict:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the shared samples sit beside the repository)")
    return measure()


def test_the_capture_and_its_labels() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    records, bad = build_capture()
    assert len(bad) == 11  # the stolen role's 2 real calls and its 9 S3 calls from outside
    roles = {r["userIdentity"]["arn"] for r in records if r["eventID"] in bad}
    assert len(roles) == 1 and ":assumed-role/" in roles.pop()
    times = [parse_time(r["eventTime"]) for r in records]
    assert times == sorted(times)


def test_the_taken_over_principal_ranks_above_every_benign_one(figures: dict) -> None:
    assert figures["malicious_events"] == 11 and figures["dead_lettered"] == 3
    assert figures["actor_auc"] >= 0.9, figures
    assert figures["event_auc"] > 0.5, figures
    assert figures["alerts_attacker"] >= 1 and not figures["alerts_benign"], figures


def test_the_new_origin_signal_is_what_finds_it() -> None:
    """Without the new_origin signal the stolen role scores nothing (a capture of minutes
    gives no other signal its history): the figures above are that signal's."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    off = measure(settings=Settings(disabled_signals="new_origin"))
    assert off["attacker_max_score"] == 0.0 and off["actor_auc"] < 0.6, off
