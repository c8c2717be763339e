"""What one trial asks of the cluster — CPUs, GPUs and memory — and whether any node can ever give it.

Memory is declared to Ray per trial (``--memory-per-trial`` GiB, else an estimate from the model's size,
the batch and the sequence length), so Ray starts no more trials on a node than its memory holds, instead
of its memory monitor killing trials mid-run. A request no node can satisfy would leave every trial
PENDING forever (Ray's autoscaler only logs it): that is one error before anything starts.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GIB = 2**30
#: A trial process before its model: Python, torch, transformers, the Ray worker (measured ~0.9 GiB RSS).
RUNTIME_BYTES = int(1.0 * GIB)
#: Activation bytes per (token × hidden unit × layer) in training, fp32, with the attention matrices and
#: the saved-for-backward tensors of a BERT-style block (an upper-end rule of thumb).
ACTIVATION_FACTOR = 4 * 24


def _weight_bytes(model_dir: Path) -> int:
    files = list(model_dir.glob("*.safetensors")) or list(model_dir.glob("pytorch_model*.bin"))
    return sum(p.stat().st_size for p in files)


def estimate_trial_memory(model_dir: str | os.PathLike[str], batch_size: int, max_length: int, full: bool) -> int:
    """Bytes a training trial needs: runtime + weights (×4 for full fine-tuning: gradients and Adam's two
    moments; ×1.3 for adapters) + activations of one batch."""
    model_dir = Path(model_dir)
    weights = _weight_bytes(model_dir)
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    hidden = int(cfg.get("hidden_size") or cfg.get("d_model") or 768)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("num_layers") or 12)
    acts = batch_size * max_length * hidden * layers * ACTIVATION_FACTOR
    return int(RUNTIME_BYTES + weights * (4.0 if full else 1.3) + acts)


def trial_memory(args: argparse.Namespace, model_dirs: Iterable[str], methods: Iterable[str]) -> int:
    """The memory each trial declares to Ray: ``--memory-per-trial`` GiB, else the largest estimate over
    the sweep's models (full fine-tuning if any cell runs it)."""
    if getattr(args, "memory_per_trial", None):
        return int(args.memory_per_trial * GIB)
    full = "full" in set(methods)
    return max(
        (estimate_trial_memory(d, args.batch_size, args.max_length, full) for d in set(model_dirs)),
        default=RUNTIME_BYTES,
    )


def _autoscaler_node_types() -> list[dict[str, float]]:
    """Resources of the node types the cluster launcher may still add (``ray up``'s config on the head)."""
    from sweeps.cluster_checks import BOOTSTRAP_CONFIG

    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return []
    try:
        import yaml

        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError):
        return []
    return [dict(t.get("resources") or {}) for t in (cfg.get("available_node_types") or {}).values()]


def planned_nodes(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The nodes a sweep on local Ray will have, known before Ray starts: this machine as Ray will declare it
    (``--num-cpus`` / ``--num-gpus``, else what Ray detects; its memory less the object store), plus the node
    types ``ray up``'s config may add. None with ``--address``: only the running cluster knows its nodes."""
    if getattr(args, "address", None):
        return None
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        spec = ResourceAndLabelSpec(num_cpus=args.num_cpus or None, num_gpus=getattr(args, "num_gpus", None))
        node = dict(spec.resolve(is_head=True, node_ip_address="127.0.0.1").to_resource_dict())
    except (ImportError, AttributeError, TypeError):  # another Ray: what the machine has
        node = {"CPU": float(args.num_cpus or os.cpu_count() or 1), "GPU": float(getattr(args, "num_gpus", 0) or 0)}
    return [node, *_autoscaler_node_types()]


def check_resources(args: argparse.Namespace, memory_bytes: int, nodes: list[dict[str, Any]] | None = None) -> None:
    """Raise ``ValueError`` (one line) when no node of the cluster — alive now, or a type the autoscaler may
    add — offers a trial's CPUs, GPUs and memory together."""
    if nodes is None:
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        nodes += _autoscaler_node_types()
    cpus, gpus = args.cpus_per_trial, args.gpus_per_trial
    for res in nodes:
        if res.get("CPU", 0) >= cpus and res.get("GPU", 0) >= gpus and res.get("memory", float("inf")) >= memory_bytes:
            return
    biggest = {k: max((n.get(k, 0) for n in nodes), default=0) for k in ("CPU", "GPU", "memory")}
    if biggest["CPU"] < cpus:
        what = f"--cpus-per-trial {cpus:g}: no node has that many CPUs (the largest has {biggest['CPU']:g})"
    elif biggest["GPU"] < gpus:
        what = f"--gpus-per-trial {gpus:g}: no node has that many GPUs (the largest has {biggest['GPU']:g})"
    elif biggest["memory"] < memory_bytes:
        what = (
            f"each trial needs {memory_bytes / GIB:.1f} GiB of memory (--memory-per-trial, else estimated from the "
            f"model and batch) but no node offers Ray more than {biggest['memory'] / GIB:.1f} GiB"
        )
    else:
        what = f"no single node has {cpus:g} CPUs, {gpus:g} GPUs and {memory_bytes / GIB:.1f} GiB together"
    raise ValueError(f"{what}; no trial could ever start")


def pool_slots(args: argparse.Namespace, n_trials: int) -> int:
    """Trials the cluster runs at once (``--max-concurrent``, else its CPUs / GPUs per trial), at most the
    number of trials the sweep will ever have in flight."""
    import ray

    if args.max_concurrent:
        return args.max_concurrent
    res = ray.cluster_resources()
    fits = int(res.get("CPU", 1) // args.cpus_per_trial)
    if args.gpus_per_trial > 0:
        fits = min(fits, int(res.get("GPU", 0) // args.gpus_per_trial))
    return max(1, min(fits, n_trials))
