"""The detection core: plain Python, no faust; both drivers (worker, replay) call it.

``make`` compiles its per-event modules (:data:`COMPILED`) with Cython
(``python -m detectors.build``): the same source, about 1.35x faster, the same results.
A compiled module is used only while it matches the source beside it (the build
records each source's SHA-256); after an edit, or with ``SNOOPWATCH_PURE_PYTHON=1``,
Python imports the source instead, so a stale build can never run in its place.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

# Dotted names are modules of a subpackage (``signals.volume``: detectors/signals/volume.py);
# a package's __init__ (the signal registry) stays Python, and so does ``priors`` (constants
# only, read once as the compiled modules import them: compiling it would save nothing).
COMPILED = ("events", "models", "multivariate", "engine", "signals.base", "signals.volume",
            "signals.departing", "signals.off_hours", "signals.unjustified", "signals.vip",
            "signals.peer_unjustified", "signals.first_seen", "signals.new_origin",
            "signals.multivariate", "signals.accumulated")
MANIFEST = Path(__file__).with_name("compiled.json")


def source_path(module: str) -> Path:
    """``detectors/<module>.py`` (dots: subpackages)."""
    return MANIFEST.parent.joinpath(*module.split(".")).with_suffix(".py")


def source_digest(module: str) -> str:
    """SHA-256 of ``detectors/<module>.py``, as the build records it."""
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def _current_builds() -> frozenset[str]:
    """The modules whose compiled build matches their source (none if pure Python is asked)."""
    if os.environ.get("SNOOPWATCH_PURE_PYTHON", "") not in ("", "0"):
        return frozenset()
    try:
        built = json.loads(MANIFEST.read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()
    return frozenset(m for m in COMPILED if built.get(m) == source_digest(m))


class _SourceUnlessCurrent(importlib.abc.MetaPathFinder):
    """Imports a core module from its source unless its compiled build is current.

    Python prefers an extension module to the source of the same name; this finder runs
    first and, for a missing or stale build, points the import at the ``.py`` file.
    """

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX):
            return None
        module = fullname[len(_PREFIX):]
        if module not in COMPILED or module in CURRENT:
            return None  # the usual finders: the compiled build, if present
        return importlib.util.spec_from_file_location(fullname, source_path(module))


_PREFIX = __name__ + "."


CURRENT = _current_builds()
if not any(isinstance(f, _SourceUnlessCurrent) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceUnlessCurrent())


def core_build() -> str:
    """Which build of the core this process runs: ``compiled``, ``pure Python`` or ``mixed``
    (some modules stale). Imports the core."""
    import importlib

    kinds = {m.__file__.endswith(".py") for m in
             (importlib.import_module(f"{__name__}.{name}") for name in COMPILED) if m.__file__}
    return "mixed" if len(kinds) > 1 else "pure Python" if True in kinds else "compiled"
