"""Sweep report from MLflow: the papers' table shape, Pareto / selection / learning-curve plots, sweep cost.

    python sweeps/report.py --tracking-uri sqlite:///runs/mlflow.db --run-id PARENT_RUN_ID [--out DIR]

Everything is read back from the MLflow tracking store (never from local trial folders), so a report
can be rebuilt later, on another machine, from the store alone. The sweep calls :func:`build_report`
at its end; the CLI does the same for any finished (or running) sweep.

What is read (the sweep's MLflow schema): the parent run (tag ``wlora.role=sweep``) and its children
(tag ``mlflow.parentRunId``): trials (``wlora.role=trial``; tags ``method``, ``task``, ``status``,
``seed``; metrics ``eval_main`` (the GLUE task score, higher is better), ``eval_<metric>``,
``train_loss``, ``epoch``, ``trainable_params`` … by optimizer step, ``final_trainable_params`` /
``final_trainable_pct`` / ``final_method_params`` / ``final_method_pct`` / ``final_active_adapters`` once
at the end; ``selection_changes`` / ``selection_last_change_step`` by step where logged; artifact
``selection.json``) and seed re-runs (``wlora.role=seed_run``).

What is written to ``out_dir`` and logged under the parent run's ``report/`` artifacts:

* ``table.md`` / ``table.csv`` — (method, rank) × task (:mod:`sweeps.table`, the same table the sweep
  writes to ``results/``), main metric (mean ± std over seed re-runs when there
  are any, else the best trial), ``# Params`` (what the method trains besides the task head, and its
  share of the base model, as the papers count it) and the average column, as in the
  WeightLoRA paper's Tables 1/2; ``table_long.csv`` has every cell with its run ids and settings.
* ``pareto.png`` (+ ``pareto.json``) — task metric vs # Params (as in the table), one point per trial,
  the non-dominated front highlighted; one panel per task.
* ``selection_<task>_<method>.png`` (+ ``.json``) — per best WeightLoRA(+) / random-select /
  LoRA-drop / ROLoRA / AdaLoRA trial: layers × module type, colour = |ω| at selection, importance, or
  final rank; kept adapters starred (the paper's Figure 2, as a grid).
* ``selection_overview.png`` — all of those grids side by side (methods × tasks).
* ``curves_<task>.png`` — eval metric and training loss by optimizer step of the best trial per method.
* ``stability.md`` / ``stability.json`` / ``stability_<task>_<method>.png`` — across the seed re-runs of
  each selecting cell: how often each adapter was kept (ROLoRA / AdaLoRA: its mean final rank), as a
  grid in the shape of the selection heatmap (★ = kept by every seed), the mean pairwise Jaccard index
  of the kept sets (weighted Jaccard of the final ranks for ROLoRA / AdaLoRA) next to what random draws
  of the same K would give, and the runs' ``selection_changes`` / ``selection_last_change_step`` when
  they logged them.
* ``claims.md`` / ``claims.json`` — the WeightLoRA paper's three claims tested on the seed re-runs
  (:mod:`sweeps.claims`: per task mean ± std, differences, bootstrap and Welch intervals, verdicts).
* ``cost.json`` / ``cost.md`` — trial-epochs spent, ASHA-stopped / failed trials, wall time, and what
  running every trial to the last epoch would have cost.
* ``report.md`` — all of the above on one page.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
import matplotlib.pyplot as plt
import numpy as np
from mlflow.tracking import MlflowClient

from sweeps import claims as claims_mod
from sweeps.pareto import PARAMS_METRIC, pareto_front
from sweeps.schema import (
    ASHA_STOPPED,
    COMPLETED,
    FAILED,
    MAIN,
    SEED_RUN,
    STATUS_OK,
    TRIAL,
    RunInfo,
    best_trials,
    load_children,
)
from sweeps.table import (  # the one results table, shared with the report
    METHODS,
    TASKS,
    md_table,
    mean_std,
    seed_runs_by_method,
    task_key,
    write_table,
)
from sweeps.table import ordered as _ordered
from wlora.core.stability import chance_jaccard, keep_frequency, mean_pairwise_overlap
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
#: Methods whose kept set is a rank per module (overlap across seeds: weighted Jaccard of the ranks).
RANK_METHODS = ("rolora", "adalora")
#: Per-run selection diagnostics the runner logs at every evaluation (see wlora.core.stability).
STABILITY_METRICS = ("selection_changes", "selection_last_change_step")


# ----- Pareto -----


def _method_params(t: RunInfo) -> float | None:
    """The papers' "# Params" of a run: parameters trained besides the task head (absolute)."""
    v = t.final("method_params")
    return v if v is not None else t.final("trainable_params")


def _final_params(t: RunInfo) -> float | None:
    """The Pareto x of a trial (:data:`sweeps.pareto.PARAMS_METRIC`; runs from before it: the trainable share)."""
    v = t.final(PARAMS_METRIC)
    return v if v is not None else t.final("trainable_pct")


def _method_colors(methods: Iterable[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(_ordered(methods, list(METHODS)))}


def plot_pareto(trials: Sequence[RunInfo], path: Path) -> dict[str, Any]:
    """Metric vs # Params (% of the base model trained besides the head), one point per trial (hollow =
    ASHA-stopped), front as a line."""
    pts = [t for t in trials if t.role == TRIAL and t.main is not None and _final_params(t) is not None]
    pts = [t for t in pts if t.status in STATUS_OK]
    tasks = _ordered({t.task for t in pts}, list(TASKS), key=task_key)
    colors = _method_colors({t.method for t in pts})
    meta: dict[str, Any] = {"tasks": {}, "n_points": 0}
    ncols = min(3, max(1, len(tasks)))
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        tp = [t for t in pts if t.task == task]
        xy = [(_final_params(t), t.main) for t in tp]
        front = pareto_front(xy)
        for m in _ordered({t.method for t in tp}, list(METHODS)):
            for stopped in (False, True):
                sel = [i for i, t in enumerate(tp) if t.method == m and (t.status == ASHA_STOPPED) == stopped]
                if not sel:
                    continue
                ax.scatter(
                    [xy[i][0] for i in sel],
                    [xy[i][1] for i in sel],
                    s=28,
                    label=METHODS.get(m, m) if not stopped else None,
                    facecolors="none" if stopped else colors[m],
                    edgecolors=colors[m],
                    zorder=3,
                )
        ax.step([xy[i][0] for i in front], [xy[i][1] for i in front], where="post", color="k", lw=1.2, zorder=2)
        ax.scatter(
            [xy[i][0] for i in front], [xy[i][1] for i in front], s=90, marker="o", facecolors="none", edgecolors="k"
        )
        ax.set_xscale("log")
        ax.set_title(TASKS.get(task_key(task), (task,))[0])
        ax.set_xlabel("# Params (% of the base model, besides the task head)")
        ax.set_ylabel(f"{MAIN} (task score)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        meta["tasks"][task] = {
            "points": [
                {"run_id": t.run_id, "method": t.method, "params": x, "metric": y, "status": t.status}
                for t, (x, y) in zip(tp, xy, strict=True)
            ],
            "front": [tp[i].run_id for i in front],
        }
        meta["n_points"] += len(tp)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.suptitle("Task score vs trainable parameters (one point per trial; hollow = ASHA-stopped; ring = front)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return meta


# ----- selection heatmaps -----

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
    fig.savefig(path, dpi=110)
    plt.close(fig)
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
        len(methods), len(tasks), figsize=(0.5 + 2.1 * len(tasks), 0.6 + 2.3 * len(methods)), squeeze=False
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"methods": methods, "tasks": tasks, "panels": panels}


def _download_json(client: MlflowClient, run_id: str, path: str, tmp: Path) -> dict[str, Any] | None:
    try:
        local = client.download_artifacts(run_id, path, str(tmp))
    except Exception:  # the artifact is optional (e.g. a trial that failed before reporting)
        return None
    try:
        return json.loads(Path(local).read_text())
    except (OSError, ValueError):
        return None


# ----- selection stability across seeds -----


def kept_of(method: str, rep: dict[str, Any]) -> set[str] | dict[str, int] | None:
    """A run's final kept set from its ``selection.json``: module → rank for ROLoRA / AdaLoRA, else the
    set of kept adapters (the tracker's final kept set when logged, else the method's own fields)."""
    if method in RANK_METHODS:
        ranks = rep.get("ranks")
        if not isinstance(ranks, dict) or not ranks:
            return None
        return {str(n): int(r) for n, r in ranks.items() if int(r) > 0}
    tracked = (rep.get("selection_stability") or {}).get("kept")
    if isinstance(tracked, dict):
        return set(tracked)
    for key in ("selected_adapters", "kept"):
        if rep.get(key):
            return set(rep[key])
    if isinstance(rep.get("ranks"), dict):  # e.g. WeightLoRA before selection: every adapter still trains
        return {n for n, r in rep["ranks"].items() if int(r) > 0}
    return None


def _all_names(reports: Sequence[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for rep in reports:
        for key in ("ranks", "importance", "selection_scores", "gates"):
            if isinstance(rep.get(key), dict):
                names |= set(rep[key])
        for key in ("drawn_adapters", "kept", "selected_adapters"):
            if isinstance(rep.get(key), list):
                names |= set(rep[key])
    return names


def _mean_sd(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    m, s = mean_std(values)
    return {"mean": m, "std": s, "n": len(values)}


def seed_stability(method: str, runs: Sequence[RunInfo], reports: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """How stable the kept set is across the seed re-runs of one cell.

    ``kept`` methods: per adapter the share of seeds that kept it, the mean pairwise Jaccard index of
    the kept sets and, when every run kept K of n, the Jaccard index two uniform draws would have;
    rank methods: per module the mean final rank, and the mean pairwise weighted Jaccard (Ruzicka)
    index Σ min / Σ max of the rank vectors. The per-run diagnostics (changes of the kept set, last
    change step) are averaged over the runs that logged them and left out otherwise."""
    pairs = [(r, rep) for r, rep in zip(runs, reports, strict=True) if rep]
    kept = [(r, k) for r, rep in pairs if (k := kept_of(method, rep)) is not None]
    out: dict[str, Any] = {"method": method, "runs": len(runs), "with_selection": len(kept)}
    out["seeds"] = [r.seed for r, _ in kept]
    names = _all_names([rep for _, rep in pairs])
    n_all = next((rep.get("n_adapters") for _, rep in pairs if isinstance(rep.get("n_adapters"), int)), None)
    out["n_adapters"] = n_all
    if kept:
        sets = [k for _, k in kept]
        out["overlap"] = mean_pairwise_overlap(sets)
        if method in RANK_METHODS:
            out["overlap_measure"] = "weighted Jaccard of final ranks (Σ min / Σ max)"
            every = names | set().union(*(set(k) for k in sets))
            out["values"] = {n: float(np.mean([k.get(n, 0) for k in sets])) for n in sorted(every)}
            out["field"] = "mean_rank"
            out["always"] = sorted(n for n in every if all(k.get(n, 0) > 0 for k in sets))
            out["kept_size"] = _mean_sd([float(sum(k.values())) for k in sets])
        else:
            out["overlap_measure"] = "Jaccard of kept sets"
            out["values"] = keep_frequency(sets, names)
            out["field"] = "keep_frequency"
            out["always"] = sorted(n for n, f in out["values"].items() if f == 1.0)
            sizes = {len(k) for k in sets}
            out["kept_size"] = _mean_sd([float(len(k)) for k in sets])
            if isinstance(n_all, int) and len(sizes) == 1 and 0 < (k_ := sizes.pop()) <= n_all:
                out["chance_overlap"] = chance_jaccard(n_all, k_)
    for key in STABILITY_METRICS:
        vals = [v for r in runs if (v := r.metrics.get(key)) is not None and math.isfinite(v)]
        if not vals:  # runs logged before the metric existed: the run's own summary, if any
            sk = key.removeprefix("selection_")
            vals = [
                float(s[sk]) for _, rep in pairs if isinstance(s := rep.get("selection_stability"), dict) and sk in s
            ]
        out[key] = _mean_sd(vals)
    return out


def _stab_fmt(d: dict[str, float] | None, digits: int = 1) -> str:
    return "–" if d is None else f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def stability_md(rows: Sequence[dict[str, Any]]) -> str:
    header = [
        "Task",
        "Method",
        "Seeds",
        "Kept (mean ± std)",
        "Mean pairwise overlap",
        "Chance overlap",
        "Kept-set changes per run",
        "Last change (step)",
    ]
    body = []
    for r in rows:
        ov = "–" if r.get("overlap") is None else f"{r['overlap']:.3f} ({r['overlap_measure']})"
        ch = "–" if r.get("chance_overlap") is None else f"{r['chance_overlap']:.3f}"
        body.append(
            [
                r["task"],
                METHODS.get(r["method"], r["method"]),
                str(r["with_selection"]),
                _stab_fmt(r.get("kept_size")),
                ov,
                ch,
                _stab_fmt(r.get("selection_changes")),
                _stab_fmt(r.get("selection_last_change_step")),
            ]
        )
    note = (
        "Across the seed re-runs of each cell's best configuration. Kept = adapters kept at the end (rank "
        "methods: Σ of final ranks). Overlap: mean over pairs of seeds of the Jaccard index |A ∩ B| / |A ∪ B| "
        "of the kept sets; for ROLoRA / AdaLoRA the weighted Jaccard index Σ min(r_a, r_b) / Σ max(r_a, r_b) of "
        "the final ranks. Chance overlap: the expected Jaccard index of two uniform random draws of the same K "
        "of n. Changes / last change: how often a run's kept set (non-zero gates while WeightLoRA selects; "
        "ranks for ROLoRA) changed and the optimizer step of its last change, from the runs' "
        "`selection_changes` / `selection_last_change_step` metrics (– when the runs did not log them)."
    )
    return md_table(header, body) + "\n" + note + "\n"


# ----- learning curves -----


def _history(client: MlflowClient, run_id: str, key: str) -> tuple[list[int], list[float]]:
    hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in hist], [m.value for m in hist]


def plot_curves(client: MlflowClient, best: dict[tuple[str, str], RunInfo], task: str, path: Path) -> dict[str, Any]:
    """Eval score and training loss by optimizer step, best trial of each method on ``task``."""
    methods = _ordered((m for m, t in best if t == task), list(METHODS))
    colors = _method_colors(methods)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    lines = {}
    for m in methods:
        run = best[(m, task)]
        steps, vals = _history(client, run.run_id, MAIN)
        ax1.plot(steps, vals, marker="o", ms=3, color=colors[m], label=METHODS.get(m, m))
        lsteps, lvals = _history(client, run.run_id, "train_loss")
        ax2.plot(lsteps, lvals, color=colors[m], label=METHODS.get(m, m), alpha=0.85)
        lines[m] = {"run_id": run.run_id, "eval_points": len(steps), "loss_points": len(lsteps)}
    ax1.set_title(f"{TASKS.get(task_key(task), (task,))[0]}: {MAIN} (best trial per method)")
    ax2.set_title("train_loss")
    for ax in (ax1, ax2):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return lines


# ----- cost -----

_EPOCH_PARAMS = ("num_epochs", "epochs", "max_epochs", "max_t")


def _budget(trials: Sequence[RunInfo], parent: Any) -> float:
    """A trial's full budget in epochs: what the completed trials ran (``--max-steps`` may cut the
    epochs the sweep's settings name), else the settings' epochs, else the longest trial."""
    budget = max((t.metrics.get("epoch", 0.0) for t in trials if t.status == COMPLETED), default=0.0)
    for key in _EPOCH_PARAMS:
        if budget:
            break
        try:
            budget = float(parent.data.params[key])
        except (KeyError, ValueError):
            continue
    return budget or max((t.metrics.get("epoch", 0.0) for t in trials), default=0.0)


def sweep_cost(parent: Any, children: Sequence[RunInfo]) -> dict[str, Any]:
    """Trial-epochs spent vs running every trial to its full budget (what the sweep would have cost
    without ASHA), trial counts by status, wall time and summed trial time. Budgets and seconds per
    epoch are taken per task (an SST-2 epoch is 27× an RTE one)."""
    trials = [c for c in children if c.role == TRIAL]
    seed_runs = [c for c in children if c.role == SEED_RUN]
    status = defaultdict(int)
    for t in trials:
        status[t.status] += 1
    by_task: dict[str, list[RunInfo]] = defaultdict(list)
    for t in trials:
        by_task[t.task].append(t)
    spent = full = full_s = 0.0
    budgets = {}
    for task, ts in by_task.items():
        budgets[task] = _budget(ts, parent)
        spent_t = sum(t.metrics.get("epoch", 0.0) for t in ts)
        full_t = len(ts) * budgets[task]
        spent, full = spent + spent_t, full + full_t
        if spent_t:
            full_s += sum(t.seconds for t in ts) / spent_t * full_t
    start, end = parent.info.start_time, parent.info.end_time or int(time.time() * 1000)
    trial_s = sum(t.seconds for t in trials)
    return {
        "trials": len(trials),
        "by_status": dict(sorted(status.items())),
        "asha_stopped": status.get(ASHA_STOPPED, 0),
        "failed": status.get(FAILED, 0),
        "trial_epochs_spent": round(spent, 3),
        "epochs_per_full_trial": {t: round(b, 4) for t, b in budgets.items()},
        "full_budget_trial_epochs": round(full, 3),
        "saved_fraction": round(1 - spent / full, 4) if full else None,
        "wall_seconds": round((end - start) / 1000.0, 1) if start is not None else None,
        "trial_seconds_sum": round(trial_s, 1),
        "full_budget_trial_seconds_est": round(full_s, 1) if full_s else None,
        "seed_runs": len(seed_runs),
        "seed_run_epochs": round(sum(s.metrics.get("epoch", 0.0) for s in seed_runs), 3),
        "seed_run_seconds_sum": round(sum(s.seconds for s in seed_runs), 1),
    }


def _cost_md(c: dict[str, Any]) -> str:
    def hms(s):
        return "–" if s is None else f"{s / 60:.1f} min"

    rows = [
        ("trials", f"{c['trials']} ({', '.join(f'{k}: {v}' for k, v in c['by_status'].items()) or 'none'})"),
        ("trial-epochs spent", f"{c['trial_epochs_spent']:g}"),
        (
            "every trial to its full budget (no early stopping)",
            f"{c['full_budget_trial_epochs']:g} trial-epochs (epochs per trial: "
            + ", ".join(f"{t} {b:.3g}" for t, b in c["epochs_per_full_trial"].items())
            + ")",
        ),
        ("saved by ASHA (in epochs)", "–" if c["saved_fraction"] is None else f"{100 * c['saved_fraction']:.1f}%"),
        ("sweep wall time", hms(c["wall_seconds"])),
        ("sum of trial times", hms(c["trial_seconds_sum"])),
        ("estimated sum without early stopping", hms(c["full_budget_trial_seconds_est"])),
        ("seed re-runs", f"{c['seed_runs']} ({c['seed_run_epochs']:g} epochs, {hms(c['seed_run_seconds_sum'])})"),
    ]
    return md_table(["", "value"], rows)


# ----- entry point -----


def build_report(
    tracking_uri: str,
    parent_run_id: str,
    out_dir: str | Path,
    *,
    margin: float = claims_mod.MARGIN,
    n_boot: int = claims_mod.N_BOOTSTRAP,
    boot_seed: int = 0,
) -> dict[str, Any]:
    """Build every table and plot of a sweep from its MLflow parent run; write them to ``out_dir`` and
    log them as artifacts of the parent run under ``report/``.

    Returns ``{"table_md", "table_csv", "table_long_csv", "pareto", "cost", "report_md": Path,
    "selection": [Path], "curves": [Path], "meta": dict}`` (``meta`` = point / cell / line counts).
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parent, children = load_children(client, parent_run_id)
    trials = [c for c in children if c.role == TRIAL]
    best = best_trials(trials)
    paths: dict[str, Any] = {"selection": [], "curves": []}
    meta: dict[str, Any] = {"selection": {}, "curves": {}}

    # 1) the table (the same one the sweep writes to results/)
    write_table(children, out)
    table_md = out / "table.md"
    paths.update(table_md=table_md, table_csv=out / "table.csv", table_long_csv=out / "table_long.csv")

    # 2) Pareto
    paths["pareto"] = out / "pareto.png"
    meta["pareto"] = plot_pareto(trials, paths["pareto"])
    (out / "pareto.json").write_text(json.dumps(meta["pareto"], indent=1))

    # 3) selection heatmaps of the best trials (one file each, plus all of them side by side)
    grids: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for (method, task), run in sorted(best.items()):
            if method not in SELECTION_METHODS:
                continue
            rep = _download_json(client, run.run_id, "selection.json", Path(tmp) / run.run_id)
            g = selection_grid(rep or {}, SELECTION_METHODS[method])
            if g is None:
                continue
            slug = f"{task_key(task)}_{method}"
            p = out / f"selection_{slug}.png"
            title = f"{METHODS.get(method, method)} on {task}\nbest trial {run.name} (★ = kept)"
            cells_meta = plot_selection(g, title, p)
            cells_meta["run_id"] = run.run_id
            (out / f"selection_{slug}.json").write_text(json.dumps(cells_meta, indent=1))
            paths["selection"].append(p)
            meta["selection"][slug] = cells_meta
            grids[(method, task)] = g
    if grids:
        paths["selection_overview"] = out / "selection_overview.png"
        meta["selection_overview"] = plot_selection_overview(grids, paths["selection_overview"])

    # 3b) selection stability across the seed re-runs of each cell
    paths["stability"] = []
    stab_rows: list[dict[str, Any]] = []
    seed_runs = seed_runs_by_method(children)
    with tempfile.TemporaryDirectory() as tmp:
        for (method, task), runs in sorted(seed_runs.items()):
            if method not in SELECTION_METHODS:
                continue
            reps = [_download_json(client, r.run_id, "selection.json", Path(tmp) / r.run_id) for r in runs]
            row = {"task": task, **seed_stability(method, runs, reps)}
            if row.get("values"):
                fake = {
                    row["field"]: row["values"],
                    "n_adapters": row["n_adapters"],
                    "selected_adapters": row["always"],
                }
                g = selection_grid(fake, (row["field"],))
                if g is not None:
                    slug = f"{task_key(task)}_{method}"
                    p = out / f"stability_{slug}.png"
                    ov = "–" if row["overlap"] is None else f"{row['overlap']:.2f}"
                    chance = row.get("chance_overlap")
                    # three short lines: the heatmap is only three module types wide
                    title = (
                        f"{METHODS.get(method, method)} on {task}: {row['with_selection']} seeds\n"
                        f"mean pairwise overlap {ov}\n"
                        + (
                            f"(random draws {chance:.2f}; ★ = kept by every seed)"
                            if chance is not None
                            else "(★ = kept by every seed)"
                        )
                    )
                    row["grid"] = plot_selection(g, title, p)
                    paths["stability"].append(p)
            stab_rows.append(row)
    (out / "stability.json").write_text(json.dumps(stab_rows, indent=1, default=str))
    (out / "stability.md").write_text(
        stability_md(stab_rows) if stab_rows else "No seed re-runs of a selecting method.\n"
    )
    meta["stability"] = stab_rows

    # 3c) the papers' claims, from the seed re-runs
    scores = {k: [r.main for r in v if r.main is not None] for k, v in seed_runs.items()}
    scores = {k: v for k, v in scores.items() if v}
    params = {}  # of the same runs (the rank whose re-runs the claims use)
    for key, runs in seed_runs.items():
        vals = [p for r in runs if (p := _method_params(r)) is not None]
        if vals:
            params[key] = float(np.mean(vals))
    claim_rows = claims_mod.evaluate_claims(scores, params, margin=margin, n_boot=n_boot, seed=boot_seed)
    if scores:
        claims_text = claims_mod.claims_md(claim_rows, scores, METHODS, margin=margin, n_boot=n_boot, seed=boot_seed)
    else:
        claims_text = "No seed re-runs: the claims need `--seeds 2` or more.\n"
    (out / "claims.md").write_text(claims_text)
    (out / "claims.json").write_text(json.dumps(claim_rows, indent=1, default=str))
    paths["claims"] = out / "claims.md"
    meta["claims"] = claim_rows

    # 4) learning curves
    for task in _ordered({t for _, t in best}, list(TASKS), key=task_key):
        p = out / f"curves_{task_key(task)}.png"
        meta["curves"][task] = plot_curves(client, best, task, p)
        paths["curves"].append(p)

    # 5) cost
    cost = sweep_cost(parent, children)
    (out / "cost.json").write_text(json.dumps(cost, indent=1))
    (out / "cost.md").write_text(_cost_md(cost))
    paths["cost"] = out / "cost.json"
    meta["cost"] = cost

    # 6) one page
    tags = parent.data.tags
    page = [
        f"# Sweep report: {tags.get('wlora.sweep_name', parent.info.run_name)}",
        "",
        f"MLflow parent run `{parent_run_id}` (experiment {parent.info.experiment_id}); model "
        f"`{Path(tags.get('model', '?')).name}`; git commit `{tags.get('git_commit', '?')}`.",
        "",
        "## Results",
        "",
        table_md.read_text(),
        "## Trainable parameters vs task score",
        "",
        "![pareto](pareto.png)",
        "",
        "## Adapter selection of the best trials",
        "",
        *(["![selection overview](selection_overview.png)", ""] if "selection_overview" in paths else []),
        *[f"![{p.stem}]({p.name})" for p in paths["selection"]],
        "",
        "## The papers' claims (seed re-runs)",
        "",
        claims_text,
        "## Selection stability across seeds",
        "",
        (out / "stability.md").read_text(),
        *[f"![{p.stem}]({p.name})" for p in paths["stability"]],
        "",
        "## Learning curves",
        "",
        *[f"![{p.stem}]({p.name})" for p in paths["curves"]],
        "",
        "## Sweep cost",
        "",
        _cost_md(cost),
    ]
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text("\n".join(page))

    # 7) log to the parent run
    # (``results/`` belongs to the sweep's own table; the report never overwrites it.)
    client.log_artifacts(parent_run_id, str(out), artifact_path="report")
    paths["meta"] = meta
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True, help="MLflow tracking URI of the sweep (e.g. sqlite:///...)")
    ap.add_argument("--run-id", required=True, help="the sweep's parent run id")
    ap.add_argument("--out", default=None, help="output folder (default: runs/report-<run id prefix>)")
    ap.add_argument(
        "--margin",
        type=float,
        default=claims_mod.MARGIN,
        help="non-inferiority margin δ of the '≈' / '≥' claims, in task-score units (default %(default)s)",
    )
    ap.add_argument("--bootstrap", type=int, default=claims_mod.N_BOOTSTRAP, help="bootstrap resamples")
    ap.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap")
    args = ap.parse_args(argv)
    if not (args.margin >= 0 and math.isfinite(args.margin)):
        ap.error(f"--margin must be a finite number >= 0, got {args.margin}")
    if args.bootstrap < 100:
        ap.error(f"--bootstrap must be >= 100, got {args.bootstrap}")
    out = args.out or f"runs/report-{args.run_id[:8]}"
    paths = build_report(
        args.tracking_uri,
        args.run_id,
        out,
        margin=args.margin,
        n_boot=args.bootstrap,
        boot_seed=args.bootstrap_seed,
    )
    print(Path(paths["table_md"]).read_text())
    print(f"report written to {out} and logged to run {args.run_id} (artifacts report/)")
    return paths


if __name__ == "__main__":
    main()
