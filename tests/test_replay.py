"""The recorded benchmark and its replay: the recorded file's shape, the replay's bookkeeping on known
numbers, and replayed sweeps through the real pool (PooledSearcher / PooledScheduler on Ray Tune)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.record_curves import GRIDS, grid_points, load, point_key
from bench.replay import Table, reach
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


def test_reach_counts_trial_epochs_until_the_target():
    # (start, end, final score or None, evaluations, epochs reached)
    trials = [(0, 10, 0.70, 4, 2.0), (0, 5, None, 1, 0.5), (5, 15, 0.80, 4, 2.0), (10, 30, 0.81, 4, 2.0)]
    hit = reach(trials, 0.79, time_scale=0.5)
    # the 0.80 trial ends at 15: by then trials 1–3 spent 2 + 0.5 + 2 epochs and trial 4 a quarter of its 2
    assert hit == {"trial_epochs": pytest.approx(4.5 + 0.5), "makespan_s": 30.0, "trials_ended": 3}
    assert reach(trials, 0.9, 1.0) is None


@pytest.mark.slow
@pytest.mark.subprocess
def test_replay_through_the_real_pool(netns, tmp_path, ray_tmp):
    out = tmp_path / "replay.json"
    cmd = [sys.executable, str(ROOT / "bench" / "replay.py"), "--table", str(RECORDED), "--method", "lora",
           "--slots", "8", "--seeds", "2", "--strategies", "grid,tpe_asha", "--time-scale", "0.005",
           "--ray-temp-dir", ray_tmp, "--json", str(out)]  # fmt: skip
    env = {"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([*NETNS, "bash", "-c", 'ip link set lo up && exec "$@"', "netns", *cmd], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = {r["strategy"]: r for r in json.loads(out.read_text())}
    grid, tpe = rows["grid"], rows["tpe_asha"]
    assert grid["reached"] == 1 and 0 < grid["trial_epochs"] <= 12 * 2
    assert tpe["seeds"] == 2 and tpe["reached"] >= 0 and "grid best" in proc.stdout
