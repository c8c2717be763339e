"""The recorded benchmark and its replay: the recorded file's shape, the replay's bookkeeping on known
numbers, and replayed sweeps through the real pool (PooledSearcher / PooledScheduler on Ray Tune)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.record_curves import GRIDS, grid_points, load, point_key
from bench.replay import STRATEGIES, Table, forecast_of, reach, simulate, spent_by
from tests.conftest import NETNS

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "bench" / "recorded" / "sst2_minilm.jsonl"


def test_recorded_file_has_its_meta_and_full_curves():
    meta, runs = load(RECORDED)
    assert meta["budget"]["train_subset"] == 1024 and meta["grids"] == json.loads(json.dumps(GRIDS))
    assert meta["commit"] and meta["started"] and meta["command"].startswith("python bench/record_curves.py")
    evals = meta["budget"]["train_subset"] // meta["budget"]["batch_size"] * 2 // meta["budget"]["eval_every"]
    keys = {point_key(m, pt) for m in GRIDS for pt in grid_points(m)}
    for r in runs:
        assert r["key"] in keys and r["status"] == "completed" and r["step_s"] > 0
        assert [s for s, _ in r["curve"]] == [16 * (i + 1) for i in range(evals)]
    lora = Table(RECORDED, "lora")
    assert len(lora.points) == 12 and lora.values()["lr"] == [5e-4, 1e-3, 2e-3, 4e-3]
    assert 0.5 < lora.grid_best() < 1


def write_table(path: Path, finals: dict[float, list[float]], step_s: float = 1.0) -> Path:
    """A toy recorded table: method lora, one dimension ``lr``; each point's seeds end at the given finals after
    4 evaluations every 16 steps (64 steps = 2 epochs of 1,024 / 32), each evaluation 1 s, start-up 0."""
    meta = {"kind": "meta", "budget": {"train_subset": 1024, "batch_size": 32, "epochs": 2}}
    lines = [json.dumps(meta)]
    for lr, seeds in finals.items():
        for seed, final in enumerate(seeds):
            curve = [[16 * (i + 1), final - 0.1 * (3 - i)] for i in range(4)]
            run = {"kind": "run", "method": "lora", "key": point_key("lora", {"lr": lr}), "point": {"lr": lr},
                   "seed": seed, "status": "completed", "curve": curve, "step_s": step_s, "eval_s": 1.0,
                   "startup_s": 0.0}  # fmt: skip
            lines.append(json.dumps(run))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_seed_noise_and_grid_best_on_known_numbers(tmp_path):
    t = Table(write_table(tmp_path / "t.jsonl", {1.0: [0.80, 0.82], 2.0: [0.70, 0.70], 3.0: [0.60, 0.64]}), "lora")
    assert t.grid_best() == pytest.approx(0.81) and t.evals == 4 and t.epochs == 2
    # pooled within-point variance: (2·0.01² + 0 + 2·0.02²) / 3 degrees of freedom
    assert t.seed_noise() == pytest.approx(((2 * 0.01**2 + 2 * 0.02**2) / 3) ** 0.5)


def test_reach_follows_the_incumbent_and_counts_trial_epochs(tmp_path):
    t = Table(write_table(tmp_path / "t.jsonl", {1.0: [0.80, 0.80], 2.0: [0.70, 0.70], 3.0: [0.60, 0.90]}), "lora")
    k1, k2, k3 = (point_key("lora", {"lr": lr}) for lr in (1.0, 2.0, 3.0))
    trials = [
        {"start": 0, "end": 10, "score": 0.70, "epochs": 2.0, "key": k2},
        {"start": 0, "end": 5, "score": None, "epochs": 0.5, "key": k1},  # stopped early
        {"start": 5, "end": 15, "score": 0.90, "epochs": 2.0, "key": k3},  # a lucky seed of a mean-0.75 point
        {"start": 10, "end": 20, "score": 0.80, "epochs": 2.0, "key": k1},
        {"start": 10, "end": 30, "score": 0.91, "epochs": 2.0, "key": k1},
    ]
    # grid best 0.80 (lr 1.0); the lucky 0.90 of lr 3.0 becomes the incumbent at 15 but its mean is 0.75; the
    # 0.80 at 20 does not beat it; the 0.91 of lr 1.0 at 30 does: everything has been spent by then
    assert reach(trials, t, delta=0.01) == {"trial_epochs": pytest.approx(8.5), "makespan_s": 30, "full_trials": 4}
    # with δ = 0.06 the lr-3.0 incumbent (0.75) already counts, at 15: 2 + 0.5 + 2 + half of each running trial
    hit = reach(trials, t, delta=0.06)
    assert hit["makespan_s"] == 15 and hit["trial_epochs"] == pytest.approx(4.5 + 1.0 + 0.5)
    assert spent_by(trials, 0) == 0


def test_simulated_grid_runs_every_point_on_the_slots(tmp_path):
    t = Table(write_table(tmp_path / "t.jsonl", {lr: [0.5 + lr / 10] * 2 for lr in (1.0, 2.0, 3.0, 4.0)}), "lora")
    trials = simulate(t, "grid", slots=2, seed=0, budget=4)
    # each trial: 4 × (16 steps × 1 s + 1 s evaluation) = 68 s; 4 trials on 2 slots: two waves
    assert sorted((tr["start"], tr["end"]) for tr in trials) == [(0, 68), (0, 68), (68, 136), (68, 136)]
    assert all(tr["score"] is not None and tr["epochs"] == 2 for tr in trials)
    hit = reach(trials, t, delta=0.0)
    assert hit is not None and hit["makespan_s"] == 136 and hit["trial_epochs"] == pytest.approx(8)


def test_simulated_asha_stops_trials_and_the_forecast_model_agrees(tmp_path):
    finals = {lr: [0.5 + lr / 100, 0.5 + lr / 100] for lr in range(1, 17)}
    t = Table(write_table(tmp_path / "t.jsonl", {float(k): v for k, v in finals.items()}), "lora")
    trials = simulate(t, "random_asha", slots=4, seed=0, budget=32)
    stopped = [tr for tr in trials if tr["score"] is None]
    assert len(trials) == 32 and stopped and all(tr["epochs"] < 2 for tr in stopped)
    spent = sum(tr["epochs"] for tr in trials)
    assert spent < 32 * 2
    fc = forecast_of(t, STRATEGIES["random_asha"], 32, 4)
    # the forecast's expected-cost model vs what the simulated ASHA spent
    assert fc["trial_epochs"] == pytest.approx(spent, rel=0.35)


@pytest.mark.slow
@pytest.mark.subprocess
def test_replay_through_the_real_pool(netns, tmp_path, ray_tmp):
    out = tmp_path / "replay.json"
    cmd = [sys.executable, str(ROOT / "bench" / "replay.py"), "--table", str(RECORDED), "--method", "lora",
           "--slots", "8", "--seeds", "2", "--strategies", "grid,default", "--time-scale", "0.005", "--engine", "tune",
           "--ray-temp-dir", ray_tmp, "--json", str(out)]  # fmt: skip
    env = {"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([*NETNS, "bash", "-c", 'ip link set lo up && exec "$@"', "netns", *cmd], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = {r["strategy"]: r for r in json.loads(out.read_text())}
    grid, tpe = rows["grid"], rows["default"]
    assert grid["reached"] >= 1 and grid["sweep_trial_epochs"] == pytest.approx(12 * 2)
    assert tpe["seeds"] == 2 and 0 < tpe["sweep_trial_epochs"] < 12 * 2 and "grid best" in proc.stdout


def test_table_of_a_subset_a_resample_and_collapsed_twins(tmp_path):
    t = Table(write_table(tmp_path / "t.jsonl", {1.0: [0.80, 0.82, 0.84], 2.0: [0.70, 0.72, 0.74]}), "lora")
    k1, k2 = (point_key("lora", {"lr": lr}) for lr in (1.0, 2.0))
    less = t.without(k1, 1)
    assert sorted(less.points[k1]["runs"]) == [0, 2] and less.mean_final(k1) == pytest.approx(0.82)
    assert len(t.points[k1]["runs"]) == 3 and len(less.runs()) == 5  # the table itself is left as it was
    with pytest.raises(ValueError, match="one run only"):
        less.without(k1, 0).without(k1, 2)
    boot = t.resample(np.random.default_rng(0))
    for k in (k1, k2):  # as many runs per point, relabelled 0 … n − 1, each a copy of a recorded run
        runs = boot.points[k]["runs"]
        assert sorted(runs) == [0, 1, 2]
        assert all(r["curve"] == t.points[k]["runs"][r["origin"]]["curve"] for r in runs.values())
    assert Table.from_runs(t.meta, t.runs()[:3], "lora").runs() == t.runs()[:3]
    # twins: lr 3.0 records lr 1.0's curves on every seed
    twins = write_table(tmp_path / "w.jsonl", {1.0: [0.8, 0.82], 2.0: [0.7, 0.72], 3.0: [0.8, 0.82]})
    c = Table(twins, "lora", collapse=True)
    assert len(c.points) == 2 and c.collapsed == 1 and c.grid_size == 3 and c.values()["lr"] == [1.0, 2.0, 3.0]
    assert c.run_for({"lr": 3.0}, "x")["key"] == k1 and c.resample(np.random.default_rng(1)).grid_size == 3
    assert len(Table(twins, "lora").points) == 3  # off by default: the replay's outputs are unchanged


def test_stable_draws_change_only_the_trials_that_drew_a_dropped_seed(tmp_path):
    t = Table(write_table(tmp_path / "t.jsonl", {1.0: [0.80, 0.82, 0.84, 0.86]}), "lora", draw="stable")
    k1 = point_key("lora", {"lr": 1.0})
    draws = {d: t.run_for({"lr": 1.0}, d)["seed"] for d in map(str, range(200))}
    assert set(draws.values()) == {0, 1, 2, 3}
    less = t.without(k1, 2)
    for d, s in draws.items():
        again = less.run_for({"lr": 1.0}, d)["seed"]
        assert again == s if s != 2 else again != 2
    # a race run: an unseen seed first (stable order), then the least replayed one, flagged as a reuse
    run, reused = t.race_run({"lr": 1.0}, "r", {0: 1, 1: 1, 3: 2})
    assert run["seed"] == 2 and not reused
    run, reused = t.race_run({"lr": 1.0}, "r", {0: 1, 1: 2, 2: 1, 3: 2})
    assert run["seed"] in (0, 2) and reused


def test_a_bayesian_bootstrap_reweights_the_runs_and_the_draws_follow(tmp_path):
    t = Table(write_table(tmp_path / "t.jsonl", {1.0: [0.80, 0.84], 2.0: [0.70, 0.72, 0.74]}), "lora", draw="stable")
    k1, k2 = (point_key("lora", {"lr": lr}) for lr in (1.0, 2.0))
    w = t.reweight(np.random.default_rng(0))
    weights = {s: r["weight"] for s, r in w.points[k2]["runs"].items()}
    assert sorted(weights) == [0, 1, 2] and sum(weights.values()) == pytest.approx(3.0)  # every run kept, mean 1
    assert w.mean_final(k2) == pytest.approx(sum(weights[s] * (0.70, 0.72, 0.74)[s] for s in range(3)) / 3)
    assert w.grid_best() == pytest.approx(max(w.mean_final(k1), w.mean_final(k2)))
    draws = [w.run_for({"lr": 2.0}, str(d))["seed"] for d in range(3000)]
    for s in range(3):  # a trial draws a run with probability its weight
        assert draws.count(s) / 3000 == pytest.approx(weights[s] / 3, abs=0.03)
    # unweighted, the exponential race is the highest hash first: the same draws as before weights existed
    assert [t.run_for({"lr": 2.0}, str(d))["seed"] for d in range(50)] == [
        max(range(3), key=lambda s: hashlib.sha256(f"{d}|{s}".encode()).hexdigest()) for d in range(50)
    ]
