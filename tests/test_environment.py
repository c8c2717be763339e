"""House rules that protect users: CPU wheel here, and the method library stays free of ray/mlflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import wlora

PKG = Path(wlora.__file__).parent


def test_no_nvidia_packages_installed():
    nvidia = sorted(
        d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("nvidia-")
    )
    assert nvidia == [], f"CUDA wheels were pulled in (install with -c constraints.txt): {nvidia}"


def test_wlora_source_never_imports_ray_or_mlflow():
    offenders = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("ray", "mlflow")]
    assert offenders == []


def test_importing_wlora_loads_neither_ray_nor_mlflow():
    code = (
        "import sys, wlora, wlora.train, wlora.export, wlora.data; "
        "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
