"""Integration on the real all-MiniLM-L6-v2 (n = 18 q/k/v adapters) and a real SST-2 batch."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

import wlora
from wlora.core import count_parameters
from wlora.export import export_peft_adapter
from wlora.train import Engine, seed_everything

from .conftest import load_minilm

pytestmark = pytest.mark.slow

STEPS = 12
METHODS = {
    "lora": {},
    "weightlora": {"k_fraction": 0.25, "t": 4},
    "weightlora_plus": {"k_fraction": 0.25, "t": 4, "init": "qr"},
    "random_select": {"k_fraction": 0.25, "t": 4, "selection_seed": 0},
}


def _train(path, batch, slug, cfg, steps=STEPS):
    model = load_minilm(path)
    seed_everything(0)
    ctl = wlora.build_method(slug, model, {"r": 8, **cfg})
    eng = Engine(model, ctl, lr=3e-3, total_steps=steps, warmup_steps=1)
    losses = [eng.train_step(batch) for _ in range(steps)]
    return model, ctl, eng, losses


@pytest.mark.parametrize("slug", list(METHODS))
def test_each_method_trains_on_real_sst2_with_decreasing_loss(slug, minilm_path, sst2_batch):
    model, ctl, _, losses = _train(minilm_path, sst2_batch, slug, METHODS[slug])
    assert ctl.n_adapters == 18
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    counts = count_parameters(model, ctl.head_names)
    per_module = 8 * (384 + 384)
    expected_active = 18 if slug == "lora" else 4  # round(0.25 · 18) = 4
    assert len(ctl.layers) == expected_active
    expected_budget = 18 * per_module if slug in ("lora", "weightlora_plus") else 4 * per_module
    assert counts["adapter"] == expected_budget


def test_minilm_resume_across_growth(minilm_path, sst2_batch, tmp_path):
    cfg = {"r": 4, "k": 4, "t": 3, "init": "random"}
    _, _, full, losses_full = _train(minilm_path, sst2_batch, "weightlora_plus", cfg, steps=6)

    model = load_minilm(minilm_path)
    seed_everything(0)
    ctl = wlora.build_method("weightlora_plus", model, cfg)
    eng = Engine(model, ctl, lr=3e-3, total_steps=6, warmup_steps=1)
    losses_a = [eng.train_step(sst2_batch) for _ in range(2)]
    eng.save(tmp_path / "ckpt.pt")

    model_b = load_minilm(minilm_path, seed=123)  # a different head init: the checkpoint must win
    seed_everything(99)
    ctl_b = wlora.build_method("weightlora_plus", model_b, cfg)
    eng_b = Engine(model_b, ctl_b, lr=3e-3, total_steps=6, warmup_steps=1)
    eng_b.load(tmp_path / "ckpt.pt")
    losses_b = [eng_b.train_step(sst2_batch) for _ in range(4)]
    assert losses_a + losses_b == losses_full
    sa, sb = full.trainable_state(), eng_b.trainable_state()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert {n: layer.r for n, layer in ctl_b.layers.items()} == {n: 18 for n in ctl_b.layers}


def test_minilm_export_roundtrip(minilm_path, sst2_batch, tmp_path):
    model, ctl, _, _ = _train(minilm_path, sst2_batch, "weightlora_plus", METHODS["weightlora_plus"], steps=6)
    out = export_peft_adapter(model, ctl, tmp_path / "adapter", base_model_name_or_path=str(minilm_path))
    inputs = {k: v for k, v in sst2_batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        ours = model(**inputs).logits
        theirs = PeftModel.from_pretrained(load_minilm(minilm_path, seed=5), out).eval()(**inputs).logits
    assert float((ours - theirs).abs().max()) <= 1e-5
