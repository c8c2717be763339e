"""Real two-node Ray clusters on this machine (see tests/cluster_harness.py): spread, staging, checks, node loss.

Each test runs one harness scenario in its own loopback-only network + PID namespace, so Ray binds 127.0.0.x
and every process it started ends with the scenario. Needs ``unshare`` (root or user namespaces); skipped
where that is not possible.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.cluster_harness import KILL_STEPS, SWEEP_KILL_STEP, netns_command

pytestmark = [pytest.mark.cluster, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]


@cache
def netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(netns_command(["true"]), capture_output=True, timeout=30)
    return probe.returncode == 0


def run_scenario(name: str, workdir: Path, timeout_s: float = 300) -> dict:
    if not netns_available():
        pytest.skip("needs `unshare --net --pid` (root or user namespaces) and `ip`")
    proc = subprocess.run(
        netns_command([sys.executable, str(ROOT / "tests" / "cluster_harness.py"), name, str(workdir)]),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
    )
    result_file = workdir / "result.json"
    assert result_file.exists(), f"harness wrote no result (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"] + "\n" + proc.stderr[-4000:]
    return result


@pytest.fixture
def workdir(tmp_path_factory):
    # Short: Ray's unix sockets live under it (a socket path has at most 107 characters).
    return tmp_path_factory.mktemp("c")


def test_two_nodes_spread_stage_once_and_refuse_local_storage(workdir):
    r = run_scenario("spread", workdir)
    head, worker = r["nodes"]["head"], r["nodes"]["worker"]

    # the checks see both machines (127.0.0.1 and 127.0.0.2) and refuse local storage and tracking, each
    assert r["node_count"] == 2
    assert "2 nodes" in r["local_refused"]
    assert "--storage-path" in r["local_refused"] and "is local to this machine" in r["local_refused"]
    assert "--tracking-uri" in r["local_refused"] and "local file/SQLite MLflow store" in r["local_refused"]

    # four trials, all finished, on both nodes
    trials = r["trials"]
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" for t in trials)
    used = {node for t in trials for node in t["node_ids"]}
    assert used == {head, worker}

    # the model folder was copied once per node (not per trial), each trial read its node's copy
    assert all(t["staged_ok"] == 1.0 for t in trials)
    assert {t["stage_root"] for t in trials} == {str(workdir / "stage-head"), str(workdir / "stage-worker")}
    assert len(r["staged_log"]["head"]) == 1 and len(r["staged_log"]["worker"]) == 1


def test_losing_the_worker_node_loses_no_trial(workdir):
    r = run_scenario("kill", workdir)
    head, worker = r["nodes"]["head"], r["nodes"]["worker"]
    assert "kill_timeout" not in r, "the worker never reported progress"
    assert r["killed_after_step"] >= 3
    assert r["alive_nodes"] == 1  # the worker node is really gone

    trials = {t["trial"]: t for t in r["trials"]}
    assert len(trials) == 2, "a trial was lost"
    assert all(t["status"] == "TERMINATED" and t["final_step"] == KILL_STEPS for t in trials.values())

    killed = trials[r["killed_trial"]]
    (first_step, first_node), *restarts = killed["runs"]
    assert (first_step, first_node) == (1, worker)
    assert restarts, "the killed trial never restarted"
    # resumed from its checkpoint on the surviving node, not from scratch
    assert all(node == head and step > r["killed_after_step"] >= 3 for step, node in restarts)
    other = next(t for name, t in trials.items() if name != r["killed_trial"])
    assert other["runs"] == [[1, head]]


@pytest.mark.slow
def test_glue_sweep_on_two_nodes_survives_losing_the_worker(workdir, minilm_path, glue_dir):
    """The real sweep (MiniLM, RTE slice, WeightLoRA r=4 and r=8 — two cells in one pool — with selection at step
    4) on two nodes; the worker node is killed once one of its trials logged step >= 6 (two steps after the
    selection). The sweep's WLORA_MODEL / WLORA_DATA_DIR reach the harness through the environment (the fixtures
    only check they are set)."""
    r = run_scenario("sweep", workdir)
    assert r["killed_trial"], "no trial on the worker reached the kill step"
    assert r["alive_nodes"] == 1
    # every trial of both cells finished; none lost, none failed
    assert r["cells"] == {
        name: {"n_trials": 1, "n_completed": 1, "n_failed": 0, "n_asha_stopped": 0}
        for name in ("rte-weightlora-r4", "rte-weightlora-r8")
    }
    assert len(r["trials"]) == 2

    nodes = {row["node"] for rows in r["trials"].values() for row in rows}
    assert nodes == {"head", "worker"}, "trials did not run on both nodes"
    # the two cells' trials ran at the same time, one on each node (one pool, not one cell after another)
    spans = {}
    for rows in r["trials"].values():
        for row in rows:
            lo, hi = spans.get((row["cell"], row["node"]), (row["time"], row["time"]))
            spans[row["cell"], row["node"]] = (min(lo, row["time"]), max(hi, row["time"]))
    assert any(
        c1 != c2 and n1 != n2 and s1[0] <= s2[1] and s2[0] <= s1[1]
        for (c1, n1), s1 in spans.items()
        for (c2, n2), s2 in spans.items()
    ), spans

    killed = r["trials"][r["killed_trial"]]
    before = [row for row in killed if row["node"] == "worker"]
    after = [row for row in killed if row["node"] == "head"]
    assert before and after, killed
    assert killed.index(after[0]) == len(before)  # worker first, then only the head
    last = max(row["step"] for row in before)
    assert before[0]["step"] == 2 and last >= SWEEP_KILL_STEP + 2, killed
    # resumed from a checkpoint taken after the selection, not from scratch: steps continue ... (the node may die
    # between Tune logging a step's row and registering that step's checkpoint, so the restart may repeat the
    # last evaluation: it resumes from the last registered checkpoint, the last row's or the one before)
    assert last <= after[0]["step"] <= last + 2, killed
    # ... and so does the method state: WeightLoRA's selection (18 adapters -> K) survived the restart
    assert before[0]["active_adapters"] == 18, killed
    assert before[-1]["active_adapters"] == after[0]["active_adapters"] < 18, killed
    assert after[-1]["final"] == 1.0, killed
