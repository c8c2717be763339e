"""Find target linears in a Hugging Face model by name pattern and wrap them in :class:`LoRALinear`.

Pattern semantics follow peft so configs transfer unchanged:

* a sequence of names: a module matches if its full name equals an entry or ends with ``"." + entry``;
* a single string: a regular expression that must match the full module name;
* ``"all-linear"``: every ``nn.Linear`` except the task head(s) and the LM output layer;
* ``None``: the default for the model family (``model.config.model_type``), see :data:`FAMILY_TARGETS`;
  for a family not in the table, the attention projections found from the model's structure
  (:func:`discover_attention_targets`).

The default rule for an unlisted architecture: a layer is an attention projection when it is a leaf
``nn.Linear`` (or another projection layer: ``transformers``' ``Conv1D``, ``nn.Conv1d``) inside a block
whose name marks attention (a path component containing ``att``: ``attention``, ``attn``, ``self_attn``,
``SelfAttention`` …) and its own name marks a role — query, key, value (``q``, ``query``, ``q_proj``,
``q_lin``, ``q_head``, ``wq`` …), a fused projection (``qkv``, ``Wqkv``, ``query_key_value``, ``c_attn``,
``kv``) or the output projection (``o``, ``o_proj``, ``out_proj``, ``dense``, ``post_proj``, ``Wo`` …).
Adapters go on the query/key/value projections (separate or fused), as the table does for every
encoder family; output projections are reported but left out. The choice and its reason are printed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence

from torch import nn

from wlora.core.layer import LoRALinear

#: Default adapter targets per architecture family (``config.model_type``).
FAMILY_TARGETS: dict[str, tuple[str, ...]] = {
    # BERT-like encoders (MiniLM is a BERT): self-attention q/k/v.
    "bert": ("query", "key", "value"),
    "roberta": ("query", "key", "value"),
    "xlm-roberta": ("query", "key", "value"),
    "electra": ("query", "key", "value"),
    "camembert": ("query", "key", "value"),
    "distilbert": ("q_lin", "k_lin", "v_lin"),
    # DeBERTa(V3): disentangled-attention projections.
    "deberta": ("query_proj", "key_proj", "value_proj"),
    "deberta-v2": ("query_proj", "key_proj", "value_proj"),
    # Decoder-only and encoder-decoder families: all attention projections.
    "bart": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "mbart": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "t5": ("q", "k", "v", "o"),
}

#: Roles of attention projections by (lower-cased) layer name; see the module doc.
PROJECTION_ROLES: dict[str, re.Pattern[str]] = {
    "qkv": re.compile(r"w?qkv(_?(proj|lin|linear))?|query_key_value|c_attn|in_proj"),
    "kv": re.compile(r"w?kv(_?(proj|lin|linear))?|key_value"),
    "query": re.compile(r"(w|to_)?q|query|(q|query)_?(proj|lin|linear|head)"),
    "key": re.compile(r"(w|to_)?k|key|(k|key)_?(proj|lin|linear|head)"),
    "value": re.compile(r"(w|to_)?v|value|(v|value)_?(proj|lin|linear|head)"),
    "output": re.compile(r"(w|to_)?o|out|(o|out|output)_?(proj|lin|linear)|dense|post_proj|c_proj|proj"),
}
#: The roles that take adapters by default (the output projection is reported, not chosen).
DEFAULT_ROLES: tuple[str, ...] = ("qkv", "kv", "query", "key", "value")
_ATTENTION_BLOCK = re.compile(r"att", re.IGNORECASE)
#: Projection layers that are not ``nn.Linear`` (found, so that the error can name them).
_OTHER_PROJECTIONS = ("Conv1D", "Conv1d")

#: Top-level task heads that stay fully trainable (peft's ``modules_to_save`` for SEQ_CLS / QA).
HEAD_NAMES: tuple[str, ...] = ("classifier", "classification_head", "score", "qa_outputs")

#: The pooling layer that feeds a sequence classifier (BERT/ALBERT ``<base>.pooler``, DeBERTa ``pooler``,
#: DistilBERT ``pre_classifier``, ModernBERT ``head``): part of the classification head, so it trains with
#: it. RoBERTa/ELECTRA keep the same dense layer inside ``classifier`` and peft trains it there; for
#: BERT-style models peft's default ``modules_to_save`` leaves it frozen — pretrained for an unrelated
#: objective (NSP) or not in the checkpoint at all (DeBERTa-v3: random) — which on MiniLM kept STS-B at
#: Pearson 0.03 where a trainable pooler gave 0.78 with the same budget. Deliberate deviation from peft's
#: default; pass ``head_modules`` to choose otherwise.
POOLER_NAMES: tuple[str, ...] = ("pooler", "pre_classifier", "head")

_OUTPUT_LAYER_NAMES = ("lm_head",)

TargetSpec = str | Sequence[str] | None


def _model_type(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if cfg is not None and getattr(cfg, "is_encoder_decoder", False) and model_type == "encoder-decoder":
        # A warm-started EncoderDecoderModel: use the encoder's family (BERT → query/key/value).
        model_type = getattr(getattr(cfg, "encoder", None), "model_type", model_type)
    return model_type


def default_targets(model: nn.Module) -> tuple[str, ...]:
    """The default targets for ``model``: the family's from :data:`FAMILY_TARGETS`, else the attention
    projections found by :func:`discover_attention_targets` (full module names; the choice is printed).

    Raises:
        ValueError: no attention projection was found, or one found is not an ``nn.Linear``.
    """
    model_type = _model_type(model)
    if model_type in FAMILY_TARGETS:
        return FAMILY_TARGETS[model_type]
    heads = head_module_names(model)
    roles = discover_attention_targets(model, exclude=heads)
    chosen = [n for role in DEFAULT_ROLES for n in roles.get(role, [])]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    chosen.sort(key=order.__getitem__)
    hint = "pass target_modules explicitly (names, a regex, or 'all-linear')"
    if not chosen:
        raise ValueError(
            f"no default `target_modules` for model_type={model_type!r}: found no query/key/value projection "
            f"inside an attention block; {hint}. Known families: {sorted(FAMILY_TARGETS)}"
        )
    modules = dict(model.named_modules())
    odd = [f"{n} ({type(modules[n]).__name__})" for n in chosen if not isinstance(modules[n], nn.Linear)]
    if odd:
        raise ValueError(
            f"model_type={model_type!r}: the attention projections {odd[:4]}{' …' if len(odd) > 4 else ''} are not "
            "nn.Linear (e.g. GPT-2's Conv1D stores its weight transposed), and adapters wrap nn.Linear only; "
            f"{hint} naming nn.Linear layers"
        )
    _announce(model_type, roles, chosen)
    return tuple(chosen)


def discover_attention_targets(model: nn.Module, exclude: Sequence[str] = ()) -> dict[str, list[str]]:
    """Role (see :data:`PROJECTION_ROLES`) → full names of the projection layers in attention blocks.

    Args:
        model: any ``torch`` model; names are read from ``model.named_modules()``.
        exclude: module names (task heads) whose sub-modules are skipped.
    """
    out: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if not name or not (isinstance(module, nn.Linear) or type(module).__name__ in _OTHER_PROJECTIONS):
            continue
        if any(name == h or name.startswith(h + ".") for h in exclude):
            continue
        *path, leaf = name.split(".")
        if not any(_ATTENTION_BLOCK.search(part) for part in path):
            continue
        for role, pattern in PROJECTION_ROLES.items():
            if pattern.fullmatch(leaf.lower()):
                out.setdefault(role, []).append(name)
                break
    return out


_announced: set[tuple[str | None, tuple[str, ...]]] = set()


def _announce(model_type: str | None, roles: dict[str, list[str]], chosen: list[str]) -> None:
    """Print once per model type which modules the default chose and why."""
    key = (model_type, tuple(chosen))
    if key in _announced:
        return
    _announced.add(key)

    def leaves(names: Iterable[str]) -> str:
        return ", ".join(sorted({n.rsplit(".", 1)[-1] for n in names}))

    found = "; ".join(f"{role}: {leaves(names)}" for role, names in roles.items())
    skipped = roles.get("output", [])
    print(
        f"wlora: model_type={model_type!r} is not in the family table; default target_modules = the "
        f"{len(chosen)} query/key/value projections in attention blocks ({leaves(chosen)}), e.g. {chosen[0]}. "
        f"Found {found}."
        + (f" Output projections ({leaves(skipped)}) are left out, as for the listed encoders." if skipped else "")
        + " Pass target_modules to choose otherwise.",
        file=sys.stderr,
        flush=True,
    )


def head_module_names(model: nn.Module, heads: Sequence[str] | None = None) -> list[str]:
    """Names of the task head modules that stay trainable (auto-detected when ``heads`` is None)."""
    names = dict(model.named_modules())
    if heads is not None:
        missing = [h for h in heads if h not in names]
        if missing:
            raise ValueError(f"`head_modules` {missing} not found in {type(model).__name__}")
        return list(heads)
    found = []
    for name in names:
        leaf = name.rsplit(".", 1)[-1]
        # Top-level head of a *For* model (e.g. "classifier"), not a nested module of the same name.
        if leaf in HEAD_NAMES and "." not in name:
            found.append(name)
    if found and type(model).__name__.endswith("ForSequenceClassification"):
        prefix = getattr(model, "base_model_prefix", "")
        for leaf in POOLER_NAMES:
            for name in (leaf, f"{prefix}.{leaf}"):
                if name in names and any(True for _ in names[name].parameters()):
                    found.insert(0, name)
                    break
    return found


def _matches(name: str, spec: str | Sequence[str]) -> bool:
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == t or name.endswith("." + t) for t in spec)


def find_targets(model: nn.Module, target_modules: TargetSpec = None) -> list[str]:
    """Full names of the ``nn.Linear`` modules selected by ``target_modules``, in model order.

    Raises:
        ValueError: if the pattern selects nothing (with a sample of the linear names that exist), or
            matches a module that is not an ``nn.Linear``.
    """
    heads = set(head_module_names(model))
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]

    def in_head(name: str) -> bool:
        return any(name == h or name.startswith(h + ".") for h in heads)

    if target_modules == "all-linear":
        out = [n for n in linear_names if not in_head(n) and n.rsplit(".", 1)[-1] not in _OUTPUT_LAYER_NAMES]
        spec_desc = "'all-linear'"
    else:
        spec = default_targets(model) if target_modules is None else target_modules
        spec_desc = repr(spec)
        out = []
        for n, m in model.named_modules():
            if n and _matches(n, spec) and not in_head(n):
                if isinstance(m, LoRALinear):
                    raise ValueError(f"module {n!r} already has a LoRA adapter")
                if not isinstance(m, nn.Linear):
                    raise ValueError(
                        f"target_modules={spec_desc} matched {n!r} of type {type(m).__name__}; "
                        "only nn.Linear layers can take an adapter"
                    )
                out.append(n)
    if not out:
        sample = ", ".join(linear_names[:8]) + (" ..." if len(linear_names) > 8 else "")
        raise ValueError(
            f"target_modules={spec_desc} matched no nn.Linear in {type(model).__name__}; "
            f"its linear layers look like: {sample}"
        )
    return out


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def inject_adapters(
    model: nn.Module,
    names: Iterable[str],
    *,
    r: int,
    alpha: float,
    dropout: float,
    gate: bool = False,
    layer_cls: type[LoRALinear] = LoRALinear,
) -> dict[str, LoRALinear]:
    """Wrap each named linear in a :class:`LoRALinear` (or the subclass ``layer_cls``), in place.
    Returns ``{name: layer}`` in order."""
    layers: dict[str, LoRALinear] = {}
    for name in names:
        parent, child = _parent(model, name)
        layer = layer_cls(getattr(parent, child), r=r, alpha=alpha, dropout=dropout, gate=gate)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def remove_adapter(model: nn.Module, name: str) -> nn.Linear:
    """Put the base linear back in place of the adapter ``name``; the adapter's tensors are released."""
    parent, child = _parent(model, name)
    layer = getattr(parent, child)
    if not isinstance(layer, LoRALinear):
        raise ValueError(f"{name!r} holds no adapter")
    setattr(parent, child, layer.base)
    return layer.base


def freeze_base(model: nn.Module, trainable_heads: Sequence[str]) -> None:
    """Freeze everything except adapters (``lora_*``/``gate``) and the task head modules."""
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            for p in m.adapter_parameters():
                p.requires_grad_(True)
    for h in trainable_heads:
        for p in model.get_submodule(h).parameters():
            p.requires_grad_(True)
