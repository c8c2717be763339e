"""Invariants of WeightLoRA, WeightLoRA+ and random selection on tiny models (exact, fast)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import wlora
from wlora.core import count_parameters
from wlora.core.growth import grow_rank_, plan_ranks
from wlora.train import Engine, seed_everything

from .conftest import tiny_batches, tiny_bert

R, HIDDEN = 4, 32
WIDTH = 2 * HIDDEN  # d_in + d_out of every q/k/v in the tiny BERT


def _engine(slug, cfg, layers=3, steps=10, lr=5e-3, seed=0):
    model = tiny_bert(layers=layers, hidden=HIDDEN, seed=seed)
    seed_everything(seed)
    ctl = wlora.build_method(slug, model, {"r": R, "dropout": 0.0, **cfg})
    return model, ctl, Engine(model, ctl, lr=lr, total_steps=steps)


@pytest.mark.parametrize("topk_by", ["abs", "value"])
def test_exactly_k_nonzero_gates_after_every_projection(topk_by):
    _model, ctl, eng = _engine("weightlora", {"k": 3, "t": 6, "lr_w": 5.0, "topk_by": topk_by})
    seen = []
    orig = ctl.sgd.step

    def recording_step(k, lr_scale=1.0, project=True):
        applied = orig(k, lr_scale, project)
        seen.append((applied is not None, int((ctl.sgd.values() != 0).sum())))
        return applied

    ctl.sgd.step = recording_step
    for batch in tiny_batches(6):
        eng.train_step(batch)
    # step 1: B = 0 ⇒ ∇ω = 0 ⇒ projection skipped (all 9 gates still 1)
    assert seen[0] == (False, 9)
    applied = [nz for ok, nz in seen if ok]
    assert len(applied) == 5 and all(nz == 3 for nz in applied)
    assert ctl.projections == 5


def test_selection_physically_removes_adapters_and_their_optimizer_state():
    model, ctl, eng = _engine("weightlora", {"k": 2, "t": 4})
    params_before = {n: (layer.lora_A, layer.lora_B, layer.gate) for n, layer in ctl.layers.items()}
    batches = tiny_batches(6)
    for b in batches[:4]:
        eng.train_step(b)
    assert ctl.selected and len(ctl.layers) == 2
    removed = [n for n in params_before if n not in ctl.layers]
    assert len(removed) == 7
    refs = [weakref.ref(p) for n in removed for p in params_before[n]]
    del params_before
    gc.collect()
    assert all(r() is None for r in refs), "a removed adapter tensor is still referenced"
    for name in removed:
        assert isinstance(model.get_submodule(name), torch.nn.Linear)
    # the optimizer tracks exactly the survivors' A/B + head, and holds state for nothing else
    opt_params = [p for g in eng.optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in opt_params} == {id(p) for p in ctl.optimizer_params()}
    assert set(map(id, eng.optimizer.state)) <= {id(p) for p in opt_params}
    counts = count_parameters(model, ctl.head_names)
    assert counts["adapter"] == 2 * R * WIDTH and counts["gates"] == 0
    assert not any(p.requires_grad for n, p in model.named_parameters() if "gate" in n)
    for b in batches[4:]:  # training goes on with the survivors only
        eng.train_step(b)
    assert len(eng.optimizer.state) == len(opt_params)


def test_selection_keeps_the_top_k_gates_and_folds_them_into_the_scale():
    _model, ctl, eng = _engine("weightlora", {"k": 3, "t": 3})
    batches = tiny_batches(3)
    for b in batches[:2]:
        eng.train_step(b)
    # step 3 = T: run it by hand to see the gates right before selection
    eng.train_step(batches[2])
    scores = ctl.selection_scores[-1]
    top = sorted(scores, key=scores.get, reverse=True)[:3]
    assert sorted(ctl.layers) == sorted(top)
    assert all(layer.gate is None for layer in ctl.layers.values())
    assert all(layer.scaling != 32 / R for layer in ctl.layers.values())  # ω folded into s


def test_selection_leaves_outputs_unchanged_and_growth_too():
    for slug, cfg in [
        ("weightlora", {"k": 3, "t": 3}),
        ("weightlora_plus", {"k": 3, "t": 3, "init": "random"}),
        ("weightlora_plus", {"k": 3, "t": 3, "init": "qr"}),
        ("weightlora_plus", {"k": 2, "t": 2, "init": "qr", "stages": 2}),
    ]:
        model, ctl, eng = _engine(slug, cfg)
        probe = tiny_batches(1, seed=9)[0]["input_ids"]
        diffs = []
        orig = ctl.after_optimizer_step

        def wrapped(step, optimizer, orig=orig, model=model, probe=probe, diffs=diffs):
            model.eval()
            with torch.no_grad():
                before = model(input_ids=probe).logits
                orig(step, optimizer)
                after = model(input_ids=probe).logits
            model.train()
            diffs.append(float((before - after).abs().max()))

        ctl.after_optimizer_step = wrapped
        for b in tiny_batches(5):
            eng.train_step(b)
        assert ctl.selected, (slug, cfg)
        assert max(diffs) <= 1e-6, (slug, cfg, diffs)


@pytest.mark.parametrize("init", ["random", "qr"])
def test_growth_on_every_layer_preserves_output_exactly(init):
    model = tiny_bert(layers=2)
    ctl = wlora.build_method("lora", model, {"r": 3, "dropout": 0.0})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in ctl.layers.values():
            layer.lora_B.normal_(generator=g)
    probe = tiny_batches(1)[0]["input_ids"]
    with torch.no_grad():
        before = model(input_ids=probe).logits
        for layer in ctl.layers.values():
            grow_rank_(layer, 11, init, g)
        after = model(input_ids=probe).logits
    assert all(layer.r == 11 and layer.lora_A.shape[0] == 11 for layer in ctl.layers.values())
    assert float((before - after).abs().max()) <= 1e-6
    if init == "qr":  # new output directions orthogonal to the old ones
        for layer in ctl.layers.values():
            B = layer.lora_B.detach()
            assert float((B[:, 3:].T @ B[:, :3]).abs().max()) < 1e-5


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 9])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_weightlora_plus_budget_equals_lora_budget(k, r):
    model = tiny_bert(layers=3)
    ctl = wlora.build_method("weightlora_plus", model, {"r": r, "k": k, "t": 0})
    Engine(model, ctl, lr=1e-3, total_steps=2)  # t = 0 selects and grows at train begin
    lora_budget = 9 * r * WIDTH
    assert ctl.adapter_param_count() <= lora_budget
    assert abs(ctl.adapter_param_count() - lora_budget) <= 0.01 * lora_budget
    assert len(ctl.layers) == k
    assert sum(layer.r for layer in ctl.layers.values()) == 9 * r  # equal shapes: exact


def test_plan_ranks_unequal_shapes_never_exceeds_budget():
    layers = {
        "a": torch.nn.Module(),
        "b": torch.nn.Module(),
        "c": torch.nn.Module(),
    }
    for name, (din, dout) in zip(layers, [(32, 32), (32, 96), (128, 32)], strict=True):
        layers[name].in_features, layers[name].out_features, layers[name].r = din, dout, 2
    ranks = plan_ranks(layers, ["b", "a", "c"], budget=3000)
    used = 64 * ranks["a"] + 128 * ranks["b"] + 160 * ranks["c"]
    assert used <= 3000 and 3000 - used < 64  # nothing more fits
    assert min(ranks.values()) >= 2


def test_growth_keeps_adam_moments_of_old_block():
    _model, ctl, eng = _engine("weightlora_plus", {"k": 3, "t": 3, "init": "random"})
    batches = tiny_batches(3)
    for b in batches[:2]:
        eng.train_step(b)
    snapshot = {}
    orig = ctl.on_stage_end

    def spy(survivors, optimizer):
        for n in survivors:
            st = optimizer.state[ctl.layers[n].lora_A]
            snapshot[n] = (st["exp_avg"].clone(), st["exp_avg_sq"].clone())
        orig(survivors, optimizer)

    ctl.on_stage_end = spy
    eng.train_step(batches[2])
    r_new = 9 * R // 3
    for n, (m, v) in snapshot.items():
        layer = ctl.layers[n]
        st = eng.optimizer.state[layer.lora_A]
        assert layer.r == r_new and st["exp_avg"].shape == (r_new, HIDDEN)
        assert torch.equal(st["exp_avg"][:R], m) and torch.equal(st["exp_avg_sq"][:R], v)
        assert not st["exp_avg"][R:].any() and not st["exp_avg_sq"][R:].any()
        assert eng.optimizer.state[layer.lora_B]["exp_avg"].shape == (HIDDEN, r_new)


def test_multi_stage_halves_k_and_doubles_rank():
    _model, ctl, eng = _engine("weightlora_plus", {"k": 2, "t": 2, "stages": 2}, layers=2)
    assert ctl.k_stages == [4, 2]
    batches = tiny_batches(5)
    for b in batches[:2]:
        eng.train_step(b)
    assert ctl.stage == 1 and len(ctl.layers) == 4
    assert sorted(layer.r for layer in ctl.layers.values()) == [6, 6, 6, 6]  # 6·4/4
    assert all(layer.gate is not None for layer in ctl.layers.values())  # gates train on
    for b in batches[2:4]:
        eng.train_step(b)
    assert ctl.selected and len(ctl.layers) == 2
    assert [layer.r for layer in ctl.layers.values()] == [12, 12]
    assert ctl.adapter_param_count() == 6 * R * WIDTH


def test_random_select_is_seeded_and_trains_k_adapters():
    picks = []
    for seed in (0, 0, 1):
        model = tiny_bert(layers=3)
        ctl = wlora.build_method("random_select", model, {"k": 3, "t": 0, "selection_seed": seed})
        picks.append(sorted(ctl.layers))
        assert count_parameters(model, ctl.head_names)["adapter"] == 3 * 8 * WIDTH
        assert ctl.report()["selected_adapters"] == list(ctl.layers)
    assert picks[0] == picks[1] and picks[0] != picks[2]


@pytest.mark.parametrize(
    ("slug", "cfg", "match"),
    [
        ("weightlora", {"k": 0}, r"`k` must be a positive integer, got 0"),
        ("weightlora", {"k": -2}, r"`k` must be a positive integer, got -2"),
        ("weightlora", {"k": 7}, r"`k` must be in \[1, n_adapters=6\], got 7"),
        ("weightlora_plus", {"k": 25}, r"`k` must be in \[1, n_adapters=6\], got 25"),
        ("random_select", {"k": 7}, r"`k` must be in \[1, n_adapters=6\], got 7"),
        ("weightlora", {"k_fraction": 1.5}, r"`k_fraction` must be in \(0, 1\], got 1.5"),
        ("weightlora", {"k": 2, "k_fraction": 0.5}, r"set only one of `k` and `k_fraction`"),
        ("lora", {"r": 0}, r"`r` must be a positive integer, got 0"),
        ("weightlora", {"r": -1}, r"`r` must be a positive integer, got -1"),
        ("weightlora", {"t": -1}, r"`t` must be an integer >= 0, got -1"),
        ("weightlora", {"lr_w": 0.0}, r"`lr_w` must be a positive number, got 0.0"),
        ("weightlora_plus", {"lr_w": -5}, r"`lr_w` must be a positive number, got -5"),
        ("weightlora_plus", {"init": "svd"}, r"`init` must be one of \['random', 'qr'\], got 'svd'"),
        ("weightlora", {"topk_by": "norm"}, r"`topk_by` must be 'abs' or 'value', got 'norm'"),
        ("weightlora_plus", {"k": 2, "stages": 3}, r"`k` · 2\^\(stages−1\) must be <= n_adapters=6"),
        ("lora", {"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        ("lora", {"rank": 8}, r"unknown LoRAConfig field\(s\) \['rank'\]"),
        ("lora_dropz", {}, r"unknown method 'lora_dropz'"),
    ],
)
def test_bad_configs_raise_before_training(slug, cfg, match):
    model = tiny_bert(layers=2)
    with pytest.raises(ValueError, match=match):
        wlora.build_method(slug, model, cfg)


def test_no_projection_while_the_gate_update_is_zero():
    """With warm-up the first multiplier is 0: ties must not be broken by index even if ∇ω ≠ 0."""
    model = tiny_bert(layers=2)
    ctl = wlora.build_method("weightlora", model, {"r": 4, "k": 2, "t": 5})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in ctl.layers.values():
            layer.lora_B.normal_(generator=g)  # B ≠ 0 ⇒ ∇ω ≠ 0 from the first step
    eng = Engine(model, ctl, lr=1e-3, total_steps=10, warmup_steps=3)
    batches = tiny_batches(2)
    eng.train_step(batches[0])  # multiplier 0 at step 1
    assert ctl.projections == 0 and bool((ctl.sgd.values() == 1).all())
    eng.train_step(batches[1])
    assert ctl.projections == 1 and int((ctl.sgd.values() != 0).sum()) == 2
