"""``python benchmarks/detection_guard.py``: fail if detection got worse (issue 6).

Speed work must not buy throughput with detection. This simulates one fixed company
(``--employees``/``--days``/``--seed``; a guard, not a reported result), runs
``snoopwatch evaluate`` on it without the baseline, and compares the figures with the
reference in ``benchmarks/detection_reference.json``. It prints both side by side and exits
1 when any figure is worse than the reference by more than its tolerance: AUCs, average
precision and budgeted recall may not fall, false alerts may not rise, and no scenario may
be detected fewer times. ``--update`` writes the current figures as the new reference (do it
only for a deliberate detection change, and say so in the commit).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from benchmarks.heldout import run_seed  # noqa: E402

REFERENCE = Path(__file__).with_name("detection_reference.json")
# figure -> (direction, tolerance): +1 higher is better, -1 lower is better.
CHECKS: dict[str, tuple[int, float]] = {
    "event_auc": (+1, 0.002),
    "actor_day_auc": (+1, 0.002),
    "actor_day_ap": (+1, 0.01),
    "recall_at_1%": (+1, 0.0),
    "recall_at_5%": (+1, 0.0),
    "false_per_1000_actor_days": (-1, 0.0),
}


def figures(employees: int, days: int, seed: int, progress: bool) -> dict[str, Any]:
    """The guarded figures of snoopwatch on the simulated company."""
    with tempfile.TemporaryDirectory(prefix="snoopwatch-guard-") as tmp:
        rep = run_seed(seed, employees, days, Path(tmp), progress)
    out: dict[str, Any] = {"company": {"employees": employees, "days": days, "seed": seed},
                           "event_auc": rep.event_auc, "actor_day_auc": rep.actor_day_auc,
                           "actor_day_ap": rep.actor_day_ap,
                           "false_per_1000_actor_days": rep.false_per_1000_actor_days}
    for budget, (recall, _ceiling) in rep.recall_at.items():
        out[f"recall_at_{budget:.0%}"] = recall
    out["detected"] = {name: sc["detected"] for name, sc in sorted(rep.scenarios.items())}
    return out


def compare(now: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """The figures that got worse than the reference, as messages."""
    worse = []
    for key, (direction, tol) in CHECKS.items():
        if key in ref and direction * (now[key] - ref[key]) < -tol - 1e-9:
            worse.append(f"{key}: {now[key]:.4f} (reference {ref[key]:.4f})")
    for name, n in ref.get("detected", {}).items():
        if now["detected"].get(name, 0) < n:
            worse.append(f"{name} detected {now['detected'].get(name, 0)} (reference {n})")
    return worse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--employees", type=int, default=300)
    p.add_argument("--days", type=int, default=21)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--update", action="store_true", help="write the reference and exit 0")
    p.add_argument("--json", help="also write the comparison here")
    args = p.parse_args(argv)
    now = figures(args.employees, args.days, args.seed, sys.stderr.isatty())
    if args.update:
        REFERENCE.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"reference written: {REFERENCE}")
        return 0
    ref = json.loads(REFERENCE.read_text())
    if ref["company"] != now["company"]:
        print(f"the reference is for {ref['company']}, not {now['company']}", file=sys.stderr)
        return 2
    print(f"{'detection figure':<30} {'now':>9} {'reference':>9}")
    for key in CHECKS:
        print(f"{key:<30} {now[key]:>9.4f} {ref[key]:>9.4f}")
    for name, n in ref["detected"].items():
        print(f"{name + ' detected':<30} {now['detected'].get(name, 0):>9} {n:>9}")
    worse = compare(now, ref)
    if args.json:
        Path(args.json).write_text(json.dumps({"now": now, "reference": ref, "worse": worse},
                                              indent=1))
    for w in worse:
        print(f"WORSE: {w}")
    print("detection: unchanged or better" if not worse else "detection: WORSE")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
