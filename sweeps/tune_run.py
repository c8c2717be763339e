"""The sweep's one Tune run: every cell's search and ASHA in one pool of trial slots (``sweeps.pool``), fresh
or restored after an interruption, and the cell summaries read back from it."""

from __future__ import annotations

import functools
import logging
from typing import Any

from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from sweeps.autoseeds import AutoSeeds
from sweeps.flags import race_budget
from sweeps.interrupts import Interrupts, with_interrupts
from sweeps.pareto import PARAMS_METRIC
from sweeps.plan import Cell, Plan, save_state
from sweeps.pool import (
    RACE,
    SEED_RUN,
    TRIAL,
    CellSearch,
    ListSearch,
    PooledScheduler,
    PooledSearcher,
    Race,
    race_draw_seed,
    variant_configs,
)
from sweeps.progress import ProgressTable
from sweeps.resources import pool_slots
from sweeps.results import cell_summary, export_best, seed_summary, trial_rows
from sweeps.search import EarlyStopLedger, make_optuna, make_scheduler
from sweeps.state import EXPERIMENT
from sweeps.tracking import MlflowTrialCallback
from trainables import train_pooled
from wlora.run_config import OBJECTIVE, TrainConfig

logger = logging.getLogger("sweeps")


def ledger_of(plan: Plan, cell: Cell) -> EarlyStopLedger:
    return EarlyStopLedger(f"{plan.run_dir}:{cell.name}")


def multi_objective(plan: Plan) -> bool:
    return bool(plan.args.multi_objective)


def cell_search(plan: Plan, cell: Cell) -> CellSearch:
    """One cell's search: seeded Optuna TPE over its own space, or its list of random / grid configs."""
    a = plan.args
    space = plan.spaces[cell.name]
    if plan.search == "optuna" and space:
        metric: Any = [OBJECTIVE, PARAMS_METRIC] if multi_objective(plan) else OBJECTIVE
        mode: Any = ["max", "min"] if multi_objective(plan) else "max"
        search: Any = make_optuna(
            space, ledger=ledger_of(plan, cell), seed=a.search_seed, metric=metric, mode=mode, num_samples=a.num_samples
        )
        budget = a.num_samples
    else:
        configs = variant_configs(space, grid=plan.search == "grid", num_samples=a.num_samples, seed=a.search_seed)
        search, budget = ListSearch(configs), len(configs)
    return CellSearch(
        cell.name,
        dict(plan.fixed[cell.name]),
        budget,
        search,
        seeds=a.seeds,
        seed_overrides=dict(plan.cell_seed_overrides.get(cell.name, plan.seed_overrides)),
        race=cell_race(plan, cell),
    )


def cell_race(plan: Plan, cell: Cell) -> Race | None:
    """``--race-top M`` (M >= 2): the race of the cell's top M candidates before its pick."""
    a = plan.args
    top = int(getattr(a, "race_top", 0) or 0)
    if top < 2:
        return None
    return Race(
        top=top,
        seeds=int(a.race_seeds),
        budget=race_budget(a),
        k=float(a.race_k),
        draw_seed=race_draw_seed(a.search_seed, cell.name),
    )


def auto_seeds(plan: Plan) -> AutoSeeds | None:
    """``--seeds auto``: the claims compare the methods of one task (and rank)."""
    if not plan.args.seeds_auto:
        return None
    arms = {c.name: (c.method, c.task + (f" r={c.rank}" if c.rank is not None else "")) for c in plan.cells}
    return AutoSeeds(list(plan.args.seed_schedule), arms, margin=dict(plan.args.claim_margins))


def pooled_scheduler(plan: Plan) -> PooledScheduler:
    """ASHA per cell on its own max_t (the runner's planned evaluations); FIFO with ``--no-asha`` or
    ``--multi-objective`` (ASHA ranks one metric)."""
    a = plan.args
    use_asha = not a.no_asha and not multi_objective(plan)
    return PooledScheduler(
        {
            cell.name: functools.partial(
                make_scheduler,
                use_asha,
                ledger=ledger_of(plan, cell),
                metric=OBJECTIVE,
                mode="max",
                max_t=plan.planned_evals[cell.name],
                grace_period=a.grace_period,
                reduction_factor=a.reduction_factor,
            )
            for cell in plan.cells
        }
    )


def _trainable(plan: Plan):
    from ray import tune

    fn = tune.with_parameters(train_pooled, assets=plan.assets)
    res: dict[str, float] = {"cpu": plan.args.cpus_per_trial, "memory": plan.memory_per_trial}
    if plan.args.gpus_per_trial:
        res["gpu"] = plan.args.gpus_per_trial
    return tune.with_resources(fn, res)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


class GrowingSearch(SearchGenerator):
    """Tune's search generator for a sweep whose cells grow (``--resume --num-samples N``).

    Tune restores the generator's own counters with the experiment: trials created, the most it may create
    (the first run's ``num_samples``) and whether the searcher said FINISHED — so a finished sweep would end
    at once. After that restore this one allows ``added`` more trials and asks the pooled searcher again; the
    pooled searcher says FINISHED once its grown cells are done."""

    def __init__(self, searcher, added: int):
        super().__init__(searcher)
        self.added = added

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        if self.added:
            self._total_samples += self.added
            self._finished = False
            self.added = 0


def _extend(plan: Plan, tune_config, searcher: PooledSearcher) -> None:
    """Grow every cell to ``--num-samples`` (applied when Tune restores the searcher's state, so each search
    goes on from its own history) and let the restored run create the new trials."""
    grown = [cell_search(plan, cell) for cell in plan.cells]
    searcher.grow(grown)
    limit = tune_config.max_concurrent_trials
    inner = ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher
    # Room for the grown searches and for each cell's new race (a raced cell races again once its search ends).
    added = sum(c.budget + race_budget(plan.args) for c in grown)
    tune_config.search_alg = GrowingSearch(inner, added=added)
    tune_config.max_concurrent_trials = None  # the limiter above is the same one Tune built the first time
    logger.info("extending the sweep from %s to %s trials per cell", plan.args.extend_from, plan.args.num_samples)


def run_pool(plan: Plan, exp_id: str, parent_id: str):
    """The sweep's one Tune run (fresh, or restored after a crash); returns (ResultGrid, PooledSearcher)."""
    from ray import tune

    a = plan.args
    storage = plan.tune_storage or str(plan.run_dir)
    exp_path = f"{storage}/{EXPERIMENT}"
    trainable = _trainable(plan)
    if tune.Tuner.can_restore(exp_path):
        logger.info("resuming the sweep's trials from %s", exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
        with_interrupts(tuner)
        # Tune restores the searcher's state into the searcher it keeps on the internal tuner; the scheduler's
        # state travels in it (PooledSearcher.get_state), restored into the scheduler this tuner runs.
        tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
        searcher = getattr(tune_config, "search_alg", None)
        if isinstance(searcher, PooledSearcher):
            searcher.attach_scheduler(tune_config.scheduler)
            if getattr(a, "extend_from", None):
                _extend(plan, tune_config, searcher)
        return tuner.fit(), searcher

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per cell
    searcher = PooledSearcher([cell_search(plan, cell) for cell in plan.cells], auto_seeds(plan))
    most_seeds = max(plan.args.seed_schedule) if plan.args.seeds_auto else plan.args.seeds
    # --seeds auto: one more, so Tune asks the searcher once after the last seed re-run (its last look)
    n_trials = sum(c.budget + most_seeds + race_budget(a) for c in searcher.cells.values()) + int(a.seeds_auto)
    scheduler = pooled_scheduler(plan)
    searcher.attach_scheduler(scheduler)  # every experiment snapshot then holds each cell's ASHA rungs
    ledgers = {cell.name: ledger_of(plan, cell) for cell in plan.cells}
    cb = MlflowTrialCallback(
        plan.tracking_uri,
        exp_id,
        parent_id,
        ledgers,
        {"model": a.model, "wlora.sweep_name": a.name},
        ranks={cell.name: cell.rank for cell in plan.cells},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # metric/mode live in each cell's search and scheduler (Tune refuses them twice).
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=n_trials,  # at most; the searcher says when every cell is done
            max_concurrent_trials=pool_slots(a, n_trials),
            reuse_actors=not a.no_reuse_actors,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage,
            callbacks=[cb, ProgressTable(a.name, interval_s=a.progress_interval, ledgers=ledgers), Interrupts()],
            failure_config=tune.FailureConfig(max_failures=a.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    return tuner.fit(), searcher


def summarize(plan: Plan, results, searcher) -> None:
    """Cell and seed summaries of the finished pool into the state; the best adapter of each cell."""
    ledgers = {cell.name: ledger_of(plan, cell) for cell in plan.cells}
    grouped = trial_rows(results, ledgers, tune_trials(results))
    for cell in plan.cells:

        def export(best: dict[str, Any], cell: Cell = cell) -> str:
            cfg = TrainConfig.from_flat({**best["config"], "method": cell.method})
            out = plan.run_dir / "adapters" / cell.name
            return export_best(cfg, plan.assets[cell.task], best["checkpoint"], out)

        held = getattr(searcher, "cells", {}).get(cell.name)
        race = held.race if held is not None and held.racing else None
        summary = cell_summary(
            cell,
            grouped.get((cell.name, TRIAL), []),
            multi_objective=multi_objective(plan),
            export=export,
            choice_split="holdout" if plan.seed_overrides else None,
            pick=race.pick if race is not None and race.done else None,
        )
        if race is not None:
            summary["race"] = race_summary(race, grouped.get((cell.name, RACE), []))
        if searcher is not None and hasattr(searcher, "optuna_states"):
            summary["optuna_states"] = searcher.optuna_states(cell.name)
        plan.state["cells"][cell.name] = summary
        if getattr(searcher, "auto_seeds", None) is not None:
            plan.state["seed_looks"] = searcher.auto_seeds.looks
        if plan.args.seeds > 0 and "best_config" in summary:
            reused = set(held.seed_reused) if held is not None else set()
            rows = grouped.get((cell.name, SEED_RUN), [])
            rows += [r for r in grouped.get((cell.name, RACE), []) if r["trial_id"] in reused]
            plan.state["seed_cells"][cell.name] = seed_summary(cell.name, rows)
    tag_race(plan, searcher)
    save_state(plan)


def race_summary(race: Race, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A cell's race in the state file: its candidates with their runs' mean, why it stopped, its pick."""
    scores = race.scores() if race.candidates else {}
    return {
        "candidates": [
            {"trial_id": tid, "search_score": race.search_scores[tid], "mean": sum(v) / len(v), "n": len(v)}
            for tid, v in scores.items()
        ],
        "race_runs": len(rows),
        "rounds": race.rounds,
        "stop": race.stop,
        "pick": race.pick,
        "rule": f"mean(leader) - mean(runner-up) > {race.k:g} pooled standard errors, or {race.budget} race runs",
        "history": race.history,
        "earlier": getattr(race, "earlier", []),  # a state saved before re-racing has none
    }


def tag_race(plan: Plan, searcher) -> None:
    """Tag the MLflow children the readers need: the search trial the race picked (``wlora.race_pick``) and the
    race runs that stand as its seed re-runs (``wlora.seed_reuse``, ``--protocol papers``)."""
    from sweeps.schema import RACE_PICK_TAG, SEED_REUSE_TAG

    marks: dict[str, str] = {}
    for cell in getattr(searcher, "cells", {}).values():
        if cell.racing and cell.race is not None and cell.race.pick is not None:
            marks[cell.race.pick] = RACE_PICK_TAG
            marks.update({tid: SEED_REUSE_TAG for tid in cell.seed_reused})
    parent = plan.state.get("parent_run_id")
    if not marks or not parent:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan.tracking_uri)
    exp = client.get_run(parent).info.experiment_id
    # A grown sweep raced again: an earlier pick that lost its place loses its tag (one pick per cell).
    for tag in (RACE_PICK_TAG, SEED_REUSE_TAG):
        stale = client.search_runs(
            [exp], filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.`{tag}` = '1'", max_results=1000
        )
        for run in stale:
            if marks.get(run.data.tags.get("trial_id")) != tag:
                client.delete_tag(run.info.run_id, tag)
    for tid, tag in marks.items():
        runs = client.search_runs(
            [exp], filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.trial_id = '{tid}'", max_results=5
        )
        for run in runs:
            client.set_tag(run.info.run_id, tag, "1")


def tune_trials(results) -> list:
    """The Tune trials behind a ResultGrid (status, id, config: what the MLflow callback closes by)."""
    grid = getattr(results, "_experiment_analysis", None)
    return list(getattr(grid, "trials", None) or [])
