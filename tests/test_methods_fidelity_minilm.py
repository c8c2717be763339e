"""The fidelity fixes on the real all-MiniLM-L6-v2 (n = 18 q/k/v adapters) and real SST-2 data: fp16
gate updates, saved-for-backward bytes of the gated layer, Adam state of grown ranks, RLoRA through
the runner, AdaLoRA's default schedule and LoRA-drop's importance run."""

from __future__ import annotations

import pytest
import torch

import wlora
from wlora.core import saved_for_backward_bytes
from wlora.train import Engine, TrainConfig, prepare_run, run_training, seed_everything

from .conftest import load_minilm

pytestmark = pytest.mark.slow

BETAS, EPS, LR = (0.9, 0.999), 1e-8, 3e-3


def _build(path, slug, cfg, **engine_kw):
    model = load_minilm(path)
    seed_everything(0)
    ctl = wlora.build_method(slug, model, {"r": 8, "dropout": 0.0, **cfg})
    return model, ctl, Engine(model, ctl, lr=LR, total_steps=50, **engine_kw)


def _halves(batch):
    return [{k: v[:8] for k, v in batch.items()}, {k: v[8:] for k, v in batch.items()}]


def test_minilm_fp16_gates_match_fp32_and_skip_overflow_steps(minilm_path, sst2_batch):
    _, ref_ctl, ref = _build(minilm_path, "weightlora", {"k": 4, "t": 100})
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0, growth_interval=1000)
    _, ctl, eng = _build(minilm_path, "weightlora", {"k": 4, "t": 100}, grad_scaler=scaler)
    batches = _halves(sst2_batch)
    for i, b in enumerate(batches + batches):
        for e in (ref, eng):
            seed_everything(i)  # the same dropout masks in both runs
            e.train_step(b)
    torch.testing.assert_close(ctl.sgd.values(), ref_ctl.sgd.values(), rtol=0, atol=1e-6)
    assert float((ref_ctl.sgd.values() - 1).abs().max()) > 1e-3  # the gates trained
    gates = ctl.sgd.values().clone()
    gate = next(iter(ctl.layers.values())).gate
    handle = gate.register_hook(lambda g: g * float("inf"))
    eng.train_step(batches[0])
    handle.remove()
    assert eng.last_step_skipped and torch.equal(ctl.sgd.values(), gates)
    assert scaler.get_scale() == 32768.0


def test_minilm_weightlora_saves_what_lora_saves_before_selection(minilm_path, sst2_batch):
    saved = {}
    for slug, cfg in (("lora", {}), ("weightlora", {"k": 4, "t": 100})):
        model = load_minilm(minilm_path)
        wlora.build_method(slug, model, {"r": 8, **cfg})
        model.train()
        saved[slug] = saved_for_backward_bytes(lambda model=model: model(**sst2_batch).loss, model)
    assert saved["weightlora"] <= 1.01 * saved["lora"], saved


def _adamw_step(p, g, m, v, step, lr, wd=0.0):
    """torch's AdamW update of ``p`` at ``step`` with the moments ``m``, ``v`` before it (float64)."""
    p, g, m, v = (x.double() for x in (p, g, m, v))
    m = BETAS[0] * m + (1 - BETAS[0]) * g
    v = BETAS[1] * v + (1 - BETAS[1]) * g * g
    m_hat, v_hat = m / (1 - BETAS[0] ** step), v / (1 - BETAS[1] ** step)
    return p * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + EPS)


@pytest.mark.parametrize("init", ["random", "qr"])
def test_minilm_grown_components_take_a_fresh_adamw_step(init, minilm_path, sst2_batch):
    _, ctl, eng = _build(minilm_path, "weightlora_plus", {"k": 4, "t": 3, "init": init})
    batches = _halves(sst2_batch)
    for step in range(3):
        eng.train_step(batches[step % 2])
    assert ctl.selected
    name = next(iter(ctl.layers))
    A = ctl.layers[name].lora_A
    r_old, r_new = 8, A.shape[0]
    assert r_new == 8 * 18 // 4
    state = eng.optimizer.state.get(A)
    before = A.detach().clone()
    m = state["exp_avg"].clone() if state else torch.zeros_like(A)
    v = state["exp_avg_sq"].clone() if state else torch.zeros_like(A)
    seen = {}
    orig = ctl.before_optimizer_step

    def grab(step, lr_scale=1.0):
        seen["grad"] = A.grad.detach().clone()
        seen["lr"] = eng.optimizer.param_groups[0]["lr"]
        orig(step, lr_scale)

    ctl.before_optimizer_step = grab
    eng.train_step(batches[1])
    g, lr = seen["grad"], seen["lr"]
    if init == "random":  # old rows continue their AdamW at step 4, new rows take a fresh step 1
        assert int(eng.optimizer.state[A]["step"]) == 4
        old = _adamw_step(before[:r_old], g[:r_old], m[:r_old], v[:r_old], 4, lr)
        torch.testing.assert_close(A.detach()[:r_old].double(), old, rtol=0, atol=1e-6)
    else:  # B → Q, A → RA: new coordinates, the whole tensor restarts
        assert int(eng.optimizer.state[A]["step"]) == 1
        r_old = 0
    new = _adamw_step(before[r_old:], g[r_old:], torch.zeros_like(g[r_old:]), torch.zeros_like(g[r_old:]), 1, lr)
    torch.testing.assert_close(A.detach()[r_old:].double(), new, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sst2_cfg(minilm_path, glue_dir):
    return TrainConfig(
        task="sst2",
        model=str(minilm_path),
        data_dir=str(glue_dir.parent),
        train_subset=64,
        eval_subset=32,
        batch_size=16,
        max_length=32,
        lr=3e-3,
    )


def test_minilm_random_select_trains_all_adapters_until_t(sst2_cfg):
    cfg = sst2_cfg.replace(method="random_select", method_config={"t": 3, "k": 4}, max_steps=6, eval_every=2)
    result = run_training(cfg)
    assert result.status == "completed", result.error
    assert [h["active_adapters"] for h in result.history] == [18, 4, 4]
    assert result.method_report["selected_adapters"] == result.method_report["drawn_adapters"]


def test_minilm_adalora_default_schedule_allocates_before_the_end(sst2_cfg):
    cfg = sst2_cfg.replace(method="adalora", method_config={"r": 2}, max_steps=10, eval_every=None)
    result = run_training(cfg)
    assert result.status == "completed", result.error
    rep = result.method_report
    assert (rep["tinit"], rep["tfinal"]) == (1, 5)
    assert rep["budget"] == 2 * 18 and rep["rank_sum"] <= 2 * 18 < rep["init_r"] * 18


def test_minilm_lora_drop_importance_run_has_its_own_schedule(sst2_cfg):
    from wlora.schedule import micro_batches, planned_evaluations

    cfg = sst2_cfg.replace(
        method="lora_drop", method_config={"sample_ratio": 0.25}, max_steps=4, eval_every=1, warmup_steps=2
    )
    assets = prepare_run(cfg)
    result = run_training(cfg, assets=assets)
    assert result.status == "completed", result.error
    phase = result.method_report["importance_steps"]
    assert phase == 3 and result.total_steps == 4 + phase
    assert len(result.history) == planned_evaluations(cfg, len(assets.data.train))
    lrs = [h["lr"] for h in result.history]  # the lr after each step, i.e. the next step's
    assert lrs[: phase - 1] == pytest.approx([cfg.lr * 2 / 3, cfg.lr / 3])  # importance: decays, never 0
    assert lrs[phase - 1 :] == pytest.approx([0.0, cfg.lr / 2, cfg.lr, cfg.lr / 2, 0.0])  # task: fresh warm-up
    assert not result.method_report["importance_uniform"]
    # every importance step trains on a full batch of the stratified sample
    _, method, _ = wlora.train.build_run(cfg, assets)
    sizes = [
        sum(len(mb["input_ids"]) for mb in micro_batches(cfg, assets.data, s, 4, "cpu", method)) for s in range(phase)
    ]
    assert sizes == [16] * phase
