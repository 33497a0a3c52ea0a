#!/bin/bash
# A one-node Slurm cluster on localhost, for tests: `cluster.sh start DIR` / `cluster.sh stop DIR`.
#
# Installs Debian's slurm-wlm and munge when missing (root, apt), writes DIR/slurm.conf for this
# host (all its CPUs, requeue allowed, no cgroups/accounting so it runs in a container or VM),
# starts munged, slurmctld and slurmd with state, logs and pid files under DIR, and waits until
# the node is idle. Commands then need SLURM_CONF=DIR/slurm.conf. `stop` ends only the daemons
# whose pid files are under DIR.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    echo "[cluster] installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
}

write_conf() {
    local host cpus
    host=$(hostname -s)
    cpus=$(nproc)
    mkdir -p "$dir"/{state,spool,log,run}
    cat > "$dir/slurm.conf" <<CONF
ClusterName=megadalle-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start() {
    install_if_missing
    write_conf
    export SLURM_CONF=$dir/slurm.conf
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    /usr/sbin/slurmctld -f "$SLURM_CONF" -i
    /usr/sbin/slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            echo "[cluster] up: SLURM_CONF=$SLURM_CONF" >&2
            return
        fi
        sleep 1
    done
    echo "[cluster] the node never became idle; logs in $dir/log" >&2
    sinfo -N -l >&2 || true
    exit 1
}

stop() {
    for daemon in slurmd slurmctld; do
        pidfile=$dir/run/$daemon.pid
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
}

case $action in
    start) start ;;
    stop) stop ;;
    *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
