"""LoRA-drop, ROLoRA and AdaLoRA across a resume (bit-identical through the phase switch and iteration
boundaries) and exported to plain peft."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import BertForSequenceClassification

import wlora
from wlora.engine import Engine, seed_everything
from wlora.export import export_method

from .conftest import padded_batches, tiny_batches, tiny_bert
from .resume_worker import build

# ----- resume: bit-identical across the phase switch / iteration boundaries -----

TOTAL = 8
RESUME = {
    # importance phase = steps 1–4 (2 passes × ⌈0.2·10⌉ steps), the switch happens at step 4
    "lora_drop": (
        "lora_drop",
        {"r": 4, "dropout": 0.1, "steps_per_epoch": 10, "sample_ratio": 0.2, "importance_epochs": 2},
    ),
    # two outer iterations of 4 steps: t_init = t_final = 1 step, extend at steps 4 and 8
    "rolora": (
        "rolora",
        {"r": 4, "dropout": 0.1, "total_steps": TOTAL, "iterations": 2, "tinit_frac": 0.25, "tfinal_frac": 0.25},
    ),
    "adalora": ("adalora", {"r": 2, "dropout": 0.1, "total_steps": TOTAL, "tinit": 2, "tfinal": 2}),
    "full": ("full", {}),
}


def _spec(slug, cfg):
    return {
        "slug": slug,
        "config": cfg,
        "layers": 2,
        "model_seed": 3,
        "seed": 4,
        "lr": 5e-3,
        "total": TOTAL,
        "warmup": 2,
    }


def _run(spec, steps, start=None, padded=True):
    _model, ctl, eng = build(spec)
    if start is not None:
        eng.load(start)
    batches = padded_batches(tiny_batches(TOTAL)) if padded else tiny_batches(TOTAL)  # the worker's are unpadded
    losses = [eng.train_step(batches[eng.step]) for _ in range(steps)]
    return ctl, eng, losses


def _same_state(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", list(RESUME))
@pytest.mark.parametrize("stop", [3, 4, 5])
def test_resume_in_fresh_objects_is_bit_identical(case, stop, tmp_path):
    spec = _spec(*RESUME[case])
    ctl_full, eng_full, losses_full = _run(spec, TOTAL)
    _, eng_a, losses_a = _run(spec, stop)
    eng_a.save(tmp_path / "ckpt.pt")
    ctl_b, eng_b, losses_b = _run(spec, TOTAL - stop, start=tmp_path / "ckpt.pt")
    assert losses_a + losses_b == losses_full
    _same_state(eng_b.trainable_state(), eng_full.trainable_state())
    assert ctl_b.report() == ctl_full.report()
    sa, sb = eng_full.optimizer.state_dict()["state"], eng_b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][key], sb[i][key])


@pytest.mark.subprocess
def test_resume_in_a_fresh_process_across_the_lora_drop_switch(tmp_path):
    spec = _spec(*RESUME["lora_drop"])
    _, eng_full, losses_full = _run(spec, TOTAL, padded=False)
    _, eng_a, losses_a = _run(spec, 3, padded=False)  # the switch (step 4) happens in the fresh process
    eng_a.save(tmp_path / "ckpt.pt")
    out = tmp_path / "out.pt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.resume_worker",
            json.dumps(spec),
            str(tmp_path / "ckpt.pt"),
            str(TOTAL - 3),
            str(out),
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = torch.load(out, weights_only=False)
    assert losses_a + result["losses"] == losses_full
    _same_state(result["state"], eng_full.trainable_state())


# ----- export to plain peft -----

EXPORTS = [
    ("lora_drop", {"steps_per_epoch": 10, "sample_ratio": 0.2, "importance_epochs": 2, "threshold": 0.6}),
    ("rolora", {"total_steps": 6, "iterations": 2, "tinit_frac": 0.2, "tfinal_frac": 0.2}),
    ("rolora", {"total_steps": 10, "iterations": 2, "tinit_frac": 0.2, "tfinal_frac": 0.2}),  # mid-iteration
    ("adalora", {"total_steps": 6, "tinit": 1, "tfinal": 2}),
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    tiny_bert(layers=2, seed=1).save_pretrained(path)
    return path


@pytest.mark.parametrize(("slug", "cfg"), EXPORTS)
def test_export_roundtrip_through_plain_peft(slug, cfg, base_dir, tmp_path):
    seed_everything(0)
    model = BertForSequenceClassification.from_pretrained(base_dir)
    ctl = wlora.build_method(slug, model, {"r": 4, **cfg})
    eng = Engine(model, ctl, lr=1e-2, total_steps=10)
    for b in tiny_batches(6):
        eng.train_step(b)
    out = export_method(model, ctl, tmp_path / "adapter")
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA"
    ranks = {re.sub(r"\\", "", k): v for k, v in adapter_cfg["rank_pattern"].items()}
    expected = {n: int(f[0].shape[0]) for n, f in ctl.export_factors().items() if f[0].shape[0] > 0}
    assert ranks == expected and sorted(adapter_cfg["target_modules"]) == sorted(expected)
    if slug == "lora_drop":  # the shared adapter is written out once per module that uses it
        assert sorted(expected) == sorted(ctl.layers) and len(expected) > len(ctl.kept)
    if slug == "adalora":
        assert ranks == {n: r for n, r in ctl.ranks().items() if r > 0}
    probe = tiny_batches(1, seed=7)[0]["input_ids"]
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=probe).logits
        fresh = BertForSequenceClassification.from_pretrained(base_dir)
        theirs = PeftModel.from_pretrained(fresh, out).eval()(input_ids=probe).logits
    assert float((ours - theirs).abs().max()) <= 1e-5
