"""Evaluation of a task model on its evaluation split: GLUE metrics, SQuAD EM/F1, ROUGE."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from wlora.data.metrics import MAIN_METRIC, glue_metrics, rouge_metrics, squad_metrics
from wlora.data.registry import TASKS
from wlora.data.squad import decode_answers
from wlora.data.tasks import collate
from wlora.modeling import load_tokenizer
from wlora.run_config import RunAssets, TrainConfig


@torch.no_grad()
def evaluate(model: nn.Module, cfg: TrainConfig, assets: RunAssets, device, autocast=None) -> dict[str, float]:
    """The task metrics on the evaluation split, keyed ``eval_<name>``; ``OBJECTIVE`` is the main one."""
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
        preds = decode_answers(
            data.eval_examples, data.eval, starts, ends, version_2=TASKS[cfg.task].squad_version == "2.0"
        )
        refs = {e.id: list(e.answers) for e in data.eval_examples}
        out = squad_metrics(preds, refs)
        out[MAIN_METRIC] = out["f1"]
    else:
        tok = load_tokenizer(assets.model_path)
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
