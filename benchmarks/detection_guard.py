"""``python benchmarks/detection_guard.py``: fail if detection got worse (issues 6 and 14).

Replays one small, fixed company of the held-out family (``--family heldout``, seed and size
in :data:`COMPANY`; a guard, not a reported result), scores it with ``snoopwatch evaluate``
and compares with ``benchmarks/detection_reference.json``. It fails when a figure is worse
than the reference by more than that company's measured seed-to-seed noise: actor-day ROC
AUC and recall at the 5 % budget (as a share of its ceiling) may not fall, false alerts per
1,000 actor-days may not rise, and neither the instances detected in all nor any scenario's
(counted per instance, each scenario against its own tolerance) may fall.

The noise: the same drawn company (every family parameter fixed) simulated with
:data:`NOISE_SEEDS` other simulation seeds; a figure's tolerance is twice its standard
deviation over them (a scenario's: twice the standard deviation of its detected share,
times its instances, rounded down). Re-baselining after a deliberate detection change is
one command that re-measures the noise and records why::

    python benchmarks/detection_guard.py --rebaseline --note "why the figures moved"

It refuses without a note; every re-baseline is kept in the reference's ``history``.
``make test`` runs the guard (tests/test_detection_guard.py); ``make bench`` too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from detectors.settings import Settings  # noqa: E402
from stream.evaluate import evaluate  # noqa: E402
from stream.family import draw  # noqa: E402
from stream.progress import Progress  # noqa: E402
from stream.simulate import SimConfig, write_jsonl  # noqa: E402

REFERENCE = Path(__file__).with_name("detection_reference.json")
# The guarded company: small enough to replay in well under a minute on one core, with
# three instances of each scenario kind (as many as fit) so each one counts per instance.
COMPANY: dict[str, Any] = {"family": "heldout", "seed": 11, "employees": 120, "days": 21,
                           "instances_per_kind": 3}
NOISE_SEEDS = (101, 102, 103, 104, 105, 106)
BUDGET = 0.05
# figure -> direction: +1 higher is better, -1 lower is better; and the least tolerance
# (the noise of a few seeds can come out zero; rounding must not fail the guard).
CHECKS: dict[str, tuple[int, float]] = {
    "actor_day_auc": (+1, 0.001),
    "recall_share_5%": (+1, 0.001),
    "false_per_1000_actor_days": (-1, 0.001),
    "instances_detected": (+1, 0.0),
}
SIGMAS = 2.0


def guard_config(sim_seed: int | None = None) -> SimConfig:
    """The guarded company; ``sim_seed`` re-simulates it (same parameters) for the noise."""
    cfg, _ = draw(COMPANY["family"], COMPANY["seed"], employees=COMPANY["employees"],
                  days=COMPANY["days"])
    cfg = replace(cfg, scenarios=dict.fromkeys(cfg.scenarios or (),
                                               COMPANY["instances_per_kind"]))
    return cfg if sim_seed is None else replace(cfg, seed=sim_seed)


def simulate(cfg: SimConfig, workdir: Path, progress: bool = False) -> tuple[str, str, str]:
    """Write the company's events, labels and context into ``workdir``."""
    ev, lab, ctx = (str(workdir / f"guard-{cfg.seed}.{n}") for n in ("jsonl", "labels", "ctx"))
    write_jsonl(cfg, ev, lab, ctx, progress=progress)
    return ev, lab, ctx


def score(paths: tuple[str, str, str], progress: bool = False) -> dict[str, Any]:
    """The guarded figures of snoopwatch (settings from the environment) on those files."""
    ev, lab, ctx = paths
    rep = evaluate(ev, lab, context_path=ctx, settings=Settings.from_env(), baseline=False,
                   progress=Progress("detection guard", enabled=progress)
                   ).reports["snoopwatch"]
    recall, ceiling = rep.recall_at[BUDGET]
    return {"actor_day_auc": rep.actor_day_auc,
            "recall_share_5%": recall / ceiling if ceiling else math.nan,
            "false_per_1000_actor_days": rep.false_per_1000_actor_days,
            "instances_detected": sum(sc["detected"] for sc in rep.scenarios.values()),
            "detected": {k: sc["detected"] for k, sc in sorted(rep.scenarios.items())},
            "instances": {k: sc["instances"] for k, sc in sorted(rep.scenarios.items())}}


def figures(sim_seed: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Simulate (in a temporary directory) and score the guarded company."""
    with tempfile.TemporaryDirectory(prefix="snoopwatch-guard-") as tmp:
        return score(simulate(guard_config(sim_seed), Path(tmp), progress), progress)


def tolerances(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's allowed drop: SIGMAS standard deviations over the noise runs."""
    tol: dict[str, Any] = {}
    for key, (_, least) in CHECKS.items():
        tol[key] = max(least, SIGMAS * statistics.stdev(r[key] for r in runs))
    # A scenario: the spread of its detected share, in instances of the guarded company.
    tol["detected_share"] = {}
    for label in sorted({k for r in runs for k in r["instances"]}):
        shares = [r["detected"].get(label, 0) / r["instances"][label]
                  for r in runs if r["instances"].get(label)]
        tol["detected_share"][label] = SIGMAS * statistics.stdev(shares) \
            if len(shares) > 1 else 0.0
    return tol


def compare(now: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """The figures that got worse than the reference beyond its tolerance, as messages."""
    figs, tol = ref["figures"], ref["tolerance"]
    worse = []
    for key, (direction, _) in CHECKS.items():
        if direction * (now[key] - figs[key]) < -tol[key] - 1e-9:
            worse.append(f"{key}: {now[key]:.4f} (reference {figs[key]:.4f} "
                         f"± {tol[key]:.4f})")
    for label, n_ref in figs["detected"].items():
        allowed = math.floor(tol["detected_share"].get(label, 0.0)
                             * figs["instances"][label] + 1e-9)
        got = now["detected"].get(label, 0)
        if got < n_ref - allowed:
            worse.append(f"{label} detected {got}/{now['instances'].get(label, 0)} "
                         f"(reference {n_ref}/{figs['instances'][label]}, may lose {allowed})")
    return worse


def _git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def rebaseline(note: str, progress: bool) -> dict[str, Any]:
    """Measure the guarded company and its noise (two processes) into a new reference."""
    seeds: list[int | None] = [None, *NOISE_SEEDS]
    with ProcessPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(figures, seeds))
    now, noise = runs[0], runs[1:]
    old = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    entry = {"date": dt.date.today().isoformat(), "commit": _git_head(), "note": note,
             "figures": now}
    return {
        "company": COMPANY,
        "figures": now,
        "tolerance": tolerances(noise),
        "noise": {"simulation_seeds": list(NOISE_SEEDS), "runs": noise},
        "note": ("Tolerances: the guarded company (every family parameter as drawn for "
                 f"{COMPANY['family']} seed {COMPANY['seed']}) re-simulated with simulation "
                 f"seeds {list(NOISE_SEEDS)}; each figure may drop by {SIGMAS:g} standard "
                 "deviations over those runs (at least the CHECKS floor), each scenario by "
                 f"{SIGMAS:g} standard deviations of its detected share x its instances, "
                 "rounded down. Re-baseline: python benchmarks/detection_guard.py "
                 "--rebaseline --note WHY."),
        "history": [*old.get("history", []), entry],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rebaseline", action="store_true",
                   help="measure the figures and their noise and write the reference")
    p.add_argument("--note", help="why the reference changes (required with --rebaseline)")
    p.add_argument("--json", help="also write the comparison here")
    args = p.parse_args(argv)
    progress = sys.stderr.isatty()
    if args.rebaseline:
        if not (args.note or "").strip():
            print("detection_guard: --rebaseline needs --note \"why the figures moved\" "
                  "(the reference is never changed without a reason)", file=sys.stderr)
            return 2
        if os.environ.get("SNOOPWATCH_DISABLED_SIGNALS"):
            print("detection_guard: refusing to re-baseline with SNOOPWATCH_DISABLED_SIGNALS "
                  "set", file=sys.stderr)
            return 2
        ref = rebaseline(args.note.strip(), progress)
        REFERENCE.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
        print(f"reference written: {REFERENCE}")
        return 0
    ref = json.loads(REFERENCE.read_text())
    if ref.get("company") != COMPANY:
        print(f"detection_guard: the reference is for {ref.get('company')}, not {COMPANY}; "
              "re-baseline with a note", file=sys.stderr)
        return 2
    now = figures(progress=progress)
    figs, tol = ref["figures"], ref["tolerance"]
    print(f"{'detection figure':<32} {'now':>9} {'reference':>9} {'may drop':>9}")
    for key in CHECKS:
        print(f"{key:<32} {now[key]:>9.4f} {figs[key]:>9.4f} {tol[key]:>9.4f}")
    for label, n in figs["detected"].items():
        print(f"{label + ' detected':<32} {now['detected'].get(label, 0):>9} "
              f"{n:>6}/{figs['instances'][label]:<2} "
              f"{tol['detected_share'].get(label, 0.0) * figs['instances'][label]:>9.2f}")
    worse = compare(now, ref)
    if args.json:
        Path(args.json).write_text(json.dumps({"now": now, "reference": ref, "worse": worse},
                                              indent=1))
    for w in worse:
        print(f"WORSE: {w}")
    print("detection: within the noise of the reference" if not worse else "detection: WORSE")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
