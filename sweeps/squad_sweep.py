"""SQuAD sweep (extractive QA, EM/F1; objective = F1) on the same machinery as the GLUE sweep.

python sweeps/squad_sweep.py --data-dir DATA            # DATA/squad/{train,dev}-v1.1.json
python sweeps/squad_sweep.py --set train_file=PATH --set eval_file=PATH --smoke-test
"""

from __future__ import annotations

if __name__ == "__main__":
    from _entry import fix_path  # type: ignore[import-not-found]  # the script's own folder

    fix_path(__file__)

from sweeps.entry import entry_points
from sweeps.flags import SweepDefaults

DEFAULTS = SweepDefaults(
    kind="squad",
    experiment="wlora-squad",
    tasks=("squad",),
    methods=("lora", "weightlora"),
    ranks=(8,),
    num_samples=8,
    train={"max_steps": 300, "eval_every": 100, "max_length": 256, "batch_size": 16, "eval_subset": 500},
    smoke={
        "num_samples": 4,
        "max_steps": 8,
        "eval_every": 2,
        "max_length": 128,
        "batch_size": 8,
        "train_subset": 64,
        "eval_subset": 32,
        "fixed": [("weightlora.t", "4"), ("weightlora_plus.t", "4")],
    },
)

parser, main = entry_points(DEFAULTS, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
