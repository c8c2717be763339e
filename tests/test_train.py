"""The single-run layer: config validation, data preparation, accumulation, resume, NaN handling, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_batches, tiny_bert
from wlora import build_method
from wlora.data.tasks import collate
from wlora.engine import Engine
from wlora.train import OBJECTIVE, TrainConfig, prepare_run, run_training


def test_config_validation_and_flat_round_trip():
    cfg = TrainConfig.from_flat({"method": "weightlora", "task": "rte", "lr": 1e-3, "k": 4, "t": 10, "r": 4})
    assert cfg.method_config == {"k": 4, "t": 10, "r": 4} and cfg.lr == 1e-3
    assert TrainConfig.from_flat(cfg.to_flat()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_flat({"method": "lora", "k": 4})  # lora has no k
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="dora")
    with pytest.raises(ValueError, match="unknown task"):
        TrainConfig(task="wnli")
    for bad in ({"lr": 0.0}, {"grad_accum": 0}, {"max_steps": 0}, {"mixed_precision": "fp8"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_collate_pads_each_batch_to_its_own_longest():
    feats = [
        {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": 1},
        {"input_ids": [4], "attention_mask": [1], "labels": 0},
    ]
    batch = collate(feats, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.long
    seq = collate([{"input_ids": [1], "labels": [5, 6]}, {"input_ids": [1, 2], "labels": [7]}], pad_token_id=0)
    assert seq["labels"].tolist() == [[5, 6], [7, -100]]
    reg = collate([{"input_ids": [1], "labels": 2.5}], pad_token_id=0)
    assert reg["labels"].dtype == torch.float32


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches of 4 give the same update as one batch of 8 (example-weighted mean loss)."""
    big = tiny_batches(1, batch=8)[0]
    halves = [{k: v[:4] for k, v in big.items()}, {k: v[4:] for k, v in big.items()}]
    results = []
    for batch in (big, halves):
        model = tiny_bert()
        method = build_method("lora", model, {"r": 4, "dropout": 0.0})
        # B starts at zero: take one step so the second step's update depends on A and B.
        engine = Engine(model, method, lr=1e-2, total_steps=4)
        engine.train_step(big)
        loss = engine.train_step(batch)
        results.append((loss, [p.detach().clone() for p in method.optimizer_params()]))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def rte_cfg(minilm_path, glue_dir, tmp_path_factory):
    return TrainConfig(
        method="weightlora",
        task="rte",
        model=str(minilm_path),
        data_dir=str(glue_dir.parent),
        method_config={"r": 4, "k": 4, "t": 3},
        lr=1e-3,
        batch_size=8,
        max_steps=6,
        eval_every=2,
        max_length=64,
        train_subset=48,
        eval_subset=24,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )


@pytest.fixture(scope="module")
def rte_assets(rte_cfg):
    return prepare_run(rte_cfg)


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (10, 10), (4, 1), (0, 1)])
def test_linear_schedule_equals_transformers(warmup, total):
    """The engine's warm-up / linear-decay schedule is transformers' get_linear_schedule_with_warmup, value for
    value (the engine does not import it: that pulls in peft at every trial process's start)."""
    from transformers import get_linear_schedule_with_warmup

    from wlora.engine import phased_lr_lambda

    ref = get_linear_schedule_with_warmup(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), warmup, total)
    ours = phased_lr_lambda(0, warmup, total)
    for i in range(total + 3):
        assert ours(i) == pytest.approx(ref.lr_lambdas[0](i), abs=1e-12), i


def test_prepare_run_checks_method_and_data_before_training(rte_cfg, rte_assets, tmp_path):
    assert rte_assets.n_adapters == 18
    assert len(rte_assets.data.train) == 48 and len(rte_assets.data.eval) == 24
    with pytest.raises(ValueError, match="`k`"):
        prepare_run(rte_cfg.replace(method_config={"k": 25}))
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        prepare_run(rte_cfg.replace(data_dir=str(tmp_path / "missing")))
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train\.tsv"):
        prepare_run(rte_cfg.replace(data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        prepare_run(rte_cfg.replace(model=str(tmp_path / "no-model")))


def test_tokenized_features_are_cached_and_reused(rte_cfg, rte_assets):
    cache = Path(rte_cfg.cache_dir)
    entries = list(cache.glob("rte-*.pkl"))
    assert len(entries) == 1
    again = prepare_run(rte_cfg)
    assert again.data.fingerprint == rte_assets.data.fingerprint and again.data.train == rte_assets.data.train
    other = prepare_run(rte_cfg.replace(max_length=32))  # a different option is a different entry
    assert other.data.fingerprint != rte_assets.data.fingerprint
    assert max(len(f["input_ids"]) for f in other.data.train) <= 32
    assert len(list(cache.glob("rte-*.pkl"))) == 2


def test_resume_from_a_reported_checkpoint_is_identical(rte_cfg, rte_assets, tmp_path):
    """Stop after the 1st evaluation (step 2, before selection at T=3), resume, and match the full run."""
    saved = {}

    def keep(metrics, ckpt):
        saved.setdefault(int(metrics["step"]), shutil.copytree(ckpt, tmp_path / f"s{int(metrics['step'])}"))

    full = run_training(rte_cfg, assets=rte_assets, report=keep)
    assert full.status == "completed" and [int(m["step"]) for m in full.history] == [2, 4, 6]
    assert full.metrics["active_adapters"] == 4 and full.method_report["active_adapters"] == 4
    resumed = run_training(rte_cfg, assets=rte_assets, resume_from=saved[2])
    assert resumed.status == "completed"
    for a, b in zip(full.history, resumed.history, strict=True):
        for key in (OBJECTIVE, "train_loss", "trainable_params", "active_adapters"):
            assert a[key] == b[key], key
    with pytest.raises(ValueError, match="different config"):
        run_training(rte_cfg.replace(lr=2e-3), assets=rte_assets, resume_from=saved[2])


def test_reported_metrics(rte_cfg, rte_assets):
    seen = []
    result = run_training(rte_cfg.replace(max_steps=2), assets=rte_assets, report=seen.append)
    assert len(seen) == 1 and seen[0] == result.metrics
    m = seen[0]
    for key in (OBJECTIVE, "eval_accuracy", "train_loss", "trainable_params", "trainable_pct", "active_adapters"):
        assert np.isfinite(m[key])
    assert m["step_time_s"] > 0 and m["examples_per_s"] > 0 and m["peak_mem_mb"] > 100
    assert m["active_adapters"] == 18  # before T
    assert 0 < m["trainable_pct"] < 1


def test_nan_loss_ends_the_run_with_failed_status(rte_cfg, rte_assets):
    """An absurd learning rate drives the loss to inf/NaN: the run stops cleanly, the caller goes on."""
    seen = []
    result = run_training(
        rte_cfg.replace(method="lora", method_config={}, lr=1e30, max_grad_norm=None, max_steps=30, eval_every=1),
        assets=rte_assets,
        report=seen.append,
    )
    assert result.status == "failed"
    assert "non-finite loss" in result.error
    assert result.steps < 30 and len(seen) == result.steps


def test_bf16_autocast_runs(rte_cfg, rte_assets):
    result = run_training(rte_cfg.replace(mixed_precision="bf16", max_steps=2), assets=rte_assets)
    assert result.status == "completed" and np.isfinite(result.metrics["train_loss"])


@pytest.mark.subprocess
def test_cli_help_documents_every_flag_and_bad_input_fails_cleanly(minilm_path, glue_dir):
    out = subprocess.run([sys.executable, "-m", "wlora.train", "--help"], capture_output=True, text=True, check=True)
    for field in TrainConfig.field_names():
        assert "--" + field.replace("_", "-") in out.stdout
    assert "--set" in out.stdout and "weightlora_plus" in out.stdout
    cmd = [sys.executable, "-m", "wlora.train", "--model", str(minilm_path), "--data-dir", str(glue_dir.parent)]
    bad = subprocess.run(
        [*cmd, "--task", "rte", "--method", "weightlora", "--set", "k=99"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "`k`" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.subprocess
def test_cli_run_writes_result_checkpoint_and_peft_adapter(minilm_path, glue_dir, tmp_path):
    cmd = [sys.executable, "-m", "wlora.train", "--model", str(minilm_path), "--data-dir", str(glue_dir.parent)]
    cmd += ["--task", "sst2", "--method", "weightlora_plus", "--set", "k=4", "--set", "t=2", "--max-steps", "3"]
    cmd += ["--train-subset", "24", "--eval-subset", "16", "--batch-size", "8", "--max-length", "32"]
    cmd += ["--output-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and result["metrics"]["active_adapters"] == 4
    assert (tmp_path / "checkpoint" / "state.pt").is_file()
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(tmp_path / "adapter")).r == 8


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("lora_drop", {"sample_ratio": 0.25, "threshold": 0.8}),
        ("rolora", {"iterations": 2}),
        ("adalora", {"init_r": 6, "r": 4, "tinit": 1, "tfinal": 1}),
        ("full", {}),
    ],
)
def test_every_other_method_runs_through_the_runner(method, extra, rte_cfg, rte_assets):
    """The runner fills the run facts these methods need (total steps, steps per epoch) and feeds
    LoRA-drop's importance phase from its stratified sample, then trains the task for the full budget."""
    cfg = rte_cfg.replace(method=method, method_config=extra, max_steps=4, eval_every=None)
    assets = prepare_run(cfg)
    result = run_training(cfg, assets=assets)
    assert result.status == "completed", result.error
    assert np.isfinite(result.metrics["train_loss"]) and np.isfinite(result.metrics[OBJECTIVE])
    if method == "lora_drop":
        phase = result.method_report["importance_steps"]
        assert phase >= 1 and result.total_steps == 4 + phase
        assert len(result.method_report["importance"]) == 18
    else:
        assert result.total_steps == 4


def test_assets_use_the_node_local_copy_only_when_the_driver_folder_is_missing(rte_assets, tmp_path):
    import dataclasses

    class Copy:  # the interface of sweeps.cluster_checks.StagedDir
        calls = 0

        def local_path(self):
            Copy.calls += 1
            return tmp_path / "model-copy"

    here = dataclasses.replace(rte_assets, staged_model=Copy())
    assert here.on_this_node() is here and Copy.calls == 0  # the folder exists on this node
    away = dataclasses.replace(rte_assets, model_path=str(tmp_path / "driver-only"), staged_model=Copy())
    local = away.on_this_node()
    assert local.model_path == str(tmp_path / "model-copy") and local.staged_model is None and Copy.calls == 1
