"""Stopping the subprocesses snoopwatch's tools start (workers in the demo, benchmarks, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a process's log, for an error message ("" if it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_ready(what: str, ready: Callable[[], object], proc: subprocess.Popen, log: Path,
               timeout_s: float, goal: str = "get ready",
               error: type[Exception] = RuntimeError, every_s: float = 0.2) -> object:
    """Poll ``ready()`` until it is truthy and return that value; raise ``error`` with the
    log's tail if ``proc`` exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not (value := ready()):
        if proc.poll() is not None:
            raise error(f"{what} exited with {proc.returncode}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise error(f"{what} did not {goal} in {timeout_s:.0f} s:\n{log_tail(log)}")
        time.sleep(every_s)
    return value
