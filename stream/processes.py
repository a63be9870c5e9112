"""Stopping the subprocesses snoopwatch's tools start (workers in the demo, benchmarks, tests)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 20, group: bool = False) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; ``group`` signals its process group."""
    if proc.poll() is not None:
        return

    def send(sig: int) -> None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()
