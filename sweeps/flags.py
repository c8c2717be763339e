"""Step 1 of a sweep, flags: what an entry script changes (:class:`SweepDefaults`), the command line,
presets (``--preset``: a YAML file of flag defaults, pins and spaces) and ``--smoke-test``.

The flow: :mod:`sweeps.flags` → :mod:`sweeps.plan` (validate everything, build cells) → :mod:`sweeps.run`
(one pool of trial slots for every cell) → :mod:`sweeps.results` (tables, Pareto fronts, adapters).
"""

from __future__ import annotations

import argparse
import copy
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.search_defaults import RACE_DEFAULTS, SEARCH_DEFAULTS
from wlora.data.registry import list_tasks
from wlora.fields import NONE_NOTE, OneLineErrorParser, field_infos, flag_converter, shown_default
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
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"takes a whole number >= 0 or 'auto', got {text!r}")
    return value


def holdout_problem(value: Any) -> str | None:
    """Why ``value`` is no ``--holdout-size`` (a share in (0, 1) or a whole count >= 1), or None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 < value < 1 or value >= 1)
    if ok and (value < 1 or float(value).is_integer()):
        return None
    return f"must be a share in (0, 1) or a whole number of examples >= 1, got {value!r}"


def _holdout_size(text: str) -> float | int:
    try:
        value: float | int = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(holdout_problem(text) or "") from None
    problem = holdout_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem.replace(repr(value), repr(text)))
    return int(value) if value >= 1 else value


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


class SweepParser(OneLineErrorParser, argparse.ArgumentParser):
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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default once, as a user types it (``sst2,rte``, ``none``), unless its help already says
    what the default is (or it has none: an on/off flag, an empty list); the epilog's examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or action.nargs == 0 or default in (None, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: {shown_default(default).replace('%', '%%')})"


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


#: How ``--space`` is written (``sweeps/spaces``), for the help and for messages.
SPACE_FORMS = "loguniform:LO:HI, uniform:LO:HI, int:LO:HI, choice:A,B,… or grid:A,B,… (grid needs --search grid)"


def build_parser(defaults: SweepDefaults, description: str = "") -> argparse.ArgumentParser:
    note = textwrap.fill(NONE_NOTE, 100)
    p = SweepParser(
        prog=f"python sweeps/{defaults.kind}_sweep.py",
        description=f"{description}\n\n{note}" if description else note,
        formatter_class=_HelpFormatter,
        epilog=_epilog(defaults.kind),
    )
    d = defaults
    g = p.add_argument_group("what to sweep")
    g.add_argument("--tasks", type=_csv, default=list(d.tasks), help=f"comma-separated of {', '.join(list_tasks())}")
    g.add_argument("--methods", type=_csv, default=list(d.methods), help=f"comma-separated of {', '.join(METHODS)}")
    g.add_argument(
        "--ranks", type=_csv, default=[str(r) for r in d.ranks], help="ranks r (one cell each); 'search' = search r"
    )
    g.add_argument("--num-samples", type=int, default=d.num_samples, help="trials per cell (grid: repeats)")
    g.add_argument(
        "--search",
        choices=["optuna", "random", "grid"],
        default=None,
        help="optuna (TPE; the default, or the preset's search:), random, or grid",
    )
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
        "--race-top",
        type=int,
        default=RACE_DEFAULTS["top"],
        metavar="M",
        help="race each cell's M best search candidates (by their search score, on the choice split) on extra seeds "
        "before the pick, which is then the best mean; 0 = no race, 0.13-0.19x a grid's trial-epochs saved and no "
        "regret lost measurably on the recorded benchmark (default: 3)",
    )
    g.add_argument(
        "--race-seeds",
        type=int,
        default=RACE_DEFAULTS["seeds"],
        metavar="S",
        help="extra seeds per candidate per round of the race",
    )
    g.add_argument(
        "--race-budget",
        type=int,
        default=None,
        metavar="B",
        help=f"the most race runs per cell (default: M × S × {RACE_DEFAULTS['rounds']})",
    )
    g.add_argument(
        "--race-k",
        type=float,
        default=RACE_DEFAULTS["k"],
        metavar="K",
        help="the race stops when the leader's mean beats the runner-up's by more than K pooled standard errors",
    )
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
        default=0.1,
        type=_holdout_size,
        help="with --protocol heldout only: a share in (0, 1) or a whole number (>= 1) of training examples held "
        "out, stratified by label",
    )
    g.add_argument("--search-seed", type=int, default=0, help="seed of the searcher (TPE / random)")
    g.add_argument(
        "--preset",
        default=None,
        help="a YAML preset file or the name of one in sweeps/presets/ (e.g. paper-table2-small): "
        "search, set, space, methods.<slug>, and cli (defaults for these flags)",
    )
    g.add_argument(
        "--set",
        dest="fixed",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pin a config field (METHOD.KEY: for one method only); `python -m wlora.train --list-method-fields "
        "METHOD` lists each method's fields",
    )
    g.add_argument(
        "--space",
        dest="space",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help=f"search a config field (METHOD.KEY: for one method only); SPEC is {SPACE_FORMS}".replace("%", "%%"),
    )
    g = p.add_argument_group("training (each sets the TrainConfig field of the same meaning for every trial)")
    infos = field_infos(TrainConfig)
    for dest, name in TRAIN_FLAGS.items():
        info = infos[name]
        env = ENV_DEFAULTS.get(name)
        default = d.train.get(name, info.default)
        if env and os.environ.get(env):
            default = os.environ[env]
        text = info.help
        if name == "epochs" and d.train.get("max_steps", infos["max_steps"].default) is not None:
            text = "Training length in epochs (fractions allowed); used only with --max-steps none."
        elif name == "max_steps":
            text = "Training length in optimizer steps; wins over --max-epochs (--max-steps none: train --max-epochs)."
        elif name == "epochs":
            text = "Training length in epochs (fractions allowed); used only while --max-steps is none."
        if env:
            text += f" Default: ${env}, else {shown_default(d.train.get(name, info.default))}."
        else:
            text += f" (default: {shown_default(default)})"
        text = text.replace("%", "%%")
        g.add_argument("--" + dest.replace("_", "-"), type=flag_converter(info.type), default=default, help=text)
    g = p.add_argument_group("where and how")
    g.add_argument("--name", default=None, help=f"run folder name (default: {d.kind}-<timestamp>)")
    g.add_argument("--storage-path", default="runs", help="run folders go here (shared storage on a cluster)")
    g.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI: http(s)://HOST:PORT, sqlite:///PATH, a folder, or a database URI (default: a SQLite "
        "store in the run folder)",
    )
    g.add_argument("--experiment", default=d.experiment, help="MLflow experiment name")
    g.add_argument(
        "--resume", action="store_true", help="continue the sweep --name, or without --name the latest unfinished one"
    )
    g.add_argument(
        "--address", default=None, help="Ray address, 'auto' = the running cluster (default: start a local Ray)"
    )
    g.add_argument("--num-cpus", type=int, default=None, help="local Ray: CPUs to use (default: all)")
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
    g.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials at once (default: as many as the cluster's resources hold)",
    )
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
    g.add_argument("--ray-temp-dir", default=None, help="local Ray's temp folder (default: Ray's own)")
    g.add_argument("--progress-interval", type=float, default=30.0, help="seconds between progress tables")
    g.add_argument(
        "--num-nodes",
        type=int,
        default=None,
        help="expected cluster nodes, for the multi-node checks (default: the live nodes and those `ray up` may add)",
    )
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
    known = sorted(p.stem.replace("_", "-") for p in PRESET_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"--preset {value}: neither a file nor a preset name ({', '.join(known)})")


def read_preset(path: Path) -> dict[str, Any]:
    """A preset file's mapping; one ``ValueError`` naming the file (and line) when it is not valid YAML, or
    not a mapping of sections (each a mapping, ``search:`` aside)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"preset {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"preset {path}{where}: not valid YAML ({problem}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"preset {path}: the top level is a {_yaml_kind(data)}, but a preset is a mapping of sections "
            "(search:, set:, space:, methods:, cli:, …)"
        )
    for key, value in data.items():
        if key != "search" and value is not None and not isinstance(value, dict):
            raise ValueError(f"preset {path}: `{key}:` is a {_yaml_kind(value)}, but it must be a mapping")
    for slug, section in (data.get("methods") or {}).items():
        if slug not in METHODS:
            raise ValueError(f"preset {path}: methods.{slug}: no such method; choose from {', '.join(METHODS)}")
        for key, value in (section or {}).items() if isinstance(section, dict) else [("", section)]:
            if key not in ("set", "space") or (value is not None and not isinstance(value, dict)):
                raise ValueError(f"preset {path}: methods.{slug}: only set: and space: mappings go there")
    return data


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "value")


def apply_preset_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A preset's ``cli:`` section sets flag defaults: a flag given on the command line still wins.

    The flags it set are recorded in ``args.preset_flags`` (``--smoke-test`` does not replace them)."""
    args.preset = resolve_preset(args.preset)
    args.preset_flags = []
    if args.preset is None:
        return
    cli = read_preset(args.preset).get("cli") or {}
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


#: Top-level keys of a preset: ``tasks.<task>.set`` pins fields for one task's cells (e.g. QNLI's
#: ``train_from_dev``); ``claims.<task>`` declares that task's claim margin δ, its reason and a prior seed spread.
PRESET_KEYS = ("search", "set", "space", "methods", "tasks", "claims", "cli")


def load_preset(path: str | Path | None) -> dict[str, Any]:
    path = resolve_preset(path)
    if path is None:
        return {}
    data = read_preset(path)
    unknown = sorted(set(data) - set(PRESET_KEYS))
    if unknown:
        raise ValueError(f"preset {path}: unknown keys {unknown}; valid: {', '.join(PRESET_KEYS)}")
    return data


# ----- what the flags say, checked before anything loads (sweeps.plan calls these) -----


def check_args(args: argparse.Namespace) -> None:
    """The flags that need no model, data or cluster, each refused with one ``ValueError`` naming it:
    ``--seeds``, ``--holdout-size`` (and it without ``--protocol heldout``), ``--gpus-per-trial`` above 1 that
    is not whole, ``--tracking-uri`` (its scheme, and a server that does not answer)."""
    seeds = args.seeds
    if seeds != "auto" and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0):
        raise ValueError(f"--seeds must be a whole number >= 0 or 'auto', got {seeds!r}")
    if getattr(args, "multi_objective", False) and int(getattr(args, "race_top", 0) or 0) >= 2:
        # The race picks one config by its mean score; a multi-objective sweep keeps a Pareto front, not one pick.
        if given(args, "race_top"):
            raise ValueError(
                f"--race-top {args.race_top}: a --multi-objective sweep keeps each cell's Pareto front, not one pick "
                "to race for; leave --race-top out (no race) or drop --multi-objective"
            )
        args.race_top = 0
    race_problem(args)
    if args.protocol == "heldout":
        problem = holdout_problem(args.holdout_size)
        if problem:
            raise ValueError(f"--holdout-size {problem}")
    elif given(args, "holdout_size"):
        raise ValueError(
            f"--holdout-size {args.holdout_size} applies only with --protocol heldout (the protocol is "
            f"{args.protocol}): add --protocol heldout, or leave --holdout-size out"
        )
    gpus = args.gpus_per_trial
    if gpus > 1 and not float(gpus).is_integer():
        raise ValueError(
            f"--gpus-per-trial {gpus:g}: a trial takes a share of one GPU (< 1, packing several trials on it) or a "
            "whole number of GPUs"
        )
    if args.tracking_uri:
        from sweeps.store import check_tracking_uri

        check_tracking_uri(args.tracking_uri)


def race_budget(args: argparse.Namespace) -> int:
    """Race runs per cell at most: ``--race-budget``, else M × S × the default rounds; 0 without a race."""
    top = int(getattr(args, "race_top", 0) or 0)
    if top < 2 or getattr(args, "multi_objective", False):
        return 0  # a multi-objective sweep never races (check_args)
    budget = getattr(args, "race_budget", None)
    seeds = int(getattr(args, "race_seeds", RACE_DEFAULTS["seeds"]))
    return int(budget) if budget is not None else top * seeds * RACE_DEFAULTS["rounds"]


def race_problem(args: argparse.Namespace) -> None:
    """``--race-top`` 0 or >= 2; ``--race-seeds`` >= 1; ``--race-budget`` room for one run per candidate;
    ``--race-k`` >= 0: one ``ValueError`` naming the flag."""
    top = getattr(args, "race_top", 0)
    if top == 1 or top < 0:
        raise ValueError(f"--race-top {top}: 0 (no race) or at least 2 candidates (one candidate races nothing)")
    if getattr(args, "race_seeds", 1) < 1:
        raise ValueError(f"--race-seeds {args.race_seeds}: at least 1 extra seed per candidate per round")
    if top and race_budget(args) < top:
        raise ValueError(f"--race-budget {args.race_budget}: a round needs one run per candidate, at least {top}")
    k = getattr(args, "race_k", 0.0)
    if not k >= 0:
        raise ValueError(f"--race-k {k:g}: a number of standard errors >= 0")


def _domain_values(domain: Any) -> list[Any]:
    """The values a search dimension can take that its field's type must admit: every choice, both bounds."""
    if isinstance(domain, dict) and "grid_search" in domain:
        return list(domain["grid_search"])
    for attr in ("categories",):
        if hasattr(domain, attr):
            return list(getattr(domain, attr))
    if hasattr(domain, "lower") and hasattr(domain, "upper"):
        return [domain.lower, domain.upper]
    return [domain]


def _overrides(args: argparse.Namespace, preset: Mapping[str, Any]) -> list[tuple[str, str, Any, bool]]:
    """Every ``--set``/``--space`` and preset pin or dimension: (as the user wrote it, key, value, is a space)."""
    out = [(f"--set {k}={v}", k, v, False) for k, v in args.fixed]
    out += [(f"--space {k}={v}", k, v, True) for k, v in args.space]
    where = f"preset {args.preset}:"
    for section, is_space in (("set", False), ("space", True)):
        out += [(f"{where} {section}.{k}", str(k), v, is_space) for k, v in (preset.get(section) or {}).items()]
        for slug, sec in (preset.get("methods") or {}).items():
            for k, v in ((sec or {}).get(section) or {}).items():
                out.append((f"{where} methods.{slug}.{section}.{k}", f"{slug}.{k}", v, is_space))
    return out


def check_overrides(args: argparse.Namespace, preset: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Every field a ``--set``/``--space`` (or the preset) names exists for the methods it applies to, and every
    value it gives (each choice, both bounds) has the field's type; one ``ValueError`` naming what was typed.

    ``skip``: fields whose pins other checks answer better (the flag to use instead, the rank)."""
    import difflib

    from sweeps import spaces as sp
    from wlora.fields import parse_field_value, type_problem

    train = field_infos(TrainConfig)
    methods = [m for m in args.methods if m in METHODS]
    for shown, key, value, is_space in _overrides(args, preset):
        scope, _, name = key.rpartition(".")
        if scope and scope not in METHODS:
            raise ValueError(f"{shown}: {scope!r} is not a method; choose from {', '.join(METHODS)}")
        if name in skip:
            continue
        applies = [scope] if scope else methods
        if name in train:
            infos = [train[name]]
        else:
            fields = {m: field_infos(METHODS[m].config_cls) for m in applies}
            lacking = [m for m in applies if name not in fields[m]]
            if lacking:
                settable = [f for f in train if f not in skip and f != "method_config"]
                known = sorted({f for m in applies for f in fields[m]} | set(settable))
                close = difflib.get_close_matches(name, [k for k in known if k != name], n=1)
                others = [m for m in METHODS if name in field_infos(METHODS[m].config_cls)]
                hint = f" Did you mean {close[0]}?" if close else ""
                if others:
                    hint += f" ({name} is a field of {', '.join(others)}: write {others[0]}.{name}=… for one method)"
                lists = "; ".join(f"{m}: {', '.join(fields[m])}" for m in lacking)
                raise ValueError(
                    f"{shown}: {name} is not a config field of {' or '.join(lacking)}.{hint} Fields of {lists}; "
                    f"training: {', '.join(settable)}"
                )
            infos = [fields[m][name] for m in applies]
        if is_space and sp.is_domain_spec(value):
            try:
                values = _domain_values(sp.parse_domain(value))
            except ValueError as e:
                raise ValueError(f"{shown}: {e}; SPEC is {SPACE_FORMS}") from None
        else:
            method = applies[0] if applies and name not in train else None
            values = [parse_field_value(name, value, method) if isinstance(value, str) else value]
        for info in infos:
            for v in values:
                want = type_problem(info.type, v)
                if want is not None:
                    hint = f"; a search dimension is {SPACE_FORMS}" if is_space and not sp.is_domain_spec(value) else ""
                    raise ValueError(f"{shown}: {name} must be {want}, got {v!r}{hint}")
