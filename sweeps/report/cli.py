"""``python -m sweeps.report``: the command line of the report. It reads a sweep's store and writes only into
``--out`` and under the sweep's own parent run, so before anything is created it checks that the store exists
and that ``--run-id`` is a sweep's parent run; ``--help`` and these checks answer before the report's heavy
imports (matplotlib, the plots, the claims' statistics)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wlora.fields import OneLineErrorParser


class _Parser(OneLineErrorParser, argparse.ArgumentParser):
    """One line (and a hint) for a bad flag, not the whole usage."""


def parser() -> argparse.ArgumentParser:
    from sweeps.claims import N_BOOTSTRAP  # numpy only

    ap = _Parser(
        prog="python -m sweeps.report",
        description="Rebuild a sweep's report (table, plots, claims, cost) from its MLflow store; it is written to "
        "--out and logged under the sweep's parent run (artifacts report/).",
    )
    ap.add_argument(
        "--tracking-uri",
        required=True,
        help="the sweep's MLflow store: sqlite:///runs/NAME/mlflow.db, a folder, or http(s)://HOST:PORT",
    )
    ap.add_argument(
        "--run-id", required=True, help="the sweep's parent run id (parent_run_id in runs/NAME/sweep_state.json)"
    )
    ap.add_argument("--out", default=None, help="output folder (default: runs/report-<first 8 characters of the id>)")
    ap.add_argument(
        "--margin",
        type=float,
        default=None,
        help="δ of the '≈' / '≥' claims for every task, in task-score units (default: each task's δ as the "
        "sweep's preset declared it, else the claims' default)",
    )
    ap.add_argument("--bootstrap", type=int, default=N_BOOTSTRAP, help=f"bootstrap resamples (default: {N_BOOTSTRAP})")
    ap.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    return ap


def check_store(uri: str) -> None:
    """The store must already exist (reading one must never create one): a SQLite file, a folder, or a
    tracking server that answers. Raises ``ValueError`` naming ``--tracking-uri``."""
    from sweeps.store import check_tracking_uri

    local = None
    if uri.startswith("sqlite:///"):
        local = Path(uri[len("sqlite:///") :])
        ok = local.is_file() and local.stat().st_size > 0
    elif uri.startswith("file:") or "://" not in uri:
        local = Path(uri.removeprefix("file://") if uri.startswith("file://") else uri.removeprefix("file:"))
        ok = local.is_dir()
    if local is not None:
        if not ok:
            raise ValueError(
                f"--tracking-uri {uri}: no MLflow store there ({local} does not exist); give the sweep's store, "
                "e.g. sqlite:///runs/NAME/mlflow.db"
            )
        return
    check_tracking_uri(uri)  # the scheme, and a server that answers


def check_parent(client: Any, uri: str, run_id: str) -> None:
    """``run_id`` must be a sweep's parent run in the store: the report logs its files under it."""
    from mlflow.exceptions import MlflowException

    from sweeps.schema import ROLE_TAG, SWEEP

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(
            f"--run-id {run_id}: no run with that id in {uri}; pass the sweep's parent_run_id "
            "(runs/NAME/sweep_state.json)"
        ) from None
    tags = run.data.tags
    if tags.get(ROLE_TAG) == SWEEP:
        return
    parent = tags.get("mlflow.parentRunId")
    what = f"a {tags[ROLE_TAG]} run, not" if tags.get(ROLE_TAG) else "not"
    fix = f"--run-id {parent}, its sweep" if parent else "the sweep's parent_run_id (runs/NAME/sweep_state.json)"
    raise ValueError(
        f"--run-id {run_id} is {what} a sweep's parent run (tag {ROLE_TAG}={SWEEP}), so no report is written "
        f"to it; pass {fix}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = parser()
    args = ap.parse_args(argv)
    if args.margin is not None and not (args.margin >= 0 and math.isfinite(args.margin)):
        ap.error(f"--margin must be a finite number >= 0, got {args.margin}")
    if args.bootstrap < 100:
        ap.error(f"--bootstrap must be >= 100, got {args.bootstrap}")
    try:
        check_store(args.tracking_uri)
        from mlflow.tracking import MlflowClient

        check_parent(MlflowClient(tracking_uri=args.tracking_uri), args.tracking_uri, args.run_id)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from sweeps.report.page import build_report

    out = args.out or f"runs/report-{args.run_id[:8]}"
    paths = build_report(
        args.tracking_uri,
        args.run_id,
        out,
        margin=args.margin,
        n_boot=args.bootstrap,
        boot_seed=args.bootstrap_seed,
    )
    print(Path(paths["table_md"]).read_text())
    print(f"report written to {out} and logged to run {args.run_id} (artifacts report/)")
    return paths
