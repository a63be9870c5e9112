"""``benchmarks/heldout.py --family heldout --seeds S1 S2 S3``: issue 14's targets, per company.

Each seed draws one company of the family (``snoopwatch simulate --family F --seed S``:
the company itself varies, docs/detection.md "Families"), simulates it, runs ``snoopwatch
evaluate`` on it and prints every target of issue 14 for each company, each miss marked
``MISS``: actor-day ROC AUC >= 0.97, recall at the 5 % daily budget >= 0.9 x its ceiling,
<= 1 false alert per 1,000 actor-days, >= 90 % of each scenario's instances detected.
Several families (``--family tuning heldout``) print the tuning-vs-held-out AUC gap (mean
over companies; target <= 0.02). ``--budget 0.5 1 3`` evaluates every company once per
value of ``SNOOPWATCH_FALSE_ALERT_BUDGET`` and checks false alerts per 1,000 actor-days stay
within 2x of it while >= 90 % of instances are detected. Companies run two at a time (the
machine's cores; ``--jobs 1`` for one). The figures mean something only on seeds drawn
after the last change: pick new seeds, run once, report what it prints (``--json`` keeps
it). Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from detectors.settings import Settings  # noqa: E402
from stream.evaluate import Report, evaluate  # noqa: E402
from stream.family import draw, record  # noqa: E402
from stream.progress import Progress  # noqa: E402
from stream.simulate import write_jsonl  # noqa: E402

AUC_MIN = 0.97
BUDGET = 0.05             # the daily investigation budget the recall target is judged at
RECALL_SHARE_MIN = 0.90   # recall at BUDGET as a share of its ceiling
DETECTED_MIN = 0.90       # of each scenario's instances
FALSE_PER_1000_MAX = 1.0
GAP_MAX = 0.02            # tuning-vs-held-out actor-day AUC gap
BUDGET_SLACK = 2.0        # false alerts per 1,000 within this factor of the budget
BUDGET_ENV = "SNOOPWATCH_FALSE_ALERT_BUDGET"
MAX_JOBS = 2              # the machine has two cores

Cell = tuple[str, bool | None]  # shown value, and whether it meets its target (None: no target)


def budget_supported() -> bool:
    """Whether this engine reads SNOOPWATCH_FALSE_ALERT_BUDGET (issue 14's setting)."""
    return any(f.name == "false_alert_budget" for f in fields(Settings))


def company_cells(rep: Report) -> dict[str, Cell]:
    """Each target's row for one company."""
    recall, ceiling = rep.recall_at[BUDGET]
    share = recall / ceiling if ceiling else math.nan
    cells: dict[str, Cell] = {
        "actor-day ROC AUC": (f"{rep.actor_day_auc:.3f}", rep.actor_day_auc >= AUC_MIN),
        "recall at 5% / ceiling": (f"{recall:.2f}/{ceiling:.2f} = {share:.2f}",
                                   share >= RECALL_SHARE_MIN),
        "false alerts per 1,000 actor-days": (f"{rep.false_per_1000_actor_days:.2f}",
                                              rep.false_per_1000_actor_days
                                              <= FALSE_PER_1000_MAX),
    }
    for label, sc in sorted(rep.scenarios.items()):
        n, found = sc["instances"], sc["detected"]
        cells[f"{label}: detected"] = (f"{found}/{n}", found >= DETECTED_MIN * n)
    return cells


def instances_share(rep: Report) -> tuple[int, int]:
    """(instances detected, instances) over every scenario."""
    return (sum(sc["detected"] for sc in rep.scenarios.values()),
            sum(sc["instances"] for sc in rep.scenarios.values()))


def budget_cells(reports: dict[float, Report]) -> dict[str, Cell]:
    """Per budget: false alerts per 1,000 (within 2x of it) and instances detected (>= 90 %)."""
    cells: dict[str, Cell] = {}
    for b, rep in sorted(reports.items()):
        rate = rep.false_per_1000_actor_days
        cells[f"budget {b:g}: false per 1,000"] = (f"{rate:.2f}", rate <= BUDGET_SLACK * b)
        found, n = instances_share(rep)
        cells[f"budget {b:g}: instances detected"] = (f"{found}/{n}", found >= DETECTED_MIN * n)
    return cells


def gap_cells(aucs: dict[str, list[float]]) -> dict[str, Cell]:
    """The tuning-vs-held-out AUC gap (mean over each family's companies)."""
    if "tuning" not in aucs or "heldout" not in aucs:
        return {}
    tun, held = statistics.fmean(aucs["tuning"]), statistics.fmean(aucs["heldout"])
    gap = tun - held
    return {"mean actor-day AUC, tuning": (f"{tun:.3f}", None),
            "mean actor-day AUC, held-out": (f"{held:.3f}", None),
            "AUC gap (tuning - held-out)": (f"{gap:+.3f}", gap <= GAP_MAX + 1e-9)}


def table(columns: dict[str, dict[str, Cell]]) -> str:
    """Rows of targets, one column per company; MISS marks a missed target."""
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


def run_company(family: str, seed: int, employees: int | None, days: int | None,
                workdir: str, budgets: list[float | None], progress: bool = False
                ) -> dict[str, Any]:
    """Simulate one company of ``family`` into ``workdir`` and evaluate snoopwatch on it,
    once per budget (``None``: the environment as it is). Runs in a worker process."""
    cfg, params = draw(family, seed, employees=employees, days=days)
    stem = Path(workdir) / f"{family}-{seed}"
    ev, lab, ctx = (f"{stem}.{n}" for n in ("jsonl", "labels", "ctx"))
    write_jsonl(cfg, ev, lab, ctx, progress=progress)
    reports: dict[float | None, Report] = {}
    saved = os.environ.get(BUDGET_ENV)
    try:
        for b in budgets:
            if b is not None:
                os.environ[BUDGET_ENV] = f"{b:g}"
            reports[b] = evaluate(ev, lab, context_path=ctx, settings=Settings.from_env(),
                                  baseline=False,
                                  progress=Progress(f"evaluate {family} {seed}",
                                                    enabled=progress)).reports["snoopwatch"]
    finally:
        if saved is None:
            os.environ.pop(BUDGET_ENV, None)
        else:
            os.environ[BUDGET_ENV] = saved
    return {"family": family, "seed": seed, "company": record(cfg, params), "reports": reports}


def run_all(families: list[str], seeds: list[int], employees: int | None, days: int | None,
            workdir: str, budgets: list[float | None], jobs: int, progress: bool
            ) -> list[dict[str, Any]]:
    """Every (family, seed) company, ``jobs`` at a time, in the order asked."""
    todo = [(f, s) for f in families for s in seeds]
    bar = Progress("heldout", enabled=progress)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    if jobs <= 1:
        for f, s in todo:
            results[f, s] = run_company(f, s, employees, days, workdir, budgets, progress)
            bar.update(len(results), f"of {len(todo)} companies")
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_company, f, s, employees, days, workdir, budgets): (f, s)
                       for f, s in todo}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(len(results), f"of {len(todo)} companies")
    bar.close()
    return [results[k] for k in todo]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", nargs="+", choices=("tuning", "heldout"), default=["heldout"],
                   help="families to draw companies from; both: also the AUC gap")
    p.add_argument("--seeds", type=int, nargs="+", required=True,
                   help="company seeds drawn after the last change (never tuned on)")
    p.add_argument("--employees", type=int, help="override every company's drawn size")
    p.add_argument("--days", type=int, help="days per company (default 28)")
    p.add_argument("--budget", type=float, nargs="+", metavar="B",
                   help=f"evaluate once per {BUDGET_ENV} value (e.g. 0.5 1 3) and check "
                        "false alerts per 1,000 actor-days stay within 2x of it")
    p.add_argument("--jobs", type=int, default=MAX_JOBS,
                   help=f"companies at a time (at most {MAX_JOBS}: the machine's cores)")
    p.add_argument("--keep", help="write the simulated files here instead of a temporary "
                                  "directory, and keep them")
    p.add_argument("--json", help="also write every company's figures and parameters here")
    args = p.parse_args(argv)
    if any(b <= 0 for b in args.budget or ()):
        p.error("--budget values must be > 0 (false alerts per 1,000 actor-days)")
    jobs = max(1, min(MAX_JOBS, args.jobs))
    progress = sys.stderr.isatty()
    budgets: list[float | None] = [None, *(args.budget or [])]
    with tempfile.TemporaryDirectory(prefix="snoopwatch-heldout-") as tmp:
        workdir = args.keep or tmp
        Path(workdir).mkdir(parents=True, exist_ok=True)
        results = run_all(args.family, args.seeds, args.employees, args.days, workdir,
                          budgets, jobs, progress)
    columns: dict[str, dict[str, Cell]] = {}
    aucs: dict[str, list[float]] = {}
    for r in results:
        rep = r["reports"][None]
        cells = company_cells(rep)
        if args.budget:
            cells.update(budget_cells({b: x for b, x in r["reports"].items() if b is not None}))
        columns[f"{r['family']} {r['seed']}"] = cells
        aucs.setdefault(r["family"], []).append(rep.actor_day_auc)
    for r in results:
        c = r["company"]
        print(f"{r['family']} {r['seed']}: {c['employees']} employees x {c['config']['days']} "
              f"days from {c['config']['start']}, {len(c['config']['sites'])} sites, "
              f"intensity {c['config']['intensity']:.2f}, "
              f"{c['density_per_1000_actor_days']:.1f} instances / 1,000 actor-days drawn")
    print(table(columns))
    gap = gap_cells(aucs)
    if gap:
        print(table({"families": gap}))
    if args.budget and not budget_supported():
        print(f"note: this engine has no {BUDGET_ENV} setting; every budget row is the same "
              "engine")
    missed = [f"{name}: {row}" for name, col in {**columns, "families": gap}.items()
              for row, (_, ok) in col.items() if ok is False]
    print("every target met" if not missed else "missed: " + "; ".join(missed))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "targets": {"auc_min": AUC_MIN, "recall_share_min": RECALL_SHARE_MIN,
                        "detected_min": DETECTED_MIN, "false_per_1000_max": FALSE_PER_1000_MAX,
                        "gap_max": GAP_MAX, "budget_slack": BUDGET_SLACK},
            "companies": [{"family": r["family"], "seed": r["seed"], "company": r["company"],
                           "reports": {"default" if b is None else f"budget {b:g}": x.to_dict()
                                       for b, x in r["reports"].items()}}
                          for r in results],
            "gap": {k: v for k, (v, _) in gap.items()}}, indent=1, default=str))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
