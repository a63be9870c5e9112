"""``snoopwatch worker`` with the detection core replaced by a constant: everything else.

``bench.py`` runs it beside the real worker to split the worker's per-event cost in two:
faust, decoding, validation, admission, checkpoints and metrics (this process) against
the detection core (the difference). Every event still goes through the agents and is
counted as processed; ``Engine.process`` returns a zero risk and never an alert.
"""

from __future__ import annotations

from detectors.engine import Engine, Verdict
from stream.app import run_worker

_NOTHING = Verdict(score=0.0, alert=None)


def _no_detection(self: Engine, ev: object) -> Verdict:
    return _NOTHING


if __name__ == "__main__":
    Engine.process = _no_detection  # type: ignore[method-assign]
    run_worker()
