"""The task registry: every fact about a task in one place, and the one rule that turns a name into a task key.

A task's spec holds its key and aliases, its kind, the folder names it goes by, its label set and file format
(GLUE TSV columns, SQuAD version, summarisation columns), the metrics it reports, its column header in the
results table, how its score (``eval_main``) is made, and its hub dataset. Task lists, metrics maps, table
columns and footnotes, help texts and folder lookups all derive from :data:`TASKS`. A new GLUE-like task is one
entry here; a new kind of task is an entry plus its loader (``wlora.data.tasks``).

Nothing here imports more than the standard library: the command line reads it before torch loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TaskFamily = Literal["glue", "qa", "seq2seq"]


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task's TSV format."""

    name: str
    """Folder name in the GLUE layout (e.g. ``SST-2``)."""
    text_a: str | int
    """Column name (headered files) or index (CoLA) of the first sentence."""
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None
    """Label strings in class-index order; None for regression (STS-B)."""
    header: bool = True
    ragged: bool = False
    """Rows may have more columns than the header (MNLI's TSVs)."""
    dev_split: str = "dev"
    hub_config: str = ""
    """Config name of the hub dataset ``nyu-mll/glue``."""
    hub_columns: tuple[str, str | None] = ("sentence", None)
    """Text columns of the hub dataset (its labels are already class ids in ``labels`` order)."""


@dataclass(frozen=True)
class SummarizationTask:
    """A summarisation task's files and columns."""

    folder: str
    hub_id: str
    hub_config: str | None
    document: str
    summary: str


@dataclass(frozen=True)
class TaskSpec:
    key: str
    family: TaskFamily
    header: str
    """Column header in the results table (the papers' spelling)."""
    metrics: tuple[str, ...]
    """Metrics the table reports (``eval_<name>``), in the papers' order."""
    score: str
    """How the task's score ``eval_main`` (the sweep's objective) is made from its metrics."""
    hub_id: str
    aliases: tuple[str, ...] = ()
    glue: GlueTask | None = None
    squad_version: str | None = None
    summarization: SummarizationTask | None = None
    train_size: int | None = None
    """Examples in the public training split (what a forecast assumes when the data is not at hand)."""
    dev_size: int | None = None
    """Examples in the split the task reports on (GLUE dev / dev_matched, SQuAD dev, summarisation validation)."""

    @property
    def folders(self) -> tuple[str, ...]:
        """Names the task's data folder goes by, the canonical one first."""
        if self.glue is not None:
            return (self.glue.name, self.key)
        if self.summarization is not None:
            return (self.summarization.folder,)
        return ("squad", self.key)

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.glue.labels if self.glue is not None else None


def _glue(
    key: str,
    header: str,
    metrics: tuple[str, ...],
    fmt: GlueTask,
    aliases: tuple[str, ...] = (),
    sizes: tuple[int, int] = (0, 0),
) -> TaskSpec:
    score = metrics[0] if len(metrics) == 1 else f"mean of {' and '.join(metrics)}"
    train, dev = sizes
    return TaskSpec(
        key, "glue", header, metrics, score, "nyu-mll/glue", aliases, glue=fmt, train_size=train, dev_size=dev
    )


_PAIR = ("sentence1", "sentence2")
#: The task of a run that names none.
DEFAULT_TASK = "sst2"

#: Every task, in the papers' table order (GLUE as in the WeightLoRA paper's Table 2, then SQuAD, then summarisation).
TASKS: dict[str, TaskSpec] = {
    spec.key: spec
    for spec in (
        _glue(
            "mnli",
            "MNLI Acc",
            ("accuracy",),
            GlueTask(
                "MNLI",
                "sentence1",
                "sentence2",
                "gold_label",
                ("entailment", "neutral", "contradiction"),
                ragged=True,
                dev_split="dev_matched",
                hub_config="mnli",
                hub_columns=("premise", "hypothesis"),
            ),
            aliases=("mnli_matched", "mnli_mismatched", "mnli-m", "mnli-mm"),
            sizes=(392702, 9815),
        ),
        _glue(
            "sst2",
            "SST-2 Acc",
            ("accuracy",),
            GlueTask("SST-2", "sentence", None, "label", ("0", "1"), hub_config="sst2"),
            sizes=(67349, 872),
        ),
        _glue(
            "cola",
            "CoLA Mcc",
            ("matthews_corrcoef",),
            GlueTask("CoLA", 3, None, 1, ("0", "1"), header=False, hub_config="cola"),
            sizes=(8551, 1043),
        ),
        _glue(
            "qqp",
            "QQP Acc/F1",
            ("accuracy", "f1"),
            GlueTask(
                "QQP",
                "question1",
                "question2",
                "is_duplicate",
                ("0", "1"),
                hub_config="qqp",
                hub_columns=("question1", "question2"),
            ),
            sizes=(363846, 40430),
        ),
        _glue(
            "qnli",
            "QNLI Acc",
            ("accuracy",),
            GlueTask(
                "QNLI",
                "question",
                "sentence",
                "label",
                ("entailment", "not_entailment"),
                hub_config="qnli",
                hub_columns=("question", "sentence"),
            ),
            sizes=(104743, 5463),
        ),
        _glue(
            "rte",
            "RTE Acc",
            ("accuracy",),
            GlueTask("RTE", *_PAIR, "label", ("entailment", "not_entailment"), hub_config="rte", hub_columns=_PAIR),
            sizes=(2490, 277),
        ),
        _glue(
            "mrpc",
            "MRPC Acc/F1",
            ("accuracy", "f1"),
            GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("0", "1"), hub_config="mrpc", hub_columns=_PAIR),
            sizes=(3668, 408),
        ),
        _glue(
            "stsb",
            "STS-B Pear/Spear",
            ("pearson", "spearman"),
            GlueTask("STS-B", *_PAIR, "score", None, hub_config="stsb", hub_columns=_PAIR),
            sizes=(5749, 1500),
        ),
        TaskSpec(
            "squad",
            "qa",
            "SQuAD v1.1 EM/F1",
            ("exact_match", "f1"),
            "F1",
            "rajpurkar/squad",
            squad_version="1.1",
            train_size=87599,
            dev_size=10570,
        ),
        TaskSpec(
            "squad_v2",
            "qa",
            "SQuAD v2.0 EM/F1",
            ("exact_match", "f1"),
            "F1",
            "rajpurkar/squad_v2",
            squad_version="2.0",
            train_size=130319,
            dev_size=11873,
        ),
        TaskSpec(
            "xsum",
            "seq2seq",
            "XSum R-1/2/L",
            ("rouge1", "rouge2", "rougeL"),
            "mean of ROUGE-1, ROUGE-2 and ROUGE-L",
            "EdinburghNLP/xsum",
            summarization=SummarizationTask("xsum", "EdinburghNLP/xsum", None, "document", "summary"),
            train_size=204045,
            dev_size=11332,
        ),
        TaskSpec(
            "cnn_dailymail",
            "seq2seq",
            "CNN/DM R-1/2/L",
            ("rouge1", "rouge2", "rougeL"),
            "mean of ROUGE-1, ROUGE-2 and ROUGE-L",
            "abisee/cnn_dailymail",
            aliases=("cnndm", "cnn-dm"),
            summarization=SummarizationTask("cnn_dailymail", "abisee/cnn_dailymail", "3.0.0", "article", "highlights"),
            train_size=287113,
            dev_size=13368,
        ),
    )
}


def _fold(name: str) -> str:
    return re.sub(r"[-_ ./]", "", name.strip().lower())


_INDEX: dict[str, str] = {}
for _spec in TASKS.values():
    for _name in (_spec.key, *_spec.aliases, *_spec.folders):
        _INDEX.setdefault(_fold(_name), _spec.key)


def normalize_task(name: str) -> str:
    """The key of the task ``name`` means: case, ``-``/``_`` and aliases aside (``SST-2`` → ``sst2``,
    ``MNLI-mm`` → ``mnli``, ``SQuAD_v2`` → ``squad_v2``). Raises ``ValueError`` naming the known tasks."""
    key = _INDEX.get(_fold(str(name)))
    if key is None:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return key


def get_spec(name: str) -> TaskSpec:
    return TASKS[normalize_task(name)]


def list_tasks(family: TaskFamily | None = None) -> list[str]:
    """Task keys (of one family), in the table's order."""
    return [k for k, s in TASKS.items() if family is None or s.family == family]
