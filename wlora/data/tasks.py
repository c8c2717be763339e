"""Every task behind one interface: load (local folder or hub) → subset → tokenize once → cache → batches.

``prepare_task_data`` returns a :class:`TaskData`: plain Python lists of token ids plus what evaluation
needs (QA windows and gold answers, reference summaries). It is picklable, so a sweep builds it once
on the driver and ships it to every trial. Tokenized features are cached on disk, keyed by the data
source, the tokenizer and every tokenization option; batches are padded per batch
(:func:`collate`), never to a global length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wlora.data.glue import get_task, load_glue, read_glue_file
from wlora.data.layout import LOCAL_COPIES_HINT, locate_task_files, one_line
from wlora.data.registry import TASKS, list_tasks
from wlora.data.squad import load_squad, qa_eval_features, qa_train_features
from wlora.data.summarization import SUMMARIZATION_TASKS, load_summarization, seq2seq_features

if TYPE_CHECKING:
    import torch

TaskKind = Literal["classification", "regression", "qa", "seq2seq"]
#: Bump when the feature format changes, so old cache entries are not reused.
CACHE_VERSION = 2


def task_kind(task: str) -> TaskKind:
    """The model head a task needs (from its spec, :mod:`wlora.data.registry`); ``task`` must be a task key."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(list_tasks())}")
    spec = TASKS[task]
    if spec.family == "glue":
        return "regression" if spec.labels is None else "classification"
    return spec.family


@dataclass
class TaskData:
    """Tokenized train/eval features of one task for one tokenizer (see the module docstring)."""

    task: str
    kind: TaskKind
    num_labels: int
    pad_token_id: int
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    eval_examples: list[Any] = field(default_factory=list)
    """QA: the ``QAExample`` s; seq2seq: reference summaries; GLUE: empty (labels are in ``eval``)."""
    n_train_examples: int = 0
    n_eval_examples: int = 0
    source: str = ""
    """Where the data came from (folder/file or hub id) — logged with the run."""
    fingerprint: str = ""
    """Hash of the options the data was prepared with (the cache key)."""
    eval_split: str = "dev"
    """Which examples ``eval`` holds: ``dev`` (or another file split) or ``holdout``."""
    holdout: float = 0.0
    train_from_dev: float = 0.0
    eval_fingerprint: str = ""
    """Hash of the evaluation examples themselves (:func:`example_fingerprint`): two runs whose fingerprints
    are equal scored exactly the same examples, in the same order."""


def _subset(items: list, n: int | None, seed: int, what: str) -> list:
    if n is None or n >= len(items):
        return items
    if n <= 0:
        raise ValueError(f"`{what}` must be positive, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


#: ``eval_split`` value that evaluates on the examples held out of the training data (``holdout``).
HOLDOUT = "holdout"


def example_fingerprint(rows: Sequence[Any]) -> str:
    """A short hash of a list of raw examples (every field, in order): the identity of an evaluated set."""
    h = hashlib.sha256()
    for row in rows:
        fields = dataclasses.astuple(row) if dataclasses.is_dataclass(row) else row
        h.update(json.dumps(fields, default=str, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def split_train_from_dev(rows: list, share: float, seed: int, kind: str) -> tuple[list, list]:
    """(training pool, reported dev) of a task whose training file is not at hand (QNLI's dev-only copy):
    ``share`` (< 1) or that number (≥ 1) of the dev file's examples become the training pool, seeded by
    ``seed`` and stratified as :func:`split_holdout`; the rest stays dev, the only examples a dev score reads."""
    rest, pool = split_holdout(rows, share, seed + 104_729, kind)  # its own draw, apart from the holdout's
    return pool, rest


def split_holdout(rows: list, holdout: float, seed: int, kind: str) -> tuple[list, list]:
    """(rest, held out): ``holdout`` < 1 is a share of ``rows``, ≥ 1 a number of them. Seeded, and stratified
    by label for classification (by quintile of the score for regression) when every stratum has ≥ 2
    examples; QA and summarisation rows are drawn uniformly. The rest keeps the file's order."""
    from sklearn.model_selection import train_test_split

    size: float | int = holdout if holdout < 1 else int(holdout)
    if isinstance(size, int) and size >= len(rows):
        raise ValueError(f"`holdout` = {size} leaves no training examples (the training split has {len(rows)})")
    strata = None
    if kind == "classification":
        strata = [r.label for r in rows]
    elif kind == "regression":
        labels = np.array([r.label for r in rows], dtype=float)
        strata = np.searchsorted(np.quantile(labels, [0.2, 0.4, 0.6, 0.8]), labels).tolist()
    if strata is not None and min(np.unique(strata, return_counts=True)[1]) < 2:
        strata = None
    idx = np.arange(len(rows))
    try:
        rest, held = train_test_split(idx, test_size=size, random_state=seed, stratify=strata)
    except ValueError:  # too few held-out examples to hold every stratum: draw uniformly
        rest, held = train_test_split(idx, test_size=size, random_state=seed)
    return [rows[i] for i in sorted(rest)], [rows[i] for i in sorted(held)]


def _source_id(path: Path | None, hub: str) -> str:
    if path is None:
        return hub
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _tokenizer_id(tokenizer) -> str:
    return f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"


def default_cache_dir() -> Path:
    return Path(os.environ.get("WLORA_CACHE_DIR", Path.home() / ".cache" / "wlora")) / "features"


def prepare_task_data(
    task: str,
    tokenizer,
    *,
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    eval_file: str | Path | None = None,
    eval_split: str = "dev",
    max_length: int = 128,
    max_target_length: int = 64,
    doc_stride: int = 32,
    source_prefix: str = "",
    train_subset: int | None = None,
    eval_subset: int | None = None,
    data_seed: int = 0,
    holdout: float = 0.0,
    train_from_dev: float = 0.0,
    cache_dir: str | Path | Literal[False] | None = None,
) -> TaskData:
    """Load, subset, tokenize and cache ``task``.

    Args:
        task: a GLUE task (``sst2`` …), ``squad`` / ``squad_v2``, or ``xsum`` / ``cnn_dailymail``.
        tokenizer: the model's tokenizer.
        data_dir: a local data folder in any layout :mod:`wlora.data.layout` accepts; None = the hub.
        train_file, eval_file: read these files instead (SQuAD json / summarisation jsonl).
        eval_split: ``dev`` (MNLI: also ``dev_mismatched``; summarisation: also ``test``).
        max_length: truncation length of inputs (QA: window length; seq2seq: source length).
        max_target_length: seq2seq target length.
        doc_stride: QA window overlap in tokens.
        source_prefix: seq2seq input prefix (e.g. ``"summarize: "`` for T5).
        train_subset, eval_subset: keep this many examples, drawn with ``data_seed``.
        holdout: hold this share (< 1) or number (≥ 1) of the training examples out of training, before
            ``train_subset`` draws (:func:`split_holdout`, seeded with ``data_seed``); ``eval_split="holdout"``
            evaluates on them instead of dev.
        train_from_dev: take this share (< 1) or number (≥ 1) of the dev file as the training pool
            (:func:`split_train_from_dev`), for a task whose training file is not at hand; dev is the rest.
        cache_dir: feature cache folder; None = ``$WLORA_CACHE_DIR`` or ``~/.cache/wlora``; False = off.
    """
    kind = task_kind(task)
    if max_length <= 8:
        raise ValueError(f"`max_length` must be > 8, got {max_length}")
    # 1) where the data comes from (identifies the cache entry)
    if eval_split == HOLDOUT and not holdout > 0:
        raise ValueError('eval_split="holdout" needs `holdout` > 0 (the examples held out of the training data)')
    if holdout < 0:
        raise ValueError(f"`holdout` must be >= 0, got {holdout}")
    if train_from_dev < 0:
        raise ValueError(f"`train_from_dev` must be >= 0, got {train_from_dev}")
    file_split = "dev" if eval_split == HOLDOUT else eval_split
    files = locate_task_files(
        task,
        data_dir,
        eval_split=file_split,
        train_file=train_file,
        eval_file=eval_file,
        need_train=not train_from_dev,
    )
    if kind in ("classification", "regression"):
        hub = f"nyu-mll/glue/{get_task(task).hub_config}"
    elif kind == "qa":
        hub = f"squad/{task}"
    else:
        hub = f"{SUMMARIZATION_TASKS[task].hub_id}"
    source = ", ".join(str(f) if f else hub for f in files)

    options = dict(
        v=CACHE_VERSION,
        task=task,
        eval_split=eval_split,
        sources=[_source_id(f, hub) for f in files],
        tok=_tokenizer_id(tokenizer),
        max_length=max_length,
        max_target_length=max_target_length,
        doc_stride=doc_stride,
        prefix=source_prefix,
        subsets=[train_subset, eval_subset, data_seed],
        **({"holdout": holdout} if holdout else {}),
        **({"train_from_dev": train_from_dev} if train_from_dev else {}),
    )
    fingerprint = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    cache = None
    if cache_dir is not False:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        hit = cache / f"{task}-{fingerprint}.pkl"
        if hit.is_file():
            with hit.open("rb") as fh:
                return pickle.load(fh)

    # 2) load + subset (before tokenizing, so a small subset is cheap)
    def load(split: str, file: Path | None) -> list:
        if kind in ("classification", "regression"):
            read = (lambda: read_glue_file(file, task, split)) if file else (lambda: load_glue(task, split))
        elif kind == "qa":
            read = lambda: load_squad(task, "train" if split == "train" else "dev", file=file)  # noqa: E731
        else:
            read = lambda: load_summarization(task, split, file=file)  # noqa: E731
        if file is not None:
            return read()
        try:
            return read()
        except Exception as e:  # offline, missing package, auth: one message that says what to do
            raise FileNotFoundError(
                f"{task}: could not read {hub} from the hub ({one_line(e)}). {LOCAL_COPIES_HINT}"
            ) from None

    dev_rows: list | None = None
    if train_from_dev:
        tr, dev_rows = split_train_from_dev(load(file_split, files[1]), train_from_dev, data_seed, kind)
    else:
        tr = load("train", files[0])
    held: list = []
    if holdout and tr:
        tr, held = split_holdout(tr, holdout, data_seed, kind)
    if eval_split != HOLDOUT:
        held = dev_rows if dev_rows is not None else load(eval_split, files[1])
    ev_rows = held
    if not tr or not ev_rows:
        raise ValueError(f"{task}: empty data ({len(tr)} train / {len(ev_rows)} eval examples) from {source}")
    tr = _subset(tr, train_subset, data_seed, "train_subset")
    ev_rows = _subset(ev_rows, eval_subset, data_seed + 1, "eval_subset")

    # 3) tokenize once
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if kind in ("classification", "regression"):
        num_labels = 1 if kind == "regression" else len(get_task(task).labels)
        train_feats, eval_feats = (_glue_features(tokenizer, rows, max_length) for rows in (tr, ev_rows))
        eval_examples: list = []
    elif kind == "qa":
        num_labels = 2
        train_feats = qa_train_features(tokenizer, tr, max_length, doc_stride)
        eval_feats = qa_eval_features(tokenizer, ev_rows, max_length, doc_stride)
        eval_examples = list(ev_rows)
    else:
        num_labels = 0
        train_feats = seq2seq_features(tokenizer, tr, max_length, max_target_length, source_prefix)
        eval_feats = seq2seq_features(tokenizer, ev_rows, max_length, max_target_length, source_prefix)
        eval_examples = [e.summary for e in ev_rows]
    data = TaskData(
        task=task,
        kind=kind,
        num_labels=num_labels,
        pad_token_id=int(pad),
        train=train_feats,
        eval=eval_feats,
        eval_examples=eval_examples,
        n_train_examples=len(tr),
        n_eval_examples=len(ev_rows),
        source=source,
        fingerprint=fingerprint,
        eval_split=eval_split,
        holdout=float(holdout),
        train_from_dev=float(train_from_dev),
        eval_fingerprint=example_fingerprint(ev_rows),
    )
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{task}-{fingerprint}.{os.getpid()}.tmp"
        with tmp.open("wb") as fh:
            pickle.dump(data, fh)
        tmp.replace(cache / f"{task}-{fingerprint}.pkl")  # atomic: concurrent writers never see half a file
    return data


def _glue_features(tokenizer, rows, max_length: int) -> list[dict[str, Any]]:
    a = [r.text_a for r in rows]
    b = [r.text_b for r in rows] if rows[0].text_b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": r.label} for i, r in enumerate(rows)]


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TARGET_KEYS = ("labels", "start_positions", "end_positions")


def collate(features: Sequence[dict[str, Any]], pad_token_id: int, *, with_targets: bool = True) -> dict:
    """Pad one batch to its longest sequence (dynamic padding). Sequence labels pad with -100."""
    import torch  # deferred: reading and locating data needs no torch

    out: dict[str, torch.Tensor] = {}
    longest = max(len(f["input_ids"]) for f in features)
    for key in MODEL_INPUTS:
        if key not in features[0]:
            continue
        fill = pad_token_id if key == "input_ids" else 0
        out[key] = torch.tensor([list(f[key]) + [fill] * (longest - len(f[key])) for f in features])
    if with_targets:
        for key in TARGET_KEYS:
            if key not in features[0]:
                continue
            vals = [f[key] for f in features]
            if isinstance(vals[0], list):
                n = max(len(v) for v in vals)
                out[key] = torch.tensor([v + [-100] * (n - len(v)) for v in vals])
            elif isinstance(vals[0], float):
                out[key] = torch.tensor(vals, dtype=torch.float32)
            else:
                out[key] = torch.tensor(vals, dtype=torch.long)
    return out
