"""Separate hosts on one machine, for testing cluster code for real: ``head``, ``w1``, ``w2`` (and the ``op`` seat).

Each host is its own set of Linux namespaces: network (one ``eth0`` on a private bridge, its own address), UTS
(its own hostname), PID (everything it runs dies with it) and mount (its own ``/tmp``, home and ``/run``, backed
by a folder of the harness: a private disk). The bridge lives in one outer namespace the harness creates (the
``op`` seat: the operator's laptop, from where ``ray up`` or ``ssh`` run); nothing here ever touches the
machine's own interfaces, and nothing leaves the bridge (no route out).

Each host runs ``sshd`` on its address (root, a throw-away key). ``/mnt/shared`` plays the network filesystem: a
folder of the harness bound on ``head`` and mounted over SSH (``sshfs``, a real network filesystem) on the
workers. The software (this checkout, its virtualenv and Python, the model and data folders) is visible at
the same path on every host, as on a cluster with a shared software install.

Stopping kills the outer namespace's first process: the kernel then ends every process of every host.

Usage::

    with Hosts(workdir) as hosts:
        hosts.run("w1", "hostname")            # a bash command on host w1 (through nsenter)
        hosts.ssh("op", "w2", "hostname")      # the same through the network

    python tests/hosts.py WORKDIR              # bring them up, print how to enter them, wait for Ctrl-C
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBNET = "10.77.0"
ADDRESSES = {"op": f"{SUBNET}.1", "head": f"{SUBNET}.10", "w1": f"{SUBNET}.11", "w2": f"{SUBNET}.12"}
SHARED = "/mnt/shared"
TOOLS = ("unshare", "nsenter", "ip", "sshd", "ssh", "ssh-keygen", "sshfs")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _keep_paths() -> list[tuple[str, str]]:
    """(source, target) folders that must stay visible when a host's /tmp and home are covered by its private
    folders: the software, and the model and data folders, at the paths the environment names them by (a
    ``WLORA_DATA_DIR`` reached through a symlink under /tmp gets its real folder bound at the named path)."""
    paths = {str(ROOT), sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent)}
    pairs = {(p, p) for p in paths}
    for var in ("WLORA_MODEL", "WLORA_DATA_DIR"):
        value = os.environ.get(var)
        if value and Path(value).exists():
            named = os.path.abspath(value)
            pairs.add((str(Path(value).resolve()), named))
    covered = ("/tmp/", str(Path.home()) + "/")
    return sorted((src, dst) for src, dst in pairs if dst.startswith(covered) or src.startswith(covered))


def _mount_script(name: str, workdir: Path, hosts_file: Path) -> str:
    """Bash run as a host's first process: hostname, private /run, /tmp and home, shared folder on head."""
    disk = workdir / name
    home = str(Path.home())
    lines = ["set -e", f"hostname {name}", "mount --make-rprivate /", "mount -t tmpfs run /run"]
    lines += ["mkdir -p /run/sshd /run/munge", "mount -t tmpfs mnt /mnt", f"mkdir -p {SHARED} /mnt/keep"]
    keep = _keep_paths()
    for i, (src, _) in enumerate(keep):
        lines += [f"mkdir -p /mnt/keep/{i}", f"mount --bind {shlex.quote(src)} /mnt/keep/{i}"]
    if name in ("head", "op"):
        lines.append(f"mount --bind {shlex.quote(str(workdir / 'shared'))} {SHARED}")
    # the private disk and the hosts file first: their folders may lie under what gets covered next
    lines += ["mkdir -p /mnt/disk", f"mount --bind {shlex.quote(str(disk))} /mnt/disk"]
    lines.append(f"mount --bind {shlex.quote(str(hosts_file))} /etc/hosts")
    lines += ["mount --bind /mnt/disk/tmp /tmp", f"mount --bind /mnt/disk/home {home}"]
    for i, (_, dst) in enumerate(keep):
        lines += [f"mkdir -p {shlex.quote(dst)}", f"mount --bind /mnt/keep/{i} {shlex.quote(dst)}"]
    # bash stays the namespace's first process: it reaps what daemons leave behind
    lines += ["chmod 1777 /tmp", "echo ready", "sleep infinity & wait"]
    return "\n".join(lines)


class Hosts:
    """The outer namespace (bridge + ``op`` seat) and the hosts ``head``, ``w1``, ``w2``."""

    def __init__(self, workdir: Path, names: tuple[str, ...] = ("head", "w1", "w2")):
        self.workdir = Path(workdir).resolve()
        self.names = names
        self.pids: dict[str, int] = {}  # host -> its first process (PID in the machine's namespace)
        self._procs: list[subprocess.Popen] = []
        self.key = self.workdir / "op" / "id_ed25519"

    # --- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> Hosts:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> int:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        line = proc.stdout.readline().strip()
        if line != "ready":
            proc.kill()
            raise RuntimeError(f"host {name} did not start: {line} {proc.stderr.read()[-2000:]}")
        deadline = time.monotonic() + 10  # walk down to the namespace's first process (after its exec of sleep)
        while time.monotonic() < deadline:
            pid = proc.pid
            while _children(pid):
                pid = _children(pid)[0]
            if Path(f"/proc/{pid}/exe").resolve().name == "sleep":  # its parent: the namespace's bash
                status = Path(f"/proc/{pid}/status").read_text()
                return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))
            time.sleep(0.05)
        raise RuntimeError(f"host {name}: could not find its first process under {proc.pid}")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "shared").mkdir(exist_ok=True)
        hosts_file = self.workdir / "etc-hosts"
        hosts_file.write_text(
            "127.0.0.1 localhost\n" + "".join(f"{ip} {n}\n" for n, ip in ADDRESSES.items() if n in (*self.names, "op"))
        )
        for name in ("op", *self.names):
            for sub in ("tmp", "home/.ssh"):
                (self.workdir / name / sub).mkdir(parents=True, exist_ok=True)
        unshare = ["unshare", "--net", "--uts", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
        # the outer namespace: the bridge, and the operator's seat on it
        bridge = f"ip link set lo up && ip link add br0 type bridge && ip addr add {ADDRESSES['op']}/24 dev br0"
        bridge += " && ip link set br0 up && "
        op_script = bridge + _mount_script("op", self.workdir, hosts_file)
        self.pids["op"] = self._spawn("op", [*unshare, "bash", "-c", op_script])
        outer = self.pids["op"]
        for name in self.names:
            script = _mount_script(name, self.workdir, hosts_file)
            argv = ["nsenter", "-t", str(outer), "--pid", "--", *unshare, "bash", "-c", script]
            pid = self.pids[name] = self._spawn(name, argv)
            veth = f"v-{name}"
            self._ip(outer, f"link add {veth} type veth peer name eth0 netns {pid}")
            self._ip(outer, f"link set {veth} master br0")
            self._ip(outer, f"link set {veth} up")
            self._ip(pid, "link set lo up")
            self._ip(pid, f"addr add {ADDRESSES[name]}/24 dev eth0")
            self._ip(pid, "link set eth0 up")
        self._start_ssh()

    def _ip(self, pid: int, args: str) -> None:
        subprocess.run(["nsenter", "-t", str(pid), "--net", "ip", *args.split()], check=True, capture_output=True)

    def _start_ssh(self) -> None:
        """A throw-away key for root; sshd on every host; the shared folder over SSH on the workers."""
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        config_text = (
            "Port 22\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPidFile /run/sshd.pid\nSubsystem sftp internal-sftp\nMaxStartups 100\n"
            "MaxSessions 100\nAcceptEnv RAY_* WLORA_* HF_*\n"
        )
        ssh_conf = "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        for name in ("op", *self.names):
            dot_ssh = self.workdir / name / "home" / ".ssh"
            shutil.copy(self.key.with_suffix(".pub"), dot_ssh / "authorized_keys")
            shutil.copy(self.key, dot_ssh / "id_ed25519")
            (dot_ssh / "config").write_text(ssh_conf)
            etc = self.workdir / name / "tmp" / "sshd"  # the host's own /tmp/sshd
            etc.mkdir(exist_ok=True)
            (etc / "sshd_config").write_text(config_text)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "host_key")], check=True)
            if name != "op":
                self.run(name, "/usr/sbin/sshd -f /tmp/sshd/sshd_config -h /tmp/sshd/host_key")
        for name in self.names:
            self.wait_ssh("op", name)
        for name in self.names:
            if name != "head":
                opts = "-o StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,reconnect,cache=no,idmap=none"
                self.run(name, f"sshfs {opts} root@head:{SHARED} {SHARED}")

    def stop(self) -> None:
        """Kill the outer namespace's first process (the kernel ends every host with it), then reap."""
        outer = self.pids.get("op")
        if outer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(outer, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        self.pids.clear()
        self._procs.clear()

    # --- running things on a host ---------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for a host: this virtualenv first on PATH, the assets, no proxy."""
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(Path.home()),
            "LANG": "C.UTF-8",
            "HF_HUB_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        for var in ("WLORA_MODEL", "WLORA_DATA_DIR"):
            if os.environ.get(var):
                env[var] = os.environ[var]
        return {**env, **extra}

    def argv(self, host: str, argv: list[str]) -> list[str]:
        pid = str(self.pids[host])
        return ["nsenter", "-t", pid, "--net", "--uts", "--mount", "--pid", f"--wd={ROOT}", "--", *argv]

    def run(self, host: str, command: str, *, check: bool = True, timeout: float = 120, env=None, **kw):
        """``bash -c command`` on ``host``; returns the CompletedProcess (text, output captured)."""
        return subprocess.run(
            self.argv(host, ["bash", "-c", command]),
            check=check,
            timeout=timeout,
            env=env or self.env(),
            capture_output=True,
            text=True,
            **kw,
        )

    def popen(self, host: str, command: str, *, env=None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(host, ["bash", "-c", command]), env=env or self.env(), **kw)

    def ssh(self, src: str, dst: str, command: str, **kw):
        return self.run(src, f"ssh -o BatchMode=yes root@{dst} {shlex.quote(command)}", **kw)

    def wait_ssh(self, src: str, dst: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.ssh(src, dst, "true", check=False, timeout=15).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no ssh from {src} to {dst}")
            time.sleep(0.3)

    def private(self, host: str, path: str) -> Path:
        """Where ``path`` under the host's /tmp or home lies on the machine (to read a host's logs)."""
        home = str(Path.home())
        if path.startswith("/tmp/"):
            return self.workdir / host / "tmp" / path[len("/tmp/") :]
        if path.startswith(home + "/"):
            return self.workdir / host / "home" / path[len(home) + 1 :]
        raise ValueError(f"{path} is not on {host}'s private disk")


def main(argv: list[str]) -> int:
    workdir = Path(argv[0] if argv else "hosts-work")
    with Hosts(workdir) as hosts:
        print("hosts up:", ", ".join(f"{n}={ADDRESSES[n]} (pid {p})" for n, p in hosts.pids.items()))
        print(f"enter one: nsenter -t PID --net --uts --mount --pid --wd={ROOT} bash; Ctrl-C stops them all")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
