"""What a sweep prints: the resolved plan before the first trial, the command that resumes it, and a console
free of what a user does not need (progress bars, Tune's own restore hint, urllib3's retry lines)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import urllib.parse
import warnings
from typing import Any

from sweeps.plan import Plan

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


def quiet_console(verbose: bool = False) -> None:
    """The console a user needs: the plan, one progress table, the summary (idempotent; set before the plan
    loads the model). Without ``verbose``, libraries' own chatter — Ray's start-up and network lines, Tune's
    configuration box and TensorBoard hint, MLflow's table-creation lines, library deprecation warnings and
    the trial processes' output — stays out of it; ``--verbose`` lets all of it through."""
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
    if verbose:
        return
    for key, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(key, value)
    for name in ("ray", "ray.tune", "ray.train", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Token authentication is enabled for this Ray cluster …": Ray's default, said at every start.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(peft|transformers|torch)\.")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


#: Environment that keeps Tune's output engine (its configuration box, TensorBoard hint and per-trial result
#: boxes) off the console; ``--verbose`` leaves it as Ray sets it.
QUIET_LIBRARIES = {"RAY_AIR_NEW_OUTPUT": "0"}


def describe_plan(plan: Plan) -> str:
    """The resolved plan, as run: cells, budget per trial, pins, space, search, resources (printed before the
    first trial and recorded as the MLflow parent's description)."""
    a = plan.args
    lines = [f"sweep {a.name}: {len(plan.cells)} cell(s), {plan.search} search"]
    per = f"{a.num_samples} trial(s) per cell" + (f" + {a.seeds} seed re-run(s)" if a.seeds else "")
    if getattr(a, "seeds_auto", False):
        per = (
            f"{a.num_samples} trial(s) per cell + seeds auto: {' → '.join(map(str, a.seed_schedule))} seed re-runs "
            f"while a claim on the cell is open ({a.seed_looks} looks at most, each at α / {a.seed_looks})"
        )
    if getattr(a, "protocol", "papers") == "heldout":
        per += f"; protocol heldout ({a.holdout_size:g} of the training data scores every choice; seeds report dev)"
    asha = (
        "no ASHA" if a.no_asha or a.multi_objective else f"ASHA grace {a.grace_period}, factor {a.reduction_factor:g}"
    )
    lines.append(f"  {per}; {asha}; search seed {a.search_seed}")
    lines += race_lines(plan)
    lines += claim_lines(plan)
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


def race_lines(plan: Plan) -> list[str]:
    """``--race-top``: who races, the stopping rule and its cost (at most the race budget per cell)."""
    from sweeps.flags import race_budget

    a = plan.args
    budget = race_budget(a)
    if not budget:
        return []
    top, seeds = int(a.race_top), int(a.race_seeds)
    if budget < 2 * top * seeds:  # room for one round only: no stopping rule to state
        how = f"get {seeds} extra seed(s) each (one round)"
    else:
        how = (
            f"get {seeds} extra seed(s) a round until the leader's mean beats the runner-up's by > {a.race_k:g} "
            "pooled standard errors"
        )
    if int(getattr(a, "seeds", 0) or 0) <= 0 and not getattr(a, "seeds_auto", False):
        reuse = ""
    elif getattr(a, "protocol", "papers") == "heldout":
        reuse = "; its race runs score held-out and the seed re-runs dev, so none is reused"
    else:
        reuse = "; the seed re-runs reuse the pick's race runs"
    return [
        f"  race: each cell's top {top} candidates (of its search trials that trained to the end) {how}; pick by "
        f"mean; at most {budget} race run(s) per cell, {budget * len(plan.cells)} in all (full budget, no ASHA)"
        f"{reuse}; --race-top 0: no race"
    ]


def claim_lines(plan: Plan) -> list[str]:
    """Under ``--seeds auto``: per claim and task, δ and its meaning, the seeds per arm needed for 80 % power
    under the preset's prior spread, and whether ``--max-seeds`` reaches it (:func:`sweeps.claims.decidability`)."""
    a = plan.args
    if not getattr(a, "seeds_auto", False):
        return []
    from sweeps import claims

    tasks = list(dict.fromkeys(c.task for c in plan.cells))
    rows = claims.decidability(a.methods, tasks, a.claim_margins, a.claim_prior_sd, a.max_seeds, a.seed_looks)
    head = (
        f"  claims (both directions of {2 * len(rows)} tests in one Holm family, α = {claims.ALPHA:g}; futility: "
        f"a claim stops getting seeds when its conditional power at {a.max_seeds} seeds is < "
        f"{claims.FUTILITY_FLOOR:g}):"
    )
    return [head, *claims.decidability_lines(rows, a.max_seeds)]


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


def command_line() -> str:
    """The command this sweep was started with (the MLflow parent's description starts with it)."""
    return shlex.join(["python", *sys.argv]) if sys.argv and sys.argv[0] else "(from Python)"


def resume_command(plan: Plan) -> str:
    """The exact command that continues this sweep."""
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else f"sweeps/{plan.kind}_sweep.py"
    parts = ["python", script, "--resume", "--name", plan.args.name]
    parts += ["--storage-path", str(plan.run_dir.parent)]
    if plan.args.address:
        parts += ["--address", plan.args.address]
    return shlex.join(parts)


def mlflow_link(tracking_uri: str, experiment_id: str, parent_run_id: str, port: int = 5000) -> tuple[str, str]:
    """``(command, url)``: how to open this sweep's trials in the MLflow UI. A local store needs ``mlflow ui``
    (the command; empty for a server, which is already up). The URL opens the experiment's training-runs
    table (MLflow 3 opens experiments in its GenAI view otherwise) filtered to this sweep's child runs — one
    row per trial, not nested under the parent — best ``eval_main`` first."""
    query = urllib.parse.urlencode(
        {
            "workflowType": "machine_learning",
            "searchFilter": f"tags.mlflow.parentRunId = '{parent_run_id}'",
            "orderByKey": "metrics.`eval_main`",
            "orderByAsc": "false",
        },
        quote_via=urllib.parse.quote,
    )
    if tracking_uri.startswith(("http://", "https://")):
        return "", f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
    command = shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--port", str(port)])
    return command, f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?{query}"


def final_summary(plan: Plan, experiment_id: str, parent_run_id: str) -> str:
    """Where everything is, printed as the sweep's last lines: the table, the report and the MLflow UI."""
    run = plan.run_dir
    command, url = mlflow_link(plan.tracking_uri, experiment_id, parent_run_id)
    lines = [
        f"results: {run / 'results' / 'table.md'}  (also table.csv, table_long.csv)",
        f"report:  {run / 'report' / 'report.md'}  (pareto.png, curves_<task>.png, selection/stability plots, cost.md)",
        f"adapters: {run / 'adapters'}  (the best PEFT adapter per cell)",
    ]
    if command:
        lines.append(f"MLflow:  {command}")
        lines.append(f"         then open {url}")
    else:
        lines.append(f"MLflow:  {url}")
    return "\n".join(lines)
