"""Step 3 of a sweep, run: Ray up, cluster and resource checks, the MLflow parent, then ONE Tune run for every
cell (:mod:`sweeps.tune_run`), and what happens when it ends: finished (tables, adapters, report), interrupted
(resumable, exit 130) or failed.

Every cell's trials and its ``--seeds`` re-runs draw from one pool of trial slots (``sweeps.pool``): one
Tune run whose searcher holds one search per cell and whose scheduler holds one ASHA per cell, so no slot
stays idle while any cell still has trials to run, and Tune's own experiment restore (``--resume`` after a
driver crash), retries and actor reuse cover the whole sweep. The run's Tune experiment is ``<run>/pool``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps.console import QUIET, command_line, describe_plan, final_summary, quiet_console, resume_command
from sweeps.flags import SweepDefaults, apply_preset_cli, apply_smoke, build_parser
from sweeps.interrupts import EXIT_INTERRUPTED, Interrupts, stop_now
from sweeps.plan import InputError, Plan, is_uri, plan_sweep, save_state
from sweeps.resources import check_resources, planned_nodes
from sweeps.results import publish, write_report
from sweeps.schema import ROLE_TAG, SWEEP, SWEEP_NAME_TAG
from sweeps.state import EXPERIMENT, FAILED, FINISHED, INTERRUPTED, PLANNED, RUNNING, status_of
from sweeps.store import artifact_root, close_open_children, get_experiment_id, git_commit
from sweeps.tracking import live_callbacks, log_params
from sweeps.tracking_queue import flush_all
from sweeps.tune_run import multi_objective, run_pool, summarize, tune_trials
from sweeps.verdicts import SEED_LOOKS_ARTIFACT

logger = logging.getLogger("sweeps")


def init_ray(args: argparse.Namespace) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        # Trial processes' own output: --verbose; a failed trial's error reaches the console as its reason.
        "log_to_driver": bool(getattr(args, "verbose", False)),
        "logging_level": logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        "runtime_env": {"env_vars": QUIET},
    }
    if args.address:
        kwargs["address"] = args.address
    else:
        if args.num_cpus:
            kwargs["num_cpus"] = args.num_cpus
        if getattr(args, "num_gpus", None) is not None:
            kwargs["num_gpus"] = args.num_gpus
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
            where = plan.args.storage_path if is_uri(plan.args.storage_path) else str(plan.run_dir.parent)
            checks.check_cluster_storage(where, plan.tracking_uri, plan.args.num_nodes)
        except ValueError as e:
            raise InputError(str(e)) from e


def preflight(plan: Plan, connect: bool = False) -> None:
    """What the run checks once Ray is up, checked before it starts: a trial's CPUs, GPUs and memory against
    the nodes (local Ray's as Ray will declare them, and the node types ``ray up`` may add) and the multi-node
    storage rules. With ``--address`` only the running cluster knows its nodes: ``connect`` (``--dry-run``)
    joins it for the check and leaves again; without it, the run checks once it has joined."""
    nodes = planned_nodes(plan.args)
    try:
        if nodes is not None:
            check_cluster(plan)
            check_resources(plan.args, plan.memory_per_trial, nodes)
        elif connect:
            import ray

            init_ray(plan.args)
            try:
                check_cluster(plan)
                check_resources(plan.args, plan.memory_per_trial)
            finally:
                ray.shutdown()
    except ValueError as e:
        raise InputError(str(e)) from e


def setup_parent(plan: Plan):
    """The sweep's MLflow parent run (created once; ``--resume`` reuses it) → (client, experiment id, run id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan.tracking_uri)
    exp_id = get_experiment_id(client, plan.args.experiment, artifact_root(plan.tracking_uri))
    if plan.state.get("parent_run_id"):
        return client, exp_id, plan.state["parent_run_id"]
    a = plan.args
    tags = {
        ROLE_TAG: SWEEP,
        "git_commit": git_commit(),
        "model": a.model,
        "data_dir": str(a.data_dir),
        SWEEP_NAME_TAG: a.name,
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
    client.set_tag(pid, "mlflow.note.content", f"command: {command_line()}\n\n{describe_plan(plan)}")
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
    from wlora.data.registry import get_spec

    return get_spec(task).folders[0]


# --------------------------------------------------------------------------------------------------
# The flow


def run_sweep(args: argparse.Namespace, defaults: SweepDefaults) -> dict[str, Any]:
    """Plan (validates; raises before Ray starts) and execute the sweep — the importable entry point."""
    quiet_console(getattr(args, "verbose", False))
    return execute(plan_sweep(args, defaults))


def _set_status(plan: Plan, status: str) -> None:
    plan.state["status"] = status
    plan.state["finished"] = status == FINISHED
    save_state(plan)


def _trials_started(plan: Plan) -> bool:
    exp = Path(plan.tune_storage or plan.run_dir) / EXPERIMENT
    return is_uri(plan.tune_storage) or any(exp.glob("trial_*"))


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
    quiet_console(plan.args.verbose)
    t0 = time.time()
    preflight(plan)  # what needs no Ray, before Ray starts
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
        signal.signal(signal.SIGINT, stop_now)  # Ctrl-C before Tune takes over: stop at once, same state
        Interrupts.EVENT.clear()
        try:
            _set_status(plan, RUNNING)
            results, searcher = run_pool(plan, exp_id, parent_id)
            trials = tune_trials(results)
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

    if plan.state.get("seed_looks"):
        # what --seeds auto decided at each look (futility included): read by the report's verdict pages
        client.log_text(parent_id, json.dumps(plan.state["seed_looks"], indent=1, default=str), SEED_LOOKS_ARTIFACT)
    table_md = publish(plan.state, plan.run_dir, client, parent_id, multi_objective=multi_objective(plan))
    plan.state["wall_s"] = round(plan.state.get("wall_s", 0) + time.time() - t0, 1)
    _set_status(plan, FINISHED)
    client.set_terminated(parent_id, "FINISHED")
    print(table_md, flush=True)
    write_report(plan.tracking_uri, parent_id, plan.run_dir / "report")
    print(final_summary(plan, exp_id, parent_id), flush=True)
    return {**out, **plan.state}


def _remove_empty(*folders: Path | None) -> None:
    """Remove each folder that exists and is empty (the run folder, then the storage folder made for it)."""
    for folder in folders:
        if folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


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
    quiet_console(args.verbose)
    plan = None
    storage = None if is_uri(args.storage_path) else Path(args.storage_path).expanduser().resolve()
    new_storage = storage is not None and not storage.exists()
    if args.forecast is not None:
        from sweeps.forecast import run_forecast

        try:
            print(run_forecast(args), flush=True)
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        plan = plan_sweep(args, defaults)
        if args.dry_run:
            preflight(plan, connect=True)
            print(describe_plan(plan), flush=True)
            _remove_empty(plan.run_dir, storage if new_storage else None)
            return 0
        out = execute(plan)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        # refused before anything was written: leave no empty run folder (nor a storage folder made for it)
        _remove_empty(plan.run_dir if plan is not None else None, storage if new_storage else None)
        return 2
    except KeyboardInterrupt:
        if plan is not None and plan.state.get("parent_run_id") and status_of(plan.state) != FINISHED:
            _set_status(plan, INTERRUPTED)
            print(f"\ninterrupted; continue the sweep with:\n  {resume_command(plan)}", file=sys.stderr)
        else:
            print("\ninterrupted before the sweep started; nothing to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    code = EXIT_INTERRUPTED if status_of(out) == INTERRUPTED else 0
    # Everything is saved: a Ctrl-C while Ray shuts down (at exit) ends the process at once, quietly.
    signal.signal(signal.SIGINT, lambda sig, frame: os._exit(code or EXIT_INTERRUPTED))
    return code
