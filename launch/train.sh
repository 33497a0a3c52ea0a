#!/bin/bash
# `megadalle train` (or another training verb, VERB) under the DeepSpeed launcher, on this machine or on the
# nodes of a hostfile.
#
#   NUM_GPUS=8 launch/train.sh model=1b deepspeed=zero2 data.shards=... data.tokenizer=...
#   HOSTFILE=launch/hostfile launch/train.sh model=12b deepspeed=pipe ...   (multi-node, over ssh)
#   VERB=train-dvae NUM_GPUS=8 launch/train.sh dvae=paper data.shards=...   (the dVAE, with the same signals)
#
# --no_local_rank keeps DeepSpeed from appending --local_rank=N to the command line: hydra would
# reject it, and megadalle reads RANK/LOCAL_RANK/WORLD_SIZE from the environment anyway.
#
# Multi-node: DeepSpeed runs `pdsh -w <hosts>` (ssh) from this node; every node needs passwordless
# ssh from here, the same paths (this directory, the Python environment, data and run directories
# on shared storage), and the first host must be reachable by the others (the rendezvous). pdsh's
# ssh starts a fresh environment: DeepSpeed forwards PYTHON*, NCCL* and a few more; list anything
# else (DS_ACCELERATOR, OMP_NUM_THREADS, WANDB_MODE...) as KEY=VALUE lines in ./.deepspeed_env,
# ~/.deepspeed_env or the file named by DS_ENV_FILE. ssh options and host aliases belong in ~/.ssh/config:
# PDSH_SSH_ARGS_APPEND (e.g. `-F ssh_config`) reaches pdsh's ssh alone, not DeepSpeed's own check that each host
# answers nor its lookup of the first host's address; with it alone, set MASTER_ADDR and
# DS_LAUNCHER_ARGS=--no_ssh_check too.
#
# Knobs: VERB (the training verb the ranks run: train, the default, train-dvae or train-clip; the arguments
# are its overrides), HOSTFILE (default: none, single node), NUM_GPUS (single node; default: all visible),
# MASTER_PORT (default 29500), MASTER_ADDR (default: DeepSpeed asks the first host over ssh),
# SSH_PORT (sshd's port on the nodes, e.g. 2222 in the Docker image), DS_LAUNCHER_ARGS (more
# `deepspeed` options, e.g. --no_ssh_check). On CPU (tests) export DS_ACCELERATOR=cpu and set NUM_GPUS.
#
# Signals: TERM, INT or USR1 to this script stop the run after a checkpoint. DeepSpeed's runner forwards
# none on one node (killed, it leaves its ranks training as orphans), and over pdsh it kills the launchers,
# which TERM their ranks and SIGKILL them 30 s later, in the middle of a large model's checkpoint. So this
# script runs the runner in the background, in its own session, and passes each signal to the ranks
# themselves (on every node through pdsh where the runner started pdsh, found as the children of the
# launcher with this run's MASTER_PORT): they finish the update, checkpoint and exit, and the launchers with
# them. A signal that comes before the runner starts stops the launch there (exit 75, nothing started); one
# that comes before the ranks hold their stop signals waits for them (they stop before their first update,
# with 75 too). Ctrl-C reaches the ranks as TERM, which they take before their loop too; a second one as INT.
set -euo pipefail

# The ranks' stop, a POSIX sh script run as `sh -c "$stop_ranks" - SIG PGREP-ARGS...` here, or through pdsh on every
# node: SIG to each child of the launchers that `pgrep PGREP-ARGS` finds which handles USR1 and TERM already, and
# "sent" printed for each. megadalle's ranks take both at their command's first line; one still starting Python
# would die of the signal (and its launcher kill the others), so until one has them the signal waits (`pending`).
# SigCgt is the mask of the caught signals: its last 4 hex digits hold USR1 (bit 9) and TERM (bit 14), 0x4200.
# (No single quote in it: pdsh's remote command quotes it with them.)
stop_ranks='sig=$1; shift
launchers=$(pgrep -d, "$@") || exit 0
for rank in $(pgrep -P "$launchers"); do
    mask=$(awk "/^SigCgt:/ {print substr(\$2, 13)}" /proc/$rank/status 2>/dev/null) &&
        [ -n "$mask" ] && [ $((0x$mask & 0x4200)) -eq $((0x4200)) ] && kill -$sig $rank 2>/dev/null && echo sent
done
true'
runner=""
pending=""  # a signal no rank could take yet: the wait below passes it on once one can
stopping=""  # a stop reached the ranks: a Ctrl-C after it is the user insisting
told=""  # the first Ctrl-C's line is said (it is passed on again until a rank takes it)
forward() {
    pending=$1
    [ -n "$runner" ] || return 0  # before the runner: it will not be started
    local sent child argv="" sig=$1
    # A Ctrl-C is passed on as TERM, the stop the ranks take from their first line on: an INT before their loop
    # (reading a large checkpoint) raised KeyboardInterrupt there (exit 130, and the launcher killed the others),
    # and the loop takes TERM as it takes INT. Once a stop has reached them, a further Ctrl-C goes as INT, the user
    # insisting: a start-up ends at once (130), a saving run aborts (an INT after a TERM: train/signals.py).
    if [ "$sig" = INT ] && [ -z "$stopping" ]; then
        sig=TERM
        [ -n "$told" ] || echo "launch/train.sh: Ctrl-C: the ranks stop, saving a checkpoint after this update" \
            "once training has begun (Ctrl-C again to abort without saving)" >&2
        told=1
    fi
    # DeepSpeed's runner starts pdsh where more than one host is active (the hostfile after --include, --exclude and
    # --num_nodes), else its launcher here: its child says which, as the hostfile alone does not (one host, or one
    # left by a filter, runs here, without pdsh). pdsh is its first or second word (Debian's pdsh is a script that
    # execs pdsh.bin as `pdsh`); none yet: the local search below finds no launcher, and the signal stays pending.
    if child=$(pgrep -o -P "$runner"); then
        argv=$(tr '\0' '\n' < "/proc/$child/cmdline" 2>/dev/null) || argv=""
    fi
    if awk 'NR <= 2 && /(^|\/)pdsh$/ {found = 1} END {exit !found}' <<< "$argv"; then
        # every node's ranks: the children of the launcher that pdsh started there (--node_rank=%n, which pdsh
        # fills in with the node's name) for this run's rendezvous port; the launcher itself, not the remote
        # shell that started it, whose command line holds the same words. (`^[^ ]+` is the launcher's Python: a
        # path with a space was refused below.) One rank that stops stops them all: the others may get it later.
        # The nodes are pdsh's own (its -w): the active hosts alone.
        local hosts ssh_args="${PDSH_SSH_ARGS_APPEND:-}"
        hosts=$(awk 'last == "-w" {print; exit} {last = $0}' <<< "$argv")
        [ -z "${SSH_PORT:-}" ] || ssh_args="$ssh_args -p $SSH_PORT"
        sent=$(PDSH_RCMD_TYPE=ssh PDSH_SSH_ARGS_APPEND="$ssh_args" pdsh -S -w "$hosts" \
            "sh -c '$stop_ranks' - $sig -f '^[^ ]+ -u -m deepspeed[.]launcher[.]launch .*--node_rank=%n .*--master_port=$port( |\$)'" \
            || true)
    else
        sent=$(sh -c "$stop_ranks" - "$sig" -P "$runner")
    fi
    case "$sent" in *sent*) pending="" stopping=1 ;; esac
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1
for sig in TERM USR1; do  # (INT: bash ignores it in a background job, which cannot get Ctrl-C anyway)
    # bash cannot trap a signal that was ignored when it started (POSIX): say so rather than never forwarding it
    [ "$(trap -p "$sig")" != "trap -- '' SIG$sig" ] ||
        echo "launch/train.sh: SIG$sig was ignored by whatever started this script (nohup, a parent's trap '', a" \
             "process that had stopped a run), so it cannot pass it on to the ranks: start it with SIG$sig at its" \
             "default to stop a run that way" >&2
done

# Whether DeepSpeed's runner, given `--hostfile ARGS...`, starts its nodes over pdsh ("multi-node") or launches here
# ("one node"), by its own code: the hostfile's active hosts (after --include, --exclude and --num_nodes), which is
# what `forward` then finds as the runner's child.
active_hosts='import sys
from deepspeed.launcher import runner
args = runner.parse_args(["--hostfile", *sys.argv[1:], "megadalle"])
active = runner.apply_num_nodes_and_gpus(
    runner.parse_inclusion_exclusion(runner.fetch_hostfile(args.hostfile), args.include, args.exclude),
    args.num_nodes, args.num_gpus)
print("multi-node" if (args.force_multi or len(active) > 1) and not args.no_ssh else "one node")'

usage() {
    echo "launch/train.sh: $1" >&2
    echo "usage: [NUM_GPUS=N | HOSTFILE=FILE] [VERB=train|train-dvae|train-clip] launch/train.sh KEY=VALUE ..." \
         "  (the verb's overrides)" >&2
    exit 2
}
VERB=${VERB:-train}
case "$VERB" in
    train | train-dvae | train-clip) ;;
    *) usage "VERB=$VERB is not a training verb: train (the default), train-dvae or train-clip" ;;
esac
case " ${DS_LAUNCHER_ARGS:-} " in
    *" --master_port"*)  # the signal forwarding above finds the run's launchers by this port
        echo "train.sh: give the rendezvous port as MASTER_PORT=N, not --master_port in DS_LAUNCHER_ARGS" >&2
        exit 2 ;;
esac
ds="$(command -v deepspeed)" ||
    usage "deepspeed is not on the PATH: activate the environment megadalle is installed in (source .venv/bin/activate, for the one scripts/setup.sh makes)"
# DeepSpeed's runner is started as `python -m deepspeed.launcher.runner` under the Python of the `deepspeed` script:
# its shebang is that Python's path, which the kernel cuts at the first space (a venv under "My Projects/"),
# and pip's console-script shim for such paths runs the Python beside it; the runner starts every rank with it.
python="$(head -n 1 "$ds")"
python="${python#\#!}"
case "${python##*/}" in python*) ;; *) python="" ;; esac
if [ -z "$python" ] || [ ! -x "$python" ]; then
    python="$(dirname "$ds")/python"
    [ -x "$python" ] || python=python3
fi

if [ -n "${HOSTFILE:-}" ]; then
    [ -f "$HOSTFILE" ] || usage "HOSTFILE=$HOSTFILE: no such file"
    # Over pdsh (more than one active host; DeepSpeed's own code says, `active_hosts`: counting the hostfile's
    # lines took a hostfile that DS_LAUNCHER_ARGS filter down to one host, which runs here, for several) DeepSpeed
    # writes this folder, the Python's path and the overrides into one command line each node's shell reads again.
    # A space in either path splits it there, and every node fails with a shell error far from its cause; the
    # overrides are written for that shell (megadalle/remote_args.py: `${oc.env:SCRATCH}` was "bad substitution").
    # A hostfile DeepSpeed cannot read is its runner's to refuse.
    # shellcheck disable=SC2086  # DS_LAUNCHER_ARGS is a list of options
    nodes=$("$python" -c "$active_hosts" "$HOSTFILE" ${DS_LAUNCHER_ARGS:-} 2>/dev/null | tail -n 1) || true
    if [ "$nodes" = multi-node ]; then
        for path in "$PWD" "$python"; do
            case "$path" in *[[:space:]]*)
                usage "a multi-node run cannot start from or with a path holding a space ($path): DeepSpeed's pdsh command does not quote it; use a path without spaces (a symlink to it will do)" ;;
            esac
        done
        if [ $# -gt 0 ]; then
            written=()
            mapfile -d '' written < <("$python" -m megadalle.remote_args "$@")
            [ "${#written[@]}" -eq $# ] ||
                usage "cannot write the overrides for the nodes' shell ($python -m megadalle.remote_args failed)"
            set -- "${written[@]}"
        fi
    fi
fi

port="${MASTER_PORT:-29500}"
args=(--no_local_rank --master_port "$port")
if [ -n "${HOSTFILE:-}" ]; then
    args+=(--hostfile "$HOSTFILE")
elif [ -n "${NUM_GPUS:-}" ]; then
    args+=(--num_gpus "$NUM_GPUS")
fi
[ -z "${MASTER_ADDR:-}" ] || args+=(--master_addr "$MASTER_ADDR")
[ -z "${SSH_PORT:-}" ] || args+=(--ssh_port "$SSH_PORT")
# shellcheck disable=SC2206  # DS_LAUNCHER_ARGS is a list of options
[ -z "${DS_LAUNCHER_ARGS:-}" ] || args+=($DS_LAUNCHER_ARGS)
if [ -n "$pending" ]; then
    echo "launch/train.sh: SIG$pending before the run started: nothing started, nothing to save" >&2
    exit 75  # megadalle's status for a run a signal stopped with updates left: rerun it (signals.STOPPED_EXIT)
fi
# its own session: a terminal's Ctrl-C reaches this script alone, which passes it on as above
setsid "$python" -m deepspeed.launcher.runner "${args[@]}" --module megadalle "$VERB" "$@" &
runner=$!

set +e  # a trapped signal interrupts `wait`: keep waiting until the runner has really finished (the checkpoint)
while :; do
    # a signal no rank could take yet (one that came before the runner or the ranks' start): try again until one
    # can, or the runner ends
    while [ -n "$pending" ] && kill -0 "$runner" 2>/dev/null; do
        sleep 0.2
        forward "$pending"
    done
    # wait before `kill -0`: a runner that has exited already (one that never started) is gone for `kill -0`, which
    # alone took it for a success; `wait` still returns its status
    wait "$runner"
    status=$?
    kill -0 "$runner" 2>/dev/null || break
done
exit "$status"
