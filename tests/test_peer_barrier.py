"""The peer-ops barrier on the real broker (issue 15 item 2): a company on a 4-partition
input keyed by actor gives, with 1 worker and with 2 workers started together, the alerts
``snoopwatch replay`` gives: the same ids, byte for byte but for ``emitted_at``.

Without the barrier (``SNOOPWATCH_PEER_BARRIER=0``) each worker learns cross-actor state
from its own partitions with its own clock, and both comparisons fail (see the commit that
added this test). The in-process version, with many interleavings: tests/test_peerops.py.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from benchmarks.recovery import make_case, scaleout
from stream.simulate import SimConfig
from tests.procs import BROKER, require_broker

pytestmark = pytest.mark.kafka


def differences(got: dict[str, bytes], ref: dict[str, bytes]) -> str:
    lines = [f"{len(got)} alerts against replay's {len(ref)}"]
    for i in sorted(set(got) | set(ref)):
        if got.get(i) != ref.get(i):
            a = orjson.loads(got.get(i) or ref[i])
            where = "both" if i in got and i in ref else "worker" if i in got else "replay"
            lines.append(f"  {where}: {a['actor']} {a['time']} {a['score']}")
    return "\n".join(lines)


def test_one_and_two_workers_raise_replays_alerts(tmp_path: Path) -> None:
    require_broker()
    seed = 3
    case = make_case(SimConfig(seed=seed, employees=30, days=3), 10, seed)
    result = scaleout(case, tmp_path, seed, broker=BROKER, kill=False, idle_close_s=2.0)
    ref = result["replay"]
    assert len(ref) >= 3, "too few alerts in replay to compare"
    for name in ("1 worker", "2 workers"):
        got = result[name]
        assert sorted(got) == sorted(ref), f"{name}: {differences(got, ref)}"
        assert got == ref, f"{name}: {differences(got, ref)}"
