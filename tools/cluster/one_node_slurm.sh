#!/usr/bin/env bash
# A real one-node Slurm cluster (Debian's slurm-wlm and munge) in a folder of its own, started without systemd, for
# the farm's tests (tests/test_farm.py) and for trying the farm by hand:
#
#   tools/cluster/one_node_slurm.sh install        # apt-get install slurm-wlm munge (make cluster-test-env)
#   tools/cluster/one_node_slurm.sh start DIR      # writes DIR/slurm.conf, starts munged, slurmctld and slurmd
#   export SLURM_CONF=DIR/slurm.conf               # then sbatch, squeue, scancel and the farm use it
#   tools/cluster/one_node_slurm.sh stop DIR       # stops all three
#
# Everything lives in DIR (configuration, state, logs, the munge key and socket); ports are free ones picked at
# start. It runs as the calling user (root in CI); nothing outside DIR is written.
set -euo pipefail

usage() { echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

case "${1:-}" in
install)
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    echo "slurm-wlm and munge are installed"; exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  echo "installed: $(slurmctld -V)" ;;
start)
  dir=$(realpath -m "${2:?$(usage)}")
  mkdir -p "$dir"/{munge,state,spool,log}
  chmod 700 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  force=""; [ "$(id -u)" = 0 ] && force="--force"  # munged refuses root without it
  munged $force --key-file "$dir/munge/munge.key" --socket "$dir/munge/munge.socket" \
    --pid-file "$dir/munge/munged.pid" --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munged.seed"
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  cat > "$dir/slurm.conf" <<CONF
ClusterName=paraformer-test
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 60); do
    state=$(sinfo -h -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) echo "one-node Slurm up: SLURM_CONF=$SLURM_CONF ($host, $cpus CPUs)"; exit 0;; esac
    sleep 0.5
  done
  echo "Slurm did not come up within 30 s (node state '${state:-none}'); logs in $dir/log:" >&2
  tail -n 5 "$dir"/log/*.log >&2 || true
  exit 1 ;;
stop)
  dir=$(realpath -m "${2:?$(usage)}")
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 40); do
    alive=0
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
      [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && exit 0
    sleep 0.25
  done
  echo "some Slurm daemon in $dir did not stop" >&2; exit 1 ;;
*) usage ;;
esac
