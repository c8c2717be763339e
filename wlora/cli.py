"""``python -m wlora.train``: one run from the command line, its result printed as JSON.

Flags and their help come from :class:`~wlora.run_config.TrainConfig`'s fields; method fields are set
with ``--set KEY=VALUE`` and listed, with defaults and help, by ``--list-method-fields``. Everything
that can be checked without the model — flags, the method config, the data folder, the model
folder — is checked before torch is imported, so ``--help`` and bad input answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wlora.data.layout import locate_task_files
from wlora.data.tasks import list_tasks
from wlora.fields import (
    NONE_NOTE,
    OneLineErrorParser,
    field_infos,
    flag_converter,
    format_fields,
    parse_field_value,
    shown_default,
)
from wlora.model_source import check_model_source
from wlora.registry import METHODS, get_method
from wlora.run_config import OBJECTIVE, TrainConfig

#: Flags whose help says more than the field's (choices, environment defaults).
_HELP_EXTRA = {
    "method": f"method slug: {', '.join(METHODS)}",
    "task": f"task: {', '.join(list_tasks())}",
    "model": "hub id or local model folder",
}
_ENV_DEFAULTS = {"model": "WLORA_MODEL", "data_dir": "WLORA_DATA_DIR"}


class _Parser(OneLineErrorParser, argparse.ArgumentParser):
    """One line (and a hint) for a bad flag, not the whole usage."""


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m wlora.train",
        description=f"Train one method on one task and print the result as JSON. {NONE_NOTE}",
        epilog="Method fields are set with repeated --set KEY=VALUE (e.g. --set r=8 --set k=4 "
        "--set target_modules=query,value); --list-method-fields METHOD prints each field's default and help. "
        "--data-dir may hold glue/<TASK>/, the task folders directly (glue_data/RTE/...), or be the task folder.",
    )
    for info in field_infos(TrainConfig).values():
        if info.name == "method_config":
            continue
        env = os.environ.get(_ENV_DEFAULTS.get(info.name, ""), "")
        default = env or info.default
        flag = "--" + info.name.replace("_", "-")
        text = _HELP_EXTRA.get(info.name, info.help)
        if info.type is bool:
            p.add_argument(flag, action="store_true", help=text)
            continue
        choices = typing.get_args(info.type) if typing.get_origin(info.type) is typing.Literal else None
        if env:
            text += f" (default: ${_ENV_DEFAULTS[info.name]}={env})"
        elif info.name in _ENV_DEFAULTS:
            text += f" (default: {shown_default(default)}; ${_ENV_DEFAULTS[info.name]} sets another)"
        else:
            text += f" (default: {shown_default(default)})"
        p.add_argument(flag, type=flag_converter(info.type), default=default, choices=choices, help=text)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method config field; lists as a comma list or JSON (target_modules=query,value), "
        "numbers and true/false/none as usual",
    )
    p.add_argument("--output-dir", help="write result.json, the final checkpoint and a PEFT export here")
    p.add_argument("--resume-from", help="continue from a checkpoint folder (…/checkpoint)")
    p.add_argument(
        "--list-method-fields",
        metavar="METHOD",
        help="print METHOD's config fields with their defaults and help, then exit ('all' for every method)",
    )
    return p


def list_method_fields(slug: str) -> str:
    """The text of ``--list-method-fields``: each field's default, type and help."""
    slugs = list(METHODS) if slug == "all" else [get_method(slug).slug]
    blocks = []
    for s in slugs:
        spec = METHODS[s]
        run = f"\n(filled in by the run when unset: {', '.join(spec.run_fields)})" if spec.run_fields else ""
        blocks.append(f"# {s}: {spec.summary}{run}\n{format_fields(spec.config_cls)}")
    return "\n\n".join(blocks)


def _config(args: argparse.Namespace) -> TrainConfig:
    """The validated run config (raises ``ValueError`` naming the bad field)."""
    method_cfg: dict[str, Any] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        method_cfg[key.strip()] = parse_field_value(key.strip(), raw, args.method)
    values = {k: getattr(args, k) for k in TrainConfig.field_names()}
    return TrainConfig(**values, method_config=method_cfg)


def check_output_dir(output_dir: str | None) -> None:
    """``--output-dir`` must be a folder this process can write (checked before training, not at the end)."""
    if not output_dir:
        return
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".wlora-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--output-dir {output_dir} is not writable ({e.strerror or e})") from None


def check_resume_from(resume_from: str | None) -> None:
    if resume_from and not Path(resume_from).is_dir():
        raise ValueError(f"--resume-from {resume_from} is not a checkpoint folder")


def check_inputs(cfg: TrainConfig) -> None:
    """What can be checked without loading anything: the model folder and the data files."""
    check_model_source(cfg.model)
    locate_task_files(
        cfg.task,
        cfg.data_dir,
        eval_split="dev" if cfg.eval_split == "holdout" else cfg.eval_split,  # held-out rows come from train
        train_file=cfg.train_file,
        eval_file=cfg.eval_file,
        need_train=not cfg.train_from_dev,
    )


def _as_flags(message: str) -> str:
    """A config error as the user typed it: ```eval_split``` → ``--eval-split``, a method field → ``--set k``."""
    own = set(TrainConfig.field_names())

    def flag(m: re.Match) -> str:
        name = m.group(1)
        return f"--{name.replace('_', '-')}" if name in own else f"--set {name}"

    return re.sub(r"`(\w+)`", flag, message)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.list_method_fields:
            print(list_method_fields(args.list_method_fields))
            return 0
        cfg = _config(args)
        check_output_dir(args.output_dir)
        check_resume_from(args.resume_from)
        check_inputs(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {_as_flags(str(e))}", file=sys.stderr)
        return 2

    # Only now does a run start: torch, transformers and peft load here.
    from wlora.loop import data_kind_exportable, export_from_checkpoint, jsonable, read_checkpoint, run_training
    from wlora.modeling import prepare_run

    try:
        if args.resume_from:
            read_checkpoint(args.resume_from, cfg)  # before the data and model load: one line if unusable
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
    print(json.dumps(jsonable({"status": result.status, "error": result.error, "metrics": result.metrics}), indent=2))
    return 0 if result.status == "completed" else 1
