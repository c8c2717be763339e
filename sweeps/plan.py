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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps import spaces as sp
from sweeps.flags import TRAIN_FLAGS, SweepDefaults, check_args, check_overrides, flag_of, load_preset
from sweeps.state import (
    EXPERIMENT,
    FINISHED,
    STATE_FILE,
    StateError,
    check_experiment,
    check_sqlite_store,
    latest_resumable,
    load_state,
    status_of,
)
from sweeps.state import save_state as _save_state
from sweeps.store import check_tracking_uri, default_tracking_uri
from wlora.data.registry import normalize_task
from wlora.fields import parse_field_value
from wlora.registry import METHODS, make_config
from wlora.run_config import TrainConfig


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
    memory_per_trial: int = 0
    """Bytes of memory each trial declares to Ray (:func:`sweeps.resources.trial_memory`, set once Ray is up)."""
    seed_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields the seed re-runs change from their cell's best config (``--protocol heldout``: evaluate on dev)."""
    cell_seed_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per cell: ``seed_overrides`` plus ``eval_every`` = the run's total steps (one dev evaluation, at the end)."""


def _field_value(key: str, value: Any, method: str) -> Any:
    """A ``--set`` / preset value as the config field declares it (``target_modules=q,k,v`` → a list)."""
    return parse_field_value(key, value, method) if isinstance(value, str) else value


def _for_method(overrides: dict[str, Any], method: str) -> dict[str, Any]:
    """``KEY`` applies to every method, ``METHOD.KEY`` only to ``METHOD`` (and wins)."""
    out = {k: v for k, v in overrides.items() if "." not in k}
    out.update({k.partition(".")[2]: v for k, v in overrides.items() if k.partition(".")[0] == method and "." in k})
    return out


#: TrainConfig fields that define the cells rather than a trial: pinning them with ``--set`` would silently
#: run another experiment than the cell's name says.
CELL_FLAGS = {"task": "--tasks", "method": "--methods"}
#: TrainConfig fields --protocol sets (``--set`` of them is refused).
PROTOCOL_FIELDS = ("holdout", "eval_split")
#: Flags that belong to one invocation, not to the sweep: ``--resume`` keeps the new command's values.
RUN_ONLY_FLAGS = (
    "resume",
    "address",
    "ray_temp_dir",
    "progress_interval",
    "num_cpus",
    "max_concurrent",
    "dry_run",
    "verbose",
)


def _method_ranks(
    args: argparse.Namespace,
    ranks: list[int | None],
    rkey: str | None,
    pins: dict[str, Any],
    cli_pins: dict[str, Any],
    method: str,
) -> list[int | None]:
    """The ranks of ``method``'s cells: ``--ranks``, or the rank a ``--set``/preset pins.

    ``--set r=4`` pins the rank (one cell at r = 4); with an explicit ``--ranks`` too, the two disagree
    about which cells to build, so that is an error. A pin that is not a positive integer is an error (the
    same check as ``wlora.train``)."""
    from sweeps.flags import given

    if rkey is None or rkey not in pins:
        return ranks
    if rkey in cli_pins and given(args, "ranks"):
        raise ValueError(f"--set {rkey}=… and --ranks both fix {method}'s rank: use --ranks only")
    if given(args, "ranks"):
        return ranks  # the command line wins over a preset's pin
    value = pins[rkey]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{method}: `{rkey}` must be a positive integer, got {value!r} (or use --ranks 4,8)")
    return [value]


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


def plan_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> Plan:
    """Validate the whole sweep and resolve data/model on the driver (no Ray, no trials).

    Raises:
        InputError: unknown task/method/config key, bad value, K out of range, missing data or model,
            unreachable tracking URI, an existing run folder without ``--resume``.
    """
    try:
        return _plan_sweep(args, defaults)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        raise InputError(str(e)) from e


def is_uri(path: str) -> bool:
    return "://" in str(path)


def _plan_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> Plan:
    # A URI (s3://bucket/sweeps) is Tune's storage; the driver's bookkeeping stays on local disk.
    storage = Path("runs").resolve() if is_uri(args.storage_path) else Path(args.storage_path).expanduser().resolve()
    if storage.exists() and not storage.is_dir():
        raise ValueError(f"--storage-path {args.storage_path} is a file, not a folder")
    state: dict[str, Any] = {}
    if args.resume:
        from sweeps.flags import given

        grow_to = args.num_samples if given(args, "num_samples") else None  # before the saved flags replace it
        run_dir = storage / args.name if args.name else latest_resumable(storage)
        if run_dir is None or not run_dir.is_dir():
            raise FileNotFoundError(
                f"--resume: no running or interrupted sweep in {storage}"
                + (f" named {args.name!r}" if args.name else " (pass --name to pick one, or to grow a finished one)")
            )
        state = load_state(run_dir)
        _check_resumable(run_dir, state)
        # The sweep's own settings win: a resumed sweep is the same sweep.
        saved = state["args"]
        for key, value in saved.items():
            if key not in RUN_ONLY_FLAGS:
                setattr(args, key, value)
        args.preset = Path(args.preset) if args.preset else None
        args.name = run_dir.name
        if grow_to is not None:
            _grow(args, state, run_dir, grow_to)
    else:
        args.name = args.name or f"{defaults.kind}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        run_dir = storage / args.name
        if (run_dir / STATE_FILE).exists():
            raise FileExistsError(f"run folder {run_dir} already holds a sweep; pass --resume or another --name")

    tasks = [normalize_task(t) for t in args.tasks]
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
    if args.seeds == "auto":
        from sweeps.claims import seed_schedule

        args.seed_schedule = seed_schedule(args.max_seeds)
        args.seeds, args.seeds_auto, args.seed_looks = args.seed_schedule[0], True, len(args.seed_schedule)
    elif not getattr(args, "seeds_auto", False):
        args.seeds_auto, args.seed_schedule, args.seed_looks = False, [], 1
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    check_args(args)  # --seeds, --holdout-size, --gpus-per-trial, --tracking-uri (sweeps.flags)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError(
            f"--max-concurrent must be >= 1 (or left out: one trial per free slot), got {args.max_concurrent}"
        )
    if args.max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {args.max_failures}")
    if getattr(args, "memory_per_trial", None) is not None and args.memory_per_trial <= 0:
        raise ValueError(f"--memory-per-trial must be > 0 GiB, got {args.memory_per_trial}")
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
        field_name = key.partition(".")[2] if scope else key
        if field_name in CELL_FLAGS:
            raise ValueError(
                f"--set/--space {key}: the sweep's cells come from {CELL_FLAGS[field_name]}; use that flag"
            )
    for key in [*cli_fixed, *(preset.get("set") or {})]:
        field_name = key.partition(".")[2] if "." in key else key
        if field_name in TRAIN_FLAGS.values():
            raise ValueError(f"--set {key}: the sweep sets `{field_name}` from {flag_of(field_name)}; use that flag")
    train = {name: getattr(args, dest) for dest, name in TRAIN_FLAGS.items()}
    train["data_dir"] = str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None
    train["seed"] = 0  # explicit, so every child run carries its seed (``--set seed=N`` / ``--seeds`` change it)
    for key in [*cli_fixed, *(preset.get("set") or {})]:
        if key.rpartition(".")[2] in PROTOCOL_FIELDS:
            raise ValueError(f"--set {key}: the sweep sets it from --protocol / --holdout-size; use those flags")
    rank_keys = tuple(k for k in map(sp.rank_key, args.methods) if k)  # a bad rank pin: _method_ranks says it
    check_overrides(args, preset, skip=(*CELL_FLAGS, *TRAIN_FLAGS.values(), *PROTOCOL_FIELDS, *rank_keys))
    seed_overrides: dict[str, Any] = {}
    if args.protocol == "heldout":
        # every choice (search, ASHA, best config) reads the held-out split; the seed re-runs report on dev
        train.update(holdout=args.holdout_size, eval_split="holdout")
        seed_overrides = {"eval_split": "dev"}

    task_presets = {normalize_task(t): v for t, v in (preset.get("tasks") or {}).items()}
    for t, v in task_presets.items():
        if not isinstance(v, dict) or set(v) - {"set"}:
            raise ValueError(f"preset tasks.{t}: only `set:` is allowed there, got {v!r}")
    from sweeps.claims import claim_settings, testable_claims

    args.claim_margins, args.claim_prior_sd = claim_settings(preset.get("claims"), tasks)
    if getattr(args, "seeds_auto", False) and not testable_claims(args.methods):
        raise ValueError(
            f"--seeds auto adds seeds while a claim between two methods is open, but no claim compares two of "
            f"--methods {','.join(args.methods)} (the claims: sweeps/claims.py); give a number, e.g. --seeds 3"
        )

    cells: list[Cell] = []
    cell_seed: dict[str, dict[str, Any]] = {}
    spaces: dict[str, dict[str, Any]] = {}
    fixed: dict[str, dict[str, Any]] = {}
    assets: dict[str, Any] = {}
    planned: dict[str, int] = {}
    for task in tasks:
        for method in args.methods:
            rkey = sp.rank_key(method)
            mpre = (preset.get("methods") or {}).get(method, {})
            tpre = task_presets.get(task) or {}
            pins0 = {
                **(preset.get("set") or {}),
                **(tpre.get("set") or {}),
                **(mpre.get("set") or {}),
                **_for_method(cli_fixed, method),
            }
            pins0 = {k: _field_value(k, v, method) for k, v in pins0.items()}
            method_ranks = _method_ranks(args, ranks, rkey, pins0, _for_method(cli_fixed, method), method)
            for rank in method_ranks if rkey is not None else [None]:
                cell = Cell(task, method, rank)
                pins = dict(pins0)
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
                if search == "grid" and not sp.has_grid(space):
                    raise ValueError(
                        f"{cell.name}: --search grid needs at least one grid dimension "
                        "(e.g. --space lr=grid:1e-4,5e-4,1e-3)"
                    )
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
                from trainables import assets_key

                if seed_overrides and assets_key(task, seed_overrides["eval_split"]) not in assets:
                    # The seed re-runs evaluate another split: data of their own, prepared from their own
                    # config, so what they score is that split (checked again by the runner).
                    from wlora.modeling import prepare_run

                    seed_cfg = TrainConfig.from_flat({**base, **_representatives(space)[0], **seed_overrides})
                    assets[assets_key(task, seed_overrides["eval_split"])] = prepare_run(seed_cfg)
                if seed_overrides:
                    # A seed re-run's score is its final evaluation: it evaluates dev once, at its last step
                    # (evaluations change nothing in training: batches are a function of seed and step).
                    from wlora.schedule import schedule_for

                    seed_cfg = TrainConfig.from_flat({**base, **_representatives(space)[0], **seed_overrides})
                    n_seed = len(assets[assets_key(task, seed_overrides["eval_split"])].data.train)
                    cell_seed[cell.name] = {**seed_overrides, "eval_every": schedule_for(seed_cfg, n_seed).total}
                planned[cell.name] = evals
                cells.append(cell)
                spaces[cell.name] = space
                fixed[cell.name] = base

    run_dir.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or state.get("tracking_uri") or default_tracking_uri(run_dir)
    check_tracking_uri(uri)

    from sweeps.resources import trial_memory

    memory = trial_memory(args, [a.model_path for a in assets.values()], [c.method for c in cells])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["search"] = search
    tune_storage = f"{str(args.storage_path).rstrip('/')}/{args.name}" if is_uri(args.storage_path) else str(run_dir)
    return Plan(
        args,
        defaults.kind,
        run_dir,
        uri,
        cells,
        spaces,
        fixed,
        search,
        assets,
        planned,
        settings,
        state,
        tune_storage,
        memory,
        seed_overrides,
        cell_seed,
    )


def save_state(plan: Plan) -> None:
    """Write the plan's ``sweep_state.json`` atomically (:func:`sweeps.state.save_state`)."""
    _save_state(plan.run_dir, plan.state)


def _grow(args: argparse.Namespace, state: dict[str, Any], run_dir: Path, num_samples: int) -> None:
    """``--resume --num-samples N``: every cell's search grows to N trials (a finished sweep runs again).

    The restored experiment keeps every trial already run; each cell's search goes on from its history (an
    Optuna study from every trial it has seen; random search draws the next configs of its seeded sequence)
    and each cell's ASHA from its rungs. Refused: fewer trials than before, a grid (it runs each grid point
    once, whatever N), ``--seeds`` (the seed re-runs already ran the best config of the smaller search). A raced
    cell races again once its grown search ends (:meth:`sweeps.pool.Race.rerace`)."""
    before = int(state["args"].get("num_samples") or 0)
    if num_samples == before:
        return
    what = f"--resume --num-samples {num_samples}"
    if num_samples < before:
        raise ValueError(f"{what}: the sweep already runs {before} trials per cell; a sweep grows, it never shrinks")
    if (state["args"].get("search") or "optuna") == "grid":
        raise ValueError(
            f"{what}: a grid sweep runs each grid point once, whatever --num-samples, so there is nothing to add; "
            "start a new sweep (another --name) with a wider grid"
        )
    if getattr(args, "seeds_auto", False) or int(args.seeds or 0) > 0:
        raise ValueError(
            f"{what}: this sweep re-ran each cell's best config with --seeds; more search trials could change that "
            "config after its re-runs. Start a new sweep (another --name) with the larger --num-samples"
        )
    cloud = "://" in str(state.get("tune_storage", ""))
    if not cloud and not check_experiment(run_dir / EXPERIMENT):
        raise StateError(f"{what}: the Tune experiment {run_dir / EXPERIMENT} is missing, so the sweep cannot grow")
    args.num_samples, args.extend_from = num_samples, before
    state["args"]["num_samples"] = num_samples
    state["pooled_done"] = False  # the pool runs again: the new trials, then tables, adapters and report


def _check_resumable(run_dir: Path, state: dict[str, Any]) -> None:
    """Everything ``--resume`` reads must be readable: the state (already loaded), the MLflow store and the
    Tune experiment. A missing experiment is fine only while no trial ever started (MLflow holds none of
    this sweep's trials); otherwise resuming would rerun finished trials, so refuse."""
    uri = state.get("tracking_uri") or default_tracking_uri(run_dir)
    check_sqlite_store(uri)
    if status_of(state) == FINISHED:
        return
    if "://" in str(state.get("tune_storage", "")):
        return  # cloud storage: Tune itself checks it on restore
    exp = run_dir / EXPERIMENT
    if check_experiment(exp) or not state.get("parent_run_id"):
        return
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        runs = client.search_runs(
            [state["experiment_id"]],
            filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'",
            max_results=10,
        )
    except Exception as e:  # the store is unreadable: say so in one line
        raise StateError(f"--resume: cannot read the MLflow store {uri} ({type(e).__name__}: {e})") from None
    if runs:
        raise StateError(
            f"--resume: the Tune experiment {exp} is missing, but MLflow already holds trials of this sweep; "
            "resuming would rerun them. Restore the folder, or start a new sweep with another --name"
        )
