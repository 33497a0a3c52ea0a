#!/usr/bin/env bash
# Every GPU benchmark in one unattended run (at most 6 minutes on one H100/H200, even when a stage hangs;
# about 3 with warm Triton and Inductor caches), then one JSON and one Markdown table:
#   1. benchmarks/attention.py  at the 12b shape: ours, Flex (compiled), SDPA causal flash, masked SDPA;
#      the masks of the 12b pattern (row, column, conv) and totals over 47 row + 16 column + 1 conv layers
#   2. benchmarks/train_step.py --model 1b  (tokens/s, MFU; micro batch 8 without activation checkpointing:
#      ~21 GB of weights and AdamW state plus activations fits an 80 GB H100)
#   3. benchmarks/sampling.py on the GPU     (cached image tokens/s at batch 1 and 8, fp32 and bf16)
# Each stage has a time limit and its own log; a failed stage is recorded, reported without figures, and the
# next one runs. If 1b does not fit, rerun train_step.py alone with --activation-checkpointing (RESULTS.md).
# Time: the stages' limits are 200, 110 and 50 s, a stage is killed 5 s after its limit, and the interpreter
# check (below) has 60 s (+5). The whole run is held to --total, 355 s on a GPU (the report takes a second or
# two more): a stage started late gets what is left of it, and one with nothing left is recorded as not run
# (exit status 124). So a GPU run ends within 6 minutes even when a stage hangs.
#
#   benchmarks/gpu.sh [--out DIR]     # on a machine with one NVIDIA GPU; DIR defaults to benchmarks/gpu-<UTC time>
#   benchmarks/gpu.sh --cpu-check     # the same script at toy sizes on a CPU, so it cannot rot (a test runs it)
#   benchmarks/gpu.sh --limits 300,120,60   # other per-stage limits in seconds (attention, train step, sampling)
#   benchmarks/gpu.sh --total 600     # another limit on the whole run, in seconds (1200 with --cpu-check)
# The interpreter is $PYTHON, else `python`, else `python3` (a bare NVIDIA image often has only python3). It must
# import torch, triton and megadalle within 60 s, or the script stops before any stage, saying so.
set -uo pipefail
started=$SECONDS
grace=5  # seconds between a limit's SIGTERM and the SIGKILL that follows it (timeout --kill-after)
root=$(cd "$(dirname "$0")/.." && pwd)

mode=gpu
out=$root/benchmarks/gpu-$(date -u +%Y%m%dT%H%M%SZ)
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | cut -c3-; exit 0 ;;
        --cpu-check) mode=cpu; shift; continue ;;
        --out|--limits|--total) ;;
        *) echo "gpu.sh: unknown argument '$1' (expected --cpu-check, --out DIR, --limits A,B,C or --total S)" >&2
           exit 2 ;;
    esac
    if [ $# -lt 2 ]; then
        echo "gpu.sh: $1 needs a value (--out DIR, --limits A,B,C or --total S)" >&2; exit 2
    fi
    case "$1" in
        --out) out=$2; [[ "$out" = /* ]] || out=$PWD/$out ;;  # as typed, from where gpu.sh was started
        --limits) IFS=, read -r -a custom_limits <<< "$2" ;;
        --total) total=$2 ;;
    esac
    shift 2
done
if [ -n "${custom_limits+x}" ]; then
    second='[1-9][0-9]*'  # a limit of 0 was taken, and the stage then said the run's --total was spent
    if [ "${#custom_limits[@]}" -ne 3 ] || ! [[ "${custom_limits[*]}" =~ ^$second\ $second\ $second$ ]]; then
        echo "gpu.sh: --limits takes three whole seconds above 0, attention,train_step,sampling" \
             "(got '${custom_limits[*]}')" >&2
        exit 2
    fi
fi
if [ -n "${total+x}" ] && ! [[ "$total" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu.sh: --total takes whole seconds above 0 (got '$total')" >&2; exit 2
fi
# A PYTHON given as a relative path (.venv/bin/python) is where gpu.sh was started: the preflight runs it from
# benchmarks/ and the stages from the checkout's root, where it named another file or none.
if [[ "${PYTHON:-}" == */* && "${PYTHON}" != /* ]]; then PYTHON=$PWD/$PYTHON; fi
cd "$root"
mkdir -p "$out"
: > "$out/status.tsv"

if [ "$mode" = cpu ]; then
    export DS_ACCELERATOR=cpu OMP_NUM_THREADS=1
    attention=(--cpu-check --masks row,column,conv)
    train=(--model tiny --micro-batch 2 --steps 1 --warmup 1)
    sampling=(--device cpu --layers 4 --width 64 --text-len 8 --grid 4 --batch 1 --threads 1 --dtype bf16 fp32
              --naive-tokens 2 --repeats 1)
    limits=(600 300 120)
    : "${total:=1200}"
else
    if ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu.sh: no NVIDIA GPU visible (nvidia-smi failed); use --cpu-check on a CPU" >&2; exit 2
    fi
    export TRITON_PRINT_AUTOTUNING=1  # each autotuner's pick and its time, in the stages' logs
    attention=(--masks row,column,conv)
    train=(--model 1b --micro-batch 8 --steps 10 --warmup 3)
    sampling=(--device cuda --batch 1 8 --threads 1 --dtype fp32 bf16 --repeats 2)
    limits=(200 110 50)
    : "${total:=355}"  # 6 minutes, less a few seconds for the report
fi

[ -n "${custom_limits+x}" ] && limits=("${custom_limits[@]}")

python=${PYTHON:-$(command -v python || command -v python3 || echo python)}
want_cuda=$([ "$mode" = gpu ] && echo 1 || echo 0)
# from benchmarks/, as the stages import: the checkout's megadalle/ folder must not stand in for the installed package
if ! (cd benchmarks && timeout --kill-after=$grace 60 "$python" - "$want_cuda") > "$out/environment.txt" 2>&1 <<'PY'
import sys

import torch
import triton

import megadalle.kernels  # noqa: F401  (the package and its kernels import)

if sys.argv[1] == "1" and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}, {device}")
PY
then
    cat "$out/environment.txt" >&2
    echo "gpu.sh: '$python' cannot run the benchmarks (above); set PYTHON to an interpreter with torch, triton and megadalle" >&2
    exit 2
fi
echo "environment: $(tail -n 1 "$out/environment.txt")"

stage() {  # stage NAME LIMIT_S SCRIPT ARGS...: run one benchmark, record its exit status and seconds
    local name=$1 limit=$2 began=$SECONDS rc left
    shift 2
    rm -f "$out/$name.json"  # an earlier run's figures into the same --out must never pass for this run's
    left=$((started + total - SECONDS - grace))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 1 ]; then
        echo "== $name: not run, the run's --total ${total}s is spent"
        printf '%s\t%s\t%s\n' "$name" 124 0 >> "$out/status.tsv"
        return 124
    fi
    echo "== $name (limit ${limit}s): $python $*"
    timeout --kill-after=$grace "$limit" "$python" "$@" --out "$out/$name.json" > "$out/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - began))" >> "$out/status.tsv"
    tail -n 25 "$out/$name.log"
    return $rc
}

stage attention "${limits[0]}" benchmarks/attention.py "${attention[@]}"
stage train_step "${limits[1]}" benchmarks/train_step.py "${train[@]}"
stage sampling "${limits[2]}" benchmarks/sampling.py "${sampling[@]}"
"$python" benchmarks/gpu_report.py "$out"
