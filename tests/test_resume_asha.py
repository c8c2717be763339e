"""A resumed sweep decides as the uninterrupted one would (every cell's ASHA rungs travel with the experiment),
and ``--resume --num-samples N`` grows a sweep, finished or not, from the trials it already ran."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweeps.search import EarlyStopLedger
from tests.conftest import TINY
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY

ROOT = Path(__file__).resolve().parents[1]


# ----- in process: the pooled scheduler's state rides in the pooled searcher's -----


def _trial(cell: str, tid: str) -> Trial:
    t = Trial("train_lora", config={"lr": 1e-3, CELL_KEY: cell, ROLE_KEY: "trial"}, stub=True)
    t.trial_id = tid
    return t


def _pool(tag: str):
    from sweeps.pool import CellSearch, PooledScheduler, PooledSearcher
    from sweeps.search import make_optuna, make_scheduler

    ledger = EarlyStopLedger(f"resume-asha-{tag}")
    kw = dict(metric="eval_main", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    scheduler = PooledScheduler({"rte": partial(make_scheduler, True, ledger=ledger, **kw)})
    space = {"lr": tune.loguniform(1e-5, 1e-2)}
    search = make_optuna(space, ledger=ledger, seed=0, metric="eval_main", mode="max")
    searcher = PooledSearcher([CellSearch("rte", {"task": "rte"}, 3, search)])
    return searcher, scheduler


def test_restored_searcher_brings_back_each_cells_asha_rungs(tmp_path):
    """A strong trial records rung 1 and ends; the snapshot is taken; a fresh searcher + scheduler (as
    ``Tuner.restore`` builds them from ``tuner.pkl``) restore it: a weak trial arriving at rung 1 is stopped.
    Without the scheduler's state (what Tune alone restores) the same trial goes on."""
    searcher, scheduler = _pool("a")
    searcher.attach_scheduler(scheduler)
    strong = _trial("rte", "strong")
    scheduler.on_trial_add(None, strong)
    assert scheduler.on_trial_result(None, strong, {"training_iteration": 1, "eval_main": 0.8}) == "CONTINUE"
    scheduler.on_trial_result(None, strong, {"training_iteration": 2, "eval_main": 0.85})
    running = _trial("rte", "running")  # interrupted after its first rung: it keeps its bracket on restore
    scheduler.on_trial_add(None, running)
    scheduler.on_trial_result(None, running, {"training_iteration": 1, "eval_main": 0.9})
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))

    again, fresh = _pool("b")
    again.attach_scheduler(fresh)
    again.restore(str(path))
    rungs = {m: dict(r) for m, r in fresh.cells["rte"]._brackets[0]._rungs}
    assert rungs[1] == {"strong": 0.8, "running": 0.9} and rungs[2] == {"strong": 0.85}
    strong.status = Trial.TERMINATED
    for t in (strong, running):  # what Tune's resume does with every restored trial
        fresh.on_trial_add(None, t)
    weak = _trial("rte", "weak")
    fresh.on_trial_add(None, weak)
    assert fresh.on_trial_result(None, weak, {"training_iteration": 1, "eval_main": 0.5}) == TrialScheduler.STOP
    assert "weak" in fresh.cells["rte"].ledger
    # the interrupted trial continues where it was: its rung-1 result is not judged twice
    assert fresh.on_trial_result(None, running, {"training_iteration": 2, "eval_main": 0.9}) == "CONTINUE"

    # Tune alone: the searcher comes back, the scheduler is the one tuner.pkl held at the start.
    bare, unsaved = _pool("c")
    bare.restore(str(path))
    unsaved.on_trial_add(None, weak)
    assert unsaved.on_trial_result(None, weak, {"training_iteration": 1, "eval_main": 0.5}) == "CONTINUE"


def test_grow_applies_on_restore_and_keeps_the_study(tmp_path):
    """``grow`` raises each cell's budget when Tune restores the searcher; its Optuna study keeps its trials."""
    from sweeps.pool import CellSearch

    searcher, _ = _pool("g")
    for i in range(3):
        assert searcher.suggest(f"t{i}")[CELL_KEY] == "rte"
        searcher.on_trial_complete(f"t{i}", {"eval_main": 0.5 + i / 10, FINAL_KEY: True})
    assert searcher.suggest("t3") == "FINISHED"
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))

    again, _ = _pool("h")
    again.grow([CellSearch("rte", {"task": "rte"}, 5, again.cells["rte"].search)])
    again.restore(str(path))
    assert again.cells["rte"].budget == 5 and again.cells["rte"].ended == 3
    assert isinstance(again.suggest("t3"), dict) and isinstance(again.suggest("t4"), dict)
    assert again.suggest("t5") == "FINISHED"  # the grown budget is handed out
    assert set(again.optuna_states("rte")) == {f"t{i}" for i in range(5)}  # one study: old trials + new
    assert not again.get_state().get("_grow")
    assert pickle.loads(pickle.dumps(again.get_state()))["cells"]["rte"].budget == 5


# ----- real sweeps (MiniLM + an SST-2 slice, local Ray in a loopback-only namespace) -----


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "sweep_state.json").read_text())


def _children(state: dict, role: str = "trial") -> list:
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(state["tracking_uri"]).search_runs(
        [state["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'", max_results=500
    )
    return [r for r in runs if r.data.tags.get("wlora.role") == role]


def _curve(state: dict, run_id: str) -> dict[int, float]:
    """Step → eval_main of one MLflow child."""
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(state["tracking_uri"]).get_metric_history(run_id, "eval_main")}


def _run(argv, env, timeout=420) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
    return out


def _ended(run_dir: Path, cell: str) -> list[str]:
    """Tune trial ids of ``cell`` whose final report (after training) is in Tune's own log."""
    done = []
    for trial_dir in run_dir.glob("pool/trial_*"):
        try:
            if json.loads((trial_dir / "params.json").read_text()).get(CELL_KEY) != cell:
                continue
            lines = (trial_dir / "result.json").read_text().splitlines()
        except (OSError, ValueError):
            continue
        if any(ln.strip() and json.loads(ln).get(FINAL_KEY) for ln in lines[-2:]):
            done.append(trial_dir.name.removeprefix("trial_"))
    return done


@pytest.mark.slow
@pytest.mark.subprocess
def test_interrupted_sweep_resumes_with_its_asha_rungs(sweep_cmd, tmp_path):
    """Two cells, one slot, a grid whose first trial is strong (lr 5e-3) and second weak (lr 1e-7, the
    untrained model's score). WeightLoRA's strong trial ends and records rung 1; the sweep is interrupted
    (SIGINT) while LoRA's first trial runs; ``--resume``: WeightLoRA's weak trial reaches rung 1 below the
    restored cut and is stopped there (``asha_stopped`` after one evaluation). Without the restored rungs it
    is alone at every rung and trains to the end."""
    from tests.test_sweep_faults import _driver

    make, env = sweep_cmd
    wl = "sst2-weightlora-r8"
    args = [*TINY, "--methods", "weightlora,lora", "--search", "grid", "--space", "lr=grid:5e-3,1e-7"]
    args += ["--set", "warmup_steps=0", "--grace-period", "1", "--reduction-factor", "2"]
    args += ["--max-concurrent", "1", "--num-cpus", "2", "--name", "rungs"]
    run_dir = tmp_path / "runs" / "rungs"
    proc = subprocess.Popen(make(*args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    try:
        while not _ended(run_dir, wl):
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.time() < deadline, "WeightLoRA's first trial did not end"
            time.sleep(0.2)
        os.kill(_driver(proc.pid), signal.SIGINT)  # LoRA's first trial is running now (one slot)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-4000:]
    state = _state(run_dir)
    assert state["status"] == "interrupted"
    first = {c.data.tags["wlora.cell"]: c for c in _children(state)}
    assert set(first) == {wl, "sst2-lora-r8"}, "WeightLoRA's weak trial must not have started before the interrupt"
    assert first[wl].data.tags["status"] == "completed" and float(first[wl].data.params["lr"]) == 5e-3
    assert first["sst2-lora-r8"].data.tags["status"] == "interrupted"

    # The experiment snapshot holds WeightLoRA's ASHA with the strong trial's result at rung 1.
    with sorted(run_dir.glob("pool/searcher-state-*.pkl"))[-1].open("rb") as f:
        saved = pickle.load(f)
    strong_id = first[wl].data.tags["trial_id"]
    rungs = {m: r for m, r in saved["scheduler_state"]["cells"][wl]._brackets[0]._rungs}
    cut = rungs[1][strong_id]
    assert cut == pytest.approx(_curve(state, first[wl].info.run_id)[2]), rungs  # its first evaluation

    _run(make("--resume", "--name", "rungs", "--storage-path", str(tmp_path / "runs")), env)
    state = _state(run_dir)
    assert state["status"] == "finished"
    trials = {(c.data.tags["wlora.cell"], float(c.data.params["lr"])): c for c in _children(state)}
    assert len(trials) == 4
    weak = trials[wl, 1e-7]
    curve = _curve(state, weak.info.run_id)
    assert weak.data.tags["status"] == "asha_stopped", (weak.data.tags, curve, cut)
    assert list(curve) == [2] and curve[2] < cut  # stopped at rung 1 (its first evaluation), below the cut
    assert trials[wl, 5e-3].info.run_id == first[wl].info.run_id  # the strong trial was kept, not re-run
    lora = trials["sst2-lora-r8", 5e-3]
    assert lora.info.run_id == first["sst2-lora-r8"].info.run_id and lora.data.tags["status"] == "completed"
    assert state["cells"][wl]["n_trials"] == 2


@pytest.mark.slow
@pytest.mark.subprocess
def test_finished_sweep_grows_with_resume_num_samples(sweep_cmd, tmp_path):
    """A finished sweep of 2 Optuna trials per cell, then ``--resume --num-samples 3``: one more trial per cell in
    the same Tune experiment and under the same MLflow parent, each cell's Optuna study going on from its two
    earlier trials; the tables and report are rebuilt over 3 trials per cell. The sweep raced its top 2 per cell
    (--race-top 2); the grown search races again over its new top 2. Shrinking, a grid and a sweep with seed
    re-runs are refused with one line before anything runs."""
    import csv

    from sweeps.glue_sweep import DEFAULTS, parser
    from sweeps.plan import InputError, plan_sweep

    make, env = sweep_cmd
    runs = tmp_path / "runs"
    run_dir = runs / "grow"
    args = [*TINY, "--methods", "lora,weightlora", "--num-samples", "2", "--max-concurrent", "2", "--num-cpus", "2"]
    args += ["--race-top", "2", "--no-asha"]  # both trials of each cell race (no ASHA: both train to the end)
    _run(make(*args, "--name", "grow"), env)
    state = _state(run_dir)
    assert state["status"] == "finished"
    before = {c.data.tags["trial_id"]: (c.info.run_id, c.data.tags["wlora.cell"]) for c in _children(state)}
    assert len(before) == 4
    first_race = {name: cell["race"] for name, cell in state["cells"].items()}
    assert all(r["race_runs"] == 2 and r["pick"] in before for r in first_race.values()), first_race
    report = run_dir / "report" / "report.md"
    report_before = report.stat().st_mtime

    def resume(*extra: str):
        argv = ["--resume", "--name", "grow", "--storage-path", str(runs), *extra]
        return plan_sweep(parser().parse_args(argv), DEFAULTS)

    with pytest.raises(InputError, match="already runs 2 trials per cell; a sweep grows, it never shrinks"):
        resume("--num-samples", "1")
    saved = (run_dir / "sweep_state.json").read_text()
    for change, expect in [({"search": "grid"}, "a grid sweep runs each grid point once"), ({"seeds": 2}, "--seeds")]:
        (run_dir / "sweep_state.json").write_text(json.dumps({**state, "args": {**state["args"], **change}}))
        with pytest.raises(InputError, match=expect):
            resume("--num-samples", "3")
        (run_dir / "sweep_state.json").write_text(saved)

    _run(make("--resume", "--name", "grow", "--storage-path", str(runs), "--num-samples", "3"), env)
    state = _state(run_dir)
    assert state["status"] == "finished" and state["args"]["num_samples"] == 3
    assert state["parent_run_id"] == json.loads(saved)["parent_run_id"]
    children = _children(state)  # children of the one parent
    assert len(children) == 6
    after = {c.data.tags["trial_id"]: (c.info.run_id, c.data.tags["wlora.cell"]) for c in children}
    assert {t: after[t] for t in before} == before  # the earlier trials kept, none re-run
    assert all(c.data.tags["status"] in ("completed", "asha_stopped") for c in children)
    assert len(list(run_dir.glob("pool/trial_*"))) == 6 + 8  # the same Tune experiment: trials and race runs
    for name, cell in state["cells"].items():
        assert cell["n_trials"] == 3, (name, cell)
        earlier = {t for t, (_, c) in before.items() if c == name}
        # One Optuna study per cell, continued: it holds the two earlier trials and the new one.
        assert len(cell["optuna_states"]) == 3 and earlier < set(cell["optuna_states"]), cell["optuna_states"]
    long = list(csv.DictReader((run_dir / "results" / "table_long.csv").open()))
    assert sorted(r["n_trials"] for r in long) == ["3", "3"]
    assert report.stat().st_mtime > report_before
    # The grown search raced again: the top 2 of its 3 trials, a candidate that raced before keeping its race
    # run (no config runs a seed twice); one race pick per cell in MLflow, the state's.
    races = _children(state, role="race")
    assert len(races) == 8, [(r.data.tags["wlora.cell"], r.data.params["lr"]) for r in races]
    for name, cell in state["cells"].items():
        race = cell["race"]
        assert race["earlier"][0]["pick"] == first_race[name]["pick"] and race["race_runs"] == 4
        trials = {c.data.tags["trial_id"]: c for c in children if c.data.tags["wlora.cell"] == name}
        top2 = sorted(trials, key=lambda t: -trials[t].data.metrics["eval_main"])[:2]
        assert sorted(c["trial_id"] for c in race["candidates"]) == sorted(top2)
        mine = [r for r in races if r.data.tags["wlora.cell"] == name]
        runs = [(r.data.params["lr"], r.data.params["seed"]) for r in mine]
        assert len(set(runs)) == len(runs) and all(seed != "0" for _, seed in runs), runs
        for c in race["candidates"]:  # its search run and every race run of its config
            lr = trials[c["trial_id"]].data.params["lr"]
            assert c["n"] == 1 + sum(1 for r_lr, _ in runs if r_lr == lr), (c, runs)
        tagged = [t for t, c in trials.items() if c.data.tags.get("wlora.race_pick") == "1"]
        assert tagged == [race["pick"]] and cell["best_trial_id"] == race["pick"]


def test_random_search_grows_by_the_next_draws_of_its_seeded_sequence(tmp_path):
    """Random search: the grown cell hands out the draws a larger ``--num-samples`` would have made after the
    ones already run (seeded), never the earlier ones again."""
    from sweeps.pool import CellSearch, ListSearch, PooledSearcher, variant_configs

    space = {"lr": tune.loguniform(1e-5, 1e-2), "warmup_steps": tune.choice([0, 5])}
    first = variant_configs(space, grid=False, num_samples=2, seed=3)
    more = variant_configs(space, grid=False, num_samples=4, seed=3)
    assert more[:2] == first and more[2] != more[0]
    searcher = PooledSearcher([CellSearch("rte", {"task": "rte"}, 2, ListSearch(first))])
    ran = [searcher.suggest(f"t{i}")["lr"] for i in range(2)]
    searcher.save(str(tmp_path / "s.pkl"))
    again = PooledSearcher([CellSearch("rte", {"task": "rte"}, 2, ListSearch(first))])
    again.grow([CellSearch("rte", {"task": "rte"}, 4, ListSearch(more))])
    again.restore(str(tmp_path / "s.pkl"))
    new = [again.suggest(f"t{i}")["lr"] for i in range(2, 4)]
    assert new == [c["lr"] for c in more[2:]] and not set(new) & set(ran)
    assert again.suggest("t4") == "FINISHED"
