"""Step 1 of a sweep, flags: what an entry script changes (:class:`SweepDefaults`), the command line,
presets (``--preset``: a YAML file of flag defaults, pins and spaces) and ``--smoke-test``.

The flow: :mod:`sweeps.flags` → :mod:`sweeps.plan` (validate everything, build cells) → :mod:`sweeps.run`
(one pool of trial slots for every cell) → :mod:`sweeps.results` (tables, Pareto fronts, adapters).
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.search_defaults import SEARCH_DEFAULTS
from wlora.fields import field_infos, flag_converter
from wlora.registry import METHODS
from wlora.run_config import TrainConfig

#: The TrainConfig fields a sweep sets for every trial from a flag of its own: flag dest → field. The one
#: home of that mapping: the parser builds these flags from the fields (help text and default from the
#: field's metadata, unless the entry script sets another default), and the plan maps them back.
TRAIN_FLAGS = {
    "model": "model",
    "data_dir": "data_dir",
    "max_epochs": "epochs",
    "max_steps": "max_steps",
    "eval_every": "eval_every",
    "max_length": "max_length",
    "batch_size": "batch_size",
    "train_subset": "train_subset",
    "eval_subset": "eval_subset",
}
#: Environment variables that supply a default for a training flag.
ENV_DEFAULTS = {"model": "WLORA_MODEL", "data_dir": "WLORA_DATA_DIR"}


def flag_of(field_name: str) -> str:
    """The sweep flag that sets TrainConfig field ``field_name`` (``epochs`` → ``--max-epochs``)."""
    dest = next(d for d, f in TRAIN_FLAGS.items() if f == field_name)
    return "--" + dest.replace("_", "-")


@dataclass(frozen=True)
class SweepDefaults:
    """What an entry script changes: its task family's defaults.

    ``train`` holds the TrainConfig fields (by field name, e.g. ``max_steps``) whose sweep default differs
    from TrainConfig's own; ``smoke`` the flag values (by flag dest) and pins of ``--smoke-test``."""

    kind: str
    experiment: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = ("lora", "weightlora")
    ranks: tuple[int, ...] = (8,)
    num_samples: int = 8
    train: Mapping[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _seeds(text: str) -> int | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a number or 'auto', got {text!r}") from None


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


class SweepParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that records which flags the command line actually gave.

    ``args.given_flags`` (sorted dests) is what precedence reads — explicit flag > preset > ``--smoke-test``
    > default — so a typed value equal to the default still wins (``--smoke-test --tasks sst2`` runs SST-2).
    Every dest starts as a sentinel that argparse leaves alone unless the flag is parsed; the sentinels
    left afterwards become the defaults.
    """

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns = namespace if namespace is not None else argparse.Namespace()
        appended: dict[str, int] = {}
        for action in self._actions:
            dest = action.dest
            if dest == argparse.SUPPRESS or hasattr(ns, dest):
                continue
            if isinstance(action, argparse._AppendAction):
                start = list(action.default or [])
                setattr(ns, dest, start)
                appended[dest] = len(start)
            else:
                setattr(ns, dest, _UNSET)
        ns, rest = super().parse_known_args(args, ns)
        given = set(getattr(ns, "given_flags", ()) or ())
        for action in self._actions:
            dest = action.dest
            if dest == argparse.SUPPRESS:
                continue
            value = getattr(ns, dest, _UNSET)
            if value is _UNSET:
                default = action.default
                if isinstance(default, str) and action.type is not None and callable(action.type):
                    default = action.type(default)
                setattr(ns, dest, copy.copy(default))
            elif dest not in appended or len(value) > appended[dest]:
                given.add(dest)
        ns.given_flags = sorted(given)
        return ns, rest


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the command line gave the flag ``dest`` (not a preset, ``--smoke-test`` or a default)."""
    return dest in (getattr(args, "given_flags", None) or ())


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every flag's help, and the epilog's examples kept as written."""


def _epilog(kind: str) -> str:
    script = f"python sweeps/{kind}_sweep.py"
    preset = "paper-table2-small" if kind == "glue" else "my_preset.yaml"
    lines = [
        (f"{script} --smoke-test", "tiny settings: minutes on a laptop"),
        (f"{script} --preset {preset}", "a YAML preset (by name: sweeps/presets/)"),
        (f"{script} --resume", "continue the latest interrupted sweep"),
        (
            f"{script} --address auto --storage-path s3://bucket/runs --tracking-uri http://mlflow:5000",
            "on a cluster brought up with `ray up cluster.yaml`",
        ),
    ]
    width = max(len(cmd) for cmd, _ in lines[:3])
    text = "examples:\n"
    for cmd, what in lines:
        text += f"  {cmd.ljust(width)}  # {what}\n" if len(cmd) <= width else f"  {cmd}\n  {'':{width}}  # {what}\n"
    return text + (
        "\nenvironment:\n"
        "  WLORA_MODEL      default of --model: a local model folder or a hub id\n"
        "  WLORA_DATA_DIR   default of --data-dir: a folder holding glue/, squad/, xsum/, …\n"
    )


def build_parser(defaults: SweepDefaults, description: str = "") -> argparse.ArgumentParser:
    p = SweepParser(description=description, formatter_class=_HelpFormatter, epilog=_epilog(defaults.kind))
    d = defaults
    g = p.add_argument_group("what to sweep")
    g.add_argument("--tasks", type=_csv, default=list(d.tasks), help="comma-separated tasks")
    g.add_argument("--methods", type=_csv, default=list(d.methods), help=f"comma-separated of {', '.join(METHODS)}")
    g.add_argument(
        "--ranks", type=_csv, default=[str(r) for r in d.ranks], help="ranks r (one cell each); 'search' = search r"
    )
    g.add_argument("--num-samples", type=int, default=d.num_samples, help="trials per cell (grid: repeats)")
    g.add_argument("--search", choices=["optuna", "random", "grid"], default=None, help="default optuna")
    g.add_argument("--no-asha", action="store_true", help="run every trial to its full budget")
    g.add_argument(
        "--grace-period",
        type=int,
        default=SEARCH_DEFAULTS["grace_period"],
        help="ASHA: evaluations before the first cut",
    )
    g.add_argument(
        "--reduction-factor",
        type=float,
        default=SEARCH_DEFAULTS["reduction_factor"],
        help="ASHA: keep 1/factor at each rung",
    )
    g.add_argument("--multi-objective", action="store_true", help="maximise the metric, minimise params %%")
    g.add_argument(
        "--seeds",
        type=_seeds,
        default=0,
        help="re-run each cell's best config with N seeds; 'auto' = add seeds to the cells behind the claims still "
        "undecided until each has a verdict or --max-seeds (sweeps/claims.py states the sequential rule)",
    )
    g.add_argument("--max-seeds", type=int, default=10, help="--seeds auto: the most seed re-runs per cell")
    g.add_argument(
        "--protocol",
        choices=["papers", "heldout"],
        default="papers",
        help="heldout: the search, ASHA and the best config are scored on a validation split held out of the "
        "training data (--holdout-size), the seed re-runs train on the rest and report on dev; papers: dev both "
        "chooses and reports",
    )
    g.add_argument(
        "--holdout-size",
        type=float,
        default=0.1,
        help="--protocol heldout: share (< 1) or number (>= 1) of training examples held out, stratified by label",
    )
    g.add_argument("--search-seed", type=int, default=0, help="seed of the searcher (TPE / random)")
    g.add_argument(
        "--preset",
        default=None,
        help="a YAML preset file or the name of one in sweeps/presets/ (e.g. paper-table2-small): "
        "search, set, space, methods.<slug>, and cli (defaults for these flags)",
    )
    g.add_argument("--set", dest="fixed", type=_kv, action="append", default=[], help="pin a config field: KEY=VALUE")
    g.add_argument("--space", dest="space", type=_kv, action="append", default=[], help="KEY=SPEC (see sweeps.spaces)")
    g = p.add_argument_group("training (each sets the TrainConfig field of the same meaning for every trial)")
    infos = field_infos(TrainConfig)
    for dest, name in TRAIN_FLAGS.items():
        info = infos[name]
        env = ENV_DEFAULTS.get(name)
        default = d.train.get(name, info.default)
        if env and os.environ.get(env):
            default = os.environ[env]
        text = info.help.replace("%", "%%")
        if env:
            text += f" Default: ${env}, else %(default)s."
        g.add_argument("--" + dest.replace("_", "-"), type=flag_converter(info.type), default=default, help=text)
    g = p.add_argument_group("where and how")
    g.add_argument("--name", default=None, help="run folder name (default <kind>-<timestamp>)")
    g.add_argument("--storage-path", default="runs", help="run folders go here (shared storage on a cluster)")
    g.add_argument("--tracking-uri", default=None, help="MLflow URI (default sqlite store in the run folder)")
    g.add_argument("--experiment", default=d.experiment, help="MLflow experiment name")
    g.add_argument("--resume", action="store_true", help="continue the sweep --name (default: latest unfinished)")
    g.add_argument("--address", default=None, help="Ray address ('auto' = the running cluster); default local")
    g.add_argument("--num-cpus", type=int, default=None, help="local Ray: CPUs to use (default all)")
    g.add_argument(
        "--num-gpus",
        type=int,
        default=None,
        help="local Ray: GPUs to declare (default: those Ray detects); more than the machine has only to test packing",
    )
    g.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each trial reserves (fractions allowed)")
    g.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="GPUs each trial reserves; a fraction packs several trials on one GPU (0.25: four per GPU), each "
        "trial using only the device Ray assigned it",
    )
    g.add_argument("--max-concurrent", type=int, default=None, help="default: from the cluster's resources")
    g.add_argument("--no-reuse-actors", action="store_true", help="fresh worker process per trial")
    g.add_argument(
        "--max-failures",
        type=int,
        default=1,
        help="retries of a crashed trial (worker killed, out of memory, …) from its last checkpoint",
    )
    g.add_argument(
        "--memory-per-trial",
        type=float,
        default=None,
        help="GiB of memory each trial reserves from Ray (default: estimated from the model size, batch and length)",
    )
    g.add_argument("--ray-temp-dir", default=None, help="local Ray's temp folder")
    g.add_argument("--progress-interval", type=float, default=30.0, help="seconds between progress tables")
    g.add_argument("--num-nodes", type=int, default=None, help="expected cluster nodes (multi-node checks)")
    g.add_argument("--smoke-test", action="store_true", help="tiny settings: finishes in minutes on a laptop")
    g.add_argument("--dry-run", action="store_true", help="check everything and print the resolved plan; start nothing")
    g.add_argument(
        "--forecast",
        nargs="?",
        const="local",
        default=None,
        metavar="PROFILE",
        help="print the sweep's expected trials, device-hours and makespan (and the papers' grid's) and start nothing: "
        "'local' (default) calibrates on this machine; PROFILE = a YAML file or a name in sweeps/profiles/ "
        "(e.g. a100-cluster)",
    )
    g.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's, Tune's and MLflow's own output and the trial processes' logs",
    )
    return p


PRESET_DIR = Path(__file__).resolve().parent / "presets"


def resolve_preset(value: str | Path | None) -> Path | None:
    """A preset file path as given, else ``sweeps/presets/<value>.yaml`` (the name, ``-``/``_`` alike)."""
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    for name in {str(value), str(value).replace("-", "_"), str(value).replace("_", "-")}:
        candidate = PRESET_DIR / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"preset {value!r} is neither a file nor one of {known}")


def apply_preset_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A preset's ``cli:`` section sets flag defaults: a flag given on the command line still wins.

    The flags it set are recorded in ``args.preset_flags`` (``--smoke-test`` does not replace them)."""
    args.preset = resolve_preset(args.preset)
    args.preset_flags = []
    if args.preset is None:
        return
    cli = (yaml.safe_load(args.preset.read_text()) or {}).get("cli") or {}
    for key, value in cli.items():
        dest = key.replace("-", "_")
        if not hasattr(args, dest) or dest in ("preset", "resume"):
            raise ValueError(f"preset {args.preset}: cli.{key} is not a sweep flag")
        if not given(args, dest):
            args.preset_flags.append(dest)
            if dest in ("tasks", "methods", "ranks") and not isinstance(value, list):
                value = [v.strip() for v in str(value).split(",") if v.strip()]
            elif isinstance(value, str):
                # read as the flag reads its text (``max_steps: none`` → None, ``lr: "1e-3"`` → 0.001)
                kind = next((a.type for a in parser._actions if a.dest == dest), None)
                value = kind(value) if callable(kind) else value
            setattr(args, dest, value)


def apply_smoke(args: argparse.Namespace, defaults: SweepDefaults, parser: argparse.ArgumentParser) -> None:
    """``--smoke-test``: tiny settings for every flag that neither the command line nor the preset set;
    its pins come before the user's ``--set`` (which win)."""
    if not args.smoke_test:
        return
    preset = set(getattr(args, "preset_flags", None) or ())
    for key, value in defaults.smoke.items():
        if key == "fixed":
            args.fixed = [*value, *args.fixed]
        elif not given(args, key) and key not in preset:
            setattr(args, key, copy.copy(value))


def load_preset(path: str | Path | None) -> dict[str, Any]:
    path = resolve_preset(path)
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - {"search", "set", "space", "methods", "cli"})
    if unknown:
        raise ValueError(f"preset {path}: unknown keys {unknown}; valid: search, set, space, methods, cli")
    return data
