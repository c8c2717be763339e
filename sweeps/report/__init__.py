"""Sweep report from MLflow: the papers' table shape, Pareto / selection / learning-curve plots, sweep cost.

    python -m sweeps.report --tracking-uri sqlite:///runs/mlflow.db --run-id PARENT_RUN_ID [--out DIR]

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

The package, one module per part: :mod:`~sweeps.report.selection`, :mod:`~sweeps.report.stability`,
:mod:`~sweeps.report.curves` (Pareto and learning curves), :mod:`~sweeps.report.cost`, :mod:`~sweeps.report.page`
(the page) and :mod:`~sweeps.report.cli` (the command line). The table is :mod:`sweeps.table`, the claims
:mod:`sweeps.claims`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives: imported on first use, so ``python -m sweeps.report --help`` (and its checks of
#: the store and the run id) answer before matplotlib and the plots load.
_HOMES = {
    "pareto_front": "sweeps.pareto",
    "sweep_cost": "sweeps.report.cost",
    "plot_curves": "sweeps.report.curves",
    "plot_pareto": "sweeps.report.curves",
    "build_report": "sweeps.report.page",
    "main": "sweeps.report.cli",
    "selection_grid": "sweeps.report.selection",
    "split_module": "sweeps.report.selection",
    "kept_of": "sweeps.report.stability",
    "seed_stability": "sweeps.report.stability",
    "stability_md": "sweeps.report.stability",
    "RunInfo": "sweeps.schema",
    "METHODS": "sweeps.table",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
