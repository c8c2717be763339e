"""Benchmarks of the sweep layer (print ratios, not pass/fail), one run each:

    python bench/bench_sweep.py pool     --slots 8     # one pool for every cell: concurrency, busy slot-time
    python bench/bench_sweep.py overhead               # same trials: Tune sweep vs a plain run_training loop
    python bench/bench_sweep.py search   --seeds 3     # TPE + ASHA vs the papers' lr × warm-up grid on SST-2

* ``pool``: the smoke sweep of 4 cells × 4 trials (``--smoke-test --tasks rte,sst2 --methods
  lora,weightlora``) on ``--slots`` local trial slots; from the MLflow children's start/end times: the most
  trials running at once (of N) and busy slot-time / (slots × the sweep's span). ``--max-steps`` makes the
  trials longer (the issue's goal: ≥ 0.8 on trials of ≥ 30 s).
* ``overhead``: N LoRA trials (a fixed lr grid, SST-2 slice) as a plain sequential loop of
  ``wlora.loop.run_training`` in this process vs the full sweep (Ray Tune + MLflow + a checkpoint at every
  evaluation) one trial at a time with all cores per trial; prints the end-to-end ratio, the per-trial ratio
  (the trials' span, first start to last end, over the loop) with the gaps between trials, and the seconds the
  sweep pays once (MLflow store, the trial process's start and imports, adapters/table/report).
* ``search``: the best dev score reached and the trial-epochs spent by TPE + ASHA (``--num-samples`` trials,
  one seed per ``--seeds``) vs a grid over lr × warm-up (the papers' bash grids), same per-trial budget; TPE
  searches the box the grid spans.

Starts a local Ray instance; on machines where Ray must stay off the network, run it inside a
loopback-only namespace (see README "Running a sweep"), with ``RAY_AUTH_MODE`` set.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LRS = ["5e-4", "1e-3", "2e-3", "3e-3"]


def sweep(argv: list[str], name: str) -> tuple[float, dict]:
    from sweeps.glue_sweep import DEFAULTS, parser
    from sweeps.plan import plan_sweep
    from sweeps.run import execute

    args = parser().parse_args([*argv, "--name", name, "--progress-interval", "100000"])
    from sweeps.flags import apply_smoke

    apply_smoke(args, DEFAULTS, parser())
    t0 = time.perf_counter()
    out = execute(plan_sweep(args, DEFAULTS))
    return time.perf_counter() - t0, out


def children(out: dict) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(out["tracking_uri"])
    return client.search_runs(
        [out["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{out['parent_run_id']}'", max_results=5000
    )


def assets_args(a) -> list[str]:
    return ["--model", a.model, *(["--data-dir", a.data_dir] if a.data_dir else [])]


# ----- pool -----


def bench_pool(a, tmp: Path) -> None:
    import ray

    from sweeps.results import slot_usage

    ray.init(num_cpus=a.slots, include_dashboard=False, _temp_dir=a.ray_temp_dir)
    argv = [*assets_args(a), "--smoke-test", "--tasks", "rte,sst2", "--methods", "lora,weightlora"]
    argv += ["--cpus-per-trial", "1", "--storage-path", str(tmp / "runs")]
    if a.max_steps:
        argv += ["--max-steps", str(a.max_steps), "--eval-every", str(max(1, a.max_steps // 4))]
    wall, out = sweep(argv, "pool")
    ray.shutdown()
    runs = children(out)
    spans = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in runs]
    use = slot_usage(spans, a.slots)
    trial_s = sorted(e - s for s, e in spans)
    print(f"\npool: {len(runs)} trials of 4 cells on {a.slots} slots ({os.cpu_count()} CPU cores), wall {wall:.0f} s")
    print(f"  trial seconds: median {trial_s[len(trial_s) // 2]:.1f}, max {trial_s[-1]:.1f}")
    print(f"  max concurrent trials : {use['max_concurrent']} of {a.slots}")
    print(f"  busy slot-time / (slots × span {use['span_s']:.0f} s) : {use['busy_fraction']:.2f}")


# ----- overhead -----


def workload(a, steps: int) -> list[str]:
    args = [*assets_args(a), "--tasks", "sst2", "--methods", "lora", "--ranks", "8"]
    args += ["--max-steps", str(steps), "--eval-every", str(max(1, steps // 4)), "--batch-size", "16"]
    args += ["--max-length", "64", "--train-subset", "512", "--eval-subset", "128"]
    args += ["--search", "grid", "--space", f"lr=grid:{','.join(LRS)}", "--set", "warmup_steps=0", "--no-asha"]
    return args


def plain_loop(a, steps: int, threads: int) -> list[float]:
    """Seconds of each trial of the plain loop (the model and data already loaded in this process)."""
    import torch

    from wlora.loop import run_training
    from wlora.modeling import prepare_run
    from wlora.run_config import TrainConfig

    torch.set_num_threads(threads)
    base = dict(method="lora", task="sst2", model=a.model, data_dir=a.data_dir, max_steps=steps, r=8, seed=0)
    base.update(eval_every=max(1, steps // 4), batch_size=16, max_length=64, train_subset=512, eval_subset=128)
    assets = prepare_run(TrainConfig.from_flat({**base, "lr": 1e-3}))
    seconds = []
    for lr in LRS:
        t0 = time.perf_counter()
        cfg = TrainConfig.from_flat({**base, "lr": float(lr), "warmup_steps": 0})
        result = run_training(cfg, assets=assets, report=lambda metrics, checkpoint_dir: None)
        assert result.status == "completed", result.error
        seconds.append(time.perf_counter() - t0)
    return seconds


def bench_overhead(a, tmp: Path) -> None:
    import ray

    import sweeps.run as run

    cores = os.cpu_count() or 1
    loop_trials = plain_loop(a, a.steps, cores)
    loop_s = sum(loop_trials)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, _temp_dir=a.ray_temp_dir)
    ray_start = time.perf_counter() - t0
    # The sweep's stages on the driver, by wall-clock time (the same clock as Tune's result timestamps).
    stages: dict[str, tuple[float, float]] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = (start, time.time())

        return wrapper

    for name in ("setup_parent", "run_pool", "summarize", "publish", "write_report"):
        setattr(run, name, timed(name, getattr(run, name)))
    argv = [*workload(a, a.steps), "--storage-path", str(tmp / "runs"), "--max-concurrent", "1"]
    start = time.time()
    seq_s, out = sweep([*argv, "--cpus-per-trial", str(cores)], "seq")
    ray.shutdown()
    # Each trial's span as the driver sees it, to the millisecond: its MLflow child is created when Tune starts
    # the trial and ended when Tune records it complete (the first one includes the trial process's start).
    spans = sorted((r.info.start_time / 1000, r.info.end_time / 1000) for r in children(out))
    n = len(LRS)
    first, last = spans[0][0], spans[-1][1]
    gaps = [b[0] - a_[1] for a_, b in itertools.pairwise(spans)]
    pool0, pool1 = stages["run_pool"]
    print(f"\noverhead: {n} LoRA trials × {a.steps} steps on SST-2 (batch 16 × 64 tokens), {cores} CPU cores")
    print(f"  plain sequential loop (run_training, {cores} threads) : {loop_s:7.1f} s  ({loop_s / n:.1f} s/trial)")
    print(f"  Tune sweep, 1 trial at a time, {cores} CPUs/trial      : {seq_s:7.1f} s  (+ Ray start {ray_start:.1f} s)")
    trial_s = [e - s_ for s_, e in spans]
    steady = statistics.median(trial_s[1:]) / statistics.median(loop_trials[1:])
    print(f"  end to end  sweep / loop                            : {seq_s / loop_s:.2f}x")
    print(f"  per trial after the first  sweep / loop (medians)    : {steady:.2f}x")
    print(f"    loop trial seconds  {', '.join(f'{x:.1f}' for x in loop_trials)}")
    print(f"    sweep trial seconds {', '.join(f'{x:.1f}' for x in trial_s)} (Tune's trial start → complete)")
    print(f"    gaps between trials {', '.join(f'{g:.2f}' for g in gaps)} s")
    extra = trial_s[0] - loop_trials[0]
    print(f"    first trial extra (the trial process starts and imports torch, transformers …) {extra:.1f} s")
    print("  fixed seconds per sweep (paid once, not per trial):")
    print(f"    plan (flags, model/data checks)          {stages['setup_parent'][0] - start:5.1f} s")
    mlflow_s = stages["setup_parent"][1] - stages["setup_parent"][0]
    print(f"    MLflow store + parent run                {mlflow_s:5.1f} s")
    print(f"    pool start → first trial start (Tune)    {first - pool0:5.1f} s")
    print(f"    last trial → pool end                    {pool1 - last:5.1f} s")
    after = stages["write_report"][1] - stages["summarize"][0]
    print(f"    adapters, table, report                  {after:5.1f} s")


# ----- search efficiency -----


def bench_search(a, tmp: Path) -> None:
    import ray

    ray.init(num_cpus=a.slots, include_dashboard=False, _temp_dir=a.ray_temp_dir)
    base = [*assets_args(a), "--tasks", "sst2", "--methods", "lora", "--ranks", "8", "--storage-path", str(tmp)]
    base += ["--max-steps", str(a.steps), "--eval-every", str(max(1, a.steps // 4)), "--batch-size", "16"]
    base += ["--max-length", "48", "--train-subset", str(a.train_subset), "--eval-subset", "256"]
    base += ["--cpus-per-trial", "1"]
    evals = 4  # evaluations per full trial (--eval-every = steps / 4): one trial-"epoch" = a full trial budget

    def spent(out: dict) -> tuple[float | None, float]:
        best, used = None, 0.0
        for r in children(out):
            steps = [m.step for m in _history(out, r.info.run_id)]
            used += len(steps) / evals
            if r.data.tags.get("status") == "completed":
                v = r.data.metrics.get("eval_main")
                best = v if best is None or (v is not None and v > best) else best
        return best, used

    grid = ["--search", "grid", "--space", f"lr=grid:{a.grid_lrs}", "--space", f"warmup_steps=grid:{a.grid_warmups}"]
    wall, out = sweep([*base, *grid, "--no-asha"], "grid")
    g_best, g_used = spent(out)
    print(f"\nsearch: SST-2 ({a.train_subset} train examples), LoRA r=8, {a.steps} steps per full trial")
    print(f"  grid lr × warm-up ({out['cells']['sst2-lora-r8']['n_trials']} trials): best {g_best:.4f}, ", end="")
    print(f"{g_used:.1f} trial-epochs, {wall:.0f} s")
    # TPE searches the box the grid spans (lr log-uniform between the grid's ends, the grid's warm-ups), so the
    # two searches differ in how they pick points, not in where they may look.
    lrs = [float(x) for x in a.grid_lrs.split(",")]
    box = ["--space", f"lr=loguniform:{min(lrs)}:{max(lrs)}", "--space", f"warmup_steps=choice:{a.grid_warmups}"]
    results = []
    for seed in range(a.seeds):
        argv = [*base, "--search", "optuna", "--num-samples", str(a.num_samples), "--search-seed", str(seed), *box]
        wall, out = sweep(argv, f"tpe{seed}")
        best, used = spent(out)
        results.append((best, used))
        print(
            f"  TPE + ASHA seed {seed} ({a.num_samples} trials): best {best:.4f}, {used:.1f} trial-epochs, {wall:.0f} s"
        )
    mean_best = sum(b for b, _ in results) / len(results)
    mean_used = sum(u for _, u in results) / len(results)
    print(f"  TPE + ASHA mean best / grid best : {mean_best / g_best:.3f}")
    print(f"  TPE + ASHA mean trial-epochs / grid : {mean_used / g_used:.2f}")
    ray.shutdown()


def _history(out: dict, run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(out["tracking_uri"]).get_metric_history(run_id, "eval_main")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench", choices=["pool", "overhead", "search"])
    p.add_argument("--model", default=os.environ.get("WLORA_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
    p.add_argument("--data-dir", default=os.environ.get("WLORA_DATA_DIR"))
    p.add_argument("--ray-temp-dir", default=None)
    p.add_argument("--slots", type=int, default=8, help="pool/search: local trial slots (1 CPU each)")
    p.add_argument("--max-steps", type=int, default=None, help="pool: longer trials than the smoke test's")
    p.add_argument("--steps", type=int, default=16, help="overhead/search: optimizer steps per full trial")
    p.add_argument("--seeds", type=int, default=3, help="search: searcher seeds of TPE + ASHA")
    p.add_argument("--num-samples", type=int, default=6, help="search: TPE trials per seed")
    p.add_argument("--train-subset", type=int, default=1024, help="search: SST-2 training examples")
    p.add_argument("--grid-lrs", default="3e-4,1e-3,3e-3", help="search: the grid's learning rates")
    p.add_argument("--grid-warmups", default="0,20", help="search: the grid's warm-up steps")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="wlora-bench-") as tmp:
        {"pool": bench_pool, "overhead": bench_overhead, "search": bench_search}[a.bench](a, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
