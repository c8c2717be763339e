"""Record a tabular benchmark (in the manner of LCBench / NAS-Bench): the full learning curves of a
paper-shaped grid, once, so that search strategies can be compared by replaying them (bench/replay.py).

    python bench/record_curves.py --out bench/recorded/sst2_minilm.jsonl --jobs 2 [--methods lora,weightlora]

The grid (``GRIDS``) is the papers' bash grid made denser: LoRA over lr × warm-up (12 points), WeightLoRA
over lr × warm-up × K × T × lr_w (48 points), each point with ``SEEDS`` seeds, on a CPU budget (``BUDGET``:
SST-2, 1,024 training examples, batch 32, 2 epochs = 64 optimizer steps, evaluated every 16 steps on 256
dev sentences: the rungs a 4-rung ASHA with reduction factor 2 would use).

The output is one JSON object per line: first a ``meta`` line (command, date, commit, budget, grids), then
one ``run`` line per (point, seed) with its curve ``[[step, score], ...]``, its mean seconds per optimizer
step, per evaluation and for the start-up. Recording appends and skips runs already in the file, so it
can be stopped and restarted, and recorded in chunks (``--methods``, ``--limit``). Each worker process
trains with one thread, so ``--jobs`` should not exceed the cores.

**Versions** (``--version``; the meta line records which). ``1`` is the table above (2 seeds, 256 dev sentences:
a score moves on a 1/256 grid). ``2`` records what a comparison of searchers needs (``PROFILES[2]``): 3 seeds per
point, scored on the whole SST-2 dev set (872 sentences), a LoRA table (the same 12 points) and a WeightLoRA
table over lr × K × T at warm-up 6 and lr_w 5 (16 points). In v1 the learning rate mattered most (mean final score
0.766 / 0.778 / 0.785 at 1e-3 / 2e-3 / 4e-3) and its best points sat at the grid's edge, so v2 adds lr 8e-3; lr_w,
T and warm-up mattered least (0.001, 0.001 and 0.006 between their two values' means, under one seed's noise), and
lr_w's values replayed identical curves at several points, so v2 fixes lr_w and warm-up to afford 3 seeds of
4 evaluations of 872 sentences each. Runs are recorded
seed-major (every point's seed 0, then seed 1, …) so a recording cut short still covers every point.

    python bench/record_curves.py --version 2 --out bench/recorded/sst2_minilm_v2.jsonl --jobs 2
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASK = "sst2"
SEEDS = (0, 1)
#: The training budget every recorded run shares (TrainConfig fields).
BUDGET: dict[str, Any] = dict(
    task=TASK, train_subset=1024, epochs=2.0, batch_size=32, max_length=64, eval_every=16, eval_subset=256, rank=8
)
#: Per method: dimension → recorded values (the grid is their product).
GRIDS: dict[str, dict[str, list]] = {
    "lora": {"lr": [5e-4, 1e-3, 2e-3, 4e-3], "warmup_steps": [0, 6, 16]},
    "weightlora": {
        "lr": [1e-3, 2e-3, 4e-3],
        "warmup_steps": [0, 6],
        "k_fraction": [0.25, 0.5],
        "t": [4, 16],
        "lr_w": [0.5, 5.0],
    },
}
#: Per version: seeds, budget and grids (version 1 is the constants above, kept for the recorded v1 table).
PROFILES: dict[int, dict[str, Any]] = {
    1: {"seeds": SEEDS, "budget": BUDGET, "grids": GRIDS, "order": "point"},
    2: {
        "seeds": (0, 1, 2),
        "budget": {**BUDGET, "eval_subset": None},  # the whole dev set: 872 sentences
        "grids": {
            "lora": GRIDS["lora"],
            "weightlora": {
                "lr": [1e-3, 2e-3, 4e-3, 8e-3],
                "warmup_steps": [6],
                "k_fraction": [0.25, 0.5],
                "t": [4, 16],
                "lr_w": [5.0],
            },
        },
        "order": "seed",
    },
}
#: Which recorded dimensions are method fields (the rest are run fields).
METHOD_FIELDS = ("k_fraction", "t", "lr_w")


def grid_points(method: str, grids: dict[str, dict[str, list]] | None = None) -> list[dict[str, Any]]:
    """Every point of ``method``'s grid (``grids``: a version's, default v1's), in a fixed order."""
    dims = (grids or GRIDS)[method]
    return [dict(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())]


def point_key(method: str, point: dict[str, Any]) -> str:
    return method + ":" + ",".join(f"{k}={point[k]:g}" for k in sorted(point))


def train_one(
    method: str, point: dict[str, Any], seed: int, model: str, data_dir: str | None, budget_of: dict | None = None
) -> dict[str, Any]:
    """Train one (point, seed) with one thread under ``budget_of`` (default v1's ``BUDGET``); its curve and
    timings."""
    import torch

    torch.set_num_threads(1)
    from wlora.train import OBJECTIVE, TrainConfig, prepare_run, run_training

    budget_of = budget_of or BUDGET
    budget = {k: v for k, v in budget_of.items() if k != "rank"}
    method_config = {"r": budget_of["rank"], **{k: v for k, v in point.items() if k in METHOD_FIELDS}}
    run_fields = {k: v for k, v in point.items() if k not in METHOD_FIELDS}
    cfg = TrainConfig(
        method=method, model=model, data_dir=data_dir, method_config=method_config, seed=seed, **budget, **run_fields
    )
    t0 = time.perf_counter()
    assets = prepare_run(cfg)
    prep = time.perf_counter() - t0
    result = run_training(cfg, assets=assets)
    wall = time.perf_counter() - t0
    evals = len(result.history)
    return {
        "kind": "run",
        "key": point_key(method, point),
        "method": method,
        "point": point,
        "seed": seed,
        "status": result.status,
        "curve": [[int(h["step"]), float(h[OBJECTIVE])] for h in result.history],
        "steps": result.steps,
        "step_s": result.train_time_s / max(result.steps, 1),
        "eval_s": max(wall - prep - result.train_time_s, 0.0) / max(evals, 1),
        "startup_s": prep,
        "wall_s": wall,
        "kept": result.method_report.get("kept_adapters"),
        # what each evaluation scored, read from the run (not the budget's label)
        "eval_examples": int(result.history[-1]["eval_examples"]) if result.history else None,
        "eval_fingerprint": result.history[-1].get("eval_fingerprint") if result.history else None,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The file's meta line and its run lines (a partial last line, from a killed recording, is skipped)."""
    meta: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return meta, runs
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "meta":
            meta = rec
        elif rec.get("kind") == "run":
            runs.append(rec)
    return meta, runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/recorded/sst2_minilm.jsonl")
    p.add_argument("--model", default=os.environ.get("WLORA_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
    p.add_argument("--data-dir", default=os.environ.get("WLORA_DATA_DIR"))
    p.add_argument("--methods", default=",".join(GRIDS))
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    p.add_argument("--limit", type=int, default=None, help="record at most this many new runs (a chunk)")
    p.add_argument("--version", type=int, choices=sorted(PROFILES), default=1, help="the recording's profile")
    a = p.parse_args(argv)
    prof = PROFILES[a.version]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta, runs = load(out)
    if meta and meta.get("version", 1) != a.version:
        raise SystemExit(
            f"{out} holds a version-{meta.get('version', 1)} recording; --version {a.version} needs another file"
        )
    done = {(r["key"], r["seed"]) for r in runs}
    if not meta:
        meta = {
            "kind": "meta",
            "version": a.version,
            "command": "python bench/record_curves.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "model": os.path.basename(a.model.rstrip("/")),
            "budget": prof["budget"],
            "grids": prof["grids"],
            "seeds": list(prof["seeds"]),
            "machine": f"{os.cpu_count()} CPU cores, one thread per run, {a.jobs} runs at once",
        }
        with out.open("a") as f:
            f.write(json.dumps(meta) + "\n")
    methods = a.methods.split(",")
    unknown = [m for m in methods if m not in prof["grids"]]
    if unknown:
        raise SystemExit(f"--methods: {unknown} not in version {a.version}'s grids {sorted(prof['grids'])}")
    cells = [(m, pt, s) for m in methods for pt in grid_points(m, prof["grids"]) for s in prof["seeds"]]
    if prof["order"] == "seed":  # every point's seed 0 first, per method: a recording cut short covers every point
        cells.sort(key=lambda c: (methods.index(c[0]), c[2]))
    todo = [(m, pt, s) for m, pt, s in cells if (point_key(m, pt), s) not in done]
    todo = todo[: a.limit] if a.limit is not None else todo
    print(f"{len(done)} runs recorded, {len(todo)} to record with {a.jobs} job(s)", flush=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        futures = [pool.submit(train_one, m, pt, s, a.model, a.data_dir, prof["budget"]) for m, pt, s in todo]
        for i, fut in enumerate(as_completed(futures), 1):
            rec = fut.result()
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            best = max((v for _, v in rec["curve"]), default=float("nan"))
            print(f"[{i}/{len(todo)}] {rec['key']} seed={rec['seed']} best={best:.4f} "
                  f"step={rec['step_s']:.3f}s wall={rec['wall_s']:.0f}s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
