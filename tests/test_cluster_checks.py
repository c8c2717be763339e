"""Decisions of :mod:`sweeps.cluster_checks` (no Ray cluster needed; the real two-node cases are in test_cluster)."""

from __future__ import annotations

import pytest

from sweeps import cluster_checks as cc

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("path", "shared"),
    [
        ("s3://bucket/ray-results", True),
        ("gs://bucket/x", True),
        ("abfs://container@account.dfs.core.windows.net/x", True),
        (None, False),
        ("runs", False),
        ("/tmp/ray-results", False),
        ("file:///tmp/ray-results", False),
        ("~/ray_results", False),
    ],
)
def test_shared_storage(path, shared):
    assert cc.is_shared_storage(path) is shared


def test_network_filesystem_counts_as_shared(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw 0 0\n"
        "10.0.0.5:/export /mnt/shared nfs4 rw 0 0\n"
        "s3fs /mnt/bucket fuse.s3fs rw 0 0\n"
        "tmpfs /mnt/shared/tmp tmpfs rw 0 0\n"
    )
    real = cc._mount_fstype
    monkeypatch.setattr(cc, "_mount_fstype", lambda p: real(p, str(mounts)))
    assert cc.is_shared_storage("/mnt/shared/runs")
    assert cc.is_shared_storage("/mnt/bucket/runs")
    assert not cc.is_shared_storage("/mnt/shared/tmp/runs")  # the innermost mount decides
    assert not cc.is_shared_storage("/mnt/sharedx/runs")  # a prefix of the name is not a parent folder
    assert not cc.is_shared_storage("/home/runs")


def test_a_mount_stacked_on_another_decides(tmp_path, monkeypatch):
    """An NFS server mounting its own export over the exported folder (or sshfs over a bind mount): the later
    mount on the same point covers the earlier one, so it decides."""
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw 0 0\n/dev/vdb /mnt/shared ext4 rw 0 0\nhead:/x /mnt/shared fuse.sshfs rw 0 0\n"
    )
    real = cc._mount_fstype
    monkeypatch.setattr(cc, "_mount_fstype", lambda p: real(p, str(mounts)))
    assert cc.is_shared_storage("/mnt/shared/wlora-runs")
    mounts.write_text(
        "overlay / overlay rw 0 0\nhead:/x /mnt/shared fuse.sshfs rw 0 0\n/dev/vdb /mnt/shared ext4 rw 0 0\n"
    )
    assert not cc.is_shared_storage("/mnt/shared/wlora-runs")


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("http://127.0.0.1:5000", False),
        ("https://mlflow.example.org", False),
        ("postgresql://mlflow@db:5432/mlflow", False),
        ("databricks", False),
        ("sqlite:///runs/mlflow.db", True),
        ("file:///tmp/mlruns", True),
        ("/tmp/mlruns", True),
        ("mlruns", True),
    ],
)
def test_local_tracking_uri(uri, local):
    assert cc.is_local_tracking_uri(uri) is local


def test_unset_tracking_uri_follows_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cc.is_local_tracking_uri(None)  # MLflow's default: sqlite in the current folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert not cc.is_local_tracking_uri(None)


def test_single_node_allows_local_everything(monkeypatch):
    monkeypatch.setattr(cc, "cluster_node_count", lambda: 1)
    cc.check_cluster_storage("runs", "sqlite:///mlflow.db", num_nodes=None)
    cc.check_cluster_storage(None, None, num_nodes=1)


def test_multi_node_refuses_local_storage(monkeypatch):
    monkeypatch.setattr(cc, "cluster_node_count", lambda: 1)
    with pytest.raises(ValueError, match=r"3 nodes.*--storage-path '/data/runs' is local.*s3://") as e:
        cc.check_cluster_storage("/data/runs", "http://127.0.0.1:5000", num_nodes=3)
    assert "tracking" not in str(e.value)
    with pytest.raises(ValueError, match="Tune's default ~/ray_results is local"):
        cc.check_cluster_storage(None, "http://127.0.0.1:5000", num_nodes=2)


def test_multi_node_refuses_local_tracking(monkeypatch):
    monkeypatch.setattr(cc, "cluster_node_count", lambda: 1)
    with pytest.raises(ValueError, match=r"--tracking-uri 'sqlite:///x.db' is a local file/SQLite") as e:
        cc.check_cluster_storage("s3://b/r", "sqlite:///x.db", num_nodes=2)
    assert "storage-path" not in str(e.value)
    with pytest.raises(ValueError, match="'file:///tmp/mlruns' is a local"):
        cc.check_cluster_storage("s3://b/r", "file:///tmp/mlruns", num_nodes=2)


def test_multi_node_with_bucket_and_server_passes(monkeypatch):
    monkeypatch.setattr(cc, "cluster_node_count", lambda: 1)
    cc.check_cluster_storage("s3://b/ray-results", "http://127.0.0.1:5000", num_nodes=5)


def test_autoscaler_config_counts_future_workers(tmp_path, monkeypatch):
    """A `ray up` head starts alone (min_workers 0): its autoscaling config says how many nodes may come."""
    assert cc.autoscaler_max_nodes(tmp_path / "missing.yaml") is None
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text("cluster_name: x\nmax_workers: 4\n")
    assert cc.autoscaler_max_nodes(bootstrap) == 5
    assert cc.cluster_node_count(bootstrap) == 5
    monkeypatch.setattr(cc, "BOOTSTRAP_CONFIG", str(bootstrap))
    monkeypatch.setattr(cc, "cluster_node_count", lambda b=str(bootstrap): cc.autoscaler_max_nodes(b))
    with pytest.raises(ValueError, match="5 nodes"):
        cc.check_cluster_storage("runs", "http://127.0.0.1:5000")


def test_stage_dir_needs_a_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a folder"):
        cc.stage_dir(tmp_path / "nope")


def test_staged_dir_writes_once_and_is_complete(tmp_path, monkeypatch):
    """local_path() without Ray's object store: the copy is made once, atomically, then reused."""
    src = tmp_path / "model"
    (src / "a").mkdir(parents=True)
    (src / "a" / "w.bin").write_bytes(b"\x00\x01" * 100)
    (src / "config.json").write_text("{}")
    files = cc._read_tree(src)
    import ray

    monkeypatch.setattr(ray, "get", lambda ref: ref)  # the "object ref" is the dict itself
    staged = cc.StagedDir(name="model", digest=cc._digest(files), files=files)
    root = tmp_path / "node"
    first = staged.local_path(root)
    assert (first / "a" / "w.bin").read_bytes() == b"\x00\x01" * 100
    assert (first / "config.json").read_text() == "{}"
    assert staged.local_path(root) == first
    assert len((root / "staged.log").read_text().splitlines()) == 1
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == sorted([first.name, "staged.log"])
    # a different content is a different copy
    files2 = {**files, "config.json": b"{1}"}
    other = cc.StagedDir(name="model", digest=cc._digest(files2), files=files2)
    assert other.local_path(root) != first
