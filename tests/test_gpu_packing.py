"""Fractional GPUs on a CPU machine: local Ray declares fake GPUs, ``--gpus-per-trial 0.25`` packs four trials
on each, every trial sees only the id Ray assigned it and, finding no CUDA, trains on CPU with one warning;
the precision each trial requested and the one that actually ran are logged."""

from __future__ import annotations

import json
import logging
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fp16_on_cpu_is_logged_as_what_ran(minilm_path, glue_dir, caplog):
    from wlora.train import TrainConfig, prepare_run, run_training

    base = dict(task="sst2", model=str(minilm_path), data_dir=str(glue_dir.parent), method_config={"r": 4})
    base.update(train_subset=16, eval_subset=16, batch_size=8, max_length=32, max_steps=2)
    seen = {}
    for requested in ("fp16", "bf16", "no"):
        cfg = TrainConfig(method="lora", mixed_precision=requested, cpu=True, **base)
        with caplog.at_level(logging.WARNING, logger="wlora.loop"):
            m = run_training(cfg, assets=prepare_run(cfg)).metrics
        seen[requested] = (m["precision_requested"], m["precision"], m["device"])
    assert seen == {"fp16": ("fp16", "fp32", "cpu"), "bf16": ("bf16", "bf16", "cpu"), "no": ("no", "fp32", "cpu")}
    warned = [r.getMessage() for r in caplog.records if "was requested" in r.getMessage()]
    assert warned == ["mixed_precision=fp16 was requested, but cpu computes in fp32"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_quarter_gpus_pack_eight_trials_on_two_fake_gpus(sweep_cmd, tmp_path):
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    args = [*TINY, "--methods", "lora", "--search", "random", "--num-samples", "8", "--no-asha"]
    args += ["--num-cpus", "8", "--cpus-per-trial", "1", "--num-gpus", "2", "--gpus-per-trial", "0.25"]
    args += ["--memory-per-trial", "0.3", "--set", "mixed_precision=fp16", "--verbose", "--name", "pack"]
    out = subprocess.run(make(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    state = json.loads((tmp_path / "runs" / "pack" / "sweep_state.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    runs = client.search_runs(
        [state["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'"
    )
    assert len(runs) == 8
    # four trials on each of the two GPUs; every trial saw exactly one id
    assert Counter(r.data.tags["gpu_ids"] for r in runs) == {"0": 4, "1": 4}
    # all eight ran at once: each started before any ended
    first_end = min(r.info.end_time for r in runs)
    assert all(r.info.start_time < first_end for r in runs)
    # no CUDA here: CPU, fp32, whatever was requested, and said so
    assert {(r.data.tags["device"], r.data.tags["precision_requested"], r.data.tags["precision"]) for r in runs} == {
        ("cpu", "fp16", "fp32")
    }
    text = out.stdout + out.stderr
    assert 1 <= text.count("finds no CUDA device") <= 8
    # the same real sweep's report: what matters in the LoRA cell (8 completed trials, random search)
    from sweeps import report

    built = report.build_report(state["tracking_uri"], state["parent_run_id"], tmp_path / "report")
    [row] = built["meta"]["importance"]
    assert (row["task"], row["method"], row["trials"]) == ("sst2", "lora", 8)
    assert {"lr", "warmup_steps"} <= set(row["importance"]) and sum(row["importance"].values()) == pytest.approx(1)
    assert (tmp_path / "report" / "importance_sst2_lora_r8.png").stat().st_size > 1000
    assert "## What matters" in (tmp_path / "report" / "report.md").read_text()


def test_importance_finds_the_dimension_that_moves_the_score():
    """Known answer: the score depends on lr only (warm-up and dropout are noise-free decoys)."""
    import numpy as np

    from sweeps.report.importance import MIN_TRIALS, cell_importance
    from sweeps.schema import RunInfo

    rng = np.random.default_rng(0)
    runs = []
    for i in range(24):
        lr, warm, drop = 10 ** rng.uniform(-4, -2), int(rng.integers(0, 100)), str(rng.choice(["0.0", "0.1"]))
        score = 0.9 - 0.1 * abs(np.log10(lr) + 3)
        params = {"lr": repr(lr), "warmup_steps": str(warm), "dropout": drop, "seed": "0", "r": "8"}
        runs.append(RunInfo(f"r{i}", f"t{i}", "trial", "lora", "sst2", "0", "completed", params,
                            {"eval_main": score}, 0, 1))  # fmt: skip
    imp = cell_importance(runs)
    assert set(imp) == {"lr", "warmup_steps", "dropout"} and max(imp, key=imp.get) == "lr" and imp["lr"] > 0.8
    assert cell_importance(runs[: MIN_TRIALS - 1]) is None
