"""Check ``--forecast`` against a sweep that ran: forecast the sweep's own plan with the trials it actually ran
per cell (search trials, seed re-runs) and compare the makespan with its measured wall time.

    python bench/forecast_check.py --run-dir runs/NAME [--profile PROFILE]

Speed: calibrated on this machine (as ``--forecast local``; run it on an idle machine) or a profile. ASHA's
stops are taken as modelled (``sweeps.forecast.asha_trials``), not as they happened.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from mlflow.tracking import MlflowClient

    from sweeps import forecast as fc
    from sweeps.glue_sweep import parser

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--profile", default="local")
    a = p.parse_args()
    state = json.loads((Path(a.run_dir) / "sweep_state.json").read_text())
    saved = state["args"]
    args = parser().parse_args(["--model", saved["model"]])
    for key, value in saved.items():
        setattr(args, key, value)
    speed = fc.calibrate(args) if a.profile == "local" else fc.profile_speed(args, fc.load_profile(a.profile))
    client = MlflowClient(state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    kids = client.search_runs(
        [state["experiment_id"]], f"tags.mlflow.parentRunId = '{state['parent_run_id']}'", max_results=5000
    )
    counts = Counter((r.data.tags["wlora.cell"], r.data.tags["wlora.role"]) for r in kids)
    use_asha = not args.no_asha and not args.multi_objective
    plan = []
    for cell in sorted({c for c, _ in counts}):
        task, method = cell.split("-")[0], cell.split("-")[1]
        w, ws = fc.cell_work(task, method, args), fc.cell_work(task, method, args, search=False)
        runs = fc.search_runs(counts[(cell, "trial")], w.evals, use_asha, args.grace_period, args.reduction_factor)
        plan.append(([[(q, fc.trial_seconds(w, speed, e)) for q, e in o] for o in runs],
                     [fc.trial_seconds(ws, speed)] * counts[(cell, "seed_run")]))  # fmt: skip
    predicted = fc.makespan(plan, speed.slots)
    start, end = parent.info.start_time, parent.info.end_time or max(r.info.end_time or 0 for r in kids)
    first = min(r.info.start_time for r in kids)
    last = max(r.info.end_time or 0 for r in kids)
    print(f"speed: {speed.name}: {speed.train_tok_s:,.0f} / {speed.eval_tok_s:,.0f} tokens/s, {speed.startup_s:.0f} s")
    print(f"trials: {sum(counts.values())} ({sum(v for (c, r), v in counts.items() if r == 'seed_run')} seed re-runs)")
    print(f"forecast makespan {predicted / 60:.1f} min; measured: trials {(last - first) / 60000:.1f} min, "
          f"whole sweep {(end - start) / 60000:.1f} min; forecast / measured (trials) = "
          f"{predicted / ((last - first) / 1000):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
