"""Ray Tune function trainables, one per method slug, over one shared runner (:mod:`trainables.runner`).

``get_trainable("weightlora")`` is a plain function ``train_weightlora(config, assets)`` for
``tune.with_parameters(fn, assets=prepare_run(cfg))``: the model and data are resolved once on the
driver and shipped through the object store, never downloaded inside a trial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables.runner import CELL_KEY, FINAL_KEY, ROLE_KEY, TrialFailedError, run_trial, trial_config
from wlora.registry import METHODS, get_method

__all__ = [
    "CELL_KEY",
    "FINAL_KEY",
    "ROLE_KEY",
    "TrialFailedError",
    "get_trainable",
    "run_trial",
    "train_pooled",
    "trial_config",
]


def _make(slug: str) -> Callable[..., None]:
    def trainable(config: dict[str, Any], assets: Any = None) -> None:
        run_trial(config, assets=assets, method=slug)

    trainable.__name__ = trainable.__qualname__ = f"train_{slug}"
    trainable.__doc__ = f"Ray Tune function trainable for method {slug!r} (see trainables.runner.run_trial)."
    return trainable


_TRAINABLES: dict[str, Callable[..., None]] = {}


def get_trainable(slug: str) -> Callable[..., None]:
    """The trainable of ``slug`` (raises ``ValueError`` for an unknown method)."""
    get_method(slug)
    if slug not in _TRAINABLES:
        _TRAINABLES[slug] = _make(slug)
    return _TRAINABLES[slug]


def trainable_names() -> list[str]:
    return [f"train_{slug}" for slug in METHODS]


def assets_key(task: str, eval_split: str | None = None) -> str:
    """Key of a pooled sweep's prepared data: the task for its search trials, ``task@split`` for runs that
    evaluate another split (the seed re-runs of ``--protocol heldout`` score dev)."""
    return task if eval_split is None else f"{task}@{eval_split}"


def train_pooled(config: dict[str, Any], assets: Any = None) -> None:
    """The trainable of a pooled sweep: one function for every cell. ``assets`` maps each task (and each
    ``task@split`` a run evaluates) to its ``prepare_run`` output; the trial's ``task``, ``eval_split`` and
    ``method`` pick the assets and the method. The runner refuses data prepared for another split."""
    task, split = config["task"], config.get("eval_split")
    own = assets.get(assets_key(task, split)) if split is not None else None
    run_trial(config, assets=own if own is not None else assets[task], method=config["method"])
