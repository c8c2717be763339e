"""MLflow wiring: tracking-URI checks, the sweep's parent run, one child run per trial (batched).

Schema (``sweeps/report.py`` reads it):

* parent run per sweep: tags ``wlora.role=sweep``, ``git_commit``, ``model``, ``data_dir``,
  ``wlora.sweep_name``; params = the sweep settings; artifacts ``results/table.{md,csv}`` and
  ``best_adapter/<task>/<method>/`` (a PEFT adapter).
* child run per trial, nested (``mlflow.parentRunId``): tags ``wlora.role=trial`` (``seed_run`` for
  ``--seeds`` re-runs), ``method``, ``task``, ``model``, ``rank``, ``trial_id``, ``seed``,
  ``status`` ∈ {running, completed, asha_stopped, failed}; params = the trial's flat config; metrics
  by optimizer step with the runner's names; artifact ``selection.json`` (the method's report).

Every Tune report becomes ONE ``log_batch`` call (the stock ``MLflowLoggerCallback`` makes one call
per metric). A trial restarted by ``--resume`` finds its child run by ``trial_id`` and skips steps it
already logged, so children are never duplicated.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from sweeps.search import EarlyStopLedger
from trainables.runner import FINAL_KEY

logger = logging.getLogger(__name__)

#: Keys Tune adds to every result; not logged as metrics.
TUNE_KEYS = frozenset(
    {
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "pid",
        "done",
        "date",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "checkpoint_dir_name",
        "should_checkpoint",
        "trial_id",
        "experiment_tag",
        "step",
        FINAL_KEY,
    }
)


def default_tracking_uri(run_dir: Path) -> str:
    """The embedded default: a SQLite store inside the run folder."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast (one ValueError) if ``uri`` cannot be used; MLflow itself retries for minutes."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status >= 400:
                    raise OSError(f"HTTP {resp.status}")
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                raise ValueError(f"MLflow tracking server {uri} is unhealthy ({url}: HTTP {e.code})") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"MLflow tracking URI {uri} is unreachable ({url}: {e})") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.parent.is_dir():
            raise ValueError(f"MLflow tracking URI {uri}: folder {db.parent} does not exist")
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        if path.exists() and not path.is_dir():
            raise ValueError(f"MLflow tracking URI {uri}: {path} is not a folder")


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the repository holding this package (``+dirty`` if tracked files changed)."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def get_experiment_id(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root is not None else None
    return client.create_experiment(name, artifact_location=location)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(str(k), _param_str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow's per-batch param limit
        client.log_batch(run_id, params=items[i : i + 100])


def _param_str(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:6000]


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The runner's metrics in a Tune result (finite numbers, Tune bookkeeping left out)."""
    out = {}
    for k, v in result.items():
        if k in TUNE_KEYS or k.startswith("config/") or isinstance(v, bool):
            continue
        if isinstance(v, int | float) and math.isfinite(v):
            out[k] = float(v)
    return out


class MlflowTrialCallback(Callback):
    """Child run per trial under ``parent_run_id``; one ``log_batch`` per reported evaluation.

    Args:
        tracking_uri: the MLflow tracking URI.
        experiment_id: experiment of the parent run.
        parent_run_id: the sweep's parent run.
        ledger: early stops recorded by the ASHA scheduler (status ``asha_stopped``).
        tags: tags every child gets (``method``, ``task``, ``model``, ``rank``, ``wlora.sweep_name``).
        role: ``trial`` or ``seed_run``.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        ledger: EarlyStopLedger,
        tags: Mapping[str, str],
        role: str = "trial",
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.ledger = ledger
        self.tags = dict(tags)
        self.role = role
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._last_step: dict[str, float] = {}
        #: Seconds spent in MLflow calls for per-evaluation logging, and how many calls (bench).
        self.log_seconds = 0.0
        self.log_calls = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_runs"], state["_last_step"] = {}, {}
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    # ----- run lookup -----

    def _find_existing(self, trial_id: str) -> tuple[str, float] | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.trial_id = '{trial_id}'",
            max_results=5,
        )
        runs = [r for r in runs if r.data.tags.get("wlora.role") == self.role]
        if not runs:
            return None
        run = runs[0]
        history = self.client.get_metric_history(run.info.run_id, "eval_main")
        last = max((m.step for m in history), default=-1)
        return run.info.run_id, float(last)

    def run_id(self, trial) -> str:
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        found = self._find_existing(tid)
        if found is not None:
            self._runs[tid], self._last_step[tid] = found
            self.client.set_tag(found[0], "status", "running")
            return found[0]
        config = dict(trial.config)
        tags = {
            **self.tags,
            "mlflow.parentRunId": self.parent_run_id,
            "wlora.role": self.role,
            "trial_id": tid,
            "seed": str(config.get("seed", "")),
            "status": "running",
        }
        name = f"{self.tags.get('method', '')}-{self.tags.get('task', '')}-r{self.tags.get('rank', '')}-{tid}"
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        log_params(self.client, run.info.run_id, config)
        self._runs[tid], self._last_step[tid] = run.info.run_id, -1.0
        return run.info.run_id

    # ----- Tune hooks (driver) -----

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self.run_id(trial)
        if result.get(FINAL_KEY):
            return  # the summary repeats the last evaluation
        step = result.get("step", result.get("training_iteration", 0))
        if step <= self._last_step.get(trial.trial_id, -1):
            return  # already logged before an interruption (resume)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(step)) for k, v in numeric_metrics(result).items()]
        t0 = time.perf_counter()
        self.client.log_batch(run_id, metrics=metrics)
        self.log_seconds += time.perf_counter() - t0
        self.log_calls += 1
        self._last_step[trial.trial_id] = step

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self.run_id(trial)
        result = trial.last_result or {}
        stopped = trial.trial_id in self.ledger
        status = "asha_stopped" if stopped else "completed"
        final = numeric_metrics(result)
        keep = ("trainable_params", "trainable_pct", "method_params", "method_pct", "active_adapters")
        metrics = [Metric(f"final_{k}", final[k], int(time.time() * 1000), 0) for k in keep if k in final]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag("status", status)])
        report = result.get("method_report")
        if isinstance(report, str):
            self.client.log_text(run_id, report, "selection.json")
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self.run_id(trial)
        error = ""
        if trial.error_file and Path(trial.error_file).is_file():
            error = Path(trial.error_file).read_text(errors="replace").strip().splitlines()[-1:]
            error = error[0] if error else ""
        self.client.log_batch(run_id, tags=[RunTag("status", "failed"), RunTag("error", error[:5000])])
        self.client.set_terminated(run_id, "FAILED")


class ProgressTable(Callback):
    """A compact live table of the current cell's trials, printed at most every ``interval_s``."""

    def __init__(self, title: str, columns: list[str], interval_s: float = 20.0, out: Callable = print):
        self.title = title
        self.columns = columns
        self.interval_s = interval_s
        self.out = out
        self._last = 0.0
        self._ledger: EarlyStopLedger | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["out"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out = print

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.print_table(trials)

    def on_experiment_end(self, trials, **info) -> None:
        self.print_table(trials)

    def print_table(self, trials) -> None:
        self._last = time.monotonic()
        header = ["trial", "status", "iter", "step", "eval_main", *self.columns]
        rows = []
        for t in trials:
            r = t.last_result or {}
            cfg = t.config or {}
            status = t.status
            if status == "TERMINATED" and r and not r.get(FINAL_KEY):
                status = "STOPPED"
            rows.append(
                [
                    t.trial_id,
                    status,
                    str(r.get("training_iteration", "")),
                    str(r.get("step", "")),
                    f"{r['eval_main']:.4f}" if isinstance(r.get("eval_main"), float) else "",
                    *[_fmt(cfg.get(c)) for c in self.columns],
                ]
            )
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
        lines = [f"== {self.title} ==", "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        self.out("\n".join(lines), flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)
