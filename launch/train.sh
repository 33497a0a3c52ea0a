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
exec deepspeed "${args[@]}" --module megadalle train "$@"
