"""``snoopwatch demo`` (what ``make demo`` runs after starting its broker), on the test broker:
the insider is caught, no normal staff is alerted, the output is free of Kafka client noise,
and nothing is left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import BROKER, require_broker

pytestmark = pytest.mark.kafka


def test_demo_catches_the_insider_and_leaves_nothing_running(tmp_path: Path) -> None:
    require_broker()
    env = {**os.environ, "SNOOPWATCH_BROKER": BROKER}
    done = subprocess.run([sys.executable, "-m", "stream.cli", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.search(r"insider \S+: caught, \d+ alert", out), out[-3000:]
    assert "normal staff alerted 0" in out, out[-3000:]
    # The topics are ready before the first send, so the producer has nothing to warn about
    # (it did, once per send, on a freshly started broker: make demo's case).
    assert "not found in cluster metadata" not in out
    worker = re.search(r"worker started \(pid (\d+)", out)
    assert worker, out[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(int(worker.group(1)), 0)
