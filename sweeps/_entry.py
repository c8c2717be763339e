"""Make ``python sweeps/<x>_sweep.py`` import the installed packages, not sibling files as top-level
modules: Python puts the script's folder first on sys.path (and Ray copies it to every worker)."""

from __future__ import annotations

import sys
from pathlib import Path


def fix_path(script: str) -> None:
    here = Path(script).resolve().parent
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != here]
    root = str(here.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
