"""MLflow wiring: tracking-URI checks, the sweep's parent run, one child run per trial (batched), written in
the schema of :mod:`sweeps.schema`.

Every Tune report becomes ONE ``log_batch`` call (the stock ``MLflowLoggerCallback`` makes one call
per metric), queued on a background thread (:mod:`sweeps.tracking_queue`). A trial restarted by ``--resume``
finds its child run by ``trial_id`` and skips steps it already logged, so children are never duplicated.
"""

from __future__ import annotations

import json
import logging
import math
import time
import weakref
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from sweeps.schema import (
    CELL_TAG,
    FAILED,
    ORPHANED,
    RACE,
    REPLACED_BY_TAG,
    ROLE_TAG,
    RUNNING,
    SEED_RUN,
    STATUS_TAG,
    TRIAL,
    trial_error_reason,
    trial_outcome,
)
from sweeps.search import EarlyStopLedger
from sweeps.tracking_queue import TrackingQueue
from trainables.runner import CELL_KEY, FINAL_KEY, ROLE_KEY
from wlora.run_config import OBJECTIVE

logger = logging.getLogger(__name__)

#: Keys Tune adds to every result; not logged as metrics.
TUNE_KEYS = frozenset(
    {
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "pid",
        "done",
        "date",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "checkpoint_dir_name",
        "should_checkpoint",
        "trial_id",
        "experiment_tag",
        "step",
        FINAL_KEY,
    }
)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(str(k), _param_str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow's per-batch param limit
        client.log_batch(run_id, params=items[i : i + 100])


def _param_str(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:6000]


#: String values of a trial's reports that its MLflow child carries as tags (``hostname``: the host the trial
#: last reported from; Tune adds it to every result).
RUNTIME_TAGS = ("device", "gpu_ids", "precision_requested", "precision", "eval_split", "eval_fingerprint", "hostname")


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The runner's metrics in a Tune result (finite numbers, Tune bookkeeping left out)."""
    out = {}
    for k, v in result.items():
        if k in TUNE_KEYS or k.startswith("config/") or isinstance(v, bool):
            continue
        if isinstance(v, int | float) and math.isfinite(v):
            out[k] = float(v)
    return out


class MlflowTrialCallback(Callback):
    """Child run per trial under ``parent_run_id``; one ``log_batch`` per reported evaluation.

    A pooled sweep runs every cell in one Tune run: each child's ``method`` / ``task`` / ``rank`` /
    ``wlora.cell`` tags and its role (``trial``, ``race`` or ``seed_run``) come from the trial's own config.

    Every MLflow call goes through a :class:`sweeps.tracking_queue.TrackingQueue`: the Tune hooks return at
    once, the calls run in order on a background thread and are retried through a tracking-server outage.
    Run ids and the last logged step of each trial live on that thread only.

    Args:
        tracking_uri: the MLflow tracking URI.
        experiment_id: experiment of the parent run.
        parent_run_id: the sweep's parent run.
        ledgers: cell name → early stops recorded by that cell's ASHA (status ``asha_stopped``).
        tags: tags every child gets (``model``, ``wlora.sweep_name``).
        ranks: cell name → the rank its children are tagged with (a searched rank: the trial's ``r``).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        ledgers: Mapping[str, EarlyStopLedger],
        tags: Mapping[str, str],
        ranks: Mapping[str, int | None] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.ledgers = dict(ledgers)
        self.tags = dict(tags)
        self.ranks = dict(ranks or {})
        self._queue: TrackingQueue | None = None
        self._runs: dict[str, str] = {}
        self._last_step: dict[str, float] = {}
        _LIVE_CALLBACKS.add(self)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_queue"] = None
        state["_runs"], state["_last_step"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _LIVE_CALLBACKS.add(self)

    @property
    def queue(self) -> TrackingQueue:
        if self._queue is None:
            self._queue = TrackingQueue(self.tracking_uri)
        return self._queue

    # ----- run lookup (on the queue's thread) -----

    @staticmethod
    def role_of(trial) -> str:
        return str((trial.config or {}).get(ROLE_KEY, TRIAL))

    def trial_tags(self, trial) -> dict[str, str]:
        """The tags of ``trial``'s child run that depend on its cell."""
        config = trial.config or {}
        cell = str(config.get(CELL_KEY, ""))
        rank = self.ranks.get(cell)
        return {
            **self.tags,
            "method": str(config.get("method", "")),
            "task": str(config.get("task", "")),
            "rank": str(rank if rank is not None else config.get("r", "")),
            CELL_TAG: cell,
        }

    def _find_existing(self, client, trial_id: str, role: str) -> tuple[str, float] | None:
        runs = client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.trial_id = '{trial_id}'",
            max_results=5,
        )
        runs = [r for r in runs if r.data.tags.get(ROLE_TAG) == role and r.data.tags.get(STATUS_TAG) != ORPHANED]
        if not runs:
            return None
        run = runs[0]
        history = client.get_metric_history(run.info.run_id, OBJECTIVE)
        last = max((m.step for m in history), default=-1)
        return run.info.run_id, float(last)

    def _start(self, client, tid: str, role: str, config: dict[str, Any], base: dict[str, str]) -> str:
        if tid in self._runs:
            return self._runs[tid]
        found = self._find_existing(client, tid, role)
        if found is not None:
            # A trial continued by --resume (or retried): its own child, open again.
            self._runs[tid], self._last_step[tid] = found
            client.set_tag(found[0], STATUS_TAG, RUNNING)
            client.update_run(found[0], status="RUNNING")
            return found[0]
        tags = {
            **base,
            "mlflow.parentRunId": self.parent_run_id,
            ROLE_TAG: role,
            "trial_id": tid,
            "seed": str(config.get("seed", "")),
            STATUS_TAG: RUNNING,
        }
        name = f"{base['method']}-{base['task']}-r{base['rank']}-{tid}"
        run = client.create_run(self.experiment_id, tags=tags, run_name=name)
        log_params(client, run.info.run_id, config)
        self._runs[tid], self._last_step[tid] = run.info.run_id, -1.0
        return run.info.run_id

    def _submit_start(self, trial) -> None:
        tid, role = trial.trial_id, self.role_of(trial)
        config = {k: v for k, v in (trial.config or {}).items() if k not in (CELL_KEY, ROLE_KEY)}
        base = self.trial_tags(trial)
        self.queue.submit(lambda c: self._start(c, tid, role, config, base), f"start of trial {tid}")

    def _run_of(self, client, tid: str) -> str | None:
        if tid in self._runs:
            return self._runs[tid]
        for role in (TRIAL, RACE, SEED_RUN):
            found = self._find_existing(client, tid, role)
            if found is not None:
                self._runs[tid], self._last_step[tid] = found
                return found[0]
        return None

    # ----- Tune hooks (driver): each queues its calls and returns -----

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._submit_start(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get(FINAL_KEY):
            return  # the summary repeats the last evaluation
        tid = trial.trial_id
        step = result.get("step", result.get("training_iteration", 0))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(step)) for k, v in numeric_metrics(result).items()]
        # where and how the trial computes: device, assigned GPUs, precision requested vs what ran
        tags = [RunTag(k, str(result[k])) for k in RUNTIME_TAGS if isinstance(result.get(k), str)]
        if tid not in self._runs:
            self._submit_start(trial)  # idempotent: a restored trial whose start hook ran before the restart

        def log(client) -> None:
            run_id = self._run_of(client, tid)
            if run_id is None or step <= self._last_step.get(tid, -1):
                return  # already logged before an interruption (resume)
            client.log_batch(run_id, metrics=metrics, tags=tags)
            self._last_step[tid] = step

        self.queue.submit(log, f"metrics of trial {tid} at step {step}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        result = trial.last_result or {}
        ledger = self.ledgers.get(str((trial.config or {}).get(CELL_KEY, "")))
        stopped = ledger is not None and tid in ledger
        status = trial_outcome(failed=False, stopped_early=stopped)
        final = numeric_metrics(result)
        keep = ("trainable_params", "trainable_pct", "method_params", "method_pct", "active_adapters")
        metrics = [Metric(f"final_{k}", final[k], int(time.time() * 1000), 0) for k in keep if k in final]
        report = result.get("method_report")

        def complete(client) -> None:
            run_id = self._run_of(client, tid)
            if run_id is None:
                return
            client.log_batch(run_id, metrics=metrics, tags=[RunTag(STATUS_TAG, status)])
            if isinstance(report, str):
                client.log_text(run_id, report, "selection.json")
            client.set_terminated(run_id, "FINISHED")

        self.queue.submit(complete, f"end of trial {tid}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        tid, reason = trial.trial_id, trial_error_reason(trial)
        retries = int(getattr(trial, "num_failures", 0) or 0)

        def recover(client) -> None:
            run_id = self._run_of(client, tid)
            if run_id is not None:
                client.log_batch(run_id, tags=[RunTag("retries", str(retries)), RunTag("last_error", reason)])

        self.queue.submit(recover, f"retry of trial {tid}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        tid, reason = trial.trial_id, trial_error_reason(trial)
        if tid not in self._runs:
            self._submit_start(trial)  # a trial killed before it started still gets its (failed) child

        def error(client) -> None:
            run_id = self._run_of(client, tid)
            if run_id is None:
                return
            client.log_batch(run_id, tags=[RunTag(STATUS_TAG, FAILED), RunTag("error", reason)])
            client.set_terminated(run_id, "FAILED")

        self.queue.submit(error, f"failure of trial {tid}")

    # ----- after the Tune run (driver) -----

    def close_orphans(self, trials) -> None:
        """Children whose trial is not in the Tune experiment — created just before a driver was killed, after
        the last experiment snapshot, so the restored run replaced their trial with a new one — are closed
        (KILLED, status ``orphaned``), linked to the trial that replaced them (same cell, role and config;
        tag ``wlora.replaced_by``), and never counted (:func:`sweeps.table.load_children` skips them)."""
        known = {t.trial_id: t for t in trials}
        configs = {
            t.trial_id: {k: v for k, v in (t.config or {}).items() if k not in (CELL_KEY, ROLE_KEY)} for t in trials
        }
        cells = {t.trial_id: ((t.config or {}).get(CELL_KEY), self.role_of(t)) for t in trials}

        def close(client) -> None:
            runs = client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
                max_results=5000,
            )
            for run in runs:
                tags = run.data.tags
                tid = tags.get("trial_id", "")
                if tid in known or tags.get(STATUS_TAG) == ORPHANED:
                    continue
                params = dict(run.data.params)
                same = [
                    t
                    for t in known
                    if cells[t] == (tags.get(CELL_TAG), tags.get(ROLE_TAG, TRIAL))
                    and {k: _param_str(v) for k, v in configs[t].items()} == params
                ]
                replaced = same[0] if same else ""
                client.log_batch(
                    run.info.run_id, tags=[RunTag(STATUS_TAG, ORPHANED), RunTag(REPLACED_BY_TAG, replaced)]
                )
                client.set_terminated(run.info.run_id, "KILLED")

        self.queue.submit(close, "close of orphaned children")


_LIVE_CALLBACKS: weakref.WeakSet[MlflowTrialCallback] = weakref.WeakSet()


def live_callbacks() -> list[MlflowTrialCallback]:
    """The MLflow callbacks of this driver (the one passed to Tune, or the one Tune restored)."""
    return list(_LIVE_CALLBACKS)
