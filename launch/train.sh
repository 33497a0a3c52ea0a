#!/bin/bash
# `megadalle train` under the DeepSpeed launcher, on this machine or on the nodes of a hostfile.
#
#   NUM_GPUS=8 launch/train.sh model=1b deepspeed=zero2 data.shards=... data.tokenizer=...
#   HOSTFILE=launch/hostfile launch/train.sh model=12b deepspeed=pipe ...   (multi-node, over ssh)
#
# --no_local_rank keeps DeepSpeed from appending --local_rank=N to the command line: hydra would
# reject it, and megadalle reads RANK/LOCAL_RANK/WORLD_SIZE from the environment anyway.
#
# Multi-node: DeepSpeed runs `pdsh -w <hosts>` (ssh) from this node; every node needs passwordless
# ssh from here, the same paths (this directory, the Python environment, data and run directories
# on shared storage), and the first host must be reachable by the others (the rendezvous). pdsh's
# ssh starts a fresh environment: DeepSpeed forwards PYTHON*, NCCL* and a few more; list anything
# else (DS_ACCELERATOR, OMP_NUM_THREADS, WANDB_MODE...) as KEY=VALUE lines in ./.deepspeed_env,
# ~/.deepspeed_env or the file named by DS_ENV_FILE. pdsh's ssh takes extra options from
# PDSH_SSH_ARGS_APPEND (e.g. `-F ssh_config`).
#
# Knobs: HOSTFILE (default: none, single node), NUM_GPUS (single node; default: all visible),
# MASTER_PORT (default 29500), MASTER_ADDR (default: DeepSpeed asks the first host over ssh),
# SSH_PORT (sshd's port on the nodes, e.g. 2222 in the Docker image), DS_LAUNCHER_ARGS (more
# `deepspeed` options, e.g. --no_ssh_check). On CPU (tests) export DS_ACCELERATOR=cpu and set NUM_GPUS.
#
# Signals: TERM or INT to this script stop the run after a checkpoint, USR1 too (single node). On one node
# DeepSpeed's runner forwards no signal and, killed, leaves its ranks training as orphans; so this script
# runs it in the background and passes TERM/INT to its launcher (which stops the ranks: they checkpoint
# first) and USR1 to the ranks themselves. With a HOSTFILE the runner forwards TERM/INT over pdsh itself.
set -euo pipefail

args=(--no_local_rank --master_port "${MASTER_PORT:-29500}")
if [ -n "${HOSTFILE:-}" ]; then
    args+=(--hostfile "$HOSTFILE")
elif [ -n "${NUM_GPUS:-}" ]; then
    args+=(--num_gpus "$NUM_GPUS")
fi
[ -z "${MASTER_ADDR:-}" ] || args+=(--master_addr "$MASTER_ADDR")
[ -z "${SSH_PORT:-}" ] || args+=(--ssh_port "$SSH_PORT")
# shellcheck disable=SC2206  # DS_LAUNCHER_ARGS is a list of options
[ -z "${DS_LAUNCHER_ARGS:-}" ] || args+=($DS_LAUNCHER_ARGS)
deepspeed "${args[@]}" --module megadalle train "$@" &
runner=$!

forward() {
    if [ -n "${HOSTFILE:-}" ]; then
        kill -"$1" "$runner" 2>/dev/null || true
        return
    fi
    local launcher
    for launcher in $(pgrep -P "$runner"); do
        if [ "$1" = USR1 ]; then
            pkill -USR1 -P "$launcher" || true
        else
            kill -"$1" "$launcher" 2>/dev/null || true
        fi
    done
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1

set +e  # a trapped signal interrupts `wait`: keep waiting until the runner has really finished (the checkpoint)
status=0
while kill -0 "$runner" 2>/dev/null; do
    wait "$runner"
    status=$?
done
exit "$status"
