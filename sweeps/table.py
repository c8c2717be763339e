"""The sweep's one results table, read from the MLflow store, in the shape of the WeightLoRA paper's Tables 1/2.

Rows are (method, rank) — a sweep over ``--ranks 4,8`` gets one row per rank, labelled ``LoRA (r=4)`` —
columns are the tasks (each with its reported metric(s): MRPC Acc/F1, STS-B Pear/Spear …), ``# Params`` and
the average. A cell's value is the mean ± sample std of its ``--seeds`` re-runs when it has any, else its best
trial. The sweep writes it to ``results/table.{md,csv}`` when it ends (:func:`write_table`) and
:mod:`sweeps.report` puts the same table at the top of its report; both read the store through this module,
so a table can be rebuilt later, on another machine, from the store alone.

What is read (the sweep's MLflow schema, :mod:`sweeps.tracking`): the parent's children (tag
``mlflow.parentRunId``), each with tags ``wlora.role`` (``trial`` / ``seed_run``), ``method``, ``task``,
``wlora.cell`` (``<task>-<method>[-r<rank>]``), ``seed``, ``status``; params = the flat config; metrics
``eval_main`` and ``eval_<metric>``, and ``final_method_params`` / ``final_method_pct`` /
``final_active_adapters`` … once at the end.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sweeps.claims import PROTOCOL_TEXT
from sweeps.schema import (
    FAILED,
    TRIAL,
    RunInfo,
    best_trials,
    choice_split_of,
    load_children,
    protocol_of,
)
from wlora.data.registry import TASKS as TASK_SPECS
from wlora.data.registry import normalize_task
from wlora.registry import METHODS as REGISTRY

#: Row order and display names (the papers' order: references first, then the proposed methods), from the registry.
METHODS: dict[str, str] = {
    spec.slug: spec.label or spec.slug for spec in sorted(REGISTRY.values(), key=lambda spec: spec.table_order)
}

#: Column order and headers: the papers' order, each task's reported metric(s) (``eval_<name>``), from the task
#: registry (wlora.data.registry).
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {key: (spec.header, spec.metrics) for key, spec in TASK_SPECS.items()}

#: Other spellings of a metric a runner may log (``eval_mcc`` for ``eval_matthews_corrcoef``).
METRIC_ALIASES = {"matthews_corrcoef": ("mcc", "matthews"), "pearson": ("pearsonr",), "spearman": ("spearmanr",)}

#: Methods that keep K of the n adapters: their row label gives K (from ``active_adapters``).
K_METHODS = tuple(slug for slug, spec in REGISTRY.items() if spec.keeps_k)


def task_key(task: str) -> str:
    """``SST-2`` / ``sst2`` / ``STS-B`` → the key used in :data:`TASKS` (a task the registry does not know keeps
    its own name: a store may hold runs of tasks added later)."""
    try:
        return normalize_task(task)
    except ValueError:
        return task


def ordered(keys: Iterable[str], order: Sequence[str], key=lambda s: s) -> list[str]:
    """``keys`` in the order of ``order`` (unknown keys last, alphabetically)."""
    rank = {k: i for i, k in enumerate(order)}
    return sorted(set(keys), key=lambda k: (rank.get(key(k), len(rank)), k))


def _rank_order(rank: str) -> tuple[int, int]:
    return (0, int(rank)) if rank.isdigit() else (1, 0)


def seed_runs_by_cell(children: Sequence[RunInfo]) -> dict[tuple[str, str, str], list[RunInfo]]:
    """The non-failed seed re-runs of each (method, rank, task) cell (race runs reused as seed re-runs included:
    ``--race-top`` under ``--protocol papers``)."""
    groups: dict[tuple[str, str, str], list[RunInfo]] = defaultdict(list)
    for r in children:
        if r.is_seed_run and r.status != FAILED:
            groups[(r.method, r.rank, r.task)].append(r)
    return dict(groups)


def seed_runs_by_method(
    children: Sequence[RunInfo], protocol: str | None = None
) -> dict[tuple[str, str], list[RunInfo]]:
    """The seed re-runs of each (method, task), for the claims and the stability analysis: with several
    ranks, those of the rank whose best search trial scored best (the claims compare methods at their best
    setting, as the papers tune each method). The rank is a configuration choice, so it reads the search
    trials' scores, never the seed re-runs' (under ``--protocol heldout``: held-out scores only; a dev score
    raises :class:`sweeps.schema.SelectionLeak`)."""
    by_cell = seed_runs_by_cell(children)
    best = best_trials(children, by_rank=True, choice_split=choice_split_of(children, protocol))
    out: dict[tuple[str, str], list[RunInfo]] = {}
    score: dict[tuple[str, str], float] = {}
    for (method, rank, task), runs in by_cell.items():
        trial = best.get((method, rank, task))
        value = trial.main if trial is not None and trial.main is not None else float("-inf")
        if (method, task) not in out or value > score[(method, task)]:
            out[(method, task)], score[(method, task)] = runs, value
    return out


# ----- the table -----


def _metric(run: RunInfo, name: str) -> float | None:
    for n in (name, *METRIC_ALIASES.get(name, ())):
        v = run.metrics.get(f"eval_{n}")
        if v is not None and math.isfinite(v):
            return float(v)
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def table_cells(children: Sequence[RunInfo], protocol: str | None = None) -> list[dict[str, Any]]:
    """One record per (method, rank, task): main metric mean/std over seed re-runs (if any), else the best
    trial's value (n = 1); the task's reported metrics likewise; the parameters of those runs; and the
    cell's trial counts."""
    best = best_trials(children, by_rank=True, choice_split=choice_split_of(children, protocol))
    seeds = {k: [r for r in v if r.main is not None] for k, v in seed_runs_by_cell(children).items()}
    seeds = {k: v for k, v in seeds.items() if v}
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t in children:
        if t.role == TRIAL:
            c = counts[(t.method, t.rank, t.task)]
            c["n_trials"] += 1
            c[f"n_{t.status}"] += 1
    cells = []
    for key in sorted(set(best) | set(seeds), key=lambda k: (k[0], _rank_order(k[1]), k[2])):
        runs = seeds.get(key) or [best[key]]
        method, rank, task = key
        names = TASKS.get(task_key(task), (task, ()))[1]
        rec: dict[str, Any] = {
            "method": method,
            "rank": rank,
            "task": task,
            "source": "seed_runs" if key in seeds else "best_trial",
            "n": len(runs),
            "seeds": ",".join(str(r.seed) for r in runs),
            "run_ids": ",".join(r.run_id for r in runs),
        }
        rec["main_mean"], rec["main_std"] = mean_std([r.main for r in runs])
        for name in names:
            vals = [v for v in (_metric(r, name) for r in runs) if v is not None]
            if len(vals) == len(runs):
                rec[f"{name}_mean"], rec[f"{name}_std"] = mean_std(vals)
        for m in ("trainable_params", "trainable_pct", "method_params", "method_pct", "active_adapters"):
            vals = [v for r in runs if (v := r.final(m)) is not None]
            rec[m] = float(np.mean(vals)) if vals else None
        src = best.get(key, runs[0])
        for p in ("r", "k", "k_fraction", "lr", "t", "lr_w", "warmup_steps"):
            rec[p] = src.params.get(p, "")
        c = counts.get(key, {})
        rec.update(
            n_trials=c.get("n_trials", 0),
            n_completed=c.get("n_completed", 0),
            n_asha_stopped=c.get("n_asha_stopped", 0),
            n_failed=c.get("n_failed", 0),
            best_run_id=best[key].run_id if key in best else "",
            best_config=json.dumps(best[key].params, sort_keys=True) if key in best else "",
        )
        cells.append(rec)
    return cells


def cell_params(cell: dict[str, Any], pct: bool = False) -> float | None:
    """# Params of a cell: trainable parameters besides the task head (runs logged before that metric
    existed fall back to every trainable parameter)."""
    new, old = ("method_pct", "trainable_pct") if pct else ("method_params", "trainable_params")
    return cell.get(new) if cell.get(new) is not None else cell.get(old)


def fmt_params(n: float | None, pct: float | None) -> str:
    """``110.6K (0.487%)``."""
    if n is None:
        return "–"
    if n >= 1e6:
        s = f"{n / 1e6:.2f}M"
    elif n >= 1e3:
        s = f"{n / 1e3:.1f}K"
    else:
        s = f"{n:.0f}"
    return f"{s} ({pct:.3g}%)" if pct is not None else s


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f}±{std:.4f}" if n > 1 else f"{mean:.4f}"


def _uniform(values: Iterable[str]) -> str | None:
    vals = {v for v in values if v not in ("", None)}
    return vals.pop() if len(vals) == 1 else None


def build_table(cells: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """The wide table: rows = (method, rank), columns = # Params, one per task, Avg.

    Returns (markdown header, markdown rows, csv rows). ``Avg`` is left empty when a row lacks a task
    present in the table (an average over different task sets would not compare)."""
    order = {m: i for i, m in enumerate(METHODS)}
    rows = sorted(
        {(c["method"], c.get("rank", "")) for c in cells},
        key=lambda mr: (order.get(mr[0], len(order)), mr[0], _rank_order(mr[1])),
    )
    tasks = ordered((c["task"] for c in cells), list(TASKS), key=task_key)
    by = {(c["method"], c.get("rank", ""), c["task"]): c for c in cells}
    header = ["Method", "# Params", *[TASKS.get(task_key(t), (t,))[0] for t in tasks], "Avg"]
    md_rows, csv_rows = [], []
    for m, rank in rows:
        row = [c for t in tasks if (c := by.get((m, rank, t)))]
        params = [p for c in row if (p := cell_params(c)) is not None]
        pcts = [p for c in row if (p := cell_params(c, pct=True)) is not None]
        label = METHODS.get(m, m)
        settings = [f"r={r}" for r in (rank or _uniform(c["r"] for c in row),) if r]
        if m in K_METHODS and (k := _uniform(f"{c['active_adapters']:g}" for c in row if c["active_adapters"])):
            settings.append(f"K={k}")  # adapters kept at the end (k or round(k_fraction · n))
        if settings:
            label += f" ({', '.join(settings)})"
        avg = float(np.mean([c["main_mean"] for c in row])) if len(row) == len(tasks) else None
        csv_row: dict[str, Any] = {
            "method": m,
            "rank": rank,
            "params": float(np.mean(params)) if params else "",
            "params_pct": float(np.mean(pcts)) if pcts else "",
        }
        md = [label, fmt_params(csv_row["params"] or None, csv_row["params_pct"] or None)]
        for t in tasks:
            c = by.get((m, rank, t))
            csv_row[f"{t}_mean"] = c["main_mean"] if c else ""
            csv_row[f"{t}_std"] = c["main_std"] if c else ""
            csv_row[f"{t}_n"] = c["n"] if c else ""
            if c is None:
                md.append("–")
                continue
            names = TASKS.get(task_key(t), (t, ()))[1]
            if len(names) > 1 and all(f"{n}_mean" in c for n in names):
                md.append("/".join(_fmt(c[f"{n}_mean"], c[f"{n}_std"], c["n"]) for n in names))
            else:
                md.append(_fmt(c["main_mean"], c["main_std"], c["n"]))
        csv_row["avg"] = avg if avg is not None else ""
        md.append(f"{avg:.4f}" if avg is not None else "–")
        md_rows.append(md)
        csv_rows.append(csv_row)
    # Bold the best value of each task column and of Avg (by the main metric), as the papers do.
    for j, t in enumerate([*tasks, None]):
        scores = [(r[f"{t}_mean"] if t else r["avg"]) for r in csv_rows]
        scores = [s if s == "" else round(s, 4) for s in scores]  # ties at the shown precision both bold
        valid = [s for s in scores if s != ""]
        if len(valid) > 1:
            top = max(valid)
            for i, s in enumerate(scores):
                if s == top:
                    md_rows[i][2 + j] = f"**{md_rows[i][2 + j]}**"
    return header, md_rows, csv_rows


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["method", "rank"])
        w.writeheader()
        w.writerows(rows)


def table_note(cells: Sequence[dict[str, Any]]) -> str:
    """What the table's numbers are, printed under it."""
    seeded = any(c["n"] > 1 for c in cells)
    keys = ordered({task_key(c["task"]) for c in cells}, list(TASKS))
    scores = "; ".join(f"{TASKS[k][0].split(' ')[0]} {TASK_SPECS[k].score}" for k in keys if k in TASK_SPECS)
    shown = [TASKS[k][0].split(" ")[0] for k in keys if k in TASKS and len(TASKS[k][1]) > 1]
    return (
        f"Main metric = each task's score on the dev set (`eval_main`: {scores or 'the task score'})"
        + (f"; {'/'.join(shown)} cells show every reported metric" if shown else "")
        + ", "
        + (
            "mean ± sample std over the seed re-runs of each cell's best configuration. "
            if seeded
            else "of the best trial per method, rank and task (one seed). "
        )
        + "# Params = trainable parameters besides the task head (adapters and gates; every weight for full "
        "fine-tuning), as the papers count them, and their share of the base model, averaged over tasks; the "
        "task head (pooler + classifier) trains in every method on top. Avg = mean task score over the columns. "
        "Best per column in bold."
    )


def write_table(
    children: Sequence[RunInfo], out_dir: Path, protocol: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """``table.md`` (with its note and, when given, the protocol), ``table.csv`` (the wide table) and
    ``table_long.csv`` (every cell with its run ids, trial counts and settings) into ``out_dir``. Returns
    (the markdown, the cells)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = table_cells(children, protocol)
    header, md_rows, csv_rows = build_table(cells)
    text = md_table(header, md_rows) + "\n" + table_note(cells) + "\n"
    if protocol:
        text += f"\nProtocol: **{protocol}** ({PROTOCOL_TEXT.get(protocol, protocol)}).\n"
    (out_dir / "table.md").write_text(text)
    write_csv(out_dir / "table.csv", csv_rows)
    write_csv(out_dir / "table_long.csv", cells)
    return text, cells


def write_table_from_store(client, parent_run_id: str, out_dir: Path) -> str:
    """:func:`write_table` for the sweep whose MLflow parent run is ``parent_run_id``; returns the markdown."""
    parent, children = load_children(client, parent_run_id)
    return write_table(children, out_dir, protocol=protocol_of(parent))[0]
