"""Orchestration overhead of the sweep layer, measured in one run (prints ratios, not pass/fail).

    python bench/bench_sweep.py --model PATH_OR_HUB_ID --data-dir DATA

1. The same N trials (a fixed lr grid, SST-2 slice) three ways:
   a) a plain sequential loop of ``wlora.train.run_training`` in this process (torch on all cores);
   b) the full sweep machinery (Ray Tune + MLflow children + checkpoints), one trial at a time with
      all cores per trial → ratio b/a is the orchestration overhead;
   c) the same with one core per trial and ``max_concurrent_trials`` = cores → ratio b/c is the
      throughput gain of running trials concurrently.
2. MLflow logging cost per evaluation report on the embedded SQLite store: one ``log_batch`` per
   report (what ``MlflowTrialCallback`` does) vs one ``log_metric`` call per metric (the stock
   ``MLflowLoggerCallback``).

Starts a local Ray instance; on machines where Ray must stay off the network, run it inside a
loopback-only namespace (see README "Running a sweep").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LRS = ["5e-4", "1e-3", "2e-3", "3e-3"]


def workload(model: str, data_dir: str | None, steps: int) -> list[str]:
    args = ["--model", model, "--tasks", "sst2", "--methods", "lora", "--ranks", "8"]
    if data_dir:
        args += ["--data-dir", data_dir]
    args += ["--max-steps", str(steps), "--eval-every", str(max(1, steps // 4)), "--batch-size", "16"]
    args += ["--max-length", "64", "--train-subset", "512", "--eval-subset", "128"]
    args += ["--search", "grid", "--space", f"lr=grid:{','.join(LRS)}", "--set", "warmup_steps=0", "--no-asha"]
    return [*args, "--progress-interval", "100000"]


def plain_loop(model: str, data_dir: str | None, steps: int, threads: int) -> float:
    import torch

    from wlora.train import TrainConfig, prepare_run, run_training

    torch.set_num_threads(threads)
    base = dict(method="lora", task="sst2", model=model, data_dir=data_dir, max_steps=steps, r=8)
    base.update(eval_every=max(1, steps // 4), batch_size=16, max_length=64, train_subset=512, eval_subset=128)
    t0 = time.perf_counter()
    assets = prepare_run(TrainConfig.from_flat({**base, "lr": 1e-3}))
    for lr in LRS:
        cfg = TrainConfig.from_flat({**base, "lr": float(lr), "warmup_steps": 0})
        result = run_training(cfg, assets=assets, report=lambda metrics, checkpoint_dir: None)
        assert result.status == "completed", result.error
    return time.perf_counter() - t0


def tune_sweep(argv: list[str], name: str) -> tuple[float, dict]:
    from sweeps.glue_sweep import DEFAULTS, parser
    from sweeps.plan import plan_sweep
    from sweeps.run import execute

    args = parser().parse_args([*argv, "--name", name])
    t0 = time.perf_counter()
    out = execute(plan_sweep(args, DEFAULTS))
    return time.perf_counter() - t0, out


def mlflow_cost(tmp: Path, reports: int = 30) -> tuple[float, float, int]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'bench_mlflow.db'}")
    exp = client.create_experiment("bench", artifact_location=(tmp / "art").as_uri())
    keys = ["eval_main", "eval_accuracy", "train_loss", "lr", "epoch", "trainable_params", "trainable_pct"]
    keys += ["active_adapters", "step_time_s", "examples_per_s", "peak_mem_mb"]
    run_a, run_b = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    t0 = time.perf_counter()
    for step in range(reports):
        now = int(time.time() * 1000)
        client.log_batch(run_a, metrics=[Metric(k, 0.5, now, step) for k in keys])
    batched = (time.perf_counter() - t0) / reports
    t0 = time.perf_counter()
    for step in range(reports):
        for k in keys:
            client.log_metric(run_b, k, 0.5, step=step)
    per_metric = (time.perf_counter() - t0) / reports
    return batched, per_metric, len(keys)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("WLORA_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
    p.add_argument("--data-dir", default=os.environ.get("WLORA_DATA_DIR"))
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per trial")
    p.add_argument("--ray-temp-dir", default=None)
    a = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="wlora-bench-") as tmp:
        tmp_path = Path(tmp)
        batched, per_metric, n_keys = mlflow_cost(tmp_path)
        loop_s = plain_loop(a.model, a.data_dir, a.steps, cores)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, _temp_dir=a.ray_temp_dir)
        ray_start = time.perf_counter() - t0
        base = [*workload(a.model, a.data_dir, a.steps), "--storage-path", str(tmp_path / "runs")]
        seq_s, _ = tune_sweep([*base, "--max-concurrent", "1", "--cpus-per-trial", str(cores)], "seq")
        conc_s, _ = tune_sweep([*base, "--max-concurrent", str(cores), "--cpus-per-trial", "1"], "conc")
        ray.shutdown()

    n = len(LRS)
    print(f"\n{n} LoRA trials × {a.steps} steps on SST-2 (batch 16 × 64 tokens), {cores} CPU cores")
    print(f"  plain sequential loop (run_training, {cores} threads) : {loop_s:7.1f} s")
    print(f"  Tune sweep, 1 trial at a time, {cores} CPUs/trial      : {seq_s:7.1f} s  (+ Ray start {ray_start:.1f} s)")
    print(f"  Tune sweep, {cores} concurrent trials, 1 CPU/trial     : {conc_s:7.1f} s")
    print(f"  orchestration overhead  Tune(1 at a time) / loop    : {seq_s / loop_s:.2f}x")
    print(f"  concurrency gain        Tune(1 at a time) / Tune({cores}) : {seq_s / conc_s:.2f}x")
    print(f"MLflow per evaluation report ({n_keys} metrics, SQLite): one log_batch {1000 * batched:.1f} ms; ")
    print(f"  one log_metric per metric {1000 * per_metric:.1f} ms ({per_metric / batched:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
