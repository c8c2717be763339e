"""Selection heatmaps: each selecting method's best trial as a layers × module-type grid (the paper's Figure 2)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
import matplotlib.pyplot as plt
import numpy as np
from mlflow.tracking import MlflowClient

from sweeps.report.figures import save_figure
from sweeps.table import (  # the one results table, shared with the report
    METHODS,
    TASKS,
    task_key,
)
from sweeps.table import ordered as _ordered
from wlora.registry import METHODS as REGISTRY

#: Methods whose best trial gets a selection heatmap, and which report field colours it (from the registry).
SELECTION_METHODS: dict[str, tuple[str, ...]] = {
    slug: spec.selection_fields for slug, spec in REGISTRY.items() if spec.selection_fields
}


FIELD_LABEL = {
    "selection_scores": "|ω| at selection",
    "gates": "|ω| (not yet selected)",
    "importance": "importance",
    "keep_frequency": "share of seeds that kept it",
    "mean_rank": "mean final rank over seeds",
}


_LAYER_RE = re.compile(r"^(?P<prefix>.*?)\.(?:layer|layers|h|block|blocks)\.(?P<idx>\d+)\.(?P<suffix>.+)$")


#: Module types first in this order (peft's usual target names), others alphabetically after.
MODULE_ORDER = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "q", "k", "v", "o")


def split_module(name: str) -> tuple[int, str] | None:
    """``bert.encoder.layer.3.attention.self.query`` → (3, ``attention.self.query``)."""
    m = _LAYER_RE.match(name)
    return (int(m["idx"]), m["suffix"]) if m else None


#: Default target sets of the model families (wlora's family defaults), to complete a survivors-only grid.
MODULE_FAMILIES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj", "o_proj"), ("q", "k", "v", "o"))


def _family_types(suffixes: set[str]) -> set[str]:
    """The module family's full type set when ``suffixes`` are a subset of one (same path prefix)."""
    last = {s.rsplit(".", 1)[-1] for s in suffixes}
    prefixes = {s.rsplit(".", 1)[0] if "." in s else "" for s in suffixes}
    for fam in MODULE_FAMILIES:
        if last <= set(fam) and len(prefixes) == 1:
            pre = prefixes.pop()
            return {f"{pre}.{m}" if pre else m for m in fam}
    return suffixes


def selection_grid(report: dict[str, Any], fields: Sequence[str]) -> dict[str, Any] | None:
    """Layers × module-type grid from a method's ``selection.json``.

    The colour is the first of ``fields`` the report has (|ω| at selection, importance or final
    rank); modules known from any field but absent from the colour field (removed adapters) are 0.
    Returns None when the report has none of the fields or no layered module names."""
    chosen = next((f for f in fields if isinstance(report.get(f), dict) and report[f]), None)
    if chosen is None:
        return None
    values = {n: abs(float(v)) for n, v in report[chosen].items()}
    selected = set(report.get("selected_adapters") or report.get("kept") or [])
    if chosen == "ranks":
        selected |= {n for n, v in values.items() if v > 0}
    names = set(values) | selected
    for f in ("ranks", "importance", "selection_scores", "gates"):
        if isinstance(report.get(f), dict):
            names |= set(report[f])
    parsed = {n: p for n in names if (p := split_module(n))}
    if not parsed:
        return None
    seen = {p[1] for p in parsed.values()}
    n_layers = max(p[0] for p in parsed.values()) + 1
    # Reports that list only the survivors (random select) still get the whole grid: layers run from
    # 0, and ``n_adapters`` (all targets) decides between the module family's default types (e.g.
    # query/key/value when only query and value survived) and the types seen.
    n_all = report.get("n_adapters")
    if isinstance(n_all, int) and n_all > len(parsed):
        for types in (_family_types(seen), seen):
            if n_all % len(types) == 0 and n_all // len(types) >= n_layers:
                seen, n_layers = types, n_all // len(types)
                break
    suffixes = _ordered(seen, MODULE_ORDER, key=lambda s: s.rsplit(".", 1)[-1])
    layers = list(range(n_layers))
    last = [s.rsplit(".", 1)[-1] for s in suffixes]
    cols = [lt if last.count(lt) == 1 else s for s, lt in zip(suffixes, last, strict=True)]
    # Cells of targets the report does not mention were removed (0), not unknown.
    grid = np.zeros((len(layers), len(suffixes)))
    stars = np.zeros_like(grid, dtype=bool)
    for n, (layer, suffix) in parsed.items():
        i, j = layers.index(layer), suffixes.index(suffix)
        grid[i, j] = values.get(n, 0.0)
        stars[i, j] = n in selected
    label = FIELD_LABEL.get(chosen, "final rank" if chosen == "ranks" else chosen)
    return {"field": chosen, "label": label, "layers": layers, "modules": cols, "grid": grid, "selected": stars}


def plot_selection(g: dict[str, Any], title: str, path: Path) -> dict[str, Any]:
    """Heatmap of a :func:`selection_grid`, kept adapters starred; returns its JSON-able cells."""
    grid = g["grid"]
    fig, ax = plt.subplots(figsize=(1.3 + 1.2 * grid.shape[1], 1.2 + 0.45 * grid.shape[0]))
    im = ax.imshow(np.nan_to_num(grid), cmap="viridis", aspect="auto")
    vmax = np.nanmax(grid) if np.isfinite(grid).any() else 0.0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            txt = "" if np.isnan(v) else (f"{v:.0f}" if g["field"] == "ranks" else f"{v:.2g}")
            txt += " ★" if g["selected"][i, j] else ""
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="w" if v < 0.6 * vmax else "k")
    ax.set_xticks(range(grid.shape[1]), g["modules"])
    ax.set_yticks(range(grid.shape[0]), [f"layer {x}" for x in g["layers"]])
    fig.colorbar(im, ax=ax, label=g["label"])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {
        "field": g["field"],
        "label": g["label"],
        "layers": g["layers"],
        "modules": g["modules"],
        "values": [[None if np.isnan(v) else float(v) for v in row] for row in grid],
        "selected": g["selected"].astype(int).tolist(),
        "n_cells": int(grid.size),
    }


def plot_selection_overview(grids: dict[tuple[str, str], dict[str, Any]], path: Path) -> dict[str, Any]:
    """All selection grids at a glance: one row per method, one column per task (each panel
    normalised to its own maximum, kept adapters starred) — where each method puts its adapters."""
    methods = _ordered({m for m, _ in grids}, list(METHODS))
    tasks = _ordered({t for _, t in grids}, list(TASKS), key=task_key)
    fig, axes = plt.subplots(
        len(methods), len(tasks), figsize=(max(4.5, 0.5 + 2.1 * len(tasks)), 0.6 + 2.3 * len(methods)), squeeze=False
    )
    panels = 0
    for i, m in enumerate(methods):
        for j, t in enumerate(tasks):
            ax = axes[i, j]
            g = grids.get((m, t))
            if g is None:
                ax.axis("off")
                continue
            grid = np.nan_to_num(g["grid"])
            top = grid.max() or 1.0
            ax.imshow(grid / top, cmap="viridis", vmin=0, vmax=1, aspect="auto")
            ys, xs = np.nonzero(g["selected"])
            ax.scatter(xs, ys, marker="*", s=60, c="w", edgecolors="k", linewidths=0.5)
            ax.set_xticks(range(len(g["modules"])), [c[:1] for c in g["modules"]], fontsize=7)
            ax.set_yticks(range(len(g["layers"])), [str(x) for x in g["layers"]], fontsize=7)
            if i == 0:
                ax.set_title(TASKS.get(task_key(t), (t,))[0].split(" ")[0], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{METHODS.get(m, m)}\nlayer", fontsize=8)
            panels += 1
    fig.suptitle("Adapters kept (★) by the best trials\ncolour: |ω| / importance / rank, per panel", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {"methods": methods, "tasks": tasks, "panels": panels}


def download_json(client: MlflowClient, run_id: str, path: str, tmp: Path) -> dict[str, Any] | None:
    try:
        local = client.download_artifacts(run_id, path, str(tmp))
    except Exception:  # the artifact is optional (e.g. a trial that failed before reporting)
        return None
    try:
        return json.loads(Path(local).read_text())
    except (OSError, ValueError):
        return None
