"""What a sweep cost: trial-epochs spent, ASHA-stopped and failed trials, wall time, and what running every trial
to its full budget would have cost."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)

from sweeps.schema import (
    ASHA_STOPPED,
    COMPLETED,
    FAILED,
    RACE,
    SEED_RUN,
    TRIAL,
    RunInfo,
)
from sweeps.table import (  # the one results table, shared with the report
    md_table,
)

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
    # race runs (--race-top) are search cost, counted apart; a race run reused as a seed re-run is still race cost
    race_runs = [c for c in children if c.role == RACE]
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
        "race_runs": len(race_runs),
        "race_run_epochs": round(sum(r.metrics.get("epoch", 0.0) for r in race_runs), 3),
        "race_run_seconds_sum": round(sum(r.seconds for r in race_runs), 1),
        "race_runs_reused_as_seed_runs": sum(r.seed_reuse for r in race_runs),
        "seed_runs": len(seed_runs),
        "seed_run_epochs": round(sum(s.metrics.get("epoch", 0.0) for s in seed_runs), 3),
        "seed_run_seconds_sum": round(sum(s.seconds for s in seed_runs), 1),
    }


def cost_md(c: dict[str, Any]) -> str:
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
    if c.get("race_runs"):
        reused = c.get("race_runs_reused_as_seed_runs") or 0
        rows.insert(
            -1,
            (
                "race runs (search cost: extra seeds of the top candidates)",
                f"{c['race_runs']} ({c['race_run_epochs']:g} epochs, {hms(c['race_run_seconds_sum'])})"
                + (f"; {reused} of them stand as seed re-runs" if reused else ""),
            ),
        )
    return md_table(["", "value"], rows)
