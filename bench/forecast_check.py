"""Check ``--forecast`` against a sweep that ran: forecast the sweep's own plan with the trials it actually ran
per cell (search trials, seed re-runs) and compare the makespan with its measured wall time.

    python bench/forecast_check.py --run-dir runs/NAME [--profile PROFILE]
    python bench/forecast_check.py --table docs/results/table_long.csv --preset paper-claims-heldout \
        --measured-min 64.6

The second form needs only the committed results: the per-cell trial and seed counts of a report's
``table_long.csv``, the preset the sweep ran with, and its measured wall time in minutes.

Speed: calibrated on this machine (as ``--forecast local``; run it on an idle machine) or a profile. ASHA's
stops are taken as modelled (``sweeps.forecast.asha_trials``), not as they happened.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def from_run_dir(run_dir: str) -> tuple[argparse.Namespace, Counter, float]:
    """The sweep's arguments, its trial counts per (cell, role) and its measured minutes, from MLflow."""
    from mlflow.tracking import MlflowClient

    from sweeps.glue_sweep import parser

    state = json.loads((Path(run_dir) / "sweep_state.json").read_text())
    saved = state["args"]
    args = parser().parse_args(["--model", saved["model"]])
    for key, value in saved.items():
        setattr(args, key, value)
    client = MlflowClient(state["tracking_uri"])
    kids = client.search_runs(
        [state["experiment_id"]], f"tags.mlflow.parentRunId = '{state['parent_run_id']}'", max_results=5000
    )
    counts = Counter((r.data.tags["wlora.cell"], r.data.tags["wlora.role"]) for r in kids)
    first = min(r.info.start_time for r in kids)
    last = max(r.info.end_time or 0 for r in kids)
    return args, counts, (last - first) / 60000


def from_table(table: str, preset: str) -> tuple[argparse.Namespace, Counter]:
    """The preset's arguments and the trial counts per cell of a report's ``table_long.csv``."""
    from sweeps.glue_sweep import parser

    args = parser().parse_args(["--preset", preset])
    counts: Counter = Counter()
    for r in csv.DictReader(Path(table).read_text().splitlines()):
        if r["source"] == "seed_runs":
            cell = f"{r['task']}-{r['method']}-r{r['rank']}"
            counts[(cell, "trial")] += int(r["n_trials"])
            counts[(cell, "seed_run")] += int(r["n"])
    return args, counts


def main() -> None:
    from sweeps import forecast as fc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir")
    p.add_argument("--table", help="a report's table_long.csv (with --preset and --measured-min)")
    p.add_argument("--preset")
    p.add_argument("--measured-min", type=float)
    p.add_argument("--profile", default="local")
    a = p.parse_args()
    if a.run_dir:
        args, counts, measured = from_run_dir(a.run_dir)
    elif a.table and a.preset and a.measured_min:
        (args, counts), measured = from_table(a.table, a.preset), a.measured_min
    else:
        p.error("give --run-dir, or --table with --preset and --measured-min")
    speed = fc.calibrate(args) if a.profile == "local" else fc.profile_speed(args, fc.load_profile(a.profile))
    use_asha = not args.no_asha and not args.multi_objective
    plan = []
    for cell in sorted({c for c, _ in counts}):
        task, method = cell.split("-")[0], cell.split("-")[1]
        w, ws = fc.cell_work(task, method, args), fc.cell_work(task, method, args, search=False)
        runs = fc.search_runs(counts[(cell, "trial")], w.evals, use_asha, args.grace_period, args.reduction_factor)
        plan.append(([[(q, fc.trial_seconds(w, speed, e)) for q, e in o] for o in runs],
                     [fc.trial_seconds(ws, speed)] * counts[(cell, "seed_run")]))  # fmt: skip
    predicted = (speed.sweep_overhead_s + fc.makespan(plan, speed.slots)) / 60
    print(f"speed: {speed.name}: {speed.train_tok_s:,.0f} / {speed.eval_tok_s:,.0f} tokens/s, {speed.startup_s:.0f} s")
    print(f"trials: {sum(counts.values())} ({sum(v for (c, r), v in counts.items() if r == 'seed_run')} seed re-runs)")
    print(f"forecast makespan {predicted:.1f} min; measured {measured:.1f} min; forecast / measured = "
          f"{predicted / measured:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
