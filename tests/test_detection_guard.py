"""The detection guard in ``make test``: a small held-out company replayed and scored
against benchmarks/detection_reference.json, failing on a drop beyond its measured noise."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import fields
from pathlib import Path

import pytest

from benchmarks.detection_guard import (
    COMPANY,
    REFERENCE,
    compare,
    guard_config,
    main,
    score,
    simulate,
)
from detectors.settings import Settings

REF = {
    "figures": {"actor_day_auc": 0.99, "recall_share_5%": 0.95,
                "false_per_1000_actor_days": 0.5, "instances_detected": 5,
                "detected": {"bulk_leak": 2, "low_and_slow": 3},
                "instances": {"bulk_leak": 2, "low_and_slow": 4}},
    "tolerance": {"actor_day_auc": 0.004, "recall_share_5%": 0.02,
                  "false_per_1000_actor_days": 0.3, "instances_detected": 1.2,
                  "detected_share": {"bulk_leak": 0.0, "low_and_slow": 0.3}},
}


def _now(**changes: object) -> dict:
    now = copy.deepcopy(REF["figures"])
    now.update(changes)
    return now


def test_drops_within_the_noise_pass() -> None:
    assert compare(_now(), REF) == []
    # 0.004 of AUC, 0.3 more false alerts, one of four scrapers (0.3 x 4 = 1.2 -> 1).
    assert compare(_now(actor_day_auc=0.986, false_per_1000_actor_days=0.8,
                        instances_detected=4,
                        detected={"bulk_leak": 2, "low_and_slow": 2}), REF) == []


def test_each_drop_beyond_the_noise_is_reported() -> None:
    msgs = compare(_now(actor_day_auc=0.985, **{"recall_share_5%": 0.92},
                        false_per_1000_actor_days=0.81, instances_detected=2,
                        detected={"bulk_leak": 1, "low_and_slow": 1}), REF)
    assert [m.split(":")[0].split(" ")[0] for m in msgs] == [
        "actor_day_auc", "recall_share_5%", "false_per_1000_actor_days", "instances_detected",
        "bulk_leak", "low_and_slow"]
    # Per instance: a scenario with one of two instances lost is a drop, not "detected".
    assert "bulk_leak detected 1/2 (reference 2/2, may lose 0)" in msgs


def test_rebaseline_refuses_without_a_note(capsys) -> None:
    before = REFERENCE.read_bytes()
    assert main(["--rebaseline"]) == 2
    assert main(["--rebaseline", "--note", "  "]) == 2
    assert "needs --note" in capsys.readouterr().err
    assert REFERENCE.read_bytes() == before


def test_the_reference_is_for_the_guarded_company_and_says_how() -> None:
    ref = json.loads(REFERENCE.read_text())
    assert ref["company"] == COMPANY
    assert set(ref["tolerance"]) >= {"actor_day_auc", "recall_share_5%",
                                     "false_per_1000_actor_days", "instances_detected",
                                     "detected_share"}
    assert len(ref["noise"]["runs"]) >= 5 and "standard deviation" in ref["note"]
    assert ref["history"] and all(h["note"] for h in ref["history"])
    # Every scenario kind is in the guarded company, counted per instance.
    assert len(ref["figures"]["instances"]) == 7


@pytest.fixture(scope="module")
def guard_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    return simulate(guard_config(), tmp_path_factory.mktemp("guard"))


def test_detection_holds_on_the_guarded_company(guard_files) -> None:
    ref = json.loads(REFERENCE.read_text())
    now = score(guard_files)
    assert now["instances"] == ref["figures"]["instances"], "the company itself changed"
    assert compare(now, ref) == []


def _disabling_supported() -> bool:
    return any(f.name == "disabled_signals" for f in fields(Settings))


@pytest.mark.xfail(not _disabling_supported(), strict=True,
                   reason="needs SNOOPWATCH_DISABLED_SIGNALS")
def test_the_guard_fails_with_the_no_ticket_detector_switched_off(
        guard_files, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOOPWATCH_DISABLED_SIGNALS", "unjustified")
    now = score(guard_files)
    assert compare(now, json.loads(Path(REFERENCE).read_text())), \
        "the guard passed with the unjustified signal off"
    assert os.environ["SNOOPWATCH_DISABLED_SIGNALS"] == "unjustified"
