"""Model and method building: resolve a model (local folder or hub id), load the task data once
(:func:`prepare_run`), build the task model, inject the method and make the optimizer engine
(:func:`build_run`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from wlora.data.tasks import prepare_task_data, task_kind
from wlora.engine import Engine, seed_everything
from wlora.model_source import resolve_model
from wlora.registry import get_method
from wlora.run_config import RunAssets, TrainConfig
from wlora.schedule import resolve_run


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def _is_t5(model_path: str) -> bool:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path).model_type in ("t5", "mt5", "umt5")


def prepare_run(cfg: TrainConfig) -> RunAssets:
    """Resolve the model, prepare the data and validate the method against the model (see module doc)."""
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_path)
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
        holdout=cfg.holdout,
        train_from_dev=cfg.train_from_dev,
        cache_dir=cfg.cache_dir,
    )
    assets = RunAssets(model_path=model_path, data=data)
    # Check the method config against the real module structure (e.g. K ≤ n) on a weightless copy.
    with torch.device("meta"):
        model = _build_model(assets, cfg.seed, meta=True)
    resolved = resolve_run(cfg, len(data.train), model_values(cfg, model))
    method = get_method(cfg.method).controller_cls(model, resolved.method_config)
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
    tok = load_tokenizer(path)
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


def model_values(cfg: TrainConfig, model: nn.Module) -> dict[str, Any]:
    """Method values the model itself calls for: a warm-started encoder-decoder trains its new
    cross-attention fully, with the usual head(s); adapters then go on the pretrained encoder and decoder
    self-attention only (n = 2 × 3 × layers)."""
    from wlora.core.inject import head_module_names

    extra = _new_module_names(model)
    fields = {f.name for f in dataclasses.fields(get_method(cfg.method).config_cls)}
    out: dict[str, Any] = {}
    if extra and "head_modules" in fields and cfg.method_config.get("head_modules") is None:
        out["head_modules"] = tuple(head_module_names(model)) + tuple(extra)
        if "target_modules" in fields and cfg.method_config.get("target_modules") is None:
            out["target_modules"] = r"^(?!.*crossattention).*\.(query|key|value)$"
    return out


def build_resolved_run(cfg: TrainConfig, assets: RunAssets | None = None, device: torch.device | str = "cpu"):
    """Model + method + engine for ``cfg`` (weights as loaded, adapters freshly initialised from the seed)
    and the run's schedule, all from one :func:`wlora.schedule.resolve_run`."""
    assets = assets or prepare_run(cfg)
    model = _build_model(assets, cfg.seed)
    resolved = resolve_run(cfg, len(assets.data.train), model_values(cfg, model))
    method = get_method(cfg.method).controller_cls(model, resolved.method_config)
    # A method with an importance phase (LoRA-drop) trains the task for the full budget after it,
    # as in the paper, where importance comes from a separate short run: the schedule counts both.
    total = resolved.schedule.total
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
    return model, method, engine, resolved.schedule


def build_run(cfg: TrainConfig, assets: RunAssets | None = None, device: torch.device | str = "cpu"):
    """Model + method + engine for ``cfg`` (weights as loaded, adapters freshly initialised from the seed)."""
    model, method, engine, _ = build_resolved_run(cfg, assets, device)
    return model, method, engine
