"""Short LoRA runs on the GLUE tasks vs the trivial baseline (majority class / constant prediction).

    python bench/glue_short_runs.py --model PATH_OR_HUB_ID --data-dir DATA [--tasks sst2,cola] \
        [--train-subset 512] [--epochs 2] [--lr 2e-3] [--json results.json]

Each task runs with its own budget from ``BUDGETS`` (the shortest measured to beat the baseline on
MiniLM-L6); ``--train-subset`` / ``--epochs`` / ``--lr`` override it for every task. Prints, per task,
the dev main metric after the run, the trivial baseline's, the difference, the optimizer steps and the
wall time. A measurement, not a pass/fail test: how short a run may be before it stops beating the
baseline depends on the model (tests/test_tasks_minilm.py asserts it for the budgets short enough for CI).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from wlora.data import read_glue_split
from wlora.data.metrics import MAIN_METRIC, trivial_baseline
from wlora.train import OBJECTIVE, TrainConfig, prepare_run, run_training

#: Per-task budget: training examples (None = the whole training set), epochs, max sequence length,
#: learning rate, adapter targets (None = the family default, q/k/v), batch size (default 32) and warm-up
#: steps (default 10).
BUDGETS: dict[str, dict] = {
    "sst2": dict(train_subset=512, epochs=2.0, max_length=128, lr=2e-3, targets=None),
    "stsb": dict(train_subset=512, epochs=4.0, max_length=128, lr=2e-3, targets=None),
    "mrpc": dict(train_subset=None, epochs=2.0, max_length=128, lr=2e-3, targets=None),
    "rte": dict(train_subset=None, epochs=3.0, max_length=128, lr=1e-3, targets="all-linear"),
    "cola": dict(
        train_subset=None, epochs=3.0, max_length=64, lr=1e-3, targets="all-linear", batch_size=16, warmup_steps=30
    ),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("WLORA_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
    p.add_argument("--data-dir", default=os.environ.get("WLORA_DATA_DIR"), help="folder holding glue/")
    p.add_argument("--tasks", default=",".join(BUDGETS))
    p.add_argument("--method", default="lora")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--train-subset", type=int, default=None, help="override every task's; 0 = whole training set")
    p.add_argument("--epochs", type=float, default=None, help="override every task's")
    p.add_argument("--lr", type=float, default=None, help="override every task's")
    p.add_argument("--targets", default=None, help="override every task's: 'all-linear' or comma-separated names")
    p.add_argument("--warmup-steps", type=int, default=None, help="override every task's (default 10)")
    p.add_argument("--batch-size", type=int, default=None, help="override every task's (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if not args.data_dir:
        raise SystemExit("--data-dir (or WLORA_DATA_DIR) is required: the baseline is computed from the TSV files")
    results = []
    print(f"{'task':6} {'run':>8} {'baseline':>9} {'diff':>8} {'steps':>6} {'time':>7}")
    for task in args.tasks.split(","):
        budget = dict(BUDGETS.get(task, dict(train_subset=512, epochs=2.0, max_length=128, lr=2e-3, targets=None)))
        if args.train_subset is not None:
            budget["train_subset"] = args.train_subset or None
        budget.setdefault("batch_size", 32)
        budget.setdefault("warmup_steps", 10)
        for key in ("epochs", "lr", "targets", "batch_size", "warmup_steps"):
            if getattr(args, key) is not None:
                budget[key] = getattr(args, key)
        targets = budget.pop("targets")
        if targets not in (None, "all-linear"):
            targets = targets.split(",")
        cfg = TrainConfig(
            method=args.method,
            task=task,
            model=args.model,
            data_dir=args.data_dir,
            method_config={"r": args.rank, "target_modules": targets},
            seed=args.seed,
            **budget,
        )
        t0 = time.perf_counter()
        result = run_training(cfg, assets=prepare_run(cfg))
        glue = os.path.join(args.data_dir, "glue")
        train = [e.label for e in read_glue_split(glue, task, "train")]
        dev = [e.label for e in read_glue_split(glue, task, "dev")]
        base = trivial_baseline(task, train, dev)[MAIN_METRIC]
        score = result.metrics[OBJECTIVE]
        wall = time.perf_counter() - t0
        steps = int(result.metrics["step"])
        print(f"{task:6} {score:8.4f} {base:9.4f} {score - base:+8.4f} {steps:6d} {wall:6.0f}s", flush=True)
        results.append(dict(task=task, score=score, baseline=base, steps=steps, wall_s=wall, status=result.status,
                            rank=args.rank, method=args.method, targets=targets, **budget))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
