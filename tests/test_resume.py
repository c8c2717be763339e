"""Stop after any step, reload into fresh objects / a fresh process, continue ⇒ bit-identical run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import tiny_batches
from .resume_worker import build

TOTAL = 8
CASES = {
    "lora": ("lora", {}),
    "weightlora": ("weightlora", {"k": 2, "t": 4}),
    "weightlora_value": ("weightlora", {"k": 3, "t": 3, "topk_by": "value", "lr_w_scheduled": False}),
    "weightlora_plus_random": ("weightlora_plus", {"k": 2, "t": 4, "init": "random"}),
    "weightlora_plus_qr": ("weightlora_plus", {"k": 2, "t": 4, "init": "qr"}),
    "weightlora_plus_stages": ("weightlora_plus", {"k": 1, "t": 2, "init": "qr", "stages": 3}),
    "random_select": ("random_select", {"k": 3, "t": 4}),
}


def _spec(slug, cfg):
    return {
        "slug": slug,
        "config": {"r": 4, "dropout": 0.1, **cfg},
        "layers": 2,
        "model_seed": 3,
        "seed": 4,
        "lr": 5e-3,
        "total": TOTAL,
        "warmup": 2,
    }


def _run(spec, steps, start=None):
    _model, ctl, eng = build(spec)
    if start is not None:
        eng.load(start)
    batches = tiny_batches(TOTAL)
    losses = [eng.train_step(batches[eng.step]) for _ in range(steps)]
    return ctl, eng, losses


def _assert_same(state_a, state_b):
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("stop", [1, 2, 4, 5])
def test_resume_in_fresh_objects_is_bit_identical(case, stop, tmp_path):
    spec = _spec(*CASES[case])
    ctl_full, eng_full, losses_full = _run(spec, TOTAL)
    _, eng_a, losses_a = _run(spec, stop)
    ckpt = tmp_path / "ckpt.pt"
    eng_a.save(ckpt)
    ctl_b, eng_b, losses_b = _run(spec, TOTAL - stop, start=ckpt)
    assert losses_a + losses_b == losses_full
    _assert_same(eng_b.trainable_state(), eng_full.trainable_state())
    assert ctl_b.report() == ctl_full.report()
    assert ctl_b.structure_state() == ctl_full.structure_state()
    # the optimizer moments continue identically too
    sa, sb = eng_full.optimizer.state_dict()["state"], eng_b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][key], sb[i][key])


@pytest.mark.subprocess
@pytest.mark.parametrize("case", ["weightlora", "weightlora_plus_qr", "weightlora_plus_stages"])
def test_resume_in_a_fresh_process_across_selection_and_growth(case, tmp_path):
    spec = _spec(*CASES[case])
    stop = 3  # before T (=4) for weightlora(+); mid-stage for the 3-stage schedule
    _, eng_full, losses_full = _run(spec, TOTAL)
    _, eng_a, losses_a = _run(spec, stop)
    eng_a.save(tmp_path / "ckpt.pt")
    out = tmp_path / "out.pt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.resume_worker",
            json.dumps(spec),
            str(tmp_path / "ckpt.pt"),
            str(TOTAL - stop),
            str(out),
            str(torch.get_num_threads()),  # bit-identical at equal thread counts (see resume_worker)
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = torch.load(out, weights_only=False)
    assert result["report"]["selected"]
    assert losses_a + result["losses"] == losses_full
    _assert_same(result["state"], eng_full.trainable_state())


def test_checkpoint_of_another_method_is_refused(tmp_path):
    _, eng, _ = _run(_spec("lora", {}), 1)
    eng.save(tmp_path / "c.pt")
    _, _, other = build(_spec("weightlora", {"k": 2, "t": 4}))
    with pytest.raises(ValueError, match="checkpoint is for method 'lora', not 'weightlora'"):
        other.load(tmp_path / "c.pt")
