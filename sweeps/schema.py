"""The sweep's MLflow schema — its one home. Everything that writes the store (:mod:`sweeps.tracking`) or reads
it (:mod:`sweeps.table`, :mod:`sweeps.report`, the pool) takes its tags, roles, statuses and rules from here.

* parent run per sweep: tag ``wlora.role=sweep``, ``git_commit``, ``model``, ``data_dir``, ``wlora.sweep_name``,
  ``wlora.kind``; params = the sweep settings; the resolved plan as its description
  (``mlflow.note.content``); artifacts ``results/table.{md,csv}``, ``table_long.csv`` and
  ``best_adapter/<task>/<method>/`` (a PEFT adapter).
* child run per trial, nested (``mlflow.parentRunId``): tags ``wlora.role`` (``trial``, ``race`` for the extra
  seeds of ``--race-top`` candidates, or ``seed_run`` for ``--seeds`` re-runs), ``method``, ``task``, ``model``,
  ``rank``, ``wlora.cell``, ``trial_id``, ``seed``,
  ``status``; params = the trial's flat config; metrics by optimizer step with the runner's names
  (``eval_main`` the objective), ``final_<key>`` once at the end; artifact ``selection.json``.
* ``status`` of a child: ``running`` → ``completed`` | ``asha_stopped`` | ``failed`` (tag ``error``: why);
  ``interrupted`` (Ctrl-C; reopened by ``--resume``); ``orphaned`` (its trial was replaced after a driver was
  killed; tag ``wlora.replaced_by``; never read back). A retried trial has tags ``retries`` and ``last_error``.
* the race's pick (``--race-top``): the search trial whose config won the race has tag ``wlora.race_pick=1``; a
  race run of that config reused as a seed re-run (``--protocol papers``) has tag ``wlora.seed_reuse=1``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wlora.run_config import OBJECTIVE

#: Tags.
ROLE_TAG, CELL_TAG, STATUS_TAG, TRIAL_ID_TAG = "wlora.role", "wlora.cell", "status", "trial_id"
ERROR_TAG, REPLACED_BY_TAG, SWEEP_NAME_TAG = "error", "wlora.replaced_by", "wlora.sweep_name"
#: Roles (also the pooled sweep's trial roles, ``trainables.ROLE_KEY``).
SWEEP, TRIAL, SEED_RUN, RACE = "sweep", "trial", "seed_run", "race"
#: Tags of the race (``--race-top``): the search trial whose config the race picked; a race run reused as a seed re-run.
RACE_PICK_TAG, SEED_REUSE_TAG = "wlora.race_pick", "wlora.seed_reuse"
#: Child statuses.
RUNNING, COMPLETED, ASHA_STOPPED, FAILED = "running", "completed", "asha_stopped", "failed"
INTERRUPTED, ORPHANED = "interrupted", "orphaned"
#: Statuses whose value may stand for a cell (a failed trial never does).
STATUS_OK = (COMPLETED, ASHA_STOPPED, RUNNING)

_CELL_RANK = re.compile(r"-r(\d+)$")
MAIN = OBJECTIVE

T = TypeVar("T")


def trial_outcome(*, failed: bool, stopped_early: bool) -> str:
    """The status rule of an ended trial: ``failed`` if it raised (or its worker died past its retries), else
    ``asha_stopped`` if its scheduler stopped it before its budget, else ``completed``."""
    if failed:
        return FAILED
    return ASHA_STOPPED if stopped_early else COMPLETED


class SelectionLeak(RuntimeError):
    """A choice of configuration (the best config, the rank a table reports) was about to read a score of a
    split other than the one choices may read, e.g. a dev score under ``--protocol heldout``."""


def check_choice_split(split: str | None, choice_split: str | None, what: str = "a configuration choice") -> None:
    """Raise :class:`SelectionLeak` unless a score evaluated on ``split`` may decide ``what``. ``choice_split``
    None: the protocol lets choices read any split (the papers' protocol: dev chooses and reports)."""
    if choice_split is not None and split != choice_split:
        raise SelectionLeak(
            f"{what} read a score of the {split or 'unknown'} split; under this protocol choices read only "
            f"{choice_split} scores (the {split or 'unknown'} split is what the report reads)"
        )


def pick_best(
    items: Iterable[T],
    *,
    status: Callable[[T], str],
    value: Callable[[T], float | None],
    completed_only: bool = False,
    split: Callable[[T], str | None] | None = None,
    choice_split: str | None = None,
) -> T | None:
    """The best-trial rule: the highest objective among completed trials; without one, among the
    ASHA-stopped / still-running ones (unless ``completed_only``: the seed re-runs and the exported adapter need
    a full-budget config). Failed trials and trials without a value never count.

    With ``choice_split`` (``holdout`` under ``--protocol heldout``), every candidate's score must have been
    evaluated on that split, as ``split(item)`` reports it (the split the run scored, not its config's label):
    a candidate scored on another split raises :class:`SelectionLeak`."""
    best, best_key = None, None
    for item in items:
        s, v = status(item), value(item)
        if v is None or not math.isfinite(v) or s not in STATUS_OK or (completed_only and s != COMPLETED):
            continue
        if choice_split is not None:
            check_choice_split(split(item) if split is not None else None, choice_split)
        key = (s == COMPLETED, v)
        if best_key is None or key > best_key:
            best, best_key = item, key
    return best


@dataclass
class RunInfo:
    """One child run, flattened: what the table and the report need from MLflow."""

    run_id: str
    name: str
    role: str
    method: str
    task: str
    seed: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    start_ms: int | None
    end_ms: int | None
    artifacts: list[str] = field(default_factory=list)
    #: The rank ``--ranks`` fixed for the run's cell ("" when the cell searched it or the method has none).
    rank: str = ""
    #: The split the run scored, as the run reported it (``eval_split`` tag), not its config's label.
    split: str | None = None
    #: How many examples it scored (``eval_examples``), and their fingerprint (``eval_fingerprint`` tag).
    examples: int | None = None
    fingerprint: str | None = None
    #: The race picked this search trial's config (tag ``wlora.race_pick``).
    race_pick: bool = False
    #: A race run reused as a seed re-run of the picked config (tag ``wlora.seed_reuse``; ``--protocol papers``).
    seed_reuse: bool = False

    @property
    def is_seed_run(self) -> bool:
        """A seed re-run, or a race run reused as one (what tables and verdicts count as seed re-runs)."""
        return self.role == SEED_RUN or (self.role == RACE and self.seed_reuse)

    def final(self, key: str) -> float | None:
        """A metric's value at the end of the run: ``final_<key>`` (logged once when the trial ends)
        if present, else the last logged ``<key>``."""
        v = self.metrics.get(f"final_{key}", self.metrics.get(key))
        return None if v is None or not math.isfinite(v) else float(v)

    @property
    def main(self) -> float | None:
        v = self.metrics.get(MAIN)
        return None if v is None or not math.isfinite(v) else float(v)

    @property
    def seconds(self) -> float:
        if self.start_ms is None:
            return 0.0
        end = self.end_ms if self.end_ms else int(time.time() * 1000)
        return max(0.0, (end - self.start_ms) / 1000.0)


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _cell_rank(tags: dict[str, str]) -> str:
    """The rank of the run's cell: from ``wlora.cell`` (``…-r8``); a cell that searched the rank has none,
    even though each of its trials carries its own ``rank`` tag. Stores without ``wlora.cell`` fall back to
    the ``rank`` tag."""
    if CELL_TAG in tags:
        m = _CELL_RANK.search(tags[CELL_TAG])
        return m.group(1) if m else ""
    return tags.get("rank", "")


#: The parent's params that say how the seed re-runs were judged (``--protocol``; the most looks of
#: ``--seeds auto``); sweeps older than the flags read as the papers' protocol with one look.
PROTOCOL_PARAM, LOOKS_PARAM = "protocol", "seed_looks"


def protocol_of(parent) -> str:
    return parent.data.params.get(PROTOCOL_PARAM) or "papers"


def looks_of(parent) -> int:
    try:
        return max(1, int(parent.data.params.get(LOOKS_PARAM) or 1))
    except ValueError:
        return 1


def load_children(client, parent_run_id: str) -> tuple[Any, list[RunInfo]]:
    """The parent run and its direct children (trials and seed re-runs)."""
    parent = client.get_run(parent_run_id)
    runs = _search_all(client, parent.info.experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}'")
    out = []
    for r in runs:
        t = r.data.tags
        if t.get(STATUS_TAG) == ORPHANED:
            continue  # a child whose trial a resumed sweep replaced (sweeps.tracking): never counted
        status = t.get(STATUS_TAG) or (COMPLETED if r.info.status == "FINISHED" else r.info.status.lower())
        out.append(
            RunInfo(
                run_id=r.info.run_id,
                name=r.info.run_name or t.get("mlflow.runName", r.info.run_id[:8]),
                role=t.get(ROLE_TAG, TRIAL),
                method=t.get("method", r.data.params.get("method", "?")),
                task=t.get("task", r.data.params.get("task", "?")),
                seed=t.get("seed", r.data.params.get("seed", "")),
                status=status,
                params=dict(r.data.params),
                metrics=dict(r.data.metrics),
                start_ms=r.info.start_time,
                end_ms=r.info.end_time,
                rank=_cell_rank(t),
                split=t.get("eval_split"),
                examples=int(r.data.metrics["eval_examples"]) if "eval_examples" in r.data.metrics else None,
                fingerprint=t.get("eval_fingerprint"),
                race_pick=t.get(RACE_PICK_TAG) == "1",
                seed_reuse=t.get(SEED_REUSE_TAG) == "1",
            )
        )
    out.sort(key=lambda x: (x.start_ms or 0, x.name))
    return parent, out


def choice_split_of(trials: Sequence[RunInfo], protocol: str | None) -> str | None:
    """The split configuration choices may read: ``holdout`` under ``--protocol heldout``; None otherwise."""
    return "holdout" if protocol == "heldout" else None


def best_trials(
    trials: Sequence[RunInfo], *, by_rank: bool = False, choice_split: str | None = None
) -> dict[tuple[str, ...], RunInfo]:
    """Best trial per (method, task) — per (method, rank, task) with ``by_rank`` — by ``eval_main``;
    completed trials first, ASHA-stopped/running ones only when no trial of that cell completed. Failed
    trials never count. With ``choice_split``, a candidate scored on another split raises SelectionLeak. A trial the
    race picked (``--race-top``: best mean over seeds) stands for its cell."""
    groups: dict[tuple[str, ...], list[RunInfo]] = {}
    for t in trials:
        if t.role == TRIAL:
            groups.setdefault((t.method, t.rank, t.task) if by_rank else (t.method, t.task), []).append(t)
    best = {
        key: pick_best(
            runs, status=lambda r: r.status, value=lambda r: r.main, split=lambda r: r.split, choice_split=choice_split
        )
        for key, runs in groups.items()
    }
    for key, runs in groups.items():
        picked = [r for r in runs if r.race_pick]
        if picked:
            best[key] = picked[0]
    return {key: run for key, run in best.items() if run is not None}


def trial_error_reason(trial) -> str:
    """One line saying why a trial failed: "out of memory: …" for a worker Ray's memory monitor killed,
    "worker process died: …" for a crashed worker, else the error's last line."""
    text = ""
    if getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text(errors="replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if "OutOfMemoryError" in text or "running low on memory" in text:
        hit = next((ln for ln in lines if "memory" in ln.lower()), last)
        return f"out of memory: {hit}"[:5000]
    if "ActorDiedError" in text or "WorkerCrashedError" in text or "actor died" in text.lower():
        hit = next((ln for ln in lines if "died" in ln.lower() or "crash" in ln.lower()), last)
        return f"worker process died: {hit}"[:5000]
    return last[:5000]
