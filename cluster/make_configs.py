"""Writes ``cluster.yaml`` (AWS) and ``cluster-onprem.yaml`` (your own hosts, provider ``local``) from one source.

Both files run the same commands on their nodes: the venv and token set-up, the environment file with the storage
path and MLflow URI, the Ray head and worker start commands, the MLflow server on the head and the workers' SSH
tunnel to it (``SHARED`` below). Only the provider part (header, provider, auth, node types, file mounts) and the
install step differ: AWS installs CUDA torch and the synced checkout into a fresh venv; on premises nothing is
installed (the hosts may have no internet), the checkout and its virtualenv are on a shared filesystem and the
install step only checks them. ``@NAME@`` fields in ``SHARED`` take each provider's values.

    python cluster/make_configs.py           # rewrite both files
    python cluster/make_configs.py --check   # exit 1 if a committed file differs from what this writes

tests/test_cluster_config.py checks that the committed files are this script's output.
"""

# ruff: noqa: E501  (the YAML text keeps the configs' own long command lines)
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

AWS_HEAD = r"""# Ray cluster launcher config: a CPU head (Tune driver + MLflow server) and autoscaled 8×A100 workers on AWS.
#
# One-time, on your laptop, from the repository root (`file_mounts` below syncs "." = this checkout):
#   pip install -e ".[cluster]"                      # ray + boto3; AWS credentials as for the aws CLI
#   aws s3 mb s3://REPLACE-WITH-YOUR-BUCKET         # then put that bucket name on the two lines marked EDIT
#
# Launch and run a sweep:
#   ray up cluster.yaml -y                           # head only; A100 workers start when trials ask for GPUs
#   aws iam put-role-policy --role-name ray-autoscaler-v1 --policy-name wlora-pass-role \
#     --policy-document '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:PassRole",
#       "Resource": "arn:aws:iam::*:role/ray-autoscaler-v1"}]}'
#                                                    # ^ once per account: lets the head give workers their S3 role
#   ray exec cluster.yaml --tmux 'cd ~/wlora && python sweeps/glue_sweep.py --address auto --storage-path "$WLORA_STORAGE_PATH" --tracking-uri "$MLFLOW_TRACKING_URI" --gpus-per-trial 1 --cpus-per-trial 8 --max-concurrent 32 --max-failures 3'
#   ray attach cluster.yaml --tmux                   # watch the sweep (tmux session on the head)
#   (--max-concurrent: the head starts alone, so the GPUs the autoscaler will add are not visible yet;
#    --max-failures: a trial whose node dies restarts elsewhere from its last checkpoint.)
#
# Look at it (SSH port forwarding; nothing but SSH is open to the internet):
#   ray dashboard cluster.yaml                       # Ray dashboard on http://127.0.0.1:8265
#   ray dashboard cluster.yaml --port 5000 --remote-port 5000   # MLflow UI on http://127.0.0.1:5000
#
# Tear down (the head is stopped, not terminated — cache_stopped_nodes — so ~/mlflow/mlflow.db survives; copy it
# to the bucket if you terminate it: ray exec cluster.yaml 'aws s3 cp ~/mlflow/mlflow.db "$WLORA_MLFLOW_DB_BACKUP"'):
#   ray down cluster.yaml -y
#
# No secrets live here: AWS credentials come from your environment, node credentials from IAM instance profiles,
# Ray creates the SSH key pair, and the Ray auth token is generated on the head and synced to the workers.
# tests/test_cluster_config.py validates this file offline with Ray's own prepare_config + validate_config.
# Generated, with cluster-onprem.yaml, by cluster/make_configs.py (one source for the setup, start and MLflow
# commands of both): edit that script and run `python cluster/make_configs.py`, not this file.

# Name of the cluster; `ray up/exec/down` find its nodes by this tag.
cluster_name: wlora-sweep

# Upper bound on worker nodes of all types together (the head is not counted).
max_workers: 4

# How fast the autoscaler adds nodes: at most upscaling_speed × current nodes per round (>0).
upscaling_speed: 1.0

# A worker idle this long is shut down (p4d.24xlarge is expensive).
idle_timeout_minutes: 10

# Cloud provider settings.
provider:
  # Ray's AWS node provider (needs boto3 on the machine that runs `ray up`: the `cluster` extra).
  type: aws
  # Region with p4d capacity.
  region: us-east-1
  # Zones tried in order when a launch fails for capacity.
  availability_zone: us-east-1a,us-east-1b,us-east-1c,us-east-1d,us-east-1f
  # `ray down` stops instead of terminating nodes: the head's disk (MLflow database) and caches survive.
  cache_stopped_nodes: true
  # Security group Ray creates: its defaults are SSH (22) from anywhere and all traffic between the cluster's own
  # nodes; no extra inbound rules, so Ray dashboard, GCS and MLflow are not reachable from the internet.
  security_group:
    # Name of the group Ray creates or reuses.
    GroupName: ray-autoscaler-wlora
    # Extra inbound rules on top of Ray's defaults: none.
    IpPermissions: []

# How the launcher logs in to nodes; Ray creates and uses its own key pair (no key path here).
auth:
  # Login user of the Ubuntu Deep Learning AMI.
  ssh_user: ubuntu

# Node types the autoscaler may start; trials request GPUs, so they only ever land on A100 workers.
available_node_types:
  # The head: GCS, autoscaler, Tune driver (sweeps/glue_sweep.py) and the MLflow tracking server.
  head.cpu:
    # Advertised resources: no CPUs, so no trial or data-loading task is scheduled onto the head.
    resources: {"CPU": 0}
    # EC2 RunInstances parameters.
    node_config:
      # 8 vCPU / 32 GiB, no GPU.
      InstanceType: m7i.2xlarge
      # AWS Deep Learning Base AMI, Ubuntu 24.04 (Python 3.12, NVIDIA driver), resolved by EC2 at launch time;
      # the same image on every node keeps Python and Ray versions identical.
      ImageId: resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id
      # Root disk list.
      BlockDeviceMappings:
        # Root device of the Ubuntu AMI.
        - DeviceName: /dev/sda1
          # EBS root volume.
          Ebs:
            # GiB: venv, HF cache, MLflow database.
            VolumeSize: 200
            # General-purpose SSD.
            VolumeType: gp3
  # A100 workers: 8 GPUs each, started on demand and removed when idle.
  worker.a100x8:
    # Never keep an idle GPU node.
    min_workers: 0
    # At most 4 × 8 = 32 A100s.
    max_workers: 4
    # Advertised resources (p4d.24xlarge: 96 vCPU, 8 × A100 40 GB); set explicitly so nothing depends on detection.
    resources: {"CPU": 96, "GPU": 8}
    # EC2 RunInstances parameters.
    node_config:
      # 8 × NVIDIA A100 40 GB (p4de.24xlarge: 8 × A100 80 GB).
      InstanceType: p4d.24xlarge
      # Same image as the head (see there).
      ImageId: resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id
      # Workers write Tune checkpoints to S3 themselves: give them Ray's instance profile (S3 access; created by
      # the first `ray up`, see the iam:PassRole command on top).
      IamInstanceProfile:
        # Instance profile by name.
        Name: ray-autoscaler-v1
      # Root disk list.
      BlockDeviceMappings:
        # Root device of the Ubuntu AMI.
        - DeviceName: /dev/sda1
          # EBS root volume.
          Ebs:
            # GiB: venv with CUDA torch, HF model cache, staged data.
            VolumeSize: 500
            # General-purpose SSD.
            VolumeType: gp3
      # Spot instead of on-demand would be cheaper and is safe for sweeps (trials resume from their S3
      # checkpoints when a node disappears); uncomment to use it:
      # InstanceMarketOptions: {MarketType: spot}

# Node type of the head (one of available_node_types).
head_node_type: head.cpu

"""

ONPREM_HEAD = r"""# Ray cluster launcher config for machines you already have (provider `local`): a head (Tune driver, dashboard,
# MLflow server) and fixed worker hosts, all reached over SSH; Ray on every host, trials wherever CPUs/GPUs are free.
#
# What the hosts need (nothing is installed: they may have no internet):
#   - SSH as ssh_user with ssh_private_key (below) from your machine to every host; `ray up` copies the key to the
#     head, whose autoscaler logs in to the workers with it and starts Ray there;
#   - this checkout and a virtualenv with it installed (pip install -e ".[cluster]") at the same path on every
#     host, e.g. on NFS, and a folder every host mounts for checkpoints (the EDIT paths below);
#   - rsync and curl (Ray copies its files with rsync).
#
# Launch and run a sweep (EDIT head_ip, worker_ips, ssh_user, ssh_private_key and the /mnt/shared paths first):
#   ray up cluster-onprem.yaml -y                    # the head; its autoscaler then starts Ray on each worker
#   ray exec cluster-onprem.yaml 'cd /mnt/shared/wlora && python sweeps/glue_sweep.py --address auto --storage-path "$WLORA_STORAGE_PATH" --tracking-uri "$MLFLOW_TRACKING_URI" --max-failures 3'
#   ray dashboard cluster-onprem.yaml --port 5000 --remote-port 5000   # MLflow UI on http://127.0.0.1:5000
#   ray down cluster-onprem.yaml -y                  # `ray stop` on the head; each worker's Ray exits once its head is gone
#
# If a worker does not join (`ray status` on the head), cluster/onprem_start.sh starts the same cluster with
# `ray start` over SSH, without the launcher. tests/test_cluster_onprem.py launches this file on separate hosts.
# Generated, with cluster.yaml, by cluster/make_configs.py (one source for the setup, start and MLflow commands of
# both): edit that script and run `python cluster/make_configs.py`, not this file.

# Name of the cluster; `ray up/exec/down` find its nodes by this name (state in /tmp/ray on the head).
cluster_name: wlora-onprem

# Your machines: no node types, no autoscaling; Ray detects each host's CPUs and GPUs itself.
provider:
  # Ray's on-premises provider: every host listed here joins (min = max workers = number of worker_ips).
  type: local
  # The head's address, as the workers reach it. EDIT
  head_ip: 10.0.0.10
  # The workers' addresses. EDIT
  worker_ips: [10.0.0.11, 10.0.0.12]

# How the launcher (and then the head) logs in to the hosts.
auth:
  # The same user on every host. EDIT
  ssh_user: wlora
  # A private key whose public half is in that user's ~/.ssh/authorized_keys on every host. EDIT
  ssh_private_key: ~/.ssh/id_ed25519

"""

AWS_MOUNTS = r"""# Remote path -> local path, synced to the head by `ray up` and from the head to every worker:
# this checkout (relative to the directory `ray up` runs in — the repository root) becomes ~/wlora.
file_mounts:
  # The project, installed editable by setup_commands.
  "~/wlora": "."

"""

ONPREM_MOUNTS = r"""# Nothing to copy: the checkout is at the same path on every host already (Ray adds its own two files on the head).
file_mounts: {}

"""

AWS_INSTALL = r"""# Every node: a venv with CUDA torch and this project ([cluster] brings boto3 for MLflow's S3 artifacts).
setup_commands:
  # 1) Ubuntu 24.04's Python is "externally managed": install into a venv (python3-venv), autossh for the MLflow tunnel.
  - sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv autossh
  - test -x ~/wlora-venv/bin/python || python3 -m venv ~/wlora-venv
  # CUDA torch first (A100 = sm_80), then the project; no constraints.txt here, it pins the CPU wheel.
  - ~/wlora-venv/bin/pip install -q -U pip
  - ~/wlora-venv/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cu126
  - ~/wlora-venv/bin/pip install -q -e "$HOME/wlora[cluster]"
"""

ONPREM_INSTALL = r"""# Every host: nothing is installed (no internet needed); the shared virtualenv must already hold the project.
setup_commands:
  # 1) fail here, with Python's message, on a host that does not see the checkout or the virtualenv. EDIT both paths.
  - test -f /mnt/shared/wlora/sweeps/glue_sweep.py && /mnt/shared/wlora/.venv/bin/python -c 'import ray, mlflow, wlora, sweeps'
"""

SHARED = r"""  # 2) every later command and every Ray process runs in the venv, with token authentication.
  - grep -q '@VENV@/bin/activate' ~/.bashrc || echo 'source @VENV@/bin/activate' >> ~/.bashrc
  - grep -q 'RAY_AUTH_MODE=token' ~/.bashrc || echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc
  # 3) where the sweep keeps checkpoints (Tune storage_path) and how every node reaches MLflow. EDIT the storage.
  - >-
    echo 'export WLORA_STORAGE_PATH=@STORAGE@
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    @ENV_EXTRA@' > ~/.wlora_env
  - grep -q '.wlora_env' ~/.bashrc || echo 'source ~/.wlora_env' >> ~/.bashrc

# Paths copied from the head to each worker (neither leaves the cluster): the Ray auth token generated by
# head_setup_commands, so workers can join the token-authenticated cluster, and the cluster's SSH key that Ray put
# on the head, for the workers' SSH tunnel to MLflow (worker_start_ray_commands).
cluster_synced_files: ["~/.ray/auth_token", "~/ray_bootstrap_key.pem"]

# Re-sync file_mounts to running workers when they change on the head (no: `ray up` again instead).
file_mounts_sync_continuously: false

# Not synced: local environments, caches and run outputs (in addition to .gitignore, see rsync_filter).
rsync_exclude: [".venv", ".git", "**/__pycache__", "runs", "*.pt"]

# Files whose patterns rsync also excludes, as git would.
rsync_filter: [".gitignore"]

# Commands before setup_commands (on the machine that runs `ray up`): none.
initialization_commands: []

# Head only, after setup_commands: the Ray auth token that workers receive through cluster_synced_files.
head_setup_commands:
  - @VENV@/bin/ray get-auth-token --generate > /dev/null

# Workers only, after setup_commands: nothing extra.
worker_setup_commands: []

# Head: Ray (dashboard on 127.0.0.1 only) and the MLflow server (127.0.0.1 only; runs in SQLite on the head's
# disk, artifacts proxied to @ARTIFACTS_WHERE@). Idempotent: a second `ray up` restarts Ray and keeps MLflow running.
head_start_ray_commands:
  - ray stop
  - >-
    ulimit -n 65536; ray start --head --port=6379 --object-manager-port=8076
    --autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1 --dashboard-port=8265
  - >-
    mkdir -p ~/mlflow && (curl -sf http://127.0.0.1:5000/health > /dev/null ||
    nohup mlflow server --host 127.0.0.1 --port 5000 --workers 2
    --backend-store-uri "sqlite:///$HOME/mlflow/mlflow.db"
    --artifacts-destination @ARTIFACTS@
    > ~/mlflow/server.log 2>&1 < /dev/null &)

# Workers: join the head, then forward the worker's own 127.0.0.1:5000 to the head's MLflow through SSH (port 22),
# so trials log to MLFLOW_TRACKING_URI=http://127.0.0.1:5000 on any node (autossh where installed, else ssh; not
# again while something answers on the worker's port 5000).
worker_start_ray_commands:
  - ray stop
  - ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076
  - >-
    curl -s -o /dev/null http://127.0.0.1:5000/ ||
    $(command -v autossh > /dev/null && echo autossh -M 0 || echo ssh) -f -N -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o ServerAliveInterval=30 -o ExitOnForwardFailure=yes
    -i ~/ray_bootstrap_key.pem -L 5000:127.0.0.1:5000 $USER@$RAY_HEAD_IP < /dev/null > ~/mlflow-tunnel.log 2>&1
"""

PROVIDERS = {
    "cluster.yaml": {
        "parts": (AWS_HEAD, AWS_MOUNTS, AWS_INSTALL),
        "@VENV@": "~/wlora-venv",
        "@STORAGE@": "s3://REPLACE-WITH-YOUR-BUCKET/ray-results",
        "@ENV_EXTRA@": "WLORA_MLFLOW_DB_BACKUP=s3://REPLACE-WITH-YOUR-BUCKET/mlflow/mlflow.db",
        "@ARTIFACTS@": "s3://REPLACE-WITH-YOUR-BUCKET/mlflow-artifacts",
        "@ARTIFACTS_WHERE@": "the bucket",
    },
    "cluster-onprem.yaml": {
        "parts": (ONPREM_HEAD, ONPREM_MOUNTS, ONPREM_INSTALL),
        "@VENV@": "/mnt/shared/wlora/.venv",
        "@STORAGE@": "/mnt/shared/wlora-runs",
        "@ENV_EXTRA@": "HF_HUB_OFFLINE=1",
        "@ARTIFACTS@": "/mnt/shared/mlflow-artifacts",
        "@ARTIFACTS_WHERE@": "the shared folder",
    },
}


def render(name: str) -> str:
    """The text of one config file: its provider parts, then the shared commands with its values."""
    values = PROVIDERS[name]
    shared = SHARED
    for field, value in values.items():
        if field != "parts":
            shared = shared.replace(field, value)
    assert "@" not in shared.replace("$USER@$RAY_HEAD_IP", ""), "a field without a value"
    return "".join(values["parts"]) + shared


def main(argv: list[str]) -> int:
    stale = []
    for name in PROVIDERS:
        path = ROOT / name
        text = render(name)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python cluster/make_configs.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
