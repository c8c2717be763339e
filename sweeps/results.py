"""Step 4 of a sweep, results: each cell's trials from the pooled Tune run → cell summaries, seed means,
Pareto fronts, the best adapter per cell, and the results table (:mod:`sweeps.table`, read back from MLflow:
the same table the report shows).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps.pareto import PARAMS_METRIC, pareto_front
from sweeps.schema import ASHA_STOPPED, COMPLETED, FAILED, TRIAL, pick_best, trial_outcome
from sweeps.search import EarlyStopLedger
from sweeps.table import write_table_from_store
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY
from wlora.run_config import OBJECTIVE


def pareto_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The completed trials on the (params %, metric) Pareto front, fewest parameters first."""
    pts = [r for r in rows if r["status"] == COMPLETED and r[OBJECTIVE] is not None and r[PARAMS_METRIC] is not None]
    return [pts[i] for i in pareto_front([(r[PARAMS_METRIC], r[OBJECTIVE]) for r in pts])]


def trial_rows(
    results, ledgers: dict[str, EarlyStopLedger], trials: Sequence[Any] = ()
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The pooled run's trials grouped by (cell, role), each as a row of the state file.

    ``trials`` (Tune's trial objects) supply the config and the failure of a trial that died before it
    wrote anything (e.g. killed for memory at its start), whose result holds neither."""
    from sweeps.schema import trial_error_reason

    by_id = {t.trial_id: t for t in trials}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        m = r.metrics or {}
        tid = m.get("trial_id") or Path(r.path).name.removeprefix("trial_")
        trial = by_id.get(tid)
        config = dict(r.config or (trial.config if trial is not None else None) or {})
        cell, role = config.pop(CELL_KEY, None), config.pop(ROLE_KEY, TRIAL)
        error = str(r.error).strip().splitlines()[-1][:500] if r.error is not None else None
        if trial is not None and (error is not None or trial.status == "ERROR"):
            error = trial_error_reason(trial)[:500] or error or "the trial failed"
        stopped = (cell in ledgers and tid in ledgers[cell]) or bool(m and not m.get(FINAL_KEY))
        status = trial_outcome(failed=error is not None, stopped_early=stopped)
        grouped.setdefault((cell, role), []).append(
            {
                "trial_id": tid,
                "status": status,
                "config": config,
                OBJECTIVE: m.get(OBJECTIVE),
                "eval_split": m.get("eval_split"),
                "eval_examples": m.get("eval_examples"),
                PARAMS_METRIC: m.get(PARAMS_METRIC),
                "trainable_params": m.get("trainable_params"),
                "train_loss": m.get("train_loss"),
                "pid": m.get("pid"),
                "error": error,
                "checkpoint": r.checkpoint.path if r.checkpoint is not None else None,
            }
        )
    for rows in grouped.values():
        rows.sort(key=lambda row: row["trial_id"])
    return grouped


def cell_summary(
    cell,
    rows: list[dict[str, Any]],
    *,
    multi_objective: bool,
    export=None,
    choice_split: str | None = None,
    pick: str | None = None,
) -> dict[str, Any]:
    """One cell's summary (the state file's ``cells.<name>``): counts, trials, best config and metric.

    Args:
        cell: the :class:`sweeps.plan.Cell`.
        rows: the cell's search trials (:func:`trial_rows`).
        multi_objective: add the cell's Pareto front.
        export: ``export(best_row) -> adapter folder`` (None: no export).
        choice_split: the split the best config may be chosen on (``holdout`` under ``--protocol heldout``).
        pick: the search trial the race picked (``--race-top``: best mean over seeds); it stands for the cell.
    """
    done = [r for r in rows if r["status"] == COMPLETED and r[OBJECTIVE] is not None]
    best = pick_best(
        rows,
        status=lambda r: r["status"],
        value=lambda r: r[OBJECTIVE],
        completed_only=True,
        split=lambda r: r.get("eval_split"),
        choice_split=choice_split,
    )
    if pick is not None:
        best = next((r for r in rows if r["trial_id"] == pick), best)
    summary: dict[str, Any] = {
        **dataclasses.asdict(cell),
        "cell": cell.name,
        "n_trials": len(rows),
        "n_completed": len(done),
        "n_asha_stopped": sum(r["status"] == ASHA_STOPPED for r in rows),
        "n_failed": sum(r["status"] == FAILED for r in rows),
        "trials": [{k: v for k, v in r.items() if k != "config"} for r in rows],
    }
    if best is None:
        errors = [r["error"] for r in rows if r["error"]]
        print(
            f"warning: {cell.name}: no trial completed ({summary['n_failed']} failed"
            + (f"; first error: {errors[0]})" if errors else ")"),
            file=sys.stderr,
            flush=True,
        )
    else:
        summary.update(
            best_trial_id=best["trial_id"],
            best_config=best["config"],
            best_metric=best[OBJECTIVE],
            params_pct=best[PARAMS_METRIC],
            trainable_params=best["trainable_params"],
            adapter_dir=export(best) if export is not None and best.get("checkpoint") else None,
        )
    if multi_objective:
        summary["pareto"] = [{k: r[k] for k in ("trial_id", OBJECTIVE, PARAMS_METRIC)} for r in pareto_rows(rows)]
    return summary


def seed_summary(cell_name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of a cell's ``--seeds`` re-runs of its best config."""
    values = [r[OBJECTIVE] for r in rows if r["status"] == COMPLETED and r[OBJECTIVE] is not None]
    return {
        "cell": cell_name,
        "values": values,
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
        "n": len(values),
    }


def export_best(cfg, assets, checkpoint: str, out: Path) -> str:
    """The best trial's checkpoint as a standard PEFT adapter folder ``out``."""
    from wlora.loop import export_from_checkpoint

    if out.exists():
        shutil.rmtree(out)
    export_from_checkpoint(cfg, assets, checkpoint, out)
    return str(out)


def slot_usage(intervals: Sequence[tuple[float, float]], slots: int) -> dict[str, float]:
    """How well a sweep filled its slots, from its trials' (start, end) times (e.g. MLflow child runs).

    Returns:
        ``max_concurrent`` (most trials running at one time), ``busy_fraction`` (trial time / (slots × span),
        span = first start to last end) and ``span_s``.
    """
    if not intervals:
        return {"max_concurrent": 0, "busy_fraction": 0.0, "span_s": 0.0}
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda ev: (ev[0], ev[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    busy = sum(e - s for s, e in intervals)
    return {"max_concurrent": peak, "busy_fraction": busy / (slots * span) if span > 0 else 0.0, "span_s": span}


def publish(state: dict[str, Any], run_dir: Path, client, parent_id: str, *, multi_objective: bool) -> str:
    """The sweep's results into the run folder and onto the MLflow parent: the best adapter per (task, method)
    over ranks (``best_adapter/<task>/<method>/``), ``results/table.{md,csv}`` + ``table_long.csv`` (from the
    MLflow children, :mod:`sweeps.table`) and, with ``--multi-objective``, ``results/pareto.json``. Returns
    the markdown table."""
    best_by_pair: dict[tuple[str, str], dict[str, Any]] = {}
    for s in state["cells"].values():
        if s.get("adapter_dir") and s.get("best_metric") is not None:
            key = (s["task"], s["method"])
            if key not in best_by_pair or s["best_metric"] > best_by_pair[key]["best_metric"]:
                best_by_pair[key] = s
    for (task, method), s in best_by_pair.items():
        client.log_artifacts(parent_id, s["adapter_dir"], f"best_adapter/{task}/{method}")
    results_dir = run_dir / "results"
    table_md = write_table_from_store(client, parent_id, results_dir)
    if multi_objective:
        fronts = {name: s.get("pareto", []) for name, s in state["cells"].items()}
        (results_dir / "pareto.json").write_text(json.dumps(fronts, indent=2))
    client.log_artifacts(parent_id, str(results_dir), "results")
    return table_md


def write_report(tracking_uri: str, parent_id: str, out: Path) -> None:
    """The sweep's report (plots, cost; ``sweeps.report``) — extra: a failure only warns, the results are saved."""
    from sweeps import report

    try:
        report.build_report(tracking_uri, parent_id, out)
    except Exception as e:
        print(f"warning: sweeps.report.build_report failed: {e}", file=sys.stderr)
