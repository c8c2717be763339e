"""Replay a recorded benchmark (``bench/record_curves.py``) through the sweep's own pool: the searchers and
schedulers of a real sweep (``sweeps.pool.PooledSearcher`` / ``PooledScheduler``, Optuna TPE, ASHA) on Ray
Tune with N virtual slots, where each trial replays a recorded learning curve at the recorded speed (scaled).

    python bench/replay.py --table bench/recorded/sst2_minilm.jsonl --method lora --slots 8,32 --seeds 20 \
        [--strategies grid,random,tpe,tpe_asha,...] [--time-scale 0.02] [--delta 0.005] [--json out.json]

**How searchers choose among recorded points.** The space of a replayed cell is the recorded grid itself:
one categorical dimension per recorded hyperparameter with exactly the recorded values, so every suggestion
(TPE, random or grid) is a recorded point. A trial replays one of the point's recorded seeds, drawn from the
trial id and the searcher seed (so repeated suggestions of one point see seed noise, as real trials would).

**What is reported** per strategy and slot count, over searcher seeds: the trial-epochs and the makespan
(virtual seconds: wall time / time scale) until the first trial that trained to the end scores within δ of
the grid's best (the best point's mean over its recorded seeds), with percentile intervals; and the share of
searcher seeds that reached it at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record_curves import load, point_key

OBJECTIVE = "eval_main"


class Table:
    """The recorded runs of one method: point key → {recorded seed → run}."""

    def __init__(self, path: str | Path, method: str):
        self.meta, runs = load(path)
        self.method = method
        self.points: dict[str, dict[str, Any]] = {}
        for r in runs:
            if r["method"] == method and r["status"] == "completed":
                self.points.setdefault(r["key"], {"point": r["point"], "runs": {}})["runs"][r["seed"]] = r
        if not self.points:
            raise ValueError(f"{path}: no recorded {method} runs")
        self.dims = sorted(next(iter(self.points.values()))["point"])
        self.budget = self.meta["budget"]
        self.steps_per_epoch = math.ceil(self.budget["train_subset"] / self.budget["batch_size"])

    def values(self) -> dict[str, list]:
        return {d: sorted({p["point"][d] for p in self.points.values()}) for d in self.dims}

    def mean_final(self, key: str) -> float:
        return statistics.fmean(r["curve"][-1][1] for r in self.points[key]["runs"].values())

    def grid_best(self) -> float:
        return max(self.mean_final(k) for k in self.points)

    def run_for(self, config: dict[str, Any], draw: str) -> dict[str, Any]:
        point = {d: config[d] for d in self.dims}
        key = point_key(self.method, point)
        if key not in self.points:
            raise KeyError(f"{key} was not recorded")
        seeds = sorted(self.points[key]["runs"])
        pick = int(hashlib.sha256(draw.encode()).hexdigest(), 16) % len(seeds)
        return self.points[key]["runs"][seeds[pick]]


def replay_trainable(config: dict[str, Any], *, table: Table, time_scale: float, run_seed: int) -> None:
    """Tune trainable: report the recorded curve of the suggested point, sleeping the recorded time × scale."""
    from ray import tune

    from trainables import FINAL_KEY

    run = table.run_for(config, f"{run_seed}:{tune.get_context().get_trial_id()}")
    started = time.time()  # Tune's own `timestamp` is whole seconds: too coarse at small time scales
    time.sleep(run["startup_s"] * time_scale)
    prev = 0
    last: dict[str, Any] = {}
    for step, score in run["curve"]:
        time.sleep(((step - prev) * run["step_s"] + run["eval_s"]) * time_scale)
        prev = step
        last = {OBJECTIVE: score, "step": step, "epoch": step / table.steps_per_epoch, "recorded_seed": run["seed"],
                "replay_start": started, "replay_wall": time.time()}  # fmt: skip
        tune.report(dict(last))
    tune.report({**last, FINAL_KEY: 1.0})


STRATEGIES = {
    # name: (search, asha, options)
    "grid": ("grid", False, {}),
    "random": ("random", False, {}),
    "tpe": ("tpe", False, {}),
    "tpe_asha": ("tpe", True, {}),
    "random_asha": ("random", True, {}),
    "tpe_asha_eta3": ("tpe", True, {"reduction_factor": 3}),
    "tpe_asha_grace2": ("tpe", True, {"grace_period": 2}),
}


def run_one(table: Table, strategy: str, slots: int, seed: int, budget: int, time_scale: float, storage: str):
    """One replayed sweep; returns its trials' (start, end, final score or None, evaluations, trial id)."""
    from ray import tune

    from sweeps.pool import CellSearch, ListSearch, PooledScheduler, PooledSearcher, variant_configs
    from sweeps.search import EarlyStopLedger, make_optuna, make_scheduler

    search_kind, asha, opts = STRATEGIES[strategy]
    space = {d: tune.choice(v) for d, v in table.values().items()}
    ledger = EarlyStopLedger(f"replay:{strategy}:{slots}:{seed}")
    if search_kind == "grid":
        grid = {d: tune.grid_search(v) for d, v in table.values().items()}
        search: Any = ListSearch(variant_configs(grid, grid=True, num_samples=1, seed=seed))
        n = len(search.configs)
    elif search_kind == "random":
        search, n = ListSearch(variant_configs(space, grid=False, num_samples=budget, seed=seed)), budget
    else:
        search = make_optuna(space, ledger=ledger, seed=seed, metric=OBJECTIVE, mode="max", num_samples=budget)
        n = budget
    cell = CellSearch("replay", {}, n, search)
    evals = len(next(iter(next(iter(table.points.values()))["runs"].values()))["curve"])
    scheduler = PooledScheduler(
        {"replay": lambda: make_scheduler(asha, ledger=ledger, metric=OBJECTIVE, mode="max", max_t=evals, **opts)}
    )
    trainable = tune.with_parameters(replay_trainable, table=table, time_scale=time_scale, run_seed=seed)
    t0 = time.time()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=PooledSearcher([cell]),
            scheduler=scheduler,
            num_samples=n,
            max_concurrent_trials=slots,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=f"{strategy}-{slots}-{seed}", storage_path=storage, verbose=0),
    )
    grid = tuner.fit()
    out = []
    for res in grid:
        df = res.metrics_dataframe
        if df is None or df.empty:
            continue
        final = bool(df.get("final", 0).fillna(0).max()) if "final" in df else False
        score = float(df[OBJECTIVE].iloc[-1]) if final else None
        n_evals = int(df[OBJECTIVE].notna().sum()) - (1 if final else 0)
        out.append((float(df["replay_start"].min()) - t0, float(df["replay_wall"].max()) - t0, score, n_evals,
                    float(df["epoch"].max())))  # fmt: skip
    return out


def reach(trials: list[tuple], target: float, time_scale: float) -> dict[str, float] | None:
    """Trial-epochs and virtual seconds spent until the first full trial scoring ≥ target ended."""
    done = sorted(trials, key=lambda t: t[1])
    for i, (_, end, score, _, _) in enumerate(done):
        if score is not None and score >= target:
            spent = sum(t[4] for t in trials if t[0] <= end) - sum(
                max(0.0, t[4] * (t[1] - end) / max(t[1] - t[0], 1e-9)) for t in trials if t[0] < end < t[1]
            )
            return {"trial_epochs": spent, "makespan_s": end / time_scale, "trials_ended": i + 1}
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default="bench/recorded/sst2_minilm.jsonl")
    p.add_argument("--method", default="lora")
    p.add_argument("--slots", default="8,32")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument(
        "--budget", type=int, default=None, help="trials per non-grid search (default: a quarter of the grid)"
    )
    p.add_argument("--strategies", default="grid,random,tpe,tpe_asha")
    p.add_argument("--time-scale", type=float, default=0.02)
    p.add_argument("--delta", type=float, default=0.005)
    p.add_argument("--ray-temp-dir", default=None)
    p.add_argument("--json")
    a = p.parse_args()
    import ray

    table = Table(a.table, a.method)
    target = table.grid_best() - a.delta
    budget = a.budget or max(4, len(table.points) // 4)
    full_epochs = len(table.points) * table.budget["epochs"]
    print(f"{a.method}: {len(table.points)} recorded points; grid best {table.grid_best():.4f}, target ≥ {target:.4f}; "
          f"grid = {full_epochs:g} trial-epochs; non-grid budget {budget} trials")  # fmt: skip
    rows = []
    for slots in (int(s) for s in a.slots.split(",")):
        ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False, _temp_dir=a.ray_temp_dir)
        with tempfile.TemporaryDirectory() as storage:
            for strategy in a.strategies.split(","):
                seeds = 1 if strategy == "grid" else a.seeds
                hits = []
                for seed in range(seeds):
                    hit = reach(run_one(table, strategy, slots, seed, budget, a.time_scale, storage), target,
                                a.time_scale)  # fmt: skip
                    hits.append(hit)
                ok = [h for h in hits if h]
                row = {"slots": slots, "strategy": strategy, "seeds": seeds, "reached": len(ok)}
                for key in ("trial_epochs", "makespan_s"):
                    vals = sorted(h[key] for h in ok)
                    if vals:
                        row[key] = statistics.median(vals)
                        cut = int(0.1 * (len(vals) - 1))  # an 80 % percentile interval over searcher seeds
                        row[f"{key}_lo"], row[f"{key}_hi"] = vals[cut], vals[-1 - cut]
                rows.append(row)
                te = row.get("trial_epochs")
                spent = "–" if te is None else f"{te:.1f} ({te / full_epochs:.2f}× grid)"
                span = "–" if te is None else f"{row['makespan_s']:.0f} s"
                line = f"slots {slots:>2} {strategy:16} reached {len(ok)}/{seeds}  trial-epochs {spent}"
                print(f"{line}  makespan {span}", flush=True)
        ray.shutdown()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
