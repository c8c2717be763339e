"""Abstractive summarisation data: XSum and CNN/DailyMail from JSON-lines files or the hub.

Local layout: ``<data_dir>/xsum/{train,validation,test}.jsonl`` with ``{"id", "document", "summary"}``
rows and ``<data_dir>/cnn_dailymail/{train,validation,test}.jsonl`` with ``{"id", "article",
"highlights"}`` rows (the hub datasets' columns); any file can also be given directly. With no
folder, the hub datasets ``EdinburghNLP/xsum`` and ``abisee/cnn_dailymail`` (config 3.0.0) are read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wlora.data.registry import TASKS, SummarizationTask

#: Summarisation task → its files and columns (their specs: :mod:`wlora.data.registry`).
SUMMARIZATION_TASKS: dict[str, SummarizationTask] = {
    k: s.summarization for k, s in TASKS.items() if s.summarization is not None
}


@dataclass(frozen=True)
class SummaryExample:
    id: str
    document: str
    summary: str


def _spec(task: str) -> SummarizationTask:
    if task not in SUMMARIZATION_TASKS:
        raise ValueError(f"unknown summarisation task {task!r}; choose one of {sorted(SUMMARIZATION_TASKS)}")
    return SUMMARIZATION_TASKS[task]


def read_jsonl(path: str | Path, task: str = "xsum") -> list[SummaryExample]:
    """Read a JSON-lines file; a bad line raises one error naming the file and line."""
    spec = _spec(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{task} file not found: {path}")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(SummaryExample(str(row.get("id", lineno)), row[spec.document], row[spec.summary]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}: line {lineno}: expected a JSON object with {spec.document!r} and {spec.summary!r} ({e!r})"
                ) from None
    return out


def load_summarization(
    task: str = "xsum", split: str = "train", data_dir: str | Path | None = None, file: str | Path | None = None
) -> list[SummaryExample]:
    """Examples from ``file``, a local folder (``<data_dir>/<task>/<split>.jsonl``) or the hub."""
    spec = _spec(task)
    split = {"dev": "validation"}.get(split, split)
    if split not in ("train", "validation", "test"):
        raise ValueError(f"unknown split {split!r}; use train, validation (dev) or test")
    if file is not None:
        return read_jsonl(file, task)
    if data_dir is not None:
        return read_jsonl(Path(data_dir) / spec.folder / f"{split}.jsonl", task)
    import datasets  # deferred: the hub path is optional

    ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    return [SummaryExample(str(r["id"]), r[spec.document], r[spec.summary]) for r in ds]


def seq2seq_features(
    tokenizer,
    examples: Sequence[SummaryExample],
    max_source_length: int,
    max_target_length: int,
    prefix: str = "",
) -> list[dict]:
    """Encoder inputs and ``labels`` (target token ids; padding becomes -100 in the collator)."""
    src = tokenizer([prefix + e.document for e in examples], truncation=True, max_length=max_source_length)
    tgt = tokenizer(text_target=[e.summary for e in examples], truncation=True, max_length=max_target_length)
    feats = []
    for i in range(len(examples)):
        feat = {k: src[k][i] for k in ("input_ids", "attention_mask") if k in src}
        feat["labels"] = tgt["input_ids"][i]
        feats.append(feat)
    return feats
