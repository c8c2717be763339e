"""The training loop: :func:`run_training` (evaluate, report, checkpoint, resume, NaN → failed) and
:func:`export_from_checkpoint`."""

from __future__ import annotations

import inspect
import json
import logging
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wlora.core.accounting import count_parameters
from wlora.core.stability import SelectionTracker
from wlora.engine import NonFiniteLossError
from wlora.evaluation import evaluate
from wlora.modeling import build_resolved_run, build_run, prepare_run
from wlora.run_config import RunAssets, RunResult, TrainConfig
from wlora.schedule import micro_batches

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB → MiB (process peak RSS)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # One process may run many trials (reused Ray actors, tests) with different precisions; accelerate
    # keeps a process-wide state that refuses to change, so start each run from a clean one.
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu)


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_warned_precision: set[tuple[str, str]] = set()


def actual_precision(accelerator, device: torch.device) -> str:
    """The precision the run's matmuls actually compute in (measured under its autocast), e.g. "fp32" when
    fp16 was requested on a CPU, where accelerate runs fp32 without a word."""
    with accelerator.autocast():
        out = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    return _DTYPE_NAMES.get(out.dtype, str(out.dtype))


def check_precision(requested: str, actual: str, device: torch.device) -> None:
    """One warning per process when the precision that runs is not the one requested."""
    want = {"no": "fp32"}.get(requested, requested)
    if want != actual and (requested, str(device)) not in _warned_precision:
        _warned_precision.add((requested, str(device)))
        logger.warning("mixed_precision=%s was requested, but %s computes in %s", requested, device, actual)


def _wants_checkpoint(report: Callable) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(report).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def read_checkpoint(resume_from: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """The training state in ``resume_from`` for ``cfg``; ``ValueError`` (one line naming the file) when it is
    missing, unreadable (truncated) or was written by a different config."""
    path = Path(resume_from) / CHECKPOINT_FILE
    if not path.is_file():
        raise ValueError(f"--resume-from {resume_from}: no {CHECKPOINT_FILE} there (not a checkpoint folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated / not a torch file: any reader error means the same
        raise ValueError(f"--resume-from: {path} is damaged ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or "engine" not in state or "config" not in state:
        raise ValueError(f"--resume-from: {path} is not a wlora checkpoint")
    if state["config"] != jsonable(cfg.to_flat()):
        mine, theirs = jsonable(cfg.to_flat()), state["config"]
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(
            f"--resume-from {resume_from} was written by a different config (differs in {', '.join(diff)})"
        )
    return state


def check_assets_match(cfg: TrainConfig, data: Any) -> None:
    """Refuse to train ``cfg`` on data prepared for another evaluation split: a run whose config says
    ``eval_split=dev`` must score dev, never the held-out examples another config prepared (and vice versa)."""
    want = (cfg.task, cfg.eval_split, float(cfg.holdout), float(cfg.train_from_dev))
    have = (data.task, data.eval_split, float(data.holdout), float(data.train_from_dev))
    if want != have:
        raise ValueError(
            f"the run asks for (task, eval_split, holdout, train_from_dev) = {want}, but its prepared data is "
            f"{have}: prepare the data with this run's own config (wlora.modeling.prepare_run(cfg))"
        )


def run_training(
    cfg: TrainConfig,
    *,
    assets: RunAssets | None = None,
    report: Callable[..., Any] | None = None,
    resume_from: str | Path | None = None,
    output_dir: str | Path | None = None,
) -> RunResult:
    """Train ``cfg`` to the end (or to a NaN/inf loss) and return the result.

    Args:
        assets: from :func:`prepare_run` (built here if None).
        report: called after every evaluation as ``report(metrics, checkpoint_dir)`` — the directory
            holds a full checkpoint and is deleted when the call returns, so copy it if you keep it —
            or as ``report(metrics)`` if it takes one argument (no checkpoint is written).
        resume_from: a checkpoint directory written by an earlier ``report`` / ``output_dir``.
        output_dir: if set, the final checkpoint (``checkpoint/``) and ``result.json`` go here.

    A NaN/inf loss ends the run with ``status="failed"`` and the reason in ``error``; the weights
    of the failing step are never applied.
    """
    assets = assets or prepare_run(cfg)
    data = assets.data
    check_assets_match(cfg, data)
    accelerator = _accelerator(cfg)
    device = accelerator.device
    model, method, engine, schedule = build_resolved_run(cfg, assets, device)
    steps_per_epoch, total, phase = schedule.steps_per_epoch, schedule.total, schedule.phase
    engine.autocast = accelerator.autocast
    engine.grad_scaler = accelerator.scaler
    precision = actual_precision(accelerator, device)
    check_precision(cfg.mixed_precision, precision, device)
    history: list[dict[str, float]] = []
    # Changes of the kept set (adapters / ranks) after every optimizer step; see wlora.core.stability.
    tracker = SelectionTracker()
    if resume_from is not None:
        state = read_checkpoint(resume_from, cfg)
        engine.load_state_dict(state["engine"])
        history = list(state["history"])
        if state.get("selection_tracker") is not None:
            tracker.load_state_dict(state["selection_tracker"])
    tracker.observe(engine.step, method.kept_adapters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wants_ckpt = report is not None and _wants_checkpoint(report)

    def save_checkpoint(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "engine": engine.state_dict(),
                "history": history,
                "config": jsonable(cfg.to_flat()),
                "selection_tracker": tracker.state_dict(),
            },
            folder / CHECKPOINT_FILE,
        )

    status, error = "completed", None
    losses: list[float] = []
    step_times: list[float] = []
    examples = 0
    train_time = 0.0
    while engine.step < total:
        micro = micro_batches(cfg, data, engine.step, steps_per_epoch, device, method)
        t0 = time.perf_counter()
        try:
            loss = engine.train_step(micro)
        except NonFiniteLossError as e:
            status, error = "failed", str(e)
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        train_time += dt
        step_times.append(dt)
        losses.append(loss)
        tracker.observe(engine.step, method.kept_adapters())
        examples += sum(len(mb["input_ids"]) for mb in micro)
        if not schedule.evaluates(engine.step):
            continue
        metrics = evaluate(model, cfg, assets, device, accelerator.autocast)
        counts = count_parameters(model, method.head_names)
        metrics.update(
            step=float(engine.step),
            epoch=max(0, engine.step - phase) / steps_per_epoch,
            train_loss=float(np.mean(losses)),
            lr=engine.scheduler.get_last_lr()[0],
            trainable_params=float(counts["trainable"]),
            trainable_pct=float(counts["trainable_pct"]),
            # the papers' "# Params": what the method trains besides the task head, which every method trains
            method_params=float(counts["trainable"] - counts["head"]),
            method_pct=100.0 * (counts["trainable"] - counts["head"]) / max(counts["base_model"], 1),
            active_adapters=float(len(method.active_adapters)),
            step_time_s=float(np.mean(step_times)),
            examples_per_s=examples / max(sum(step_times), 1e-9),
            peak_mem_mb=_peak_memory_mb(device),
            device=str(device),
            # what this evaluation scored, as a fact of the run (not the config's label)
            eval_split=data.eval_split,
            eval_examples=float(data.n_eval_examples),
            eval_fingerprint=data.eval_fingerprint,
            precision_requested=cfg.mixed_precision,
            precision=precision,
            **tracker.metrics(total),
            **method.metrics(),
        )
        history.append(metrics)
        losses, step_times, examples = [], [], 0
        if report is not None:
            if wants_ckpt:
                folder = Path(tempfile.mkdtemp(prefix="wlora-ckpt-"))
                try:
                    save_checkpoint(folder)
                    report(dict(metrics), str(folder))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            else:
                report(dict(metrics))
    result = RunResult(
        status=status,
        error=error,
        metrics=dict(history[-1]) if history else {},
        history=history,
        method_report=jsonable({**method.report(), "selection_stability": tracker.summary()}),
        steps=engine.step,
        total_steps=total,
        train_time_s=train_time,
    )
    if output_dir is not None:
        out = Path(output_dir)
        save_checkpoint(out / "checkpoint")
        (out / "result.json").write_text(json.dumps(jsonable(result.to_json()), indent=2))
    return result


def export_from_checkpoint(
    cfg: TrainConfig, assets: RunAssets | None, checkpoint_dir: str | Path, out_dir: str | Path
) -> Path:
    """Rebuild the run from a checkpoint and write it as a standard PEFT adapter (``peft`` loads it);
    ``full`` fine-tuning is written as a whole model (``save_pretrained``)."""
    from wlora.export import export_method

    assets = assets or prepare_run(cfg)
    model, method, engine = build_run(cfg, assets, "cpu")
    state = torch.load(Path(checkpoint_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    engine.load_state_dict(state["engine"])
    if method.export_kind == "full_model":
        export_method(model, method, out_dir)
    else:
        export_method(model, method, out_dir, base_model_name_or_path=cfg.model)
    return Path(out_dir)


def data_kind_exportable(assets: RunAssets) -> bool:
    """PEFT export covers the classification / regression / QA models (peft task types of the heads)."""
    return assets.data.kind != "seq2seq" or assets.model_type != "encoder-decoder"
