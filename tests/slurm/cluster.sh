#!/bin/bash
# A Slurm cluster on localhost (one node by default), for tests: `cluster.sh start DIR` / `cluster.sh stop DIR`,
# or `cluster.sh install` for the commands alone. CLUSTER_NODES=N (default 1) starts N node daemons
# (slurmd -N node1..nodeN, each on its own port, all on this host): a multi-node allocation on one machine.
#
# Exit status 77 (with one line on stderr saying why) means this machine cannot run Slurm: not
# root, no apt-get, the install failed, or the daemons would not start. The tests skip on it.
#
# Installs Debian's slurm-wlm and munge when missing (root, apt), writes DIR/slurm.conf for this
# host (all its CPUs, requeue allowed, no cgroups/accounting so it runs in a container or VM),
# starts munged, slurmctld and slurmd with state, logs and pid files under DIR, and waits until
# the nodes are idle. Commands then need SLURM_CONF=DIR/slurm.conf. `stop` ends only the daemons
# whose pid files are under DIR.
set -euo pipefail
usage="usage: cluster.sh install | cluster.sh start|stop DIR"
action=${1:?$usage}
[ "$action" = install ] || dir=$(realpath -m "${2:?$usage}")
nodes=${CLUSTER_NODES:-1}

node_names() {
    if [ "$nodes" = 1 ]; then hostname -s; else seq -f "node%g" "$nodes"; fi
}

cannot() {
    echo "cannot run Slurm here: $*" >&2
    exit 77
}

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || cannot "slurm-wlm and munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || cannot "slurm-wlm and munge are not installed and there is no apt-get"
    echo "[cluster] installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >&2 \
        || cannot "apt-get install slurm-wlm munge failed (no package mirror reachable?)"
}

write_conf() {
    local host cpus port name
    host=$(hostname -s)
    cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc: it obeys OMP_NUM_THREADS, which the tests set to 1
    mkdir -p "$dir"/{state,spool,log,run}
    cat > "$dir/slurm.conf" <<CONF
ClusterName=megadalle-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
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
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    port=${SLURMD_PORT:-6818}
    for name in $(node_names); do
        echo "NodeName=$name NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=$cpus State=UNKNOWN" >> "$dir/slurm.conf"
        port=$((port + 1))
    done
}

start() {
    [ "$(id -u)" = 0 ] || cannot "the test cluster runs slurmd as root (SlurmdUser=root)"
    install_if_missing
    write_conf
    export SLURM_CONF=$dir/slurm.conf
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged || cannot "munged did not start"
    fi
    /usr/sbin/slurmctld -f "$SLURM_CONF" -i || cannot "slurmctld did not start; logs in $dir/log"
    for name in $(node_names); do
        /usr/sbin/slurmd -f "$SLURM_CONF" -N "$name" || cannot "slurmd -N $name did not start; logs in $dir/log"
    done
    for _ in $(seq 60); do
        if [ "$(sinfo -h -N -o %t 2>/dev/null | grep -cx idle)" = "$nodes" ]; then
            echo "[cluster] up: SLURM_CONF=$SLURM_CONF" >&2
            return
        fi
        sleep 1
    done
    sinfo -N -l >&2 || true
    cannot "the nodes never became idle; logs in $dir/log"
}

stop() {
    for pidfile in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
}

case $action in
    install) install_if_missing ;;
    start) start ;;
    stop) stop ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
