"""Where a sweep's MLflow store is and what the driver does with it directly: the default URI, the check that
it can be used (before anything starts), the experiment, the commit a sweep ran at, and closing every child
still RUNNING when the driver exits."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeps.schema import INTERRUPTED, STATUS_TAG


def default_tracking_uri(run_dir: Path) -> str:
    """The embedded default: a SQLite store inside the run folder."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


#: Store schemes MLflow knows without plugins (the registry below adds any a plugin brings).
KNOWN_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def tracking_schemes() -> list[str]:
    """The URI schemes MLflow can open a tracking store for (a plain path has none)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        found = [s for s in _tracking_store_registry._registry if s]
    except (ImportError, AttributeError):
        found = []
    return sorted(set(found) | set(KNOWN_SCHEMES))


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast (one ValueError) if ``uri`` cannot be used; MLflow itself retries for minutes."""
    scheme = uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else ""
    if scheme and scheme not in tracking_schemes():
        raise ValueError(
            f"--tracking-uri {uri}: MLflow has no store for {scheme}://; use http(s)://HOST:PORT (a tracking "
            "server), sqlite:///PATH/mlflow.db, a folder, or a database URI (postgresql://, mysql://, mssql://)"
        )
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
            raise ValueError(
                f"--tracking-uri {uri}: the MLflow server is unreachable ({url}: {e}); start it, or pass another "
                "--tracking-uri (or none: a SQLite store in the run folder)"
            ) from None
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


def close_open_children(tracking_uri: str, experiment_id: str, parent_run_id: str) -> int:
    """Mark every child of the sweep still RUNNING as ``interrupted`` / KILLED (any exit of the driver: no
    child stays RUNNING); returns how many. ``--resume`` reopens those whose trials continue."""
    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    for run in runs:
        client.set_tag(run.info.run_id, STATUS_TAG, INTERRUPTED)
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def artifact_root(tracking_uri: str) -> Path | None:
    """Where a new experiment keeps its artifacts: beside a local store (``sqlite:///DIR/x.db`` →
    ``DIR/mlartifacts``; a file store keeps its own), never in the folder the command ran from; a tracking
    server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
    return None
