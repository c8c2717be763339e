"""The run folder's state: ``sweep_state.json`` (its one home), the sweep's status, and the checks
``--resume`` makes before it trusts anything on disk.

Status of a sweep (``state["status"]``):

* ``planned`` — the MLflow parent exists, no trial has started yet;
* ``running`` — the pool of trials started (a driver that died here left a resumable sweep);
* ``interrupted`` — Ctrl-C / SIGTERM: Tune checkpointed the experiment; ``--resume`` continues it;
* ``failed`` — it stopped before any trial ran (bad resources, an error while starting): never picked up by
  a bare ``--resume``;
* ``finished`` — every trial ended and the tables were published.

``--resume`` reads the state, the Tune experiment (``pool/``) and the MLflow store first; what it cannot
read is one :class:`StateError` that names the file and says what to do.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from pathlib import Path
from typing import Any

STATE_FILE = "sweep_state.json"
#: The sweep's one Tune experiment inside the run folder.
EXPERIMENT = "pool"

PLANNED, RUNNING, INTERRUPTED, FAILED, FINISHED = "planned", "running", "interrupted", "failed", "finished"
#: Statuses a bare ``--resume`` picks up.
RESUMABLE = (RUNNING, INTERRUPTED)


class StateError(ValueError):
    """A run folder that ``--resume`` cannot use (the message names the file and the way out)."""


def status_of(state: dict[str, Any]) -> str:
    """The sweep's status (state files from before ``status`` existed: by their ``finished`` flag)."""
    if "status" in state:
        return str(state["status"])
    return FINISHED if state.get("finished") else RUNNING


def load_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(f"{path} does not exist: {run_dir} holds no sweep to resume") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateError(
            f"{path} is damaged ({e}); restore it from a backup, or start a new sweep with another --name"
        ) from None
    if not isinstance(state, dict) or "args" not in state:
        raise StateError(f"{path} is not a sweep state (no 'args'); start a new sweep with another --name")
    return state


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``sweep_state.json`` atomically (a crash leaves the previous state, never half a file)."""
    tmp = Path(run_dir) / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(Path(run_dir) / STATE_FILE)


def latest_resumable(storage: Path) -> Path | None:
    """The most recently touched run folder under ``storage`` whose sweep is running or interrupted (a
    folder whose state cannot be read is skipped here and named when resumed by ``--name``)."""
    runs = sorted(
        (p.parent for p in Path(storage).glob(f"*/{STATE_FILE}")),
        key=lambda p: (p / STATE_FILE).stat().st_mtime,
        reverse=True,
    )
    for run in runs:
        try:
            state = json.loads((run / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and status_of(state) in RESUMABLE:
            return run
    return None


def check_sqlite_store(uri: str) -> None:
    """A ``sqlite:///`` MLflow store that exists must be a readable MLflow database."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///") :])
    if not db.exists():
        return
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            ok = con.execute("PRAGMA quick_check").fetchone()
            con.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.Error as e:
        raise StateError(
            f"MLflow store {db} is damaged ({e}); restore it from a backup, or start a new sweep with another --name"
        ) from None
    if not ok or ok[0] != "ok":
        raise StateError(f"MLflow store {db} is damaged (integrity check: {ok}); restore it or start a new sweep")


def check_experiment(exp_dir: Path) -> bool:
    """Whether the Tune experiment ``exp_dir`` exists; raises :class:`StateError` when it exists but a file
    Tune restores from cannot be read (truncated experiment state or ``tuner.pkl``)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return False
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    tuner = exp_dir / "tuner.pkl"
    if not states and not tuner.exists():
        return False
    for path in [*states, tuner]:
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            else:
                with path.open("rb") as f:
                    pickle.load(f)
        except FileNotFoundError:
            raise StateError(f"{path} is missing: the Tune experiment {exp_dir} cannot be restored") from None
        except Exception as e:  # any unpickling error means the same: unusable
            raise StateError(
                f"{path} is damaged ({type(e).__name__}: {e}); the sweep's trials cannot be restored from "
                f"{exp_dir}. Restore the folder, or start a new sweep with another --name"
            ) from None
    return True
