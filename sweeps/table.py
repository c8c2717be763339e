"""The results table, shaped like the WeightLoRA paper's Table 2: method (rank) × task, main dev
metric ×100 (mean ± std over ``--seeds`` re-runs when given, else the best trial), params %, average.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _cell_value(summary: Mapping[str, Any], seeds: Mapping[str, Any] | None) -> tuple[float | None, float | None, int]:
    if seeds and seeds.get("mean") is not None:
        return seeds["mean"], seeds["std"], seeds["n"]
    return summary.get("best_metric"), None, 1 if summary.get("best_metric") is not None else 0


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def table_rows(cells: Mapping[str, Mapping[str, Any]], seed_cells: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long form: one row per (method, rank, task)."""
    rows = []
    for name, s in cells.items():
        mean, std, n = _cell_value(s, seed_cells.get(name))
        rows.append(
            {
                "method": s["method"],
                "rank": s.get("rank") if s.get("rank") is not None else "",
                "task": s["task"],
                "metric_mean": mean,
                "metric_std": std,
                "n_runs": n,
                "params_pct": s.get("params_pct"),
                "trainable_params": s.get("trainable_params"),
                "n_trials": s.get("n_trials"),
                "n_asha_stopped": s.get("n_asha_stopped"),
                "n_failed": s.get("n_failed"),
                "best_trial_id": s.get("best_trial_id", ""),
                "best_config": json.dumps(s.get("best_config", {}), sort_keys=True, default=str),
            }
        )
    return rows


def render_markdown(rows: list[dict[str, Any]]) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys((r["method"], r["rank"]) for r in rows))
    by = {(r["method"], r["rank"], r["task"]): r for r in rows}
    head = ["Method", "r", "Params %", *tasks, "Avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for method, rank in methods:
        cells = [by.get((method, rank, t)) for t in tasks]
        pct = [c["params_pct"] for c in cells if c and c["params_pct"] is not None]
        vals = [c["metric_mean"] for c in cells if c and c["metric_mean"] is not None]
        avg = sum(vals) / len(vals) if len(vals) == len(tasks) and vals else None
        line = [
            method,
            str(rank),
            f"{sum(pct) / len(pct):.3f}" if pct else "–",
            *[_fmt(c["metric_mean"], c["metric_std"]) if c else "–" for c in cells],
            _fmt(avg, None),
        ]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n"


def write_tables(cells: Mapping[str, Mapping[str, Any]], seed_cells: Mapping[str, Any], out_dir: Path) -> str:
    """Write ``table.md`` and ``table.csv`` into ``out_dir``; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(cells, seed_cells)
    md = render_markdown(rows)
    (out_dir / "table.md").write_text(md)
    with (out_dir / "table.csv").open("w", newline="") as f:
        fields = list(rows[0]) if rows else ["method", "rank", "task"]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return md
