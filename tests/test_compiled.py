"""The compiled core (``detectors/build.py``): what runs when current, never when stale, and
the same results as the source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import detectors
from stream.simulate import SimConfig, write_jsonl

REPO = Path(__file__).resolve().parents[1]
needs_build = pytest.mark.skipif(not detectors.MANIFEST.exists(),
                                 reason="the core is not compiled (make install builds it)")


def python(code: str, cwd: Path, pure: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SNOOPWATCH_PURE_PYTHON"}
    env["PYTHONPATH"] = str(cwd)
    if pure:
        env["SNOOPWATCH_PURE_PYTHON"] = "1"
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_make_compiles_the_core() -> None:
    # Cython is a dev dependency, so `make install` built the core that the suite tests.
    pytest.importorskip("Cython")
    assert python("import detectors; print(detectors.core_build())", REPO) == "compiled\n"


@needs_build
def test_a_stale_build_is_never_used(tmp_path: Path) -> None:
    shutil.copytree(REPO / "detectors", tmp_path / "detectors",
                    ignore=shutil.ignore_patterns("__pycache__"))
    show = ("import detectors, detectors.engine as e, detectors.models as m; "
            "print(e.__file__.rsplit('.', 1)[1], m.__file__.rsplit('.', 1)[1], "
            "detectors.core_build())")
    assert python(show, tmp_path).split() == ["so", "so", "compiled"]
    with open(tmp_path / "detectors" / "engine.py", "a") as fh:
        fh.write("\n# edited after the build\n")
    assert python(show, tmp_path).split() == ["py", "so", "mixed"]
    assert python(show, tmp_path, pure=True).split() == ["py", "py", "pure", "Python"]
    # a signal module (a subpackage's) likewise
    signal = ("import detectors, detectors.signals.volume as v; "
              "print(v.__file__.rsplit('.', 1)[1], detectors.core_build())")
    assert python(signal, tmp_path).split() == ["so", "mixed"]
    with open(tmp_path / "detectors" / "signals" / "volume.py", "a") as fh:
        fh.write("\n# edited after the build\n")
    assert python(signal, tmp_path).split() == ["py", "mixed"]


@needs_build
def test_compiled_and_source_give_identical_results(tmp_path: Path) -> None:
    # A realistic company with every insider scenario: alerts and every event's score.
    events, context = tmp_path / "events.jsonl", tmp_path / "context.jsonl"
    write_jsonl(SimConfig(seed=11, employees=80, days=14), str(events),
                str(tmp_path / "labels.jsonl"), str(context))
    outputs = {}
    for build, pure in (("compiled", False), ("pure Python", True)):
        out = tmp_path / build.replace(" ", "-")
        out.mkdir()
        run = (f"import detectors; from stream.cli import main; "
               f"main(['replay', {str(events)!r}, '--context', {str(context)!r}, "
               f"'--alerts', {str(out / 'alerts.jsonl')!r}, "
               f"'--scores', {str(out / 'scores.jsonl')!r}]); print(detectors.core_build())")
        assert python(run, REPO, pure).splitlines()[-1] == build
        outputs[build] = [(out / f).read_bytes() for f in ("alerts.jsonl", "scores.jsonl")]
    assert outputs["compiled"][0].count(b"\n") >= 3, "too few alerts to compare"
    assert outputs["compiled"] == outputs["pure Python"]


@needs_build
def test_an_installed_package_runs_the_compiled_core(tmp_path: Path) -> None:
    # What the image does (deploy/compose/snoopwatch.Dockerfile): the build is package data,
    # installed beside the source, and current there.
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--disable-pip-version-check", "--target",
                           str(site), str(REPO)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    built = (site / "detectors").rglob("*.so")  # the signal modules' too (detectors/signals)
    assert sorted(str(p.relative_to(site / "detectors")).split(".")[0].replace("/", ".")
                  for p in built) == sorted(detectors.COMPILED)
    assert python("import detectors; print(detectors.core_build())", site) == "compiled\n"
