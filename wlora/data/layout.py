"""Where a task's local files are: the data folder layouts users have.

``data_dir`` may be any of

* a folder holding ``glue/<TASK>/``, ``squad/``, ``xsum/``, ``cnn_dailymail/`` (this project's layout);
* a folder holding the task folders directly — the GLUE download script's ``glue_data/RTE/…``;
* one task's own folder (``glue_data/RTE`` itself, a folder with ``train-v1.1.json``, …).

The first folder that holds both split files wins. Task folders match by name case-insensitively
(``RTE``, ``rte``; ``SST-2``, ``sst2``). When none does, one ``FileNotFoundError`` lists every place looked.
No torch here: the command line checks the data before a model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from wlora.data.glue import GLUE_TASKS, get_task
from wlora.data.registry import get_spec
from wlora.data.squad import SQUAD_VERSIONS
from wlora.data.summarization import SUMMARIZATION_TASKS

#: How to run without hub access; ends every "could not fetch the model / data" error.
LOCAL_COPIES_HINT = (
    "Without hub access, point the run at local copies: --model PATH (or $WLORA_MODEL) for the model, "
    "--data-dir PATH (or $WLORA_DATA_DIR) for the data."
)


def one_line(error: BaseException) -> str:
    """``error`` as ``Type: message`` on one line (hub errors span several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def split_file_names(task: str, eval_split: str = "dev") -> tuple[str, str]:
    """File names of ``task``'s training and evaluation splits in its folder."""
    if task in GLUE_TASKS:
        spec = get_task(task)
        return "train.tsv", f"{spec.dev_split if eval_split == 'dev' else eval_split}.tsv"
    if task in SQUAD_VERSIONS:
        v = SQUAD_VERSIONS[task]
        return f"train-v{v}.json", f"dev-v{v}.json"
    if task in SUMMARIZATION_TASKS:
        ev = {"dev": "validation"}.get(eval_split, eval_split)
        return "train.jsonl", f"{ev}.jsonl"
    raise ValueError(f"unknown task {task!r}")


def _folder_names(task: str) -> tuple[str, ...]:
    """Names a task's folder goes by, the canonical one first."""
    return get_spec(task).folders


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _child(parent: Path, names: tuple[str, ...]) -> Path:
    """``parent/<name>`` for the first name that exists (exact, then case-insensitive); else the first."""
    for name in names:
        if (parent / name).is_dir():
            return parent / name
    if parent.is_dir():
        wanted = {_key(n) for n in names}
        for entry in sorted(parent.iterdir()):
            if entry.is_dir() and _key(entry.name) in wanted:
                return entry
    return parent / names[0]


def candidate_folders(task: str, data_dir: str | Path) -> list[Path]:
    """The folders that may hold ``task``'s files under ``data_dir``, in the order they are tried."""
    root = Path(data_dir).expanduser()
    names = _folder_names(task)
    if task in GLUE_TASKS:
        return [_child(_child(root, ("glue", "glue_data")), names), _child(root, names), root]
    return [_child(root, names), root]


def locate_task_files(
    task: str,
    data_dir: str | Path | None,
    *,
    eval_split: str = "dev",
    train_file: str | Path | None = None,
    eval_file: str | Path | None = None,
    need_train: bool = True,
) -> tuple[Path | None, Path | None]:
    """The training and evaluation files of ``task``; ``None`` for a split read from the hub (or, with
    ``need_train=False``, for a training file that is not looked for).

    A split given as a file (``train_file`` / ``eval_file``) is taken as is; the other comes from
    ``data_dir`` (see the module doc), or the hub when ``data_dir`` is None.

    Raises:
        FileNotFoundError: a given file or ``data_dir`` is missing, or no candidate folder holds the
            split files (the message lists every folder looked in and what each lacked).
    """
    given = [Path(f).expanduser() if f else None for f in (train_file, eval_file)]
    for f in given:
        if f is not None and not f.is_file():
            raise FileNotFoundError(f"{task}: data file not found: {f}")
    if all(f is not None for f in given):
        return given[0], given[1]
    if data_dir is None:
        return given[0], given[1]
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    names = split_file_names(task, eval_split)
    needed = [n for i, (n, f) in enumerate(zip(names, given, strict=True)) if f is None and (i or need_train)]
    looked = []
    for folder in dict.fromkeys(candidate_folders(task, root)):
        missing = [n for n in needed if not (folder / n).is_file()]
        if not missing:
            found = [g if g is not None else folder / n for n, g in zip(names, given, strict=True)]
            return (found[0] if need_train or given[0] is not None else None), found[1]
        looked.append(f"{folder} (no {', '.join(missing)})")
    raise FileNotFoundError(
        f"{task}: data files not found: no {' and '.join(needed)} under --data-dir {root}; looked in: "
        + "; ".join(looked)
    )
