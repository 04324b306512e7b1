#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for testing slurm/*.sbatch.
#
#   tools/slurm_testbed.sh install   # apt-get install slurmctld slurmd slurm-client munge (root)
#   tools/slurm_testbed.sh start     # install if missing, then start munged, slurmctld, 2 x slurmd
#   tools/slurm_testbed.sh status    # daemons, nodes and queue
#   tools/slurm_testbed.sh env       # prints `export SLURM_CONF=...` for the client commands
#   tools/slurm_testbed.sh stop      # stops what `start` started
#
# Debian's Slurm (22.05) started as root without systemd. Two NodeName lines on 127.0.0.1 with
# their own slurmd ports make two nodes (node1, node2), so `scontrol show hostnames` lists both
# and `srun -N 2 --ntasks-per-node=1` puts one task on each, as on a real cluster. Each node
# gets CPUS_PER_NODE CPUs (default 1: two nodes fit a 2-core machine).
#
# Everything lives under $GPT_DIST_SLURM_DIR (default /tmp/gpt_dist_slurm): slurm.conf, state,
# spool, logs and pid files. /etc/slurm is not touched, so the client commands need
# SLURM_CONF=$GPT_DIST_SLURM_DIR/slurm.conf (see `env`). Ports are not Slurm's defaults, so a
# real Slurm on the same machine is left alone. `start` is idempotent and clears the job state
# of any earlier test bed, so a job left from an earlier session never comes back.
#
# Exit status: 0 ok; 1 a daemon failed (its log is printed); 3 Slurm is not installed and cannot
# be (not root, or no apt-get) -- tests skip on 3 and fail on anything else.
set -euo pipefail

DIR=${GPT_DIST_SLURM_DIR:-/tmp/gpt_dist_slurm}
CONF=$DIR/slurm.conf
CPUS_PER_NODE=${CPUS_PER_NODE:-1}
CTLD_PORT=${GPT_DIST_SLURM_PORT:-16817}
NODES=(node1 node2)
PARTITION=debug
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "slurm_testbed: $*" >&2; }

is_installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null
}

install_packages() {
    if is_installed; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "Slurm is not installed and installing it needs root (apt-get install ${PACKAGES[*]})"
        exit 3
    fi
    if ! command -v apt-get >/dev/null; then
        log "Slurm is not installed and there is no apt-get; install ${PACKAGES[*]} by hand"
        exit 3
    fi
    log "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package scripts try to start the services and fail without systemd; that is fine,
    # `start` runs the daemons itself.
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$DIR.apt.log" 2>&1; then
        tail -20 "$DIR.apt.log" >&2
        log "apt-get install failed (full log: $DIR.apt.log)"
        exit 3
    fi
    is_installed || { log "packages installed but the daemons are missing"; exit 3; }
}

munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        # Normally made by the package; a cluster shares one key, here there is one host.
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.started_here"
    for _ in $(seq 50); do
        munge_ok && return 0
        sleep 0.1
    done
    log "munged did not come up"
    tail -20 /var/log/munge/munged.log >&2 || true
    exit 1
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/log" "$DIR/run"
    for n in "${NODES[@]}"; do mkdir -p "$DIR/spool/$n"; done
    local tmp=$CONF.tmp.$$
    cat >"$tmp" <<EOF
# Written by tools/slurm_testbed.sh: a two-node test cluster on one machine.
ClusterName=gptdist
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only once its previous credential expired (default 120 s).
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
# %n: each slurmd on this host is one node and needs its own spool, pid and log.
SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdParameters=config_overrides
# linuxproc tracks a step's whole process tree, so signals reach torchrun's workers too (as
# proctrack/cgroup does on a real cluster); no cgroups needed.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldDebug=info
SlurmdDebug=info
EOF
    # The machine's memory split between the nodes, so that --mem requests can be met.
    local port=$((CTLD_PORT + 1)) mem_mb
    mem_mb=$(awk -v n=${#NODES[@]} '/^MemTotal:/ {print int($2 / 1024 / n)}' /proc/meminfo)
    for n in "${NODES[@]}"; do
        echo "NodeName=$n NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS_PER_NODE RealMemory=$mem_mb State=UNKNOWN" >>"$tmp"
        port=$((port + 1))
    done
    local nodelist
    nodelist=$(IFS=,; echo "${NODES[*]}")
    echo "PartitionName=$PARTITION Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP" >>"$tmp"
    mv "$tmp" "$CONF"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

nodes_idle() {
    # Every node up and schedulable (idle, or busy with a job).
    local states
    states=$(SLURM_CONF=$CONF sinfo -h -N -p "$PARTITION" -o '%T' 2>/dev/null) || return 1
    [ "$(echo "$states" | grep -cE '^(idle|mixed|allocated|completing)$')" -eq "${#NODES[@]}" ]
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        log "the test bed runs munged, slurmctld and slurmd as root; run it as root (or in a container)"
        exit 3
    fi
    mkdir -p "$DIR"
    install_packages
    start_munge
    if pid_alive "$DIR/run/slurmctld.pid" && nodes_idle; then
        log "already running ($CONF)"
        return 0
    fi
    stop_daemons
    write_conf
    # -c: start from empty job state.
    slurmctld -c -f "$CONF" || { tail -30 "$DIR/log/slurmctld.log" >&2; exit 1; }
    for n in "${NODES[@]}"; do
        slurmd -f "$CONF" -N "$n" || { tail -30 "$DIR/log/slurmd-$n.log" >&2; exit 1; }
    done
    for _ in $(seq 150); do
        if nodes_idle; then
            log "up: nodes ${NODES[*]} in partition $PARTITION ($CONF)"
            return 0
        fi
        sleep 0.2
    done
    log "nodes did not become idle in 30 s"
    status >&2 || true
    tail -20 "$DIR/log/slurmctld.log" >&2
    exit 1
}

stop_pidfile() {
    local f=$1
    pid_alive "$f" || { rm -f "$f"; return 0; }
    local pid
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

stop_daemons() {
    for n in "${NODES[@]}"; do stop_pidfile "$DIR/run/slurmd-$n.pid"; done
    stop_pidfile "$DIR/run/slurmctld.pid"
}

stop() {
    stop_daemons
    if [ -e "$DIR/munged.started_here" ]; then
        stop_pidfile /run/munge/munged.pid
        rm -f "$DIR/munged.started_here"
    fi
    log "stopped"
}

status() {
    local rc=0
    if pid_alive "$DIR/run/slurmctld.pid"; then echo "slurmctld: running (pid $(cat "$DIR/run/slurmctld.pid"))"; else echo "slurmctld: stopped"; rc=1; fi
    for n in "${NODES[@]}"; do
        if pid_alive "$DIR/run/slurmd-$n.pid"; then echo "slurmd $n: running (pid $(cat "$DIR/run/slurmd-$n.pid"))"; else echo "slurmd $n: stopped"; rc=1; fi
    done
    if [ "$rc" -eq 0 ]; then
        SLURM_CONF=$CONF sinfo -N -p "$PARTITION" || rc=1
        SLURM_CONF=$CONF squeue || rc=1
    fi
    return "$rc"
}

case "${1:-}" in
    install) mkdir -p "$DIR"; install_packages ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
