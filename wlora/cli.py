"""``python -m wlora.train``: one run from the command line, its result printed as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wlora.data.tasks import list_tasks
from wlora.registry import METHODS, get_method
from wlora.run_config import DEFAULT_MODEL, OBJECTIVE, TrainConfig

_HELP_EXTRA = {
    "method": f"method slug: {', '.join(METHODS)}",
    "task": f"task: {', '.join(list_tasks())}",
    "model": "hub id or local model folder (default: $WLORA_MODEL, else " + DEFAULT_MODEL + ")",
    "data_dir": "folder holding glue/, squad/, xsum/, cnn_dailymail/ (default: $WLORA_DATA_DIR; unset = the hub)",
}


def _field_docs() -> dict[str, str]:
    """Attribute docstrings of TrainConfig (the text after each field), for --help."""
    import ast

    src = inspect.getsource(TrainConfig)
    body = ast.parse(src).body[0].body
    docs: dict[str, str] = {}
    for a, b in itertools.pairwise(body):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wlora.train",
        description="Train one method on one task and print the result as JSON.",
        epilog="Method fields are set with repeated --set KEY=VALUE (e.g. --set r=8 --set k=4 --set t=100); "
        "each method's fields are listed by --list-method-fields METHOD.",
    )
    docs = _field_docs()
    defaults = TrainConfig()
    env_default = {"model": os.environ.get("WLORA_MODEL"), "data_dir": os.environ.get("WLORA_DATA_DIR")}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "method_config":
            continue
        default = env_default.get(f.name) or getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        text = _HELP_EXTRA.get(f.name, docs.get(f.name, f.name.replace("_", " ")))
        if f.name == "cpu":
            p.add_argument(flag, action="store_true", help=text)
            continue
        kind = {"lr": float, "weight_decay": float, "epochs": float, "max_grad_norm": float}.get(f.name)
        if kind is None:
            kind = int if isinstance(getattr(defaults, f.name), int) or f.name.endswith(("steps", "subset")) else str
        if f.name in ("eval_every", "max_steps", "train_subset", "eval_subset"):
            kind = int
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method config field (value parsed as JSON when possible, e.g. r=8, target_modules='[\"query\"]')",
    )
    p.add_argument("--output-dir", help="write result.json, the final checkpoint and a PEFT export here")
    p.add_argument("--resume-from", help="continue from a checkpoint folder (…/checkpoint)")
    p.add_argument("--list-method-fields", metavar="METHOD", help="print METHOD's config fields and exit")
    return p


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_method_fields:
        spec = get_method(args.list_method_fields)
        for f in dataclasses.fields(spec.config_cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            print(f"{f.name} = {default!r}")
        return 0
    values = {k: getattr(args, k) for k in TrainConfig.field_names()}
    method_cfg = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        method_cfg[key.strip()] = _parse_value(raw)
    from wlora.loop import _jsonable, data_kind_exportable, export_from_checkpoint, run_training
    from wlora.modeling import prepare_run

    try:
        cfg = TrainConfig(**values, method_config=method_cfg)
        assets = prepare_run(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def show(metrics: Mapping[str, float]) -> None:
        keys = ["step", "epoch", "train_loss", OBJECTIVE, "active_adapters", "step_time_s"]
        print(" ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics), flush=True)

    result = run_training(cfg, assets=assets, report=show, resume_from=args.resume_from, output_dir=args.output_dir)
    if args.output_dir and result.status == "completed" and data_kind_exportable(assets):
        export_from_checkpoint(cfg, assets, Path(args.output_dir) / "checkpoint", Path(args.output_dir) / "adapter")
    print(json.dumps(_jsonable({"status": result.status, "error": result.error, "metrics": result.metrics}), indent=2))
    return 0 if result.status == "completed" else 1
