"""Detection priors live in one place (``detectors/priors.py``, issue 14 item 1).

A numeric literal in a converted detection module fails here unless it is structural (the
small allowlist below): a new threshold, weight or scale must be a named prior with a reason.
Numbers inside strings (docstrings, doctests) are not literals to the parser and never count.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from detectors import priors

REPO = Path(__file__).resolve().parents[1]
PRIORS = REPO / "detectors" / "priors.py"

# The detection modules whose numbers are all named priors (or structural).
CONVERTED = ("detectors/engine.py", "detectors/models.py", "detectors/multivariate.py",
             "detectors/signals/base.py", "detectors/signals/volume.py",
             "detectors/signals/off_hours.py", "detectors/signals/departing.py",
             "detectors/signals/accumulated.py", "detectors/signals/first_seen.py",
             "detectors/signals/multivariate.py", "detectors/signals/unjustified.py",
             "detectors/signals/new_origin.py")

# Structural values, allowed anywhere: nothing, one, two (pairs, halves, squares, doubling),
# a half (halving, a bin's middle), time units (hours a day, days a week, seconds and
# milliseconds), percent (risk is 0-100), per mille and the SI prefixes counts are shown in.
# A prior that happens to equal one of these is still named in priors.py (review, not this
# test, catches it inline).
ALLOWED = frozenset({0, 1, -1, 2, 0.5, 24, 7, 60, 100, 1000, 3600, 86_400, 3_600_000,
                     86_400_000, 1e6, 1e9})

# Module-level names whose value is a unit or a fact of mathematics or the calendar, not a
# belief about evidence: their literals are allowed (each says why where it is defined).
STRUCTURAL_NAMES = {
    "detectors/models.py": {"_EPOCH_WEEKDAY", "_WEEKEND_FROM", "_RISK_MAX", "_HAZARD_MIN",
                            "_MAD_PER_SIGMA"},
    "detectors/multivariate.py": {"_EULER", "_QUARTILES", "_IQR_PER_SIGMA", "_TINY"},
    "detectors/engine.py": {"_ORDINAL_1970"},
}


def unnamed_numbers(source: str, structural: frozenset[str] | set[str] = frozenset()
                    ) -> list[tuple[int, object]]:
    """(line, value) of each numeric literal in ``source`` that is neither allowed, nor an
    index or slice bound, nor the value of a structural module-level name."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if names and names <= set(structural):
                skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):  # positions: rfc3339(t)[11:16], digest[:32]
            skip.update(id(n) for n in ast.walk(node.slice))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(
                node.operand, ast.Constant):
            skip.add(id(node.operand))
            value = node.operand.value
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    id(node) not in skip and -value not in ALLOWED):
                found.append((node.lineno, -value))
        elif isinstance(node, ast.Constant) and id(node) not in skip:
            value = node.value
            if isinstance(value, (int, float, complex)) and not isinstance(value, bool) and (
                    value not in ALLOWED):
                found.append((node.lineno, value))
    return sorted(found)


@pytest.mark.parametrize("module", CONVERTED)
def test_no_unnamed_number_in_detection_code(module: str) -> None:
    source = (REPO / module).read_text()
    found = unnamed_numbers(source, STRUCTURAL_NAMES.get(module, set()))
    assert not found, (f"{module}: numeric literal(s) {found} (line, value): name each in "
                       "detectors/priors.py with its reason, or, if it is structural, "
                       "see ALLOWED / STRUCTURAL_NAMES in tests/test_priors.py")


def test_the_check_catches_a_literal() -> None:
    # One reintroduced threshold fails; structural numbers, indices, and numbers in strings
    # and docstrings do not.
    assert unnamed_numbers("def f(x):\n    return x > 0.37\n") == [(2, 0.37)]
    assert unnamed_numbers("def f(x=-2.5):\n    return x\n") == [(1, -2.5)]
    assert unnamed_numbers('"""3.0 sigma: >>> f(7.5)"""\nDAY = 24 * 3_600_000\n'
                           "s = 'x'[11:16]\nh = 0.5 ** 3 if 2 else 1\n") == [(4, 3)]
    assert unnamed_numbers("_PI = 3.14159\n", {"_PI"}) == []
    assert unnamed_numbers("_PI = 3.14159\n") == [(1, 3.14159)]


def _assignments(tree: ast.Module) -> list[tuple[list[str], int, int]]:
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            out.append((names, node.lineno, node.end_lineno or node.lineno))
    return out


def test_every_prior_has_its_reason() -> None:
    source = PRIORS.read_text()
    tree = ast.parse(source)
    assert ast.get_docstring(tree) and "learned" in ast.get_docstring(tree)
    comments = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    assignments = _assignments(tree)
    assert len(assignments) > 50
    missing = []
    for names, first, last in assignments:
        # A comment ending one of its lines, or a comment block right above it (a reason
        # shared by the names of one line, e.g. RARE_MIN_HOURS, RARE_FACTOR).
        trailing = any(n in comments for n in range(first, last + 1))
        above = first - 1 in comments and lines[first - 2].lstrip().startswith("#") and (
            not lines[first - 2].lstrip().startswith("# ---"))  # (not a section's title)
        if not (trailing or above):
            missing.extend(names)
    assert not missing, f"priors without a reason (a # comment): {missing}"


def test_priors_are_constants_and_used() -> None:
    # Only names and their values: no code that would depend on a company's data.
    tree = ast.parse(PRIORS.read_text())
    kinds = {type(node).__name__ for node in tree.body[1:]}  # (after the docstring)
    assert kinds <= {"ImportFrom", "Import", "Assign"}, kinds
    names = [n for names, _, _ in _assignments(tree) for n in names]
    assert len(names) == len(set(names)), "a prior is named twice"
    code = "\n".join(p.read_text() for p in (REPO / "detectors").rglob("*.py")
                     if p != PRIORS)
    unused = [n for n in names if not re.search(rf"\b{n}\b", code)]
    assert not unused, f"priors no detection module uses: {unused}"
    assert all(isinstance(getattr(priors, n), (int, float, tuple, dict)) for n in names)


def test_names_moved_here_stay_importable_where_they_were() -> None:
    from detectors import engine, models
    from detectors.signals import (
        accumulated,
        base,
        departing,
        first_seen,
        multivariate,
        new_origin,
        unjustified,
        volume,
    )

    old = {engine: ("FURTHER_FAMILY_WEIGHT", "BUDGET_MIN_DAYS", "MAX_EVIDENCE", "SEVERITIES",
                    "LONG_TERM_CAP", "LONG_TERM_SCALE"),
           models: ("REPEAT_MARGIN", "PEAK_FORGET"),
           base: ("LONG_TERM_CAP",),
           volume: ("RARE_MIN_HOURS", "RARE_FACTOR", "SUSPECT_WEIGHT", "HOT_SCORE",
                    "EGRESS_MIN", "DAILY_EGRESS_MIN"),
           departing: ("LEAVING_MULTIPLE", "LEAVING_SIGMAS"),
           accumulated: ("LONG_TERM_SCALE",),
           first_seen: ("COMMON_SHARE", "COMMON_FACTOR"),
           multivariate: ("MULTIVARIATE_TOLERATED", "MULTIVARIATE_WEIGHT"),
           unjustified: ("MAX_TICKETED", "QUEUE_LINK_SHARE", "QUEUE_MIN_LINKS",
                         "LONG_TERM_GAIN_PER_HOUR", "JUSTIFIED_MIN_READS"),
           new_origin: ("NEW_ORIGIN_MIN_EVENTS", "NEW_ORIGIN_SCALE", "NEW_ORIGIN_COMMON",
                        "NEW_ORIGIN_PEERS", "NEW_ORIGIN_SHARED_HOST", "MAX_ORIGINS",
                        "MAX_OWN_HOSTS")}
    for module, names in old.items():
        for name in names:
            assert getattr(module, name) is getattr(priors, name), (module.__name__, name)
