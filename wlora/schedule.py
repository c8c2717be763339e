"""The run's step plan: steps per epoch and in all, the LoRA-drop importance phase, which optimizer
steps evaluate, and the micro-batches of each step.

:func:`planned_evaluations` is the one count of evaluations a run reports: the runner evaluates on
exactly the steps :meth:`Schedule.evaluates` accepts, and a sweep's ASHA ``max_t`` is this number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from wlora.core.config import MethodConfig
from wlora.core.controller import Controller
from wlora.data.tasks import TaskData, collate
from wlora.registry import RUN_FIELDS, make_config
from wlora.run_config import TrainConfig


def task_steps(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps of the task run) for ``n_train`` training examples."""
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))
    return steps_per_epoch, total


def run_info(cfg: TrainConfig, n_train: int) -> dict[str, int]:
    """The run facts a method config may declare as fields (``wlora.registry.RUN_FIELDS``), by name."""
    steps_per_epoch, total = task_steps(cfg, n_train)
    facts = {"total_steps": total, "steps_per_epoch": steps_per_epoch}
    assert set(facts) == set(RUN_FIELDS), "every run field needs its value here"
    return facts


@dataclass(frozen=True)
class Schedule:
    """Optimizer steps ``1..total``: first ``phase`` importance steps (LoRA-drop), then the task run."""

    steps_per_epoch: int
    total: int
    phase: int
    eval_every: int | None

    def evaluates(self, step: int) -> bool:
        """Whether the run evaluates (and reports) after optimizer step ``step`` (1-based)."""
        if step == self.total:
            return True
        if self.eval_every is not None:
            return step % self.eval_every == 0
        return step > self.phase and (step - self.phase) % self.steps_per_epoch == 0

    @property
    def n_evaluations(self) -> int:
        return sum(1 for s in range(1, self.total + 1) if self.evaluates(s))


@dataclass(frozen=True)
class ResolvedRun:
    """A config resolved against its training set, once: the method's validated config (run fields filled
    in) and the step plan."""

    method_config: MethodConfig
    schedule: Schedule


def resolve_run(cfg: TrainConfig, n_train: int, extra_values: Mapping[str, Any] | None = None) -> ResolvedRun:
    """The one resolution of ``cfg`` on ``n_train`` training examples: the method's values (run fields filled
    in, then ``extra_values`` — what the model adds, e.g. a warm-started decoder's modules to train), its
    config validated once, and the schedule (LoRA-drop's importance phase comes from that config). The CLI,
    the trainable (through :func:`wlora.modeling.build_run`), the sweep's plan and its ASHA ``max_t`` use it."""
    info = run_info(cfg, n_train)
    values = {**cfg.method_values(info), **(extra_values or {})}
    method_config = make_config(cfg.method, values)
    phase = getattr(method_config, "importance_steps", 0) or 0
    schedule = Schedule(info["steps_per_epoch"], info["total_steps"] + phase, phase, cfg.eval_every)
    return ResolvedRun(method_config, schedule)


def schedule_for(cfg: TrainConfig, n_train: int) -> Schedule:
    """The schedule of ``cfg`` on ``n_train`` examples (:func:`resolve_run`)."""
    return resolve_run(cfg, n_train).schedule


def planned_evaluations(cfg: TrainConfig, n_train: int) -> int:
    """How many evaluations (reports) a full run of ``cfg`` on ``n_train`` examples makes (ASHA's max_t)."""
    return schedule_for(cfg, n_train).n_evaluations


def importance_sample(cfg: TrainConfig, data: TaskData, ratio: float) -> list[int]:
    """LoRA-drop's stratified ``sample_ratio`` subset of the training set (STS-B scores binned to
    integers; QA / seq2seq have no class to stratify by, so the draw is uniform)."""
    from wlora.core.sampling import stratified_sample

    if data.kind == "classification":
        labels = [f["labels"] for f in data.train]
    elif data.kind == "regression":
        labels = [round(f["labels"]) for f in data.train]
    else:
        labels = [0] * len(data.train)
    return stratified_sample(labels, ratio, seed=cfg.seed)


def importance_batch_indices(sample: list[int], step: int, per_step: int, seed: int) -> list[int]:
    """Training-set indices of importance step ``step`` (0-based): the importance run reads the
    sample as a stream of passes (pass p: a permutation seeded by ``seed`` and p) and every step takes
    the next ``min(per_step, |sample|)`` examples, so no step is empty or short whatever the sample's
    size; the phase's length (``importance_epochs · sample_steps`` steps) is what the run plans."""
    m = len(sample)
    q = min(per_step, m)
    out: list[int] = []
    pos = step * q
    while len(out) < q:
        p, offset = divmod(pos, m)
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed * 7_919 + p)).tolist()
        take = perm[offset : offset + q - len(out)]
        out.extend(sample[i] for i in take)
        pos += len(take)
    return out


def micro_batches(
    cfg: TrainConfig, data: TaskData, step: int, steps_per_epoch: int, device, method: Controller | None = None
) -> list[dict]:
    """The micro-batches of optimizer step ``step`` (0-based): a pure function of (seed, step), so a
    resumed run sees exactly the batches it would have seen.

    A method with an importance phase on a data sample (LoRA-drop: ``importance_steps`` and
    ``config.sample_ratio``) gets its first steps from :func:`importance_batch_indices`, then the
    normal epochs (counted from the end of the phase)."""
    per_step = cfg.batch_size * cfg.grad_accum
    phase = getattr(method, "importance_steps", 0) or 0
    if step < phase:
        idx = importance_batch_indices(
            importance_sample(cfg, data, method.config.sample_ratio), step, per_step, cfg.seed
        )
    else:
        epoch, pos = divmod(step - phase, steps_per_epoch)
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        idx = order[pos * per_step : (pos + 1) * per_step].tolist()
    out = []
    for i in range(0, len(idx), cfg.batch_size):
        feats = [data.train[j] for j in idx[i : i + cfg.batch_size]]
        out.append({k: v.to(device) for k, v in collate(feats, data.pad_token_id).items()})
    return out
