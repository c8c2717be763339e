"""Check ``--forecast`` against a sweep that ran: forecast the sweep's own plan with the trials it actually ran
per cell (search trials, seed re-runs) and compare the makespan with its measured wall time.

    python bench/forecast_check.py --run-dir runs/NAME [--profile PROFILE] [--calibrations 3]
    python bench/forecast_check.py --table docs/results/table_long.csv --preset paper-claims-heldout \
        --measured-min 64.6 [--seed-runs-as-search]

The second form needs only the committed results: the per-cell trial and seed counts of a report's
``table_long.csv``, the preset the sweep ran with, and its measured wall time in minutes.

``--seed-runs-as-search``: price the seed re-runs as the sweep's search trials (same evaluation split and
cadence), for a sweep recorded before commit e5bc996, whose seed re-runs scored the held-out split at every
``--eval-every`` (the 64.6-min run at commit 7fabb93); today's seed re-runs score dev once, at their end.

Speed: calibrated on this machine as ``--forecast local`` calibrates, ``--calibrations`` times (3), each in a
fresh Python process (imports and model loading included, as a user's ``--forecast`` pays them), or a profile.
The output states its conditions first (commit, date, cores, the machine's load before and after), then each
calibration and the spread over them: min / median / max of the forecast makespan and of forecast ÷ measured.
A load beyond half the cores means another job held them: the numbers are then those of a busy machine. ASHA's
stops are taken as modelled (``sweeps.forecast.asha_trials``), not as they happened.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
    from sweeps.flags import apply_preset_cli
    from sweeps.glue_sweep import parser

    p = parser()
    args = p.parse_args(["--preset", preset])
    apply_preset_cli(args, p)  # the preset's cli: section, as the sweep applied it
    counts: Counter = Counter()
    for r in csv.DictReader(Path(table).read_text().splitlines()):
        if r["source"] == "seed_runs":
            cell = f"{r['task']}-{r['method']}-r{r['rank']}"
            counts[(cell, "trial")] += int(r["n_trials"])
            counts[(cell, "seed_run")] += int(r["n"])
    # the table's tasks, not the preset's cli: ones (paper-claims-heldout ran SST-2 + STS-B at 7fabb93, now QNLI):
    # the calibration's batch length is the mean over them
    args.tasks = list(dict.fromkeys(c.split("-")[0] for c, _ in counts))
    return args, counts


def predicted_minutes(args: argparse.Namespace, counts: Counter, speed, seed_runs_as_search: bool = False) -> float:
    """The forecast makespan (minutes) of the sweep's own plan: the trials it ran per cell, at ``speed``."""
    from sweeps import forecast as fc

    use_asha = not args.no_asha and not args.multi_objective
    plan = []
    for cell in sorted({c for c, _ in counts}):
        task, method = cell.split("-")[0], cell.split("-")[1]
        w = fc.cell_work(task, method, args)
        ws = w if seed_runs_as_search else fc.cell_work(task, method, args, search=False)
        runs = fc.search_runs(counts[(cell, "trial")], w.evals, use_asha, args.grace_period, args.reduction_factor)
        plan.append(([[(q, fc.trial_seconds(w, speed, e)) for q, e in o] for o in runs],
                     [fc.trial_seconds(ws, speed)] * counts[(cell, "seed_run")]))  # fmt: skip
    return (speed.sweep_overhead_s + fc.makespan(plan, speed.slots)) / 60


def conditions(load: tuple[float, float, float] | None = None) -> str:
    """Where and when the check ran: commit, date, cores, the machine's load (``load``: else read now)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()  # fmt: skip
        rev = (commit.stdout.strip() or "unknown") + (" (uncommitted changes)" if dirty else "")
    except OSError:
        rev = "unknown (no git)"
    load = load if load is not None else os.getloadavg()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"conditions: commit {rev}; {now}; {os.cpu_count()} cores; load average {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f} (1 / 5 / 15 min); Python {platform.python_version()}"
    )


def spread_lines(predicted: list[float], measured: float) -> list[str]:
    """Min / median / max of the forecast minutes and of forecast ÷ measured over the calibrations."""
    mmm = lambda v, f: " / ".join(f(x) for x in (min(v), statistics.median(v), max(v)))  # noqa: E731
    ratios = [p / measured for p in predicted]
    return [
        f"spread over {len(predicted)} calibration(s), min / median / max: forecast {mmm(predicted, '{:.1f}'.format)}"
        f" min; forecast / measured {mmm(ratios, '{:.2f}'.format)} (measured {measured:.1f} min)"
    ]


def _speed_json(speed) -> str:
    return json.dumps(dataclasses.asdict(speed))


def calibrate_fresh(a: argparse.Namespace) -> dict:
    """One calibration as ``--forecast local`` makes it: a fresh Python process (this script, ``--speed-only``)."""
    cmd = [sys.executable, __file__, "--speed-only"]
    for flag in ("run_dir", "table", "preset", "measured_min"):
        if getattr(a, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(a, flag))]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"calibration failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir")
    p.add_argument("--table", help="a report's table_long.csv (with --preset and --measured-min)")
    p.add_argument("--preset")
    p.add_argument("--measured-min", type=float)
    p.add_argument("--profile", default="local")
    p.add_argument(
        "--seed-runs-as-search",
        action="store_true",
        help="seed re-runs evaluate as the search trials do (a sweep recorded before commit e5bc996)",
    )
    p.add_argument("--calibrations", type=int, default=3, help="independent calibrations (fresh processes)")
    p.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)  # one calibration → JSON
    a = p.parse_args(argv)
    if a.run_dir:
        args, counts, measured = from_run_dir(a.run_dir)
    elif a.table and a.preset and a.measured_min:
        (args, counts), measured = from_table(a.table, a.preset), a.measured_min
    else:
        p.error("give --run-dir, or --table with --preset and --measured-min")
    if a.calibrations < 1:
        p.error("--calibrations must be >= 1")
    from sweeps import forecast as fc

    if a.speed_only:
        print(_speed_json(fc.local_speed(args)))
        return
    before = os.getloadavg()
    if a.profile == "local":
        speeds = []
        for _ in range(a.calibrations):
            raw = calibrate_fresh(a)
            speeds.append(fc.Speed(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}))
    else:
        speeds = [fc.profile_speed(args, fc.load_profile(a.profile))]
    print(conditions(before))
    trials = sum(counts.values())
    print(f"trials: {trials} ({sum(v for (c, r), v in counts.items() if r == 'seed_run')} seed re-runs)")
    predicted = []
    for i, speed in enumerate(speeds, 1):
        predicted.append(predicted_minutes(args, counts, speed, a.seed_runs_as_search))
        load = "" if speed.load_1min is None else f", 1-min load {speed.load_1min:.2f} while calibrating"
        print(f"speed {i}: {speed.name}: {speed.train_tok_s:,.0f} / {speed.eval_tok_s:,.0f} tokens/s, "
              f"{speed.startup_s:.1f} s start-up{load} → forecast {predicted[-1]:.1f} min, "
              f"{predicted[-1] / measured:.2f}× measured")  # fmt: skip
        warning = fc.busy_warning(speed)
        if warning:
            print(warning)
    print(*spread_lines(predicted, measured), sep="\n")
    after = os.getloadavg()
    print(f"load average after: {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} (1 / 5 / 15 min)")


if __name__ == "__main__":
    main()
