"""The forecast's arithmetic on toy plans (known answers), and --forecast from the command line."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import forecast as fc
from sweeps.glue_sweep import parser

ROOT = Path(__file__).resolve().parents[1]


def test_asha_expected_evaluations():
    # rungs at 1 and 2 evaluations of 4: 1 + (2 − 1)/2 + (4 − 2)/4
    assert fc.asha_expected_evals(4, 1, 2) == pytest.approx(2.0)
    # no rung below max_t: every trial runs to the end
    assert fc.asha_expected_evals(1, 1, 2) == pytest.approx(1.0)
    # rungs 1, 3, 9 of 27 with η = 3: 1 + 2/3 + 6/9 + 18/27
    assert fc.asha_expected_evals(27, 1, 3) == pytest.approx(1 + 2 / 3 + 6 / 9 + 18 / 27)


def test_asynchronous_asha_promotes_more_in_small_sweeps():
    first, second = fc.asha_trials(2, 4, 1, 2)
    # the first result at every rung always continues: a full run
    assert first == [(0.0, 1), (0.0, 2), (1.0, 4)]
    # the second continues with probability ½ at each rung (one earlier value, its median is the cutoff)
    assert second == [(0.5, 1), (0.25, 2), (0.25, 4)]
    # a large sweep tends to successive halving's 1/η shares
    late = fc.asha_trials(4000, 4, 1, 2)[-500:]
    assert sum(fc.mean_of(o) for o in late) / 500 == pytest.approx(fc.asha_expected_evals(4, 1, 2), rel=0.02)
    assert all(sum(p for p, _ in o) == pytest.approx(1.0) for o in late)
    assert fc.search_runs(3, 4, False, 1, 2) == [[(1.0, 4)]] * 3


def test_expected_makespan_of_random_durations():
    coin = [(0.5, 1.0), (0.5, 3.0)]  # 1 s or 3 s with equal odds
    # two at once: the later end is 1 s only if both are short (¼)
    assert fc.makespan([([coin, coin], [])], 2) == pytest.approx(0.25 * 1 + 0.75 * 3)
    # one slot: the second starts at the first's mean (2 s)
    assert fc.makespan([([coin, coin], [])], 1) == pytest.approx(2 + 2)


def test_makespan_of_a_toy_schedule():
    # 2 slots; search trials 10 s each (3), then the cell's 2 seed re-runs of 5 s once its search has ended
    assert fc.makespan([([10.0, 10.0, 10.0], [5.0, 5.0])], 2) == pytest.approx(25.0)
    # one slot: everything in a row
    assert fc.makespan([([10.0, 10.0, 10.0], [5.0, 5.0])], 1) == pytest.approx(40.0)
    # two cells, 4 slots: both searches at once, the seeds right after each
    assert fc.makespan([([4.0], [1.0, 1.0]), ([6.0], [2.0])], 4) == pytest.approx(8.0)
    # more slots than trials: the longest chain
    assert fc.makespan([([3.0, 7.0], [2.0])], 16) == pytest.approx(9.0)


def _args(*argv):
    a = parser().parse_args(["--model", "m", *argv])
    a.measure_lengths = False  # full-length batches: the toy numbers below assume them
    return a


def test_forecast_counts_and_hours_on_a_toy_plan():
    # 1 task × 2 methods × 1 rank; 512 examples / batch 32 = 16 steps per epoch, 2 epochs = 32 steps,
    # evaluations every 16 steps = 2; 4 random-search trials per cell, ASHA (grace 1, η 2): 1.5 evaluations
    # expected per trial; 3 seed re-runs.
    # No race here (tests/test_race.py forecasts it).
    a = _args("--tasks", "sst2", "--methods", "lora,weightlora", "--ranks", "8", "--train-subset", "512",
              "--max-epochs", "2", "--max-steps", "none", "--eval-every", "16", "--batch-size", "32",
              "--max-length", "64", "--eval-subset", "100", "--search", "random", "--num-samples", "4",
              "--seeds", "3", "--race-top", "0")  # fmt: skip
    speed = fc.Speed("toy", slots=2, train_tok_s=2048.0, eval_tok_s=6400.0, startup_s=10.0)
    out = fc.forecast(a, speed, {})
    sweep = out["sweep_high"]
    assert sweep["trials"] == 2 * (4 + 3)
    # a full trial: 10 s + 32 steps × 2048 tokens / 2048 + 2 evaluations × 6400 tokens / 6400 = 44 s
    w = fc.cell_work("sst2", "lora", a)
    assert (w.steps, w.evals) == (32, 2) and fc.trial_seconds(w, speed) == pytest.approx(44.0)
    # ASHA (one rung, at evaluation 1): a cell's first trial always continues (44 s); each later one with
    # probability ½ (the median of the earlier results is the cutoff): 1.5 evaluations → 10 + 24 + 1.5 = 35.5 s
    search_s, seed_s = 44.0 + 3 * 35.5, 44.0
    assert sweep["device_hours"] == pytest.approx(2 * (search_s + 3 * seed_s) / 3600)
    assert sweep["trial_epochs"] == pytest.approx(2 * ((2 + 3 * 1.5) / 2 * 2 + 3 * 2))
    # the papers' grid: 60 full trials per cell + the same seeds
    grid = out["papers_grid_high"]
    assert grid["trials"] == 2 * (60 + 3) and grid["trial_epochs"] == pytest.approx(2 * (60 * 2 + 3 * 2))
    # --seeds auto: a range from the first look's seeds to --max-seeds
    auto = fc.forecast(_args("--tasks", "sst2", "--seeds", "auto", "--max-seeds", "8"), speed, {})
    assert auto["sweep_low"]["trials"] < auto["sweep_high"]["trials"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_padded_lengths_are_measured_on_the_real_data(minilm_path, glue_dir):
    a = parser().parse_args(["--model", str(minilm_path), "--data-dir", str(glue_dir.parent), "--max-length", "128"])
    a.batch_size = 32
    train_len, eval_len = fc.padded_lengths("sst2", a)
    # SST-2 sentences are short: batches pad to far less than max_length, and bigger batches pad longer
    assert 20 < train_len < 80 and train_len <= eval_len <= 128
    assert fc.padded_lengths("stsb", a)[0] > train_len  # sentence pairs are longer


def test_forecast_on_a_profile_answers_fast_and_trains_nothing(tmp_path):
    cmd = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--preset", "paper_grid", "--tasks",
           "mnli,sst2,cola,qqp,qnli,rte,mrpc,stsb", "--methods", "lora,weightlora,weightlora_plus", "--ranks",
           "1,2,4,8", "--model", "microsoft/deberta-v3-base", "--gpus-per-trial", "1", "--forecast", "a100-cluster",
           "--storage-path", str(tmp_path / "runs")]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    took = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    assert "96 cell(s)" in out.stdout and "papers' grid" in out.stdout and "GPU-hours" in out.stdout
    assert not (tmp_path / "runs").exists()  # nothing planned, nothing written
    assert took < 30  # the README states the measured time; this only guards against a runaway
    bad = subprocess.run([*cmd[:-2], "--forecast", "no-such-profile"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "no such profile" in bad.stderr


def test_a_gpu_profile_without_gpus_per_trial_means_one_gpu_each():
    profile = {
        "devices": 32,
        "kind": "gpu",
        "train_tflops": 100,
        "eval_tflops": 200,
        "models": {"m": {"backbone_params": 1e8}},
    }
    a = _args("--tasks", "sst2")  # --gpus-per-trial 0: the local default
    assert fc.profile_speed(a, profile).slots == 32
    a = _args("--tasks", "sst2", "--gpus-per-trial", "0.25")
    assert fc.profile_speed(a, profile).slots == 128


def test_a_step_after_the_selection_costs_the_backward_pass_down_to_the_lowest_kept_layer():
    """K of n = layers × 3 adapters kept at random: a step's backward pass stops at the lowest kept layer L, so it
    costs (2·layers − L) / (2·layers) of a step with all n. One kept adapter: L uniform over 6 layers, E[L] = 2.5,
    1 − 2.5/12; all kept: 1; more kept, a lower L expected, a dearer step."""
    assert fc.after_selection_cost(6, 3, 1) == pytest.approx(1 - 2.5 / 12)
    assert fc.after_selection_cost(6, 3, 18) == 1.0
    costs = [fc.after_selection_cost(6, 3, k) for k in range(1, 17)]
    assert all(a < b for a, b in itertools.pairwise(costs))
    assert costs[-2] < 1.0 == costs[-1]  # 16 of 18 kept: one sits in layer 0 for sure (only 15 above it)
    # a trial's seconds: T steps at full cost, the rest at the reduced cost
    w = fc.CellWork("sst2-weightlora", 100, 1, 1000, 0, False, select_step=20, after_select=0.5)
    speed = fc.Speed("toy", slots=1, train_tok_s=1000.0, eval_tok_s=1000.0, startup_s=0.0)
    assert fc.trial_seconds(w, speed) == pytest.approx(20 + 80 * 0.5)


def test_heldout_seed_reruns_are_priced_with_one_dev_evaluation(minilm_path, glue_dir):
    """--protocol heldout: search trials evaluate the held-out split every --eval-every steps, seed re-runs score
    dev once at their end (as sweeps.plan sets them); the selecting methods' steps after T cost less."""
    a = parser().parse_args(["--model", str(minilm_path), "--data-dir", str(glue_dir.parent), "--tasks", "sst2",
                             "--protocol", "heldout", "--max-steps", "60", "--eval-every", "20",
                             "--set", "weightlora.t=10", "--set", "weightlora.k=4"])  # fmt: skip
    search, seeds = fc.cell_work("sst2", "lora", a), fc.cell_work("sst2", "lora", a, search=False)
    assert (search.evals, seeds.evals) == (3, 1)
    wl = fc.cell_work("sst2", "weightlora", a)
    assert wl.select_step == 10 and wl.after_select == pytest.approx(fc.after_selection_cost(6, 3, 4))
    assert (search.select_step, search.after_select) == (0, 1.0)  # LoRA keeps every adapter
