"""Offline checks of ``cluster.yaml``: Ray's own cluster-config validation plus what Ray does not check.

Ray's ``prepare_config`` + ``validate_config`` (what ``ray up`` runs before it talks to the cloud) catch wrong
types, unknown keys and worker-count errors, but pass ``node_config`` through unchecked: that is validated here
against EC2 ``RunInstances`` (botocore's offline service model, when boto3 is installed) and against the A100
instance types. The rest pins the security and wiring promises the file makes: no secrets, nothing public but
SSH, dashboard and MLflow on 127.0.0.1, mounts and installs that refer to things in this repository.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"

# EC2 instance types with A100s: (vCPUs, GPUs). AWS has no smaller A100 instance.
A100_INSTANCES = {"p4d.24xlarge": (96, 8), "p4de.24xlarge": (96, 8)}


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does offline before any provider call: merge defaults, then schema + count checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def all_commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
    keys += ("head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in config.get(key, [])]


def worker_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


# --- Ray's own validation ------------------------------------------------------------------------------------


def test_ray_accepts_cluster_yaml():
    prepared = ray_validate(load())
    assert prepared["provider"]["type"] == "aws"
    # prepare_config merged setup_commands into both node kinds (what the nodes really run)
    assert prepared["worker_setup_commands"][: len(load()["setup_commands"])] == load()["setup_commands"]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda c: c.update(max_workers="four"), "is not of type 'integer'"),
        (lambda c: c.update(max_wrokers=4), "Additional properties are not allowed"),
        (lambda c: c["available_node_types"]["worker.a100x8"].update(min_worker=1), "Additional properties"),
        (lambda c: c["available_node_types"]["worker.a100x8"]["resources"].update(GPU=-8), "minimum"),
        (lambda c: c["available_node_types"]["worker.a100x8"].update(min_workers=5), "smaller than the sum"),
        (lambda c: c.update(head_node_type="head.gpu"), "must be one of"),
    ],
    ids=["type", "unknown-key", "unknown-node-key", "negative-resource", "min-over-max", "head-type"],
)
def test_ray_validation_catches_mistakes(mutate, error):
    """The validation used above is not a no-op: broken copies of the file fail with Ray's message."""
    config = load()
    mutate(config)
    with pytest.raises(Exception, match=error):
        ray_validate(config)


# --- node_config, which Ray does not check -------------------------------------------------------------------


def test_node_configs_are_valid_run_instances_requests():
    """Each node_config, as Ray's AWS provider sends it, validates against EC2 RunInstances (offline model)."""
    botocore_session = pytest.importorskip("botocore.session", reason="needs the `cluster` extra (boto3)")
    from botocore.validate import validate_parameters

    run_instances = botocore_session.get_session().get_service_model("ec2").operation_model("RunInstances")
    known_types = set(run_instances.input_shape.members["InstanceType"].enum)
    for name, node_type in load()["available_node_types"].items():
        request = copy.deepcopy(node_type["node_config"])
        request.pop("SubnetIds", None)  # Ray's own key, resolved to SubnetId
        request.update(MinCount=1, MaxCount=1)
        validate_parameters(request, run_instances.input_shape)  # raises ParamValidationError
        assert request["InstanceType"] in known_types, name


def test_workers_are_a100_nodes_with_matching_resources():
    config = load()
    workers = worker_types(config)
    assert workers, "no worker node type"
    for name, node_type in workers.items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in A100_INSTANCES, f"{name}: {instance} has no A100s"
        vcpus, gpus = A100_INSTANCES[instance]
        assert node_type["resources"] == {"CPU": vcpus, "GPU": gpus}, name
        assert node_type["min_workers"] == 0, f"{name}: idle A100 nodes would be kept running"
        assert 0 < node_type["max_workers"] <= config["max_workers"], name
        assert node_type["node_config"]["IamInstanceProfile"], f"{name}: workers write checkpoints to S3"


def test_head_is_a_cpu_node_that_runs_no_trials():
    config = load()
    head = config["available_node_types"][config["head_node_type"]]
    assert head["node_config"]["InstanceType"] not in A100_INSTANCES
    assert head["node_config"]["InstanceType"].split(".")[0][0] in "mcr"  # general/compute/memory families
    assert head["resources"] == {"CPU": 0}


def test_images_are_ami_ids_or_ssm_aliases():
    for name, node_type in load()["available_node_types"].items():
        image = node_type["node_config"]["ImageId"]
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}|resolve:ssm:/\S+", image), f"{name}: {image}"


# --- security ------------------------------------------------------------------------------------------------

SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"(?i)aws_secret_access_key|aws_session_token|secret_key",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?i)password|passwd",
    r"RAY_AUTH_TOKEN\s*=",
    r"://[^/\s:@]+:[^/\s@]+@",  # credentials inside a URI
    r"(?i)\bghp_[0-9a-z]{20,}|\bhf_[0-9a-z]{20,}",  # GitHub / Hugging Face tokens
]


def test_no_secrets_in_file():
    text = CLUSTER_YAML.read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), pattern
    config = load()
    assert "ssh_private_key" not in config["auth"], "Ray creates the key pair; no key path in the file"
    for name, node_type in config["available_node_types"].items():
        assert "KeyName" not in node_type["node_config"], name
        assert "UserData" not in node_type["node_config"], name


def test_only_ssh_is_public():
    """Ray's security group opens 22 + intra-cluster; any extra inbound rule may only be SSH."""
    rules = load()["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        assert (rule.get("FromPort"), rule.get("ToPort")) == (22, 22), rule
    text = CLUSTER_YAML.read_text()
    assert "0.0.0.0" not in text and "::/0" not in text


def test_dashboard_and_mlflow_listen_on_loopback():
    config = load()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start
    mlflow = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert len(mlflow) == 1
    assert re.search(r"--host 127\.0\.0\.1\b", mlflow[0])
    assert "--backend-store-uri" in mlflow[0] and re.search(r"--artifacts-destination s3://", mlflow[0])
    for cmd in all_commands(config):  # no other server binds a public interface
        assert not re.search(r"--(dashboard-)?host[= ](?!127\.0\.0\.1)", cmd), cmd


def test_token_auth_reaches_workers():
    """Ray 2.60 nodes only join a token cluster with the token: generated on the head, synced to workers."""
    config = load()
    assert any("get-auth-token --generate" in c for c in config["head_setup_commands"])
    assert "~/.ray/auth_token" in config["cluster_synced_files"]
    assert any("RAY_AUTH_MODE=token" in c for c in config["setup_commands"])


# --- wiring to this repository -------------------------------------------------------------------------------


def test_file_mounts_point_into_this_repo():
    mounts = load()["file_mounts"]
    assert mounts, "the project must reach every node"
    for remote, local in mounts.items():
        path = (ROOT / local).resolve()  # `ray up` runs in the repository root (see the file's header)
        assert path.exists(), f"file_mounts[{remote!r}] = {local!r} does not exist"
        assert path == ROOT or ROOT in path.parents, f"{local!r} is outside the repository"
    assert any((ROOT / local / "pyproject.toml").is_file() for local in mounts.values()), "project not mounted"


def test_setup_installs_the_mounted_project_with_cuda_torch():
    config = load()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    remotes = {remote.replace("~", "$HOME").rstrip("/") for remote in config["file_mounts"]}
    installs = [c for c in config["setup_commands"] if re.search(r"pip install .*-e ", c)]
    assert installs, "setup_commands do not install the project"
    for cmd in installs:
        target = re.search(r"-e \"?([^\"\s\[]+)(?:\[([\w,]+)\])?", cmd)
        assert target.group(1).rstrip("/") in remotes, f"{cmd}: not a file_mounts target"
        for extra in (target.group(2) or "").split(","):
            assert not extra or extra in extras, f"{cmd}: no extra [{extra}] in pyproject.toml"
        assert "constraints.txt" not in cmd, "constraints.txt pins the CPU torch wheel"
    torch = [c for c in config["setup_commands"] if re.search(r"pip install .*\btorch\b", c)]
    assert torch and "download.pytorch.org/whl/cu" in torch[0], "install CUDA torch before the project"
    assert config["setup_commands"].index(torch[0]) < config["setup_commands"].index(installs[0])
    assert "boto3" in " ".join(extras["cluster"]), "the `cluster` extra brings the AWS SDK"


def test_storage_is_the_bucket():
    text = " ".join(load()["setup_commands"])
    storage = re.search(r"WLORA_STORAGE_PATH=(\S+)", text)
    assert storage and storage.group(1).startswith("s3://")
    from sweeps.cluster_checks import is_shared_storage

    assert is_shared_storage(storage.group(1))


def test_header_gives_the_commands_and_they_refer_to_this_repo():
    header = CLUSTER_YAML.read_text().split("\n\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    for command in (
        "ray up cluster.yaml",
        "ray exec cluster.yaml",
        "ray dashboard cluster.yaml",
        "ray down cluster.yaml",
    ):
        assert command in header, command
    assert "--remote-port 5000" in header  # MLflow UI through port forwarding
    for script in re.findall(r"python (\S+\.py)", header):
        assert (ROOT / script).is_file(), f"{script} named in the header does not exist"


KEY_LINE = re.compile(r"^(\s*)(?:- )?([\w.\"~/-]+):(?:\s|$)")


def test_every_key_is_commented():
    """Each mapping key has a comment on the lines right above it or at the end of its line."""
    lines = CLUSTER_YAML.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        above = lines[i - 1].strip() if i else ""
        if not (above.startswith("#") or " # " in line):
            missing.append(f"{i + 1}: {line.strip()}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing)
