"""Exact recovery on the real broker (issue 15): SIGKILLs at seeded random moments.

A 1-partition company with its context file, 20 malformed lines and two malformed context
entries; ``snoopwatch worker`` is killed twice, each when its observed input offset reaches
a seeded random target (not a sleep, not just after a checkpoint), and restarted. Every alert
sent must equal an uninterrupted ``snoopwatch replay``'s alert of its id byte for byte but
for ``emitted_at`` (re-sends included), the set of alert ids must be replay's, and every
malformed message must be dead-lettered exactly once per offset. The long version, 20 runs
of 3 kills: ``benchmarks/recovery.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.recovery import make_case, run_case
from stream.simulate import SimConfig
from tests.procs import BROKER, require_broker

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("seed", [5])
def test_sigkill_at_seeded_moments_gives_replays_alerts_and_dead_letters_once(
        tmp_path: Path, seed: int) -> None:
    require_broker()
    cfg = SimConfig(seed=seed, employees=30, days=4)
    out = run_case(make_case(cfg, 20, seed), tmp_path, kills=2, seed=seed, broker=BROKER)
    print(f"\nrecovery: {out.line()}")
    assert len(out.kills_at) == 2 and out.replay_alerts > 0
    assert not out.ids_missing, f"alerts replay raises that the worker never sent: {out.line()}"
    assert not out.ids_extra, f"alerts the worker invented: {out.line()}"
    assert not out.differing, f"alerts sent with other contents than replay's: {out.line()}"
    assert not out.dlq_problems, f"dead letters not once per offset: {out.line()}"
