"""Multi-node safety for sweeps: shared storage and tracking on a cluster, model folders staged once per node.

On a Ray cluster with more than one node (now, or later through the autoscaler) every trial runs wherever Ray
puts it, so:

- Tune's ``storage_path`` must be shared: since Ray 2.7 there is no syncing through the head node, and a trial
  on another node cannot write (or resume from) checkpoints in a folder on the driver's disk. Cloud URIs
  (``s3://``, ``gs://``, ...) and network filesystems mounted on every node qualify.
- The MLflow tracking URI must be a server or database every node reaches: a ``file:`` or SQLite store would
  split runs over the nodes' disks.
- A model folder that exists only on the driver is shipped once per node: :func:`stage_dir` puts its files in
  Ray's object store on the driver, :meth:`StagedDir.local_path` writes them to a node-local folder the first
  time a trial on that node asks (a file lock makes concurrent trials wait for that one copy). Tokenized data
  passed with ``tune.with_parameters`` needs nothing: Ray's object store already fetches it once per node.

Nodes are counted by machine (several Ray nodes on one machine share its disk). The checks only decide:
:func:`check_cluster_storage` raises ``ValueError`` with the fix in the message.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: Where Ray's cluster launcher puts the autoscaling config on the head (hard-coded in ``ray up``).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"

#: Filesystem types that are the same folder on every node that mounts them.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "glusterfs", "ceph", "cephfs", "beegfs", "gpfs", "9p"}
NETWORK_FS_PREFIXES = (
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.mountpoint-s3",
    "fuse.juicefs",
    "fuse.glusterfs",
    "fuse.sshfs",
)

#: MLflow store schemes that live on one machine's disk.
LOCAL_TRACKING_SCHEMES = {"", "file", "sqlite"}

#: Environment variable: root of the node-local folders that :meth:`StagedDir.local_path` fills.
STAGE_DIR_ENV = "WLORA_STAGE_DIR"


# --- storage and tracking -------------------------------------------------------------------------------------


def _mount_fstype(path: Path, mounts_file: str = "/proc/self/mounts") -> str | None:
    """Filesystem type of the mount holding ``path`` (longest mount-point prefix; of several mounts on the same
    point, the last one, which covers the others), None if unknown."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    best, fstype = "", None
    target = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, parts[2]
    return fstype


def is_shared_storage(storage_path: str | os.PathLike[str] | None) -> bool:
    """True when every node of a cluster sees the same ``storage_path``.

    Args:
        storage_path: Tune's ``storage_path``: a URI (``s3://bucket/runs``) or a local path; None is Tune's
            default ``~/ray_results`` on the driver.
    """
    if storage_path is None:
        return False
    text = str(storage_path)
    scheme = urlparse(text).scheme
    if scheme and scheme != "file" and len(scheme) > 1:  # len > 1: not a Windows drive letter
        return True
    local = Path(urlparse(text).path if scheme == "file" else text).expanduser().resolve()
    fstype = _mount_fstype(local)
    return fstype is not None and (fstype in NETWORK_FS or fstype.startswith(NETWORK_FS_PREFIXES))


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The URI MLflow would use: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's local default."""
    if tracking_uri:
        return str(tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///mlflow.db"  # MLflow 3's default: a file in the current folder


def is_local_tracking_uri(tracking_uri: str | None) -> bool:
    """True for MLflow stores on one machine's disk: plain paths, ``file:`` and ``sqlite:`` URIs."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri in ("databricks", "databricks-uc", "uc"):  # MLflow's names for a Databricks workspace
        return False
    scheme = urlparse(uri).scheme.lower()
    return scheme in LOCAL_TRACKING_SCHEMES or len(scheme) == 1  # len 1: a Windows drive letter


def autoscaler_max_nodes(bootstrap_config: str | os.PathLike[str] = BOOTSTRAP_CONFIG) -> int | None:
    """1 + ``max_workers`` when this machine is a cluster-launcher head (its autoscaling config), else None.

    A `ray up` cluster with ``min_workers: 0`` starts as the head alone; the workers come later, so the node
    count at sweep start says nothing about where trials will run.
    """
    path = Path(bootstrap_config).expanduser()
    if not path.is_file():
        return None
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    return 1 + int(config.get("max_workers", 0))


def cluster_node_count(bootstrap_config: str | os.PathLike[str] = BOOTSTRAP_CONFIG) -> int:
    """Machines trials may run on: distinct IPs of the alive Ray nodes (if connected), or more if the autoscaler
    may add nodes.

    Several Ray nodes on one machine (one IP, as in tests) share its disk, so they count once.
    """
    counts = [1]
    try:
        import ray

        if ray.is_initialized():
            counts.append(len({node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}))
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    max_nodes = autoscaler_max_nodes(bootstrap_config)
    if max_nodes is not None:
        counts.append(max_nodes)
    return max(counts)


def check_cluster_storage(
    storage_path: str | os.PathLike[str] | None,
    tracking_uri: str | None,
    num_nodes: int | None = None,
) -> None:
    """Refuse a local ``storage_path`` or a local MLflow store when trials can run on more than one node.

    Call it before any trial starts, best after ``ray.init`` (then ``num_nodes=None`` counts the live nodes;
    before it, only the cluster launcher's autoscaling config on the head is seen).

    Args:
        storage_path: Tune's ``storage_path`` (URI or local path; None = Tune's local default).
        tracking_uri: the MLflow tracking URI the sweep logs to (None: ``$MLFLOW_TRACKING_URI`` or MLflow's
            local default).
        num_nodes: nodes the sweep may use; None = :func:`cluster_node_count`. The larger of the two counts.

    Raises:
        ValueError: with one message naming each problem and its fix.
    """
    nodes = cluster_node_count() if num_nodes is None else max(int(num_nodes), cluster_node_count())
    if nodes <= 1:
        return
    problems = []
    if not is_shared_storage(storage_path):
        shown = "Tune's default ~/ray_results" if storage_path is None else repr(str(storage_path))
        problems.append(
            f"--storage-path {shown} is local to this machine: trials on other nodes cannot write or resume "
            "their checkpoints there (Ray >= 2.7 does not sync through the head). Use cloud storage such as "
            "s3://BUCKET/ray-results (cluster.yaml sets $WLORA_STORAGE_PATH) or a network filesystem mounted "
            "at the same path on every node."
        )
    if is_local_tracking_uri(tracking_uri):
        problems.append(
            f"--tracking-uri {resolve_tracking_uri(tracking_uri)!r} is a local file/SQLite MLflow store: runs "
            "logged on other nodes would land on their own disks. Use a tracking server every node reaches "
            "(cluster.yaml: http://127.0.0.1:5000 on every node) or a database URI (postgresql://...)."
        )
    if problems:
        raise ValueError(f"this Ray cluster has {nodes} nodes (or may autoscale to them); " + " ".join(problems))


# --- staging a folder once per node ---------------------------------------------------------------------------


def _read_tree(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class StagedDir:
    """A driver-side folder shipped through Ray's object store, written once per node on first use.

    Pickles small (the file contents stay in the object store), so pass it with ``tune.with_parameters``;
    the trainable calls :meth:`local_path` without importing this module.
    """

    name: str
    """Folder name of the source (for readable node-local paths)."""
    digest: str
    """SHA-256 over the relative paths and contents: the node-local cache key."""
    files: Any = field(repr=False)
    """``ray.ObjectRef`` of ``{relative path: bytes}``."""

    def local_path(self, root: str | os.PathLike[str] | None = None) -> Path:
        """This node's copy of the folder, written on the first call on the node (others wait on a lock).

        Args:
            root: node-local folder for staged copies; default ``$WLORA_STAGE_DIR``, else
                ``<tempdir>/wlora-staged``.
        """
        base = Path(root or os.environ.get(STAGE_DIR_ENV) or Path(tempfile.gettempdir()) / "wlora-staged")
        target = base / f"{self.name}-{self.digest[:16]}"
        if (target / ".staged").is_file():
            return target
        base.mkdir(parents=True, exist_ok=True)
        with open(base / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if (target / ".staged").is_file():  # another trial on this node staged it meanwhile
                return target
            import ray

            files = ray.get(self.files)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=base))
            for rel, data in files.items():
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
            (tmp / ".staged").write_text(self.digest)
            if target.exists():  # a copy interrupted before its marker
                shutil.rmtree(target)
            tmp.rename(target)
            with open(base / "staged.log", "a") as log:  # one line per copy made on this node
                log.write(f"{target.name} {os.getpid()}\n")
        return target


def stage_dir(path: str | os.PathLike[str]) -> StagedDir:
    """Put the folder ``path`` into Ray's object store (call on the driver after ``ray.init``).

    Meant for model folders that exist on the driver only (a local copy, or the driver's hub cache); every
    node that runs a trial gets one copy through :meth:`StagedDir.local_path`.

    Raises:
        NotADirectoryError: ``path`` is not a folder.
    """
    import ray

    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"cannot stage {path}: not a folder")
    files = _read_tree(root)
    return StagedDir(name=root.name, digest=_digest(files), files=ray.put(files))
