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
from trainables import FINAL_KEY, get_trainable, trial_config
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
