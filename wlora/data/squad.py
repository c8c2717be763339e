"""SQuAD v1.1 / v2.0 extractive question answering: loading, sliding-window features, span decoding.

Local layout: ``<data_dir>/squad/{train,dev}-v1.1.json`` and ``{train,dev}-v2.0.json`` (the official
files); with no folder the hub datasets ``rajpurkar/squad`` / ``rajpurkar/squad_v2`` are read.

Features follow the usual recipe for BERT-style readers: question + context window of ``max_length``
tokens, windows overlapping by ``stride`` tokens; a training window that does not contain the whole
answer (and every unanswerable question in v2.0) points at the [CLS] token. At evaluation a
question's answer is the best-scoring span ``start_logit + end_logit`` over all its windows
(``end ≥ start``, length ≤ ``max_answer_tokens``, both inside the context); in v2.0 the question is
answered "" when the best null score ``start_logit[CLS] + end_logit[CLS]`` (minimum over windows)
beats the best span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wlora.data.registry import TASKS

#: SQuAD task → its version and hub dataset (their specs: :mod:`wlora.data.registry`).
SQUAD_VERSIONS = {k: s.squad_version for k, s in TASKS.items() if s.squad_version is not None}
SQUAD_HUB_IDS = {k: s.hub_id for k, s in TASKS.items() if s.squad_version is not None}


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    """Gold answer texts; empty = unanswerable (v2.0)."""
    answer_starts: tuple[int, ...] = field(default=())
    """Character offsets of ``answers`` in ``context``."""


def read_squad_file(path: str | Path) -> list[QAExample]:
    """Read an official SQuAD json file (v1.1 or v2.0)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an official SQuAD json file ({e})") from None
    out = []
    for article in data:
        for para in article["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else qa["answers"]
                for a in answers:
                    if context[a["answer_start"] : a["answer_start"] + len(a["text"])] != a["text"]:
                        raise ValueError(f"{path}: question {qa['id']}: answer {a['text']!r} not at its answer_start")
                out.append(
                    QAExample(
                        qa["id"],
                        qa["question"],
                        context,
                        tuple(a["text"] for a in answers),
                        tuple(int(a["answer_start"]) for a in answers),
                    )
                )
    return out


def load_squad(
    task: str = "squad", split: str = "train", data_dir: str | Path | None = None, file: str | Path | None = None
) -> list[QAExample]:
    """SQuAD examples from ``file``, a local folder (``<data_dir>/squad/<split>-v<version>.json``) or the hub."""
    if task not in SQUAD_VERSIONS:
        raise ValueError(f"unknown QA task {task!r}; choose one of {sorted(SQUAD_VERSIONS)}")
    if split not in ("train", "dev"):
        raise ValueError(f"unknown SQuAD split {split!r}; use train or dev")
    if file is not None:
        return read_squad_file(file)
    if data_dir is not None:
        return read_squad_file(Path(data_dir) / "squad" / f"{split}-v{SQUAD_VERSIONS[task]}.json")
    import datasets  # deferred: the hub path is optional

    ds = datasets.load_dataset(SQUAD_HUB_IDS[task], split="train" if split == "train" else "validation")
    return [
        QAExample(
            r["id"], r["question"], r["context"], tuple(r["answers"]["text"]), tuple(r["answers"]["answer_start"])
        )
        for r in ds
    ]


def _windows(tokenizer, examples: Sequence[QAExample], max_length: int, stride: int):
    pad_right = tokenizer.padding_side == "right"
    questions = [e.question.lstrip() for e in examples]
    contexts = [e.context for e in examples]
    return tokenizer(
        questions if pad_right else contexts,
        contexts if pad_right else questions,
        truncation="only_second" if pad_right else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    ), (1 if pad_right else 0)


def _cls_index(input_ids: list[int], tokenizer) -> int:
    cls = tokenizer.cls_token_id
    return input_ids.index(cls) if cls is not None and cls in input_ids else 0


def qa_train_features(tokenizer, examples: Sequence[QAExample], max_length: int, stride: int) -> list[dict]:
    """Training windows with ``start_positions`` / ``end_positions`` (first gold answer; [CLS] if absent)."""
    enc, ctx_id = _windows(tokenizer, examples, max_length, stride)
    feats = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids = enc["input_ids"][i]
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        cls = _cls_index(ids, tokenizer)
        start_pos = end_pos = cls
        if ex.answers:
            a_start = ex.answer_starts[0]
            a_end = a_start + len(ex.answers[0])
            ctx = [j for j, s in enumerate(seq) if s == ctx_id]
            lo, hi = ctx[0], ctx[-1]
            if offsets[lo][0] <= a_start and offsets[hi][1] >= a_end:
                start_pos = next(j for j in range(lo, hi + 1) if offsets[j][1] > a_start)
                end_pos = next(j for j in range(hi, lo - 1, -1) if offsets[j][0] < a_end)
        feat = {k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        feat["start_positions"] = start_pos
        feat["end_positions"] = end_pos
        feats.append(feat)
    return feats


def qa_eval_features(tokenizer, examples: Sequence[QAExample], max_length: int, stride: int) -> list[dict]:
    """Evaluation windows with ``example_index`` and context-only ``offsets`` (None outside the context)."""
    enc, ctx_id = _windows(tokenizer, examples, max_length, stride)
    feats = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        feat = {k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        feat["example_index"] = int(enc["overflow_to_sample_mapping"][i])
        feat["offsets"] = [tuple(o) if s == ctx_id else None for o, s in zip(offsets, seq, strict=True)]
        feat["cls_index"] = _cls_index(enc["input_ids"][i], tokenizer)
        feats.append(feat)
    return feats


def decode_answers(
    examples: Sequence[QAExample],
    features: Sequence[Mapping],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    version_2: bool,
    n_best: int = 20,
    max_answer_tokens: int = 30,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """Question id → predicted answer text (see the module docstring for the rule)."""
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for feat, s_log, e_log in zip(features, start_logits, end_logits, strict=True):
        ei = feat["example_index"]
        offsets = feat["offsets"]
        n = min(len(offsets), len(s_log))
        s_log, e_log = np.asarray(s_log[:n]), np.asarray(e_log[:n])
        cls = feat.get("cls_index", 0)
        null[ei] = min(null.get(ei, np.inf), float(s_log[cls] + e_log[cls]))
        starts = np.argsort(s_log)[::-1][:n_best]
        ends = np.argsort(e_log)[::-1][:n_best]
        context = examples[ei].context
        for s in starts:
            if offsets[s] is None:
                continue
            for e in ends:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_tokens:
                    continue
                score = float(s_log[s] + e_log[e])
                if ei not in best or score > best[ei][0]:
                    best[ei] = (score, context[offsets[s][0] : offsets[e][1]])
    out = {}
    for ei, ex in enumerate(examples):
        score, text = best.get(ei, (-np.inf, ""))
        if version_2 and null.get(ei, -np.inf) > score + null_threshold:
            text = ""
        out[ex.id] = text
    return out
