"""Continue a checkpointed tiny-model run in a fresh Python process (used by test_resume.py).

Usage: python -m tests.resume_worker CONFIG_JSON CHECKPOINT STEPS OUT [THREADS]

THREADS: torch's intra-op thread count, the parent's: float32 reductions follow the thread count, so a run is
bit-identical across processes at equal thread counts only.
"""

from __future__ import annotations

import json
import sys

import torch

import wlora
from wlora.train import Engine

from .conftest import tiny_batches, tiny_bert


def build(spec: dict):
    model = tiny_bert(layers=spec["layers"], seed=spec["model_seed"])
    torch.manual_seed(spec["seed"])
    ctl = wlora.build_method(spec["slug"], model, spec["config"])
    eng = Engine(model, ctl, lr=spec["lr"], total_steps=spec["total"], warmup_steps=spec["warmup"])
    return model, ctl, eng


def main() -> None:
    spec_json, ckpt, steps, out = sys.argv[1:5]
    if len(sys.argv) > 5:
        torch.set_num_threads(int(sys.argv[5]))
    spec = json.loads(spec_json)
    _, ctl, eng = build(spec)
    eng.load(ckpt)
    batches = tiny_batches(spec["total"])
    losses = [eng.train_step(batches[eng.step]) for _ in range(int(steps))]
    torch.save({"losses": losses, "state": eng.trainable_state(), "report": ctl.report()}, out)


if __name__ == "__main__":
    main()
