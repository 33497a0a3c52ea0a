#!/usr/bin/env bash
# Every GPU benchmark in one unattended run (under 6 minutes on one H100/H200; about 3 with warm
# Triton and Inductor caches), then one JSON and one Markdown table:
#   1. benchmarks/attention.py  at the 12b shape: ours, Flex (compiled), SDPA causal flash, masked SDPA;
#      the masks of the 12b pattern (row, column, conv) and totals over 47 row + 16 column + 1 conv layers
#   2. benchmarks/train_step.py --model 1b  (tokens/s, MFU; micro batch 8 without activation checkpointing:
#      ~21 GB of weights and AdamW state plus activations fits an 80 GB H100)
#   3. benchmarks/sampling.py on the GPU     (cached image tokens/s at batch 1 and 8, fp32 and bf16)
# Each stage has a time limit and its own log; a failed stage is recorded and the next one runs.
# If 1b does not fit, rerun train_step.py alone with --activation-checkpointing (command in RESULTS.md).
#
#   benchmarks/gpu.sh [--out DIR]     # on a machine with one NVIDIA GPU
#   benchmarks/gpu.sh --cpu-check     # the same script at toy sizes on a CPU, so it cannot rot (a test runs it)
#   benchmarks/gpu.sh --limits 300,120,60   # other per-stage limits in seconds (attention, train step, sampling)
# The interpreter is $PYTHON, else `python`, else `python3` (a bare NVIDIA image often has only python3). It must
# import torch, triton and megadalle within 120 s, or the script stops before any stage, saying so.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
out=benchmarks/gpu-$(date -u +%Y%m%dT%H%M%SZ)
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | cut -c3-; exit 0 ;;
        --cpu-check) mode=cpu ;;
        --out) out="$2"; shift ;;
        --limits) IFS=, read -r -a custom_limits <<< "$2"; shift ;;
        *) echo "gpu.sh: unknown argument '$1' (expected --cpu-check, --out DIR or --limits A,B,C)" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "${custom_limits+x}" ]; then
    if [ "${#custom_limits[@]}" -ne 3 ] || ! [[ "${custom_limits[*]}" =~ ^[0-9]+\ [0-9]+\ [0-9]+$ ]]; then
        echo "gpu.sh: --limits takes three whole seconds, attention,train_step,sampling (got '${custom_limits[*]}')" >&2
        exit 2
    fi
fi
mkdir -p "$out"
: > "$out/status.tsv"

if [ "$mode" = cpu ]; then
    export DS_ACCELERATOR=cpu OMP_NUM_THREADS=1
    attention=(--cpu-check --masks row,column,conv)
    train=(--model tiny --micro-batch 2 --steps 1 --warmup 1)
    sampling=(--device cpu --layers 4 --width 64 --text-len 8 --grid 4 --batch 1 --threads 1 --dtype bf16 fp32
              --naive-tokens 2 --repeats 1)
    limits=(600 300 120)
else
    if ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu.sh: no NVIDIA GPU visible (nvidia-smi failed); use --cpu-check on a CPU" >&2; exit 2
    fi
    export TRITON_PRINT_AUTOTUNING=1  # each autotuner's pick and its time, in the stages' logs
    attention=(--masks row,column,conv)
    train=(--model 1b --micro-batch 8 --steps 10 --warmup 3)
    sampling=(--device cuda --batch 1 8 --threads 1 --dtype fp32 bf16 --repeats 2)
    limits=(200 110 50)  # 360 s in all
fi

[ -n "${custom_limits+x}" ] && limits=("${custom_limits[@]}")

python=${PYTHON:-$(command -v python || command -v python3 || echo python)}
want_cuda=$([ "$mode" = gpu ] && echo 1 || echo 0)
# from benchmarks/, as the stages import: the checkout's megadalle/ folder must not stand in for the installed package
if ! (cd benchmarks && timeout --kill-after=5 120 "$python" - "$want_cuda") > "$out/environment.txt" 2>&1 <<'PY'
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
    local name=$1 limit=$2 began=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s): $python $*"
    timeout --kill-after=10 "$limit" "$python" "$@" --out "$out/$name.json" > "$out/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - began))" >> "$out/status.tsv"
    tail -n 25 "$out/$name.log"
    return $rc
}

stage attention "${limits[0]}" benchmarks/attention.py "${attention[@]}"
stage train_step "${limits[1]}" benchmarks/train_step.py "${train[@]}"
stage sampling "${limits[2]}" benchmarks/sampling.py "${sampling[@]}"
"$python" benchmarks/gpu_report.py "$out"
