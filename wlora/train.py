"""One training run of any method on any task: ``(TrainConfig, data, report callback) → RunResult``.

    python -m wlora.train --method weightlora --task rte --model PATH_OR_HUB_ID --data-dir PATH

This module is the public face of a run; the pieces live in files named after what they hold, in the
order a run uses them:

* :mod:`wlora.run_config` — :class:`TrainConfig`, every knob of a run (frozen, validated; unknown keys
  raise; the method's own fields live in ``method_config``), :class:`RunAssets`, :class:`RunResult`.
* :mod:`wlora.modeling` — :func:`prepare_run` resolves the model (local folder, or hub id → local
  snapshot), reads and tokenizes the task data once (cached), and checks the method config against
  the model (e.g. K ≤ n) before any training; :func:`build_run` makes model + method + engine.
* :mod:`wlora.schedule` — steps per epoch, the importance phase, which steps evaluate
  (:func:`planned_evaluations`, also a sweep's ASHA ``max_t``) and each step's micro-batches.
* :mod:`wlora.evaluation` — :func:`evaluate`, the task metrics.
* :mod:`wlora.loop` — :func:`run_training`: AdamW with the linear warm-up schedule
  (:class:`wlora.engine.Engine`), gradient accumulation, mixed precision and device placement via
  accelerate, ``report(metrics, checkpoint_dir)`` after each evaluation, resume, and a ``failed``
  status (no exception) when the loss turns NaN/inf; :func:`export_from_checkpoint`.
* :mod:`wlora.cli` — the command line; its flags and help come from the config classes' fields
  (:mod:`wlora.fields`, which also reads ``--set`` values), and it checks the data folder
  (:mod:`wlora.data.layout`) and the model folder (:mod:`wlora.model_source`) before loading torch.

Names are resolved lazily, so ``python -m wlora.train --help`` loads no torch. Never imports ray or mlflow.
"""

from __future__ import annotations

from wlora.lazy import lazy_exports

_HOMES = {
    "OBJECTIVE": "wlora.run_config",
    "DEFAULT_MODEL": "wlora.run_config",
    "TrainConfig": "wlora.run_config",
    "RunAssets": "wlora.run_config",
    "RunResult": "wlora.run_config",
    "prepare_run": "wlora.modeling",
    "build_run": "wlora.modeling",
    "resolve_model": "wlora.model_source",
    "parse_field_value": "wlora.fields",
    "planned_evaluations": "wlora.schedule",
    "evaluate": "wlora.evaluation",
    "run_training": "wlora.loop",
    "export_from_checkpoint": "wlora.loop",
    "CHECKPOINT_FILE": "wlora.loop",
    "Engine": "wlora.engine",
    "NonFiniteLossError": "wlora.engine",
    "seed_everything": "wlora.engine",
    "main": "wlora.cli",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

if __name__ == "__main__":
    from wlora.cli import main

    raise SystemExit(main())
