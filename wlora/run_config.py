"""The configuration of one run (:class:`TrainConfig`), what is resolved before it (:class:`RunAssets`)
and what it returns (:class:`RunResult`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wlora.data.metrics import MAIN_METRIC
from wlora.data.registry import DEFAULT_TASK, get_spec, list_tasks
from wlora.data.tasks import TaskData, task_kind
from wlora.fields import check_types
from wlora.registry import get_method, make_config

#: The metric every task reports as its objective (higher is better for every task).
OBJECTIVE = f"eval_{MAIN_METRIC}"
#: The model used when none is given: small, the same architecture family as the papers' encoders.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs. Field names are the CLI flags (``--warmup-steps``) and Tune keys."""

    method: str = field(default="lora", metadata={"help": "Method slug (``wlora.registry.METHODS``)."})
    task: str = field(
        default=DEFAULT_TASK,
        metadata={"help": f"Task: {', '.join(list_tasks())} (wlora.data.registry)."},
    )
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hugging Face hub id or local model folder."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "Local data: a folder holding glue/<TASK>/ (or the task folders directly, as the GLUE download "
                "script makes them), squad/, xsum/, cnn_dailymail/, or one task's own folder; None = the hub."
            )
        },
    )
    train_file: str | None = field(
        default=None, metadata={"help": "QA / summarisation: read the training split from this file instead."}
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "QA / summarisation: read the evaluation split from this file instead."}
    )
    eval_split: str = field(
        default="dev",
        metadata={
            "help": "dev (MNLI: matched; also dev_mismatched), test for summarisation, or holdout: the examples "
            "`holdout` keeps out of training."
        },
    )
    holdout: float = field(
        default=0.0,
        metadata={
            "help": "Hold this share (< 1) or number (>= 1) of training examples out of training (seeded by data_seed, "
            "stratified by label); 0 = none. The sweep's --protocol heldout scores its choices on them."
        },
    )
    train_from_dev: float = field(
        default=0.0,
        metadata={
            "help": "For a task whose training file is not at hand (QNLI here has only its dev file): this share "
            "(< 1) or number (>= 1) of the dev file's examples, seeded by data_seed and stratified, become the "
            "training pool; dev is the rest. 0 = read the training file."
        },
    )
    method_config: Mapping[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "The method's config fields (r, alpha, k, t, lr_w, …); validated by the method's config class."
        },
    )
    lr: float = field(default=5e-4, metadata={"help": "Peak AdamW learning rate."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps (then linear decay to 0)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the global gradient norm; None = no clipping."}
    )
    batch_size: int = field(
        default=32, metadata={"help": "Examples per optimizer step and device = batch_size × grad_accum."}
    )
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step."})
    eval_batch_size: int = field(default=64, metadata={"help": "Examples per evaluation batch."})
    epochs: float = field(
        default=3.0,
        metadata={"help": "Training length in epochs (fractions allowed); used only while max_steps is none."},
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "Training length in optimizer steps; when set, it wins over epochs (none: train epochs)."},
    )
    eval_every: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate every N optimizer steps; None = at the end of every epoch (and always at the end)."
        },
    )
    max_length: int = field(
        default=128, metadata={"help": "Truncation length of inputs (QA: window length; seq2seq: source length)."}
    )
    max_target_length: int = field(
        default=64, metadata={"help": "Seq2seq: target length (training) and generated tokens (evaluation)."}
    )
    doc_stride: int = field(default=64, metadata={"help": "QA: overlap of consecutive context windows, in tokens."})
    source_prefix: str | None = field(
        default=None, metadata={"help": 'Seq2seq: input prefix; None = "summarize: " for T5 models, "" otherwise.'}
    )
    num_beams: int = field(default=1, metadata={"help": "Seq2seq: beams at evaluation."})
    train_subset: int | None = field(
        default=None, metadata={"help": "Keep this many training examples (drawn with data_seed)."}
    )
    eval_subset: int | None = field(
        default=None, metadata={"help": "Keep this many evaluation examples (drawn with data_seed)."}
    )
    data_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the subset draws (kept apart from `seed` so all trials of a sweep see the same data)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the run: head init, adapter init, dropout, batch order."})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="no", metadata={"help": "Mixed precision on GPU: no, bf16 or fp16."}
    )
    cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is available."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Tokenized-feature cache; None = $WLORA_CACHE_DIR or ~/.cache/wlora."}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_config", dict(self.method_config or {}))
        get_method(self.method)  # raises for an unknown slug
        task_kind(self.task)  # raises for an unknown task
        # A value of the wrong type (``--set lr=abc``) is one ValueError naming the field, never a TypeError.
        check_types(TrainConfig, {name: getattr(self, name) for name in self.field_names()})
        check_types(get_method(self.method).config_cls, self.method_config)
        splits = eval_splits(self.task)
        if self.eval_split not in splits:
            raise ValueError(
                f"`eval_split` must be one of {', '.join(splits)} for {self.task}, got {self.eval_split!r}"
            )
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
            (
                self.holdout >= 0 and math.isfinite(self.holdout) and (self.holdout < 1 or self.holdout % 1 == 0),
                "holdout",
                "0, a share in (0, 1) or a whole number >= 1",
            ),
            (self.eval_split != "holdout" or self.holdout > 0, "holdout", '> 0 when eval_split="holdout"'),
            (
                self.train_from_dev >= 0 and math.isfinite(self.train_from_dev),
                "train_from_dev",
                ">= 0 (a share < 1 or a number >= 1)",
            ),
            (self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision", "one of no, bf16, fp16"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"`{name}` must be {want}, got {getattr(self, name)!r}")
        make_config(self.method, self.method_values(None))  # the method's own validation

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

    def method_values(self, run_info: Mapping[str, Any] | None) -> dict[str, Any]:
        """The method config, with run facts (``wlora.registry.RUN_FIELDS``: total steps …) filled in where
        the method declares them and the user left them unset (:func:`wlora.schedule.resolve_run`)."""
        values = dict(self.method_config)
        for key in get_method(self.method).run_fields:
            if values.get(key) is None and key in (run_info or {}):
                values[key] = run_info[key]
        return values


def eval_splits(task: str) -> tuple[str, ...]:
    """The ``eval_split`` values ``task`` has: ``dev`` (MNLI also ``dev_mismatched``; summarisation also
    ``test``) and ``holdout`` (the examples ``holdout`` keeps out of training)."""
    spec = get_spec(task)
    if spec.glue is not None and spec.glue.dev_split != "dev":
        return ("dev", spec.glue.dev_split, spec.glue.dev_split.replace("_matched", "_mismatched"), "holdout")
    if spec.summarization is not None:
        return ("dev", "validation", "test", "holdout")
    return ("dev", "holdout")


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
