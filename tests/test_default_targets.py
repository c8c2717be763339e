"""Default adapter targets for architectures outside the family table, found from the module structure.

Each model is built from its config in code (hidden 32, 2 layers), with a different attention naming
scheme; the test checks the chosen modules exactly and that a few WeightLoRA training steps run.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from wlora import build_method
from wlora.core.inject import FAMILY_TARGETS, default_targets, discover_attention_targets
from wlora.engine import Engine

VOCAB = 100
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _configs():
    small = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    return {
        # attention.attn.{q,k,v,o}
        "mpnet": (
            T.MPNetConfig(**small, intermediate_size=37, **IDS),
            "mpnet.encoder.layer.{i}.attention.attn.{p}",
            "qkv",
        ),
        # attention.{q_head,k_head,v_head,post_proj}
        "funnel": (
            T.FunnelConfig(vocab_size=VOCAB, d_model=32, n_head=2, d_head=16, d_inner=37, block_sizes=[1, 1]),
            "funnel.encoder.blocks.{i}.0.attention.{p}_head",
            "qkv",
        ),
        # attn.{Wqkv,Wo}: one fused projection per layer
        "modernbert": (
            T.ModernBertConfig(**small, intermediate_size=37, cls_token_id=1, sep_token_id=2, **IDS),
            "model.layers.{i}.attn.Wqkv",
            None,
        ),
        # attention.{query_key_value,dense}
        "gpt_neox": (
            T.GPTNeoXConfig(**small, intermediate_size=37, **IDS),
            "gpt_neox.layers.{i}.attention.query_key_value",
            None,
        ),
        # self_attn.{q_proj,k_proj,v_proj,out_proj}
        "opt": (
            T.OPTConfig(**small, ffn_dim=37, word_embed_proj_dim=32, **IDS),
            "model.decoder.layers.{i}.self_attn.{p}_proj",
            "kvq",  # model order: OPT declares k_proj, v_proj, q_proj
        ),
        # attention.{query,key,value,dense} inside albert_layer_groups (one shared layer group)
        "albert": (
            T.AlbertConfig(**small, intermediate_size=37, embedding_size=16, **IDS),
            "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.{p}",
            ("query", "key", "value"),
        ),
    }


def _expected(pattern: str, parts, layers: range) -> list[str]:
    if parts is None:
        return [pattern.format(i=i) for i in layers]
    return [pattern.format(i=i, p=p) for i in layers for p in parts]


def _model(config):
    torch.manual_seed(0)
    config.num_labels = 2
    return T.AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("arch", list(_configs()))
def test_default_targets_found_and_trainable(arch, capsys):
    config, pattern, parts = _configs()[arch]
    assert config.model_type not in FAMILY_TARGETS
    model = _model(config)
    layers = range(1) if arch == "albert" else range(2)
    want = _expected(pattern, parts, layers)
    assert list(default_targets(model)) == want
    said = capsys.readouterr().err
    assert f"model_type={config.model_type!r}" in said and want[0] in said

    ctl = build_method("weightlora", model, {"r": 2, "k": 1, "t": 2, "dropout": 0.0})
    assert list(ctl.layers) == want
    assert ctl.n_adapters == len(want)
    engine = Engine(model, ctl, lr=1e-2, total_steps=4)
    gen = torch.Generator().manual_seed(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = []
    for _ in range(4):
        batch = {
            "input_ids": torch.randint(3, VOCAB, (4, 12), generator=gen),
            "attention_mask": torch.ones(4, 12, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=gen),
        }
        losses.append(engine.train_step(batch))
    assert all(torch.isfinite(torch.tensor(losses)))
    # T = 2 gate steps, then the n − K zero-gated adapters are gone: K = 1 left.
    assert len(ctl.active_adapters) == 1
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert any("lora_" in n for n in moved), moved


def test_output_projections_found_but_not_chosen():
    config, _, _ = _configs()["mpnet"]
    model = _model(config)
    roles = discover_attention_targets(model)
    assert roles["output"] == [f"mpnet.encoder.layer.{i}.attention.attn.o" for i in range(2)]
    assert not any(n.endswith(".o") for n in default_targets(model))


def test_conv1d_projection_gets_a_clear_error():
    gpt2 = _model(T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, **IDS))
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_attn \(Conv1D\).*not nn\.Linear"):
        default_targets(gpt2)
    # The same error when a method is built on it, before any weight changes.
    with pytest.raises(ValueError, match=r"c_attn \(Conv1D\).*pass target_modules explicitly"):
        build_method("lora", gpt2, {"r": 2})


def test_torch_conv1d_projection_gets_a_clear_error():
    cfg = T.SqueezeBertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        embedding_size=32,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"attention\.query \(Conv1d\)"):
        default_targets(_model(cfg))


def test_family_table_still_wins():
    cfg = T.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    assert default_targets(_model(cfg)) == FAMILY_TARGETS["bert"]


@pytest.mark.parametrize(
    "config",
    [
        T.BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
        ),
        T.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37),
        T.DebertaV2Config(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
        ),
        T.ElectraConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
        ),
    ],
    ids=lambda c: c.model_type,
)
def test_discovery_agrees_with_the_table_on_listed_encoders(config):
    """The rule for unlisted models picks exactly what the table lists for the encoder families."""
    model = _model(config)
    roles = discover_attention_targets(model)
    chosen = {n.rsplit(".", 1)[-1] for role in ("query", "key", "value") for n in roles.get(role, [])}
    assert chosen == set(FAMILY_TARGETS[config.model_type])
    assert sum(len(roles.get(r, [])) for r in ("query", "key", "value")) == 3 * 2
