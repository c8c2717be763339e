"""Step 2 of a sweep, plan: validate everything and build the cells before Ray starts.

A *cell* is one (task, method, rank): its own search space, its own search (seeded TPE, random or grid)
and its own ASHA brackets. Everything a user can get wrong is checked here (unknown task / method /
config key, K out of range, missing data or model, unreachable tracking URI, an existing run folder
without ``--resume``), each with one clear error, and model + data are resolved once on the driver.

Run folder ``<storage-path>/<name>/``: ``sweep_state.json`` (settings, parent run id, cell summaries —
what ``--resume`` continues from), ``mlflow.db`` + ``mlartifacts/`` (embedded tracking), the sweep's one
Tune experiment ``pool/``, ``adapters/``, ``results/table.{md,csv}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps import spaces as sp
from sweeps.flags import SweepDefaults, load_preset
from sweeps.tracking import check_tracking_uri, default_tracking_uri
from wlora.fields import parse_field_value
from wlora.registry import METHODS, make_config
from wlora.run_config import TrainConfig

STATE_FILE = "sweep_state.json"


class InputError(ValueError):
    """Bad user input, found before any trial starts (one message; the CLI exits with status 2)."""


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    rank: int | None

    @property
    def name(self) -> str:
        return f"{self.task}-{self.method}" + (f"-r{self.rank}" if self.rank is not None else "")


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


def _field_value(key: str, value: Any, method: str) -> Any:
    """A ``--set`` / preset value as the config field declares it (``target_modules=q,k,v`` → a list)."""
    return parse_field_value(key, value, method) if isinstance(value, str) else value


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

    preset = load_preset(args.preset)
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
                pins = {k: _field_value(k, v, method) for k, v in pins.items()}
                overrides = {
                    **(preset.get("space") or {}),
                    **(mpre.get("space") or {}),
                    **_for_method(cli_space, method),
                }
                overrides = {k: v if sp.is_domain_spec(v) else _field_value(k, v, method) for k, v in overrides.items()}
                space = sp.with_overrides(sp.get_space(method), space_overrides=overrides, fixed=pins)
                if rank is not None:
                    pins[rkey] = rank
                base = {**train, "task": task, "method": method, **pins}
                space = {k: v for k, v in space.items() if k not in base}
                if search != "grid" and sp.has_grid(space):
                    raise ValueError(f"{cell.name}: grid dimensions need --search grid")
                # Unknown keys, bad values and K outside [1, n] fail here, per representative config.
                n = None
                evals = 1
                for i, rep in enumerate(_representatives(space)):
                    cfg = TrainConfig.from_flat({**base, **rep})
                    if i == 0:
                        # Resolves model + data (tokenized once, then from the disk cache) and checks
                        # the method against the real module structure; n = adapters of this method.
                        from wlora.modeling import prepare_run  # torch: only once the flags are valid
                        from wlora.schedule import planned_evaluations

                        prepared = prepare_run(cfg)
                        assets.setdefault(task, prepared)
                        n = prepared.n_adapters
                    mc = make_config(method, cfg.method_config)
                    if n is not None and hasattr(mc, "resolve_k"):
                        try:
                            mc.resolve_k(n)
                        except ValueError as e:
                            raise ValueError(f"{cell.name}: {e} (model {args.model})") from None
                    # ASHA's max_t: the runner's own count of evaluations (the longest config of the space).
                    evals = max(evals, planned_evaluations(cfg, len(assets[task].data.train)))
                planned[cell.name] = evals
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


def save_state(plan: Plan) -> None:
    """Write ``sweep_state.json`` atomically (a crash leaves the previous state, never half a file)."""
    tmp = plan.run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(plan.state, indent=2, default=str))
    tmp.replace(plan.run_dir / STATE_FILE)
