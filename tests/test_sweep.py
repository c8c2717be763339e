"""Sweep layer without a Ray cluster: spaces, overrides, input validation, the ASHA → Optuna hand-off.

The ASHA/Optuna test drives the real ``LedgerASHAScheduler`` and ``PrunedAwareOptunaSearch`` with
real Tune ``Trial`` objects, exactly as Tune's controller calls them; the end-to-end sweep tests
(``test_sweep_ray.py``) check the same property on a real sweep.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweeps import spaces as sp
from sweeps.flags import build_parser
from sweeps.glue_sweep import DEFAULTS
from sweeps.plan import InputError, plan_sweep
from sweeps.schema import RunInfo
from sweeps.search import EarlyStopLedger, LedgerASHAScheduler, PrunedAwareOptunaSearch
from sweeps.table import build_table, md_table, table_cells
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY, get_trainable, trial_config
from wlora.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
ALL_SLUGS = ["lora", "weightlora", "weightlora_plus", "random_select", "lora_drop", "rolora", "adalora", "full"]


# ----- spaces -----


@pytest.mark.parametrize("slug", ALL_SLUGS)
def test_space_module_per_method(slug):
    space = sp.get_space(slug)
    assert {"lr", "warmup_steps"} <= set(space)
    lr = space["lr"]
    assert (lr.lower, lr.upper) == (1e-6, 5e-3)
    assert list(space["warmup_steps"].categories) == [0, 20, 50, 70, 100, 200]
    if sp.rank_key(slug) is not None:
        assert list(space[sp.rank_key(slug)].categories) == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("slug", sorted(METHODS))
def test_space_keys_are_config_fields(slug):
    """Every key of every registered method's space is a TrainConfig or method-config field."""
    from wlora.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(METHODS[slug].config_cls)} | set(TrainConfig.field_names())
    assert set(sp.get_space(slug)) <= fields, set(sp.get_space(slug)) - fields


def test_every_registered_method_has_a_space_and_trainable():
    for slug in METHODS:
        assert importlib.util.find_spec(f"sweeps.spaces.{slug}") is not None
        assert get_trainable(slug).__name__ == f"train_{slug}"
    with pytest.raises(ValueError, match="unknown method"):
        get_trainable("nope")


def test_override_syntax():
    space = sp.with_overrides(
        sp.get_space("weightlora"),
        space_overrides={"lr": "loguniform:1e-5:1e-3", "t": "choice:5,10", "warmup_steps": "grid:0,20"},
        fixed={"lr_w": "2.5", "k": 4},
    )
    assert (space["lr"].lower, space["lr"].upper) == (1e-5, 1e-3)
    assert list(space["t"].categories) == [5, 10]
    assert space["warmup_steps"] == {"grid_search": [0, 20]}
    assert space["lr_w"] == 2.5 and space["k"] == 4
    assert sp.parse_value("1e-4") == 1e-4 and sp.parse_value("none") is None and sp.parse_value("qr") == "qr"
    with pytest.raises(ValueError, match="bad search-space spec"):
        sp.parse_domain("loguniform:1e-5")


def test_trial_config_rejects_unknown_keys():
    cfg = trial_config({"task": "rte", "lr": 1e-3, "r": 4, "k_fraction": 0.25, "t": 5}, "weightlora")
    assert cfg.method == "weightlora" and cfg.method_config["k_fraction"] == 0.25
    with pytest.raises(ValueError, match="lr_ww"):
        trial_config({"task": "rte", "lr_ww": 1.0}, "weightlora")
    with pytest.raises(ValueError, match="got config for method"):
        trial_config({"task": "rte", "method": "lora"}, "weightlora")


# ----- ASHA-stopped trials reach Optuna as PRUNED -----


def _trial(config):
    t = Trial("train_lora", config=config, stub=True)
    return t


def test_asha_stopped_trials_are_pruned_in_optuna():
    ledger = EarlyStopLedger("test-asha-optuna")
    space = {"lr": tune.loguniform(1e-5, 1e-2)}
    searcher = PrunedAwareOptunaSearch(
        space=None, metric="eval_main", mode="max", ledger=ledger, seed=0, sampler=optuna.samplers.TPESampler(seed=0)
    )
    searcher.set_search_properties("eval_main", "max", space)
    sched = LedgerASHAScheduler(
        ledger, time_attr="training_iteration", metric="eval_main", mode="max", max_t=4, grace_period=1,
        reduction_factor=2, stop_last_trials=False,
    )  # fmt: skip
    trials = {}
    for tid in ("good", "bad"):
        cfg = searcher.suggest(tid)
        t = _trial(cfg)
        t.trial_id = tid
        trials[tid] = t
        sched.on_trial_add(None, t)

    def result(it, value, final=False):
        r = {"training_iteration": it, "eval_main": value}
        if final:
            r[FINAL_KEY] = 1.0
        return r

    # "good" runs to the end (4 evaluations + the summary report).
    for it in range(1, 5):
        r = result(it, 0.5 + 0.1 * it)
        assert sched.on_trial_result(None, trials["good"], r) == TrialScheduler.CONTINUE
        searcher.on_trial_result("good", r)
    summary = result(5, 0.9, final=True)
    assert sched.on_trial_result(None, trials["good"], summary) == TrialScheduler.CONTINUE
    searcher.on_trial_complete("good", result=summary)
    # "bad" falls below the rung-1 cutoff: ASHA stops it; Tune then calls on_trial_complete with its
    # last (low-fidelity) result — which plain OptunaSearch would record as a COMPLETE value 0.1.
    r = result(1, 0.1)
    assert sched.on_trial_result(None, trials["bad"], r) == TrialScheduler.STOP
    assert "bad" in ledger and "good" not in ledger
    searcher.on_trial_complete("bad", result=r)

    # A trial that is behind at its LAST evaluation has spent its full budget: not stopped, not pruned.
    late = _trial(searcher.suggest("late"))
    late.trial_id = "late"
    sched.on_trial_add(None, late)
    for it in range(1, 5):
        r = result(it, 0.95 if it < 4 else 0.2)
        assert sched.on_trial_result(None, late, r) == TrialScheduler.CONTINUE
        searcher.on_trial_result("late", r)
    searcher.on_trial_complete("late", result=result(5, 0.2, final=True))
    assert "late" not in ledger

    states = searcher.trial_states()
    assert states == {"good": "COMPLETE", "bad": "PRUNED", "late": "COMPLETE"}
    study = searcher._ot_study
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.value for t in complete] == [0.9, 0.2]  # only full-budget values are final values
    # The ledger survives Tune's pickling of scheduler/searcher (experiment state, Tuner.restore).
    import pickle

    again = pickle.loads(pickle.dumps(sched))
    assert "bad" in again.ledger
    assert again.ledger.stopped is ledger.stopped


def test_plain_optuna_search_would_record_stopped_trials_as_complete():
    """The bias this module fixes, shown on Ray's own OptunaSearch (guards against Ray changing it)."""
    from ray.tune.search.optuna import OptunaSearch

    s = OptunaSearch(space={"lr": tune.loguniform(1e-5, 1e-2)}, metric="eval_main", mode="max", seed=0)
    s.suggest("bad")
    s.on_trial_complete("bad", result={"training_iteration": 1, "eval_main": 0.1})
    assert s._ot_study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_variant_configs_random_and_grid_are_seeded():
    from sweeps.pool import variant_configs

    space = {"lr": tune.loguniform(1e-5, 1e-2), "warmup_steps": tune.grid_search([0, 10])}
    grid = variant_configs(space, grid=True, num_samples=5, seed=0)
    assert sorted(c["warmup_steps"] for c in grid) == [0, 10]  # every grid point once
    rand = variant_configs({"lr": tune.loguniform(1e-5, 1e-2)}, grid=False, num_samples=5, seed=3)
    assert len(rand) == 5 and len({c["lr"] for c in rand}) == 5 and all(1e-5 <= c["lr"] <= 1e-2 for c in rand)
    assert rand == variant_configs({"lr": tune.loguniform(1e-5, 1e-2)}, grid=False, num_samples=5, seed=3)


# ----- validation before any trial -----


def _args(tmp_path, *extra):
    parser = build_parser(DEFAULTS)
    return parser.parse_args(["--storage-path", str(tmp_path / "runs"), *extra])


@pytest.fixture
def real_args(minilm_path, glue_dir, tmp_path):
    base = ["--model", str(minilm_path), "--data-dir", str(Path(glue_dir).parent), "--max-steps", "4"]
    base += ["--train-subset", "16", "--eval-subset", "16", "--max-length", "32"]
    return lambda *extra: _args(tmp_path, *base, *extra)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "lora,nope"], "unknown method 'nope'"),
        (["--tasks", "sst3"], "unknown task 'sst3'"),
        (["--methods", "weightlora", "--set", "weightlora.k=25"], r"`k` must be in \[1, n_adapters=18\], got 25"),
        (["--methods", "weightlora", "--space", "k=choice:2,40"], r"n_adapters=18\], got 40"),
        (["--set", "lr_ww=3"], "lr_ww"),
        (["--data-dir", "/nonexistent/wlora-data"], "is not a folder"),
        (["--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--ranks", "0"], "--ranks"),
        (["--space", "lr=grid:1e-4,1e-3"], "need --search grid"),
        (["--set", "foo.k=3"], "not a method slug"),
    ],
)
def test_bad_input_fails_before_any_trial(real_args, extra, message):
    with pytest.raises(InputError, match=message):
        plan_sweep(real_args(*extra), DEFAULTS)


def test_missing_task_files(real_args, tmp_path):
    empty = tmp_path / "data"
    (empty / "glue").mkdir(parents=True)
    with pytest.raises(InputError, match="not found"):
        plan_sweep(real_args("--data-dir", str(empty)), DEFAULTS)


def test_plan_resolves_cells_and_planned_evals(real_args):
    plan = plan_sweep(real_args("--tasks", "rte,sst2", "--methods", "lora,weightlora", "--ranks", "4,8"), DEFAULTS)
    assert [c.name for c in plan.cells][:3] == ["rte-lora-r4", "rte-lora-r8", "rte-weightlora-r4"]
    assert len(plan.cells) == 8
    assert plan.fixed["rte-weightlora-r4"]["r"] == 4 and "r" not in plan.spaces["rte-weightlora-r4"]
    assert plan.planned_evals["rte-lora-r4"] == 1  # 4 steps, evaluated at the end of the epoch/run
    assert plan.assets["rte"].n_adapters == 18
    assert plan.tracking_uri.startswith("sqlite:///") and str(plan.run_dir) in plan.tracking_uri


def test_cli_exits_2_with_one_line(minilm_path, glue_dir, tmp_path):
    cmd = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--methods", "lora,nope"]
    cmd += ["--model", str(minilm_path), "--storage-path", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown method 'nope'")


def _run(role, method, task, rank, main, *, seed="0", status="completed", r="8", params=None):
    metrics = {"eval_main": main, "eval_accuracy": main, "final_method_params": params or 1000.0}
    metrics["final_method_pct"] = metrics["final_method_params"] / 1e6 * 100
    return RunInfo(f"{role}-{method}-{task}-{rank}-{seed}-{main}", "n", role, method, task, seed, status,
                   {"r": r}, metrics, 0, 1, rank=rank)  # fmt: skip


def test_table_shape():
    """One results table, rank-aware: a row per (method, rank), seed re-runs as mean ± std, a cell that searched
    the rank labelled by its best trial's r, the average only over complete rows, bold per column."""
    children = [
        _run("trial", "lora", "rte", "4", 0.60, r="4"),
        _run("trial", "lora", "rte", "4", 0.55, r="4"),
        _run("trial", "lora", "rte", "8", 0.65),
        _run("trial", "lora", "rte", "8", 0.99, status="failed"),  # failed trials never count
        _run("trial", "lora", "sst2", "4", 0.80, r="4"),
        _run("trial", "lora", "sst2", "8", 0.70),
        *[_run("seed_run", "lora", "sst2", "8", v, seed=str(i)) for i, v in enumerate((0.82, 0.84))],
        _run("trial", "weightlora", "rte", "", 0.62, r="16", params=250.0),  # the cell searched the rank
    ]
    cells = table_cells(children)
    by = {(c["method"], c["rank"], c["task"]): c for c in cells}
    assert set(by) == {("lora", "4", "rte"), ("lora", "8", "rte"), ("lora", "4", "sst2"), ("lora", "8", "sst2"),
                       ("weightlora", "", "rte")}  # fmt: skip
    assert by[("lora", "8", "rte")]["n_trials"] == 2 and by[("lora", "8", "rte")]["n_failed"] == 1
    assert by[("lora", "8", "sst2")]["source"] == "seed_runs" and by[("lora", "8", "sst2")]["n"] == 2
    header, rows, csv_rows = build_table(cells)
    md = md_table(header, rows).splitlines()
    assert md[0] == "| Method | # Params | SST-2 Acc | RTE Acc | Avg |"
    assert md[2] == "| LoRA (r=4) | 1.0K (0.1%) | 0.8000 | 0.6000 | 0.7000 |"
    assert md[3] == "| LoRA (r=8) | 1.0K (0.1%) | **0.8300±0.0141** | **0.6500** | **0.7400** |"
    assert md[4] == "| WeightLoRA (r=16) | 250 (0.025%) | – | 0.6200 | – |"
    assert [(r["method"], r["rank"]) for r in csv_rows] == [("lora", "4"), ("lora", "8"), ("weightlora", "")]


@pytest.mark.parametrize(
    ("module", "task", "train_file"),
    [("squad_sweep", "squad", "squad/dev-v1.1.json"), ("nlg_sweep", "xsum", "xsum/XSum-test-tiny-50.jsonl")],
)
def test_squad_and_nlg_sweeps_plan_on_the_same_machinery(module, task, train_file, minilm_path, glue_dir, tmp_path):
    mod = importlib.import_module(f"sweeps.{module}")
    data_file = Path(glue_dir).parent / train_file
    argv = ["--model", str(minilm_path), "--storage-path", str(tmp_path), "--max-steps", "2", "--max-length", "128"]
    argv += ["--train-subset", "8", "--eval-subset", "4", "--set", f"train_file={data_file}"]
    args = mod.parser().parse_args([*argv, "--set", f"eval_file={data_file}"])
    plan = plan_sweep(args, mod.DEFAULTS)
    assert [c.task for c in plan.cells] == [task, task]
    assert plan.run_dir.name.startswith(mod.DEFAULTS.kind) and args.experiment == f"wlora-{mod.DEFAULTS.kind}"
    assert len(plan.assets[task].data.train) >= 8


def test_pareto_front():
    from sweeps.results import pareto_rows as _pareto

    rows = [
        {"trial_id": "a", "status": "completed", "eval_main": 0.80, "method_pct": 0.5},
        {"trial_id": "b", "status": "completed", "eval_main": 0.78, "method_pct": 0.1},
        {"trial_id": "c", "status": "completed", "eval_main": 0.70, "method_pct": 0.3},  # dominated by b
        {"trial_id": "d", "status": "asha_stopped", "eval_main": 0.99, "method_pct": 0.01},  # not final
    ]
    assert [r["trial_id"] for r in _pareto(rows)] == ["b", "a"]


def test_cloud_storage_uri_goes_to_tune_and_bookkeeping_stays_local(real_args, tmp_path, monkeypatch):
    """`--storage-path s3://…` (the cluster setup) must reach Tune as a URI, not be turned into a path;
    the driver's state, tables and default MLflow store go to a local runs/<name> folder."""
    monkeypatch.chdir(tmp_path)
    plan = plan_sweep(real_args("--storage-path", "s3://wlora-bucket/sweeps/", "--name", "c1"), DEFAULTS)
    assert plan.tune_storage == "s3://wlora-bucket/sweeps/c1"
    assert plan.run_dir == tmp_path / "runs" / "c1" and plan.run_dir.is_dir()
    from sweeps.cluster_checks import check_cluster_storage

    check_cluster_storage("s3://wlora-bucket/sweeps/", "http://127.0.0.1:5000", num_nodes=3)  # accepted
    with pytest.raises(ValueError, match="storage"):
        check_cluster_storage(str(plan.run_dir.parent), "http://127.0.0.1:5000", num_nodes=3)


# ----- one pool for every cell: per-cell searches and per-cell ASHA -----


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
    assert [s[ROLE_KEY] for s in seeds] == ["seed_run", "seed_run"] and [s["seed"] for s in seeds] == [0, 1]
    assert all(s["lr"] == got[4]["lr"] for s in seeds)
    # Nothing left to hand out (sst2 has no seed re-runs): Tune waits for the live trials, then ends.
    assert searcher.suggest("s2") == Searcher.FINISHED


# ----- ASHA's max_t is the runner's own count of evaluations -----


@pytest.mark.slow
def test_planned_evaluations_match_a_real_run(real_args):
    """ASHA's max_t for each cell (the plan's ``planned_evals``) equals the number of evaluations a REAL run of
    that cell reports, by epochs (LoRA-drop's importance phase included) and by ``--eval-every``."""
    from sweeps.pool import variant_configs
    from wlora.loop import run_training
    from wlora.run_config import TrainConfig

    for extra in (["--max-steps", "none", "--max-epochs", "2"], ["--max-steps", "4", "--eval-every", "1"]):
        args = real_args(
            "--tasks", "sst2", "--methods", "lora,lora_drop", "--train-subset", "24", "--batch-size", "8",
            "--eval-subset", "8", "--max-length", "16", "--set", "lora_drop.sample_ratio=0.5",
            "--set", "lora_drop.importance_epochs=2", "--name", f"maxt{len(extra)}{extra[1]}", *extra,
        )  # fmt: skip
        plan = plan_sweep(args, DEFAULTS)
        for cell in plan.cells:
            config = {**plan.fixed[cell.name], **variant_configs(plan.spaces[cell.name], grid=False, num_samples=1)[0]}
            reports: list[dict] = []
            cfg = TrainConfig.from_flat(config)
            result = run_training(cfg, assets=plan.assets[cell.task], report=lambda m, ckpt, out=reports: out.append(m))
            assert result.status == "completed", result.error
            assert plan.planned_evals[cell.name] == len(reports), (cell.name, extra, [m.get("step") for m in reports])


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


def test_set_and_space_take_comma_lists_for_list_fields(real_args):
    """``--set target_modules=query,value`` pins a list (as ``wlora.train --set`` does); a regex stays one
    string, and the override syntax (``choice:…``) is still a search dimension."""
    plan = plan_sweep(
        real_args(
            "--tasks",
            "rte",
            "--methods",
            "lora,weightlora",
            "--set",
            "target_modules=query,value",
            "--set",
            "weightlora.k=2",
            "--space",
            "lr=choice:1e-4,1e-3",
        ),
        DEFAULTS,
    )
    for cell in plan.cells:
        assert plan.fixed[cell.name]["target_modules"] == ["query", "value"]
        assert plan.spaces[cell.name]["lr"].categories == [1e-4, 1e-3]
    regex = plan_sweep(
        real_args("--tasks", "rte", "--methods", "lora", "--set", r"target_modules=.*\.value$"), DEFAULTS
    )
    assert regex.fixed[regex.cells[0].name]["target_modules"] == r".*\.value$"
