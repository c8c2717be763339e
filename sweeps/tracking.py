"""MLflow wiring: tracking-URI checks, the sweep's parent run, one child run per trial (batched).

Schema (``sweeps/report.py`` reads it):

* parent run per sweep: tags ``wlora.role=sweep``, ``git_commit``, ``model``, ``data_dir``,
  ``wlora.sweep_name``; params = the sweep settings; artifacts ``results/table.{md,csv}`` + ``table_long.csv`` and
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
from trainables.runner import CELL_KEY, FINAL_KEY, ROLE_KEY
from wlora.run_config import OBJECTIVE

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

    A pooled sweep runs every cell in one Tune run: each child's ``method`` / ``task`` / ``rank`` /
    ``wlora.cell`` tags and its role (``trial`` or ``seed_run``) come from the trial's own config.

    Args:
        tracking_uri: the MLflow tracking URI.
        experiment_id: experiment of the parent run.
        parent_run_id: the sweep's parent run.
        ledgers: cell name → early stops recorded by that cell's ASHA (status ``asha_stopped``).
        tags: tags every child gets (``model``, ``wlora.sweep_name``).
        ranks: cell name → the rank its children are tagged with (a searched rank: the trial's ``r``).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        ledgers: Mapping[str, EarlyStopLedger],
        tags: Mapping[str, str],
        ranks: Mapping[str, int | None] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.ledgers = dict(ledgers)
        self.tags = dict(tags)
        self.ranks = dict(ranks or {})
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

    @staticmethod
    def role_of(trial) -> str:
        return str((trial.config or {}).get(ROLE_KEY, "trial"))

    def trial_tags(self, trial) -> dict[str, str]:
        """The tags of ``trial``'s child run that depend on its cell."""
        config = trial.config or {}
        cell = str(config.get(CELL_KEY, ""))
        rank = self.ranks.get(cell)
        return {
            **self.tags,
            "method": str(config.get("method", "")),
            "task": str(config.get("task", "")),
            "rank": str(rank if rank is not None else config.get("r", "")),
            "wlora.cell": cell,
        }

    def _find_existing(self, trial_id: str, role: str) -> tuple[str, float] | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.trial_id = '{trial_id}'",
            max_results=5,
        )
        runs = [r for r in runs if r.data.tags.get("wlora.role") == role]
        if not runs:
            return None
        run = runs[0]
        history = self.client.get_metric_history(run.info.run_id, OBJECTIVE)
        last = max((m.step for m in history), default=-1)
        return run.info.run_id, float(last)

    def run_id(self, trial) -> str:
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        role = self.role_of(trial)
        found = self._find_existing(tid, role)
        if found is not None:
            self._runs[tid], self._last_step[tid] = found
            self.client.set_tag(found[0], "status", "running")
            return found[0]
        config = {k: v for k, v in trial.config.items() if k not in (CELL_KEY, ROLE_KEY)}
        base = self.trial_tags(trial)
        tags = {
            **base,
            "mlflow.parentRunId": self.parent_run_id,
            "wlora.role": role,
            "trial_id": tid,
            "seed": str(config.get("seed", "")),
            "status": "running",
        }
        name = f"{base['method']}-{base['task']}-r{base['rank']}-{tid}"
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
        ledger = self.ledgers.get(str((trial.config or {}).get(CELL_KEY, "")))
        stopped = ledger is not None and trial.trial_id in ledger
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
    """One live table of the whole sweep (cell, trial, role, status, step, metric), printed at most every
    ``interval_s`` seconds, and a summary per cell when the run ends."""

    def __init__(self, title: str, interval_s: float = 20.0, out: Callable = print):
        self.title = title
        self.interval_s = interval_s
        self.out = out
        self._last = 0.0

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
        self.print_table(trials, final=True)

    @staticmethod
    def status(trial) -> str:
        r = trial.last_result or {}
        if trial.status == "TERMINATED" and r and not r.get(FINAL_KEY):
            return "STOPPED"  # by its cell's ASHA
        return trial.status

    def print_table(self, trials, final: bool = False) -> None:
        self._last = time.monotonic()
        header = ["cell", "trial", "role", "status", "step", OBJECTIVE]
        rows = []
        for t in sorted(trials, key=lambda t: (str((t.config or {}).get(CELL_KEY, "")), t.trial_id)):
            r = t.last_result or {}
            cfg = t.config or {}
            value = r.get(OBJECTIVE)
            rows.append(
                [
                    str(cfg.get(CELL_KEY, "")),
                    t.trial_id,
                    "seed" if cfg.get(ROLE_KEY) == "seed_run" else "search",
                    self.status(t),
                    str(r.get("step", "")),
                    f"{value:.4f}" if isinstance(value, float) else "",
                ]
            )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[3]] = counts.get(row[3], 0) + 1
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        lines = [f"== {self.title}: {len(rows)} trials ({summary}) =="]
        lines += _columns(header, rows)
        if final:
            lines += ["", f"== {self.title}: per cell ==", *_columns(*_cell_summary(rows))]
        self.out("\n".join(lines), flush=True)


def _cell_summary(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    header = ["cell", "trials", "completed", "stopped", "failed", f"best {OBJECTIVE}"]
    cells: dict[str, list[list[str]]] = {}
    for row in rows:
        if row[2] == "search":
            cells.setdefault(row[0], []).append(row)
    out = []
    for cell, rs in cells.items():
        values = [float(r[5]) for r in rs if r[5] and r[3] == "TERMINATED"]
        out.append(
            [
                cell,
                str(len(rs)),
                str(sum(r[3] == "TERMINATED" for r in rs)),
                str(sum(r[3] == "STOPPED" for r in rs)),
                str(sum(r[3] == "ERROR" for r in rs)),
                f"{max(values):.4f}" if values else "",
            ]
        )
    return header, out


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines
