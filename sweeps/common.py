"""The sweep machinery every entry script shares: CLI → validated plan → one Tuner per cell → table.

A *cell* is one (task, method, rank). Each cell is its own Tune experiment (``<run>/<cell>/``) with
its own seeded searcher, because TPE must not mix tasks whose metrics live on different scales or
methods whose spaces differ. Cells run one after another on the same Ray cluster; inside a cell,
``max_concurrent_trials`` follows from the cluster's resources and actors are reused.

Everything a user can get wrong is checked by :func:`plan_sweep` before Ray starts (unknown
task / method / config key, K out of range, missing data or model, unreachable tracking URI,
an existing run folder without ``--resume``), each with one clear error.

Run folder ``<storage-path>/<name>/``: ``sweep_state.json`` (settings, parent run id, finished
cells — what ``--resume`` continues from), ``mlflow.db`` + ``mlartifacts/`` (embedded tracking),
one Tune experiment per cell, ``adapters/``, ``results/table.{md,csv}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps import spaces as sp
from sweeps.search import EarlyStopLedger, make_scheduler, make_searcher
from sweeps.table import write_tables
from sweeps.tracking import (
    MlflowTrialCallback,
    ProgressTable,
    check_tracking_uri,
    default_tracking_uri,
    get_experiment_id,
    git_commit,
    log_params,
)
from trainables import FINAL_KEY, get_trainable
from wlora.registry import METHODS, make_config
from wlora.train import DEFAULT_MODEL, OBJECTIVE, TrainConfig, export_from_checkpoint, prepare_run

logger = logging.getLogger("sweeps")

STATE_FILE = "sweep_state.json"
#: Secondary objective of ``--multi-objective`` (minimised) and the results table's "Params %": the share of the
#: base model trained besides the task head (which every method trains), as the papers count # Params.
PARAMS_METRIC = "method_pct"


@dataclass(frozen=True)
class SweepDefaults:
    """What an entry script changes: its task family's defaults."""

    kind: str
    experiment: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = ("lora", "weightlora")
    ranks: tuple[int, ...] = (8,)
    num_samples: int = 8
    max_epochs: float = 3.0
    max_steps: int | None = None
    eval_every: int | None = None
    max_length: int = 128
    batch_size: int = 32
    train_subset: int | None = None
    eval_subset: int | None = None
    smoke: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    rank: int | None

    @property
    def name(self) -> str:
        return f"{self.task}-{self.method}" + (f"-r{self.rank}" if self.rank is not None else "")


# --------------------------------------------------------------------------------------------------
# CLI


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _opt_int(text: str) -> int | None:
    """An integer, or ``none`` for "not set" (e.g. ``--max-steps none`` trains by ``--max-epochs``)."""
    return None if text.strip().lower() in ("none", "null", "") else int(text)


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def build_parser(defaults: SweepDefaults, description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    g.add_argument("--grace-period", type=int, default=1, help="ASHA: evaluations before the first cut")
    g.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA: keep 1/factor at each rung")
    g.add_argument("--multi-objective", action="store_true", help="maximise the metric, minimise params %%")
    g.add_argument("--seeds", type=int, default=0, help="re-run each cell's best config with N seeds")
    g.add_argument("--search-seed", type=int, default=0, help="seed of the searcher (TPE / random)")
    g.add_argument(
        "--preset",
        default=None,
        help="a YAML preset file or the name of one in sweeps/presets/ (e.g. paper-table2-small): "
        "search, set, space, methods.<slug>, and cli (defaults for these flags)",
    )
    g.add_argument("--set", dest="fixed", type=_kv, action="append", default=[], help="pin a config field: KEY=VALUE")
    g.add_argument("--space", dest="space", type=_kv, action="append", default=[], help="KEY=SPEC (see sweeps.spaces)")
    g = p.add_argument_group("training")
    g.add_argument("--model", default=os.environ.get("WLORA_MODEL", DEFAULT_MODEL), help="hub id or local folder")
    g.add_argument("--data-dir", default=os.environ.get("WLORA_DATA_DIR"), help="folder holding glue/, squad/, …")
    g.add_argument("--max-epochs", type=float, default=d.max_epochs)
    g.add_argument(
        "--max-steps", type=_opt_int, default=d.max_steps, help="overrides --max-epochs; none = train by epochs"
    )
    g.add_argument(
        "--eval-every", type=_opt_int, default=d.eval_every, help="steps between evaluations; none = every epoch"
    )
    g.add_argument("--max-length", type=int, default=d.max_length)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--train-subset", type=_opt_int, default=d.train_subset)
    g.add_argument("--eval-subset", type=_opt_int, default=d.eval_subset)
    g = p.add_argument_group("where and how")
    g.add_argument("--name", default=None, help="run folder name (default <kind>-<timestamp>)")
    g.add_argument("--storage-path", default="runs", help="run folders go here (shared storage on a cluster)")
    g.add_argument("--tracking-uri", default=None, help="MLflow URI (default sqlite store in the run folder)")
    g.add_argument("--experiment", default=d.experiment, help="MLflow experiment name")
    g.add_argument("--resume", action="store_true", help="continue the sweep --name (default: latest unfinished)")
    g.add_argument("--address", default=None, help="Ray address ('auto' = the running cluster); default local")
    g.add_argument("--num-cpus", type=int, default=None, help="local Ray: CPUs to use (default all)")
    g.add_argument("--cpus-per-trial", type=float, default=1.0)
    g.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions allowed, e.g. 0.5")
    g.add_argument("--max-concurrent", type=int, default=None, help="default: from the cluster's resources")
    g.add_argument("--no-reuse-actors", action="store_true", help="fresh worker process per trial")
    g.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial from its checkpoint")
    g.add_argument("--ray-temp-dir", default=None, help="local Ray's temp folder")
    g.add_argument("--progress-interval", type=float, default=30.0, help="seconds between progress tables")
    g.add_argument("--num-nodes", type=int, default=None, help="expected cluster nodes (multi-node checks)")
    g.add_argument("--smoke-test", action="store_true", help="tiny settings: finishes in minutes on a laptop")
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
    """A preset's ``cli:`` section sets flag defaults: a flag given on the command line still wins."""
    args.preset = resolve_preset(args.preset)
    if args.preset is None:
        return
    cli = (yaml.safe_load(args.preset.read_text()) or {}).get("cli") or {}
    for key, value in cli.items():
        dest = key.replace("-", "_")
        if not hasattr(args, dest) or dest in ("preset", "resume"):
            raise ValueError(f"preset {args.preset}: cli.{key} is not a sweep flag")
        if getattr(args, dest) == parser.get_default(dest):
            if dest in ("tasks", "methods", "ranks") and not isinstance(value, list):
                value = [v.strip() for v in str(value).split(",") if v.strip()]
            setattr(args, dest, value)


def apply_smoke(args: argparse.Namespace, defaults: SweepDefaults, parser: argparse.ArgumentParser) -> None:
    """``--smoke-test``: tiny settings wherever the user did not pass the flag; pins are merged."""
    if not args.smoke_test:
        return
    for key, value in defaults.smoke.items():
        if key == "fixed":
            args.fixed = [*value, *args.fixed]
        elif getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)


# --------------------------------------------------------------------------------------------------
# Plan: everything validated before Ray starts


@dataclass
class Plan:
    args: argparse.Namespace
    kind: str
    run_dir: Path
    tracking_uri: str
    cells: list[Cell]
    spaces: dict[str, dict[str, Any]]
    fixed: dict[str, dict[str, Any]]
    search: str
    assets: dict[str, Any]
    planned_evals: dict[str, int]
    settings: dict[str, Any]
    state: dict[str, Any]
    tune_storage: str = ""
    """Where Tune keeps this sweep's experiments and checkpoints: ``run_dir``, or ``<URI>/<name>`` when
    ``--storage-path`` is a cloud/shared URI (s3://, gs://, …) — the driver's own files (state, tables,
    adapters, the default MLflow store) then stay in a local ``runs/<name>`` folder."""


def _load_preset(path: str | Path | None) -> dict[str, Any]:
    path = resolve_preset(path)
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - {"search", "set", "space", "methods", "cli"})
    if unknown:
        raise ValueError(f"preset {path}: unknown keys {unknown}; valid: search, set, space, methods, cli")
    return data


def _for_method(overrides: dict[str, Any], method: str) -> dict[str, Any]:
    """``KEY`` applies to every method, ``METHOD.KEY`` only to ``METHOD`` (and wins)."""
    out = {k: v for k, v in overrides.items() if "." not in k}
    out.update({k.partition(".")[2]: v for k, v in overrides.items() if k.partition(".")[0] == method and "." in k})
    return out


def _representatives(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Concrete configs that exercise every categorical value and both ends of every range."""
    from ray.tune.search.sample import Categorical, Float, Integer

    base: dict[str, Any] = {}
    variants: list[tuple[str, list[Any]]] = []
    for key, dom in space.items():
        if isinstance(dom, dict) and "grid_search" in dom:
            vals = list(dom["grid_search"])
        elif isinstance(dom, Categorical):
            vals = list(dom.categories)
        elif isinstance(dom, Integer):
            vals = [dom.lower, dom.upper - 1]
        elif isinstance(dom, Float):
            vals = [dom.lower, dom.upper]
        else:
            vals = [dom]
        base[key] = vals[0]
        variants.append((key, vals[1:]))
    out = [base]
    for key, vals in variants:
        out += [{**base, key: v} for v in vals]
    return out


def _planned_evals(cfg: TrainConfig, n_train: int) -> int:
    """Evaluations of a full run (ASHA's max_t), mirroring the runner's schedule."""
    per_step = cfg.batch_size * cfg.grad_accum
    spe = max(1, math.ceil(n_train / per_step))
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * spe))
    every = cfg.eval_every or spe
    return total // every + (1 if total % every else 0)


def _fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(str(p.stat().st_size).encode())
        if p.stat().st_size < 64 * 2**20:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _latest_unfinished(storage: Path) -> Path | None:
    runs = sorted(
        (p.parent for p in storage.glob(f"*/{STATE_FILE}")),
        key=lambda p: (p / STATE_FILE).stat().st_mtime,
        reverse=True,
    )
    for run in runs:
        if not json.loads((run / STATE_FILE).read_text()).get("finished"):
            return run
    return None


class InputError(ValueError):
    """Bad user input, found before any trial starts (one message; the CLI exits with status 2)."""


def plan_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> Plan:
    """Validate the whole sweep and resolve data/model on the driver (no Ray, no trials).

    Raises:
        InputError: unknown task/method/config key, bad value, K out of range, missing data or model,
            unreachable tracking URI, an existing run folder without ``--resume``.
    """
    try:
        return _plan_sweep(args, defaults)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise InputError(str(e)) from e


def _is_uri(path: str) -> bool:
    return "://" in str(path)


def _plan_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> Plan:
    # A URI (s3://bucket/sweeps) is Tune's storage; the driver's bookkeeping stays on local disk.
    storage = Path("runs").resolve() if _is_uri(args.storage_path) else Path(args.storage_path).expanduser().resolve()
    state: dict[str, Any] = {}
    if args.resume:
        run_dir = storage / args.name if args.name else _latest_unfinished(storage)
        if run_dir is None or not (run_dir / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume: no sweep to resume in {storage} (name {args.name!r})")
        state = json.loads((run_dir / STATE_FILE).read_text())
        # The sweep's own settings win: a resumed sweep is the same sweep.
        saved = state["args"]
        for key, value in saved.items():
            if key not in ("resume", "address", "ray_temp_dir", "progress_interval", "num_cpus", "max_concurrent"):
                setattr(args, key, value)
        args.preset = Path(args.preset) if args.preset else None
        args.name = run_dir.name
    else:
        args.name = args.name or f"{defaults.kind}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        run_dir = storage / args.name
        if (run_dir / STATE_FILE).exists():
            raise FileExistsError(f"run folder {run_dir} already holds a sweep; pass --resume or another --name")

    tasks = [t.lower().replace("-", "") for t in args.tasks]
    if not tasks or not args.methods:
        raise ValueError("need at least one task (--tasks) and one method (--methods)")
    for m in args.methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    ranks: list[int | None] = []
    for r in args.ranks:
        if str(r).lower() == "search":
            ranks.append(None)
        elif str(r).isdigit() and int(r) > 0:
            ranks.append(int(r))
        else:
            raise ValueError(f"--ranks: {r!r} is not a positive integer or 'search'")
    if args.num_samples < 1 or args.seeds < 0:
        raise ValueError("--num-samples must be >= 1 and --seeds >= 0")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise ValueError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} is not a folder")

    preset = _load_preset(args.preset)
    search = args.search or preset.get("search") or "optuna"
    if search not in ("optuna", "random", "grid"):
        raise ValueError(f"search {search!r}: choose optuna, random or grid")
    if args.multi_objective and search != "optuna":
        raise ValueError("--multi-objective needs --search optuna")

    cli_fixed = dict(args.fixed)
    cli_space = dict(args.space)
    for key in [*cli_fixed, *cli_space]:
        scope = key.partition(".")[0] if "." in key else None
        if scope is not None and scope not in METHODS:
            raise ValueError(f"--set/--space {key}: {scope!r} is not a method slug")
    train = {
        "model": args.model,
        "data_dir": str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None,
        "epochs": args.max_epochs,
        "max_steps": args.max_steps,
        "eval_every": args.eval_every,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "train_subset": args.train_subset,
        "eval_subset": args.eval_subset,
        "seed": 0,  # explicit, so every child run carries its seed (``--set seed=N`` / ``--seeds`` change it)
    }

    cells: list[Cell] = []
    spaces: dict[str, dict[str, Any]] = {}
    fixed: dict[str, dict[str, Any]] = {}
    assets: dict[str, Any] = {}
    planned: dict[str, int] = {}
    for task in tasks:
        for method in args.methods:
            rkey = sp.rank_key(method)
            for rank in ranks if rkey is not None else [None]:
                cell = Cell(task, method, rank)
                mpre = (preset.get("methods") or {}).get(method, {})
                pins = {**(preset.get("set") or {}), **(mpre.get("set") or {}), **_for_method(cli_fixed, method)}
                pins = {k: sp.parse_value(v) if isinstance(v, str) else v for k, v in pins.items()}
                space = sp.with_overrides(
                    sp.get_space(method),
                    space_overrides={
                        **(preset.get("space") or {}),
                        **(mpre.get("space") or {}),
                        **_for_method(cli_space, method),
                    },
                    fixed=pins,
                )
                if rank is not None:
                    pins[rkey] = rank
                base = {**train, "task": task, "method": method, **pins}
                space = {k: v for k, v in space.items() if k not in base}
                if search != "grid" and sp.has_grid(space):
                    raise ValueError(f"{cell.name}: grid dimensions need --search grid")
                # Unknown keys, bad values and K outside [1, n] fail here, per representative config.
                n = None
                for i, rep in enumerate(_representatives(space)):
                    cfg = TrainConfig.from_flat({**base, **rep})
                    if i == 0:
                        # Resolves model + data (tokenized once, then from the disk cache) and checks
                        # the method against the real module structure; n = adapters of this method.
                        prepared = prepare_run(cfg)
                        assets.setdefault(task, prepared)
                        n = prepared.n_adapters
                    mc = make_config(method, cfg.method_config)
                    if n is not None and hasattr(mc, "resolve_k"):
                        try:
                            mc.resolve_k(n)
                        except ValueError as e:
                            raise ValueError(f"{cell.name}: {e} (model {args.model})") from None
                planned[cell.name] = _planned_evals(cfg, len(assets[task].data.train))
                cells.append(cell)
                spaces[cell.name] = space
                fixed[cell.name] = base

    run_dir.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or state.get("tracking_uri") or default_tracking_uri(run_dir)
    check_tracking_uri(uri)

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["search"] = search
    tune_storage = f"{str(args.storage_path).rstrip('/')}/{args.name}" if _is_uri(args.storage_path) else str(run_dir)
    return Plan(
        args, defaults.kind, run_dir, uri, cells, spaces, fixed, search, assets, planned, settings, state, tune_storage
    )


# --------------------------------------------------------------------------------------------------
# Running


def _save_state(plan: Plan) -> None:
    tmp = plan.run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(plan.state, indent=2, default=str))
    tmp.replace(plan.run_dir / STATE_FILE)


def _init_ray(args: argparse.Namespace) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if args.address:
        kwargs["address"] = args.address
    else:
        if args.num_cpus:
            kwargs["num_cpus"] = args.num_cpus
        if args.ray_temp_dir:
            kwargs["_temp_dir"] = str(Path(args.ray_temp_dir).resolve())
    ray.init(**kwargs)


def stage_models(plan: Plan) -> None:
    """On a cluster (``--address``), ship each model folder through the object store once, so every
    node writes one local copy (``sweeps.cluster_checks.stage_dir``) instead of every trial fetching it."""
    if not plan.args.address:
        return
    from sweeps.cluster_checks import stage_dir

    staged: dict[str, Any] = {}
    for task, assets in plan.assets.items():
        if assets.model_path not in staged:
            staged[assets.model_path] = stage_dir(assets.model_path)
        plan.assets[task] = dataclasses.replace(assets, staged_model=staged[assets.model_path])


def check_cluster(plan: Plan) -> None:
    """Multi-node safety (shared storage, remote tracking) once Ray is up, before any trial starts."""
    try:
        checks = importlib.import_module("sweeps.cluster_checks")
    except ModuleNotFoundError:
        return
    if hasattr(checks, "check_cluster_storage"):
        try:
            where = plan.args.storage_path if _is_uri(plan.args.storage_path) else str(plan.run_dir.parent)
            checks.check_cluster_storage(where, plan.tracking_uri, plan.args.num_nodes)
        except ValueError as e:
            raise InputError(str(e)) from e


def max_concurrency(args: argparse.Namespace, num_samples: int) -> int:
    """Trials that fit on the cluster at once (Tune runs one at a time with a searcher otherwise)."""
    import ray

    if args.max_concurrent:
        return args.max_concurrent
    res = ray.cluster_resources()
    fits = int(res.get("CPU", 1) // args.cpus_per_trial)
    if args.gpus_per_trial > 0:
        fits = min(fits, int(res.get("GPU", 0) // args.gpus_per_trial))
        if fits < 1:
            raise InputError(f"--gpus-per-trial {args.gpus_per_trial}: the cluster has {res.get('GPU', 0)} GPUs")
    return max(1, min(fits, num_samples))


def _setup_parent(plan: Plan):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan.tracking_uri)
    artifact_root = plan.run_dir / "mlartifacts" if not plan.tracking_uri.startswith("http") else None
    exp_id = get_experiment_id(client, plan.args.experiment, artifact_root)
    if plan.state.get("parent_run_id"):
        return client, exp_id, plan.state["parent_run_id"]
    a = plan.args
    tags = {
        "wlora.role": "sweep",
        "git_commit": git_commit(),
        "model": a.model,
        "data_dir": str(a.data_dir),
        "wlora.sweep_name": a.name,
        "wlora.kind": plan.kind,
    }
    parent = client.create_run(exp_id, tags=tags, run_name=a.name)
    pid = parent.info.run_id
    params = {k: v for k, v in plan.settings.items() if v not in (None, [], "")}
    model_dir = Path(plan.assets[plan.cells[0].task].model_path)
    params["model_fingerprint"] = _fingerprint([p for p in model_dir.glob("*") if p.is_file()])
    if a.data_dir:
        for task in {c.task for c in plan.cells}:
            files = [p for p in Path(a.data_dir).rglob("*") if p.is_file() and _task_dir(task) in p.parts]
            if files:
                params[f"data_fingerprint.{task}"] = _fingerprint(files)
    log_params(client, pid, params)
    plan.state.update(
        args=plan.settings,
        tracking_uri=plan.tracking_uri,
        experiment_id=exp_id,
        parent_run_id=pid,
        cells={},
        seed_cells={},
        finished=False,
    )
    _save_state(plan)
    return client, exp_id, pid


def _task_dir(task: str) -> str:
    from wlora.data.glue import GLUE_TASKS

    return GLUE_TASKS[task].name if task in GLUE_TASKS else task


def _trainable(plan: Plan, cell: Cell):
    from ray import tune

    fn = tune.with_parameters(get_trainable(cell.method), assets=plan.assets[cell.task])
    res = {"cpu": plan.args.cpus_per_trial}
    if plan.args.gpus_per_trial:
        res["gpu"] = plan.args.gpus_per_trial
    return tune.with_resources(fn, res)


def _run_tuner(
    plan: Plan,
    cell: Cell,
    exp_name: str,
    param_space: dict[str, Any],
    *,
    num_samples: int,
    search: str | None,
    use_asha: bool,
    role: str,
    exp_id: str,
    parent_id: str,
):
    """One Tune experiment (fresh or restored); returns (ResultGrid, ledger, searcher)."""
    from ray import tune

    a = plan.args
    exp_path = f"{plan.tune_storage or plan.run_dir}/{exp_name}"
    ledger = EarlyStopLedger(f"{plan.run_dir}:{exp_name}")
    trainable = _trainable(plan, cell)
    if tune.Tuner.can_restore(str(exp_path)):
        logger.info("resuming %s from %s", exp_name, exp_path)
        tuner = tune.Tuner.restore(
            str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=False, param_space=param_space
        )
        # The restored searcher (for its Optuna trial states); Tune keeps it on the internal tuner.
        tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
        return tuner.fit(), ledger, getattr(tune_config, "search_alg", None)

    multi = a.multi_objective and role == "trial"
    metric: Any = [OBJECTIVE, PARAMS_METRIC] if multi else OBJECTIVE
    mode: Any = ["max", "min"] if multi else "max"
    conc = max_concurrency(a, num_samples if search != "grid" else 10**6)
    searcher = (
        make_searcher(
            search,
            ledger=ledger,
            seed=a.search_seed,
            metric=metric,
            mode=mode,
            max_concurrent=conc,
            num_samples=num_samples,
        )
        if search
        else None
    )
    scheduler = make_scheduler(
        use_asha and not multi,
        ledger=ledger,
        metric=OBJECTIVE,
        mode="max",
        max_t=plan.planned_evals[cell.name],
        grace_period=a.grace_period,
        reduction_factor=a.reduction_factor,
    )
    tags = {
        "method": cell.method,
        "task": cell.task,
        "model": a.model,
        "rank": str(cell.rank if cell.rank is not None else param_space.get("r", "")),
        "wlora.sweep_name": a.name,
        "wlora.cell": cell.name,
    }
    cb = MlflowTrialCallback(plan.tracking_uri, exp_id, parent_id, ledger, tags, role=role)
    shown = [k for k, v in param_space.items() if k not in plan.fixed[cell.name]][:6] or ["seed"]
    progress = ProgressTable(exp_name, shown, interval_s=a.progress_interval)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            # metric/mode live in the searcher and scheduler (Tune refuses them twice).
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=conc,
            reuse_actors=not a.no_reuse_actors,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=exp_name,
            storage_path=plan.tune_storage or str(plan.run_dir),
            callbacks=[cb, progress],
            failure_config=tune.FailureConfig(max_failures=a.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    return tuner.fit(), ledger, searcher


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _trial_rows(results, ledger: EarlyStopLedger) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        m = r.metrics or {}
        tid = m.get("trial_id") or Path(r.path).name
        if r.error is not None:
            status = "failed"
        elif tid in ledger or (m and not m.get(FINAL_KEY)):
            status = "asha_stopped"
        else:
            status = "completed"
        rows.append(
            {
                "trial_id": tid,
                "status": status,
                "config": r.config,
                OBJECTIVE: m.get(OBJECTIVE),
                PARAMS_METRIC: m.get(PARAMS_METRIC),
                "trainable_params": m.get("trainable_params"),
                "train_loss": m.get("train_loss"),
                "pid": m.get("pid"),
                "error": str(r.error).strip().splitlines()[-1][:500] if r.error is not None else None,
                "checkpoint": r.checkpoint.path if r.checkpoint is not None else None,
            }
        )
    return rows


def _export_best(plan: Plan, cell: Cell, best: dict[str, Any]) -> str | None:
    if not best.get("checkpoint"):
        return None
    out = plan.run_dir / "adapters" / cell.name
    if out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig.from_flat({**best["config"], "method": cell.method})
    export_from_checkpoint(cfg, plan.assets[cell.task], best["checkpoint"], out)
    return str(out)


def _pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pts = [r for r in rows if r["status"] == "completed" and r[OBJECTIVE] is not None and r[PARAMS_METRIC] is not None]
    front = []
    for r in pts:
        dominated = any(
            (o[OBJECTIVE] >= r[OBJECTIVE] and o[PARAMS_METRIC] <= r[PARAMS_METRIC])
            and (o[OBJECTIVE] > r[OBJECTIVE] or o[PARAMS_METRIC] < r[PARAMS_METRIC])
            for o in pts
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r[PARAMS_METRIC])


def run_cell(plan: Plan, cell: Cell, exp_id: str, parent_id: str) -> dict[str, Any]:
    a = plan.args
    t0 = time.time()
    param_space = {**plan.fixed[cell.name], **plan.spaces[cell.name]}
    # Grid: every grid point once (other dimensions sampled per point); otherwise --num-samples trials.
    num_samples = 1 if plan.search == "grid" else a.num_samples
    results, ledger, searcher = _run_tuner(
        plan,
        cell,
        cell.name,
        param_space,
        num_samples=num_samples,
        search=plan.search,
        use_asha=not a.no_asha,
        role="trial",
        exp_id=exp_id,
        parent_id=parent_id,
    )
    rows = _trial_rows(results, ledger)
    done = [r for r in rows if r["status"] == "completed" and r[OBJECTIVE] is not None]
    best = max(done, key=lambda r: r[OBJECTIVE]) if done else None
    summary: dict[str, Any] = {
        **dataclasses.asdict(cell),
        "cell": cell.name,
        "n_trials": len(rows),
        "n_completed": len(done),
        "n_asha_stopped": sum(r["status"] == "asha_stopped" for r in rows),
        "n_failed": sum(r["status"] == "failed" for r in rows),
        "trials": [{k: v for k, v in r.items() if k != "config"} for r in rows],
        "wall_s": round(time.time() - t0, 1),
    }
    if best is None:
        errors = [r["error"] for r in rows if r["error"]]
        print(
            f"warning: {cell.name}: no trial completed ({summary['n_failed']} failed"
            + (f"; first error: {errors[0]})" if errors else ")"),
            file=sys.stderr,
            flush=True,
        )
    if hasattr(searcher, "trial_states"):
        summary["optuna_states"] = searcher.trial_states()
    if best is not None:
        summary.update(
            best_trial_id=best["trial_id"],
            best_config=best["config"],
            best_metric=best[OBJECTIVE],
            params_pct=best[PARAMS_METRIC],
            trainable_params=best["trainable_params"],
            adapter_dir=_export_best(plan, cell, best),
        )
    if a.multi_objective:
        summary["pareto"] = [{k: r[k] for k in ("trial_id", OBJECTIVE, PARAMS_METRIC)} for r in _pareto(rows)]
    return summary


def run_seeds(plan: Plan, cell: Cell, summary: dict[str, Any], exp_id: str, parent_id: str) -> dict[str, Any]:
    from ray import tune

    a = plan.args
    space = {**summary["best_config"], "seed": tune.grid_search(list(range(a.seeds)))}
    results, ledger, _ = _run_tuner(
        plan,
        cell,
        f"seeds-{cell.name}",
        space,
        num_samples=1,
        search="grid",
        use_asha=False,
        role="seed_run",
        exp_id=exp_id,
        parent_id=parent_id,
    )
    rows = _trial_rows(results, ledger)
    values = [r[OBJECTIVE] for r in rows if r["status"] == "completed" and r[OBJECTIVE] is not None]
    return {
        "cell": cell.name,
        "values": values,
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
        "n": len(values),
    }


def run_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> dict[str, Any]:
    """Plan (validates; raises before Ray starts) and execute the sweep — the importable entry point."""
    return execute(plan_sweep(args, defaults))


def execute(plan: Plan) -> dict[str, Any]:
    """Run every cell (skipping finished ones on ``--resume``), seeds, table, adapters, report."""
    # num_to_keep=1 snapshots the experiment at every checkpoint (what makes --resume exact); quiet
    # Tune's warning about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    t0 = time.time()
    _init_ray(plan.args)
    check_cluster(plan)
    stage_models(plan)
    client, exp_id, parent_id = _setup_parent(plan)
    print(f"sweep {plan.args.name}: {len(plan.cells)} cell(s) → {plan.run_dir}; MLflow {plan.tracking_uri}", flush=True)
    for cell in plan.cells:
        if cell.name in plan.state["cells"]:
            continue
        summary = run_cell(plan, cell, exp_id, parent_id)
        plan.state["cells"][cell.name] = summary
        _save_state(plan)
    if plan.args.seeds > 0:
        for cell in plan.cells:
            summary = plan.state["cells"][cell.name]
            if cell.name in plan.state["seed_cells"] or "best_config" not in summary:
                continue
            plan.state["seed_cells"][cell.name] = run_seeds(plan, cell, summary, exp_id, parent_id)
            _save_state(plan)

    # Best adapter per (task, method) over ranks → parent artifact best_adapter/<task>/<method>/.
    best_by_pair: dict[tuple[str, str], dict[str, Any]] = {}
    for s in plan.state["cells"].values():
        if s.get("adapter_dir") and s.get("best_metric") is not None:
            key = (s["task"], s["method"])
            if key not in best_by_pair or s["best_metric"] > best_by_pair[key]["best_metric"]:
                best_by_pair[key] = s
    for (task, method), s in best_by_pair.items():
        client.log_artifacts(parent_id, s["adapter_dir"], f"best_adapter/{task}/{method}")

    results_dir = plan.run_dir / "results"
    table_md = write_tables(plan.state["cells"], plan.state.get("seed_cells", {}), results_dir)
    if plan.args.multi_objective:
        fronts = {name: s.get("pareto", []) for name, s in plan.state["cells"].items()}
        (results_dir / "pareto.json").write_text(json.dumps(fronts, indent=2))
    client.log_artifacts(parent_id, str(results_dir), "results")
    plan.state["finished"] = True
    plan.state["wall_s"] = round(plan.state.get("wall_s", 0) + time.time() - t0, 1)
    _save_state(plan)
    client.set_terminated(parent_id, "FINISHED")
    print(table_md, flush=True)
    try:
        report = importlib.import_module("sweeps.report")
    except ModuleNotFoundError:
        report = None
    if report is not None and hasattr(report, "build_report"):
        try:
            report.build_report(plan.tracking_uri, parent_id, plan.run_dir / "report")
        except Exception as e:  # the report is extra; the sweep's results are already saved
            print(f"warning: sweeps.report.build_report failed: {e}", file=sys.stderr)
    return {"run_dir": str(plan.run_dir), "parent_run_id": parent_id, "tracking_uri": plan.tracking_uri, **plan.state}


def main(defaults: SweepDefaults, argv: Sequence[str] | None = None, description: str = "") -> int:
    """Entry point of ``sweeps/<kind>_sweep.py``: exit code 2 with one line on bad input."""
    parser = build_parser(defaults, description)
    args = parser.parse_args(argv)
    try:
        apply_preset_cli(args, parser)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    apply_smoke(args, defaults, parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plan = plan_sweep(args, defaults)
        execute(plan)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
