"""What a sweep prints: the resolved plan before the first trial, the command that resumes it, and a console
free of what a user does not need (progress bars, Tune's own restore hint, urllib3's retry lines)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
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
