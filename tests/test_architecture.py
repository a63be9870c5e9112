"""The import rules of the architecture, checked on the source (no imports run):

- the detection core (``detectors/``) imports no faust and nothing of ``stream``;
- the worker, ``replay`` and the downstream consumers (the Alertmanager forwarder, the audit)
  import no tool (simulator, evaluation, demo, families, benchmarks) and none of each other,
  directly or through what they import; what they share lives in ``stream/shared.py`` and
  the driver-neutral modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DRIVERS = {"stream.app": "the worker", "stream.replay": "replay",
           "stream.delivery": "the Alertmanager forwarder", "stream.audit": "the audit"}
TOOLS = {"stream.demo", "stream.simulate", "stream.evaluate", "stream.family", "benchmarks"}


def imports_of(module: str) -> set[str]:
    """Modules ``module`` imports anywhere in its source (functions too), of this repo."""
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = REPO / module.replace(".", "/") / "__init__.py"
    return imports_in(path.read_text()) if path.exists() else set()


def imports_in(source: str) -> set[str]:
    """Modules of this repo that ``source`` imports anywhere (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in ("stream", "detectors", "benchmarks")
            and ((REPO / (m.replace(".", "/") + ".py")).exists()
                 or (REPO / m.replace(".", "/") / "__init__.py").exists())}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        for n in imports_of(m) - seen:
            seen.add(n)
            todo.append(n)
    return seen


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_a_driver_imports_no_tool_and_no_other_driver(driver: str) -> None:
    reached = closure(driver)
    bad = {m for m in reached if m in TOOLS or m.split(".")[0] == "benchmarks"
           or (m in DRIVERS and m != driver)}
    assert not bad, f"{DRIVERS[driver]} ({driver}) imports {sorted(bad)}"


def test_the_detection_core_imports_no_faust_and_no_driver() -> None:
    for path in sorted((REPO / "detectors").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("faust", "stream", "benchmarks"), \
                    f"{path.relative_to(REPO)} imports {name}"


def test_the_check_sees_an_import_inside_a_function() -> None:
    # (the audit once took scrape from the demo tool inside a function)
    assert imports_in("def f():\n    from stream.demo import scrape\n") == {"stream.demo"}
    assert "stream.demo" in closure("stream.cli")
