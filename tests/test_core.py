"""wlora.core on tiny models built in code: injection, family defaults, math, accounting, peft parity."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    BartConfig,
    BartForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import wlora
from wlora.core import LoRALinear, count_parameters, find_targets, optimizer_state_bytes
from wlora.train import Engine, seed_everything

from .conftest import tiny_batches, tiny_bert

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.mark.parametrize(
    ("model_fn", "leaves", "n"),
    [
        (lambda: tiny_bert(layers=6), {"query", "key", "value"}, 18),
        (
            lambda: RobertaForSequenceClassification(
                RobertaConfig(vocab_size=100, max_position_embeddings=64, **SMALL)
            ),
            {"query", "key", "value"},
            6,
        ),
        (
            lambda: DebertaV2ForSequenceClassification(
                DebertaV2Config(vocab_size=100, max_position_embeddings=64, **SMALL)
            ),
            {"query_proj", "key_proj", "value_proj"},
            6,
        ),
        (
            lambda: LlamaForSequenceClassification(
                LlamaConfig(vocab_size=100, num_key_value_heads=2, pad_token_id=0, **SMALL)
            ),
            {"q_proj", "k_proj", "v_proj", "o_proj"},
            8,
        ),
        (
            lambda: BartForSequenceClassification(
                BartConfig(
                    vocab_size=100,
                    d_model=32,
                    encoder_layers=1,
                    decoder_layers=1,
                    encoder_attention_heads=2,
                    decoder_attention_heads=2,
                    encoder_ffn_dim=64,
                    decoder_ffn_dim=64,
                    max_position_embeddings=64,
                )
            ),
            {"q_proj", "k_proj", "v_proj", "out_proj"},
            12,  # encoder self-attn 4 + decoder self-attn 4 + cross-attn 4
        ),
    ],
)
def test_family_defaults(model_fn, leaves, n):
    names = find_targets(model_fn())
    assert len(names) == n
    assert {name.rsplit(".", 1)[-1] for name in names} == leaves


def test_all_linear_skips_head_and_pattern_forms():
    model = tiny_bert(layers=2)
    all_lin = find_targets(model, "all-linear")
    # q, k, v, attn-out, ffn-in, ffn-out per layer; the head (pooler + classifier) is excluded
    assert len(all_lin) == 2 * 6 and not any(n.startswith(("classifier", "bert.pooler")) for n in all_lin)
    assert find_targets(model, ["value"]) == [f"bert.encoder.layer.{i}.attention.self.value" for i in range(2)]
    assert find_targets(model, r".*layer\.1\.attention\.self\.(query|key)") == [
        "bert.encoder.layer.1.attention.self.query",
        "bert.encoder.layer.1.attention.self.key",
    ]


def test_pattern_matching_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match=r"matched no nn.Linear .*look like: bert\.encoder"):
        wlora.build_method("lora", tiny_bert(), {"target_modules": ["q_proj"]})
    with pytest.raises(ValueError, match=r"only nn\.Linear"):
        wlora.build_method("lora", tiny_bert(), {"target_modules": ["attention"]})


def test_head_stays_trainable_and_base_is_frozen():
    model = tiny_bert()
    ctl = wlora.build_method("lora", model, {"r": 4})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # the head: BERT's pooler (dense + tanh on [CLS]) and the classifier it feeds, as RoBERTa's classifier
    assert ctl.head_names == ["bert.pooler", "classifier"]
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight"} <= trainable
    assert all(("lora_" in n) or n.startswith(("classifier", "bert.pooler")) for n in trainable)
    counts = count_parameters(model, ctl.head_names)
    assert counts["adapter"] == 6 * 4 * (32 + 32)
    assert counts["head"] == (32 * 32 + 32) + (32 * 2 + 2)
    assert counts["trainable"] == counts["adapter"] + counts["head"]


def test_forward_is_right_to_left_never_dense_BA():
    d_in, d_out, r, tokens = 64, 48, 4, 5
    layer = LoRALinear(torch.nn.Linear(d_in, d_out), r=r, alpha=8, dropout=0.0)
    x = torch.randn(tokens, d_in)
    with FlopCounterMode(display=False) as fc:
        layer(x)
    base = 2 * tokens * d_in * d_out
    adapter = 2 * tokens * r * (d_in + d_out)  # B (A x); a dense B@A would add 2·d_out·r·d_in
    assert fc.get_total_flops() == base + adapter


@pytest.mark.parametrize("train_mode", [False, True])
def test_lora_equals_peft_lora(train_mode):
    """Same weights ⇒ same logits and gradients as peft's LoRA (dropout masks too, given the RNG)."""
    base = tiny_bert(layers=2)
    ours = copy.deepcopy(base)
    ctl = wlora.build_method("lora", ours, {"r": 4, "alpha": 16, "dropout": 0.1})
    peft_model = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(
            r=4,
            lora_alpha=16,
            lora_dropout=0.1,
            target_modules=["query", "key", "value"],
            modules_to_save=["pooler", "classifier"],
        ),
    )
    g = torch.Generator().manual_seed(3)
    inner = peft_model.base_model.model
    with torch.no_grad():
        for name, layer in ctl.layers.items():
            layer.lora_B.normal_(generator=g)  # non-zero B so the adapter matters
            tgt = inner.get_submodule(name)
            tgt.lora_A["default"].weight.copy_(layer.lora_A)
            tgt.lora_B["default"].weight.copy_(layer.lora_B)
    batch = tiny_batches(1)[0]
    for m in (ours, peft_model):
        m.train(train_mode)
    torch.manual_seed(7)
    out_ours = ours(**batch)
    torch.manual_seed(7)
    out_peft = peft_model(**batch)
    assert torch.allclose(out_ours.logits, out_peft.logits, atol=1e-6, rtol=0)
    out_ours.loss.backward()
    out_peft.loss.backward()
    for name, layer in ctl.layers.items():
        tgt = inner.get_submodule(name)
        assert torch.allclose(layer.lora_A.grad, tgt.lora_A["default"].weight.grad, atol=1e-6)
        assert torch.allclose(layer.lora_B.grad, tgt.lora_B["default"].weight.grad, atol=1e-6)


def test_optimizer_state_bytes_counts_adam_moments():
    model = tiny_bert()
    ctl = wlora.build_method("lora", model, {"r": 2})
    eng = Engine(model, ctl, lr=1e-3, total_steps=5)
    eng.train_step(tiny_batches(1)[0])
    n_params = sum(p.numel() for p in ctl.optimizer_params())
    # exp_avg + exp_avg_sq in fp32 per parameter, plus one scalar step tensor per parameter tensor
    assert optimizer_state_bytes(eng.optimizer) == 2 * 4 * n_params + 4 * len(ctl.optimizer_params())


def test_same_seed_same_results_every_method():
    for slug, cfg in [
        ("lora", {}),
        ("weightlora", {"k": 2, "t": 3}),
        ("weightlora_plus", {"k": 2, "t": 3, "init": "qr"}),
        ("random_select", {"k": 2}),
    ]:
        runs = []
        for _ in range(2):
            model = tiny_bert(seed=5)
            seed_everything(11)
            ctl = wlora.build_method(slug, model, {"r": 4, "dropout": 0.1, **cfg})
            eng = Engine(model, ctl, lr=5e-3, total_steps=8, warmup_steps=2)
            losses = [eng.train_step(b) for b in tiny_batches(6)]
            runs.append((losses, eng.trainable_state(), sorted(ctl.layers)))
        (l1, s1, a1), (l2, s2, a2) = runs
        assert l1 == l2 and a1 == a2, slug
        assert all(torch.equal(s1[k], s2[k]) for k in s1), slug


def test_half_precision_base_gets_fp32_adapters_and_keeps_its_output_dtype():
    model = tiny_bert().to(torch.bfloat16)
    ctl = wlora.build_method("weightlora", model, {"r": 4, "k": 2, "t": 2})
    layer = next(iter(ctl.layers.values()))
    assert layer.lora_A.dtype == layer.lora_B.dtype == torch.float32
    assert layer.base.weight.dtype == torch.bfloat16
    out = model(**tiny_batches(1)[0])
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    assert layer.lora_A.grad.dtype == torch.float32 and layer.gate.grad is not None


def test_parameter_share_is_relative_to_the_base_model():
    model = tiny_bert()
    base_total = sum(p.numel() for p in model.parameters())
    ctl = wlora.build_method("lora", model, {"r": 2})
    counts = count_parameters(model, ctl.head_names)
    assert counts["base_model"] == base_total
    assert counts["trainable_pct"] == pytest.approx(100 * counts["trainable"] / base_total)


def test_non_finite_loss_raises_before_any_update():
    from wlora.train import NonFiniteLossError

    model = tiny_bert()
    ctl = wlora.build_method("weightlora", model, {"r": 2, "k": 2, "t": 3})
    eng = Engine(model, ctl, lr=1e-3, total_steps=5)
    eng.train_step(tiny_batches(1)[0])
    before = eng.trainable_state()
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at optimizer step 2"):
        eng.train_step(tiny_batches(1, seed=2)[0])
    after = eng.trainable_state()
    assert eng.step == 1 and ctl.projections == 0
    assert all(torch.equal(before[k], after[k]) for k in before if k != "classifier.bias")
    assert all(p.grad is None for p in model.parameters())


def test_clipping_bounds_the_update_of_the_live_parameters():
    model = tiny_bert()
    ctl = wlora.build_method("weightlora", model, {"r": 2, "k": 2, "t": 2})
    eng = Engine(model, ctl, lr=1e-3, total_steps=6, max_grad_norm=1e-3)
    norms = []
    orig = ctl.before_optimizer_step

    def spy(step, lr_scale=1.0):
        grads = [p.grad for g in eng.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        orig(step, lr_scale)

    ctl.before_optimizer_step = spy
    for b in tiny_batches(4):  # crosses selection at step 2: clipping then covers the survivors only
        eng.train_step(b)
    assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-5)
