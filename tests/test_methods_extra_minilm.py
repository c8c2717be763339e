"""LoRA-drop, ROLoRA, AdaLoRA and full fine-tuning on the real all-MiniLM-L6-v2 and a real SST-2 slice.

Each method trains for six passes over 16 real SST-2 training sentences (2 batches of 8) and its
mean loss over the last pass must be clearly below the first pass's. LoRA-drop's importance phase
runs on a stratified half of the slice (:func:`wlora.core.sampling.stratified_sample`), as a runner
would feed it; its loss is compared within the task-adaptation phase (the restart resets the head).
"""

from __future__ import annotations

import pytest
import torch

import wlora
from wlora.core.sampling import stratified_sample
from wlora.engine import Engine, seed_everything

from .conftest import load_minilm

pytestmark = pytest.mark.slow

N_EXAMPLES, BATCH = 16, 8
PER_EPOCH = N_EXAMPLES // BATCH


@pytest.fixture(scope="module")
def sst2_slice(minilm_path, glue_dir):
    from transformers import AutoTokenizer

    from wlora.data import read_glue_split

    examples = read_glue_split(glue_dir, "sst2", "train")[:N_EXAMPLES]
    tok = AutoTokenizer.from_pretrained(str(minilm_path))

    def batches(idx, size=BATCH):
        out = []
        for i in range(0, len(idx), size):
            chunk = [examples[j] for j in idx[i : i + size]]
            enc = tok([e.text_a for e in chunk], padding=True, truncation=True, max_length=32, return_tensors="pt")
            enc["labels"] = torch.tensor([e.label for e in chunk])
            out.append(dict(enc))
        return out

    labels = [e.label for e in examples]
    return {"all": batches(list(range(N_EXAMPLES))), "labels": labels, "make": batches}


def _train(path, slug, cfg, stream, lr):
    model = load_minilm(path)
    seed_everything(0)
    ctl = wlora.build_method(slug, model, cfg)
    eng = Engine(model, ctl, lr=lr, total_steps=len(stream), warmup_steps=1)
    losses = [eng.train_step(b) for b in stream]
    return model, ctl, losses


def _mean(xs):
    return sum(xs) / len(xs)


def _assert_decreasing(losses):
    first, last = _mean(losses[:PER_EPOCH]), _mean(losses[-PER_EPOCH:])
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert last < first - 0.05, (first, last, losses)


def test_lora_drop_on_minilm_sst2(minilm_path, sst2_slice):
    cfg = {"r": 8, "steps_per_epoch": PER_EPOCH, "sample_ratio": 0.5, "importance_epochs": 3, "threshold": 0.9}
    idx = stratified_sample(sst2_slice["labels"], 0.5, seed=0)
    sample = sst2_slice["make"](idx, size=len(idx))  # ⌈0.5 · 2⌉ = 1 step per pass over the sample
    # 3 passes over the sample (the first step has learning rate 0 under warm-up, so B is still 0
    # after it), then 4 passes over the slice
    stream = sample * 3 + sst2_slice["all"] * 4
    _, ctl, losses = _train(minilm_path, "lora_drop", cfg, stream, lr=3e-3)
    rep = ctl.report()
    assert ctl.importance_steps == 3 and rep["selected"] and not rep["importance_uniform"]
    assert max(rep["importance"].values()) > 2 * min(rep["importance"].values())
    assert ctl.n_adapters == 18 and 1 <= len(rep["kept"]) < 18
    assert abs(sum(rep["importance"].values()) - 1) < 1e-9
    groups = rep["shared_groups"]
    assert len(rep["kept"]) + sum(len(v) for v in groups.values()) == 18
    assert rep["adapter_params"] == (len(rep["kept"]) + len(groups)) * 8 * (384 + 384)
    _assert_decreasing(losses[ctl.importance_steps :])
    print(f"\nlora_drop kept {len(rep['kept'])}/18: {rep['kept']}\n  shared groups: {sorted(groups)}")
    print("  importance:", {k.split("layer.")[1]: round(v, 3) for k, v in rep["importance"].items()})


def test_rolora_on_minilm_sst2(minilm_path, sst2_slice):
    stream = sst2_slice["all"] * 6
    cfg = {"r": 8, "total_steps": len(stream), "iterations": 2, "tinit_frac": 0.125, "tfinal_frac": 0.25}
    _, ctl, losses = _train(minilm_path, "rolora", cfg, stream, lr=3e-3)
    rep = ctl.report()
    assert rep["iterations_done"] == 2 and rep["rank_sum"] <= 18 * 8
    assert rep["ranks"] != {n: 8 for n in ctl.target_names}
    _assert_decreasing(losses)
    print(f"\nrolora final ranks (mean {rep['mean_rank']:.2f}, sum {rep['rank_sum']} ≤ {rep['budget']}):")
    print("  ", {k.split("layer.")[1]: v for k, v in rep["ranks"].items()})
    print("   output ranks s^(T):", {k.split("layer.")[1]: v for k, v in rep["output_ranks"].items()})


def test_adalora_on_minilm_sst2(minilm_path, sst2_slice):
    stream = sst2_slice["all"] * 6
    cfg = {"r": 8, "total_steps": len(stream), "tinit": 2, "tfinal": 3}
    _, ctl, losses = _train(minilm_path, "adalora", cfg, stream, lr=3e-3)
    ranks = ctl.ranks()
    assert ctl.rank_changes >= 2 and sum(ranks.values()) == 18 * 8
    assert len(set(ranks.values())) > 1  # the pattern moved away from init_r = 12 everywhere
    _assert_decreasing(losses)
    print(f"\nadalora ranks (init_r 12 → target 8, {ctl.rank_changes} changes):")
    print("  ", {k.split("layer.")[1]: v for k, v in ranks.items()})


def test_full_on_minilm_sst2(minilm_path, sst2_slice):
    stream = sst2_slice["all"] * 6
    model, ctl, losses = _train(minilm_path, "full", {}, stream, lr=1e-4)
    assert all(p.requires_grad for p in model.parameters())
    assert ctl.report()["trainable_params"] == sum(p.numel() for p in model.parameters())
    _assert_decreasing(losses)
