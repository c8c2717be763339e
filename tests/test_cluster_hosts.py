"""Cluster code on separate hosts (tests/hosts.py): Slurm runs the repository's sbatch script, and the on-prem
Ray launch, each across ``head``, ``w1`` and ``w2`` — separate network, hostname, PID and disk namespaces on a
private bridge, a shared folder over SSH. Needs root (namespaces, mounts), ``sshd``/``sshfs`` and, for Slurm,
``slurmctld``/``slurmd``/``munged`` (Debian: openssh-server sshfs slurm-wlm munge; .ci/run installs them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import pytest

from tests.hosts import ADDRESSES, SHARED, Hosts, missing_tools

pytestmark = [pytest.mark.cluster, pytest.mark.subprocess, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SLURM_TOOLS = ("slurmctld", "slurmd", "munged", "sbatch")
#: A smoke sweep: MiniLM on an RTE slice, 4 LoRA trials of 12 steps, 2 Ray nodes of 1 CPU.
SWEEP = [
    "--tasks", "rte", "--methods", "lora", "--ranks", "4", "--num-samples", "4", "--search", "random",
    "--no-asha", "--max-steps", "12", "--eval-every", "2", "--max-length", "32", "--batch-size", "8",
    "--train-subset", "64", "--eval-subset", "32", "--cpus-per-trial", "1", "--max-failures", "2",
    "--progress-interval", "600", "--race-top", "0",
]  # fmt: skip


@cache
def hosts_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network, PID and mount namespaces, mounts)"
    if missing_tools():
        return f"needs {', '.join(missing_tools())} (Debian: util-linux iproute2 openssh-server sshfs)"
    probe = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare refused: {probe.stderr.decode()[-300:]}"


@pytest.fixture
def hosts(tmp_path_factory, minilm_path, glue_dir):
    reason = hosts_unavailable()
    if reason:
        pytest.skip(reason)
    with Hosts(tmp_path_factory.mktemp("hosts")) as h:
        yield h


def start_mlflow(h: Hosts) -> str:
    """An MLflow server on head, on its bridge address (the workers reach it there); artifacts on the share."""
    uri = f"http://{ADDRESSES['head']}:5000"
    h.popen(
        "head",
        "mkdir -p /tmp/mlflow && exec mlflow server --host 0.0.0.0 --port 5000 --workers 1 "
        "--backend-store-uri sqlite:////tmp/mlflow/mlflow.db "
        f"--artifacts-destination {SHARED}/mlflow-artifacts > /tmp/mlflow/server.log 2>&1",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = f"import urllib.request as u; u.urlopen('{uri}/health', timeout=2)"
    deadline = time.monotonic() + 90
    while h.run("w1", f'python -c "{probe}"', check=False).returncode != 0:
        assert time.monotonic() < deadline, h.run("head", "cat /tmp/mlflow/server.log").stdout[-3000:]
        time.sleep(1)
    return uri


def mlflow_children(h: Hosts, uri: str) -> list[dict]:
    """Every child run of the sweep (status, hostname tag), read through the server from head."""
    code = (
        "import json, mlflow\n"
        f"c = mlflow.tracking.MlflowClient('{uri}')\n"
        "runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id], max_results=1000)]\n"
        "print(json.dumps([{'status': r.info.status, 'parent': r.data.tags.get('mlflow.parentRunId'),"
        " 'hostname': r.data.tags.get('hostname'), 'role': r.data.tags.get('wlora.role')} for r in runs]))\n"
    )
    out = h.run("head", f"python - <<'PY'\n{code}PY").stdout
    return [r for r in json.loads(out.strip().splitlines()[-1]) if r["parent"]]


# --- Slurm ----------------------------------------------------------------------------------------------------

SLURM_CONF = f"""ClusterName=wlora
SlurmctldHost=head({ADDRESSES["head"]})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/tmp/slurm/state
SlurmdSpoolDir=/tmp/slurm/spool
SlurmctldPidFile=/tmp/slurm/slurmctld.pid
SlurmdPidFile=/tmp/slurm/slurmd.pid
SlurmctldLogFile=/tmp/slurm/slurmctld.log
SlurmdLogFile=/tmp/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=90
NodeName=w1 NodeAddr={ADDRESSES["w1"]} CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=w2 NodeAddr={ADDRESSES["w2"]} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=main Nodes=w1,w2 Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm(h: Hosts) -> dict[str, str]:
    """munged on every host (one key), slurmctld on head, slurmd on w1 and w2; returns the client environment."""
    conf = h.workdir / "shared" / "slurm" / "slurm.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(SLURM_CONF)
    key = os.urandom(1024)
    for name in ("head", "w1", "w2"):
        munge = h.workdir / name / "tmp" / "munge"
        (munge / "state").mkdir(parents=True, exist_ok=True)
        (munge / "munge.key").write_bytes(key)
        (munge / "munge.key").chmod(0o400)
        (h.workdir / name / "tmp" / "slurm" / "spool").mkdir(parents=True, exist_ok=True)
        h.run(
            name,
            "munged --force --key-file=/tmp/munge/munge.key --log-file=/tmp/munge/munged.log "
            "--pid-file=/tmp/munge/munged.pid --seed-file=/tmp/munge/state/seed",
        )
    env = h.env(SLURM_CONF=f"{SHARED}/slurm/slurm.conf")
    h.run("head", "slurmctld", env=env)
    for name in ("w1", "w2"):
        h.run(name, "slurmd", env=env)
    deadline = time.monotonic() + 60
    while "idle" not in (states := h.run("head", "sinfo -h -o '%T %D'", env=env, check=False).stdout):
        assert time.monotonic() < deadline, f"nodes not idle: {states}\n" + slurm_logs(h)
        time.sleep(1)
    return env


def slurm_logs(h: Hosts) -> str:
    logs = [h.workdir / "head" / "tmp" / "slurm" / "slurmctld.log"]
    logs += [h.workdir / n / "tmp" / "slurm" / "slurmd.log" for n in ("w1", "w2")]
    return "\n".join(f"== {p}\n{p.read_text()[-2500:]}" for p in logs if p.exists())


def job_state(h: Hosts, env: dict, job: str) -> str:
    out = h.run("head", f"scontrol show job {job} -o", env=env, check=False).stdout
    return next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "GONE")


def wait_job(h: Hosts, env: dict, job: str, timeout_s: float, until=lambda: False) -> str:
    """Poll until the job ends (or ``until()`` holds); returns its state."""
    deadline = time.monotonic() + timeout_s
    while (state := job_state(h, env, job)) in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        if state == "RUNNING" and until():
            return state
        assert time.monotonic() < deadline, f"job {job} still {state}\n" + job_output(h, job)
        time.sleep(1)
    return state


def job_output(h: Hosts, job: str) -> str:
    files = [h.workdir / "shared" / "jobs" / f"wlora-{job}.out"]
    files += sorted((h.workdir / "shared" / "jobs" / f"wlora-{job}").glob("*.out"))
    return "\n".join(f"== {p.name}\n{p.read_text()[-4000:]}" for p in files if p.exists())


def reported_rows(storage: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in storage.glob("**/result.json"))


def test_slurm_sbatch_runs_the_sweep_on_both_hosts_and_resumes_after_scancel(hosts):
    """sbatch of cluster/slurm.sbatch on w1 + w2: trials on both hosts; scancel mid-sweep leaves it interrupted;
    a second job with --resume finishes every trial, and no MLflow child is left RUNNING."""
    h = hosts
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("needs slurmctld, slurmd and munged (Debian: slurm-wlm munge)")
    env = start_slurm(h)
    env["PATH"] = env["PATH"]  # the virtualenv is first on PATH: Slurm exports it to the job
    uri = start_mlflow(h)
    jobs = h.workdir / "shared" / "jobs"
    jobs.mkdir()
    sweep = [*SWEEP, "--storage-path", f"{SHARED}/runs", "--tracking-uri", uri, "--name", "smoke"]
    sweep += ["--model", str(env["WLORA_MODEL"]), "--data-dir", str(env["WLORA_DATA_DIR"])]
    sbatch = f"cd {SHARED}/jobs && WLORA_ROOT={ROOT} sbatch --parsable --gpus-per-task=0 --cpus-per-task=1"
    sbatch += f" {ROOT}/cluster/slurm.sbatch " + " ".join(sweep)

    first = h.run("head", sbatch, env=env).stdout.strip()
    storage = h.workdir / "shared" / "runs"
    # stop it once trials reported (before all four finished)
    state = wait_job(h, env, first, 300, until=lambda: reported_rows(storage) >= 3)
    assert state == "RUNNING", f"job {first} ended ({state}) before the scancel\n" + job_output(h, first)
    h.run("head", f"scancel {first}", env=env)
    wait_job(h, env, first, 150)
    out = job_output(h, first)
    status = json.loads((storage / "smoke" / "sweep_state.json").read_text())["status"]
    assert status == "interrupted", out
    driver_log = (jobs / f"wlora-{first}" / "w1.out").read_text()
    assert "sweep smoke interrupted" in driver_log, out
    # the job's Ray is gone from both hosts (nothing left to attach to)
    for name in ("w1", "w2"):
        left = h.run(name, f"pgrep -f /tmp/[r]ay-{first}/ || true").stdout.split()
        assert not left, f"{name}: Ray of job {first} still running: {left}"

    second = h.run("head", sbatch + " --resume", env=env).stdout.strip()
    assert wait_job(h, env, second, 400) == "COMPLETED", job_output(h, second)
    final = json.loads((storage / "smoke" / "sweep_state.json").read_text())
    assert final["status"] == "finished", job_output(h, second)
    children = mlflow_children(h, uri)
    trials = [c for c in children if c["role"] != "orphan"]
    assert len([c for c in trials if c["status"] == "FINISHED"]) >= 4, children
    assert not [c for c in children if c["status"] == "RUNNING"], children
    assert {c["hostname"] for c in trials if c["status"] == "FINISHED"} == {"w1", "w2"}, children
    # ports and Ray temp dir from the job id; logs beside the job
    assert f"wlora-{first}" in out and (jobs / f"wlora-{second}" / "w2.out").exists()
