#!/usr/bin/env bash
# Ray on your own hosts without Ray's launcher: the commands of cluster-onprem.yaml (its setup, head and worker
# start and MLflow commands, the same ones `ray up` runs), run over SSH by `ray start` on every host listed in it.
# The fallback for when `ray up cluster-onprem.yaml` leaves workers out (Ray 2.60's autoscaler v2 launches only
# one of the `worker_ips`; see the README, "On premises"). From the repository root on your machine:
#
#   cluster/onprem_start.sh up   [cluster-onprem.yaml]   # head first, then every worker joins it
#   ssh USER@HEAD 'source ~/.bashrc; cd /mnt/shared/wlora && python sweeps/glue_sweep.py --address auto \
#       --storage-path "$WLORA_STORAGE_PATH" --tracking-uri "$MLFLOW_TRACKING_URI" --max-failures 3'
#   cluster/onprem_start.sh down [cluster-onprem.yaml]   # `ray stop` on every worker, then on the head
#
# Needs python3 with PyYAML (e.g. this project's virtualenv) where it runs, and SSH to every host with the
# config's ssh_user and ssh_private_key.
set -euo pipefail

action="${1:-}"
config="${2:-cluster-onprem.yaml}"
[[ "$action" == up || "$action" == down ]] || { echo "usage: $0 up|down [CONFIG]" >&2; exit 2; }

# field NAME: a value (a list: one item a line; commands joined with ' && ') of the config, as Ray would merge it
field() {
  python3 - "$config" "$1" <<'PY'
import os, sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
value = {"head_ip": config["provider"]["head_ip"], "worker_ips": config["provider"]["worker_ips"],
         "ssh_user": config["auth"]["ssh_user"], "key": os.path.expanduser(config["auth"]["ssh_private_key"])}.get(
    sys.argv[2], config.get(sys.argv[2]))
if sys.argv[2].endswith("_commands"):
    commands = [c.replace(" --autoscaling-config=~/ray_bootstrap_config.yaml", "") for c in value]  # no launcher
    print(" && ".join(f"({c})" for c in commands) or "true")
else:
    print("\n".join(value) if isinstance(value, list) else value)
PY
}

head_ip=$(field head_ip)
mapfile -t workers < <(field worker_ips)
user=$(field ssh_user)
key=$(field key)
ssh_opts=(-i "$key" -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=20)

# on HOST COMMAND: COMMAND in an interactive login shell on HOST, on a pty (ssh -tt), as Ray's launcher runs them:
# ~/.bashrc is read, and the session ends with the shell even though `ray start` and MLflow leave daemons behind.
on() {
  local host="$1"; shift
  echo "== $host: ${*:0:160}" >&2
  ssh -tt "${ssh_opts[@]}" -o LogLevel=ERROR "$user@$host" \
    "bash --login -i -c $(printf %q "source ~/.bashrc > /dev/null 2>&1; $*")" < /dev/null | tr -d '\r'
  return "${PIPESTATUS[0]}"
}

if [[ "$action" == down ]]; then
  for w in "${workers[@]}"; do on "$w" "ray stop" || echo "warning: ray stop failed on $w" >&2; done
  on "$head_ip" "ray stop"
  exit 0
fi

# 1) setup on every host (the config's setup_commands), 2) the head: token and Ray + MLflow
setup=$(field setup_commands)
on "$head_ip" "$setup"
on "$head_ip" "$(field head_setup_commands) && $(field head_start_ray_commands)"
# 3) what the launcher syncs to workers (cluster_synced_files): the head's token, and the key for the MLflow tunnel
token=$(on "$head_ip" "cat ~/.ray/auth_token" | tail -n 1)
for w in "${workers[@]}"; do
  on "$w" "$setup && mkdir -p ~/.ray && umask 077 && printf %s $(printf %q "$token") > ~/.ray/auth_token"
  scp -q "${ssh_opts[@]}" "$key" "$user@$w:ray_bootstrap_key.pem"
done
# 4) every worker joins the head (the config's worker start commands, with the head's address as Ray gives it)
start=$(field worker_start_ray_commands)
for w in "${workers[@]}"; do
  on "$w" "export RAY_HEAD_IP=$head_ip && $(field worker_setup_commands) && $start" &
done
status=0
for job in $(jobs -p); do wait "$job" || status=1; done
[[ $status == 0 ]] || { echo "a worker did not start; see above" >&2; exit 1; }
on "$head_ip" "ray status"
