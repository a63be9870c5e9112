"""A one-line progress display for long commands: shown on a terminal, silent when piped."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    """Throttled ``\\r``-updated counter; every method is a no-op when not enabled."""

    def __init__(self, label: str, stream: IO[str] | None = None, enabled: bool = True,
                 every_s: float = 0.5) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    @classmethod
    def for_stderr(cls, label: str) -> Progress:
        return cls(label, sys.stderr, enabled=sys.stderr.isatty())

    def update(self, done: int, unit: str = "events") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.label}: {done:,} {unit} ({rate:,.0f}/s)   ")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
