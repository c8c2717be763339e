"""Where ``--forecast`` gets its seconds per step: a calibration on this machine (``--forecast local``), or a
profile of other hardware (``--forecast PROFILE``).

The calibration times a few LoRA steps and evaluation batches of the sweep's model at the sweep's batch length,
with the threads (or the GPU share) a trial gets. It repeats the timing (:data:`REPEATS` times) and keeps the
fastest repeat: another job on the machine only ever slows a repeat down, so the minimum is the machine's own
speed. It reads the machine's load while calibrating and says so when another job holds the cores (then a sweep
that runs beside that job will be slower than forecast). A trial's request is first checked as the real run
checks it (:func:`check_local_request`): a request the run would refuse is refused here, with its message.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sweeps.forecast_lengths import _LENGTHS, padded_lengths, sampled_texts, train_length  # noqa: F401
from sweeps.forecast_model import FLOPS_ADAPTER, FLOPS_EVAL, Speed
from wlora.data.registry import normalize_task

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
#: Timings of the calibration: repeats (the fastest is kept) of a few steps each, after one warm-up step.
REPEATS, STEPS = 3, 1
#: Another job holds the cores when the 1-minute load beyond the calibration's own threads exceeds this share.
BUSY_SHARE = 0.5


def load_profile(value: str) -> dict[str, Any]:
    path = Path(value)
    if not path.is_file():
        path = PROFILE_DIR / (value if value.endswith(".yaml") else f"{value}.yaml")
    if not path.is_file():
        names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"--forecast {value}: no such profile file (named ones: {', '.join(names)})")
    return yaml.safe_load(path.read_text()) or {}


#: Encoders whose backbone is BERT's: per layer q, k, v, the attention output (hidden²) and the feed-forward
#: pair (hidden × intermediate, twice), plus the pooler (hidden²).
BERT_LIKE = ("bert", "roberta")


def bert_matmul_params(config: Path) -> float | None:
    """Matmul parameters of a BERT-like backbone from its ``config.json`` alone (no transformers import: what
    the meta-device model of :func:`backbone_params` counts), or None for another architecture."""
    try:
        cfg = json.loads(config.read_text())
        if cfg.get("model_type") not in BERT_LIKE:
            return None
        h, inter, layers = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(layers * (4 * h * h + 2 * h * inter) + h * h)


def backbone_params(model: str, profile: dict[str, Any]) -> float:
    """Matmul parameters of the model's backbone (embeddings left out), from the profile's ``models`` table or
    the model's own config (instantiated on the meta device: no weights read)."""
    known = (profile.get("models") or {}).get(model) or (profile.get("models") or {}).get(Path(model).name)
    if known:
        return float(known["backbone_params"])
    from wlora.model_source import resolve_model

    path = resolve_model(model)
    counted = bert_matmul_params(Path(path) / "config.json")
    if counted is not None:
        return counted
    import torch
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(path)
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


def machine_load(read: Callable[[], tuple[float, float, float]] | None = None) -> float | None:
    """The machine's 1-minute load average (``read``: ``os.getloadavg``), or None where the system does not give
    it (no ``getloadavg`` on Windows)."""
    read = read or getattr(os, "getloadavg", None)
    try:
        return float(read()[0]) if read else None
    except OSError:
        return None


def busy_warning(speed: Speed) -> str | None:
    """A warning line when another job held the cores while calibrating: the 1-minute load beyond the
    calibration's own threads was over :data:`BUSY_SHARE` of the cores."""
    if speed.load_1min is None or speed.cores <= 0:
        return None
    other = speed.load_1min - speed.own_threads
    if other <= BUSY_SHARE * speed.cores:
        return None
    return (
        f"  warning: the machine was busy while calibrating (1-min load {speed.load_1min:.2f} on {speed.cores} "
        f"cores, {other:.2f} beyond the calibration's own {speed.own_threads} thread(s)): another job holds the "
        f"cores. The speed is the fastest of {len(speed.train_repeats)} repeats; a sweep that runs beside that "
        "job will take longer than this forecast"
    )


def time_repeats(step: Callable[[], Any], steps: int, repeats: int, clock: Callable[[], float] = time.perf_counter):
    """Seconds per call of ``step`` (the mean over ``steps`` calls) in each of ``repeats`` repeats."""
    out = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(steps):
            step()
        out.append((clock() - t0) / steps)
    return out


def check_local_request(args: argparse.Namespace) -> dict[str, Any] | None:
    """What the real run checks before its first trial, for a sweep on this machine: a trial's CPUs, GPUs and
    memory against the nodes local Ray will declare (and the node types ``ray up`` may add). A request it would
    refuse raises its ``ValueError`` (one line). Returns this machine's resources as Ray declares them (None
    with ``--address``: only the running cluster knows its nodes, and the run checks once it has joined)."""
    from sweeps.resources import check_resources, planned_nodes, trial_memory
    from wlora.model_source import resolve_model

    nodes = planned_nodes(args)
    if nodes is None:
        return None
    check_resources(args, trial_memory(args, [resolve_model(args.model)], args.methods), nodes)
    return nodes[0]


def local_speed(args: argparse.Namespace) -> Speed:
    """``--forecast local``: the run's request check (:func:`check_local_request`, which imports Ray) and the
    calibration (:func:`calibrate`, which imports torch and transformers and times steps), the two side by side:
    a CPU calibration runs in a child process while this one checks the request and measures every task's batch
    lengths, so the forecast's wall time is about the calibration's alone. A request the run refuses stops the
    child and raises the run's message; the child's one-line error is raised here as it would be in-process. GPU
    calibrations (the slots depend on the nodes Ray declares) run here, after the check."""
    if float(getattr(args, "gpus_per_trial", 0) or 0) > 0:
        return calibrate(args, node=check_local_request(args))
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "from sweeps.forecast_calibrate import _calibrate_child; _calibrate_child()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert child.stdin is not None
        child.stdin.write(pickle.dumps(args))
        child.stdin.close()
        child.stdin = None  # written and closed: communicate() below only reads
        check_local_request(args)
        splits = ("dev", "holdout") if getattr(args, "protocol", "papers") == "heldout" else ("dev",)
        for task in args.tasks:  # the forecast reads each task's lengths: measured now, beside the calibration
            for split in splits:
                padded_lengths(normalize_task(task), args, split=split)
        out, err = child.communicate()
    except BaseException:
        child.kill()
        child.wait()
        raise
    if child.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ValueError(lines[-1] if lines else f"the calibration process exited with {child.returncode}")
    return pickle.loads(out)


def _calibrate_child() -> None:
    """The child of :func:`local_speed`: the sweep's arguments (pickled) on stdin, the :class:`Speed` (pickled) on
    stdout; a one-line error (exit 2) on a value the calibration refuses."""
    args = pickle.loads(sys.stdin.buffer.read())
    try:
        speed = calibrate(args)
    except (ValueError, OSError) as e:
        print(str(e).splitlines()[0] if str(e) else type(e).__name__, file=sys.stderr)
        raise SystemExit(2) from None
    sys.stdout.buffer.write(pickle.dumps(speed))


def calibrate(
    args: argparse.Namespace,
    steps: int = STEPS,
    repeats: int = REPEATS,
    max_batch: int = 8,
    load: Callable[[], tuple[float, float, float]] | None = None,
    node: dict[str, Any] | None = None,
) -> Speed:
    """Time LoRA steps and evaluation batches of the sweep's model on this machine, ``repeats`` times ``steps``
    each after a warm-up, and keep the fastest repeat; read the load (``load``: ``os.getloadavg``) meanwhile.

    On CPUs: the threads a trial gets (``--cpus-per-trial``), slots = CPUs / CPUs per trial; the sweep's batch
    (at most ``max_batch`` sequences) at the mean padded length of its tasks' batches. On one CPU thread tokens
    per second rise a little with the tokens a step multiplies (MiniLM-L6: 1,298 tokens/s at 8 × 40, 1,488 at
    32 × 40, 1,377 at 32 × 70), so 8 sequences read a 32-sequence sweep's steps up to ~13 % slow; a 16-sequence
    calibration cost ~2.5 s more per forecast (over the 10-s bar on the development machine), so 8 it stays.
    With ``--gpus-per-trial`` and a GPU here: the sweep's batch on the GPU; slots = the GPUs (``node``: the
    resources Ray declares, else the devices torch sees) / GPUs per trial, at most CPUs / CPUs per trial; trials
    packed on one GPU share it (each at 1/√(trials per GPU) of a trial alone, as the profiles assume)."""
    import torch

    gpus = float(getattr(args, "gpus_per_trial", 0) or 0)
    if gpus > 0 and not torch.cuda.is_available():
        raise ValueError(
            f"--gpus-per-trial {gpus:g}: --forecast local calibrates on this machine, where torch sees no GPU; "
            "forecast GPU trials on a profile of their hardware (--forecast PROFILE, e.g. a100-cluster)"
        )
    device = torch.device("cuda" if gpus > 0 else "cpu")
    threads = max(1, int(args.cpus_per_trial))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # a trial's threads while timing; the caller's count is restored below
    try:
        return _calibrate_timings(args, load, node, steps, repeats, max_batch, gpus, device, threads)
    finally:
        torch.set_num_threads(previous_threads)


def _calibrate_timings(args, load, node, steps, repeats, max_batch, gpus, device, threads) -> Speed:
    import torch
    from transformers import AutoModelForSequenceClassification

    import wlora
    from wlora.engine import Engine
    from wlora.model_source import resolve_model

    t0 = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(args.model), num_labels=2).to(device)
    ctl = wlora.build_method("lora", model, {"r": 8})
    load_s = time.perf_counter() - t0
    eng = Engine(model, ctl, lr=1e-3, total_steps=1 + steps * repeats)
    # at the length the sweep's batches really have (padded to their longest sequence), not max_length: the mean
    # over its tasks (a trial of a longer task runs a little slower per token, a shorter one a little faster)
    lengths = [train_length(normalize_task(t), args) for t in args.tasks]
    train_len = sum(lengths) / len(lengths)
    b, n = (args.batch_size if gpus > 0 else min(args.batch_size, max_batch)), max(8, round(train_len))
    batch = {
        "input_ids": torch.randint(5, model.config.vocab_size, (b, n), device=device),
        "attention_mask": torch.ones(b, n, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (b,), device=device),
    }
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    loads = [machine_load(load)]
    eng.train_step(batch)  # warm-up (train_step returns the loss as a number: the device has finished)
    train_s = time_repeats(lambda: eng.train_step(batch), steps, repeats)
    model.eval()

    def evaluate() -> None:
        with torch.no_grad():
            model(**inputs).logits.sum().item()

    evaluate()  # warm-up
    eval_s = time_repeats(evaluate, 1, repeats)
    loads.append(machine_load(load))
    cores = os.cpu_count() or 1
    slots = max(1, int((args.num_cpus or cores) // args.cpus_per_trial))
    if gpus > 0:
        slots = min(slots, int(float((node or {}).get("GPU") or torch.cuda.device_count()) // gpus))
    slots = max(1, min(slots, args.max_concurrent) if args.max_concurrent else slots)
    # CPU trials on more slots than cores share them: each runs at cores / slots of its calibrated speed
    share, kind, notes = min(1.0, cores / (slots * threads)), "CPU", ()
    if gpus > 0:
        packed = max(1, round(1 / gpus)) if gpus < 1 else 1
        share, kind = 1 / packed**0.5, "GPU"
        if packed > 1:
            notes = (f"  {packed} trials share each GPU: each at 1/√{packed} of a trial alone (assumed, as the "
                     "profiles' default packing slowdown; not measured)",)  # fmt: skip
    readings = [x for x in loads if x is not None]
    where = f"{slots} slots of {gpus:g} GPU" if gpus > 0 else f"{slots} slots of {threads} thread(s)"
    return Speed(
        name=f"this machine, calibrated ({where})",
        slots=slots,
        train_tok_s=b * n / min(train_s) * share,
        eval_tok_s=b * n / min(eval_s) * share,
        # per trial: loading the model (measured) + ~1 s of data, logging and checkpoints (the README's overhead
        # benchmark: from its second trial on, a trial through the sweep costs 0.97-1.22x a plain loop's);
        # once per sweep: ~8 s (Ray, the MLflow store, the first trial process and its imports; same benchmark)
        startup_s=load_s + 1.0,
        sweep_overhead_s=8.0,
        device_kind=kind,
        devices_per_trial=min(gpus, 1.0) if gpus > 0 else 1.0,
        train_repeats=tuple(b * n / s * share for s in train_s),
        eval_repeats=tuple(b * n / s * share for s in eval_s),
        load_1min=max(readings) if readings else None,
        cores=cores,
        own_threads=threads,
        notes=notes,
    )
