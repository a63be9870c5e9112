"""What the worker, ``replay`` and the downstream consumers (alerts tail, the Alertmanager
forwarder, the audit) share, so that none of them imports another or a tool: message
headers, the one-line alert format, reading a ``/metrics`` page."""

from __future__ import annotations

import urllib.request
from typing import Any

# Header naming where a message came from (topic:partition:offset) on the by-actor hop and on
# dead letters: the worker writes it, the audit and the dead-letter read-back read it.
SOURCE_HEADER = "snoopwatch-source"


def scrape(url: str) -> dict[str, float]:
    """Unlabelled and labelled samples of a /metrics page, as {'name{labels}': value}."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def alert_line(alert: dict[str, Any]) -> str:
    """One readable line per alert, for a terminal."""
    when = alert["time"][:16].replace("T", " ")
    return (f"[{alert['severity'].upper():8}] {alert['score']:5.1f}  {when}  "
            f"{alert['summary']}")
