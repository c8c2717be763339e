"""One pool of trial slots for every cell: per-cell searches and per-cell ASHA, the pooled searcher's
fairness, restore and multi-objective cells, and the one progress table."""

from __future__ import annotations

from pathlib import Path

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweeps.search import EarlyStopLedger
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY

ROOT = Path(__file__).resolve().parents[1]
ALL_SLUGS = ["lora", "weightlora", "weightlora_plus", "random_select", "lora_drop", "rolora", "adalora", "full"]


# ----- one pool for every cell: per-cell searches and per-cell ASHA -----


def _trial(config):
    return Trial("train_lora", config=config, stub=True)


def _pool_trial(cell: str, tid: str, role: str = "trial") -> Trial:
    t = _trial({"lr": 1e-3, CELL_KEY: cell, ROLE_KEY: role})
    t.trial_id = tid
    return t


def _asha(ledger_name: str):
    from sweeps.search import make_scheduler

    kw = dict(metric="eval_main", mode="max", max_t=8, grace_period=1, reduction_factor=2)
    return make_scheduler(True, ledger=EarlyStopLedger(ledger_name), **kw)


def test_pooled_asha_never_ranks_one_cell_against_another():
    """Two cells whose metrics differ 10× in scale: the pool's decisions for each cell are exactly those of
    an ASHA that saw that cell alone, while one shared ASHA would stop every trial of the low-scale cell."""
    from functools import partial

    from sweeps.pool import PooledScheduler
    from sweeps.search import make_scheduler

    kw = dict(metric="eval_main", mode="max", max_t=8, grace_period=1, reduction_factor=2)
    pool = PooledScheduler(
        {c: partial(make_scheduler, True, ledger=EarlyStopLedger(f"pool-iso-{c}"), **kw) for c in ("big", "small")}
    )
    alone = {c: _asha(f"alone-iso-{c}") for c in ("big", "small")}
    shared = _asha("shared-iso")
    values = {"big": [0.50, 0.45, 0.40, 0.35], "small": [0.050, 0.045, 0.040, 0.035]}
    decisions: dict[str, dict[str, list[str]]] = {"pool": {}, "alone": {}, "shared": {}}
    order = [(c, i) for c in ("big", "small") for i in range(4)]  # the high-scale cell reports first
    trials = {(c, i): _pool_trial(c, f"{c}{i}") for c, i in order}
    for c, i in order:
        t = trials[c, i]
        pool.on_trial_add(None, t)
        alone[c].on_trial_add(None, t)
        shared.on_trial_add(None, t)
    for c, i in order:
        r = {"training_iteration": 1, "eval_main": values[c][i]}
        for name, sched in (("pool", pool), ("alone", alone[c]), ("shared", shared)):
            decisions[name].setdefault(c, []).append(sched.on_trial_result(None, trials[c, i], r))
    assert decisions["pool"] == decisions["alone"]
    assert TrialScheduler.CONTINUE in decisions["pool"]["small"]  # the small cell's best goes on
    assert decisions["shared"]["small"] == [TrialScheduler.STOP] * 4  # what pooling without routing would do
    # Each cell's early stops land in its own ledger only.
    stopped = {c: set(pool.cells[c].ledger.stopped) for c in ("big", "small")}
    assert all(tid.startswith(c) for c, ids in stopped.items() for tid in ids)
    # Seed re-runs are never cut by ASHA.
    seed = _pool_trial("small", "seed0", role="seed_run")
    pool.on_trial_add(None, seed)
    assert pool.on_trial_result(None, seed, {"training_iteration": 1, "eval_main": 0.0}) == TrialScheduler.CONTINUE


def _cell_search(name: str, budget: int, seeds: int = 0):
    from sweeps.pool import CellSearch
    from sweeps.search import make_optuna

    space = {"lr": tune.loguniform(1e-5, 1e-2)}
    search = make_optuna(space, ledger=EarlyStopLedger(f"pool-opt-{name}"), seed=0, metric="eval_main", mode="max")
    return CellSearch(name, {"task": name, "method": "lora"}, budget, search, seeds=seeds)


def test_pooled_searcher_fair_per_cell_studies_pruned_seeds_and_restore(tmp_path):
    from ray.tune.search import Searcher

    from sweeps.pool import PooledSearcher

    searcher = PooledSearcher([_cell_search("rte", 3, seeds=2), _cell_search("sst2", 2)])
    got = [searcher.suggest(f"t{i}") for i in range(5)]
    cells = [c[CELL_KEY] for c in got]
    assert cells == ["rte", "sst2", "rte", "sst2", "rte"]  # round robin while both have work: none starves
    assert all(c["task"] == c[CELL_KEY] and c[ROLE_KEY] == "trial" for c in got)
    assert searcher.suggest("t5") is None  # budgets spent; rte's seed re-runs wait for its search to end

    # Each cell's Optuna study holds its own trials only.
    for name in ("rte", "sst2"):
        ids = {f"t{i}" for i, c in enumerate(got) if c[CELL_KEY] == name}
        assert set(searcher.optuna_states(name)) == ids

    # Save / restore (Tune's experiment checkpoint) keeps every cell's search.
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    again = PooledSearcher([_cell_search("rte", 3, seeds=2), _cell_search("sst2", 2)])
    again.restore(str(path))
    assert again.cells["rte"].suggested == 3 and again.cells["sst2"].suggested == 2
    assert set(again.optuna_states("rte")) == {"t0", "t2", "t4"}

    def final(v):
        return {"training_iteration": 5, "eval_main": v, FINAL_KEY: 1.0}

    searcher.cells["rte"].search.ledger.mark("t2")  # ASHA stopped t2
    searcher.on_trial_complete("t2", result={"training_iteration": 1, "eval_main": 0.9})
    searcher.on_trial_complete("t0", result=final(0.7))
    searcher.on_trial_complete("t4", result=final(0.8))
    assert searcher.optuna_states("rte") == {"t0": "COMPLETE", "t2": "PRUNED", "t4": "COMPLETE"}
    # rte's search ended: its seed re-runs of the best COMPLETED config (t4, not the pruned t2) join the pool.
    seeds = [searcher.suggest("s0"), searcher.suggest("s1")]
    # seeds 1, 2: seed 0 trained the search trials, whose score chose the config
    assert [s[ROLE_KEY] for s in seeds] == ["seed_run", "seed_run"] and [s["seed"] for s in seeds] == [1, 2]
    assert all(s["lr"] == got[4]["lr"] for s in seeds)
    # Nothing left to hand out (sst2 has no seed re-runs): Tune waits for the live trials, then ends.
    assert searcher.suggest("s2") == Searcher.FINISHED


def test_pooled_searcher_multi_objective_cells():
    """``--multi-objective``: each cell's study optimises (metric ↑, params % ↓) over its own trials."""
    from sweeps.pool import CellSearch, PooledSearcher
    from sweeps.search import make_optuna

    cells = []
    for name in ("rte", "sst2"):
        search = make_optuna(
            {"lr": tune.loguniform(1e-5, 1e-2)},
            ledger=EarlyStopLedger(f"pool-multi-{name}"),
            seed=0,
            metric=["eval_main", "method_pct"],
            mode=["max", "min"],
        )
        cells.append(CellSearch(name, {"task": name}, 2, search))
    searcher = PooledSearcher(cells)
    got = {f"t{i}": searcher.suggest(f"t{i}") for i in range(4)}
    for i, tid in enumerate(got):
        searcher.on_trial_complete(tid, result={"eval_main": 0.5 + i / 10, "method_pct": 0.1 * (4 - i), FINAL_KEY: 1})
    for name in ("rte", "sst2"):
        study = searcher.cells[name].search._ot_study
        assert len(study.directions) == 2
        assert searcher.optuna_states(name) == {t: "COMPLETE" for t, c in got.items() if c[CELL_KEY] == name}


def test_one_progress_table_for_the_whole_sweep():
    """The live view lists every cell's trials in one table (STOPPED = cut by its cell's ASHA) and ends with a
    summary per cell."""
    from sweeps.progress import ProgressTable

    lines: list[str] = []
    table = ProgressTable("demo", interval_s=0, out=lambda text, flush=True: lines.append(text))
    trials = []
    for cell, tid, status, result in [
        ("rte-lora-r8", "a1", "TERMINATED", {"step": 8, "eval_main": 0.61, FINAL_KEY: 1.0}),
        ("rte-lora-r8", "a2", "TERMINATED", {"step": 2, "eval_main": 0.40}),
        ("sst2-lora-r8", "b1", "RUNNING", {"step": 4, "eval_main": 0.85}),
    ]:
        t = _pool_trial(cell, tid)
        t.status = status
        t.update_last_result(dict(result))
        trials.append(t)
    table.on_step_end(1, trials)
    table.on_experiment_end(trials)
    live, final = lines
    assert live.splitlines()[0] == "== demo: 3 trials (1 running, 1 stopped, 1 terminated) =="
    rows = [ln.split() for ln in live.splitlines()[2:]]
    assert rows == [
        ["rte-lora-r8", "a1", "search", "TERMINATED", "8", "0.6100"],
        ["rte-lora-r8", "a2", "search", "STOPPED", "2", "0.4000"],
        ["sst2-lora-r8", "b1", "search", "RUNNING", "4", "0.8500"],
    ]
    summary = final.split("per cell ==")[1].strip().splitlines()
    assert [ln.split() for ln in summary[1:]] == [
        ["rte-lora-r8", "2", "1", "1", "0", "0.6100"],
        ["sst2-lora-r8", "1", "0", "0", "0"],
    ]
