#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, with accounting, for trying and testing
# `nnunet_lite study run STUDY --executor slurm` against a real sbatch / squeue / sacct / scancel.
#
#   sudo scripts/slurm_local_cluster.sh start [DIR]    # installs the Debian packages if missing, starts the daemons
#   eval "$(scripts/slurm_local_cluster.sh env [DIR])" # SLURM_CONF for sbatch/squeue/sacct/snakemake in this shell
#   scripts/slurm_local_cluster.sh status [DIR]         # which daemons run, sinfo; exit 0 only when all run
#   sudo scripts/slurm_local_cluster.sh stop [DIR]     # cancels the jobs, stops the daemons by their PIDs
#
# DIR (default $NNUNET_LITE_SLURM_DIR or /tmp/nnunet_lite_slurm) holds every config file, key, database, spool,
# log and PID file; the Debian services stay disabled. The one change outside DIR: /etc/slurm/slurm.conf becomes a
# symlink to DIR's config while the cluster runs (unless another Slurm's config is there), because srun inside a
# Snakemake job does not see SLURM_CONF. Starting twice is harmless.
# Debian/Ubuntu only (apt-get), as root, no systemd or cgroups needed (proctrack/linuxproc, task/none), so it runs in
# containers and CI VMs. The Snakemake SLURM executor plugin polls job states with `sacct`, hence slurmdbd + MariaDB.
# Partition "local" holds the node with its real CPUs and at least 64 GB of memory (advertised, not enforced: a study's
# default requests must fit); account "nnunet_lite" holds root and $SUDO_USER.
# Ports: slurmctld 6817, slurmd 6818, slurmdbd 6819 (Slurm's defaults), MariaDB 127.0.0.1:$NNUNET_LITE_SLURM_DB_PORT
# (default 3307); a Slurm already running on this machine therefore conflicts: stop it first.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
CLUSTER=nnunet_lite
PARTITION=local
ACCOUNT=nnunet_lite
DB_PORT=${NNUNET_LITE_SLURM_DB_PORT:-3307}
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=nnunet_lite_local

die() {
    echo "slurm_local_cluster: $*" >&2
    exit 1
}
say() { echo "slurm_local_cluster: $*"; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[ $# -ge 1 ] || usage
COMMAND=$1
DIR=${2:-${NNUNET_LITE_SLURM_DIR:-/tmp/nnunet_lite_slurm}}
case "$DIR" in
    /*) ;;
    *) DIR="$(pwd)/$DIR" ;;
esac
CONF="$DIR/etc/slurm.conf"
DBD_CONF="$DIR/etc/slurmdbd.conf"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
DB_DIR="$DIR/mysql"
DB_SOCKET="$DB_DIR/mysqld.sock" # in the mysql-owned data dir: mariadbd runs as mysql
RUN="$DIR/run"
LOG="$DIR/log"
# Daemon name -> PID file; stopped in this order, started in the reverse one.
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)
declare -A PIDFILE=(
    [munged]="$RUN/munged.pid"
    [mariadbd]="$DB_DIR/mariadbd.pid"
    [slurmdbd]="$RUN/slurmdbd.pid"
    [slurmctld]="$RUN/slurmctld.pid"
    [slurmd]="$RUN/slurmd.pid"
)

pid_of() {
    # PID of a daemon if its PID file names a live process of that program, else nothing.
    local file=${PIDFILE[$1]} pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A stale PID file may name a recycled PID: check the program name too.
    grep -q "$1" "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "'$COMMAND' must run as root (it starts the daemons as root$1); try: sudo $0 $COMMAND $DIR"
}

install_packages() {
    local missing=() p
    for p in sbatch slurmctld slurmd slurmdbd sacct sacctmgr munged mungekey mariadbd mariadb-install-db; do
        command -v "$p" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and no apt-get here: install Slurm (slurmctld, slurmd, slurmdbd), munge and MariaDB with this system's package manager"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    local start=$SECONDS
    # policy-rc.d: the packages' postinst scripts must not start the system-wide services.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
    fi
    local status=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
        >"$DIR/log/apt.log" 2>&1 || status=$?
    [ "$created_policy" -eq 1 ] && rm -f "$policy"
    [ "$status" -eq 0 ] || die "apt-get failed (exit $status); see $DIR/log/apt.log: $(tail -n 1 "$DIR/log/apt.log")"
    say "installed in $((SECONDS - start)) s"
}

wait_for() {
    # wait_for SECONDS DESCRIPTION LOGFILE COMMAND...: polls COMMAND every 0.25 s.
    local limit=$1 what=$2 logfile=$3
    shift 3
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        # WATCH_PID: a process that must stay alive meanwhile (a daemon that does not fork).
        if [ -n "${WATCH_PID:-}" ] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
            echo "slurm_local_cluster: $what exited while starting; last lines of $logfile:" >&2
            tail -n 15 "$logfile" >&2 2>/dev/null || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "slurm_local_cluster: $what did not come up within $limit s; last lines of $logfile:" >&2
            tail -n 15 "$logfile" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.25
    done
}

write_configs() {
    local node cpus_line mem cpus min_mem
    node=$(hostname -s)
    # The node's real hardware as slurmd detects it ("NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105").
    cpus_line=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //')
    cpus=$(sed -E 's/.*CPUs=([0-9]+).*/\1/' <<<"$cpus_line")
    mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$cpus_line")
    [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C': $cpus_line"
    # Advertise at least NNUNET_LITE_SLURM_MIN_MEMORY MB (default 65536), so that a study's default memory requests
    # (train 32000 MB, docs/studies-slurm.md) fit on a small VM: nothing enforces memory here (no cgroups), and
    # config_overrides keeps slurmd from draining a node whose real memory is below the configured one.
    min_mem=${NNUNET_LITE_SLURM_MIN_MEMORY:-65536}
    if [ "$mem" -lt "$min_mem" ]; then
        cpus_line=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$min_mem/" <<<"$cpus_line")
    fi
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local_cluster.sh: single-node cluster on localhost (see the script's header).
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
MpiDefault=none
# No cgroups in containers/VMs without systemd: track processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
StateSaveLocation=$DIR/spool/slurmctld
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# For connections to slurmdbd this names the munge socket (AuthInfo covers only slurmctld/slurmd).
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 $cpus_line State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((mem / cpus))
EOF
    cat >"$DBD_CONF" <<EOF
# Written by scripts/slurm_local_cluster.sh
DbdHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
PidFile=${PIDFILE[slurmdbd]}
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    # slurmdbd refuses a config that others can read (it holds the database password).
    chmod 600 "$DBD_CONF"
}

start_munge() {
    running munged && return 0
    if [ ! -s "$MUNGE_DIR/munge.key" ]; then
        mungekey -c -k "$MUNGE_DIR/munge.key"
    fi
    chown -R munge:munge "$MUNGE_DIR"
    chmod 700 "$MUNGE_DIR"
    chmod 400 "$MUNGE_DIR/munge.key"
    # munged refuses to run as root and wants its files owned by its user.
    touch "$LOG/munged.log" "${PIDFILE[munged]}"
    chown munge:munge "$LOG/munged.log" "${PIDFILE[munged]}"
    # The socket's directory must be searchable by clients (Slurm commands of any user).
    chmod 755 "$MUNGE_DIR"
    runuser -u munge -- munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="${PIDFILE[munged]}" --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munged.seed" ||
        die "munged failed to start; see $LOG/munged.log: $(tail -n 1 "$LOG/munged.log" 2>/dev/null)"
    wait_for 10 munged "$LOG/munged.log" bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

sql() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    if ! running mariadbd; then
        if [ ! -d "$DB_DIR/mysql" ]; then
            mariadb-install-db --no-defaults --datadir="$DB_DIR" --user=mysql --auth-root-authentication-method=socket \
                >"$LOG/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed; see $LOG/mariadb-install.log: $(tail -n 1 "$LOG/mariadb-install.log")"
        fi
        chown -R mysql:mysql "$DB_DIR"
        touch "$LOG/mariadbd.log"
        chown mysql:mysql "$LOG/mariadbd.log"
        # mariadbd does not daemonise itself; setsid detaches it from this shell and its terminal.
        setsid mariadbd --no-defaults --datadir="$DB_DIR" --user=mysql --bind-address=127.0.0.1 --port="$DB_PORT" \
            --socket="$DB_SOCKET" --pid-file="${PIDFILE[mariadbd]}" --log-error="$LOG/mariadbd.log" \
            --innodb-buffer-pool-size=64M </dev/null >>"$LOG/mariadbd.log" 2>&1 &
        WATCH_PID=$! wait_for 60 mariadbd "$LOG/mariadbd.log" sql -e "SELECT 1"
    fi
    sql <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
EOF
}

start_slurm_daemon() {
    # start_slurm_daemon NAME CHECK_COMMAND...: Slurm's daemons daemonise themselves and write their PID files.
    local name=$1
    shift
    running "$name" && return 0
    "$name" >>"$LOG/$name.start.log" 2>&1 ||
        die "$name failed to start; see $LOG/$name.log: $(tail -n 1 "$LOG/$name.log" 2>/dev/null)"
    wait_for 30 "$name" "$LOG/$name.log" "$@"
}

register_accounting() {
    # Cluster, account and users in the accounting database (idempotent: sacctmgr answers "Nothing new added").
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="nnunet_lite local cluster" \
        Organization=nnunet_lite >/dev/null 2>&1 || true
    local user
    for user in root ${SUDO_USER:-}; do
        sacctmgr -i add user "$user" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
    done
    sacctmgr -n -P list associations cluster="$CLUSTER" account="$ACCOUNT" user=root format=user | grep -q root ||
        die "registering cluster $CLUSTER / account $ACCOUNT with slurmdbd failed; see $LOG/slurmdbd.log"
}

ETC_CONF=/etc/slurm/slurm.conf

link_etc_conf() {
    # Slurm commands find SLURM_CONF, but the Snakemake jobstep plugin strips every SLURM_* variable except the job's
    # identity before its srun inside the job, and srun then falls back to /etc/slurm/slurm.conf: point that at ours
    # (a symlink, removed by stop) unless another Slurm's config is there.
    if [ -L "$ETC_CONF" ] || [ ! -e "$ETC_CONF" ]; then
        mkdir -p /etc/slurm
        ln -sfn "$CONF" "$ETC_CONF"
    elif [ "$(readlink -f "$ETC_CONF")" != "$CONF" ]; then
        say "warning: $ETC_CONF belongs to another Slurm; jobs that call srun without SLURM_CONF will use that one"
    fi
}

unlink_etc_conf() {
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        rm -f "$ETC_CONF"
    fi
}

node_idle() { sinfo -h -n "$(hostname -s)" -o %t | grep -Eq '^(idle|mix|alloc)'; }

cmd_start() {
    need_root ", MariaDB as mysql, munged as munge, and installs packages"
    mkdir -p "$DIR/etc" "$MUNGE_DIR" "$DB_DIR" "$RUN" "$LOG" "$DIR/spool/slurmctld" "$DIR/spool/slurmd"
    install_packages
    # A failed start leaves what it started running (with PID files): say how to clean up.
    trap 'echo "slurm_local_cluster: start failed; \"$0 stop $DIR\" stops whatever did start" >&2' EXIT
    export PATH="$PATH:/usr/sbin:/sbin"
    export SLURM_CONF="$CONF"
    local start=$SECONDS
    if ! running slurmctld; then
        write_configs
    fi
    link_etc_conf
    start_munge
    start_mariadb
    start_slurm_daemon slurmdbd sacctmgr -n list cluster
    register_accounting
    start_slurm_daemon slurmctld scontrol ping
    start_slurm_daemon slurmd node_idle
    # A node left DOWN/DRAIN by an unclean stop comes back here.
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    say "cluster $CLUSTER up in $((SECONDS - start)) s: partition $PARTITION, account $ACCOUNT, state in $DIR"
    sinfo -N -o '%N %P %t %c %m'
    trap - EXIT
    echo "Use it in this shell with:  export SLURM_CONF=$CONF"
}

cmd_stop() {
    need_root ""
    export PATH="$PATH:/usr/sbin:/sbin"
    export SLURM_CONF="$CONF"
    if running slurmctld; then
        # Jobs first, so that no job step outlives slurmd.
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            say "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
            # shellcheck disable=SC2086
            scancel $jobs || true
            local deadline=$((SECONDS + 30))
            while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
        fi
    fi
    local name pid any=0
    for name in "${DAEMONS[@]}"; do
        pid=$(pid_of "$name") || continue
        any=1
        kill -TERM "$pid"
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (PID $pid) ignored SIGTERM for 30 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "${PIDFILE[$name]}"
        say "stopped $name (PID $pid)"
    done
    unlink_etc_conf
    [ "$any" -eq 1 ] || say "nothing running for $DIR"
}

cmd_status() {
    local name pid all=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$name"); then
            echo "$name: running (PID $pid)"
        else
            echo "$name: not running"
            all=1
        fi
    done
    if [ "$all" -eq 0 ]; then
        SLURM_CONF="$CONF" sinfo -N -o '%N %P %t %c %m'
    fi
    return "$all"
}

case "$COMMAND" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$COMMAND': use start, stop, status or env" ;;
esac
