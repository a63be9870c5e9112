"""``python benchmarks/adbench.py``: StreamingOutlier beside river's HalfSpaceTrees on ADBench.

For every ``.npz`` in ``--data`` (``X`` rows x features, ``y`` 1 = anomaly) and for two orders,
the rows as stored ("file") and a fixed shuffle (``numpy.random.default_rng(seed).permutation``),
both detectors see the same stream of feature dicts ``{"x0": ..., "x1": ...}`` and score every
row *before* learning it (prequential evaluation, no labels used). The baseline is river's
standard pipeline ``MinMaxScaler() | HalfSpaceTrees(seed=seed)`` with HST defaults; ours is
``StreamingOutlier(seed=seed)`` with its defaults. Both use the same ``--seed``, which also
fixes the shuffle.

Prints one table (ROC AUC and events per second, score + learn, for each detector) on stdout,
progress on stderr only when it is a terminal, and writes the table as JSON with ``--json``.
The full run (all rows, 3 files x 2 orders) takes a few minutes on one core; ``--limit N`` keeps
the first N rows of each order for a quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from river import anomaly, compose, preprocessing

from detectors.multivariate import StreamingOutlier
from stream.evaluate import roc_auc
from stream.progress import Progress

# ../shared/data/adbench from the repository root: the shared data sit beside a checkout.
DEFAULT_DATA = str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "adbench")
ORDERS = ("file", "shuffled")


def load(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return np.asarray(npz["X"], dtype=float), np.asarray(npz["y"]).astype(bool)


def ordered(X: np.ndarray, y: np.ndarray, order: str, seed: int,
            limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The stream for ``order``; ``limit`` keeps its first rows (after shuffling)."""
    if order == "shuffled":
        perm = np.random.default_rng(seed).permutation(len(y))
        X, y = X[perm], y[perm]
    elif order != "file":
        raise ValueError(f"unknown order {order!r}")
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


def as_dicts(X: np.ndarray) -> list[dict[str, float]]:
    names = [f"x{j}" for j in range(X.shape[1])]
    # Plain Python floats, built once and shared, so neither detector pays for conversion.
    return [dict(zip(names, row, strict=True)) for row in X.tolist()]


def prequential(model: Any, rows: Sequence[dict[str, float]],
                progress: Progress | None = None) -> tuple[np.ndarray, float]:
    """Score each row, then learn it. Returns the scores and the seconds spent."""
    scores = np.empty(len(rows))
    score_one, learn_one = model.score_one, model.learn_one
    start = time.perf_counter()
    for i, x in enumerate(rows):
        scores[i] = score_one(x)
        learn_one(x)
        if progress is not None and i % 5000 == 0:
            progress.update(i)
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress.close()
    return scores, elapsed


def hst(seed: int) -> compose.Pipeline:
    return compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))


def ours(seed: int) -> StreamingOutlier:
    return StreamingOutlier(seed=seed)


def compare(X: np.ndarray, y: np.ndarray, *, seed: int, label: str = "",
            show_progress: bool = False,
            models: Iterable[tuple[str, Callable[[int], Any]]] = (("ours", ours), ("hst", hst)),
            ) -> dict[str, Any]:
    """Run each detector prequentially over one stream; ROC AUC and events/s for each."""
    rows = as_dicts(X)
    out: dict[str, Any] = {"rows": len(rows), "anomalies": int(y.sum())}
    for name, make in models:
        progress = Progress(f"{label} {name}".strip(), sys.stderr, enabled=show_progress)
        scores, elapsed = prequential(make(seed), rows, progress)
        out[f"auc_{name}"] = roc_auc(scores, y)
        out[f"eps_{name}"] = len(rows) / elapsed if elapsed > 0 else float("inf")
    return out


def run(data: str | os.PathLike[str], *, seed: int, limit: int | None = None,
        orders: Sequence[str] = ORDERS, show_progress: bool = False) -> list[dict[str, Any]]:
    files = sorted(Path(data).glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no .npz files in {data}")
    table = []
    for path in files:
        X_all, y_all = load(path)
        for order in orders:
            X, y = ordered(X_all, y_all, order, seed, limit)
            row = {"file": path.stem, "order": order}
            row.update(compare(X, y, seed=seed, label=f"{path.stem} {order}",
                               show_progress=show_progress))
            table.append(row)
    return table


def format_table(table: Sequence[dict[str, Any]]) -> str:
    head = ("file", "order", "rows", "anomalies", "AUC ours", "AUC HST", "ours-HST",
            "ev/s ours", "ev/s HST")
    lines = [[r["file"], r["order"], f"{r['rows']:,}", f"{r['anomalies']:,}",
              f"{r['auc_ours']:.4f}", f"{r['auc_hst']:.4f}",
              f"{r['auc_ours'] - r['auc_hst']:+.4f}",
              f"{r['eps_ours']:,.0f}", f"{r['eps_hst']:,.0f}"] for r in table]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), *(fmt.format(*line) for line in lines)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="directory of ADBench .npz files")
    parser.add_argument("--seed", type=int, default=42,
                        help="shuffle seed, also the seed of both detectors (default 42)")
    parser.add_argument("--limit", type=int, default=None,
                        help="keep the first N rows of each order (quick runs)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the table here")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    table = run(args.data, seed=args.seed, limit=args.limit, show_progress=sys.stderr.isatty())
    wall = time.perf_counter() - started
    print(f"seed {args.seed}, limit {args.limit or 'none'}; prequential (score, then learn); "
          f"ours = StreamingOutlier(seed={args.seed}), HST = MinMaxScaler | "
          f"HalfSpaceTrees(seed={args.seed})")
    print(format_table(table))
    wins = sum(r["auc_ours"] >= r["auc_hst"] for r in table)
    print(f"ours >= HST on {wins}/{len(table)}; wall {wall:.0f} s")
    if args.json:
        report = {"seed": args.seed, "limit": args.limit, "wall_s": wall,
                  "python": platform.python_version(),
                  "ours": {k: v for k, v in vars(StreamingOutlier(seed=args.seed)).items()
                           if not k.startswith("_") and k != "n"},
                  "rows": table}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
