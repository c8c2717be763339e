"""One training run of any method on any task: ``(TrainConfig, data, report callback) → RunResult``.

    python -m wlora.train --method weightlora --task rte --model PATH_OR_HUB_ID --data-dir PATH

Pieces, in the order a run uses them:

* :class:`TrainConfig` — every knob of a run (frozen, validated; unknown keys raise). The method's
  own fields (``r``, ``k``, ``t``, ``lr_w`` …) live in ``method_config``; :meth:`TrainConfig.from_flat`
  splits a flat dict (a Tune config) into the two.
* :func:`prepare_run` — resolves the model (local folder, or hub id → local snapshot), reads and
  tokenizes the task data once (cached), and checks the method config against the model (e.g. K ≤ n)
  before any training. The result is picklable: a sweep calls it once on the driver.
* :func:`run_training` — AdamW with the linear warm-up schedule (:class:`wlora.engine.Engine`),
  gradient accumulation, mixed precision and device placement via accelerate, evaluation every
  ``eval_every`` optimizer steps or every epoch, ``report(metrics, checkpoint_dir)`` after each
  evaluation, resume from a checkpoint directory, and a ``failed`` status (no exception) when the
  loss turns NaN/inf.

This module never imports ray or mlflow: the sweep layer plugs Tune in through ``report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from wlora.core.accounting import count_parameters
from wlora.core.controller import Controller
from wlora.data.metrics import MAIN_METRIC, glue_metrics, rouge_metrics, squad_metrics
from wlora.data.squad import decode_answers
from wlora.data.tasks import TaskData, collate, list_tasks, prepare_task_data, task_kind
from wlora.engine import Engine, NonFiniteLossError, seed_everything
from wlora.registry import METHODS, get_method, make_config

__all__ = [
    "OBJECTIVE",
    "Engine",
    "NonFiniteLossError",
    "RunAssets",
    "RunResult",
    "TrainConfig",
    "build_run",
    "evaluate",
    "export_from_checkpoint",
    "main",
    "prepare_run",
    "run_training",
    "seed_everything",
]

#: The metric every task reports as its objective (higher is better for every task).
OBJECTIVE = f"eval_{MAIN_METRIC}"
#: The model used when none is given: small, the same architecture family as the papers' encoders.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHECKPOINT_FILE = "state.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs. Field names are the CLI flags (``--warmup-steps``) and Tune keys."""

    method: str = "lora"
    """Method slug (``wlora.registry.METHODS``)."""
    task: str = "sst2"
    """GLUE task (sst2, cola, mrpc, rte, stsb, qnli, qqp, mnli), squad, squad_v2, xsum or cnn_dailymail."""
    model: str = DEFAULT_MODEL
    """Hugging Face hub id or local model folder."""
    data_dir: str | None = None
    """Folder holding glue/, squad/, xsum/, cnn_dailymail/; None = read the hub datasets."""
    train_file: str | None = None
    """QA / summarisation: read the training split from this file instead."""
    eval_file: str | None = None
    """QA / summarisation: read the evaluation split from this file instead."""
    eval_split: str = "dev"
    """dev (MNLI: matched; also dev_mismatched), or test for summarisation."""
    method_config: Mapping[str, Any] = field(default_factory=dict)
    """The method's config fields (r, alpha, k, t, lr_w, …); validated by the method's config class."""
    lr: float = 5e-4
    """Peak AdamW learning rate."""
    warmup_steps: int = 0
    """Linear warm-up steps (then linear decay to 0)."""
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm; None = no clipping."""
    batch_size: int = 32
    """Examples per optimizer step and device = batch_size × grad_accum."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    eval_batch_size: int = 64
    epochs: float = 3.0
    """Training length in epochs (fractions allowed); ignored when max_steps is set."""
    max_steps: int | None = None
    """Training length in optimizer steps."""
    eval_every: int | None = None
    """Evaluate every N optimizer steps; None = at the end of every epoch (and always at the end)."""
    max_length: int = 128
    """Truncation length of inputs (QA: window length; seq2seq: source length)."""
    max_target_length: int = 64
    """Seq2seq: target length (training) and generated tokens (evaluation)."""
    doc_stride: int = 64
    """QA: overlap of consecutive context windows, in tokens."""
    source_prefix: str | None = None
    """Seq2seq: input prefix; None = "summarize: " for T5 models, "" otherwise."""
    num_beams: int = 1
    """Seq2seq: beams at evaluation."""
    train_subset: int | None = None
    """Keep this many training examples (drawn with data_seed)."""
    eval_subset: int | None = None
    """Keep this many evaluation examples (drawn with data_seed)."""
    data_seed: int = 0
    """Seed of the subset draws (kept apart from `seed` so all trials of a sweep see the same data)."""
    seed: int = 0
    """Seed of the run: head init, adapter init, dropout, batch order."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    cpu: bool = False
    """Train on CPU even when a GPU is available."""
    cache_dir: str | None = None
    """Tokenized-feature cache; None = $WLORA_CACHE_DIR or ~/.cache/wlora."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_config", dict(self.method_config or {}))
        get_method(self.method)  # raises for an unknown slug
        task_kind(self.task)  # raises for an unknown task
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), "lr", "a positive number"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "> 0 or None"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.grad_accum >= 1, "grad_accum", ">= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size", ">= 1"),
            (self.epochs > 0, "epochs", "> 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps", ">= 1 or None"),
            (self.eval_every is None or self.eval_every >= 1, "eval_every", ">= 1 or None"),
            (self.max_length > 8, "max_length", "> 8"),
            (self.max_target_length >= 1, "max_target_length", ">= 1"),
            (
                task_kind(self.task) != "qa" or 0 <= self.doc_stride < self.max_length,
                "doc_stride",
                "in [0, max_length) for QA",
            ),
            (self.num_beams >= 1, "num_beams", ">= 1"),
            (self.train_subset is None or self.train_subset >= 1, "train_subset", ">= 1 or None"),
            (self.eval_subset is None or self.eval_subset >= 1, "eval_subset", ">= 1 or None"),
            (self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision", "one of no, bf16, fp16"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"`{name}` must be {want}, got {getattr(self, name)!r}")
        make_config(self.method, self._method_values(None))  # the method's own validation

    # ----- construction -----

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "method_config"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From a dict with ``method_config`` nested; unknown keys raise ``ValueError``."""
        unknown = sorted(set(values) - {*cls.field_names(), "method_config"})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid: {cls.field_names()}")
        return cls(**values)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> TrainConfig:
        """From a flat dict (a Tune config): TrainConfig fields by name, every other key goes to the
        method's config — whose validation rejects keys it does not know."""
        own = set(cls.field_names())
        train = {k: v for k, v in flat.items() if k in own}
        method_cfg = {k: v for k, v in flat.items() if k not in own}
        if "method_config" in flat:
            raise ValueError("`method_config` cannot appear in a flat config; give its fields at the top level")
        return cls(**train, method_config=method_cfg)

    def to_flat(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.field_names()}
        overlap = set(out) & set(self.method_config)
        if overlap:
            raise ValueError(f"method config keys {sorted(overlap)} clash with TrainConfig fields")
        return {**out, **self.method_config}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ----- derived -----

    def _method_values(self, run_info: Mapping[str, Any] | None) -> dict[str, Any]:
        """The method config, with run facts (total steps …) filled in where the method declares them."""
        values = dict(self.method_config)
        fields = {f.name for f in dataclasses.fields(get_method(self.method).config_cls)}
        for key, value in (run_info or {}).items():
            if key in fields and values.get(key) is None:
                values[key] = value
        return values


@dataclass
class RunAssets:
    """What :func:`prepare_run` resolved once: a local model folder and the tokenized data."""

    model_path: str
    data: TaskData
    n_adapters: int | None = None
    model_type: str = ""
    staged_model: Any = None
    """Set by a cluster sweep: an object whose ``local_path()`` gives this node's copy of ``model_path``
    (the folder exists on the driver only); None when every process sees ``model_path``."""

    def on_this_node(self) -> RunAssets:
        """These assets with ``model_path`` valid on the calling node (staging the folder if needed)."""
        if self.staged_model is None or Path(self.model_path).is_dir():
            return self
        return dataclasses.replace(self, model_path=str(self.staged_model.local_path()), staged_model=None)


@dataclass
class RunResult:
    status: Literal["completed", "failed"]
    error: str | None
    metrics: dict[str, float]
    """The last evaluation (plus training stats)."""
    history: list[dict[str, float]]
    method_report: dict[str, Any]
    steps: int
    total_steps: int
    train_time_s: float

    @property
    def best(self) -> dict[str, float]:
        """The evaluation with the highest objective."""
        return max(self.history, key=lambda m: m[OBJECTIVE]) if self.history else {}

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "best": self.best}


# ----- model and data -----


def resolve_model(name_or_path: str) -> str:
    """A local folder as is; a hub id → its local snapshot (downloaded once, then from the HF cache)."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser().resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder not found: {name_or_path}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name_or_path,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "spiece*", "*.bin"],
        )
    except Exception as e:  # network, auth, missing repo: one clear message
        raise FileNotFoundError(
            f"model {name_or_path!r} is not a local folder and could not be fetched from the hub: {e}"
        ) from None


def _load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def _is_t5(model_path: str) -> bool:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path).model_type in ("t5", "mt5", "umt5")


def prepare_run(cfg: TrainConfig) -> RunAssets:
    """Resolve the model, prepare the data and validate the method against the model (see module doc)."""
    model_path = resolve_model(cfg.model)
    tokenizer = _load_tokenizer(model_path)
    kind = task_kind(cfg.task)
    prefix = cfg.source_prefix
    if prefix is None:
        prefix = "summarize: " if kind == "seq2seq" and _is_t5(model_path) else ""
    data = prepare_task_data(
        cfg.task,
        tokenizer,
        data_dir=cfg.data_dir,
        train_file=cfg.train_file,
        eval_file=cfg.eval_file,
        eval_split=cfg.eval_split,
        max_length=cfg.max_length,
        max_target_length=cfg.max_target_length,
        doc_stride=cfg.doc_stride,
        source_prefix=prefix,
        train_subset=cfg.train_subset,
        eval_subset=cfg.eval_subset,
        data_seed=cfg.data_seed,
        cache_dir=cfg.cache_dir,
    )
    assets = RunAssets(model_path=model_path, data=data)
    # Check the method config against the real module structure (e.g. K ≤ n) on a weightless copy.
    steps_per_epoch, total = _steps(cfg, len(data.train))
    with torch.device("meta"):
        model = _build_model(assets, cfg.seed, meta=True)
    method = _build_method(cfg, model, assets, total_steps=total, steps_per_epoch=steps_per_epoch)
    assets.n_adapters = method.n_adapters
    assets.model_type = getattr(model.config, "model_type", "")
    return assets


def _build_model(assets: RunAssets, seed: int, meta: bool = False) -> nn.Module:
    """The task model; heads (and a warm-started decoder's cross-attention) are initialised from ``seed``."""
    from transformers import (
        AutoConfig,
        AutoModelForQuestionAnswering,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        EncoderDecoderConfig,
        EncoderDecoderModel,
    )
    from transformers.utils import logging

    logging.set_verbosity_error()  # "some weights newly initialized" is expected for heads
    path, data = assets.model_path, assets.data
    seed_everything(seed)
    if data.kind in ("classification", "regression"):
        kw = {"num_labels": data.num_labels}
        if data.kind == "regression":
            kw["problem_type"] = "regression"
        if meta:
            return AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path, **kw))
        return AutoModelForSequenceClassification.from_pretrained(path, **kw)
    if data.kind == "qa":
        if meta:
            return AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(path))
        return AutoModelForQuestionAnswering.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    if config.is_encoder_decoder:  # BART, T5, Pegasus …: the documented path for summarisation
        return AutoModelForSeq2SeqLM.from_config(config) if meta else AutoModelForSeq2SeqLM.from_pretrained(path)
    # An encoder-only checkpoint (e.g. BERT/MiniLM): warm-start an encoder-decoder from it ("BERT2BERT",
    # Rothe et al. 2020). Its decoder's cross-attention is new, randomly initialised weights.
    tok = _load_tokenizer(path)
    if meta:
        ed = EncoderDecoderConfig.from_encoder_decoder_configs(
            config, AutoConfig.from_pretrained(path, is_decoder=True, add_cross_attention=True)
        )
        model = EncoderDecoderModel(config=ed)
    else:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    model.generation_config.decoder_start_token_id = start
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    return model


def _new_module_names(model: nn.Module) -> list[str]:
    """Randomly initialised parts of a warm-started encoder-decoder that must train with the adapters."""
    if getattr(model.config, "model_type", "") != "encoder-decoder":
        return []
    return [n for n, _ in model.named_modules() if n.startswith("decoder.") and n.endswith(".crossattention")]


def _build_method(
    cfg: TrainConfig, model: nn.Module, assets: RunAssets, *, total_steps: int, steps_per_epoch: int
) -> Controller:
    from wlora.core.inject import head_module_names

    values = cfg._method_values(
        {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "n_train_examples": len(assets.data.train)}
    )
    extra = _new_module_names(model)
    fields = {f.name for f in dataclasses.fields(get_method(cfg.method).config_cls)}
    if extra and "head_modules" in fields and values.get("head_modules") is None:
        # Train the warm-started decoder's new cross-attention fully, with the usual head(s); adapters
        # then go on the pretrained encoder and decoder self-attention only (n = 2 × 3 × layers).
        values["head_modules"] = tuple(head_module_names(model)) + tuple(extra)
        if "target_modules" in fields and values.get("target_modules") is None:
            values["target_modules"] = r"^(?!.*crossattention).*\.(query|key|value)$"
    spec = get_method(cfg.method)
    return spec.controller_cls(model, make_config(cfg.method, values))


def _steps(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))
    return steps_per_epoch, total


def _importance_sample(cfg: TrainConfig, data: TaskData, ratio: float) -> list[int]:
    """LoRA-drop's stratified ``sample_ratio`` subset of the training set (STS-B scores binned to
    integers; QA / seq2seq have no class to stratify by, so the draw is uniform)."""
    from wlora.core.sampling import stratified_sample

    if data.kind == "classification":
        labels = [f["labels"] for f in data.train]
    elif data.kind == "regression":
        labels = [round(f["labels"]) for f in data.train]
    else:
        labels = [0] * len(data.train)
    return stratified_sample(labels, ratio, seed=cfg.seed)


def _micro_batches(
    cfg: TrainConfig, data: TaskData, step: int, steps_per_epoch: int, device, method: Controller | None = None
) -> list[dict]:
    """The micro-batches of optimizer step ``step`` (0-based): a pure function of (seed, step), so a
    resumed run sees exactly the batches it would have seen.

    A method with an importance phase on a data sample (LoRA-drop: ``importance_steps``,
    ``sample_steps`` and ``config.sample_ratio``) gets its first steps from passes over that sample,
    then the normal epochs (counted from the end of the phase)."""
    per_step = cfg.batch_size * cfg.grad_accum
    phase = getattr(method, "importance_steps", 0) or 0
    if step < phase:
        sample = _importance_sample(cfg, data, method.config.sample_ratio)
        p, pos = divmod(step, method.sample_steps)
        perm = torch.randperm(len(sample), generator=torch.Generator().manual_seed(cfg.seed * 7_919 + p))
        idx = [sample[i] for i in perm[pos * per_step : (pos + 1) * per_step].tolist()]
    else:
        epoch, pos = divmod(step - phase, steps_per_epoch)
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        idx = order[pos * per_step : (pos + 1) * per_step].tolist()
    out = []
    for i in range(0, len(idx), cfg.batch_size):
        feats = [data.train[j] for j in idx[i : i + cfg.batch_size]]
        out.append({k: v.to(device) for k, v in collate(feats, data.pad_token_id).items()})
    return out


def build_run(cfg: TrainConfig, assets: RunAssets | None = None, device: torch.device | str = "cpu"):
    """Model + method + engine for ``cfg`` (weights as loaded, adapters freshly initialised from the seed)."""
    assets = assets or prepare_run(cfg)
    steps_per_epoch, total = _steps(cfg, len(assets.data.train))
    model = _build_model(assets, cfg.seed)
    method = _build_method(cfg, model, assets, total_steps=total, steps_per_epoch=steps_per_epoch)
    # A method with an importance phase (LoRA-drop) trains the task for the full budget after it,
    # as in the paper, where importance comes from a separate short run.
    total += getattr(method, "importance_steps", 0) or 0
    model.to(device)
    engine = Engine(
        model,
        method,
        lr=cfg.lr,
        total_steps=total,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
    )
    return model, method, engine


# ----- evaluation -----


@torch.no_grad()
def evaluate(model: nn.Module, cfg: TrainConfig, assets: RunAssets, device, autocast=None) -> dict[str, float]:
    """The task metrics on the evaluation split, keyed ``eval_<name>``; ``OBJECTIVE`` is the main one."""
    import contextlib

    data = assets.data
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    bs = cfg.eval_batch_size
    if data.kind in ("classification", "regression"):
        preds, labels = [], []
        for i in range(0, len(data.eval), bs):
            feats = data.eval[i : i + bs]
            batch = collate(feats, data.pad_token_id, with_targets=False)
            with autocast():
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            preds.append(logits.squeeze(-1) if data.kind == "regression" else logits.argmax(-1))
            labels += [f["labels"] for f in feats]
        out = glue_metrics(cfg.task, torch.cat(preds).numpy(), np.asarray(labels))
    elif data.kind == "qa":
        starts, ends = [], []
        for i in range(0, len(data.eval), bs):
            batch = collate(data.eval[i : i + bs], data.pad_token_id, with_targets=False)
            with autocast():
                o = model(**{k: v.to(device) for k, v in batch.items()})
            starts += list(o.start_logits.float().cpu().numpy())
            ends += list(o.end_logits.float().cpu().numpy())
        preds = decode_answers(data.eval_examples, data.eval, starts, ends, version_2=cfg.task == "squad_v2")
        refs = {e.id: list(e.answers) for e in data.eval_examples}
        out = squad_metrics(preds, refs)
        out[MAIN_METRIC] = out["f1"]
    else:
        tok = _load_tokenizer(assets.model_path)
        texts = []
        for i in range(0, len(data.eval), bs):
            batch = collate(data.eval[i : i + bs], data.pad_token_id, with_targets=False)
            with autocast():
                gen = model.generate(
                    **{k: v.to(device) for k, v in batch.items() if k != "token_type_ids"},
                    max_new_tokens=cfg.max_target_length,
                    num_beams=cfg.num_beams,
                )
            texts += tok.batch_decode(gen, skip_special_tokens=True)
        out = rouge_metrics([t.strip() for t in texts], data.eval_examples)
        out[MAIN_METRIC] = float(np.mean([out["rouge1"], out["rouge2"], out["rougeL"]]))
    model.train(was_training)
    return {f"eval_{k}": float(v) for k, v in out.items()}


# ----- the run -----


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB → MiB (process peak RSS)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # One process may run many trials (reused Ray actors, tests) with different precisions; accelerate
    # keeps a process-wide state that refuses to change, so start each run from a clean one.
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu)


def _wants_checkpoint(report: Callable) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(report).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def run_training(
    cfg: TrainConfig,
    *,
    assets: RunAssets | None = None,
    report: Callable[..., Any] | None = None,
    resume_from: str | Path | None = None,
    output_dir: str | Path | None = None,
) -> RunResult:
    """Train ``cfg`` to the end (or to a NaN/inf loss) and return the result.

    Args:
        assets: from :func:`prepare_run` (built here if None).
        report: called after every evaluation as ``report(metrics, checkpoint_dir)`` — the directory
            holds a full checkpoint and is deleted when the call returns, so copy it if you keep it —
            or as ``report(metrics)`` if it takes one argument (no checkpoint is written).
        resume_from: a checkpoint directory written by an earlier ``report`` / ``output_dir``.
        output_dir: if set, the final checkpoint (``checkpoint/``) and ``result.json`` go here.

    A NaN/inf loss ends the run with ``status="failed"`` and the reason in ``error``; the weights
    of the failing step are never applied.
    """
    assets = assets or prepare_run(cfg)
    data = assets.data
    accelerator = _accelerator(cfg)
    device = accelerator.device
    steps_per_epoch, _ = _steps(cfg, len(data.train))
    model, method, engine = build_run(cfg, assets, device)
    total = engine.total_steps
    phase = getattr(method, "importance_steps", 0) or 0
    engine.autocast = accelerator.autocast
    engine.grad_scaler = accelerator.scaler
    history: list[dict[str, float]] = []
    if resume_from is not None:
        state = torch.load(Path(resume_from) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        if state["config"] != _jsonable(cfg.to_flat()):
            raise ValueError(f"checkpoint {resume_from} was written by a different config")
        engine.load_state_dict(state["engine"])
        history = list(state["history"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wants_ckpt = report is not None and _wants_checkpoint(report)

    def due(step: int) -> bool:
        if step == total:
            return True
        if cfg.eval_every is not None:
            return step % cfg.eval_every == 0
        return step > phase and (step - phase) % steps_per_epoch == 0

    def save_checkpoint(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"engine": engine.state_dict(), "history": history, "config": _jsonable(cfg.to_flat())},
            folder / CHECKPOINT_FILE,
        )

    status, error = "completed", None
    losses: list[float] = []
    step_times: list[float] = []
    examples = 0
    train_time = 0.0
    while engine.step < total:
        micro = _micro_batches(cfg, data, engine.step, steps_per_epoch, device, method)
        t0 = time.perf_counter()
        try:
            loss = engine.train_step(micro)
        except NonFiniteLossError as e:
            status, error = "failed", str(e)
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        train_time += dt
        step_times.append(dt)
        losses.append(loss)
        examples += sum(len(mb["input_ids"]) for mb in micro)
        if not due(engine.step):
            continue
        metrics = evaluate(model, cfg, assets, device, accelerator.autocast)
        counts = count_parameters(model, method.head_names)
        metrics.update(
            step=float(engine.step),
            epoch=max(0, engine.step - phase) / steps_per_epoch,
            train_loss=float(np.mean(losses)),
            lr=engine.scheduler.get_last_lr()[0],
            trainable_params=float(counts["trainable"]),
            trainable_pct=float(counts["trainable_pct"]),
            # the papers' "# Params": what the method trains besides the task head, which every method trains
            method_params=float(counts["trainable"] - counts["head"]),
            method_pct=100.0 * (counts["trainable"] - counts["head"]) / max(counts["base_model"], 1),
            active_adapters=float(len(method.active_adapters)),
            step_time_s=float(np.mean(step_times)),
            examples_per_s=examples / max(sum(step_times), 1e-9),
            peak_mem_mb=_peak_memory_mb(device),
        )
        history.append(metrics)
        losses, step_times, examples = [], [], 0
        if report is not None:
            if wants_ckpt:
                folder = Path(tempfile.mkdtemp(prefix="wlora-ckpt-"))
                try:
                    save_checkpoint(folder)
                    report(dict(metrics), str(folder))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            else:
                report(dict(metrics))
    result = RunResult(
        status=status,
        error=error,
        metrics=dict(history[-1]) if history else {},
        history=history,
        method_report=_jsonable(method.report()),
        steps=engine.step,
        total_steps=total,
        train_time_s=train_time,
    )
    if output_dir is not None:
        out = Path(output_dir)
        save_checkpoint(out / "checkpoint")
        (out / "result.json").write_text(json.dumps(_jsonable(result.to_json()), indent=2))
    return result


def export_from_checkpoint(
    cfg: TrainConfig, assets: RunAssets | None, checkpoint_dir: str | Path, out_dir: str | Path
) -> Path:
    """Rebuild the run from a checkpoint and write it as a standard PEFT adapter (``peft`` loads it);
    ``full`` fine-tuning is written as a whole model (``save_pretrained``)."""
    from wlora.export import export_method

    assets = assets or prepare_run(cfg)
    model, method, engine = build_run(cfg, assets, "cpu")
    state = torch.load(Path(checkpoint_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    engine.load_state_dict(state["engine"])
    if method.export_kind == "full_model":
        export_method(model, method, out_dir)
    else:
        export_method(model, method, out_dir, base_model_name_or_path=cfg.model)
    return Path(out_dir)


# ----- CLI -----

_HELP_EXTRA = {
    "method": f"method slug: {', '.join(METHODS)}",
    "task": f"task: {', '.join(list_tasks())}",
    "model": "hub id or local model folder (default: $WLORA_MODEL, else " + DEFAULT_MODEL + ")",
    "data_dir": "folder holding glue/, squad/, xsum/, cnn_dailymail/ (default: $WLORA_DATA_DIR; unset = the hub)",
}


def _field_docs() -> dict[str, str]:
    """Attribute docstrings of TrainConfig (the text after each field), for --help."""
    import ast

    src = inspect.getsource(TrainConfig)
    body = ast.parse(src).body[0].body
    docs: dict[str, str] = {}
    for a, b in itertools.pairwise(body):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wlora.train",
        description="Train one method on one task and print the result as JSON.",
        epilog="Method fields are set with repeated --set KEY=VALUE (e.g. --set r=8 --set k=4 --set t=100); "
        "each method's fields are listed by --list-method-fields METHOD.",
    )
    docs = _field_docs()
    defaults = TrainConfig()
    env_default = {"model": os.environ.get("WLORA_MODEL"), "data_dir": os.environ.get("WLORA_DATA_DIR")}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "method_config":
            continue
        default = env_default.get(f.name) or getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        text = _HELP_EXTRA.get(f.name, docs.get(f.name, f.name.replace("_", " ")))
        if f.name == "cpu":
            p.add_argument(flag, action="store_true", help=text)
            continue
        kind = {"lr": float, "weight_decay": float, "epochs": float, "max_grad_norm": float}.get(f.name)
        if kind is None:
            kind = int if isinstance(getattr(defaults, f.name), int) or f.name.endswith(("steps", "subset")) else str
        if f.name in ("eval_every", "max_steps", "train_subset", "eval_subset"):
            kind = int
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method config field (value parsed as JSON when possible, e.g. r=8, target_modules='[\"query\"]')",
    )
    p.add_argument("--output-dir", help="write result.json, the final checkpoint and a PEFT export here")
    p.add_argument("--resume-from", help="continue from a checkpoint folder (…/checkpoint)")
    p.add_argument("--list-method-fields", metavar="METHOD", help="print METHOD's config fields and exit")
    return p


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_method_fields:
        spec = get_method(args.list_method_fields)
        for f in dataclasses.fields(spec.config_cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            print(f"{f.name} = {default!r}")
        return 0
    values = {k: getattr(args, k) for k in TrainConfig.field_names()}
    method_cfg = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        method_cfg[key.strip()] = _parse_value(raw)
    try:
        cfg = TrainConfig(**values, method_config=method_cfg)
        assets = prepare_run(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def show(metrics: Mapping[str, float]) -> None:
        keys = ["step", "epoch", "train_loss", OBJECTIVE, "active_adapters", "step_time_s"]
        print(" ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics), flush=True)

    result = run_training(cfg, assets=assets, report=show, resume_from=args.resume_from, output_dir=args.output_dir)
    if args.output_dir and result.status == "completed" and data_kind_exportable(assets):
        export_from_checkpoint(cfg, assets, Path(args.output_dir) / "checkpoint", Path(args.output_dir) / "adapter")
    print(json.dumps(_jsonable({"status": result.status, "error": result.error, "metrics": result.metrics}), indent=2))
    return 0 if result.status == "completed" else 1


def data_kind_exportable(assets: RunAssets) -> bool:
    """PEFT export covers the classification / regression / QA models (peft task types of the heads)."""
    return assets.data.kind != "seq2seq" or assets.model_type != "encoder-decoder"


if __name__ == "__main__":
    raise SystemExit(main())
