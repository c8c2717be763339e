"""A cell's search and scheduler: Optuna TPE that treats ASHA-stopped trials as pruned, and ASHA.

Plain ``OptunaSearch`` + ``ASHAScheduler`` tell Optuna that an ASHA-stopped trial COMPLETED with the
value of its last (low-fidelity) evaluation, so TPE fits its good/bad densities on a mix of
full-budget and early values. Here the scheduler writes each early stop into an
:class:`EarlyStopLedger` and the searcher tells Optuna ``PRUNED`` for those trials (Optuna's TPE
ranks pruned trials by their intermediate values, below every completed trial). The MLflow callback
reads the same ledger to tag the child run ``status=asha_stopped``.

All three live in the driver process. The ledger is registered by name in a module-level table, so
the copies Tune pickles (experiment state, ``Tuner.restore``) all resolve to the same object.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from sweeps.search_defaults import SEARCH_DEFAULTS
from trainables.runner import FINAL_KEY  # the summary report after training: not a rung result

logger = logging.getLogger(__name__)


class EarlyStopLedger:
    """Trial ids the scheduler stopped early. Pickles by name; unpickling rebinds to the live one."""

    _LIVE: ClassVar[dict[str, set[str]]] = {}

    def __init__(self, name: str):
        self.name = name
        self._LIVE.setdefault(name, set())

    @property
    def stopped(self) -> set[str]:
        return self._LIVE.setdefault(self.name, set())

    def mark(self, trial_id: str) -> None:
        self.stopped.add(trial_id)

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self.stopped

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "stopped": sorted(self.stopped)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._LIVE.setdefault(self.name, set()).update(state.get("stopped", ()))


class LedgerASHAScheduler(ASHAScheduler):
    """ASHA that records which trials it stopped before their full budget."""

    def __init__(self, ledger: EarlyStopLedger, **kwargs: Any):
        super().__init__(**kwargs)
        self.ledger = ledger

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL_KEY) or result.get(self._time_attr, 0) >= self._max_t:
            # The summary report after training, or the last evaluation: the run has spent its full
            # budget, so its value is a final one — never "stop" it there.
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.ledger.mark(trial.trial_id)
        return action


class PrunedAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna PRUNED (not COMPLETE) for trials in the ledger."""

    def __init__(self, *args: Any, ledger: EarlyStopLedger, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ledger = ledger

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.ledger and not error and trial_id not in self._completed_trials:
            ot_trial = self._ot_trials[trial_id]
            try:
                # Optuna keeps the intermediate values reported so far; the value is not a final one.
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            except Exception as exc:  # e.g. already told (the base class logs the same way)
                logger.warning(exc)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(FINAL_KEY):
            return  # the summary repeats the last evaluation; do not report it as a new step
        super().on_trial_result(trial_id, result)

    # The ledger is driver-local; keep the live one when Tune restores the searcher's state.
    def save(self, checkpoint_path: str) -> None:
        ledger = self.__dict__.pop("ledger")
        try:
            super().save(checkpoint_path)
        finally:
            self.ledger = ledger

    def restore(self, checkpoint_path: str) -> None:
        ledger = self.__dict__.get("ledger")
        super().restore(checkpoint_path)
        if ledger is not None:
            self.ledger = ledger

    def trial_states(self) -> dict[str, str]:
        """Tune trial id → Optuna state name (COMPLETE / PRUNED / FAIL / RUNNING)."""
        return {tid: self._ot_study.trials[t.number].state.name for tid, t in self._ot_trials.items()}


def make_optuna(
    space: dict[str, Any],
    *,
    ledger: EarlyStopLedger,
    seed: int,
    metric: str | list[str],
    mode: str | list[str],
    num_samples: int = 10,
    multivariate: bool | None = None,
    startup_share: float | None = None,
    constant_liar: bool = True,
) -> PrunedAwareOptunaSearch:
    """Seeded Optuna TPE over ``space`` (Tune domains) that tells Optuna PRUNED for ASHA-stopped trials.

    TPE starts from ``startup_share`` × ``num_samples`` random trials (at least 3, at most Optuna's default 10),
    so a small budget still gets model-based suggestions. Constant liar (single objective) keeps concurrent
    suggestions of one study apart. Unset options take :data:`SEARCH_DEFAULTS`.
    """
    multi = isinstance(metric, list)
    share = SEARCH_DEFAULTS["startup_share"] if startup_share is None else startup_share
    startup = min(10, max(3, int(num_samples * share)))
    mv = SEARCH_DEFAULTS["multivariate"] if multivariate is None else multivariate
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multivariate.*", category=optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, constant_liar=constant_liar and not multi, multivariate=mv
        )
    return PrunedAwareOptunaSearch(
        space=OptunaSearch.convert_search_space(space), metric=metric, mode=mode, sampler=sampler, ledger=ledger
    )


def make_scheduler(
    use_asha: bool,
    *,
    ledger: EarlyStopLedger,
    metric: str,
    mode: str,
    max_t: int,
    grace_period: int | None = None,
    reduction_factor: float | None = None,
    brackets: int | None = None,
):
    """ASHA on the task's main dev metric, counted in evaluations (``training_iteration``); unset options take
    :data:`SEARCH_DEFAULTS`."""
    grace_period = SEARCH_DEFAULTS["grace_period"] if grace_period is None else grace_period
    reduction_factor = SEARCH_DEFAULTS["reduction_factor"] if reduction_factor is None else reduction_factor
    brackets = SEARCH_DEFAULTS["brackets"] if brackets is None else brackets
    if not use_asha:
        return FIFOScheduler()
    return LedgerASHAScheduler(
        ledger,
        time_attr="training_iteration",
        metric=metric,
        mode=mode,
        max_t=max(max_t, grace_period),
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        brackets=brackets,
        stop_last_trials=False,  # the trainable ends itself; a STOP at max_t would drop the summary
    )
