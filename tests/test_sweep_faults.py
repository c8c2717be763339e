"""What happens to a real sweep (MiniLM + SST-2 slices, local Ray in a loopback-only namespace) when it is
interrupted, when a trial's worker is killed, when its state is damaged, when the MLflow server goes away,
and when it asks for more than the machine has."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "sweep_state.json").read_text())


def _children(client, state, *, all_roles: bool = False):
    runs = client.search_runs(
        [state["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'", max_results=500
    )
    return [r for r in runs if all_roles or r.data.tags.get("wlora.role") == "trial"]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_for(predicate, proc, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.stdout.read()[-4000:]}")
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def _run_and_hit(argv, env, run_dir: Path, hit, *, cwd: Path = ROOT, timeout: float = 240) -> tuple[int, str]:
    """Start a sweep, wait until one of its trials has checkpointed, call ``hit(sweep pid)`` (send signals to the
    driver or a worker), let the sweep end; returns (exit status, output)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: any(run_dir.glob("pool/trial_*/checkpoint_000000")), proc, 240, "a checkpoint")
        hit(proc.pid)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def _driver(pid: int) -> int:
    return next(p for p in _descendants(pid) if "glue_sweep.py" in _cmdline(p))


def _steps_in_tune(trial_dir: Path) -> list[float]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(ln)["step"] for ln in lines if ln.strip() and "step" in json.loads(ln)]


def test_ctrl_c_then_resume_finishes_every_trial(sweep_cmd, tmp_path):
    """Ctrl-C (SIGINT to the driver) mid-sweep: exit 130, the sweep is marked interrupted, no MLflow child stays
    RUNNING, the console prints the --resume command. Damaged state is then refused with one line naming the
    file. --resume finishes every trial, interrupted ones from their checkpoint, with no duplicate child, and
    closes an orphaned child (as a SIGKILL leaves one) without counting it."""
    from mlflow.tracking import MlflowClient

    from sweeps.glue_sweep import DEFAULTS, parser
    from sweeps.plan import InputError, plan_sweep

    make, env = sweep_cmd
    args = [*TINY, "--methods", "lora,weightlora", "--num-samples", "2", "--no-asha", "--num-cpus", "2"]
    run_dir = tmp_path / "runs" / "int"
    code, out = _run_and_hit(
        make(*args, "--name", "int"), env, run_dir, lambda pid: os.kill(_driver(pid), signal.SIGINT)
    )
    assert code == 130, out[-4000:]
    assert f"--resume --name int --storage-path {tmp_path / 'runs'}" in out
    assert "Tuner.restore(" not in out
    state = _state(run_dir)
    assert state["status"] == "interrupted" and not state["finished"]
    assert not (run_dir / "results").exists()  # nothing partial published as final
    client = MlflowClient(state["tracking_uri"])
    described = client.get_run(state["parent_run_id"]).data.tags["mlflow.note.content"]
    assert "sst2-weightlora-r8" in described and "searched: lr=" in described  # the plan, as printed
    assert "sst2-weightlora-r8: max_steps=8, 4 evaluation(s)" in out
    before = _children(client, state)
    assert before and all(c.info.status != "RUNNING" for c in before)
    assert {c.data.tags["status"] for c in before} <= {"completed", "interrupted"}
    assert "interrupted" in {c.data.tags["status"] for c in before}

    # Damaged state: one line naming the file, before anything runs.
    def resume_plan():
        a = parser().parse_args(["--resume", "--name", "int", "--storage-path", str(tmp_path / "runs")])
        return plan_sweep(a, DEFAULTS)

    exp_state = sorted(run_dir.glob("pool/experiment_state-*.json"))[-1]
    for victim, expect in [
        (run_dir / "sweep_state.json", "sweep_state.json is damaged"),
        (exp_state, f"{exp_state.name} is damaged"),
        (run_dir / "pool" / "tuner.pkl", "tuner.pkl is damaged"),
        (run_dir / "mlflow.db", "mlflow.db is damaged"),
    ]:
        good = victim.read_bytes()
        victim.write_bytes(good[: min(len(good) // 2, 4096)])
        with pytest.raises(InputError, match=expect):
            resume_plan()
        victim.write_bytes(good)
    (run_dir / "pool").rename(run_dir / "pool.away")
    with pytest.raises(InputError, match="pool is missing, but MLflow already holds trials"):
        resume_plan()
    (run_dir / "pool.away").rename(run_dir / "pool")

    # A child the restored run will not know (a SIGKILL between creating it and the experiment snapshot).
    lora = next(c for c in before if c.data.tags["method"] == "lora")
    orphan = client.create_run(
        state["experiment_id"],
        tags={**lora.data.tags, "trial_id": "orphan00", "status": "running", "mlflow.runName": "orphan"},
    )
    for key, value in lora.data.params.items():
        client.log_param(orphan.info.run_id, key, value)

    res = subprocess.run(
        make("--resume", "--name", "int"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    state = _state(run_dir)
    assert state["status"] == "finished"
    kids = _children(client, state, all_roles=True)
    gone = next(c for c in kids if c.info.run_id == orphan.info.run_id)
    assert gone.data.tags["status"] == "orphaned" and gone.info.status == "KILLED"
    assert gone.data.tags["wlora.replaced_by"] == lora.data.tags["trial_id"]  # same cell, role and config
    trials = [c for c in kids if c.info.run_id != orphan.info.run_id]
    ids = [c.data.tags["trial_id"] for c in trials]
    assert len(ids) == len(set(ids)) == 4
    for c in trials:
        assert c.data.tags["status"] == "completed" and c.info.status == "FINISHED", c.data.tags
        assert [m.step for m in client.get_metric_history(c.info.run_id, "eval_main")] == [2, 4, 6, 8]
    assert {b.info.run_id for b in before} <= {c.info.run_id for c in trials}  # the same children continued
    for trial_dir in run_dir.glob("pool/trial_*"):
        steps = _steps_in_tune(trial_dir)
        assert steps.count(2) == 1 and steps[-1] == 8, (trial_dir.name, steps)  # continued, not restarted
    long = list(csv.DictReader((run_dir / "results" / "table_long.csv").open()))
    assert sorted(int(r["n_trials"]) for r in long) == [2, 2]  # the orphan is not counted


def test_second_ctrl_c_stops_at_once_with_the_same_state(sweep_cmd, tmp_path):
    """Two Ctrl-C in a row: the driver stops without waiting for Tune's last checkpoint, still exits 130 with
    the sweep interrupted and no child RUNNING, and --resume finishes the trial."""
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    store, cwd = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    cwd.mkdir()
    args = [*TINY, "--methods", "lora", "--num-samples", "1", "--no-asha", "--num-cpus", "1", "--name", "twice"]
    args += ["--tracking-uri", f"sqlite:///{store}/x.db"]  # a store of the user's: artifacts go beside it
    run_dir = tmp_path / "runs" / "twice"

    def twice(pid: int) -> None:
        driver = _driver(pid)
        os.kill(driver, signal.SIGINT)
        time.sleep(0.2)
        os.kill(driver, signal.SIGINT)

    code, out = _run_and_hit(make(*args), env, run_dir, twice, cwd=cwd, timeout=120)
    assert code == 130, out[-4000:]
    assert "--resume --name twice" in out and "Traceback" not in out
    state = _state(run_dir)
    assert state["status"] == "interrupted"
    client = MlflowClient(state["tracking_uri"])
    assert all(c.info.status != "RUNNING" for c in _children(client, state))
    res = subprocess.run(make("--resume", "--name", "twice"), env=env, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (kid,) = _children(client, _state(run_dir))
    assert kid.data.tags["status"] == "completed"
    assert [m.step for m in client.get_metric_history(kid.info.run_id, "eval_main")] == [2, 4, 6, 8]
    # Artifacts live with their store, never in the folder the command ran from.
    assert list(cwd.iterdir()) == []
    assert list(store.glob("mlartifacts/*/artifacts/selection.json")), sorted(store.rglob("*"))


def test_killed_trial_worker_is_retried_and_the_sweep_completes(sweep_cmd, tmp_path):
    """SIGKILL of a trial's worker process (what the kernel's OOM killer does): the trial is retried from its
    last checkpoint (--max-failures 1, the default), the sweep finishes with its table, and the child records
    the retry and why."""
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    args = [*TINY, "--methods", "lora", "--num-samples", "2", "--no-asha", "--num-cpus", "2", "--name", "kill"]
    run_dir = tmp_path / "runs" / "kill"

    def kill_worker(pid: int) -> None:
        os.kill(next(p for p in _descendants(pid) if _cmdline(p).startswith("ray::ImplicitFunc")), signal.SIGKILL)

    code, out = _run_and_hit(make(*args), env, run_dir, kill_worker)
    assert code == 0, out[-4000:]
    state = _state(run_dir)
    assert state["status"] == "finished"
    cell = state["cells"]["sst2-lora-r8"]
    assert cell["n_completed"] == 2 and cell["n_failed"] == 0
    client = MlflowClient(state["tracking_uri"])
    kids = _children(client, state)
    retried = [c for c in kids if c.data.tags.get("retries") == "1"]
    assert len(retried) == 1, [c.data.tags for c in kids]
    assert retried[0].data.tags["last_error"].startswith("worker process died")
    assert retried[0].data.tags["status"] == "completed"
    assert [m.step for m in client.get_metric_history(retried[0].info.run_id, "eval_main")] == [2, 4, 6, 8]
    assert (run_dir / "results" / "table.md").is_file()


def test_infeasible_resources_fail_fast(sweep_cmd, tmp_path):
    make, env = sweep_cmd
    t0 = time.time()
    out = subprocess.run(
        make(*TINY, "--num-cpus", "2", "--cpus-per-trial", "3", "--name", "big"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.time() - t0
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: --cpus-per-trial 3: no node has that many CPUs (the largest has 2); no trial could ever start"
    ]
    assert "Traceback" not in out.stderr and took < 15, took
    assert not (tmp_path / "runs" / "big").exists()


OUTAGE = r"""
set -u
ip link set lo up
PORT=5077
start_server() {
  setsid "$PY" -m mlflow server --host 127.0.0.1 --port $PORT --workers 1 \
    --backend-store-uri "sqlite:///$W/server.db" --artifacts-destination "$W/artifacts" > "$W/server.log" 2>&1 &
  SERVER=$!
  for i in $(seq 1 240); do
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" \
      2>/dev/null && return 0
    sleep 0.5
  done
  echo "mlflow server did not start"; cat "$W/server.log"; exit 3
}
start_server
"$PY" "$ROOT/sweeps/glue_sweep.py" --tracking-uri "http://127.0.0.1:$PORT" "$@" > "$W/sweep.log" 2>&1 &
SWEEP=$!
for i in $(seq 1 480); do
  ls -d "$W"/runs/*/pool/trial_*/checkpoint_000000 >/dev/null 2>&1 && break
  sleep 0.25
done
kill -9 -- -$SERVER
date +%s.%N > "$W/down"
sleep $DOWN
start_server
date +%s.%N > "$W/up"
wait $SWEEP
echo "sweep exit $?"
"""


def test_mlflow_server_outage_loses_no_point(netns, minilm_path, glue_dir, tmp_path, ray_tmp):
    """A real ``mlflow server`` on loopback is killed once the first trial has checkpointed and restarted 25 s
    later: the trials keep training meanwhile (Tune records reports while the server is away), the sweep
    finishes, and every evaluation Tune saw reaches MLflow (0 points lost)."""
    import sqlite3

    from tests.conftest import NETNS

    script = tmp_path / "outage.sh"
    script.write_text(textwrap.dedent(OUTAGE))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PY": sys.executable,
        "ROOT": str(ROOT),
        "W": str(tmp_path),
        "DOWN": "25",
    }
    sweep = [*TINY, "--methods", "lora,weightlora", "--num-samples", "2", "--no-asha", "--num-cpus", "2"]
    sweep += ["--race-top", "0", "--model", str(minilm_path), "--data-dir", str(Path(glue_dir).parent)]
    sweep += ["--name", "outage"]
    sweep += ["--storage-path", str(tmp_path / "runs"), "--ray-temp-dir", ray_tmp]
    out = subprocess.run(
        [*NETNS, "bash", str(script), *sweep], env=env, cwd=ROOT, capture_output=True, text=True, timeout=420
    )
    log = (tmp_path / "sweep.log").read_text() if (tmp_path / "sweep.log").exists() else ""
    assert "sweep exit 0" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:] + log[-4000:]
    assert "is not answering" in log and "MLflow is back after" in log, log[-3000:]
    down, up = (float((tmp_path / name).read_text()) for name in ("down", "up"))

    con = sqlite3.connect(tmp_path / "server.db")
    runs = dict(con.execute("SELECT t.value, r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                            "AND t.key = 'trial_id'").fetchall())  # fmt: skip
    points = lost = during = 0
    for trial_dir in (tmp_path / "runs" / "outage" / "pool").glob("trial_*"):
        reports = [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines() if ln.strip()]
        reports = [r for r in reports if not r.get("final")]
        during += sum(down < r["timestamp"] < up for r in reports)
        run = runs[trial_dir.name.removeprefix("trial_")]
        logged = {
            s for (s,) in con.execute("SELECT step FROM metrics WHERE run_uuid = ? AND key = 'eval_main'", (run,))
        }
        points += len(reports)
        lost += len({int(r["step"]) for r in reports} - logged)
    assert points == 16 and lost == 0
    assert during > 0, "no evaluation was reported while the server was away: training waited on it"
    statuses = {s for (s,) in con.execute("SELECT value FROM tags WHERE key = 'status'")}
    assert statuses == {"completed"}
    shutil.rmtree(tmp_path / "artifacts", ignore_errors=True)
