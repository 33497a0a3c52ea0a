#!/usr/bin/env bash
# Set megadalle up in a virtual environment: scripts/setup.sh [EXTRAS]   (e.g. `dev`, `dev,slurm`)
#
# Why a script: Debian/Ubuntu system Pythons refuse `pip install` (PEP 668), so the install goes into
# a venv (.venv beside this repo, or $VENV); and on a Linux machine without a GPU, `pip install torch`
# from PyPI pulls the CUDA build and several GB of nvidia-* wheels. So on CPU machines torch comes
# from PyTorch's CPU wheel index, https://download.pytorch.org/whl/cpu (when it answers within a few
# seconds), or else from pip's own configured sources, and the install is refused before anything is
# downloaded if what pip would take still needs nvidia-* wheels. A GPU machine (nvidia-smi lists a
# GPU) gets pip's default torch, which is the CUDA build. Rerunning it is cheap: what is installed stays.
#
# Variables: VENV (default .venv), PYTHON (default python3), MEGADALLE_TORCH=cpu|gpu (default: detect).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
CONSTRAINTS="$ROOT/constraints/cpu.txt"

say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

# The argument is checked before anything is created or downloaded: pip would otherwise take `--help` or a
# mistyped extra as part of the requirement, after torch had been installed.
case "$EXTRAS" in -h|--help) sed -n '2,12p' "$0" | cut -c3-; exit 0 ;; esac
[ $# -le 1 ] || die "one argument, the extras separated by commas (e.g. dev,slurm); got $#: $*"
offered="$(grep -o '^        "[a-z_]*":' "$ROOT/setup.py" | tr -d ' ":' | paste -sd, -)"
for extra in ${EXTRAS//,/ }; do
    case ",$offered," in *",$extra,"*) ;; *) die "unknown extra '$extra'; setup.py offers $offered" ;; esac
done

device="${MEGADALLE_TORCH:-}"
if [ -z "$device" ]; then
    if nvidia-smi -L >/dev/null 2>&1; then device=gpu; else device=cpu; fi
fi
case "$device" in cpu|gpu) ;; *) die "MEGADALLE_TORCH=$device: expected cpu or gpu" ;; esac

if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed; on Debian/Ubuntu install the venv module first (sudo apt-get install python3-venv), or set PYTHON to another Python >= 3.10"
fi
PIP=("$VENV/bin/python" -m pip)
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$VENV has Python < 3.10; set PYTHON to a newer one and remove $VENV"

target="$ROOT"
[ -n "$EXTRAS" ] && target="$ROOT[$EXTRAS]"

if [ "$device" = gpu ]; then
    say "GPU found: installing megadalle with pip's default (CUDA) torch"
    "${PIP[@]}" install -q -e "$target"
else
    # the CPU index serves torch, and the torchvision that the dev extra's open_clip needs, built for the CPU
    index=()
    if "$VENV/bin/python" - "$TORCH_CPU_INDEX/" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5)
EOF
        index=(--extra-index-url "$TORCH_CPU_INDEX")
    fi
    if "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
        say "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
    else
        if [ ${#index[@]} -gt 0 ]; then
            say "installing torch's CPU wheel from $TORCH_CPU_INDEX"
        else
            say "$TORCH_CPU_INDEX does not answer: taking torch's CPU wheel from pip's configured sources"
        fi
        report="$(mktemp)"
        trap 'rm -f "$report"' EXIT
        "${PIP[@]}" install -q --dry-run --report "$report" -c "$CONSTRAINTS" "${index[@]}" torch
        cuda="$("$VENV/bin/python" - "$report" <<'EOF'
import json, sys
names = [item["metadata"]["name"] for item in json.load(open(sys.argv[1]))["install"]]
print(" ".join(sorted(n for n in names if n.lower().startswith("nvidia"))))
EOF
)"
        [ -z "$cuda" ] || die "pip would install the CUDA build of torch here (it needs $cuda); PyTorch's CPU index $TORCH_CPU_INDEX is out of reach: install a CPU torch into $VENV yourself, or set MEGADALLE_TORCH=gpu to accept the CUDA build"
        "${PIP[@]}" install -q -c "$CONSTRAINTS" "${index[@]}" torch
    fi
    say "installing megadalle${EXTRAS:+[$EXTRAS]} (editable) into $VENV"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "${index[@]}" -e "$target"
fi
case ",$EXTRAS," in
    *,dev,*)
        say "installing OpenAI's DALL-E 0.1 without its declared dependencies (they pull torchvision): import-dvae's tests"
        "${PIP[@]}" install -q --no-deps "DALL-E==0.1" ;;
esac
"$VENV/bin/megadalle" --help >/dev/null || die "the installed megadalle does not start"
say "done: run 'source $VENV/bin/activate', then megadalle --help"
