"""StreamingOutlier (detectors/multivariate.py) and the ADBench benchmark's core."""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from river import base

from detectors.multivariate import Contribution, StreamingOutlier
from stream.evaluate import roc_auc

ROOT = Path(__file__).resolve().parent.parent
ADBENCH = ROOT.parent / "shared" / "data" / "adbench"  # as benchmarks/adbench.py


def actor_hour(rng: random.Random) -> dict[str, float]:
    """An ordinary actor-hour aggregate: heavy-tailed counts, a zero-inflated feature."""
    records = rng.lognormvariate(4, 0.4)
    return {
        "records": records,
        "customers": max(1.0, records / 5 + rng.gauss(0, 2)),
        "egress_bytes": records * rng.lognormvariate(10, 0.3),
        "unticketed": 1.0 if rng.random() < 0.02 else 0.0,
        "off_hours_share": rng.random() * 0.1,
        "networks": rng.choice([1.0, 1.0, 2.0]),
    }


def trained(n: int = 3000, seed: int = 7, **params: float) -> StreamingOutlier:
    rng = random.Random(seed)
    model = StreamingOutlier(seed=1, **params)
    for _ in range(n):
        model.learn_one(actor_hour(rng))
    return model


@pytest.fixture(scope="module")
def model() -> StreamingOutlier:
    return trained()


def test_contract(model: StreamingOutlier) -> None:
    assert isinstance(model, base.AnomalyDetector)
    fresh = StreamingOutlier(seed=3)
    assert fresh.learn_one({"a": 1.0}) is None
    score = model.score_one(actor_hour(random.Random(0)))
    assert isinstance(score, float) and math.isfinite(score)
    assert model.clone().seed == model.seed


def test_scoring_does_not_change_the_model(model: StreamingOutlier) -> None:
    x = actor_hour(random.Random(1))
    before = pickle.dumps(model)
    first = model.score_one(x)
    model.explain(x)
    assert model.score_one(x) == first
    assert pickle.dumps(model) == before


def test_far_outlier_scores_above_normal_points(model: StreamingOutlier) -> None:
    rng = random.Random(2)
    normal = [model.score_one(actor_hour(rng)) for _ in range(200)]
    far = dict(actor_hour(rng), records=50_000.0, customers=9_000.0, egress_bytes=5e10)
    assert model.score_one(far) > max(normal)
    # Calibrated: a typical vector is near 0, the outlier several units up.
    assert abs(float(np.median(normal))) < 1.0
    assert model.score_one(far) > 3.0


def test_deterministic_for_a_seed() -> None:
    def scores(seed: int) -> list[float]:
        rng = random.Random(11)
        m = StreamingOutlier(seed=seed, window=512)
        out = []
        for _ in range(2000):
            x = actor_hour(rng)
            out.append(m.score_one(x))
            m.learn_one(x)
        return out

    assert scores(5) == scores(5)
    assert scores(5) != scores(6)


def test_pickle_round_trip_gives_identical_scores(model: StreamingOutlier) -> None:
    copy = pickle.loads(pickle.dumps(model))
    rng_a, rng_b = random.Random(3), random.Random(3)
    for _ in range(600):  # long enough to rebuild trees and recalibrate after the round trip
        xa, xb = actor_hour(rng_a), actor_hour(rng_b)
        assert model.score_one(xa) == copy.score_one(xb)
        model.learn_one(xa)
        copy.learn_one(xb)


def test_cold_start_scores_zero_until_warm() -> None:
    rng = random.Random(4)
    m = StreamingOutlier(seed=1, warmup=50)
    far = {"records": 1e9, "networks": 40.0}
    for _ in range(49):
        assert m.score_one(far) == 0.0
        m.learn_one(actor_hour(rng))
    assert m.score_one(far) == 0.0
    m.learn_one(actor_hour(rng))
    assert m.score_one(far) > m.score_one(actor_hour(rng))


def test_explain_names_the_feature_that_moved(model: StreamingOutlier) -> None:
    x = actor_hour(random.Random(5))
    for feature, value in [("egress_bytes", x["egress_bytes"] * 200), ("unticketed", 40.0),
                           ("networks", 7.0)]:
        spiked = dict(x, **{feature: value})
        parts = model.explain(spiked, top=None)
        assert parts[0].feature == feature, parts[:3]
        assert isinstance(parts[0], Contribution)
        assert parts[0].observed == value
        assert parts[0].contribution > 0.5
        assert sum(p.contribution for p in parts) == pytest.approx(1.0)
    # The expected egress is an ordinary one, far below the spike.
    top = model.explain(dict(x, egress_bytes=x["egress_bytes"] * 200))[0]
    assert top.expected < top.observed / 20
    assert len(model.explain(x, top=2)) == 2


def test_missing_keys_count_as_zero_and_new_keys_are_handled(model: StreamingOutlier) -> None:
    x = actor_hour(random.Random(6))
    partial = {k: v for k, v in x.items() if k != "unticketed"}
    assert model.score_one(partial) == model.score_one(dict(partial, unticketed=0.0))
    # Dropping an always-present, never-zero feature makes the vector unusual.
    no_egress = {k: v for k, v in x.items() if k != "egress_bytes"}
    assert model.score_one(no_egress) > model.score_one(x) + 1
    # A key never learned: ignored when 0, anomalous (and explained) when large.
    assert model.score_one(dict(x, usb_writes=0.0)) == model.score_one(x)
    assert model.score_one(dict(x, usb_writes=500.0)) > model.score_one(x) + 1
    assert model.explain(dict(x, usb_writes=500.0))[0].feature == "usb_writes"
    assert model.score_one({}) == model.score_one({"records": 0.0})
    assert model.score_one(dict(partial, unticketed=float("nan"))) == model.score_one(partial)


def test_features_can_appear_later() -> None:
    rng = random.Random(8)
    m = StreamingOutlier(seed=2, window=256)
    for i in range(3000):
        x = actor_hour(rng)
        if i < 1000:
            del x["networks"]
        m.learn_one(x)
    assert m.score_one(dict(actor_hour(rng), networks=30.0)) > m.score_one(actor_hour(rng))


def test_memory_is_bounded() -> None:
    rng = random.Random(9)
    m = StreamingOutlier(seed=1, window=300, max_features=8)
    sizes = []
    for i in range(12_000):
        x = actor_hour(rng)
        x[f"rare_{i % 40}"] = 1.0  # 40 distinct extra keys: more than max_features allows
        m.learn_one(x)
        if i in (3_000, 11_999):
            sizes.append(len(pickle.dumps(m)))
    assert m.n == 12_000
    assert m._res.shape == (300, 8)
    assert len(m._index) == 8
    assert sizes[1] <= sizes[0] * 1.05


def test_synthetic_stream_auc() -> None:
    """Correlated 4-d normals; 1% anomalies break the correlation or sit far out."""
    rng = np.random.default_rng(0)
    n = 6000
    latent = rng.normal(size=n)
    X = np.column_stack([latent + 0.1 * rng.normal(size=n), 2 * latent + 0.2 * rng.normal(size=n),
                         rng.normal(size=n), rng.exponential(3, size=n)])
    y = np.zeros(n, dtype=bool)
    bad = rng.choice(np.arange(500, n), 60, replace=False)
    y[bad] = True
    # Joint anomalies: x0 and x1 each within their usual range, but of opposite sign.
    X[bad[:30], 0] = rng.choice([-1.0, 1.0], 30) * rng.uniform(1.5, 2.5, 30)
    X[bad[:30], 1] = -2 * X[bad[:30], 0]
    X[bad[30:], 2] += rng.choice([-6.0, 6.0], 30)
    m = StreamingOutlier(seed=4)
    scores = []
    for row in X.tolist():
        x = dict(zip("abcd", row, strict=True))
        scores.append(m.score_one(x))
        m.learn_one(x)
    assert roc_auc(scores, y) > 0.9


# --- benchmarks/adbench.py ------------------------------------------------------------------

def load_benchmark():
    spec = importlib.util.spec_from_file_location("adbench_bench", ROOT / "benchmarks/adbench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


needs_data = pytest.mark.skipif(not (ADBENCH / "32_shuttle.npz").exists(),
                                reason="ADBench data not present")


@needs_data
def test_benchmark_core_on_a_shuttle_slice() -> None:
    bench = load_benchmark()
    X, y = bench.load(ADBENCH / "32_shuttle.npz")
    for order in ("file", "shuffled"):
        Xs, ys = bench.ordered(X, y, order, seed=3, limit=3000)
        assert Xs.shape == (3000, 9) and 0 < ys.sum() < 3000
        row = bench.compare(Xs, ys, seed=3)
        assert row["rows"] == 3000 and row["anomalies"] == int(ys.sum())
        for name in ("ours", "hst"):
            assert 0.0 <= row[f"auc_{name}"] <= 1.0
            assert row[f"eps_{name}"] > 0
    shuffled, _ = bench.ordered(X, y, "shuffled", seed=3)
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, X.tolist()))


@needs_data
def test_benchmark_main_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    bench = load_benchmark()
    out = tmp_path / "adbench.json"
    assert bench.main(["--data", str(ADBENCH), "--limit", "600", "--seed", "3",
                       "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "AUC ours" in captured.out and "32_shuttle" in captured.out
    assert captured.err == ""  # progress only on a terminal
    report = json.loads(out.read_text())
    assert report["seed"] == 3 and report["limit"] == 600
    assert {(r["file"], r["order"]) for r in report["rows"]} == {
        (f, o) for f in ("16_http", "32_shuttle", "34_smtp") for o in ("file", "shuffled")}
