"""Collection rules for the whole suite (pytest reads this before any test module)."""

from __future__ import annotations

from pathlib import Path

import detectors


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Skip the doctests of core modules running compiled: doctest reads Python source,
    which a compiled module has none of. ``make test`` runs them in a second pass against
    the source (``SNOOPWATCH_PURE_PYTHON=1 pytest detectors``)."""
    if collection_path.suffix != ".py" or not collection_path.is_relative_to(HERE):
        return None
    module = ".".join(collection_path.relative_to(HERE).with_suffix("").parts)  # signals.base
    if module in detectors.COMPILED:
        return module in detectors.CURRENT or None
    return None


HERE = detectors.MANIFEST.parent  # detectors/
