"""The repository's on-premises config (``cluster-onprem.yaml``, provider ``local``) launched on separate hosts.

The hosts are those of tests/hosts.py: ``head``, ``w1`` and ``w2`` (own network, hostname, PID and disk
namespaces on a private bridge, ``sshd`` with a throw-away key), and ``op``, the operator's seat on the bridge,
from where the launch runs over SSH as a user's would. The committed file is used
as it is, but for its EDIT lines: the hosts' addresses, the SSH user and key, and the paths of the checkout and
its virtualenv. The shared folder is a network filesystem on every host, the head included (an NFS server that
mounts its own export, as the sweep's storage check requires on more than one node).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.hosts import ADDRESSES, SHARED, Hosts
from tests.test_cluster_hosts import SWEEP, hosts_unavailable, mlflow_children

pytestmark = [pytest.mark.cluster, pytest.mark.subprocess, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
WORKERS = ("w1", "w2")
#: A Ray process on a host: its binaries and Python files, or a worker's process title (``ray::...``).
RAY_PROCESS = "[s]ite-packages/ray/|^ray::"


@pytest.fixture
def hosts(tmp_path_factory, minilm_path, glue_dir):
    reason = hosts_unavailable()
    if reason:
        pytest.skip(reason)
    with Hosts(tmp_path_factory.mktemp("hosts")) as h:
        yield h


def share_on_head_over_the_network(h: Hosts) -> None:
    """The head mounts the shared folder over SSH too, as an NFS server mounts its own export for its clients."""
    h.run("head", f"mkdir -p /mnt/export && mount --bind {SHARED} /mnt/export")
    opts = "-o StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,reconnect,cache=no,idmap=none"
    h.run("head", f"sshfs {opts} root@head:/mnt/export {SHARED}")
    assert h.run("head", f"findmnt -n -o FSTYPE {SHARED}").stdout.split()[-1] == "fuse.sshfs"


def onprem_config(h: Hosts) -> Path:
    """cluster-onprem.yaml with its EDIT lines set for these hosts; written to the op seat's /tmp."""
    text = (ROOT / "cluster-onprem.yaml").read_text()
    text = text.replace("/mnt/shared/wlora/.venv", sys.prefix).replace("/mnt/shared/wlora/", f"{ROOT}/")
    text = text.replace("/mnt/shared/wlora ", f"{ROOT} ")
    config = yaml.safe_load(text)
    config["provider"].update(head_ip=ADDRESSES["head"], worker_ips=[ADDRESSES[w] for w in WORKERS])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": "~/.ssh/id_ed25519"}  # the harness's throw-away key
    path = h.workdir / "op" / "tmp" / "cluster-onprem.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Path("/tmp/cluster-onprem.yaml")


def on_head(h: Hosts, command: str, **kw):
    """A command on head in the environment the config's setup gave it (venv, token auth, storage, MLflow)."""
    return h.run("head", f"source ~/.bashrc > /dev/null 2>&1; {command}", **kw)


def alive_nodes(h: Hosts) -> dict[str, str]:
    """Alive Ray nodes: address -> hostname (read through the cluster from head)."""
    code = "import json, ray; ray.init(address='auto', log_to_driver=False); "
    code += "print(json.dumps({n['NodeManagerAddress']: n['NodeManagerHostname'] for n in ray.nodes() if n['Alive']}))"
    out = on_head(h, f"python -c {shlex.quote(code)}", check=False, timeout=60)
    lines = out.stdout.strip().splitlines()
    return yaml.safe_load(lines[-1]) if out.returncode == 0 and lines else {}


def ray_logs(h: Hosts) -> str:
    """The head's autoscaler (monitor) log and each worker's Ray logs, for a failure message."""
    files = sorted((h.workdir / "head" / "tmp" / "ray").glob("session_2*/logs/monitor.*"))
    for w in WORKERS:
        files += sorted((h.workdir / w / "tmp" / "ray").glob("session_2*/logs/raylet.err"))
    return "\n".join(f"== {p.relative_to(h.workdir)}\n{p.read_text(errors='replace')[-3000:]}" for p in files)


def ray_processes(h: Hosts) -> dict[str, list[str]]:
    procs = {name: h.run(name, f"pgrep -af '{RAY_PROCESS}' || true").stdout.splitlines() for name in h.names}
    return {name: lines for name, lines in procs.items() if lines}


def test_onprem_start_runs_a_sweep_across_the_hosts_and_down_stops_it(hosts):
    """The documented fallback, because Ray's launcher leaves a worker out: ``cluster/onprem_start.sh up`` from op
    runs cluster-onprem.yaml's own setup and start commands over SSH (Ray + MLflow on head, ``ray start --address``
    on w1 and w2, each worker's SSH tunnel to MLflow); a smoke sweep with ``--address auto`` on head puts trials on
    more than one host (MLflow's hostname tag per child); ``onprem_start.sh down`` leaves no Ray process anywhere.

    ``ray up cluster-onprem.yaml`` on these hosts (Ray 2.60): the head comes up and its autoscaler v2 launches
    one worker, then logs, every 5 s for as long as it runs, without ever launching the second::

        INFO node_provider.py:485 -- Launching 1 nodes of type local.cluster.node.
        INFO instance_manager.py:263 -- Update instance RAY_INSTALLING->RAY_RUNNING (... 10.77.0.11 ...)
        INFO scheduler.py:1557 -- Adding 1 nodes to satisfy min count for node type: local.cluster.node.
        INFO event_logger.py:77 -- Adding 1 node(s) of type local.cluster.node.

    (the cluster state file keeps 10.77.0.12 ``terminated``; cf. ray#46204). ``ray down`` of a local provider
    only runs ``ray stop`` on the head.
    """
    h = hosts
    share_on_head_over_the_network(h)
    config = onprem_config(h)
    env = h.env(RAY_AUTH_MODE="token")
    up = h.run("op", f"cluster/onprem_start.sh up {config} 2>&1", check=False, timeout=300, env=env)
    assert up.returncode == 0, up.stdout[-6000:]
    nodes = alive_nodes(h)
    assert set(nodes) == {ADDRESSES[n] for n in h.names}, f"{nodes}\n{up.stdout[-3000:]}"

    sweep = list(SWEEP)
    sweep[sweep.index("--cpus-per-trial") + 1] = "2"  # one trial per host at a time (each has 2 CPUs)
    sweep += ["--name", "onprem", "--model", h.env()["WLORA_MODEL"], "--data-dir", h.env()["WLORA_DATA_DIR"]]
    command = f'cd {ROOT} && python sweeps/glue_sweep.py --address auto --storage-path "$WLORA_STORAGE_PATH"'
    command += ' --tracking-uri "$MLFLOW_TRACKING_URI" ' + shlex.join(sweep)
    run = h.ssh("op", "head", f"source ~/.bashrc > /dev/null 2>&1; {command} 2>&1", check=False, timeout=400)
    assert run.returncode == 0, run.stdout[-6000:] + "\n" + ray_logs(h)
    children = [c for c in mlflow_children(h, "http://127.0.0.1:5000") if c["role"] != "orphan"]
    finished = [c for c in children if c["status"] == "FINISHED"]
    assert len(finished) >= 4, children
    assert len({c["hostname"] for c in finished}) >= 2, children
    assert {c["hostname"] for c in finished} <= set(h.names), children
    assert (h.workdir / "shared" / "wlora-runs" / "onprem").is_dir()  # checkpoints on the shared storage

    down = h.run("op", f"cluster/onprem_start.sh down {config} 2>&1", check=False, timeout=120, env=env)
    assert down.returncode == 0, down.stdout[-4000:]
    deadline = time.monotonic() + 30
    while left := ray_processes(h):
        assert time.monotonic() < deadline, f"Ray still running after onprem_start.sh down: {left}"
        time.sleep(2)
