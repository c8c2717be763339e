"""The one runner every trainable shares: Tune config → ``TrainConfig`` → ``wlora.train.run_training``.

Per evaluation the runner's callback becomes one ``ray.tune.report(metrics, checkpoint=...)`` (Ray
2.60 API: ``ray.train.report`` errors inside Tune). After training, one summary report repeats the
last evaluation with ``final = 1`` and ``method_report`` (JSON: selected adapters, |ω| / importance /
ranks per module), which the driver logs as ``selection.json``; the scheduler and searcher skip it.

A run that returns ``status == "failed"`` (e.g. a non-finite loss) raises :class:`TrialFailedError`
after its evaluations were reported, so Tune marks the trial ERROR and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import ray
from ray import tune

from wlora.train import TrainConfig, run_training

#: Key of the summary report that follows the last evaluation (see ``sweeps.search.FINAL_KEY``).
FINAL_KEY = "final"
#: Keys the pooled sweep adds to every trial's config (its cell, and ``trial`` or ``seed_run``); they route the
#: trial to its cell's search and ASHA and are not ``TrainConfig`` fields.
CELL_KEY = "sweep_cell"
ROLE_KEY = "sweep_role"


logger = logging.getLogger(__name__)


class TrialFailedError(RuntimeError):
    """The training run ended with ``status == "failed"`` (message: the runner's error)."""


def trial_config(config: Mapping[str, Any], method: str) -> TrainConfig:
    """The validated ``TrainConfig`` of a Tune config dict; unknown keys raise ``ValueError``."""
    flat = {k: v for k, v in config.items() if k not in (CELL_KEY, ROLE_KEY)}
    if flat.setdefault("method", method) != method:
        raise ValueError(f"trainable for {method!r} got config for method {flat['method']!r}")
    return TrainConfig.from_flat(flat)


def _clean(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = float("nan") if math.isnan(v) else v
        elif isinstance(v, int | float | str | bool) or v is None:
            out[k] = v
        else:
            out[k] = float(v)  # numpy / torch scalars
    return out


_warned_no_cuda = False


def device_fallback(cfg: TrainConfig, gpu_ids: list[str]) -> TrainConfig:
    """A trial Ray assigned GPU(s) to trains on them (Ray sets ``CUDA_VISIBLE_DEVICES`` to exactly those, so
    with fractional GPUs each trial sees only its own device). One that finds no CUDA (declared GPUs on a
    machine without them, a broken driver) trains on CPU, with one warning per process."""
    global _warned_no_cuda
    import torch

    if not gpu_ids or torch.cuda.is_available() or cfg.cpu:
        return cfg
    if not _warned_no_cuda:
        logger.warning(
            "this trial was assigned GPU %s, but its process finds no CUDA device (CUDA_VISIBLE_DEVICES=%s): "
            "training on CPU",
            ",".join(gpu_ids),
            os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        )
        _warned_no_cuda = True
    return dataclasses.replace(cfg, cpu=True)


def run_trial(config: dict[str, Any], *, assets: Any, method: str) -> None:
    """Train one trial of ``method`` and report every evaluation to Tune (runs inside a trial).

    Args:
        config: the trial's flat config (``TrainConfig`` fields + the method's config fields).
        assets: ``wlora.train.prepare_run`` output, resolved once on the driver (``tune.with_parameters``).
        method: the method slug.
    """
    cfg = trial_config(config, method)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    cfg = device_fallback(cfg, gpu_ids)
    # One "Checkpoint successfully created" line per evaluation and a "Loading weights" bar per trial would
    # flood the sweep's console (Ray's log deduplication does not fold them all).
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # On a cluster the model folder may exist on the driver only: one staged copy per node.
    assets = assets.on_this_node() if hasattr(assets, "on_this_node") else assets

    def report(metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        m = _clean(metrics)
        m["gpu_ids"] = ",".join(gpu_ids) or "none"
        if checkpoint_dir is None:
            tune.report(m)
        else:
            # Persisted (copied to the run's storage) before tune.report returns.
            tune.report(m, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        result = run_training(cfg, assets=assets, report=report)
    else:
        # A private copy: Tune may delete the stored checkpoint once newer ones exist.
        resume_dir = tempfile.mkdtemp(prefix="wlora-resume-")
        try:
            checkpoint.to_directory(resume_dir)
            result = run_training(cfg, assets=assets, report=report, resume_from=resume_dir)
        finally:
            shutil.rmtree(resume_dir, ignore_errors=True)

    if result.status != "completed":
        raise TrialFailedError(result.error or f"training ended with status {result.status!r}")
    summary = _clean(result.metrics or {})
    summary[FINAL_KEY] = 1.0
    summary["method_report"] = json.dumps(result.method_report or {}, default=str, sort_keys=True)
    tune.report(summary)
