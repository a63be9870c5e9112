"""``python benchmarks/heldout.py --seeds S1 S2 S3``: issue 3's detection targets, per seed.

Simulates one company per seed (500 employees x 28 days by default), runs ``snoopwatch
evaluate`` on it and prints every target of issue 3 for each seed and pooled over them,
each miss marked ``MISS``. Pooled: false alerts per 1,000 actor-days over all actor-days,
detection rate and median time to detect over all instances, the worst seed for the AUC and
the budgeted recall. The figures mean something only on seeds never used for tuning: pick new
seeds, run once, report what it prints (``--json`` keeps it, with each instance's time).
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

from stream.evaluate import Report, evaluate, format_minutes
from stream.progress import Progress
from stream.simulate import SimConfig, write_jsonl

AUC_MIN = 0.98
RECALL_SHARE_MIN = 0.90  # recall at the 1% budget, as a share of its ceiling
DETECTED_MIN = 0.90  # of each scenario's instances
FALSE_PER_1000_MAX = 1.0
# scenario -> most minutes its median time to detect may take
TTD_MAX = {"bulk_leak": 30.0, "compromised_account": 30.0, "camera_spying": 30.0,
           "low_and_slow": 3 * 1440.0}

Cell = tuple[str, bool | None]  # shown value, and whether it meets its target (None: no target)


def _scenario_cells(label: str, delays: list[float | None]) -> dict[str, Cell]:
    """A scenario's rows from its instances' times to detect (``None``: missed)."""
    found = [d for d in delays if d is not None]
    median = statistics.median(found) if found else None
    limit = TTD_MAX.get(label)
    ok = None if limit is None else median is not None and median <= limit
    return {f"{label}: detected": (f"{len(found)}/{len(delays)}",
                                   len(found) >= DETECTED_MIN * len(delays)),
            # two decimals: 3.04 days misses 3
            f"{label}: median time": (format_minutes(median, day_digits=2), ok)}


def seed_cells(rep: Report) -> dict[str, Cell]:
    """Each target's row for one seed."""
    recall, ceiling = rep.recall_at[0.01]
    share = recall / ceiling if ceiling else math.nan
    cells: dict[str, Cell] = {
        "actor-day ROC AUC": (f"{rep.actor_day_auc:.3f}", rep.actor_day_auc >= AUC_MIN),
        "recall at 1% / ceiling": (f"{recall:.3f}/{ceiling:.3f} = {share:.2f}",
                                   share >= RECALL_SHARE_MIN),
        "false alerts per 1,000 actor-days": (f"{rep.false_per_1000_actor_days:.2f}",
                                              rep.false_per_1000_actor_days <= FALSE_PER_1000_MAX),
    }
    for label, sc in sorted(rep.scenarios.items()):
        cells.update(_scenario_cells(label, sc["minutes_to_detect"]))
    return cells


def pooled_cells(reports: list[Report]) -> dict[str, Cell]:
    """Each target's row over every seed together."""
    cells: dict[str, Cell] = {}
    auc = min(r.actor_day_auc for r in reports)
    cells["actor-day ROC AUC"] = (f"worst {auc:.3f}", auc >= AUC_MIN)
    share = min(r.recall_at[0.01][0] / r.recall_at[0.01][1] for r in reports)
    cells["recall at 1% / ceiling"] = (f"worst {share:.2f}", share >= RECALL_SHARE_MIN)
    false = sum(r.false_alerts for r in reports)
    negatives = sum(r.actor_days - r.malicious_actor_days for r in reports)
    rate = 1000 * false / negatives
    cells["false alerts per 1,000 actor-days"] = (f"{rate:.2f}", rate <= FALSE_PER_1000_MAX)
    for label in sorted({label for r in reports for label in r.scenarios}):
        cells.update(_scenario_cells(label, [
            d for r in reports for d in r.scenarios.get(label, {}).get("minutes_to_detect", [])]))
    return cells


def table(columns: dict[str, dict[str, Cell]]) -> str:
    """Rows of targets, one column per seed (and the pooled one); MISS marks a missed target."""
    rows = list(dict.fromkeys(k for col in columns.values() for k in col))

    def show(cell: Cell | None) -> str:
        if cell is None:
            return "-"
        value, ok = cell
        return value if ok is not False else f"{value} MISS"

    grid = [[show(col.get(r)) for col in columns.values()] for r in rows]
    width = max(len(r) for r in rows)
    widths = [max(len(name), *(len(line[i]) for line in grid))
              for i, name in enumerate(columns)]
    out = [" " * width + "".join(f"  {n:>{w}}" for n, w in zip(columns, widths, strict=True))]
    for r, line in zip(rows, grid, strict=True):
        out.append(f"{r:<{width}}" + "".join(f"  {c:>{w}}"
                                             for c, w in zip(line, widths, strict=True)))
    return "\n".join(out)


def run_seed(seed: int, employees: int, days: int, workdir: Path, progress: bool) -> Report:
    """Simulate the seed's company into ``workdir`` and evaluate snoopwatch on it."""
    ev, lab, ctx = (str(workdir / f"{seed}.{n}") for n in ("jsonl", "labels", "ctx"))
    write_jsonl(SimConfig(seed=seed, employees=employees, days=days), ev, lab, ctx,
                progress=progress)
    return evaluate(ev, lab, context_path=ctx, baseline=False,
                    progress=Progress(f"evaluate seed {seed}", enabled=progress)
                    ).reports["snoopwatch"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", required=True,
                   help="simulation seeds never used for tuning")
    p.add_argument("--employees", type=int, default=500)
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--keep", help="write the simulated files here instead of a temporary "
                                  "directory, and keep them")
    p.add_argument("--json", help="also write every seed's figures here")
    args = p.parse_args(argv)
    progress = sys.stderr.isatty()
    reports: dict[str, Report] = {}
    with tempfile.TemporaryDirectory(prefix="snoopwatch-heldout-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            reports[str(seed)] = run_seed(seed, args.employees, args.days, workdir, progress)
    columns = {f"seed {s}": seed_cells(r) for s, r in reports.items()}
    columns["all seeds"] = pooled_cells(list(reports.values()))
    print(f"{args.employees} employees x {args.days} days per seed; targets of issue 3")
    print(table(columns))
    missed = [f"{name}: {row}" for name, col in columns.items()
              for row, (_, ok) in col.items() if ok is False]
    print("every target met" if not missed else "missed: " + "; ".join(missed))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"company": {"employees": args.employees, "days": args.days},
             "seeds": {s: r.to_dict() for s, r in reports.items()}}, indent=1))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
