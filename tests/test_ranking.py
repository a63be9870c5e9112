"""``benchmarks/ranking.py``: which honest actor-days take the 5 % budget's slots."""

from __future__ import annotations

import doctest
import os
from pathlib import Path
from typing import Any

from benchmarks import ranking
from benchmarks.ranking import lost_slots, main, peaks_of, tally
from detectors.engine import signal_names
from detectors.settings import Settings
from detectors.signals.base import DAY_MS
from stream.replay import replay
from stream.simulate import SimConfig, write_jsonl


def test_doctests() -> None:
    result = doctest.testmod(ranking)
    assert result.failed == 0 and result.attempted > 0  # (none run would fail none)


def test_lost_slots_are_honest_days_above_an_insider_left_out() -> None:
    # 20 actor-days: the top 5 % is one slot, taken by an honest day above the insider.
    day = [(0.9, False), (0.5, True)] + [(0.1, False)] * 18
    assert lost_slots(day) == (1, 1)
    # The insider on top: nothing lost, though the second insider day is left out (one slot).
    assert lost_slots([(0.9, True), (0.5, True)] + [(0.1, False)] * 18) == (0, 1)
    # Nothing left out, nothing lost.
    assert lost_slots([(0.9, True)] + [(0.1, False)] * 19) == (0, 0)


def test_tally_counts_by_week_and_by_the_signals_at_the_peaks() -> None:
    peaks, insider = {}, {}
    for d in (0, 8):  # a day of week 1 and one of week 2; 20 actor-days each
        peaks[("agent-1", d)] = (0.6, "unjustified")   # honest, takes the one slot
        peaks[("spy", d)] = (0.4, "accumulated")        # insider, left out
        insider[("spy", d)] = "low_and_slow"
        for i in range(18):
            peaks[(f"quiet-{i}", d)] = (0.0, "-")
    peaks[("spy", 8)] = (0.7, "vip")  # in week 2 the insider ranks first: nothing lost
    out = tally(peaks, insider)
    assert out["week"] == {0: 1}
    assert out["insider_week"] == {0: 1, 1: 1}
    assert out["thief"] == {"unjustified": 1}
    assert out["left_out"] == {("low_and_slow", "accumulated"): 1}


def test_peaks_are_the_evaluations_actor_day_scores(tmp_path: Path, capsys) -> None:
    stem = str(tmp_path / "co")
    write_jsonl(SimConfig(seed=5, agents=12, days=4, insiders=1), f"{stem}.jsonl",
                f"{stem}.labels", f"{stem}.ctx")
    peaks, insider = peaks_of(stem, Settings())
    # What `snoopwatch evaluate` ranks: each actor-day's highest score, from a replay of
    # its own (its engine's state is not read).
    scores: dict = {}

    def on_score(ev: Any, score: float, alert: Any) -> None:
        key = (ev.actor, ev.time_ms // DAY_MS)
        scores[key] = max(scores.get(key, 0.0), score)

    replay(f"{stem}.jsonl", os.devnull, context_path=f"{stem}.ctx", settings=Settings(),
           on_score=on_score)
    assert {k: v[0] for k, v in peaks.items()} == scores
    assert insider and all(k in peaks for k in insider)
    names = {*signal_names(), "-"}
    assert {sig for _, sig in peaks.values()} <= names
    assert any(sig != "-" for _, sig in peaks.values())  # the signals were read, not skipped
    assert main([stem]) == 0
    assert "slots lost / insider days, by week of the data: week 1" in capsys.readouterr().out
