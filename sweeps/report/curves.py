"""Score plots: the Pareto plot (task score against # Params, one point per trial) and the learning curves of
each method's best trial."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient

from sweeps.pareto import PARAMS_METRIC, pareto_front
from sweeps.report.figures import save_figure
from sweeps.schema import (
    ASHA_STOPPED,
    MAIN,
    STATUS_OK,
    TRIAL,
    RunInfo,
)
from sweeps.table import (  # the one results table, shared with the report
    METHODS,
    TASKS,
    task_key,
)
from sweeps.table import ordered as _ordered


def method_params_of(t: RunInfo) -> float | None:
    """The papers' "# Params" of a run: parameters trained besides the task head (absolute)."""
    v = t.final("method_params")
    return v if v is not None else t.final("trainable_params")


def pareto_x(t: RunInfo) -> float | None:
    """The Pareto x of a trial (:data:`sweeps.pareto.PARAMS_METRIC`; runs from before it: the trainable share)."""
    v = t.final(PARAMS_METRIC)
    return v if v is not None else t.final("trainable_pct")


def method_colors(methods: Iterable[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(_ordered(methods, list(METHODS)))}


def plot_pareto(trials: Sequence[RunInfo], path: Path) -> dict[str, Any]:
    """Metric vs # Params (% of the base model trained besides the head), one point per trial (hollow =
    ASHA-stopped), front as a line."""
    pts = [t for t in trials if t.role == TRIAL and t.main is not None and pareto_x(t) is not None]
    pts = [t for t in pts if t.status in STATUS_OK]
    tasks = _ordered({t.task for t in pts}, list(TASKS), key=task_key)
    colors = method_colors({t.method for t in pts})
    meta: dict[str, Any] = {"tasks": {}, "n_points": 0}
    ncols = min(3, max(1, len(tasks)))
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        tp = [t for t in pts if t.task == task]
        xy = [(pareto_x(t), t.main) for t in tp]
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
    save_figure(fig, path)
    return meta


def metric_history(client: MlflowClient, run_id: str, key: str) -> tuple[list[int], list[float]]:
    hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in hist], [m.value for m in hist]


def plot_curves(client: MlflowClient, best: dict[tuple[str, str], RunInfo], task: str, path: Path) -> dict[str, Any]:
    """Eval score and training loss by optimizer step, best trial of each method on ``task``."""
    methods = _ordered((m for m, t in best if t == task), list(METHODS))
    colors = method_colors(methods)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    lines = {}
    for m in methods:
        run = best[(m, task)]
        steps, vals = metric_history(client, run.run_id, MAIN)
        ax1.plot(steps, vals, marker="o", ms=3, color=colors[m], label=METHODS.get(m, m))
        lsteps, lvals = metric_history(client, run.run_id, "train_loss")
        ax2.plot(lsteps, lvals, color=colors[m], label=METHODS.get(m, m), alpha=0.85)
        lines[m] = {"run_id": run.run_id, "eval_points": len(steps), "loss_points": len(lsteps)}
    ax1.set_title(f"{TASKS.get(task_key(task), (task,))[0]}: {MAIN} (best trial per method)")
    ax2.set_title("train_loss")
    for ax in (ax1, ax2):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return lines
