#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the SLURM tests (tests/test_slurm.py) and
# for trying hydra/launcher=slurm by hand (docs/slurm.md):
#
#   .ci/slurm_cluster.sh start    # install Debian's SLURM + munge if missing, start, wait idle
#   .ci/slurm_cluster.sh status   # the daemons this script started, and sinfo
#   .ci/slurm_cluster.sh stop     # stop exactly the daemons it started (by their PID files)
#
# SLURM_ACCOUNTING=1 adds accounting: MariaDB on 127.0.0.1 and slurmdbd (so sacct answers);
# without it AccountingStorageType=accounting_storage/none (sacct fails, as on small clusters).
# Everything lives under SLURM_DIR (default /tmp/ood_bench_slurm): config, state, spool, logs,
# PID files, the database. No systemd: the daemons run in the background, started here.
# Needs root (apt-get, munged as user munge, slurmd).
set -euo pipefail

SLURM_DIR="${SLURM_DIR:-/tmp/ood_bench_slurm}"
ACCOUNTING="${SLURM_ACCOUNTING:-0}"
DB_PORT="${SLURM_DB_PORT:-3307}"
HOST="$(hostname -s)"
CONF="$SLURM_DIR/etc/slurm.conf"
# sinfo, sbatch, squeue and the daemons read /etc/slurm/slurm.conf: a link to ours, made only
# when no slurm.conf is there (a real cluster's config is never touched)
ETC_CONF=/etc/slurm/slurm.conf

log() { echo "[slurm_cluster] $*"; }

install_packages() {
  local pkgs=()
  command -v munged >/dev/null || pkgs+=(munge)
  command -v slurmctld >/dev/null || pkgs+=(slurmctld)
  command -v slurmd >/dev/null || pkgs+=(slurmd)
  command -v sbatch >/dev/null || pkgs+=(slurm-client)
  if [ "$ACCOUNTING" = 1 ]; then
    command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
    command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
  fi
  [ ${#pkgs[@]} -eq 0 ] && return 0
  log "installing ${pkgs[*]} (apt-get)"
  apt-get update -qq
  # the packages' service starts are refused here (no systemd, policy-rc.d): harmless
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
    >"$SLURM_DIR/apt.log" 2>&1 || { cat "$SLURM_DIR/apt.log"; exit 1; }
}

# start NAME CMD...: run CMD in the background in its own session, its PID in NAME.pid
start_daemon() {
  local name="$1"
  shift
  if running "$name"; then
    log "$name already running (pid $(cat "$SLURM_DIR/$name.pid"))"
    return 0
  fi
  setsid "$@" >"$SLURM_DIR/log/$name.out" 2>&1 </dev/null &
  echo $! >"$SLURM_DIR/$name.pid"
  log "started $name (pid $!)"
}

running() { [ -f "$SLURM_DIR/$1.pid" ] && kill -0 "$(cat "$SLURM_DIR/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT CMD...: until CMD succeeds
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out waiting for $what; logs in $SLURM_DIR/log"
      tail -n 20 "$SLURM_DIR"/log/*.log "$SLURM_DIR"/log/*.out 2>/dev/null || true
      exit 1
    fi
    sleep 1
  done
}

write_slurm_conf() {
  # this node's real CPUs and 95 % of its memory (slurmd -C), so a job's request can be checked
  local cpus mem
  cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
  mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
  mem=$((mem * 95 / 100))
  local acct="AccountingStorageType=accounting_storage/none"
  if [ "$ACCOUNTING" = 1 ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5"
  else
    acct="$acct
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5"
  fi
  cat >"$CONF" <<EOF
# written by .ci/slurm_cluster.sh: a one-node cluster for ood-bench's SLURM tests
ClusterName=oodbench
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# a job over its --mem is killed (no cgroups here: the accounting poller enforces it)
JobAcctGatherParams=OverMemoryKill
MinJobAge=60
ReturnToService=2
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
$acct
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  log "wrote $CONF (CPUs=$cpus RealMemory=$mem, accounting=$ACCOUNTING)"
}

start_munge() {
  [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key \
    && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && ! running munged; then
    log "a munged not started by this script is running: using it"
    return 0
  fi
  start_daemon munged setpriv --reuid munge --regid munge --init-groups \
    munged --foreground
  wait_for 20 munged sh -c 'munge -n | unmunge'
}

start_database() {
  local db="$SLURM_DIR/mysql" sock="$SLURM_DIR/mysqld/mysqld.sock"
  mkdir -p "$SLURM_DIR/mysqld"
  chown mysql:mysql "$SLURM_DIR/mysqld"  # socket and pid file of a server running as mysql
  if [ ! -d "$db/mysql" ]; then
    mkdir -p "$db"
    chown mysql:mysql "$db"
    mariadb-install-db --user=mysql --datadir="$db" --auth-root-authentication-method=normal \
      --skip-test-db >"$SLURM_DIR/log/mariadb-install.out" 2>&1
  fi
  start_daemon mariadbd mariadbd --user=mysql --datadir="$db" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$sock" \
    --pid-file="$SLURM_DIR/mysqld/mariadbd.pid"
  wait_for 60 mariadbd mariadb --socket="$sock" -uroot -e "select 1"
  mariadb --socket="$sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
     CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat >"$SLURM_DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$SLURM_DIR/run/slurmdbd.pid
LogFile=$SLURM_DIR/log/slurmdbd.log
EOF
  chmod 600 "$SLURM_DIR/etc/slurmdbd.conf"
  # slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF
  start_daemon slurmdbd env SLURM_CONF="$CONF" slurmdbd -D
  wait_for 60 slurmdbd env SLURM_CONF="$CONF" sacctmgr -n list cluster
  env SLURM_CONF="$CONF" sacctmgr -i add cluster oodbench >/dev/null 2>&1 || true
}

node_idle() { [ "$(sinfo -h -N -o %t 2>/dev/null | head -n 1)" = idle ]; }

cmd_start() {
  [ "$(id -u)" = 0 ] || { log "needs root (apt-get, munged, slurmd)"; exit 2; }
  mkdir -p "$SLURM_DIR"/{etc,state,spool,run,log}
  local t0=$SECONDS
  install_packages
  write_slurm_conf
  if [ -e "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" != "$CONF" ]; then
    log "$ETC_CONF exists and is not this script's: set SLURM_CONF=$CONF for the clients"
  else
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$CONF" "$ETC_CONF"
  fi
  start_munge
  [ "$ACCOUNTING" = 1 ] && start_database
  start_daemon slurmctld slurmctld -D -f "$CONF"
  wait_for 30 slurmctld env SLURM_CONF="$CONF" scontrol ping
  start_daemon slurmd slurmd -D -f "$CONF"
  export SLURM_CONF="$CONF"
  wait_for 60 "the node to be idle" node_idle
  log "node $HOST idle after $((SECONDS - t0)) s; SLURM_CONF=$CONF"
  sinfo
}

cmd_stop() {
  # stop in reverse order, only the PIDs this script wrote
  local name pid
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    [ -f "$SLURM_DIR/$name.pid" ] || continue
    pid="$(cat "$SLURM_DIR/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      log "stopped $name (pid $pid)"
    fi
    rm -f "$SLURM_DIR/$name.pid"
  done
  if [ "$(readlink "$ETC_CONF" 2>/dev/null)" = "$CONF" ]; then rm -f "$ETC_CONF"; fi
}

cmd_status() {
  local name rc=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    [ -f "$SLURM_DIR/$name.pid" ] || continue
    if running "$name"; then log "$name running (pid $(cat "$SLURM_DIR/$name.pid"))"
    else log "$name NOT running (stale pid file)"; rc=1; fi
  done
  SLURM_CONF="$CONF" sinfo 2>/dev/null || { log "no cluster answers (start it: $0 start)"; rc=1; }
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status  (SLURM_ACCOUNTING=1: with slurmdbd + MariaDB)"; exit 2 ;;
esac
