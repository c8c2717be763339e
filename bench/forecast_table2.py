"""Forecast of the WeightLoRA paper's Table 2 sweep on cluster.yaml's 32 A100 (sweeps/profiles/a100-cluster.yaml):
8 GLUE tasks × ranks {1, 2, 4, 8} × LoRA / WeightLoRA / WeightLoRA+, DeBERTaV3-base, each task at its Table 7
budget (epochs, batch; STS-B, absent from Table 7, at MRPC's 30 epochs / batch 64), max length 128, evaluation
every epoch, 5 seed re-runs of each cell's best config (the paper averages 5 seeds).

    python bench/forecast_table2.py [--profile a100-cluster] [--num-samples 16]

Prints, per task and in all, the papers' grid (10 lr × 6 warm-up, full budget) and this project's default
search (TPE, ``--num-samples`` trials per cell, ASHA grace 1 / η 2): trials, GPU-hours and the makespan of all
of it in one pool of 32 slots. The numbers rest on the profile's assumed A100 speed: see that file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: WeightLoRA paper, Table 7: task → (epochs, batch size).
TABLE7 = {"mnli": (7, 32), "sst2": (10, 32), "cola": (15, 64), "qqp": (5, 32), "qnli": (5, 32), "rte": (50, 64),
          "mrpc": (30, 64), "stsb": (30, 64)}  # fmt: skip


def main() -> None:
    from sweeps import forecast as fc
    from sweeps.glue_sweep import parser

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="a100-cluster")
    p.add_argument("--num-samples", type=int, default=16)
    a = p.parse_args()
    profile = fc.load_profile(a.profile)
    totals = {"papers_grid": [0, 0.0, []], "sweep": [0, 0.0, []]}
    speed = None
    print(f"{'task':6} {'papers grid: trials':>20} {'GPU-h':>8} {'TPE+ASHA: trials':>17} {'GPU-h':>8}")
    for task, (epochs, batch) in TABLE7.items():
        argv = ["--tasks", task, "--methods", "lora,weightlora,weightlora_plus", "--ranks", "1,2,4,8", "--model",
                "microsoft/deberta-v3-base", "--max-epochs", str(epochs), "--max-steps", "none", "--batch-size",
                str(batch), "--max-length", "128", "--eval-every", "none", "--gpus-per-trial", "1", "--seeds", "5",
                "--num-samples", str(a.num_samples), "--search", "optuna"]  # fmt: skip
        args = parser().parse_args(argv)
        speed = speed or fc.profile_speed(args, profile)
        out = fc.forecast(args, speed, {})
        g, s = out["papers_grid_high"], out["sweep_high"]
        for key, rec in (("papers_grid", g), ("sweep", s)):
            totals[key][0] += rec["trials"]
            totals[key][1] += rec["device_hours"]
            totals[key][2] += rec["plan"]
        print(f"{task:6} {g['trials']:>20} {g['device_hours']:8.0f} {s['trials']:>17} {s['device_hours']:8.0f}")
    for key, label in (("papers_grid", "papers' grid"), ("sweep", f"TPE+ASHA ({a.num_samples}/cell)")):
        n, hours, plan = totals[key]
        span = fc.makespan(plan, speed.slots) / 3600
        print(f"{label}: {n} trials, {hours:,.0f} GPU-hours, makespan {span:,.1f} h on {speed.slots} GPUs")


if __name__ == "__main__":
    main()
