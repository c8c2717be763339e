"""One pool of trial slots for every cell of a sweep: a composite searcher and a composite scheduler.

Why one Tune run and not one per cell: Tune runs one experiment per driver at a time (several ``Tuner.fit``
calls on one cluster are not supported), so cells run one after another left most slots idle whenever a
cell had fewer trials than the cluster has slots, and ``--seeds`` re-runs waited for every search. Here the
whole sweep is ONE Tune run, so Tune's own experiment restore, retries (``FailureConfig``), actor reuse and
callbacks work unchanged, while what must stay per cell is held per cell:

* :class:`PooledSearcher` keeps one search per cell (its own seeded Optuna TPE over its own space and its
  own ``--num-samples`` budget; or its list of random/grid configs) and hands out the next trial of the cell
  with the fewest live trials (round robin on ties), so every free slot goes to a cell that still has work
  and no cell starves. Once all of a cell's search trials have ended, its ``--seeds`` re-runs of the best
  configuration join the pool at once.
* :class:`PooledScheduler` routes each trial to its cell's ASHA, so rungs only ever compare trials of one
  cell (an RTE accuracy is never ranked against an SST-2 accuracy); seed re-runs run to the end (FIFO).

Each trial's config carries its cell and role under :data:`CELL_KEY` / :data:`ROLE_KEY`; the trainable drops
them before building the ``TrainConfig``. ASHA writes early stops into the cell's
:class:`~sweeps.search.EarlyStopLedger`, which the cell's Optuna search reads to tell Optuna ``PRUNED``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from sweeps.autoseeds import AutoSeeds
from sweeps.schema import COMPLETED, FAILED, SEED_RUN, TRIAL, pick_best
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY
from wlora.run_config import OBJECTIVE

logger = logging.getLogger(__name__)


class ListSearch:
    """A fixed list of configs handed out in order (random search, grid, seed re-runs)."""

    def __init__(self, configs: list[dict[str, Any]]):
        self.configs = list(configs)
        self.next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next >= len(self.configs):
            return None
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


def variant_configs(space: Mapping[str, Any], *, grid: bool, num_samples: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random search: ``num_samples`` draws from ``space``; grid: every grid point once (other dimensions drawn
    per point). Seeded, so a sweep and its resume draw the same configs."""
    rng = np.random.RandomState(seed)
    rounds = 1 if grid else num_samples
    out = []
    for _ in range(rounds):
        for _, resolved in generate_variants({"config": dict(space)}, random_state=rng):
            out.append(resolved["config"])
    return out


@dataclass
class CellSearch:
    """What the pooled searcher holds for one cell."""

    name: str
    fixed: dict[str, Any]
    budget: int
    search: Any  # an Optuna-backed Searcher, or a ListSearch
    seeds: int = 0
    suggested: int = 0
    live: set[str] = field(default_factory=set)
    ended: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Trial id → (config, last result, error) of every ended search trial."""
    seed_search: ListSearch | None = None
    seed_live: set[str] = field(default_factory=set)
    seed_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields the seed re-runs change from the best config (``--protocol heldout``: evaluate on dev)."""
    seed_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Trial id → (score, # Params, error) of every ended seed re-run (what ``--seeds auto`` looks at)."""
    best: dict[str, Any] | None = None

    @property
    def search_done(self) -> bool:
        return self.suggested >= self.budget and self.ended >= self.suggested

    def has_work(self) -> bool:
        """Trials still to hand out: search trials, or seed re-runs (once the search has ended)."""
        if self.suggested < self.budget:
            return True
        if self.seeds <= 0:
            return False
        if not self.search_done:
            return True  # its seed re-runs follow once the search's last trial ends
        return self.seed_search is None or self.seed_search.next < len(self.seed_search.configs)

    def best_config(self) -> dict[str, Any] | None:
        """Config of the best search trial that trained to the end (the seed re-runs' config)."""
        best = pick_best(
            self.results.values(),
            status=lambda r: FAILED if r["error"] else (COMPLETED if r["result"].get(FINAL_KEY) else "partial"),
            value=lambda r: r["result"].get(OBJECTIVE),
            completed_only=True,
            # what each candidate scored, as its run reported it: under --protocol heldout only held-out scores
            split=lambda r: r["result"].get("eval_split"),
            choice_split=self.choice_split,
        )
        return None if best is None else best["config"]

    @property
    def choice_split(self) -> str | None:
        """The split the best config may be chosen on: ``holdout`` when the seed re-runs report another split."""
        return "holdout" if self.seed_overrides.get("eval_split", "holdout") != "holdout" else None

    def seed_values(self, count: int) -> list[int]:
        """The seeds of the first ``count`` seed re-runs: 0, 1, 2, … without the search trials' own seed, so
        no seed re-run repeats the training of the search trial that won (its score chose the config)."""
        own = (self.best or self.fixed).get("seed", 0)
        return [s for s in range(count + 1) if s != own][:count]


class PooledSearcher(Searcher):
    """One search per cell behind Tune's ``Searcher`` interface, sharing one pool of slots fairly.

    Args:
        cells: one :class:`CellSearch` per cell, in the sweep's order.
    """

    def __init__(self, cells: list[CellSearch], auto_seeds: AutoSeeds | None = None):
        super().__init__(metric=OBJECTIVE, mode="max")
        self.cells = {c.name: c for c in cells}
        self.auto_seeds = auto_seeds
        self._owner: dict[str, tuple[str, str]] = {}  # trial id → (cell, role)
        self._configs: dict[str, dict[str, Any]] = {}  # trial id → its config (search trials)
        self._turn = 0
        # Driver-local, never in the saved state: the live scheduler whose state travels with this searcher's,
        # and the cells' larger budgets that a restore applies (``--resume --num-samples N``: see :meth:`grow`).
        self._scheduler: PooledScheduler | None = None
        self._grow: dict[str, CellSearch] | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # every cell's search carries its own space, metric and mode

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return False  # the pool's limit is Tune's ConcurrencyLimiter around this searcher

    # ----- suggesting -----

    def _order(self) -> list[CellSearch]:
        cells = list(self.cells.values())
        start = self._turn % len(cells)
        rotated = cells[start:] + cells[:start]
        return sorted(rotated, key=lambda c: len(c.live) + len(c.seed_live))  # stable: round robin on ties

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        auto = self.auto_seeds
        if auto is not None and not auto.finished and self._seeds_idle():
            self._look()
        if not any(c.has_work() for c in self.cells.values()):
            if auto is not None and not auto.finished:
                return None  # seed re-runs still running: a look at the claims follows when they end
            return Searcher.FINISHED
        for cell in self._order():
            config = self._suggest_in(cell, trial_id)
            if config is not None:
                self._turn += 1
                return config
        return None  # cells wait for their searches to end before their seed re-runs: ask again later

    def _suggest_in(self, cell: CellSearch, trial_id: str) -> dict[str, Any] | None:
        if cell.suggested < cell.budget:
            params = cell.search.suggest(trial_id)
            if params is None:
                return None
            cell.suggested += 1
            cell.live.add(trial_id)
            self._owner[trial_id] = (cell.name, TRIAL)
            self._configs[trial_id] = {**cell.fixed, **params}
            return {**self._configs[trial_id], CELL_KEY: cell.name, ROLE_KEY: TRIAL}
        if cell.seeds > 0 and cell.search_done:
            if cell.seed_search is None:
                best = cell.best = cell.best_config()
                configs = [] if best is None else [self._seed_config(cell, s) for s in range(cell.seeds)]
                cell.seed_search = ListSearch(configs)
                if best is None:
                    logger.warning("%s: no trial completed, so no --seeds re-runs", cell.name)
            params = cell.seed_search.suggest(trial_id)
            if params is None:
                return None
            cell.seed_live.add(trial_id)
            self._owner[trial_id] = (cell.name, SEED_RUN)
            return {**params, CELL_KEY: cell.name, ROLE_KEY: SEED_RUN}
        return None

    def _seed_config(self, cell: CellSearch, index: int) -> dict[str, Any]:
        """The ``index``-th seed re-run of ``cell``'s best config (its seed: :meth:`CellSearch.seed_values`)."""
        return {**(cell.best or {}), **cell.seed_overrides, "seed": cell.seed_values(index + 1)[index]}

    # ----- --seeds auto -----

    def _seeds_idle(self) -> bool:
        """Every cell's search and every seed re-run handed out so far have ended."""
        return all(
            c.search_done and c.seed_search is not None and not c.seed_live and not c.has_work()
            for c in self.cells.values()
        )

    def _look(self) -> None:
        """Test the claims on the ended seed re-runs; grow the cells behind the open ones."""
        assert self.auto_seeds is not None
        scores, params = {}, {}
        for c in self.cells.values():
            ok = [r for r in c.seed_results.values() if not r["error"] and r["score"] is not None]
            scores[c.name] = [float(r["score"]) for r in ok]
            params[c.name] = [float(r["params"]) for r in ok if r["params"] is not None]
        counts = {c.name: len(c.seed_search.configs) for c in self.cells.values() if c.seed_search is not None}
        for name, target in self.auto_seeds.look(scores, params, counts).items():
            cell = self.cells[name]
            if cell.best is None or cell.seed_search is None:
                continue
            start = len(cell.seed_search.configs)
            cell.seed_search.configs += [self._seed_config(cell, s) for s in range(start, target)]
            cell.seeds = target

    # ----- results -----

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        owner = self._owner.get(trial_id)
        if owner is not None and owner[1] == TRIAL:
            self.cells[owner[0]].search.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        owner = self._owner.get(trial_id)
        if owner is None:
            return
        cell = self.cells[owner[0]]
        if owner[1] == SEED_RUN:
            cell.seed_live.discard(trial_id)
            res = result or {}
            cell.seed_results[trial_id] = {
                "score": res.get(OBJECTIVE),
                "params": res.get("method_params"),
                "error": bool(error),
            }
            return
        cell.search.on_trial_complete(trial_id, result=result, error=error)
        if trial_id in cell.live:
            cell.live.discard(trial_id)
            cell.ended += 1
            config = self._configs.get(trial_id, cell.fixed)
            cell.results[trial_id] = {"config": config, "result": dict(result or {}), "error": bool(error)}

    # ----- what the driver reads -----

    def cell_of(self, trial_id: str) -> tuple[str, str] | None:
        return self._owner.get(trial_id)

    def optuna_states(self, cell: str) -> dict[str, str]:
        search = self.cells[cell].search
        return search.trial_states() if hasattr(search, "trial_states") else {}

    # ----- Tune's experiment checkpoint (restore after a driver crash) -----

    def save(self, checkpoint_path: str) -> None:
        import cloudpickle

        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    # Tune saves the searcher with every experiment snapshot but never the scheduler (``TuneController.save_to_dir``
    # writes the trials, the search algorithm and the callbacks; ``Tuner.restore`` rebuilds the scheduler from
    # ``tuner.pkl`` as it was at the start). So the pooled scheduler's state — every cell's ASHA rungs — travels in
    # this searcher's state: the same file, written at the same moment as the trials it describes.

    def attach_scheduler(self, scheduler: PooledScheduler) -> None:
        """Save ``scheduler``'s state with this searcher's and restore it into ``scheduler`` (the live one)."""
        self._scheduler = scheduler

    def grow(self, cells: list[CellSearch]) -> None:
        """Extend the sweep: each cell's budget (and random configs) become those of ``cells``, applied when Tune
        restores this searcher's state (the restored searches keep their history: an Optuna study goes on from
        every trial it has seen). Budgets never shrink."""
        self._grow = {c.name: c for c in cells}

    def _apply_grow(self) -> None:
        for new in (self.__dict__.get("_grow") or {}).values():
            cell = self.cells.get(new.name)
            if cell is None:
                continue
            before = cell.budget
            if isinstance(cell.search, ListSearch) and isinstance(new.search, ListSearch):
                # Seeded draws: the first configs are the ones already handed out; append the rest.
                done = list(cell.search.configs)
                cell.search.configs = done + list(new.search.configs[len(done) :])
                cell.budget = max(cell.budget, len(cell.search.configs))
            else:
                cell.budget = max(cell.budget, new.budget)
            if cell.budget > before:
                seen = len(getattr(getattr(cell.search, "_ot_study", None), "trials", ()) or cell.results)
                logger.info("%s: %d → %d trials (its search goes on from %d)", cell.name, before, cell.budget, seen)
        self._grow = None

    def get_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_scheduler", "_grow")}
        scheduler = self.__dict__.get("_scheduler")
        if scheduler is not None:
            state["scheduler_state"] = scheduler.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        scheduler_state = state.pop("scheduler_state", None)
        for key in ("_scheduler", "_grow"):
            state.pop(key, None)
        self.__dict__.update(state)
        scheduler = self.__dict__.get("_scheduler")
        if scheduler is not None and scheduler_state is not None:
            scheduler.set_state(scheduler_state)
        if self.__dict__.get("_grow"):
            self._apply_grow()


class PooledScheduler(TrialScheduler):
    """Routes each trial to its cell's scheduler (ASHA per cell; seed re-runs: FIFO).

    Args:
        per_cell: cell name → a factory of that cell's scheduler (called once per cell).
    """

    def __init__(self, per_cell: Mapping[str, Callable[[], TrialScheduler]]):
        super().__init__()
        self._metric = OBJECTIVE
        self._factories = dict(per_cell)
        self.cells: dict[str, TrialScheduler] = {}
        self._fifo = FIFOScheduler()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _of(self, trial) -> TrialScheduler:
        config = trial.config or {}
        name = config.get(CELL_KEY)
        if config.get(ROLE_KEY) != TRIAL or name not in self._factories:
            return self._fifo
        if name not in self.cells:
            self.cells[name] = self._factories[name]()
        return self.cells[name]

    def on_trial_add(self, tune_controller, trial) -> None:
        scheduler = self._of(trial)
        # Tune re-adds every trial of a restored experiment: one the restored state already tracks keeps its
        # bracket (and its recorded rungs); one that had ended before the snapshot has nothing left to decide.
        if trial.trial_id in (getattr(scheduler, "_trial_info", None) or {}) or trial.status in ("TERMINATED", "ERROR"):
            return
        scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        # Paused trials never occur (ASHA stops, it does not pause): the first pending trial, i.e. the order
        # the pooled searcher created them in, which is already fair between cells.
        return self._fifo.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f"One scheduler per cell ({len(self._factories)} cells)."

    # Saved and restored through the pooled searcher's state (Tune itself never saves a scheduler).

    def get_state(self) -> dict[str, Any]:
        """Every cell's scheduler as it stands: ASHA's brackets, each rung's recorded results, the trials it
        tracks, how many it stopped."""
        return {"cells": dict(self.cells)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.cells.update(state.get("cells") or {})
