"""Sweep report from MLflow: the papers' table shape, Pareto / selection / learning-curve plots, sweep cost.

The page: :func:`build_report` reads the store, writes every part and logs them under the parent run's
``report/`` artifacts; :func:`main` is the command line (``python -m sweeps.report``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
from mlflow.tracking import MlflowClient

from sweeps import claims as claims_mod
from sweeps.report.cost import cost_md, sweep_cost
from sweeps.report.curves import plot_curves, plot_pareto
from sweeps.report.importance import importance_md, importance_rows
from sweeps.report.selection import (
    SELECTION_METHODS,
    download_json,
    plot_selection,
    plot_selection_overview,
    selection_grid,
)
from sweeps.report.stability import decision_lines, decision_rows, seed_stability
from sweeps.schema import (
    TRIAL,
    best_trials,
    choice_split_of,
    load_children,
    protocol_of,
)
from sweeps.table import (  # the one results table, shared with the report
    METHODS,
    TASKS,
    seed_runs_by_method,
    task_key,
    write_table,
)
from sweeps.table import ordered as _ordered
from sweeps.verdicts import seed_records, verdict_inputs, write_verdicts


def build_report(
    tracking_uri: str,
    parent_run_id: str,
    out_dir: str | Path,
    *,
    margin: float | None = None,
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
    best = best_trials(trials, choice_split=choice_split_of(trials, protocol_of(parent)))
    paths: dict[str, Any] = {"selection": [], "curves": []}
    meta: dict[str, Any] = {"selection": {}, "curves": {}}

    # 1) the table (the same one the sweep writes to results/)
    write_table(children, out, protocol=protocol_of(parent))
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
            rep = download_json(client, run.run_id, "selection.json", Path(tmp) / run.run_id)
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

    # 3b) selection stability across the seed re-runs of each cell (plots from the runs' own reports)
    paths["stability"] = []
    stab_rows: list[dict[str, Any]] = []
    seed_runs = seed_runs_by_method(children, protocol_of(parent))
    reports: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for (method, task), runs in sorted(seed_runs.items()):
            reps = [download_json(client, r.run_id, "selection.json", Path(tmp) / r.run_id) for r in runs]
            reports.update({r.run_id: rep for r, rep in zip(runs, reps, strict=True)})
            if method not in SELECTION_METHODS:
                continue
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

    # 3c) the verdicts — claims and stability tables — from seeds.csv + verdict_inputs.json alone, through the
    # functions `python -m sweeps.claims --recompute` calls (every number on those pages can be recomputed)
    records = seed_records(seed_runs, reports)
    inputs = verdict_inputs(parent, margin, n_boot, boot_seed, client)
    verdicts = write_verdicts(out, records, inputs)
    if not records:  # no seed re-runs: the decisions of the search trials, as before
        decisions = decision_rows(children)
        if decisions:
            with (out / "stability.md").open("a") as fh:
                fh.write("\n" + decision_lines(decisions))
        verdicts["decisions"] = decisions
    holm = {(r["task"], r["method"]): r.get("overlap_p_holm") for r in verdicts["stability"]}
    for row in stab_rows:  # the plotted rows (every adapter's keep frequency) with the page's Holm p
        row["overlap_p_holm"] = holm.get((row["task"], row["method"]))
    meta["stability"] = stab_rows
    meta["decisions"] = verdicts["decisions"]
    claims_text = verdicts["claims_md"]
    paths["claims"] = out / "claims.md"
    paths["seeds_csv"] = out / "seeds.csv"
    meta["claims"] = verdicts["claims"]

    # 3d) what matters: hyperparameter importance per cell
    imp_rows = importance_rows(children, out)
    paths["importance"] = [r["plot"] for r in imp_rows]
    meta["importance"] = [{k: v for k, v in r.items() if k != "plot"} for r in imp_rows]
    (out / "importance.md").write_text(importance_md(imp_rows))

    # 4) learning curves
    for task in _ordered({t for _, t in best}, list(TASKS), key=task_key):
        p = out / f"curves_{task_key(task)}.png"
        meta["curves"][task] = plot_curves(client, best, task, p)
        paths["curves"].append(p)

    # 5) cost
    cost = sweep_cost(parent, children)
    (out / "cost.json").write_text(json.dumps(cost, indent=1))
    (out / "cost.md").write_text(cost_md(cost))
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
        "## What matters: hyperparameter importance",
        "",
        (out / "importance.md").read_text(),
        *[f"![{p.stem}]({p.name})" for p in paths["importance"]],
        "",
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
        cost_md(cost),
    ]
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text("\n".join(page))

    # 7) log to the parent run
    # (``results/`` belongs to the sweep's own table; the report never overwrites it.)
    client.log_artifacts(parent_run_id, str(out), artifact_path="report")
    paths["meta"] = meta
    return paths
