"""``--forecast``: what a sweep will cost before it runs — trial count, device-hours and makespan, for the sweep as
typed and for the papers' grid on the same cells. Trains nothing.

Seconds per step come from one of two places:

* ``--forecast local`` (the default): a short calibration on this machine — a few optimizer steps and one
  evaluation batch of the sweep's model at the sweep's batch × length, with the CPU threads (or the GPU) a trial
  gets — giving training and evaluation tokens per second.
* ``--forecast PROFILE`` (a YAML file, or the name of one in ``sweeps/profiles/``): achieved TFLOP/s per trial for
  training and evaluation, a start-up time per trial and the number of devices, which the user edits (e.g. from
  ``bench/gpu_check.py`` on the real hardware). A step then costs 4·P FLOPs per token for adapter methods (forward
  + input gradients; no weight gradients for the frozen backbone), 6·P for full fine-tuning, 2·P per evaluated
  token, with P the backbone's matmul parameters (embeddings left out).

Work per trial: the planned optimizer steps and evaluations (``--max-steps`` or epochs × training examples /
batch, ``--eval-every``), the evaluation set (``--eval-subset``, the held-out split, or the task's dev size from
the task registry), and a start-up time. ASHA: a trial reaches rung k (grace · η^k evaluations) with probability
η^-k in a large sweep, the expected cost of successive halving; a small one promotes more, as Ray's asynchronous
rule does when a rung has few results (``asha_trials``). Seeds: ``--seeds N``, or the range ``--seeds auto``
can take. Makespan: the trials run first-in-first-out on the slots (search trials of all cells round robin, a
cell's seed re-runs once its search has ended), slots freed at mean durations; the makespan is the expected
latest end over the ASHA outcomes of each trial.
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wlora.data.registry import TASKS, normalize_task

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
#: The papers' bash grid per cell (WeightLoRA paper, App. B.1): 10 learning rates × 6 warm-ups, full budget each.
PAPERS_GRID = 10 * 6
#: Training FLOPs per token per backbone matmul parameter: adapter methods, full fine-tuning.
FLOPS_ADAPTER, FLOPS_FULL, FLOPS_EVAL = 4.0, 6.0, 2.0


@dataclass(frozen=True)
class Speed:
    """What one trial computes per second on the target hardware, and how many trials run at once."""

    name: str
    slots: int
    train_tok_s: float  # training tokens per second per trial (adapter methods)
    eval_tok_s: float
    startup_s: float
    sweep_overhead_s: float = 0.0  # paid once per sweep (Ray, the tracking store, the first trial's imports)
    full_ft_factor: float = FLOPS_FULL / FLOPS_ADAPTER
    device_kind: str = "CPU"
    devices_per_trial: float = 1.0


@dataclass(frozen=True)
class CellWork:
    name: str
    steps: int
    evals: int
    tokens_per_step: int
    eval_tokens: int
    full_ft: bool


def asha_expected_evals(max_t: int, grace: int, eta: float) -> float:
    """Expected evaluations of one trial under (synchronous) successive halving: rung k at grace·η^k (< max_t)
    is reached with probability η^-k, the last stretch to max_t with probability η^-K (K rungs)."""
    points = _rung_points(max_t, grace, eta)
    total, prev = 0.0, 0
    for k, point in enumerate(points):
        total += (point - prev) * eta ** (-k)
        prev = point
    return total


def _rung_points(max_t: int, grace: int, eta: float) -> list[int]:
    points, r = [], grace
    while r < max_t:
        points.append(r)
        r = math.ceil(r * eta) if r * eta > r else r + 1
    return [*points, max_t]


def asha_trials(n: int, max_t: int, grace: int, eta: float) -> list[list[tuple[float, int]]]:
    """How far each of ``n`` trials in launch order gets under asynchronous successive halving (Ray's ASHA):
    a list of (probability, evaluations) outcomes per trial.

    A result at a rung continues when it is at least the (1 − 1/η) percentile of the results recorded there
    before it; against j earlier values in random order that happens with probability (j − (j − 1)(1 − 1/η)) /
    (j + 1) — 1 for the first, ½ for the second, → 1/η — so a small sweep promotes more than the synchronous
    1/η shares of :func:`asha_expected_evals` (to which this tends as n grows). j is the expected number of
    earlier trials recorded at the rung."""
    points = _rung_points(max_t, grace, eta)
    q = 1 - 1 / eta
    counts = [0.0] * len(points)
    out = []
    for _ in range(n):
        p = [1.0]
        for k in range(1, len(points)):
            j = counts[k - 1]
            p.append(p[-1] * (1 - j / 2 if j < 1 else (j - (j - 1) * q) / (j + 1)))
        for k, pk in enumerate(p):
            counts[k] += pk
        out.append([(pk - (p[k + 1] if k + 1 < len(p) else 0.0), points[k]) for k, pk in enumerate(p)])
    return out


def search_runs(n: int, evals: int, asha: bool, grace: int, eta: float) -> list[list[tuple[float, int]]]:
    """(probability, evaluations) outcomes of each of a cell's ``n`` search trials."""
    return asha_trials(n, evals, grace, eta) if asha else [[(1.0, evals)]] * n


#: A job's duration: seconds, or (probability, seconds) outcomes (an ASHA trial).
Duration = float | list[tuple[float, float]]


def mean_of(d: Duration) -> float:
    """Expected value of a duration (or of (probability, evaluations) outcomes)."""
    return float(d) if isinstance(d, (int, float)) else sum(p * v for p, v in d)


def _expected_max(placed: list[tuple[float, Duration]]) -> float:
    """E[max over jobs of start + duration] for independent jobs (exact for discrete outcomes)."""
    events = []  # (end time, job, probability mass)
    for i, (start, d) in enumerate(placed):
        for p, v in [(1.0, d)] if isinstance(d, (int, float)) else d:
            if p > 0:
                events.append((start + v, i, p))
    events.sort()
    cdf = [0.0] * len(placed)
    zeros, log_prod, prev_f, total = len(placed), 0.0, 0.0, 0.0
    for t, i, p in events:
        if cdf[i] == 0.0:
            zeros -= 1
        else:
            log_prod -= math.log(cdf[i])
        cdf[i] = min(1.0, cdf[i] + p)
        log_prod += math.log(cdf[i])
        f = math.exp(log_prod) if zeros == 0 else 0.0
        total += t * (f - prev_f)
        prev_f = f
    return total


def makespan(cells: Sequence[tuple[Sequence[Duration], Sequence[Duration]]], slots: int) -> float:
    """Expected makespan of a FIFO list schedule on ``slots``: search trials of all cells round robin; a cell's
    seed re-runs join the queue when its last search trial ends. ``cells``: (search durations, seed durations)
    per cell. Slots free up at each job's mean duration; the makespan is the expected latest end over the jobs'
    outcomes (a few long ASHA survivors launched late set it, which means alone would miss)."""
    queue: list[tuple[int, int, Duration]] = []  # (order, cell, duration)
    order = 0
    longest = max((len(s) for s, _ in cells), default=0)
    for i in range(longest):
        for c, (search, _) in enumerate(cells):
            if i < len(search):
                queue.append((order, c, search[i]))
                order += 1
    left = [len(s) for s, _ in cells]
    free = [0.0] * max(slots, 1)
    heapq.heapify(free)
    pending: list[tuple[float, int, int, Duration]] = []  # seed runs: (ready time, order, cell, duration)
    placed: list[tuple[float, Duration]] = []
    qi = 0
    running: list[tuple[float, int]] = []  # (end time, cell) of search trials
    while qi < len(queue) or pending or running:
        t = heapq.heappop(free)
        # search trials that ended by t may release their cell's seed runs
        while running and running[0][0] <= t:
            done, c = heapq.heappop(running)
            left[c] -= 1
            if left[c] == 0:
                for d in cells[c][1]:
                    heapq.heappush(pending, (done, order, c, d))
                    order += 1
        if pending and (pending[0][0] <= t or qi >= len(queue)):
            ready, _, c, d = heapq.heappop(pending)
            start = max(t, ready)
            heapq.heappush(free, start + mean_of(d))
            placed.append((start, d))
        elif qi < len(queue):
            _, c, d = queue[qi]
            qi += 1
            heapq.heappush(free, t + mean_of(d))
            heapq.heappush(running, (t + mean_of(d), c))
            placed.append((t, d))
        elif running:
            heapq.heappush(free, running[0][0])  # wait for the next search trial to end
        else:
            heapq.heappush(free, t)
            break
    return _expected_max(placed)


def _n_train(task: str, args: argparse.Namespace) -> int:
    spec = TASKS[task]
    n = spec.train_size or 10_000
    if getattr(args, "protocol", "papers") == "heldout":
        h = args.holdout_size
        n -= int(h if h >= 1 else h * n)
    return min(n, args.train_subset) if args.train_subset else n


def _n_eval(task: str, args: argparse.Namespace, search: bool) -> int:
    if getattr(args, "protocol", "papers") == "heldout" and search:
        h = args.holdout_size
        n = int(h if h >= 1 else h * (TASKS[task].train_size or 10_000))
    else:
        n = TASKS[task].dev_size or 1_000
    return min(n, args.eval_subset) if args.eval_subset else n


_LENGTHS: dict[tuple, tuple[float, float]] = {}


def padded_lengths(task: str, args: argparse.Namespace, eval_batch: int = 64) -> tuple[float, float]:
    """Mean padded length of a training batch and of an evaluation batch: batches are padded to their longest
    sequence, so short-sentence tasks cost far fewer tokens than ``max_length``. Measured on 2,048 seeded
    training examples tokenized by the sweep's own tokenizer when the data and the model are at hand (GLUE),
    else ``max_length`` (as a run padded to its maximum length)."""
    key = (task, args.model, args.data_dir, args.max_length, args.batch_size)
    if key in _LENGTHS:
        return _LENGTHS[key]
    out = (float(args.max_length), float(args.max_length))
    spec = TASKS[task]
    if spec.glue is not None and args.data_dir:
        try:
            import random

            from transformers import AutoTokenizer

            from wlora.data import read_glue_split
            from wlora.data.layout import locate_task_files
            from wlora.model_source import resolve_model

            train_file = locate_task_files(task, args.data_dir)[0]
            rows = read_glue_split(str(Path(train_file).parent.parent), task, "train")
            rows = random.Random(0).sample(rows, min(2048, len(rows)))
            tok = AutoTokenizer.from_pretrained(resolve_model(args.model))
            b = [r.text_b for r in rows] if rows[0].text_b is not None else None
            lens = [len(ids) for ids in tok([r.text_a for r in rows], b, truncation=True,
                                            max_length=args.max_length)["input_ids"]]  # fmt: skip

            def mean_max(size: int) -> float:
                groups = [lens[i : i + size] for i in range(0, len(lens) - size + 1, size)] or [lens]
                return sum(max(g) for g in groups) / len(groups)

            out = (mean_max(args.batch_size), mean_max(eval_batch))
        except (OSError, ValueError, FileNotFoundError):
            pass  # no local data or tokenizer: assume full-length batches
    _LENGTHS[key] = out
    return out


def cell_work(task: str, method: str, args: argparse.Namespace, search: bool = True) -> CellWork:
    n = _n_train(task, args)
    per_epoch = math.ceil(n / args.batch_size)
    steps = args.max_steps or max(1, math.ceil(args.max_epochs * per_epoch))
    every = args.eval_every or per_epoch
    evals = math.ceil(steps / every)
    train_len, eval_len = padded_lengths(task, args) if getattr(args, "measure_lengths", True) else (0, 0)
    train_len, eval_len = train_len or args.max_length, eval_len or args.max_length
    return CellWork(f"{task}-{method}", steps, evals, round(args.batch_size * train_len),
                    round(_n_eval(task, args, search) * eval_len), method == "full")  # fmt: skip


def trial_seconds(w: CellWork, speed: Speed, evals: float | None = None) -> float:
    """Expected seconds of one trial that runs ``evals`` of its evaluations (all of them by default)."""
    evals = w.evals if evals is None else evals
    steps = w.steps * evals / w.evals
    train = steps * w.tokens_per_step / speed.train_tok_s * (speed.full_ft_factor if w.full_ft else 1.0)
    return speed.startup_s + train + evals * w.eval_tokens / speed.eval_tok_s


def search_trials(args: argparse.Namespace, space_sizes: dict[str, int]) -> int:
    from sweeps.flags import load_preset

    if (args.search or load_preset(args.preset).get("search") or "optuna") == "grid":
        return math.prod(space_sizes.values()) if space_sizes else 1
    return args.num_samples


def seed_range(args: argparse.Namespace) -> tuple[int, int]:
    if args.seeds == "auto" or getattr(args, "seeds_auto", False):
        from sweeps.claims import seed_schedule

        sched = seed_schedule(args.max_seeds)
        return sched[0], sched[-1]
    return int(args.seeds), int(args.seeds)


def forecast(args: argparse.Namespace, speed: Speed, grid_sizes: dict[str, int]) -> dict[str, Any]:
    """The sweep as typed and the papers' grid on the same cells: trials, device-hours, makespan."""
    tasks = [normalize_task(t) for t in args.tasks]
    ranks = [r for r in args.ranks]
    cells = [(t, m, r) for t in tasks for m in args.methods for r in ranks]
    use_asha = not args.no_asha and not args.multi_objective
    n_search = search_trials(args, grid_sizes)
    lo, hi = seed_range(args)
    out: dict[str, Any] = {"cells": len(cells), "slots": speed.slots, "speed": speed.name}
    for label, seeds in (("sweep", (lo, hi)), ("papers_grid", (hi, hi))):
        for which, n_seeds in (("low", seeds[0]), ("high", seeds[1])):
            plan = []
            trials = epochs = seconds = 0.0
            for task, method, _ in cells:
                w, ws = cell_work(task, method, args), cell_work(task, method, args, search=False)
                if label == "sweep":
                    runs = search_runs(n_search, w.evals, use_asha, args.grace_period, args.reduction_factor)
                    s = [[(p, trial_seconds(w, speed, e)) for p, e in outcomes] for outcomes in runs]
                    frac = sum(mean_of(o) for o in runs) / n_search / w.evals
                    epochs += n_search * frac * w.steps * args.batch_size / _n_train(task, args)
                else:
                    s = [trial_seconds(w, speed)] * PAPERS_GRID
                    epochs += PAPERS_GRID * w.steps * args.batch_size / _n_train(task, args)
                sd = [trial_seconds(ws, speed)] * n_seeds
                epochs += n_seeds * ws.steps * args.batch_size / _n_train(task, args)
                plan.append((s, sd))
                trials += len(s) + len(sd)
                seconds += sum(mean_of(d) for d in s) + sum(sd)
            out[f"{label}_{which}"] = {
                "plan": plan,
                "trials": int(trials),
                "trial_epochs": epochs,
                "device_hours": seconds * speed.devices_per_trial / 3600,
                "makespan_s": speed.sweep_overhead_s + makespan(plan, speed.slots),
            }
    return out


def load_profile(value: str) -> dict[str, Any]:
    path = Path(value)
    if not path.is_file():
        path = PROFILE_DIR / (value if value.endswith(".yaml") else f"{value}.yaml")
    if not path.is_file():
        names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"--forecast {value}: no such profile file (named ones: {', '.join(names)})")
    return yaml.safe_load(path.read_text()) or {}


def backbone_params(model: str, profile: dict[str, Any]) -> float:
    """Matmul parameters of the model's backbone (embeddings left out), from the profile's ``models`` table or
    the model's own config (instantiated on the meta device: no weights read)."""
    known = (profile.get("models") or {}).get(model) or (profile.get("models") or {}).get(Path(model).name)
    if known:
        return float(known["backbone_params"])
    import torch
    from transformers import AutoConfig, AutoModel

    from wlora.model_source import resolve_model

    cfg = AutoConfig.from_pretrained(resolve_model(model))
    with torch.device("meta"):
        m = AutoModel.from_config(cfg)
    return float(sum(p.numel() for n, p in m.named_parameters() if "embed" not in n and p.dim() == 2))


def profile_speed(args: argparse.Namespace, profile: dict[str, Any]) -> Speed:
    p = backbone_params(args.model, profile)
    if profile.get("kind", "gpu") == "gpu":
        # --gpus-per-trial 0 (the local default) on a GPU profile: one GPU per trial, as cluster.yaml runs
        per_trial = args.gpus_per_trial if args.gpus_per_trial > 0 else 1.0
    else:
        per_trial = args.cpus_per_trial
    packed = max(1, round(1 / per_trial)) if per_trial < 1 else 1
    slowdown = float((profile.get("packing_slowdown") or {}).get(packed, packed**0.5))
    slots = int(profile["devices"] * packed) if per_trial < 1 else int(profile["devices"] // per_trial)
    return Speed(
        name=f"{profile.get('name', 'profile')} ({slots} slots)",
        slots=slots,
        train_tok_s=profile["train_tflops"] * 1e12 / (FLOPS_ADAPTER * p) / slowdown,
        eval_tok_s=profile["eval_tflops"] * 1e12 / (FLOPS_EVAL * p) / slowdown,
        startup_s=float(profile.get("startup_s", 30)),
        device_kind=str(profile.get("kind", "gpu")).upper(),
        devices_per_trial=min(per_trial, 1.0),
    )


def calibrate(args: argparse.Namespace, steps: int = 3, max_batch: int = 16) -> Speed:
    """Time a few LoRA steps and one evaluation batch of the sweep's model on this machine, with the threads a
    trial gets (``--cpus-per-trial``); slots = local CPUs / CPUs per trial. The calibration batch is at most
    ``max_batch`` sequences of the sweep's length (tokens per second barely change with the batch on a CPU)."""
    import os

    import torch
    from transformers import AutoModelForSequenceClassification

    import wlora
    from wlora.engine import Engine
    from wlora.model_source import resolve_model

    threads = max(1, int(args.cpus_per_trial))
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(args.model), num_labels=2)
    ctl = wlora.build_method("lora", model, {"r": 8})
    load_s = time.perf_counter() - t0
    eng = Engine(model, ctl, lr=1e-3, total_steps=steps + 1)
    # at the length the sweep's batches really have (padded to their longest sequence), not max_length
    train_len, _ = padded_lengths(normalize_task(args.tasks[0]), args)
    b, n = min(args.batch_size, max_batch), max(8, round(train_len))
    batch = {
        "input_ids": torch.randint(5, model.config.vocab_size, (b, n)),
        "attention_mask": torch.ones(b, n, dtype=torch.long),
        "labels": torch.randint(0, 2, (b,)),
    }
    eng.train_step(batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        eng.train_step(batch)
    train_s = (time.perf_counter() - t0) / steps
    model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        model(**{k: v for k, v in batch.items() if k != "labels"})
        eval_s = time.perf_counter() - t0
    cpus = args.num_cpus or os.cpu_count() or 1
    slots = max(1, int(cpus // args.cpus_per_trial))
    if args.max_concurrent:
        slots = min(slots, args.max_concurrent)
    # trials on more slots than cores share them: each runs at cores / slots of its calibrated speed
    share = min(1.0, (os.cpu_count() or 1) / (slots * threads))
    return Speed(
        name=f"this machine, calibrated ({slots} slots of {threads} thread(s))",
        slots=slots,
        train_tok_s=b * n / train_s * share,
        eval_tok_s=b * n / eval_s * share,
        # per trial: loading the model (measured) + ~1 s of data, logging and checkpoints (the README's overhead
        # benchmark: from its second trial on, a trial through the sweep costs 0.97-1.22x a plain loop's);
        # once per sweep: ~8 s (Ray, the MLflow store, the first trial process and its imports; same benchmark)
        startup_s=load_s + 1.0,
        sweep_overhead_s=8.0,
    )


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def forecast_text(out: dict[str, Any], speed: Speed) -> str:
    def line(label: str, lo: dict[str, Any], hi: dict[str, Any]) -> str:
        span = lambda a, b, f: f(a) if a == b else f"{f(a)} – {f(b)}"  # noqa: E731
        return (
            f"  {label:12} trials {span(lo['trials'], hi['trials'], str):>11}  trial-epochs "
            f"{span(round(lo['trial_epochs'], 1), round(hi['trial_epochs'], 1), str):>13}  "
            f"{speed.device_kind}-hours {span(lo['device_hours'], hi['device_hours'], lambda v: f'{v:.1f}'):>11}  "
            f"makespan {span(lo['makespan_s'], hi['makespan_s'], _hours)}"
        )

    ratio = out["sweep_high"]["device_hours"] / max(out["papers_grid_high"]["device_hours"], 1e-12)
    return "\n".join(
        [
            f"forecast: {out['cells']} cell(s) on {speed.name}",
            f"  speed: {speed.train_tok_s:,.0f} training / {speed.eval_tok_s:,.0f} evaluation tokens/s per trial, "
            f"{speed.startup_s:.0f} s start-up per trial",
            line("this sweep", out["sweep_low"], out["sweep_high"]),
            line("papers' grid", out["papers_grid_low"], out["papers_grid_high"]),
            f"  this sweep costs {ratio:.2f}× the papers' grid ({PAPERS_GRID} configs per cell, full budget each, "
            "the same seed re-runs)",
        ]
    )


def grid_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Grid dimensions of the sweep's space (preset ``space`` and ``--space``) → number of points."""
    from sweeps.flags import load_preset

    preset = load_preset(args.preset)
    spec = {**(preset.get("space") or {}), **dict(args.space)}
    return {k: len(str(v).split(":", 1)[1].split(",")) for k, v in spec.items() if str(v).startswith("grid:")}


def run_forecast(args: argparse.Namespace) -> str:
    value = args.forecast or "local"
    speed = calibrate(args) if value == "local" else profile_speed(args, load_profile(value))
    return forecast_text(forecast(args, speed, grid_sizes(args)), speed)
