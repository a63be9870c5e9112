"""A company whose VIP snoops and departing grab are caught only with their context.

Shared by the replay test (tests/test_replay.py) and the worker test on the real broker
(tests/test_kafka.py): each fails when VIP and departing context entries are read but
not applied. An instance is "caught" when an alert on its actor falls within
:data:`PROMPT_MS` of its first labelled event (a VIP snoop: curiosity is one morning's
reads, found late it is found by something else) or, for a departing grab, anywhere from
its first labelled event to a day after its last.
"""

from __future__ import annotations

from datetime import datetime

from stream.simulate import LABEL_DEPARTING_EMPLOYEE, LABEL_VIP_SNOOPING, SimConfig

SIM = SimConfig(seed=21, employees=100, days=21,
                scenarios={LABEL_VIP_SNOOPING: 3, LABEL_DEPARTING_EMPLOYEE: 1})
PROMPT_MS = 3_600_000
DAY_MS = 86_400_000


def _ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def instances(events: list[tuple[dict, str | None]]) -> dict[tuple[str, str], list[int]]:
    """(actor, label) -> [first, last] labelled event time (ms)."""
    out: dict[tuple[str, str], list[int]] = {}
    for ev, label in events:
        if label is not None:
            t = _ms(ev["time"])
            span = out.setdefault((ev["actor"], label), [t, t])
            span[1] = t
    return out


def caught(spans: dict[tuple[str, str], list[int]], alerts: list[dict]
           ) -> dict[tuple[str, str], bool]:
    """Per instance: whether an alert on its actor caught it (see the module docstring)."""
    times: dict[str, list[int]] = {}
    for a in alerts:
        times.setdefault(a["actor"], []).append(_ms(a["time"]))
    out = {}
    for (actor, label), (t0, t1) in spans.items():
        end = t0 + PROMPT_MS if label == LABEL_VIP_SNOOPING else t1 + DAY_MS
        out[actor, label] = any(t0 <= t <= end for t in times.get(actor, []))
    return out
