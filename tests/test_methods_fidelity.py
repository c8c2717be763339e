"""Numerics that change a method's conclusions: fp16 gate updates, the gate's place in the graph,
Adam state of grown components, the random-selection ablation, AdaLoRA's defaults and LoRA-drop's
importance run (tiny models, exact)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import wlora
from wlora.core import count_parameters
from wlora.core.accounting import saved_for_backward_bytes
from wlora.core.growth import grow_rank_
from wlora.core.layer import LoRALinear
from wlora.core.optim import reindex_param_, track_component_ages
from wlora.train import Engine, seed_everything

from .conftest import tiny_batches, tiny_bert

R = 4


def _weightlora(seed=0, **engine_kw):
    model = tiny_bert(layers=2, hidden=32, seed=seed)
    seed_everything(seed)
    ctl = wlora.build_method("weightlora", model, {"r": R, "dropout": 0.0, "k": 2, "t": 100, "lr_w": 5.0})
    return model, ctl, Engine(model, ctl, lr=5e-3, total_steps=20, **engine_kw)


def _gates(ctl) -> torch.Tensor:
    return ctl.sgd.values().clone()


# ----- 1) fp16: gates see unscaled gradients and skip overflow steps -----


@pytest.mark.parametrize("init_scale", [1024.0, 65536.0])
def test_fp16_scaler_path_gives_the_gates_the_fp32_update(init_scale):
    batches = tiny_batches(4, seed=3)
    _, ref_ctl, ref = _weightlora()
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)
    _, ctl, eng = _weightlora(grad_scaler=scaler)
    for b in batches:
        ref.train_step(b)
        eng.train_step(b)
        assert not eng.last_step_skipped
        torch.testing.assert_close(_gates(ctl), _gates(ref_ctl), rtol=0, atol=1e-6)
    # the gates did move (step 1 has ∇ω = 0 since B = 0; later steps train them)
    assert float((_gates(ref_ctl) - 1).abs().max()) > 1e-3
    ref_state, state = ref.trainable_state(), eng.trainable_state()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], rtol=0, atol=1e-6)


def test_fp16_overflow_in_a_gate_alone_skips_the_whole_update():
    _, ctl, eng = _weightlora(grad_scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    batches = tiny_batches(3, seed=3)
    eng.train_step(batches[0])
    eng.train_step(batches[1])
    gates, weights = _gates(ctl), eng.trainable_state()
    one = next(iter(ctl.layers.values())).gate
    handle = one.register_hook(lambda g: g * float("inf"))  # only this gate's gradient overflows
    eng.train_step(batches[2])
    handle.remove()
    assert eng.last_step_skipped and eng.step == 3
    assert torch.equal(_gates(ctl), gates)
    after = eng.trainable_state()
    assert all(torch.equal(after[k], weights[k]) for k in weights)
    assert eng.grad_scaler.get_scale() == 512.0  # the overflow lowered the scale, as for the optimizer's own


def test_fp16_step_the_scaler_skips_leaves_the_gates_alone():
    model, ctl, eng = _weightlora(grad_scaler=torch.amp.GradScaler("cpu", init_scale=65536.0))
    batches = tiny_batches(3, seed=3)
    eng.train_step(batches[0])
    eng.train_step(batches[1])
    gates, weights = _gates(ctl), eng.trainable_state()
    # an overflow in the optimizer's own gradients (the classifier's): GradScaler skips optimizer.step
    handle = model.classifier.weight.register_hook(lambda g: g * float("inf"))
    eng.train_step(batches[2])
    handle.remove()
    assert eng.last_step_skipped
    assert torch.equal(_gates(ctl), gates)
    after = eng.trainable_state()
    assert all(torch.equal(after[k], weights[k]) for k in weights)
    assert eng.grad_scaler.get_scale() == 32768.0


def test_fp16_skipped_step_hands_score_based_methods_zero_gradients():
    """ROLoRA/AdaLoRA accumulate sensitivities from gradients after the step: never from inf/NaN."""
    model = tiny_bert(layers=2)
    seed_everything(0)
    ctl = wlora.build_method("rolora", model, {"r": 2, "dropout": 0.0, "total_steps": 12, "iterations": 2})
    eng = Engine(model, ctl, lr=5e-3, total_steps=12, grad_scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    batches = tiny_batches(3, seed=3)
    eng.train_step(batches[0])
    eng.train_step(batches[1])
    handle = next(iter(ctl.layers.values())).lora_g.register_hook(lambda g: g * float("inf"))
    eng.train_step(batches[2])
    handle.remove()
    assert eng.last_step_skipped
    for slots in ctl.ema.values():
        for avg, unc in slots.values():
            assert bool(torch.isfinite(avg).all()) and bool(torch.isfinite(unc).all())


# ----- 6) the gate multiplies the rank-r intermediate -----


def _old_gated_forward(layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
    """ω·s applied to the d_out-sized adapter output (the previous formulation)."""
    h = torch.nn.functional.linear(torch.nn.functional.linear(x, layer.lora_A), layer.lora_B)
    return layer.base(x) + h * (layer.gate * layer.scaling)


def test_gate_on_the_intermediate_matches_the_output_gate_and_saves_as_lora():
    torch.manual_seed(0)
    base = nn.Linear(48, 80)
    layer = LoRALinear(base, r=R, alpha=16, dropout=0.0, gate=True)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.1)
        layer.gate.fill_(-0.7)
    # float64: the two orders of operations agree to rounding; in float32 they differ by ~1e-7 relative
    layer64 = LoRALinear(nn.Linear(48, 80).double(), r=R, alpha=16, gate=True)
    layer64.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    x = torch.randn(3, 5, 48)
    w = torch.randn(3, 5, 80, dtype=torch.float64)
    grads = []
    for fn in (layer64, lambda x: _old_gated_forward(layer64, x)):
        out = fn(x.double())
        (out * w).sum().backward()
        grads.append((out.detach(), *(p.grad.clone() for p in layer64.adapter_parameters())))
        layer64.zero_grad()
    for new, old in zip(*grads, strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    plain = LoRALinear(base, r=R, alpha=16, dropout=0.0)
    tokens = 3 * 5
    saved_gated = saved_for_backward_bytes(lambda: layer(x).sum(), layer)
    saved_plain = saved_for_backward_bytes(lambda: plain(x).sum(), plain)
    saved_old = saved_for_backward_bytes(lambda: _old_gated_forward(layer, x).sum(), layer)
    # ∇ω needs Ax: r numbers per token (+ the scalar ω·s), never the d_out-sized output
    assert saved_gated - saved_plain <= tokens * R * 4 + 4
    assert saved_old - saved_plain >= tokens * 80 * 4


# ----- 2) Adam state of grown components -----


def _adamw(params, **kw):
    return torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **kw)


def _feed(opt, params_grads):
    for p, g in params_grads:
        p.grad = g.clone()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _trained_layer(steps: int, seed: int = 0):
    """A LoRA layer whose A/B took ``steps`` AdamW steps on random gradients (ages tracked)."""
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(24, 40), r=R, alpha=8)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.1)
    opt = _adamw([layer.lora_A, layer.lora_B])
    track_component_ages(opt)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        _feed(opt, [(p, torch.randn(p.shape, generator=g)) for p in (layer.lora_A, layer.lora_B)])
    return layer, opt, g


@pytest.mark.parametrize("before", [1, 60])
def test_random_growth_keeps_old_adam_state_and_gives_new_components_a_fresh_adamw(before):
    layer, opt, g = _trained_layer(before)
    # references: the old blocks continue with a copy of their state; the new ones start a fresh AdamW
    old_A, old_B = (nn.Parameter(p.detach().clone()) for p in (layer.lora_A, layer.lora_B))
    ref_old = _adamw([old_A, old_B])
    ref_old.load_state_dict(copy.deepcopy(opt.state_dict()))
    grow_rank_(layer, 3 * R, "random", torch.Generator().manual_seed(5), opt)
    new_A = nn.Parameter(layer.lora_A.detach()[R:].clone())
    new_B = nn.Parameter(layer.lora_B.detach()[:, R:].clone())
    ref_new = _adamw([new_A, new_B])
    for _ in range(12):
        gA, gB = torch.randn(layer.lora_A.shape, generator=g), torch.randn(layer.lora_B.shape, generator=g)
        _feed(opt, [(layer.lora_A, gA), (layer.lora_B, gB)])
        _feed(ref_old, [(old_A, gA[:R]), (old_B, gB[:, :R])])
        _feed(ref_new, [(new_A, gA[R:]), (new_B, gB[:, R:])])
        torch.testing.assert_close(layer.lora_A[:R], old_A, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.lora_B[:, :R], old_B, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.lora_A[R:], new_A, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.lora_B[:, R:], new_B, rtol=0, atol=1e-6)
    assert opt.state[layer.lora_A]["step"] == before + 12  # the old block's counter is untouched


def test_qr_growth_restarts_a_and_b_as_fresh_adamw_tensors():
    layer, opt, g = _trained_layer(40)
    grow_rank_(layer, 2 * R, "qr", torch.Generator().manual_seed(5), opt)
    assert layer.lora_A not in opt.state and layer.lora_B not in opt.state
    ref_A, ref_B = (nn.Parameter(p.detach().clone()) for p in (layer.lora_A, layer.lora_B))
    ref = _adamw([ref_A, ref_B])
    for _ in range(6):
        gA, gB = torch.randn(layer.lora_A.shape, generator=g), torch.randn(layer.lora_B.shape, generator=g)
        _feed(opt, [(layer.lora_A, gA), (layer.lora_B, gB)])
        _feed(ref, [(ref_A, gA), (ref_B, gB)])
        torch.testing.assert_close(layer.lora_A, ref_A, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.lora_B, ref_B, rtol=0, atol=1e-6)


def test_reindexed_components_keep_their_age_and_new_ones_start_fresh():
    """ROLoRA's extend: components move (with moments and age), others are dropped or added."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(R, 10))
    opt = _adamw([p])
    track_component_ages(opt)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        _feed(opt, [(p, torch.randn(p.shape, generator=g))])
    src, dst = torch.tensor([2, 0]), torch.tensor([0, 1])  # keep components 2, 0; two new ones at 2, 3
    kept = nn.Parameter(p.detach()[src].clone())
    ref_old = _adamw([kept])
    ref_old.load_state_dict(copy.deepcopy(opt.state_dict()))
    ref_old.state[kept]["exp_avg"] = opt.state[p]["exp_avg"][src].clone()
    ref_old.state[kept]["exp_avg_sq"] = opt.state[p]["exp_avg_sq"][src].clone()
    new_value = torch.cat([p.detach()[src], torch.randn(2, 10)])
    reindex_param_(p, new_value, 0, src, dst, opt)
    fresh = nn.Parameter(new_value[2:].clone())
    ref_new = _adamw([fresh])
    for _ in range(8):
        grad = torch.randn(p.shape, generator=g)
        _feed(opt, [(p, grad)])
        _feed(ref_old, [(kept, grad[:2])])
        _feed(ref_new, [(fresh, grad[2:])])
        torch.testing.assert_close(p[:2], kept, rtol=0, atol=1e-6)
        torch.testing.assert_close(p[2:], fresh, rtol=0, atol=1e-6)
    # a second reindex keeps the recorded ages of components born at the first one
    reindex_param_(p, p.detach()[[3, 0]].clone(), 0, torch.tensor([3, 0]), torch.tensor([0, 1]), opt)
    assert opt.state[p]["born"].tolist() == [30.0, 0.0]


def test_component_ages_survive_an_optimizer_checkpoint():
    layer, opt, g = _trained_layer(20)
    grow_rank_(layer, 2 * R, "random", torch.Generator().manual_seed(5), opt)
    _feed(opt, [(p, torch.randn(p.shape, generator=g)) for p in (layer.lora_A, layer.lora_B)])
    twin = [nn.Parameter(p.detach().clone()) for p in (layer.lora_A, layer.lora_B)]
    opt2 = _adamw(twin)
    track_component_ages(opt2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in twin]
        _feed(opt, list(zip((layer.lora_A, layer.lora_B), grads, strict=True)))
        _feed(opt2, list(zip(twin, grads, strict=True)))
    assert torch.equal(twin[0], layer.lora_A) and torch.equal(twin[1], layer.lora_B)


# ----- 3) RLoRA: WeightLoRA with a random selection at step T -----


def test_random_select_trains_all_adapters_until_t_then_keeps_the_seeded_draw():
    model = tiny_bert(layers=3)
    seed_everything(0)
    ctl = wlora.build_method("random_select", model, {"r": R, "k": 2, "t": 3, "selection_seed": 7})
    eng = Engine(model, ctl, lr=5e-3, total_steps=6)
    n = ctl.n_adapters
    assert n == 9 and ctl.report()["selected"] is False
    batches = tiny_batches(6)
    for step, b in enumerate(batches, start=1):
        before = {name: layer.lora_B.detach().clone() for name, layer in ctl.layers.items()}
        eng.train_step(b)
        if step < 3:
            # all n adapters train, without gates
            assert len(ctl.layers) == n and all(layer.gate is None for layer in ctl.layers.values())
            assert all(not torch.equal(before[name], ctl.layers[name].lora_B) for name in before)
        else:
            assert list(ctl.layers) == ctl.chosen and len(ctl.chosen) == 2
    assert ctl.report()["selected"] and ctl.report()["selected_adapters"] == ctl.chosen
    # removed physically: no adapter tensors of the others in the model or the optimizer
    live = {id(p) for g in eng.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in model.parameters() if p.requires_grad} == live
    assert count_parameters(model, ctl.head_names)["adapter"] == 2 * R * 64
    assert len(eng.optimizer.state) == len(live)
    # the same seed draws the same K whatever T is; t = 0 draws before the first step
    ctl0 = wlora.build_method("random_select", tiny_bert(layers=3), {"r": R, "k": 2, "t": 0, "selection_seed": 7})
    assert list(ctl0.layers) == ctl.chosen and ctl0.selected


# ----- 5) AdaLoRA's schedule defaults -----


@pytest.mark.parametrize("total", [1, 2, 10, 100, 6_700])
def test_adalora_defaults_are_fractions_of_the_run_and_always_leave_a_budgeting_phase(total):
    cfg = wlora.make_config("adalora", {"total_steps": total})
    ti, tf = cfg.resolved_tinit, cfg.resolved_tfinal
    assert ti == int(0.1 * total) and 0 <= tf <= int(0.5 * total) and ti < total - tf
    if total >= 10:
        assert tf == int(0.5 * total)  # the allocation is final for the second half of the run
    explicit = wlora.make_config("adalora", {"total_steps": 100, "tinit": 0, "tfinal": 0})
    assert (explicit.resolved_tinit, explicit.resolved_tfinal) == (0, 0)


def test_adalora_default_schedule_reaches_the_target_budget_before_the_last_step():
    model = tiny_bert(layers=2)
    seed_everything(0)
    total = 20
    ctl = wlora.build_method("adalora", model, {"r": 2, "init_r": 4, "dropout": 0.0, "total_steps": total})
    assert (ctl.peft_config.tinit, ctl.peft_config.tfinal) == (2, 10)
    eng = Engine(model, ctl, lr=1e-2, total_steps=total)
    target = 2 * ctl.n_adapters
    budgets = []
    for b in tiny_batches(total):
        eng.train_step(b)
        budgets.append(ctl.report()["budget"])
    assert budgets[1] == 4 * ctl.n_adapters  # no pruning during tinit
    assert budgets[total - 10 - 1] == target and budgets[-1] == target  # final from step total − tfinal on
    assert ctl.report()["rank_sum"] <= target


def test_adalora_rejects_fractions_without_a_budgeting_phase():
    with pytest.raises(ValueError, match=r"`tinit_frac` \+ `tfinal_frac` must be < 1"):
        wlora.make_config("adalora", {"tinit_frac": 0.5, "tfinal_frac": 0.5})


# ----- 4) LoRA-drop: a short importance run of its own, then a fresh task schedule -----


def test_lora_drop_importance_run_has_its_own_schedule_and_the_task_run_a_fresh_one():
    model = tiny_bert(layers=2)
    seed_everything(0)
    cfg = {"r": R, "dropout": 0.0, "steps_per_epoch": 10, "sample_ratio": 0.2, "importance_epochs": 2}
    ctl = wlora.build_method("lora_drop", model, cfg)
    phase, task = ctl.importance_steps, 6
    assert phase == 4
    eng = Engine(model, ctl, lr=1e-2, total_steps=phase + task, warmup_steps=2)
    lrs, b_moved = [], []
    for step, b in enumerate(tiny_batches(phase + task), start=1):
        lrs.append(eng.optimizer.param_groups[0]["lr"])  # the lr this step uses
        before = {n: layer.lora_B.detach().clone() for n, layer in ctl.layers.items()}
        eng.train_step(b)
        if step <= phase:
            b_moved.append(any(not torch.equal(before[n], ctl.layers[n].lora_B) for n in before))
    peak = 1e-2
    # importance run: peak lr at its first step, linear decay, every step trains
    assert lrs[:phase] == pytest.approx([peak, 0.75 * peak, 0.5 * peak, 0.25 * peak])
    assert all(b_moved)
    # task run: a fresh warm-up (0, peak/2) then the decay over its own 6 steps, to 0 at the end
    assert lrs[phase:] == pytest.approx([0.0, 0.5 * peak, peak, 0.75 * peak, 0.5 * peak, 0.25 * peak])
    assert eng.scheduler.get_last_lr()[0] == 0.0
    assert not ctl.report()["importance_uniform"]


@pytest.mark.parametrize(("m", "per_step"), [(5, 4), (7, 16), (24, 8), (9, 2)])
def test_importance_steps_are_never_empty_and_read_the_sample_in_passes(m, per_step):
    from wlora.schedule import importance_batch_indices

    sample = list(range(100, 100 + m))
    q = min(m, per_step)
    steps = 3 * -(-m // q) + 2  # more steps than whole passes: the planned count need not divide
    batches = [importance_batch_indices(sample, s, per_step, seed=3) for s in range(steps)]
    assert all(len(b) == q for b in batches)  # full batches, never empty
    stream = [i for b in batches for i in b]
    assert set(stream) <= set(sample)
    for p in range(len(stream) // m):  # each whole pass is a permutation of the sample
        assert sorted(stream[p * m : (p + 1) * m]) == sample
    assert batches == [importance_batch_indices(sample, s, per_step, seed=3) for s in range(steps)]
