"""GLUE sweep: tasks × methods × ranks, Optuna TPE + ASHA on Ray Tune, every trial in MLflow.

python sweeps/glue_sweep.py                      # default sweep, embedded local Ray + MLflow
python sweeps/glue_sweep.py --smoke-test         # minutes
python sweeps/glue_sweep.py --address auto --tracking-uri http://mlflow:5000 --storage-path /shared/runs
"""

from __future__ import annotations

if __name__ == "__main__":
    from _entry import fix_path  # type: ignore[import-not-found]  # the script's own folder

    fix_path(__file__)

from sweeps.entry import entry_points
from sweeps.flags import SweepDefaults

DEFAULTS = SweepDefaults(
    kind="glue",
    experiment="wlora-glue",
    # Sized to finish on a 2-core CPU machine in about a quarter of an hour (README); pass the
    # paper's settings explicitly on real hardware (e.g. --max-epochs 3 --max-length 128 --batch-size 32).
    tasks=("sst2",),
    methods=("lora", "weightlora"),
    ranks=(8,),
    num_samples=8,
    train={"max_steps": 150, "eval_every": 30, "max_length": 64, "batch_size": 16, "eval_subset": 500},
    # About 1.5 s per step of 16 × 64 tokens per CPU core on MiniLM-L6: the smoke test keeps steps tiny.
    smoke={
        "tasks": ["rte"],
        "methods": ["lora", "weightlora"],
        "num_samples": 4,
        "max_steps": 8,
        "eval_every": 2,
        "max_length": 48,
        "batch_size": 8,
        "train_subset": 128,
        "eval_subset": 64,
        "fixed": [("weightlora.t", "4"), ("weightlora_plus.t", "4")],
    },
)

parser, main = entry_points(DEFAULTS, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
