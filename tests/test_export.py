"""PEFT export: the saved directory loads in plain peft and reproduces our logits (≤ 1e-5)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft import PeftModel
from transformers import BertForSequenceClassification

import wlora
from wlora.export import export_peft_adapter
from wlora.train import Engine, seed_everything

from .conftest import tiny_batches, tiny_bert

CASES = [
    ("lora", {}, 6),
    ("weightlora", {"k": 2, "t": 3}, 2),
    ("weightlora", {"k": 2, "t": 50}, 6),  # exported mid-selection: live gates are folded too
    ("weightlora_plus", {"k": 2, "t": 3, "init": "random"}, 2),
    ("weightlora_plus", {"k": 2, "t": 3, "init": "qr"}, 2),
    ("weightlora_plus", {"k": 1, "t": 2, "stages": 2}, 1),
    ("random_select", {"k": 3, "t": 3}, 3),
    ("random_select", {"k": 3, "t": 50}, 6),  # exported before the draw takes effect
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    tiny_bert(layers=2, seed=1).save_pretrained(path)
    return path


@pytest.mark.parametrize(("slug", "cfg", "n_active"), CASES)
def test_export_roundtrip_through_peft(slug, cfg, n_active, base_dir, tmp_path):
    seed_everything(0)
    model = BertForSequenceClassification.from_pretrained(base_dir)
    ctl = wlora.build_method(slug, model, {"r": 4, **cfg})
    eng = Engine(model, ctl, lr=1e-2, total_steps=10)
    for b in tiny_batches(5):
        eng.train_step(b)
    assert len(ctl.layers) == n_active
    out = export_peft_adapter(model, ctl, tmp_path / "adapter")

    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == sorted(ctl.layers)
    assert {re.sub(r"\\", "", k): v for k, v in adapter_cfg["rank_pattern"].items()} == {
        n: layer.r for n, layer in ctl.layers.items()
    }
    assert json.loads((out / "wlora_adapter.json").read_text())["method"] == slug

    probe = tiny_batches(1, seed=7)[0]["input_ids"]
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=probe).logits
        fresh = BertForSequenceClassification.from_pretrained(base_dir)
        theirs = PeftModel.from_pretrained(fresh, out).eval()(input_ids=probe).logits
    assert float((ours - theirs).abs().max()) <= 1e-5
    # each exported module got its own rank in peft
    inner = PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(base_dir), out)
    for name, layer in ctl.layers.items():
        assert inner.base_model.model.get_submodule(name).r["default"] == layer.r


def test_export_needs_an_adapter(tmp_path):
    model = tiny_bert()
    ctl = wlora.build_method("random_select", model, {"k": 1})
    ctl.remove_adapters(list(ctl.layers))
    with pytest.raises(ValueError, match="no active adapter"):
        export_peft_adapter(model, ctl, tmp_path)
