"""A real two-node Ray cluster on one machine, for the `cluster` tests (run inside a loopback-only netns).

Ray binds the machine's interface, not 127.0.0.1, unless the machine has no other: so the tests start this
script with :func:`netns_command` (``unshare --net --pid --fork --mount-proc``), where ``lo`` is the only
interface; the PID namespace also ends every process Ray started when the script exits, however it exits.
Both nodes keep their files under the given folder (``RAY_TMPDIR``), use token authentication with a
throw-away token (Ray 2.60 turns it on, and a node without the token cannot join), and get their own
``WLORA_STAGE_DIR`` as if they had separate disks.

Usage (inside the namespace)::

    python tests/cluster_harness.py SCENARIO WORKDIR   # writes WORKDIR/result.json

Scenarios: ``spread`` (multi-node checks, staging, a Tune run over both nodes), ``kill`` (a Tune run whose
worker node is killed after it reported progress) and ``sweep`` (the real GLUE sweep, two cells in one pool of
two slots, one per node; the worker node is killed mid-trial). :mod:`tests.test_cluster` asserts on ``result.json``.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Node death is noticed after period × threshold: keep it to seconds, not Ray's default half minute.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}


def netns_command(argv: list[str]) -> list[str]:
    """``argv`` run in new net + PID namespaces with only ``lo`` (up); its processes die with it.

    bash stays PID 1 of the namespace (it reaps orphans); when it exits the kernel kills what is left, and
    ``--kill-child`` ends the namespace if the ``unshare`` process itself is killed (e.g. on a test timeout).
    """
    inner = "ip link set lo up && " + " ".join(shlex.quote(a) for a in argv)
    return ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "bash", "-c", inner]


def start_cluster(workdir: Path, *, worker_ip: str = "127.0.0.1", cpus: int = 1):
    """Head + one worker node (``cpus`` CPUs each, custom resources ``head``/``worker``); returns (cluster, worker).

    Call before anything else imports Ray in this process: the auth mode is read from the environment.
    """
    tmp = workdir / "ray"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_TMPDIR"] = str(workdir)  # Ray's default temp dir becomes <workdir>/ray
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)  # this run only; inherited by every Ray process
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": cpus,
            "resources": {"head": 1},
            "node_ip_address": "127.0.0.1",  # skips Ray's (offline: slow) probe for the outward interface
            "temp_dir": str(tmp),
            "include_dashboard": False,
            "env_vars": {"WLORA_STAGE_DIR": str(workdir / "stage-head")},
            "_system_config": FAST_FAILURE_DETECTION,
        },
    )
    worker = cluster.add_node(
        num_cpus=cpus,
        resources={"worker": 1},
        node_ip_address=worker_ip,
        env_vars={"WLORA_STAGE_DIR": str(workdir / "stage-worker")},
    )
    cluster.wait_for_nodes()
    return cluster, worker


def node_ids(cluster, worker) -> dict[str, str]:
    return {"head": cluster.head_node.node_id, "worker": worker.node_id}


# --- scenario: spread ----------------------------------------------------------------------------------------


def _spread_trainable(config: dict[str, Any], staged=None) -> None:
    import ray
    from ray import tune

    model_dir = staged.local_path()
    payload = (model_dir / "weights.bin").read_bytes()
    for step in range(1, 4):
        time.sleep(0.3)
        tune.report(
            {
                "step": step,
                "node_id": ray.get_runtime_context().get_node_id(),
                "staged_ok": float(payload == bytes(range(256)) * 64),
                "stage_root": str(model_dir.parent),
            }
        )


def scenario_spread(workdir: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    cluster, worker = start_cluster(workdir, worker_ip="127.0.0.2")  # a second "machine"
    out: dict[str, Any] = {"start_s": time.monotonic() - t0}
    import ray
    from ray import tune

    from sweeps import cluster_checks

    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    out["nodes"] = node_ids(cluster, worker)
    out["node_count"] = cluster_checks.cluster_node_count()
    try:
        cluster_checks.check_cluster_storage(str(workdir / "runs"), f"sqlite:///{workdir}/mlflow.db")
        out["local_refused"] = None
    except ValueError as e:
        out["local_refused"] = str(e)
    cluster_checks.check_cluster_storage("s3://bucket/ray-results", "http://127.0.0.1:5000")  # must pass

    model = workdir / "fake-model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (model / "sub" / "config.json").write_text("{}")
    staged = cluster_checks.stage_dir(model)

    t1 = time.monotonic()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_spread_trainable, staged=staged), {"cpu": 1}),
        param_space={"i": tune.grid_search(list(range(4)))},
        run_config=tune.RunConfig(name="spread", storage_path=str(workdir / "runs"), verbose=0),
    )
    grid = tuner.fit()
    out["tune_s"] = time.monotonic() - t1
    out["trials"] = [
        {
            "status": "ERROR" if r.error else "TERMINATED",
            "node_ids": sorted(set(r.metrics_dataframe["node_id"])),
            "staged_ok": float(r.metrics_dataframe["staged_ok"].min()),
            "stage_root": r.metrics["stage_root"],
        }
        for r in grid
    ]
    out["staged_log"] = {
        name: (workdir / f"stage-{name}" / "staged.log").read_text().splitlines()
        if (workdir / f"stage-{name}" / "staged.log").exists()
        else []
        for name in ("head", "worker")
    }
    ray.shutdown()
    cluster.shutdown()
    return out


# --- scenario: kill ------------------------------------------------------------------------------------------

KILL_STEPS = 24


def _kill_trainable(config: dict[str, Any]) -> None:
    """Counts to KILL_STEPS, checkpointing its counter each step; reports where and from where it ran."""
    import tempfile

    import ray
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["step"]
    node = ray.get_runtime_context().get_node_id()
    for step in range(start + 1, KILL_STEPS + 1):
        time.sleep(config["step_s"])
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            metrics = {"step": step, "first_step": start + 1, "node_id": node}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _results(exp_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trial's reported rows so far (Tune's result.json files), by trial folder."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in exp_dir.glob("*/result.json"):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        parsed = []
        for ln in lines:
            try:
                parsed.append(json.loads(ln))
            except json.JSONDecodeError:  # a line being written
                break
        rows[path.parent.name] = parsed
    return rows


def kill_when_progressed(cluster, worker, exp_dir: Path, min_step: int, timeout_s: float, record: dict) -> None:
    """Poll the trials' results; once a trial on ``worker`` reported ``min_step``, kill that node (no grace)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for trial, rows in _results(exp_dir).items():
            ours = [r for r in rows if r.get("node_id") == worker.node_id and r.get("step", 0) >= min_step]
            if ours and any((exp_dir / trial).glob("checkpoint_*")):
                record["killed_trial"] = trial
                record["killed_after_step"] = max(r["step"] for r in ours)
                t = time.monotonic()
                cluster.remove_node(worker, allow_graceful=False)
                record["kill_s"] = time.monotonic() - t
                return
        time.sleep(0.2)
    record["kill_timeout"] = True


def scenario_kill(workdir: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    cluster, worker = start_cluster(workdir)
    out: dict[str, Any] = {"start_s": time.monotonic() - t0}
    import ray
    from ray import tune

    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    out["nodes"] = node_ids(cluster, worker)
    exp_dir = workdir / "runs" / "kill"
    killer = threading.Thread(target=kill_when_progressed, args=(cluster, worker, exp_dir, 3, 120, out), daemon=True)
    killer.start()
    t1 = time.monotonic()
    tuner = tune.Tuner(
        tune.with_resources(_kill_trainable, {"cpu": 1}),
        param_space={"i": tune.grid_search([0, 1]), "step_s": 0.25},
        run_config=tune.RunConfig(
            name="kill",
            storage_path=str(workdir / "runs"),
            failure_config=tune.FailureConfig(max_failures=3),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    grid = tuner.fit()
    killer.join(timeout=5)
    out["tune_s"] = time.monotonic() - t1
    out["alive_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
    rows = _results(exp_dir)
    out["trials"] = [
        {
            "trial": Path(r.path).name,
            "status": "ERROR" if r.error else "TERMINATED",
            "final_step": r.metrics.get("step"),
            "runs": sorted({(row["first_step"], row["node_id"]) for row in rows.get(Path(r.path).name, [])}),
        }
        for r in grid
    ]
    ray.shutdown()
    cluster.shutdown()
    return out


# --- scenario: sweep (the real GLUE sweep, MiniLM; needs WLORA_MODEL / WLORA_DATA_DIR) --------------------------

SWEEP_KILL_STEP = 4  # WeightLoRA's selection step T in the sweep below: the worker dies after it selected
SWEEP_ARGV = [
    "--tasks", "rte", "--methods", "weightlora", "--ranks", "4,8", "--num-samples", "1", "--search", "random",
    "--no-asha", "--max-steps", "14", "--eval-every", "2", "--max-length", "32", "--batch-size", "8",
    "--train-subset", "256", "--eval-subset", "32", "--set", "t=4", "--set", "k_fraction=0.25",
    "--cpus-per-trial", "1", "--max-failures", "2", "--progress-interval", "600", "--name", "sweep",
]  # fmt: skip


class PidNodes:
    """Which node ran a trial process: the parent of a Ray worker process is its node's raylet."""

    def __init__(self, raylets: dict[int, str]):
        self.raylets = raylets
        self.seen: dict[int, str] = {}

    def node_of(self, pid: int) -> str | None:
        if pid not in self.seen:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return None  # gone before we looked
            ppid = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))
            self.seen[pid] = self.raylets.get(ppid, f"ppid {ppid}")
        return self.seen[pid]


def _sweep_rows(storage: Path) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in storage.glob("**/result.json"):
        for ln in path.read_text().splitlines():
            try:
                rows.setdefault(str(path.parent.relative_to(storage)), []).append(json.loads(ln))
            except json.JSONDecodeError:
                break
    return rows


def watch_sweep(cluster, worker, storage: Path, pids: PidNodes, stop: threading.Event, record: dict) -> None:
    """Attribute every reported row to a node while its process lives; kill the worker node once one of its
    trials logged a row for step >= SWEEP_KILL_STEP + 2; keep attributing until ``stop``.

    Tune logs a result row before it registers that step's checkpoint (a separate save task on the trial's
    actor), so a node that dies right after a row appears may take that step's checkpoint with it. The next
    training step is only scheduled once the save was processed, so a row for SWEEP_KILL_STEP + 2 means the
    checkpoint of step SWEEP_KILL_STEP (after WeightLoRA's selection) or a later one is registered."""
    killed = False
    while not stop.is_set():
        for trial, rows in _sweep_rows(storage).items():
            for row in rows:
                node = pids.node_of(row["pid"])
                if not killed and node == "worker" and row.get("step", 0) >= SWEEP_KILL_STEP + 2:
                    record["killed_trial"] = trial
                    record["killed_after_step"] = max(r.get("step", 0) for r in rows if pids.node_of(r["pid"]) == node)
                    cluster.remove_node(worker, allow_graceful=False)
                    killed = True
        time.sleep(0.1)
    record.setdefault("killed_trial", None)


def scenario_sweep(workdir: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    cluster, worker = start_cluster(workdir)
    out: dict[str, Any] = {"start_s": time.monotonic() - t0}
    import ray

    from sweeps.flags import build_parser
    from sweeps.glue_sweep import DEFAULTS
    from sweeps.run import run_sweep

    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    storage = workdir / "runs"
    raylets = {
        cluster.head_node.all_processes["raylet"][0].process.pid: "head",
        worker.all_processes["raylet"][0].process.pid: "worker",
    }
    pids = PidNodes(raylets)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_sweep, args=(cluster, worker, storage, pids, stop, out), daemon=True)
    watcher.start()
    args = build_parser(DEFAULTS).parse_args([*SWEEP_ARGV, "--storage-path", str(storage)])
    t1 = time.monotonic()
    try:
        summary = run_sweep(args, DEFAULTS)
    finally:
        stop.set()
        watcher.join(timeout=10)
    out["sweep_s"] = time.monotonic() - t1
    out["alive_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
    out["cells"] = {
        name: {k: cell.get(k) for k in ("n_trials", "n_completed", "n_failed", "n_asha_stopped")}
        for name, cell in summary["cells"].items()
    }
    out["trials"] = {
        trial: [
            {
                "node": pids.seen.get(r["pid"]),
                "cell": (r.get("config") or {}).get("sweep_cell"),
                "time": r.get("timestamp"),
                "step": r.get("step"),
                "active_adapters": r.get("active_adapters"),
                "final": r.get("final"),
            }
            for r in rows
        ]
        for trial, rows in _sweep_rows(storage).items()
    }
    ray.shutdown()
    cluster.shutdown()
    return out


SCENARIOS = {"spread": scenario_spread, "kill": scenario_kill, "sweep": scenario_sweep}


def main(argv: list[str]) -> int:
    scenario, workdir = argv[0], Path(argv[1]).resolve()
    sys.path.insert(0, str(ROOT))
    try:
        out = SCENARIOS[scenario](workdir)
    except Exception:
        out = {"error": traceback.format_exc()}
    (workdir / "result.json").write_text(json.dumps(out, indent=1, default=str))
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
