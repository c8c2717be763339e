"""Short LoRA runs on the GLUE tasks vs the trivial baseline (majority class / constant prediction).

    python bench/glue_short_runs.py --model PATH_OR_HUB_ID --data-dir DATA [--tasks sst2,cola] \
        [--train-subset 512] [--epochs 2] [--lr 2e-3]

Prints, per task, the dev main metric after the run, the trivial baseline's and the difference. A
measurement, not a pass/fail test: how short a run may be before it stops beating the baseline depends
on the model (tests/test_tasks_minilm.py asserts it for the budgets known to suffice).
"""

from __future__ import annotations

import argparse
import os
import time

from wlora.data import read_glue_split
from wlora.data.metrics import MAIN_METRIC, trivial_baseline
from wlora.train import OBJECTIVE, TrainConfig, prepare_run, run_training


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("WLORA_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
    p.add_argument("--data-dir", default=os.environ.get("WLORA_DATA_DIR"), help="folder holding glue/")
    p.add_argument("--tasks", default="sst2,cola,mrpc,rte,stsb")
    p.add_argument("--method", default="lora")
    p.add_argument("--train-subset", type=int, default=512, help="0 = the whole training set")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    args = p.parse_args()
    if not args.data_dir:
        raise SystemExit("--data-dir (or WLORA_DATA_DIR) is required: the baseline is computed from the TSV files")
    print(f"{'task':6} {'run':>8} {'baseline':>9} {'diff':>8} {'time':>7}")
    for task in args.tasks.split(","):
        cfg = TrainConfig(
            method=args.method,
            task=task,
            model=args.model,
            data_dir=args.data_dir,
            lr=args.lr,
            warmup_steps=10,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_length=args.max_length,
            train_subset=args.train_subset or None,
        )
        t0 = time.perf_counter()
        result = run_training(cfg, assets=prepare_run(cfg))
        glue = os.path.join(args.data_dir, "glue")
        train = [e.label for e in read_glue_split(glue, task, "train")]
        dev = [e.label for e in read_glue_split(glue, task, "dev")]
        base = trivial_baseline(task, train, dev)[MAIN_METRIC]
        score = result.metrics[OBJECTIVE]
        print(f"{task:6} {score:8.4f} {base:9.4f} {score - base:+8.4f} {time.perf_counter() - t0:6.0f}s", flush=True)


if __name__ == "__main__":
    main()
