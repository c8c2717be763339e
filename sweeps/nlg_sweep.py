"""Summarisation sweep (XSum / CNN-DM, ROUGE-1/2/L; objective = the runner's main ROUGE score) on the
same machinery as the GLUE sweep. Encoder-only checkpoints are warm-started as encoder-decoders by
the runner; pass a seq2seq model (e.g. a T5) with ``--model`` for real runs.

    python sweeps/nlg_sweep.py --data-dir DATA              # DATA/xsum/{train,validation}.jsonl
    python sweeps/nlg_sweep.py --set train_file=PATH --set eval_file=PATH --set eval_split=test --smoke-test
"""

from __future__ import annotations

if __name__ == "__main__":
    from _entry import fix_path  # type: ignore[import-not-found]  # the script's own folder

    fix_path(__file__)

from sweeps.entry import entry_points
from sweeps.flags import SweepDefaults

DEFAULTS = SweepDefaults(
    kind="nlg",
    experiment="wlora-nlg",
    tasks=("xsum",),
    methods=("lora", "weightlora"),
    ranks=(8,),
    num_samples=8,
    train={"max_steps": 300, "eval_every": 100, "max_length": 256, "batch_size": 8, "eval_subset": 200},
    smoke={
        "num_samples": 4,
        "max_steps": 6,
        "eval_every": 3,
        "max_length": 64,
        "batch_size": 4,
        "train_subset": 32,
        "eval_subset": 8,
        "fixed": [("max_target_length", "16"), ("weightlora.t", "3"), ("weightlora_plus.t", "3")],
    },
)

parser, main = entry_points(DEFAULTS, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
