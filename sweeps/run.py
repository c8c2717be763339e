"""Step 3 of a sweep, run: Ray up, cluster checks, the MLflow parent, then ONE Tune run for every cell.

Every cell's trials and its ``--seeds`` re-runs draw from one pool of trial slots (``sweeps.pool``): one
Tune run whose searcher holds one search per cell and whose scheduler holds one ASHA per cell, so no slot
stays idle while any cell still has trials to run, and Tune's own experiment restore (``--resume`` after a
driver crash), retries and actor reuse cover the whole sweep. The run's Tune experiment is ``<run>/pool``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeps.flags import SweepDefaults, apply_preset_cli, apply_smoke, build_parser
from sweeps.plan import Cell, InputError, Plan, _is_uri, plan_sweep, save_state
from sweeps.pool import SEED_RUN, TRIAL, CellSearch, ListSearch, PooledScheduler, PooledSearcher, variant_configs
from sweeps.progress import ProgressTable
from sweeps.resources import check_resources, pool_slots
from sweeps.results import PARAMS_METRIC, cell_summary, export_best, publish, seed_summary, trial_rows, write_report
from sweeps.search import EarlyStopLedger, make_optuna, make_scheduler
from sweeps.state import EXPERIMENT, FAILED, FINISHED, INTERRUPTED, PLANNED, RUNNING, status_of
from sweeps.tracking import (
    MlflowTrialCallback,
    close_open_children,
    get_experiment_id,
    git_commit,
    live_callbacks,
    log_params,
)
from sweeps.tracking_queue import flush_all
from trainables import train_pooled
from wlora.run_config import OBJECTIVE, TrainConfig

logger = logging.getLogger("sweeps")

#: Exit status of an interrupted sweep (as a shell reports a process ended by SIGINT).
EXIT_INTERRUPTED = 130
#: Environment of the driver and every trial process: no "Loading weights" / download progress bars in the
#: console (the live view is the sweep's one progress table).
QUIET = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class _NoTuneRestoreHint(logging.Filter):
    """Tune's own "Resume experiment with: Tuner.restore(...)" and stop-signal lines: the sweep prints its
    own (``--resume``), which is what a user of the sweep should run."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "Tuner.restore(" not in text and "Stop signal received" not in text


def quiet_console() -> None:
    """No progress bars on the driver either (set before the plan loads the model; idempotent)."""
    # urllib3's line per retried request while a tracking server is away (the queue says it once).
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoTuneRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoTuneRestoreHint())
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def init_ray(args: argparse.Namespace) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": True,
        "runtime_env": {"env_vars": QUIET},
    }
    if args.address:
        kwargs["address"] = args.address
    else:
        if args.num_cpus:
            kwargs["num_cpus"] = args.num_cpus
        if args.ray_temp_dir:
            kwargs["_temp_dir"] = str(Path(args.ray_temp_dir).resolve())
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise InputError(
            f"--address {args.address}: no Ray cluster answers there ({str(e).splitlines()[0][:200]}); "
            "start one (`ray up cluster.yaml` / `ray start --head`) or leave --address out for local Ray"
        ) from None


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


def setup_parent(plan: Plan):
    """The sweep's MLflow parent run (created once; ``--resume`` reuses it) → (client, experiment id, run id)."""
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
        status=PLANNED,
        tune_storage=plan.tune_storage,
    )
    save_state(plan)
    client.set_tag(pid, "mlflow.note.content", describe_plan(plan))
    return client, exp_id, pid


def _fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(str(p.stat().st_size).encode())
        if p.stat().st_size < 64 * 2**20:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _task_dir(task: str) -> str:
    from wlora.data.glue import GLUE_TASKS

    return GLUE_TASKS[task].name if task in GLUE_TASKS else task


# --------------------------------------------------------------------------------------------------
# The pool: one search and one ASHA per cell, in one Tune run


def _ledger(plan: Plan, cell: Cell) -> EarlyStopLedger:
    return EarlyStopLedger(f"{plan.run_dir}:{cell.name}")


def _multi(plan: Plan) -> bool:
    return bool(plan.args.multi_objective)


def cell_search(plan: Plan, cell: Cell) -> CellSearch:
    """One cell's search: seeded Optuna TPE over its own space, or its list of random / grid configs."""
    a = plan.args
    space = plan.spaces[cell.name]
    if plan.search == "optuna" and space:
        metric: Any = [OBJECTIVE, PARAMS_METRIC] if _multi(plan) else OBJECTIVE
        mode: Any = ["max", "min"] if _multi(plan) else "max"
        search: Any = make_optuna(
            space, ledger=_ledger(plan, cell), seed=a.search_seed, metric=metric, mode=mode, num_samples=a.num_samples
        )
        budget = a.num_samples
    else:
        configs = variant_configs(space, grid=plan.search == "grid", num_samples=a.num_samples, seed=a.search_seed)
        search, budget = ListSearch(configs), len(configs)
    return CellSearch(cell.name, dict(plan.fixed[cell.name]), budget, search, seeds=a.seeds)


def pooled_scheduler(plan: Plan) -> PooledScheduler:
    """ASHA per cell on its own max_t (the runner's planned evaluations); FIFO with ``--no-asha`` or
    ``--multi-objective`` (ASHA ranks one metric)."""
    a = plan.args
    use_asha = not a.no_asha and not _multi(plan)
    return PooledScheduler(
        {
            cell.name: functools.partial(
                make_scheduler,
                use_asha,
                ledger=_ledger(plan, cell),
                metric=OBJECTIVE,
                mode="max",
                max_t=plan.planned_evals[cell.name],
                grace_period=a.grace_period,
                reduction_factor=a.reduction_factor,
            )
            for cell in plan.cells
        }
    )


def _trainable(plan: Plan):
    from ray import tune

    fn = tune.with_parameters(train_pooled, assets=plan.assets)
    res: dict[str, float] = {"cpu": plan.args.cpus_per_trial, "memory": plan.memory_per_trial}
    if plan.args.gpus_per_trial:
        res["gpu"] = plan.args.gpus_per_trial
    return tune.with_resources(fn, res)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def run_pool(plan: Plan, exp_id: str, parent_id: str):
    """The sweep's one Tune run (fresh, or restored after a crash); returns (ResultGrid, PooledSearcher)."""
    from ray import tune

    a = plan.args
    storage = plan.tune_storage or str(plan.run_dir)
    exp_path = f"{storage}/{EXPERIMENT}"
    trainable = _trainable(plan)
    if tune.Tuner.can_restore(exp_path):
        logger.info("resuming the sweep's trials from %s", exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
        _with_interrupts(tuner)
        # Tune restores the searcher's state into the searcher it keeps on the internal tuner.
        tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
        return tuner.fit(), getattr(tune_config, "search_alg", None)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per cell
    searcher = PooledSearcher([cell_search(plan, cell) for cell in plan.cells])
    n_trials = sum(c.budget + c.seeds for c in searcher.cells.values())
    ledgers = {cell.name: _ledger(plan, cell) for cell in plan.cells}
    cb = MlflowTrialCallback(
        plan.tracking_uri,
        exp_id,
        parent_id,
        ledgers,
        {"model": a.model, "wlora.sweep_name": a.name},
        ranks={cell.name: cell.rank for cell in plan.cells},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # metric/mode live in each cell's search and scheduler (Tune refuses them twice).
            search_alg=searcher,
            scheduler=pooled_scheduler(plan),
            num_samples=n_trials,  # at most; the searcher says when every cell is done
            max_concurrent_trials=pool_slots(a, n_trials),
            reuse_actors=not a.no_reuse_actors,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage,
            callbacks=[cb, ProgressTable(a.name, interval_s=a.progress_interval, ledgers=ledgers), Interrupts()],
            failure_config=tune.FailureConfig(max_failures=a.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    return tuner.fit(), searcher


def summarize(plan: Plan, results, searcher) -> None:
    """Cell and seed summaries of the finished pool into the state; the best adapter of each cell."""
    ledgers = {cell.name: _ledger(plan, cell) for cell in plan.cells}
    grouped = trial_rows(results, ledgers, _tune_trials(results))
    for cell in plan.cells:

        def export(best: dict[str, Any], cell: Cell = cell) -> str:
            cfg = TrainConfig.from_flat({**best["config"], "method": cell.method})
            out = plan.run_dir / "adapters" / cell.name
            return export_best(cfg, plan.assets[cell.task], best["checkpoint"], out)

        summary = cell_summary(cell, grouped.get((cell.name, TRIAL), []), multi_objective=_multi(plan), export=export)
        if searcher is not None and hasattr(searcher, "optuna_states"):
            summary["optuna_states"] = searcher.optuna_states(cell.name)
        plan.state["cells"][cell.name] = summary
        if plan.args.seeds > 0 and "best_config" in summary:
            plan.state["seed_cells"][cell.name] = seed_summary(cell.name, grouped.get((cell.name, SEED_RUN), []))
    save_state(plan)


# --------------------------------------------------------------------------------------------------
# The flow


class Interrupts(Callback):
    """Tells the driver whether Tune's run ended because of Ctrl-C or SIGTERM (Tune itself only logs it).

    Tune installs its SIGINT handler before the callbacks' ``setup``: this wraps it, so the first Ctrl-C
    (or SIGTERM, e.g. a preempted head node) still lets Tune stop the trials and checkpoint the experiment,
    and is recorded in :attr:`EVENT`. A second one reaches :func:`_stop_now` (raises KeyboardInterrupt)."""

    EVENT = threading.Event()

    def setup(self, **info: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def first(sig: int, frame: Any) -> None:
            Interrupts.EVENT.set()
            print(
                "\nstopping: checkpointing the trials; the sweep will be resumable (press Ctrl-C again to stop now)",
                file=sys.stderr,
                flush=True,
            )
            signal.signal(signal.SIGTERM, _stop_now)
            if callable(tune_handler):
                tune_handler(signal.SIGINT, frame)
            signal.signal(signal.SIGINT, _stop_now)

        signal.signal(signal.SIGINT, first)
        signal.signal(signal.SIGTERM, first)


def _stop_now(sig: int, frame: Any) -> None:
    Interrupts.EVENT.set()
    raise KeyboardInterrupt


def _with_interrupts(tuner) -> None:
    """A restored tuner keeps the callbacks it was pickled with; add :class:`Interrupts` if it lacks one."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    if run_config is not None and not any(isinstance(c, Interrupts) for c in run_config.callbacks or []):
        run_config.callbacks = [*(run_config.callbacks or []), Interrupts()]


def describe_plan(plan: Plan) -> str:
    """The resolved plan, as run: cells, budget per trial, pins, space, search, resources (printed before the
    first trial and recorded as the MLflow parent's description)."""
    a = plan.args
    lines = [f"sweep {a.name}: {len(plan.cells)} cell(s), {plan.search} search"]
    per = f"{a.num_samples} trial(s) per cell" + (f" + {a.seeds} seed re-run(s)" if a.seeds else "")
    asha = (
        "no ASHA" if a.no_asha or a.multi_objective else f"ASHA grace {a.grace_period}, factor {a.reduction_factor:g}"
    )
    lines.append(f"  {per}; {asha}; search seed {a.search_seed}")
    mem = plan.memory_per_trial / 2**30
    lines.append(
        f"  per trial: {a.cpus_per_trial:g} CPU, {a.gpus_per_trial:g} GPU, {mem:.1f} GiB memory; "
        f"up to {a.max_failures} retr{'y' if a.max_failures == 1 else 'ies'} after a crash"
    )
    for cell in plan.cells:
        fixed = plan.fixed[cell.name]
        budget = f"max_steps={fixed['max_steps']}" if fixed.get("max_steps") else f"epochs={fixed.get('epochs')}"
        lines.append(f"  {cell.name}: {budget}, {plan.planned_evals[cell.name]} evaluation(s)")
        common = ("model", "data_dir", "task", "method", "epochs", "max_steps")
        pins = {k: v for k, v in fixed.items() if k not in common}
        lines.append("    pinned: " + ", ".join(f"{k}={v}" for k, v in pins.items()))
        space = plan.spaces[cell.name]
        lines.append("    searched: " + (", ".join(f"{k}={_domain_str(v)}" for k, v in space.items()) or "nothing"))
    return "\n".join(lines)


def _domain_str(dom: Any) -> str:
    from ray.tune.search.sample import Categorical, Float, Integer

    if isinstance(dom, dict) and "grid_search" in dom:
        return "grid" + str(list(dom["grid_search"]))
    if isinstance(dom, Categorical):
        return "choice" + str(list(dom.categories))
    if isinstance(dom, Float | Integer):
        kind = "log" if "LogUniform" in type(dom.get_sampler()).__name__ else ""
        return f"{type(dom).__name__.lower()}{'-' + kind if kind else ''}[{dom.lower:g}, {dom.upper:g}]"
    return repr(dom)


def resume_command(plan: Plan) -> str:
    """The exact command that continues this sweep."""
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else f"sweeps/{plan.kind}_sweep.py"
    parts = ["python", script, "--resume", "--name", plan.args.name]
    parts += ["--storage-path", str(plan.run_dir.parent)]
    if plan.args.address:
        parts += ["--address", plan.args.address]
    return shlex.join(parts)


def run_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> dict[str, Any]:
    """Plan (validates; raises before Ray starts) and execute the sweep — the importable entry point."""
    quiet_console()
    return execute(plan_sweep(args, defaults))


def _set_status(plan: Plan, status: str) -> None:
    plan.state["status"] = status
    plan.state["finished"] = status == FINISHED
    save_state(plan)


def _trials_started(plan: Plan) -> bool:
    exp = Path(plan.tune_storage or plan.run_dir) / EXPERIMENT
    return _is_uri(plan.tune_storage) or any(exp.glob("trial_*"))


def _close_children(plan: Plan, exp_id: str, parent_id: str, wait_s: float | None) -> None:
    """Every queued MLflow call done (waits for an absent server up to ``wait_s``), then no child RUNNING."""
    pending = flush_all(wait_s, say=lambda m: print(m, file=sys.stderr, flush=True))
    if pending:
        print(f"warning: {pending} MLflow calls could not be sent to {plan.tracking_uri}", file=sys.stderr)
        return
    try:
        close_open_children(plan.tracking_uri, exp_id, parent_id)
    except Exception as e:  # the store is gone: nothing more to close
        print(f"warning: could not close the sweep's MLflow runs ({type(e).__name__}: {e})", file=sys.stderr)


def execute(plan: Plan) -> dict[str, Any]:
    """Run the sweep's pool of trials (or continue it on ``--resume``), then table, adapters, report.

    Returns the state plus ``run_dir`` etc.; ``status`` is ``interrupted`` when Ctrl-C / SIGTERM stopped it
    (the trials are checkpointed and every MLflow child is closed as KILLED; ``--resume`` continues)."""
    # num_to_keep=1 snapshots the experiment at every checkpoint (what makes --resume exact); quiet
    # Tune's warning about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The trial logging queue retries through outages itself (sweeps.tracking_queue): MLflow's own retries
    # of one call (minutes, by default) would only delay its next attempt.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    quiet_console()
    t0 = time.time()
    init_ray(plan.args)
    try:
        check_cluster(plan)
        check_resources(plan.args, plan.memory_per_trial)
    except ValueError as e:
        raise InputError(str(e)) from e
    stage_models(plan)
    client, exp_id, parent_id = setup_parent(plan)
    print(describe_plan(plan), flush=True)
    print(f"  run folder {plan.run_dir}; MLflow {plan.tracking_uri}", flush=True)
    out = {"run_dir": str(plan.run_dir), "parent_run_id": parent_id, "tracking_uri": plan.tracking_uri}
    if not plan.state.get("pooled_done"):
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, _stop_now)  # Ctrl-C before Tune takes over: stop at once, same state
        Interrupts.EVENT.clear()
        try:
            _set_status(plan, RUNNING)
            results, searcher = run_pool(plan, exp_id, parent_id)
            trials = _tune_trials(results)
            if Interrupts.EVENT.is_set() or any(t.status not in ("TERMINATED", "ERROR") for t in trials):
                raise KeyboardInterrupt
            flush_all(None, say=lambda m: print(m, file=sys.stderr, flush=True))
            for cb in live_callbacks():
                cb.close_orphans(trials)
            summarize(plan, results, searcher)
        except KeyboardInterrupt:
            _close_children(plan, exp_id, parent_id, wait_s=60)
            _set_status(plan, INTERRUPTED)
            plan.state["wall_s"] = round(plan.state.get("wall_s", 0) + time.time() - t0, 1)
            save_state(plan)
            print(f"\nsweep {plan.args.name} interrupted; its trials are checkpointed. Continue it with:", flush=True)
            print(f"  {resume_command(plan)}", flush=True)
            return {**out, **plan.state}
        except BaseException:
            _close_children(plan, exp_id, parent_id, wait_s=60)
            _set_status(plan, RUNNING if _trials_started(plan) else FAILED)
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        plan.state["pooled_done"] = True
        save_state(plan)

    table_md = publish(plan.state, plan.run_dir, client, parent_id, multi_objective=_multi(plan))
    plan.state["wall_s"] = round(plan.state.get("wall_s", 0) + time.time() - t0, 1)
    _set_status(plan, FINISHED)
    client.set_terminated(parent_id, "FINISHED")
    print(table_md, flush=True)
    write_report(plan.tracking_uri, parent_id, plan.run_dir / "report")
    return {**out, **plan.state}


def _tune_trials(results) -> list:
    """The Tune trials behind a ResultGrid (status, id, config: what the MLflow callback closes by)."""
    grid = getattr(results, "_experiment_analysis", None)
    return list(getattr(grid, "trials", None) or [])


def main(
    defaults: SweepDefaults,
    argv: Sequence[str] | None = None,
    description: str = "",
    *,
    args: argparse.Namespace | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> int:
    """Entry point of ``sweeps/<kind>_sweep.py`` (``args`` already parsed by ``parser``, or ``argv``): exit
    code 2 with one line on bad input, 130 when interrupted (the sweep is resumable)."""
    parser = parser or build_parser(defaults, description)
    if args is None:
        args = parser.parse_args(argv)
    try:
        apply_preset_cli(args, parser)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    apply_smoke(args, defaults, parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_console()
    plan = None
    try:
        plan = plan_sweep(args, defaults)
        if args.dry_run:
            print(describe_plan(plan), flush=True)
            if plan.run_dir.is_dir() and not any(plan.run_dir.iterdir()):
                plan.run_dir.rmdir()
            return 0
        out = execute(plan)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        if plan is not None and plan.run_dir.is_dir() and not any(plan.run_dir.iterdir()):
            plan.run_dir.rmdir()  # refused before anything was written: leave no empty run folder behind
        return 2
    except KeyboardInterrupt:
        if plan is not None and plan.state.get("parent_run_id") and status_of(plan.state) != FINISHED:
            _set_status(plan, INTERRUPTED)
            print(f"\ninterrupted; continue the sweep with:\n  {resume_command(plan)}", file=sys.stderr)
        else:
            print("\ninterrupted before the sweep started; nothing to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if status_of(out) == INTERRUPTED else 0
