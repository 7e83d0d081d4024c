#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (Debian's slurm-wlm and munge), for the SLURM tests.
#
#   scripts/slurm_one_node.sh start   # install if missing, configure, start munged/slurmctld/slurmd, wait for idle
#   scripts/slurm_one_node.sh stop    # stop, by PID, the daemons that `start` started (none that it found running)
#
# Needs root and Debian's packages. The cluster has one partition, `debug`, with this host's CPUs.
# cred_expire is also how long a requeued job waits before it may start again: 15 s, not the
# default 120 s, so the requeue tests do not idle for two minutes each.
set -eu
STATE=${SLURM_ONE_NODE_STATE:-/tmp/slurm}
STARTED="$STATE/started.pids"

stop() {
  [ -f "$STARTED" ] || exit 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$STARTED"
  for _ in $(seq 20); do
    alive=0; while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$STARTED"
    [ "$alive" = 0 ] && break; sleep 0.5
  done
  while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$STARTED"
  rm -f "$STARTED"
}

start() {
  if ! command -v slurmctld >/dev/null; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null 2>&1 \
      || { echo "slurm_one_node: apt-get could not install slurm-wlm"; exit 3; }
  fi
  mkdir -p "$STATE"/{spool,state,log} /etc/munge /run/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 400 /etc/munge/munge.key; chmod 700 /etc/munge
  local host cpus
  host=$(hostname -s); cpus=$(nproc)
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmdSpoolDir=$STATE/spool
StateSaveLocation=$STATE/state
SlurmUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MpiDefault=none
AuthInfo=cred_expire=15
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged --force
    pgrep -xn munged >> "$STARTED"
  fi
  if ! pgrep -x slurmctld >/dev/null; then /usr/sbin/slurmctld; sleep 0.5; cat "$STATE/slurmctld.pid" >> "$STARTED"; fi
  if ! pgrep -x slurmd >/dev/null; then /usr/sbin/slurmd; sleep 0.5; cat "$STATE/slurmd.pid" >> "$STARTED"; fi
  for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed" && exit 0; sleep 1; done
  echo "slurm_one_node: the node did not become idle (see $STATE/log)"; exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop"; exit 2 ;;
esac
