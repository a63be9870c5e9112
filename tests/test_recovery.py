"""Exact recovery on the real broker (issue 15): SIGKILLs, a handover, a broker restart.

A 1-partition company with its context file, 20 malformed lines and two malformed context
entries. Every alert sent must equal an uninterrupted ``snoopwatch replay``'s alert of its id
byte for byte but for ``emitted_at`` (re-sends included), the set of alert ids must be
replay's, and every malformed message must be dead-lettered exactly once per offset, after:

- ``snoopwatch worker`` killed twice, each when its observed input offset
  (``snoopwatch_input_offset``) reaches a seeded random target (not a sleep, not just after a
  checkpoint), and restarted;
- a second worker joining the group at a seeded offset, then the one holding the partition
  SIGKILLed at a later seeded offset: the other takes it over and finishes;
- the broker (a dedicated one: restarting the shared broker would disturb other tests)
  stopped and started again at a seeded offset while the worker runs.

The long versions: ``benchmarks/recovery.py --mode kills|handover|broker-restart``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.recovery import (
    Outcome,
    make_case,
    run_broker_restart,
    run_case,
    run_handover,
)
from stream.simulate import SimConfig
from tests.procs import BROKER, require_broker

pytestmark = pytest.mark.kafka


def assert_exact(out: Outcome) -> None:
    assert out.replay_alerts > 0
    assert not out.ids_missing, f"alerts replay raises that the worker never sent: {out.line()}"
    assert not out.ids_extra, f"alerts the worker invented: {out.line()}"
    assert not out.differing, f"alerts sent with other contents than replay's: {out.line()}"
    assert not out.dlq_problems, f"dead letters not once per offset: {out.line()}"


@pytest.mark.parametrize("seed", [5])
def test_sigkill_at_seeded_moments_gives_replays_alerts_and_dead_letters_once(
        tmp_path: Path, seed: int) -> None:
    require_broker()
    cfg = SimConfig(seed=seed, employees=30, days=4)
    out = run_case(make_case(cfg, 20, seed), tmp_path, kills=2, seed=seed, broker=BROKER)
    print(f"\nrecovery: {out.line()}")
    assert len(out.kills_at) == 2
    assert_exact(out)


@pytest.mark.parametrize("seed", [6])
def test_a_worker_joining_then_the_holder_sigkilled_gives_replays_alerts(
        tmp_path: Path, seed: int) -> None:
    require_broker()
    cfg = SimConfig(seed=seed, employees=30, days=8)  # the join lands mid-stream
    out = run_handover(make_case(cfg, 200, seed), tmp_path, seed, broker=BROKER)
    print(f"\nhandover: {out.line()}")
    assert len(out.kills_at) == 1 and "finished" in out.story[-3]
    # the survivor took over from the dead holder's checkpoints, not from nothing
    assert not out.story[-2].endswith(" restored 0 state records"), out.line()
    # no event of the one partition forwarded by a worker that had it taken away
    assert out.story[-1].startswith("0 events took"), out.line()
    assert_exact(out)


@pytest.mark.parametrize("seed", [7])
def test_broker_restarted_under_load_gives_replays_alerts(tmp_path: Path, seed: int) -> None:
    cfg = SimConfig(seed=seed, employees=30, days=4)
    out = run_broker_restart(make_case(cfg, 20, seed), tmp_path, seed)
    print(f"\nbroker restart: {out.line()}")
    assert out.story[0].startswith("broker stopped at offset")
    assert_exact(out)
