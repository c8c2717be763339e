"""Save a trained adapter as a standard PEFT LoRA adapter directory.

Works for every method after selection / growth: only the surviving modules go into
``target_modules``, per-module ranks into ``rank_pattern``, and each module's effective scale
(``s · ω`` for WeightLoRA, a kept pre-growth scale for WeightLoRA+) is folded into ``B`` so that
``peft``'s ``lora_alpha / r_i`` reproduces it. The task head is saved through ``modules_to_save``.
Load with ``PeftModel.from_pretrained(base_model, out_dir)``.

What each module contributes comes from ``method.export_factors()`` (``ΔW x = c · B' A x``): ROLoRA
folds its rank gates ``g`` into ``B'`` and leaves out pruned (``g_j = 0``) components; AdaLoRA (peft)
folds ``E`` and ``α / ranknum`` and keeps its unmasked triplets, so both export per-module ranks;
LoRA-drop writes its shared adapter out once per module that uses it, so the export is plain LoRA.
Full fine-tuning has no adapter: :func:`export_method` saves the whole model with ``save_pretrained``.

The directory is written by peft itself (``save_pretrained``), so its layout is whatever the
installed peft reads. This builds the peft model on a deep copy of the base, so exporting briefly
needs a second copy of the model in memory. A ``wlora_adapter.json`` sidecar records the method, selection and ranks.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, TaskType, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from wlora.core.controller import Controller
from wlora.core.layer import LoRALinear

_TASK_BY_CLASS_SUFFIX = {
    "ForSequenceClassification": TaskType.SEQ_CLS,
    "ForQuestionAnswering": TaskType.QUESTION_ANS,
    "ForTokenClassification": TaskType.TOKEN_CLS,
    "ForConditionalGeneration": TaskType.SEQ_2_SEQ_LM,
    "ForCausalLM": TaskType.CAUSAL_LM,
}


def infer_task_type(model: nn.Module) -> TaskType | None:
    name = type(model).__name__
    return next((t for suffix, t in _TASK_BY_CLASS_SUFFIX.items() if name.endswith(suffix)), None)


def _unwrapped_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every adapter (ours or a peft tuner layer) replaced by its base linear."""
    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        if isinstance(module, LoRALinear):
            base = module.base
        elif isinstance(module, BaseTunerLayer):  # peft-injected (AdaLoRA's SVDLinear)
            base = module.get_base_layer()
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, child, base)
    if "peft_config" in vars(clone):  # left on the model by an in-place peft tuner
        del clone.peft_config
    return clone


@torch.no_grad()
def export_peft_adapter(
    model: nn.Module,
    method: Controller,
    out_dir: str | Path,
    *,
    base_model_name_or_path: str | None = None,
    task_type: TaskType | str | None = "auto",
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``method``'s live adapters (and the task head) as a PEFT LoRA adapter in ``out_dir``.

    Args:
        model: the trained model (adapters injected by ``method``).
        method: its controller (after selection / growth, or at any point for plain LoRA).
        out_dir: destination directory (created).
        base_model_name_or_path: recorded in ``adapter_config.json``; defaults to the model's
            ``config._name_or_path``.
        task_type: peft task type; ``"auto"`` infers it from the model class name.
        extra_metadata: merged into the ``wlora_adapter.json`` sidecar.

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    if method.export_kind != "peft_lora":
        raise ValueError(
            f"method {method.slug!r} has no adapter to export as PEFT LoRA; use export_method "
            f"(it saves the whole model with save_pretrained)"
        )
    # Per module (A, B', c) with ΔW x = c·B'A x (gates, AdaLoRA's singular values and scales folded;
    # LoRA-drop's shared adapter once per module that uses it).
    factors = {n: f for n, f in method.export_factors().items() if f[0].shape[0] > 0}
    if not factors:
        raise ValueError("the method has no active adapter to export")
    cfg = method.config
    if task_type == "auto":
        task_type = infer_task_type(model)
    # rank_pattern keys are regexes in peft; escape the full module names so each matches one module.
    rank_pattern = {re.escape(n): int(f[0].shape[0]) for n, f in factors.items()}
    peft_cfg = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(factors),
        rank_pattern=rank_pattern,
        modules_to_save=list(method.head_names) or None,
        task_type=task_type,
        base_model_name_or_path=base_model_name_or_path
        or getattr(getattr(model, "config", None), "_name_or_path", None),
    )
    peft_model = get_peft_model(_unwrapped_copy(model), peft_cfg)
    inner = peft_model.base_model.model
    for name, (lora_A, lora_B, effective) in factors.items():
        target = inner.get_submodule(name)
        peft_scale = target.scaling["default"]
        if target.r["default"] != lora_A.shape[0]:
            raise RuntimeError(f"peft gave {name} rank {target.r['default']}, expected {lora_A.shape[0]}")
        # Fold our effective scale (incl. a frozen gate) into B: peft computes scaling · B A x.
        target.lora_A["default"].weight.copy_(lora_A)
        target.lora_B["default"].weight.copy_(lora_B * (effective / peft_scale))
    for head in method.head_names:
        wrapper = inner.get_submodule(head)
        wrapper.modules_to_save["default"].load_state_dict(model.get_submodule(head).state_dict())
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    meta = {
        "method": method.slug,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.to_dict().items()},
        "report": method.report(),
        **(extra_metadata or {}),
    }
    (out / "wlora_adapter.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


@torch.no_grad()
def export_full_model(
    model: nn.Module, method: Controller, out_dir: str | Path, *, extra_metadata: dict[str, Any] | None = None
) -> Path:
    """Save the whole fine-tuned model with ``save_pretrained`` (full fine-tuning has no adapter).

    Loads with ``AutoModelFor….from_pretrained(out_dir)``; a ``wlora_adapter.json`` sidecar records
    the method and its report like the adapter exports.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    meta = {
        "method": method.slug,
        "config": method.config.to_dict(),
        "report": method.report(),
        **(extra_metadata or {}),
    }
    (out / "wlora_adapter.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def export_method(model: nn.Module, method: Controller, out_dir: str | Path, **kwargs: Any) -> Path:
    """Export any method the way it supports: a PEFT LoRA adapter (:func:`export_peft_adapter`) for
    every adapter method, the whole model (:func:`export_full_model`) for ``full``."""
    if method.export_kind == "full_model":
        return export_full_model(model, method, out_dir, extra_metadata=kwargs.get("extra_metadata"))
    return export_peft_adapter(model, method, out_dir, **kwargs)
