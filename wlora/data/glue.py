"""GLUE from local TSV files in the original GLUE layout (``<TASK>/{train,dev}.tsv``) or the hub.

Quirks handled: TSVs are read with no quote processing (``csv.QUOTE_NONE``; pandas-style quoting
silently merges MRPC rows), MRPC starts with a UTF-8 BOM (read as ``utf-8-sig``), CoLA has no header,
RTE / QNLI / MNLI labels are strings, STS-B is a regression score in [0, 5]. A malformed row raises
one error naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from wlora.data.registry import TASKS, GlueTask, normalize_task

#: Each GLUE task's TSV format (its spec: :mod:`wlora.data.registry`).
GLUE_TASKS: dict[str, GlueTask] = {key: spec.glue for key, spec in TASKS.items() if spec.glue is not None}

#: The hub dataset the GLUE loaders read when no local folder is given.
GLUE_HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueExample:
    text_a: str
    text_b: str | None
    label: int | float


def get_task(task: str) -> GlueTask:
    key = normalize_task(task)
    if key not in GLUE_TASKS:
        raise ValueError(f"{task!r} is not a GLUE task; choose one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def read_glue_split(root: str | Path, task: str, split: str = "train") -> list[GlueExample]:
    """Read one split (``train`` or ``dev``; MNLI also ``dev_mismatched``) of ``task`` from ``root``.

    Raises:
        FileNotFoundError: the folder or file is missing (the message names the expected path).
        ValueError: a row has the wrong number of columns or an unknown label (names file and line).
    """
    spec = get_task(task)
    fname = spec.dev_split if split == "dev" else split
    return read_glue_file(Path(root) / spec.name / f"{fname}.tsv", task, split)


def read_glue_file(path: str | Path, task: str, split: str = "") -> list[GlueExample]:
    """Read one GLUE TSV file of ``task`` (see :func:`read_glue_split` for the errors)."""
    spec = get_task(task)
    path = Path(path)
    if not path.is_file():
        what = f"{split} split" if split else "file"
        raise FileNotFoundError(f"GLUE {spec.name} {what} not found: expected {path}")
    try:
        return _read_glue_rows(path, spec)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); GLUE files are UTF-8 TSV") from None


def _read_glue_rows(path: Path, spec: GlueTask) -> list[GlueExample]:
    out: list[GlueExample] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None) if spec.header else None
        if spec.header and header is None:
            raise ValueError(f"{path}: the file is empty (expected a header line and examples)")
        col = {name: i for i, name in enumerate(header)} if header else {}

        def index(key: str | int) -> int:
            if isinstance(key, int):
                return key
            if key not in col:
                raise ValueError(f"{path}: line 1: header has no column {key!r} (got {header})")
            return col[key]

        ia, il = index(spec.text_a), index(spec.label)
        ib = index(spec.text_b) if spec.text_b is not None else None
        width = len(header) if header else None
        for lineno, row in enumerate(rows, start=2 if header else 1):
            if width is not None and len(row) != width and not spec.ragged:
                raise ValueError(f"{path}: line {lineno}: expected {width} tab-separated columns, got {len(row)}")
            need = max(ia, il, ib if ib is not None else 0)
            if len(row) <= need:
                raise ValueError(f"{path}: line {lineno}: expected at least {need + 1} columns, got {len(row)}")
            raw = row[il].strip()
            if spec.labels is None:
                try:
                    label: int | float = float(raw)
                except ValueError:
                    raise ValueError(f"{path}: line {lineno}: score {raw!r} is not a number") from None
            elif raw in spec.labels:
                label = spec.labels.index(raw)
            else:
                raise ValueError(f"{path}: line {lineno}: label {raw!r} not in {list(spec.labels)}")
            out.append(GlueExample(row[ia], row[ib] if ib is not None else None, label))
    if not out:
        raise ValueError(f"{path}: no examples")
    return out


def hub_split_name(task: str, split: str) -> str:
    """Our split name (``train``/``dev``/``dev_matched``/``dev_mismatched``) → the hub dataset's."""
    spec = get_task(task)
    if split == "train":
        return "train"
    if split == "dev":
        split = spec.dev_split
    if split.startswith("dev"):
        return "validation" + split[3:]
    raise ValueError(f"unknown GLUE split {split!r}; use train, dev (MNLI also dev_matched, dev_mismatched)")


def glue_from_hub_rows(task: str, rows) -> list[GlueExample]:
    """Convert rows of the hub dataset (``nyu-mll/glue``) into the same examples as the TSV reader.

    The hub stores labels as class ids in the GLUE label order used by ``GLUE_TASKS`` (and STS-B
    as a float score), so only the column names differ.
    """
    spec = get_task(task)
    ca, cb = spec.hub_columns
    out = []
    for i, row in enumerate(rows):
        label = row["label"]
        if spec.labels is None:
            label = float(label)
        elif not (isinstance(label, int) and 0 <= label < len(spec.labels)):
            raise ValueError(f"{GLUE_HUB_ID}/{spec.hub_config} row {i}: label {label!r} not a class id")
        out.append(GlueExample(row[ca], row[cb] if cb else None, label))
    return out


def load_glue(task: str, split: str = "train") -> list[GlueExample]:
    """GLUE examples from the hub (local folders: :mod:`wlora.data.layout` finds the file,
    :func:`read_glue_file` reads it). Both sources give identical examples for the same split."""
    import datasets  # deferred: the hub path is optional

    spec = get_task(task)
    ds = datasets.load_dataset(GLUE_HUB_ID, spec.hub_config, split=hub_split_name(task, split))
    return glue_from_hub_rows(task, ds)
