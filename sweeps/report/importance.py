"""Which searched dimensions matter, per cell: Optuna's fANOVA importance of each hyperparameter over the
cell's trials that trained to the end, and one bar plot per cell.

The trials are read back from MLflow (their params = the searched values, their final score), put into an
in-memory Optuna study with distributions inferred from the values (numbers spanning ≥ 10× on a log scale,
other numbers linear, anything else categorical), and scored by ``FanovaImportanceEvaluator`` (seeded).
Dimensions that took one value in the cell are not searched there and are left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps.report.figures import save_figure
from sweeps.schema import COMPLETED, TRIAL, RunInfo
from sweeps.table import METHODS, task_key

#: Fewer completed trials than this in a cell: no importance (fANOVA on a handful of points is noise).
MIN_TRIALS = 8
#: Params that are not searched dimensions (set by the sweep for every trial, or bookkeeping).
NOT_SEARCHED = {"seed", "task", "method", "model", "data_dir", "sweep_cell", "sweep_role"}


def _number(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def searched_params(runs: Sequence[RunInfo]) -> dict[str, Any]:
    """name → Optuna distribution of every param that varies across ``runs``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict[str, Any] = {}
    names = set().union(*(r.params for r in runs)) - NOT_SEARCHED
    for name in sorted(names):
        values = [r.params.get(name) for r in runs]
        if None in values or len(set(values)) < 2:
            continue
        nums = [_number(v) for v in values]
        if all(n is not None for n in nums):
            lo, hi = min(nums), max(nums)
            out[name] = FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
        else:
            out[name] = CategoricalDistribution(sorted(set(values)))
    return out


def cell_importance(runs: Sequence[RunInfo], seed: int = 0) -> dict[str, float] | None:
    """fANOVA importance (sums to 1) of the searched dimensions over the completed trials in ``runs``."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    done = [r for r in runs if r.role == TRIAL and r.status == COMPLETED and r.main is not None]
    if len(done) < MIN_TRIALS:
        return None
    dists = searched_params(done)
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for r in done:
        params = {
            k: (float(r.params[k]) if isinstance(d, optuna.distributions.FloatDistribution) else r.params[k])
            for k, d in dists.items()
        }
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r.main))
    if len(dists) == 1:
        return {next(iter(dists)): 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {k: float(v) for k, v in imp.items()}


def importance_rows(children: Sequence[RunInfo], out_dir: Path) -> list[dict[str, Any]]:
    """One row (and one plot ``importance_<task>_<method>.png``) per cell with enough completed trials."""
    import matplotlib.pyplot as plt

    cells: dict[tuple[str, str, str], list[RunInfo]] = {}
    for r in children:
        if r.role == TRIAL:
            cells.setdefault((r.task, r.method, r.rank), []).append(r)
    rows = []
    for (task, method, rank), runs in sorted(cells.items()):
        imp = cell_importance(runs)
        if not imp:
            continue
        slug = f"{task_key(task)}_{method}" + (f"_r{rank}" if rank else "")
        path = out_dir / f"importance_{slug}.png"
        names = list(imp)[::-1]
        fig, ax = plt.subplots(figsize=(5, 0.45 * len(names) + 1.2))
        ax.barh(names, [imp[n] for n in names], color="#4c72b0")
        ax.set_xlim(0, 1)
        ax.set_xlabel("fANOVA importance (share of the score's variance)")
        label = METHODS.get(method, method) + (f" r={rank}" if rank else "")
        n = sum(r.status == COMPLETED for r in runs)
        ax.set_title(f"{label} on {task}: what matters ({n} completed trials)")
        save_figure(fig, path)
        rows.append({"task": task, "method": method, "rank": rank, "importance": imp, "trials": n, "plot": path})
    return rows


def importance_md(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return f"No cell has {MIN_TRIALS} or more completed trials: no importance.\n"
    lines = []
    for r in rows:
        label = METHODS.get(r["method"], r["method"]) + (f" r={r['rank']}" if r["rank"] else "")
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["importance"].items())
        lines.append(f"- {r['task']} · {label} ({r['trials']} trials): {parts}")
    lines += [
        "",
        "Optuna's fANOVA importance (seeded) of each searched dimension over the cell's trials that trained to "
        f"the end (cells with ≥ {MIN_TRIALS}); a dimension near 0 did not move the score in this range and is "
        "a candidate to pin.",
        "",
    ]
    return "\n".join(lines)
