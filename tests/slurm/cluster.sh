#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on 127.0.0.1, for tests and for trying the slurm profile.
#
#   tests/slurm/cluster.sh start  [BASE]   install the Debian packages if missing, write the
#                                          configs under BASE, start every daemon, add the account
#   tests/slurm/cluster.sh status [BASE]   PID and state of every daemon, then sinfo
#   tests/slurm/cluster.sh stop   [BASE]   cancel jobs, stop every daemon by its PID, remove the
#                                          /etc/slurm/slurm.conf symlink
#
# BASE defaults to $ADVMIR_SLURM_BASE or /tmp/advmir-slurm. Everything the cluster writes lives
# under BASE (configs, munge key and socket, MariaDB data, spool, logs, PIDs in BASE/pids),
# except the symlink /etc/slurm/slurm.conf -> BASE/etc/slurm.conf: the executor plugin strips
# SLURM_CONF from the environment of its nested `srun`, so the config must sit at the default path.
#
# Daemons run in the foreground (-D / -F) in the background of this script, one PID file each:
# there is no systemd here, and `stop` kills only those PIDs. Needs root and, for the first start,
# apt access. Exit status: 0 ok, 1 failure, 3 cannot run here (reason on stderr; tests skip on 3).
#
# Account `ci` (holding root) on cluster `advmirci`, partition `debug` (the default).
# Ports (override with the environment): SLURMCTLD_PORT 6817, SLURMD_PORT 6818, SLURMDBD_PORT 6819,
# MARIADB_PORT 3399 (MariaDB listens on 127.0.0.1 only).
set -euo pipefail

ACTION="${1:-}"
BASE="${2:-${ADVMIR_SLURM_BASE:-/tmp/advmir-slurm}}"
CLUSTER_NAME="advmirci"
ACCOUNT="ci"
PARTITION="debug"
SLURMCTLD_PORT="${SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"
SLURMDBD_PORT="${SLURMDBD_PORT:-6819}"
MARIADB_PORT="${MARIADB_PORT:-3399}"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
SYSTEM_CONF=/etc/slurm/slurm.conf
# start order; stop goes the other way
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

CONF="$BASE/etc/slurm.conf"
MUNGE_SOCKET="$BASE/run/munge/munge.socket.2"
MARIADB_SOCKET="$BASE/run/mysqld.sock"

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cannot_run() { log "CANNOT RUN: $*"; exit 3; }

pid_of() { cat "$BASE/pids/$1.pid" 2>/dev/null || true; }

# True if PID is alive and still runs the program NAME (guards against a recycled PID).
is_ours() {
  local pid="$1" name="$2"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  local exe
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  exe="$(basename "${exe% (deleted)}")"
  # Debian installs the SLURM daemons as NAME-wlm behind an alternatives link.
  [[ "$exe" == "$name" || "$exe" == "$name-wlm" ]]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for: $what"
      return 1
    fi
    sleep 0.2
  done
}

# launch NAME LOGFILE COMMAND...: start COMMAND in the background, record its PID.
launch() {
  local name="$1" logfile="$2"; shift 2
  SLURM_CONF="$CONF" "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$BASE/pids/$name.pid"
  log "started $name (PID $!)"
}

check_daemon() {
  local name="$1" logfile="$2"
  if ! is_ours "$(pid_of "$name")" "$name"; then
    log "$name exited; last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    return 1
  fi
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null && command -v sacct >/dev/null || missing+=(slurm-client)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  { command -v mariadbd || command -v mysqld; } >/dev/null || missing+=(mariadb-server)
  { command -v mariadb-install-db || command -v mysql_install_db; } >/dev/null || missing+=(mariadb-server)
  { command -v mariadb || command -v mysql; } >/dev/null || missing+=(mariadb-client)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || cannot_run "packages missing (${missing[*]}) and no apt-get to install them"
  log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
  # Keep package scripts from starting services (no init system here; we start our own daemons).
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$BASE/log/apt.log" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
      >>"$BASE/log/apt.log" 2>&1; then
      rc=1
    fi
  fi
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  if ((rc != 0)); then
    tail -n 15 "$BASE/log/apt.log" >&2
    cannot_run "could not install ${PACKAGES[*]} with apt-get (log: $BASE/log/apt.log)"
  fi
}

write_configs() {
  local host cpus mem_total_mb real_mb
  host="$(hostname -s)"
  # CPUs too are a scheduling number (TaskPlugin=task/none pins nothing): at least 4, so that the
  # test's two small workflows queue side by side on a 2-core CI machine.
  cpus="$(nproc)"
  ((cpus >= 4)) || cpus=4
  mem_total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
  # Memory is only a scheduling number here (no cgroups enforce it), and the workflow's rules ask
  # for what a real dataset needs: announce at least 32 GB (SlurmdParameters=config_overrides keeps
  # slurmd from draining a node that has less than it announces), so a small CI machine places
  # every job.
  real_mb=$((mem_total_mb * 3 / 4))
  ((real_mb >= 32000)) || real_mb=32000
  cat >"$CONF" <<EOF
# Generated by tests/slurm/cluster.sh for a throwaway single-node cluster.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$BASE/spool/ctld
SlurmdSpoolDir=$BASE/spool/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$SLURMDBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MailProg=/bin/true
AccountingStoreFlags=job_comment
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$BASE/etc/slurmdbd.conf" <<EOF
# Generated by tests/slurm/cluster.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$SLURMDBD_PORT
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=advmir-ci
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  if [[ ! -s "$BASE/etc/munge.key" ]]; then
    dd if=/dev/urandom of="$BASE/etc/munge.key" bs=1024 count=1 status=none
  fi
  chmod 400 "$BASE/etc/munge.key"
}

link_system_conf() {
  if [[ -L "$SYSTEM_CONF" ]]; then
    local target
    target="$(readlink "$SYSTEM_CONF")"
    # another cluster's config while a slurmctld runs: that cluster is in use; otherwise the link is
    # left over from a test run that was killed before it could stop its cluster
    if [[ "$target" != "$CONF" && -e "$SYSTEM_CONF" ]] && pgrep -x slurmctld >/dev/null; then
      cannot_run "$SYSTEM_CONF already links to $target (another test cluster running? stop it first)"
    fi
    rm -f "$SYSTEM_CONF"   # ours, or left over from a cluster that was not stopped
  elif [[ -e "$SYSTEM_CONF" ]]; then
    cannot_run "$SYSTEM_CONF exists and is a real SLURM config; this script will not replace it"
  fi
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -s "$CONF" "$SYSTEM_CONF"
}

start_mariadb() {
  local mariadbd install_db client
  mariadbd="$(command -v mariadbd || command -v mysqld)"
  install_db="$(command -v mariadb-install-db || command -v mysql_install_db)"
  client="$(command -v mariadb || command -v mysql)"
  if [[ ! -d "$BASE/mysql/mysql" ]]; then
    "$install_db" --no-defaults --datadir="$BASE/mysql" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1 \
      || { tail -n 20 "$BASE/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  launch mariadbd "$BASE/log/mariadb.log" "$mariadbd" --no-defaults --user=root --datadir="$BASE/mysql" \
    --socket="$MARIADB_SOCKET" --port="$MARIADB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$BASE/run/mariadb.pid" --log-error="$BASE/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --skip-log-bin --performance-schema=OFF
  wait_for 60 "MariaDB socket" "$client" --no-defaults --socket="$MARIADB_SOCKET" -u root -e "SELECT 1" \
    || { check_daemon mariadbd "$BASE/log/mariadb.log"; die "MariaDB did not come up"; }
  "$client" --no-defaults --socket="$MARIADB_SOCKET" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'advmir-ci';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'advmir-ci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    FLUSH PRIVILEGES;"
}

add_associations() {
  # `sacctmgr -i add` exits non-zero when the entity already exists (a restart on the same BASE).
  sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null 2>&1 || true
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER_NAME" Description="advmir tests" \
    Organization=advmir >/dev/null 2>&1 || true
  sacctmgr -i add user root account="$ACCOUNT" DefaultAccount="$ACCOUNT" cluster="$CLUSTER_NAME" \
    >/dev/null 2>&1 || true
  sacctmgr -n -P show assoc cluster="$CLUSTER_NAME" user=root format=account | grep -qx "$ACCOUNT" \
    || die "could not create account $ACCOUNT for root on cluster $CLUSTER_NAME"
}

node_idle() { sinfo -h -o '%T' 2>/dev/null | grep -qx idle; }

start() {
  [[ "$(id -u)" == 0 ]] || cannot_run "needs root (runs slurmd and writes $SYSTEM_CONF)"
  for d in "${DAEMONS[@]}"; do
    if is_ours "$(pid_of "$d")" "$d"; then
      die "$d from a previous start is still running under $BASE; run: $0 stop $BASE"
    fi
  done
  for p in "$SLURMCTLD_PORT" "$SLURMD_PORT" "$SLURMDBD_PORT" "$MARIADB_PORT"; do
    port_in_use "$p" && cannot_run "port $p on 127.0.0.1 is in use (set SLURMCTLD_PORT/SLURMD_PORT/SLURMDBD_PORT/MARIADB_PORT)"
  done
  local t0=$SECONDS
  # A failed start stops whatever it had started.
  trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what was started"; stop; fi' EXIT
  mkdir -p "$BASE"/{etc,run/munge,log,pids,spool/ctld,spool/d,mysql,lib/munge}
  chmod 755 "$BASE" "$BASE/run" "$BASE/run/munge"
  chmod 700 "$BASE/lib/munge"
  install_packages
  log "packages ready ($((SECONDS - t0)) s)"
  write_configs
  link_system_conf

  launch munged "$BASE/log/munged.log" "$(command -v munged)" -F --force \
    --socket="$MUNGE_SOCKET" --key-file="$BASE/etc/munge.key" --pid-file="$BASE/run/munged.pid" \
    --log-file="$BASE/log/munged.log" --seed-file="$BASE/lib/munge/munged.seed"
  wait_for 20 "munge socket" test -S "$MUNGE_SOCKET" \
    || { check_daemon munged "$BASE/log/munged.log"; die "munged did not come up"; }

  start_mariadb

  launch slurmdbd "$BASE/log/slurmdbd.log" "$(command -v slurmdbd)" -D
  wait_for 60 "slurmdbd" sacctmgr -n show cluster \
    || { check_daemon slurmdbd "$BASE/log/slurmdbd.log"; die "slurmdbd did not come up"; }
  add_associations

  launch slurmctld "$BASE/log/slurmctld.log" "$(command -v slurmctld)" -D -i
  wait_for 30 "slurmctld" scontrol ping \
    || { check_daemon slurmctld "$BASE/log/slurmctld.log"; die "slurmctld did not come up"; }

  launch slurmd "$BASE/log/slurmd.log" "$(command -v slurmd)" -D
  wait_for 30 "node idle" node_idle \
    || { check_daemon slurmd "$BASE/log/slurmd.log"; sinfo -N -l >&2 || true; die "node not idle"; }
  trap - EXIT
  log "cluster $CLUSTER_NAME up in $((SECONDS - t0)) s: account=$ACCOUNT partition=$PARTITION base=$BASE"
}

# Slurm step daemons of our slurmd (recognised by our SLURM_CONF in their environment).
our_stepds() {
  local p
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/exe" 2>/dev/null)" == */slurmstepd* ]] || continue
    tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF" && basename "$p"
  done
  return 0
}

stop_pid() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  if is_ours "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      is_ours "$pid" "$name" || break
      sleep 0.1
    done
    if is_ours "$pid" "$name"; then
      log "$name (PID $pid) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (PID $pid)"
  fi
  rm -f "$BASE/pids/$name.pid"
}

stop() {
  if is_ours "$(pid_of slurmctld)" slurmctld; then
    # Cancel what is left so that no job step outlives its slurmd.
    SLURM_CONF="$CONF" scancel --quiet --user=root 2>/dev/null || true
    wait_for 15 "jobs to end" bash -c "[[ -z \"\$(SLURM_CONF='$CONF' squeue -h -t R,CG,PD 2>/dev/null)\" ]]" \
      || log "some jobs did not end within 15 s"
  fi
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    stop_pid "${DAEMONS[$i]}"
  done
  local pid
  for pid in $(our_stepds); do
    log "killing leftover slurmstepd PID $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
    rm -f "$SYSTEM_CONF"
    log "removed $SYSTEM_CONF"
  fi
}

status() {
  local d pid rc=0
  for d in "${DAEMONS[@]}"; do
    pid="$(pid_of "$d")"
    if is_ours "$pid" "$d"; then
      printf '%-10s running  PID %s\n' "$d" "$pid"
    else
      printf '%-10s stopped\n' "$d"
      rc=1
    fi
  done
  if [[ -L "$SYSTEM_CONF" ]]; then
    printf '%s -> %s\n' "$SYSTEM_CONF" "$(readlink "$SYSTEM_CONF")"
  fi
  if ((rc == 0)); then
    SLURM_CONF="$CONF" sinfo || rc=1
  fi
  return "$rc"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status [BASE]" >&2
    exit 2
    ;;
esac
