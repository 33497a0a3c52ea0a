#!/bin/bash
# `megadalle train` under the DeepSpeed launcher, on this machine or on the nodes of a hostfile.
#
#   NUM_GPUS=8 launch/train.sh model=1b deepspeed=zero2 data.shards=... data.tokenizer=...
#   HOSTFILE=launch/hostfile launch/train.sh model=12b deepspeed=pipe ...   (multi-node, over ssh)
#
# --no_local_rank keeps DeepSpeed from appending --local_rank=N to the command line: hydra would
# reject it, and megadalle reads RANK/LOCAL_RANK/WORLD_SIZE from the environment anyway.
# Knobs: HOSTFILE (default: none, single node), NUM_GPUS (single node; default: all visible),
# MASTER_PORT (default 29500). On CPU (tests) export DS_ACCELERATOR=cpu and set NUM_GPUS.
set -euo pipefail

args=(--no_local_rank --master_port "${MASTER_PORT:-29500}")
if [ -n "${HOSTFILE:-}" ]; then
    args+=(--hostfile "$HOSTFILE")
elif [ -n "${NUM_GPUS:-}" ]; then
    args+=(--num_gpus "$NUM_GPUS")
fi
exec deepspeed "${args[@]}" --module megadalle train "$@"
