"""LoRA-drop, ROLoRA, AdaLoRA (peft) and full fine-tuning on tiny models: invariants, resume, export."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification

import wlora
from wlora.core import count_parameters
from wlora.core.sampling import stratified_sample
from wlora.engine import Engine, seed_everything
from wlora.export import export_method, export_peft_adapter
from wlora.methods.lora_drop import keep_prefix, module_type

from .conftest import padded_batches, tiny_batches, tiny_bert

R, HIDDEN = 4, 32
WIDTH = 2 * HIDDEN


def _engine(slug, cfg, layers=2, steps=8, lr=5e-3, seed=0):
    model = tiny_bert(layers=layers, hidden=HIDDEN, seed=seed)
    seed_everything(seed)
    base = {} if slug == "full" else {"r": R, "dropout": 0.0}
    ctl = wlora.build_method(slug, model, {**base, **cfg})
    return model, ctl, Engine(model, ctl, lr=lr, total_steps=steps)


# ----- config validation (all before any training) -----


@pytest.mark.parametrize(
    ("slug", "cfg", "match"),
    [
        ("lora_drop", {"threshold": 0.0, "steps_per_epoch": 5}, r"`threshold` must be in \(0, 1\], got 0.0"),
        ("lora_drop", {"threshold": 1.5, "steps_per_epoch": 5}, r"`threshold` must be in \(0, 1\], got 1.5"),
        ("lora_drop", {"sample_ratio": 0, "steps_per_epoch": 5}, r"`sample_ratio` must be in \(0, 1\], got 0"),
        ("lora_drop", {"sample_ratio": 1.2, "steps_per_epoch": 5}, r"`sample_ratio` must be in \(0, 1\], got 1.2"),
        ("lora_drop", {"importance_epochs": 0, "steps_per_epoch": 5}, r"`importance_epochs` must be a positive"),
        ("lora_drop", {"steps_per_epoch": 0}, r"`steps_per_epoch` must be a positive integer"),
        ("lora_drop", {}, r"LoRADropConfig needs `steps_per_epoch`"),
        ("rolora", {"r": 0, "total_steps": 9}, r"`r` must be a positive integer, got 0"),
        ("rolora", {"r": -2, "total_steps": 9}, r"`r` must be a positive integer, got -2"),
        ("rolora", {"iterations": 0, "total_steps": 9}, r"`iterations` \(T\) must be a positive integer, got 0"),
        ("rolora", {"iterations": -1, "total_steps": 9}, r"`iterations` \(T\) must be a positive integer, got -1"),
        ("rolora", {"iterations": 3, "total_steps": 2}, r"`total_steps`=2 is too short for `iterations`=3"),
        ("rolora", {"tinit_frac": 0.5, "tfinal_frac": 0.5, "total_steps": 9}, r"`tinit_frac` \+ `tfinal_frac` must"),
        ("rolora", {}, r"RoLoRAConfig needs `total_steps`"),
        ("adalora", {"total_steps": 10, "tinit": 6, "tfinal": 4}, r"`tinit`=6 and `tfinal`=4 leave no budgeting"),
        ("adalora", {"total_steps": 10, "tinit": -1}, r"`tinit` must be None or an integer >= 0, got -1"),
        ("adalora", {"total_steps": 10, "init_r": 2}, r"`init_r` must be an integer >= r=4, got 2"),
        ("adalora", {"total_steps": 0}, r"`total_steps` must be a positive integer"),
        ("adalora", {}, r"AdaLoRAConfig needs `total_steps`"),
        ("full", {"r": 8}, r"unknown FullConfig field\(s\) \['r'\]"),
        ("lora_drop", {"thresh": 0.5}, r"unknown LoRADropConfig field\(s\) \['thresh'\]"),
    ],
)
def test_bad_configs_raise_before_training(slug, cfg, match):
    model = tiny_bert(layers=2)
    base = {} if slug == "full" else {"r": R}
    with pytest.raises(ValueError, match=match):
        wlora.build_method(slug, model, {**base, **cfg})


def test_run_fields_may_wait_for_the_runner():
    """A config without its run fields validates (the runner fills them in); only building needs them."""
    for slug in ("lora_drop", "rolora", "adalora"):
        cfg = wlora.make_config(slug, {"r": 4})
        assert set(wlora.get_method(slug).run_fields) <= set(cfg.to_dict())


# ----- LoRA-drop -----


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.7, 0.9, 1.0])
def test_lora_drop_keeps_the_smallest_prefix_reaching_the_threshold(seed, threshold):
    g = torch.rand(18, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) ** 3
    g[seed] = 0.0  # a module whose LoRA output is exactly zero
    keep, imp = keep_prefix(g, threshold)
    assert torch.allclose(imp.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(imp, g / g.sum())
    by_importance = sorted(range(18), key=lambda i: -float(g[i]))
    assert keep == by_importance[: len(keep)]  # a prefix of the importance order
    reached = float(g[keep].sum()) / float(g.sum())
    assert reached >= threshold - 1e-12
    assert float(g[keep[:-1]].sum()) / float(g.sum()) < threshold  # one fewer is not enough
    if threshold == 1.0:
        assert len(keep) == 17 and seed not in keep


def test_lora_drop_importance_is_the_sum_of_squared_adapter_outputs():
    """g_i = Σ ‖s·B A x_i‖² over the real tokens of the last pass over the sample (eq. 2)."""
    model, ctl, eng = _engine("lora_drop", {"steps_per_epoch": 10, "sample_ratio": 0.1, "importance_epochs": 3})
    assert (ctl.sample_steps, ctl.importance_steps) == (1, 3)
    batches = padded_batches(tiny_batches(3))
    for b in batches[:2]:
        eng.train_step(b)
    assert not ctl.g.any()  # nothing counted before the last pass
    captured = {}

    def grab(name):
        def hook(module, inputs, output):
            captured[name] = inputs[0].detach()

        return hook

    handles = [layer.register_forward_hook(grab(n)) for n, layer in ctl.layers.items()]
    expected = []
    with torch.no_grad():
        model.eval()
        model(**{k: v for k, v in batches[2].items() if k != "labels"})
        for name, layer in ctl.layers.items():
            y = F.linear(F.linear(captured[name], layer.lora_A), layer.lora_B) * layer.scaling
            expected.append(float((y.pow(2).sum(-1) * batches[2]["attention_mask"]).sum()))
    for h in handles:
        h.remove()
    g_seen = {}
    orig = ctl._select

    def spy():
        g_seen["g"] = ctl.g.clone()
        orig()

    ctl._select = spy
    eng.train_step(batches[2])
    assert torch.allclose(g_seen["g"], torch.tensor(expected, dtype=torch.float64), rtol=1e-5)
    assert all(v > 0 for v in expected)
    total = sum(expected)
    assert ctl.report()["importance"] == pytest.approx(
        {n: e / total for n, e in zip(ctl.target_names, expected, strict=True)}
    )


def test_lora_drop_restarts_with_kept_and_tied_shared_adapters():
    cfg = {"steps_per_epoch": 10, "sample_ratio": 0.2, "importance_epochs": 2, "threshold": 0.5}
    model, ctl, eng = _engine("lora_drop", cfg, layers=3)
    probe = tiny_batches(1, seed=9)[0]["input_ids"]
    with torch.no_grad():
        model.eval()
        at_init = model(input_ids=probe).logits
    batches = tiny_batches(6)
    old_params = {id(p) for layer in ctl.layers.values() for p in layer.adapter_parameters()}
    for b in batches[:4]:
        eng.train_step(b)
    assert ctl.phase == "task" and ctl.importance_steps == 4
    rep = ctl.report()
    assert rep["kept"] == ctl.kept and 1 <= len(ctl.kept) < 9
    assert abs(sum(rep["importance"].values()) - 1) < 1e-9
    # restart from the pretrained weights: fresh LoRA (B = 0) and the initial head ⇒ initial outputs
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(input_ids=probe).logits, at_init)
    # one shared LoRA per module type, tied: one parameter object, many modules
    groups = rep["shared_groups"]
    assert set(groups) <= {f"bert.encoder.layer.*.attention.self.{t}" for t in ("query", "key", "value")}
    assert sorted(ctl.kept + [n for v in groups.values() for n in v]) == sorted(ctl.target_names)
    for key, members in groups.items():
        assert all(module_type(n) == key for n in members)
        first = ctl.layers[members[0]]
        for n in members[1:]:
            assert ctl.layers[n].lora_A is first.lora_A and ctl.layers[n].lora_B is first.lora_B
    distinct = len(ctl.kept) + len(groups)
    assert ctl.adapter_param_count() == distinct * R * WIDTH
    assert count_parameters(model, ctl.head_names)["adapter"] == distinct * R * WIDTH
    # the optimizer holds each tensor once, nothing from the importance phase, fresh state
    opt_params = eng.optimizer.param_groups[0]["params"]
    assert [id(p) for p in opt_params] == [id(p) for p in ctl.optimizer_params()]
    assert len({id(p) for p in opt_params}) == len(opt_params)
    assert not old_params & {id(p) for p in opt_params}
    assert len(eng.optimizer.state) == 0
    # the shared adapter trains from every module that uses it and stays one tensor
    shared = ctl.layers[next(iter(groups.values()))[0]]
    before = shared.lora_B.detach().clone()
    for b in batches[4:]:
        eng.train_step(b)
    assert not torch.equal(before, shared.lora_B.detach())


def test_lora_drop_without_sharing_drops_the_rest():
    cfg = {"steps_per_epoch": 5, "sample_ratio": 0.2, "importance_epochs": 2, "threshold": 0.6, "share": False}
    model, ctl, eng = _engine("lora_drop", cfg, layers=2)
    for b in tiny_batches(3):
        eng.train_step(b)
    dropped = ctl.report()["dropped"]
    assert dropped and set(dropped).isdisjoint(ctl.kept)
    assert sorted(ctl.layers) == sorted(ctl.kept)
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in dropped)
    assert ctl.adapter_param_count() == len(ctl.kept) * R * WIDTH


def test_stratified_sample_keeps_label_shares():
    labels = [0] * 70 + [1] * 30
    idx = stratified_sample(labels, 0.1, seed=1)
    assert len(idx) == 10 and sum(labels[i] for i in idx) == 3
    assert idx == stratified_sample(labels, 0.1, seed=1) != stratified_sample(labels, 0.1, seed=2)
    with pytest.raises(ValueError, match=r"`ratio` must be in \(0, 1\], got 0"):
        stratified_sample(labels, 0)


# ----- ROLoRA -----

ROLORA = {"total_steps": 12, "iterations": 3, "tinit_frac": 0.25, "tfinal_frac": 0.25}


def test_rolora_never_exceeds_the_budget_and_extend_preserves_outputs():
    model, ctl, eng = _engine("rolora", ROLORA, layers=2, steps=12, lr=1e-2)
    n_budget = ctl.n_adapters * R
    assert ctl.budget == n_budget
    probe = tiny_batches(1, seed=9)[0]["input_ids"]
    diffs, sums = [], []
    orig_end = ctl._end_iteration

    def checked_end(optimizer):
        model.eval()
        with torch.no_grad():
            before = model(input_ids=probe).logits
            orig_end(optimizer)
            after = model(input_ids=probe).logits
        model.train()
        diffs.append(float((before - after).abs().max()))

    ctl._end_iteration = checked_end
    orig_after = ctl.after_optimizer_step

    def every_hook(step, optimizer):
        sums.append(sum(layer.r for layer in ctl.layers.values()))
        orig_after(step, optimizer)
        sums.append(sum(layer.r for layer in ctl.layers.values()))

    ctl.after_optimizer_step = every_hook
    for b in tiny_batches(12):
        eng.train_step(b)
        # the strict budget holds after every step, on the tensors themselves
        assert sum(layer.lora_A.shape[0] for layer in ctl.layers.values()) <= n_budget
        counts = count_parameters(model, ctl.head_names)
        assert counts["adapter"] <= n_budget * WIDTH and counts["gates"] <= n_budget
    assert len(sums) == 24 and max(sums) <= n_budget
    assert len(diffs) == 3 and max(diffs) <= 1e-6, diffs
    rep = ctl.report()
    assert rep["iterations_done"] == 3 and rep["prunes"] > 0
    assert rep["ranks"] != {n: R for n in ctl.target_names}  # the configuration really moved
    assert rep["rank_sum"] <= n_budget


def test_rolora_rescale_and_frank_wolfe_steps_follow_algorithm_1():
    _model, ctl, eng = _engine("rolora", ROLORA, layers=2, steps=12, lr=1e-2)
    for b in tiny_batches(12):
        eng.train_step(b)
    prev = [R] * ctl.n_adapters
    mu = 0.5 * R
    for h in ctl.report()["history"]:
        t, trial = h["t"], h["trial"]
        assert h["gamma"] == 1 / t and h["mu"] == pytest.approx(mu)
        assert sum(trial) == round(ctl.n_adapters * mu)  # SPARSIFY met its target exactly
        assert all(s <= r for s, r in zip(trial, prev, strict=True))
        mean = sum(trial) / len(trial)
        raw = [int(s * R / mean + 0.5) for s in trial]
        if sum(raw) <= ctl.budget:
            assert h["rescaled"] == raw
        fw = [int((1 - 1 / t) * r + (1 / t) * s + 0.5) for r, s in zip(prev, h["rescaled"], strict=True)]
        if sum(fw) <= ctl.budget:
            assert h["ranks"] == fw
        assert sum(h["ranks"]) <= ctl.budget
        assert all(r >= s for r, s in zip(h["ranks"], trial, strict=True))  # extend never cuts a survivor
        prev, mu = h["ranks"], mu * (1 + 1 / (3 + t))
    assert [layer.r for layer in ctl.layers.values()] == prev


def test_rolora_extend_carries_survivors_and_adds_lora_initialised_components():
    _model, ctl, eng = _engine("rolora", {**ROLORA, "iterations": 1, "total_steps": 4}, layers=2, steps=4, lr=1e-2)
    batches = tiny_batches(4)
    for b in batches[:3]:
        eng.train_step(b)
    seen = {}
    orig = ctl._extend

    def spy(layer, r_new, mask, score, optimizer):
        keep = mask.nonzero().flatten()
        seen[id(layer)] = (
            layer.lora_A.detach()[keep].clone(),
            optimizer.state[layer.lora_A]["exp_avg"][keep].clone(),
            len(keep),
        )
        orig(layer, r_new, mask, score, optimizer)

    ctl._extend = spy
    eng.train_step(batches[3])
    for layer in ctl.layers.values():
        A_kept, m_kept, k = seen[id(layer)]
        assert torch.equal(layer.lora_A.detach()[:k], A_kept)
        st = eng.optimizer.state[layer.lora_A]
        assert torch.equal(st["exp_avg"][:k], m_kept) and not st["exp_avg"][k:].any()
        assert not layer.lora_B.detach()[:, k:].any() and bool((layer.lora_g.detach()[k:] == 1).all())
        assert st["exp_avg"].shape == layer.lora_A.shape


# ----- AdaLoRA (peft) -----


def test_adalora_rank_pattern_changes_during_a_short_run():
    cfg = {"total_steps": 10, "tinit": 2, "tfinal": 3, "init_r": 6}
    _model, ctl, eng = _engine("adalora", cfg, layers=2, steps=10, lr=1e-2)
    assert ctl.ranks() == {n: 6 for n in ctl.target_names}
    history = []
    for b in tiny_batches(10):
        eng.train_step(b)
        history.append(dict(ctl.ranks()))
    assert history[1] == {n: 6 for n in ctl.target_names}  # step ≤ tinit: no pruning yet
    assert ctl.rank_changes >= 2  # the budget really decayed step by step
    final = ctl.ranks()
    assert sum(final.values()) == ctl.n_adapters * R  # target budget n·r reached
    assert len(set(final.values())) > 1  # a non-uniform pattern, not LoRA in disguise
    for name, layer in ctl.svd_layers().items():  # masked triplets are exactly zero
        assert int((layer.lora_E["default"] != 0).sum()) == final[name]
    assert history[-1] == history[-3]  # fixed in the final phase


def test_adalora_loss_includes_peft_orthogonal_regulariser():
    model, ctl, _eng = _engine("adalora", {"total_steps": 10, "orth_reg_weight": 0.5})
    batch = tiny_batches(1)[0]
    assert ctl.forward_model is ctl.peft and ctl.forward_model is not model
    with torch.no_grad():
        plain = model(**batch).loss
        regularised = ctl.forward_model(**batch).loss
    assert float(regularised - plain) > 0.1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_E" in n for n in trainable) and any(n.startswith("classifier") for n in trainable)


# ----- full fine-tuning -----


def test_full_trains_every_weight_and_exports_the_whole_model(tmp_path):
    model, ctl, eng = _engine("full", {}, steps=4, lr=1e-3)
    assert all(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in ctl.optimizer_params()) == sum(p.numel() for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for b in tiny_batches(4):
        eng.train_step(b)
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        model.bert.encoder.layer[0].attention.self.query.weight,
    )
    out = export_method(model, ctl, tmp_path / "full")
    probe = tiny_batches(1, seed=7)[0]["input_ids"]
    model.eval()
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=probe).logits,
            BertForSequenceClassification.from_pretrained(out).eval()(input_ids=probe).logits,
        )
    assert json.loads((out / "wlora_adapter.json").read_text())["method"] == "full"
    with pytest.raises(ValueError, match="no adapter to export as PEFT LoRA"):
        export_peft_adapter(model, ctl, tmp_path / "nope")
