"""``--forecast``: what a sweep will cost before it runs — trial count, device-hours and makespan, for the sweep as
typed and for the papers' grid on the same cells. Trains nothing.

Seconds per step come from one of two places (``sweeps.forecast_calibrate``):

* ``--forecast local`` (the default): a short calibration on this machine — a few optimizer steps and
  evaluation batches of the sweep's model at the sweep's batch length, with the CPU threads (or the GPU share)
  a trial gets, repeated three times, the fastest repeat kept — giving training and evaluation tokens per
  second, with the machine's load while calibrating. A trial's request the real run would refuse (CPUs, GPUs,
  memory against the nodes) is refused here with the run's message.
* ``--forecast PROFILE`` (a YAML file, or the name of one in ``sweeps/profiles/``): achieved TFLOP/s per trial for
  training and evaluation, a start-up time per trial and the number of devices, which the user edits (e.g. from
  ``bench/gpu_check.py`` on the real hardware). A step then costs 4·P FLOPs per token for adapter methods (forward
  + input gradients; no weight gradients for the frozen backbone), 6·P for full fine-tuning, 2·P per evaluated
  token, with P the backbone's matmul parameters (embeddings left out).

Work per trial: the planned optimizer steps and evaluations (``--max-steps`` or epochs × training examples /
batch, ``--eval-every``), the evaluation set (``--eval-subset``, the held-out split, or the task's dev size from
the task registry), and a start-up time. ASHA and the makespan: ``sweeps.forecast_model``. Seeds: ``--seeds N``,
or the range ``--seeds auto`` can take.

This module keeps every name the split-off modules define (``from sweeps import forecast as fc``; ``fc.makespan``,
``fc.calibrate``, ...).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
from typing import Any

from sweeps.forecast_calibrate import (
    BUSY_SHARE,
    PROFILE_DIR,
    REPEATS,
    STEPS,
    backbone_params,
    bert_matmul_params,
    busy_warning,
    calibrate,
    check_local_request,
    load_profile,
    local_speed,
    machine_load,
    padded_lengths,
    profile_speed,
    time_repeats,
)
from sweeps.forecast_model import (
    FLOPS_ADAPTER,
    FLOPS_EVAL,
    FLOPS_FULL,
    PAPERS_GRID,
    CellWork,
    Duration,
    Speed,
    asha_expected_evals,
    asha_trials,
    makespan,
    mean_of,
    search_runs,
    trial_seconds,
)
from wlora.data.registry import TASKS, normalize_task

#: The libraries' progress bars and loading reports stay off the console, as the run keeps them
#: (``sweeps.console.QUIET``, not imported: it loads the sweep machinery).
QUIET = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
#: The tokenizer measures batch lengths on one thread while the calibration's child times its steps on another.
QUIET["TOKENIZERS_PARALLELISM"] = "false"

__all__ = [
    "BUSY_SHARE", "FLOPS_ADAPTER", "FLOPS_EVAL", "FLOPS_FULL", "PAPERS_GRID", "PROFILE_DIR", "REPEATS", "STEPS",
    "CellWork", "Duration", "Speed", "asha_expected_evals", "asha_trials", "backbone_params", "bert_matmul_params",
    "busy_warning", "calibrate", "calibration_text", "cell_work", "check_flags", "check_local_request", "forecast",
    "forecast_text", "grid_sizes", "load_profile", "local_speed", "machine_load", "main", "makespan", "mean_of",
    "padded_lengths", "profile_speed", "run_forecast", "search_runs", "search_trials", "seed_range", "time_repeats",
    "trial_seconds",
]  # fmt: skip


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


def _eval_split(args: argparse.Namespace, search: bool) -> str:
    return "holdout" if getattr(args, "protocol", "papers") == "heldout" and search else "dev"


#: Methods that keep K of their n adapters and remove the rest after T optimizer steps.
SELECTING = ("weightlora", "weightlora_plus", "weightlora_informed", "random_select")


def _method_field(method: str, args: argparse.Namespace, name: str, default: Any) -> Any:
    """A method field as the sweep pins it: the preset's ``set:``, its ``methods.<method>.set:``, then ``--set``
    (``KEY=VALUE`` or ``METHOD.KEY=VALUE``)."""
    fixed = tuple((str(k), str(v)) for k, v in (getattr(args, "fixed", None) or []))
    return _pinned(str(getattr(args, "preset", None) or ""), method, fixed).get(name, default)


@functools.lru_cache(maxsize=64)
def _pinned(preset_path: str, method: str, fixed: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    from sweeps.flags import load_preset

    preset = load_preset(preset_path) if preset_path else {}
    pinned = {**(preset.get("set") or {}), **(((preset.get("methods") or {}).get(method) or {}).get("set") or {})}
    for key, value in fixed:
        scope, dot, field = key.rpartition(".")
        if not dot or scope == method:
            pinned[field] = value
    return pinned


@functools.lru_cache(maxsize=8)
def _layers_of(model: str) -> int | None:
    return _num_layers(argparse.Namespace(model=model))


def _num_layers(args: argparse.Namespace) -> int | None:
    """The backbone's transformer layers, from its ``config.json``: a local folder's, or a hub id's (that one file,
    from the cache or the hub; never the weights). None where it is not at hand."""
    import json
    from pathlib import Path

    try:
        local = Path(str(args.model)).expanduser()
        if local.is_dir():
            config = local / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            config = Path(hf_hub_download(str(args.model), "config.json"))
        cfg = json.loads(config.read_text())
        return int(cfg.get("num_hidden_layers") or cfg.get("num_layers") or 0) or None
    except Exception:  # offline, unknown id, no config: the forecast prices every step in full
        return None


def after_selection_cost(layers: int, per_layer: int, k: int) -> float:
    """Expected cost of a training step after the selection, relative to a step with every adapter. A step is a
    forward pass through all ``layers`` and a backward pass (input gradients only: the backbone is frozen) from the
    top down to the lowest layer that keeps an adapter, so with the lowest kept adapter in layer L (0-based) it
    costs (2·layers − L) / (2·layers). The K kept of n = layers × per_layer are taken as a uniform draw
    (hypergeometric: P(L_min ≥ L) = C(n − per_layer·L, K) / C(n, K)); WeightLoRA's choice is not known before it
    runs and kept the upper layers more often in the recorded reproductions, so this is a lower bound on the
    saving."""
    n = layers * per_layer
    if not 1 <= k < n:
        return 1.0
    expected_lowest = sum(math.comb(n - per_layer * low, k) for low in range(1, layers)) / math.comb(n, k)
    return 1.0 - expected_lowest / (2 * layers)


def _selection(method: str, args: argparse.Namespace, steps: int) -> tuple[int, float]:
    """(T, relative cost of a step after T) of a selecting method (``SELECTING``); (0, 1.0) for any other."""
    layers = _layers_of(str(args.model)) if method in SELECTING else None
    if not layers:
        return 0, 1.0
    t = int(_method_field(method, args, "t", 100))
    if t >= steps:
        return 0, 1.0
    per_layer = 3  # the default targets: query, key, value
    k = _method_field(method, args, "k", None)
    frac = float(_method_field(method, args, "k_fraction", None) or 0.25)
    k = int(k) if k not in (None, "none") else max(1, round(frac * layers * per_layer))
    return t, after_selection_cost(layers, per_layer, k)


def cell_work(task: str, method: str, args: argparse.Namespace, search: bool = True) -> CellWork:
    n = _n_train(task, args)
    per_epoch = math.ceil(n / args.batch_size)
    steps = args.max_steps or max(1, math.ceil(args.max_epochs * per_epoch))
    every = args.eval_every or per_epoch
    evals = math.ceil(steps / every)
    if not search and getattr(args, "protocol", "papers") == "heldout":
        evals = 1  # the seed re-runs of --protocol heldout score dev once, at their last step (sweeps.plan)
    n_eval = _n_eval(task, args, search)
    measure = getattr(args, "measure_lengths", True)
    train_len, eval_len = padded_lengths(task, args, split=_eval_split(args, search)) if measure else (0, 0)
    train_len, eval_len = train_len or args.max_length, eval_len or args.max_length
    select_step, after_select = _selection(method, args, steps)
    return CellWork(f"{task}-{method}", steps, evals, round(args.batch_size * train_len), round(n_eval * eval_len),
                    method == "full", select_step, after_select)  # fmt: skip


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


def race_range(args: argparse.Namespace, runs: list[list[tuple[float, int]]] | None = None) -> tuple[int, int]:
    """Race runs per cell (``--race-top``): one round if the first round decides, up to the race budget. They are
    modelled as full-budget runs after the cell's search, beside its seed re-runs (the barrier between rounds is
    not). Only search trials that trained to the end are candidates: with ``runs`` (the cell's search outcomes,
    :func:`sweeps.forecast_model.search_runs`) the candidates are the top M of the trials expected to reach the
    end (rounded down and up: the low and high counts; fewer than 2 race nothing). Under ``--protocol papers``
    the seed re-runs then reuse the pick's race runs, not subtracted here."""
    from sweeps.flags import race_budget

    budget = race_budget(args)
    if not budget:
        return 0, 0
    top, seeds = int(args.race_top), int(args.race_seeds)
    if runs is None:
        low_c = high_c = top
    else:
        finals = sum(p for outcomes in runs for p, e in outcomes if e == max(x for _, x in outcomes))
        low_c, high_c = min(top, math.floor(finals + 1e-9)), min(top, math.ceil(finals - 1e-9))

    def first_round(c: int) -> int:
        return 0 if c < 2 else min(budget // c, seeds) * c

    def whole_budget(c: int) -> int:
        return 0 if c < 2 else budget // c * c

    return first_round(low_c), max(whole_budget(c) for c in range(low_c, high_c + 1))


def forecast(args: argparse.Namespace, speed: Speed, grid_sizes: dict[str, int]) -> dict[str, Any]:
    """The sweep as typed and the papers' grid on the same cells: trials, device-hours, makespan."""
    tasks = [normalize_task(t) for t in args.tasks]
    ranks = [r for r in args.ranks]
    cells = [(t, m, r) for t in tasks for m in args.methods for r in ranks]
    use_asha = not args.no_asha and not args.multi_objective
    n_search = search_trials(args, grid_sizes)
    lo, hi = seed_range(args)
    out: dict[str, Any] = {"cells": len(cells), "slots": speed.slots, "speed": speed.name}
    races: list[tuple[int, int]] = []
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
                if label == "sweep":  # --race-top: race runs (full budget, on the search's data) after the search
                    race = race_range(args, runs)
                    races.append(race)
                    n_race = race[which == "high"]
                    sd = [trial_seconds(w, speed)] * n_race + sd
                    epochs += n_race * w.steps * args.batch_size / _n_train(task, args)
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
    out["race_runs"] = (min(lo for lo, _ in races), max(hi for _, hi in races)) if races else (0, 0)
    return out


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def calibration_text(speed: Speed) -> list[str]:
    """How a calibrated speed was found: the spread of its repeats, the load meanwhile, and a warning when
    another job held the cores; then the speed's own notes."""
    lines = []
    if speed.train_repeats:
        spread = lambda v: "/".join(f"{x:,.0f}" for x in (min(v), statistics.median(v), max(v)))  # noqa: E731
        load = "not known" if speed.load_1min is None else f"{speed.load_1min:.2f}"
        lines.append(
            f"  calibration: the fastest of {len(speed.train_repeats)} repeats (training tokens/s min/median/max "
            f"{spread(speed.train_repeats)}; evaluation {spread(speed.eval_repeats)}); 1-min load {load} on "
            f"{speed.cores} cores while calibrating"
        )
    warning = busy_warning(speed)
    return [*lines, *([warning] if warning else []), *speed.notes]


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
            *calibration_text(speed),
            line("this sweep", out["sweep_low"], out["sweep_high"]),
            line("papers' grid", out["papers_grid_low"], out["papers_grid_high"]),
            *race_text(out),
            f"  this sweep costs {ratio:.2f}× the papers' grid ({PAPERS_GRID} configs per cell, full budget each, "
            "the same seed re-runs)",
        ]
    )


def race_text(out: dict[str, Any]) -> list[str]:
    """The race's share of this sweep's line (``--race-top``), when it races."""
    lo, hi = out.get("race_runs", (0, 0))
    if not hi:
        return []
    return [f"  this sweep includes {lo} – {hi} race run(s) per cell (--race-top: full budget, after each search)"]


def grid_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Grid dimensions of the sweep's space (preset ``space`` and ``--space``) → number of points."""
    from sweeps.flags import load_preset

    preset = load_preset(args.preset)
    spec = {**(preset.get("space") or {}), **dict(args.space)}
    return {k: len(str(v).split(":", 1)[1].split(",")) for k, v in spec.items() if str(v).startswith("grid:")}


def check_flags(args: argparse.Namespace) -> None:
    """The run's checks of its flags (``sweeps.flags.check_args``: ``--seeds``, ``--holdout-size``,
    ``--gpus-per-trial``, ...), less the tracking store's: a forecast writes nothing, and may be made away from
    the store's network. A flag the run refuses is refused here with the run's message."""
    from sweeps.flags import check_args

    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise ValueError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    check_args(argparse.Namespace(**{**vars(args), "tracking_uri": None}))


def run_forecast(args: argparse.Namespace) -> str:
    value = args.forecast or "local"
    check_flags(args)
    # local: a request the run refuses is refused here, with the run's message
    speed = local_speed(args) if value == "local" else profile_speed(args, load_profile(value))
    return forecast_text(forecast(args, speed, grid_sizes(args)), speed)


def main(defaults: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--forecast`` from a sweep script (``args`` parsed by its ``parser``) without the sweep machinery: the
    preset's flags and ``--smoke-test`` applied as the run applies them, then the forecast; no Tune, no MLflow
    (``sweeps.run`` imports both, ~4 s of CPU). Exit 2 with one line on bad input, as the run."""
    from sweeps.flags import apply_preset_cli, apply_smoke

    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    try:
        apply_preset_cli(args, parser)
        apply_smoke(args, defaults, parser)
        print(run_forecast(args), flush=True)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the calibration's child is already stopped (local_speed); one line
        print("forecast interrupted: nothing was written", file=sys.stderr)
        return 130
    return 0
