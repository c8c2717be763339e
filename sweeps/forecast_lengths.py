"""How long a sweep's batches really are: batches are padded to their longest sequence, so the tokens a step or an
evaluation multiplies are measured on the task's own rows under the sweep's tokenizer (``--forecast``)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from wlora.data.registry import TASKS

_LENGTHS: dict[tuple, float] = {}
_DRAWS: dict[tuple, tuple[list[int], list[int]] | None] = {}


def sampled_texts(path: Path, glue: Any, k: int, seed: int = 0) -> tuple[list[int], list[str], list[str] | None]:
    """The row indices and sentences (and second sentences of pairs) of ``k`` seeded rows of a GLUE TSV file, in
    the order ``random.Random(seed).sample`` draws them from the data reader's rows, without parsing the rest of
    the file (a GLUE row is one line: the files are read unquoted)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        lines = [line.rstrip("\r") for line in f.read().split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    header = lines.pop(0).split("\t") if glue.header else []
    col = lambda key: key if isinstance(key, int) else header.index(key)  # noqa: E731
    picked = random.Random(seed).sample(range(len(lines)), min(k, len(lines)))  # the rows sample(lines) draws
    rows = [lines[i].split("\t") for i in picked]
    a = [r[col(glue.text_a)] for r in rows]
    return picked, a, ([r[col(glue.text_b)] for r in rows] if glue.text_b is not None else None)


def padded_lengths(
    task: str, args: argparse.Namespace, eval_batch: int = 64, split: str = "dev"
) -> tuple[float, float]:
    """Mean padded length of a training batch and of an evaluation batch: batches are padded to their longest
    sequence, so short-sentence tasks cost far fewer tokens than ``max_length``. Tokenized by the sweep's own
    tokenizer when the data and the model are at hand (GLUE), else ``max_length`` (as a run padded to its
    maximum length). Training batches (:func:`train_length`): 2,048 seeded training examples in random order (the
    runner shuffles). Evaluation batches: the runner scores its split in file order, ``eval_batch`` at a time, so
    neighbours share a batch (STS-B's files are grouped by genre: its evaluation batches pad to ~53 tokens, random
    ones to ~76; SST-2's dev sentences are longer than its training phrases: ~51 vs ~45): a seeded draw of the
    file's rows kept in file order, 1,024 of the dev file (``split="dev"``), or the training draw (``"holdout"``:
    the held-out examples are a seeded draw from the training file, kept in order)."""
    return train_length(task, args), _eval_length(task, args, eval_batch, split)


def _draw(task: str, args: argparse.Namespace, split: str) -> tuple[list[int], list[int]] | None:
    """(row indices, token counts) of a seeded draw of a task's training file (2,048 rows, seed 0) or dev file
    (1,024 rows, seed 1), in draw order, under the sweep's tokenizer; None without local data or tokenizer."""
    key = ("draw", task, args.model, args.data_dir, args.max_length, split)
    if key in _DRAWS:
        return _DRAWS[key]
    out = None
    spec = TASKS[task]
    if spec.glue is not None and args.data_dir:
        k, seed = (2048, 0) if split == "train" else (1024, 1)
        try:
            from transformers import AutoTokenizer

            from wlora.data import read_glue_split
            from wlora.data.layout import locate_task_files
            from wlora.model_source import resolve_model

            train_file, dev_file = (Path(f) for f in locate_task_files(task, args.data_dir))
            try:
                picked, a, b = sampled_texts(train_file if split == "train" else dev_file, spec.glue, k, seed)
            except (KeyError, IndexError, ValueError):  # a file the fast path does not read: the data reader
                rows = read_glue_split(str(train_file.parent.parent), task, split)
                picked = random.Random(seed).sample(range(len(rows)), min(k, len(rows)))
                a = [rows[i].text_a for i in picked]
                b = [rows[i].text_b for i in picked] if rows[0].text_b is not None else None
            tok = AutoTokenizer.from_pretrained(resolve_model(args.model))
            out = (picked, [len(ids) for ids in tok(a, b, truncation=True, max_length=args.max_length)["input_ids"]])
        except (OSError, ValueError, FileNotFoundError):
            out = None  # no local data or tokenizer: assume full-length batches
    _DRAWS[key] = out
    return out


def train_length(task: str, args: argparse.Namespace) -> float:
    """Mean padded length of a training batch (2,048 seeded training examples in random order)."""
    key = ("train", task, args.model, args.data_dir, args.max_length, args.batch_size)
    if key not in _LENGTHS:
        drawn, size = _draw(task, args, "train"), args.batch_size
        if drawn:
            lens = drawn[1]
            groups = [lens[i : i + size] for i in range(0, len(lens) - size + 1, size)] or [lens]  # whole batches
            _LENGTHS[key] = sum(max(g) for g in groups) / len(groups)
        else:
            _LENGTHS[key] = float(args.max_length)
    return _LENGTHS[key]


def _eval_length(task: str, args: argparse.Namespace, eval_batch: int, split: str) -> float:
    key = ("eval", task, args.model, args.data_dir, args.max_length, eval_batch, split)
    if key not in _LENGTHS:
        drawn = _draw(task, args, "dev" if split == "dev" else "train")
        if drawn:
            lens = [n for _, n in sorted(zip(*drawn, strict=True))]  # file order
            groups = [lens[i : i + eval_batch] for i in range(0, len(lens), eval_batch)]  # the last one short
            _LENGTHS[key] = sum(max(g) * len(g) for g in groups) / len(lens)  # per example, as tokens are counted
        else:
            _LENGTHS[key] = float(args.max_length)
    return _LENGTHS[key]
