"""Offline checks of ``cluster-onprem.yaml`` and of its one source with ``cluster.yaml`` (cluster/make_configs.py).

The launch itself is tests/test_cluster_onprem.py (on separate namespaced hosts).
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
SHARED_KEYS = ("head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
SHARED_KEYS += ("cluster_synced_files", "initialization_commands", "file_mounts_sync_continuously")


def make_configs():
    spec = importlib.util.spec_from_file_location("make_configs", ROOT / "cluster" / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_committed_configs_are_the_generators_output():
    gen = make_configs()
    for name in gen.PROVIDERS:
        assert (ROOT / name).read_text() == gen.render(name), f"{name} is stale: run python cluster/make_configs.py"
    assert gen.main(["--check"]) == 0


def normalized(config: dict, name: str) -> str:
    """The config's commands with its provider's values put back into ``@FIELD@`` form."""
    values = make_configs().PROVIDERS[name]
    text = yaml.safe_dump({k: config[k] for k in SHARED_KEYS}, width=10**6)
    for field, value in sorted(values.items(), key=lambda kv: -len(str(kv[1]))):
        if field != "parts":
            text = text.replace(value, field)
    return text


def test_both_configs_run_the_same_start_and_mlflow_commands():
    aws, onprem = load("cluster.yaml"), load("cluster-onprem.yaml")
    assert normalized(aws, "cluster.yaml") == normalized(onprem, "cluster-onprem.yaml")
    # the shared part of setup_commands (after each provider's install step) too
    tail = len(onprem["setup_commands"]) - 1
    aws_tail = [c.replace("~/wlora-venv", "@VENV@") for c in aws["setup_commands"][-tail:]]
    onprem_tail = [c.replace("/mnt/shared/wlora/.venv", "@VENV@") for c in onprem["setup_commands"][-tail:]]
    strip = re.compile(r"WLORA_STORAGE_PATH=\S+|MLFLOW_TRACKING_URI=\S+|\S+=\S+' >")
    assert [strip.sub("", c) for c in aws_tail] == [strip.sub("", c) for c in onprem_tail]


def test_ray_accepts_the_onprem_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("cluster-onprem.yaml")
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    (node_type,) = prepared["available_node_types"].values()  # Ray's single on-prem node type
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])
    assert "available_node_types" not in config, "Ray refuses node types for a provider: local cluster"


def test_onprem_setup_needs_no_internet():
    config = load("cluster-onprem.yaml")
    keys = ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    commands = " ".join(c for key in keys for c in config[key])
    assert not re.search(r"apt-get|pip install|https?://(?!127\.0\.0\.1)", commands), commands
    assert config["file_mounts"] == {}, "the checkout is on the hosts' shared filesystem already"
    assert "HF_HUB_OFFLINE=1" in " ".join(config["setup_commands"])
    header = (ROOT / "cluster-onprem.yaml").read_text().split("\n\n")[0]
    for command in ("ray up cluster-onprem.yaml", "ray exec cluster-onprem.yaml", "ray down cluster-onprem.yaml"):
        assert command in header, command
