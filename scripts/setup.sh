#!/usr/bin/env bash
# Set megadalle up in a virtual environment: scripts/setup.sh [EXTRAS]   (e.g. dev, dev,slurm, open_clip, eval)
#
# Why a script: Debian/Ubuntu system Pythons refuse `pip install` (PEP 668), so the install goes into
# a venv (.venv beside this repo, or $VENV); and on a Linux machine without a GPU, `pip install torch`
# from PyPI pulls the CUDA build and several GB of nvidia-* wheels. So on CPU machines torch is pinned
# to its CPU build (constraints/cpu.txt), from PyTorch's CPU wheel index https://download.pytorch.org/whl/cpu
# when it answers within a few seconds, else from pip's own sources (PIP_INDEX_URL, pip.conf); where none
# serves it, pip stops before downloading anything. A GPU machine (nvidia-smi lists a GPU) gets pip's
# default torch, the CUDA build. Where the Python that makes the venv already has a CUDA torch (NVIDIA's
# PyTorch container, with apex beside it), the venv shares its packages (--system-site-packages) and no
# torch is installed: that container's pip constraint (PIP_CONSTRAINT) pins its own torch build, which no
# index serves. A torch already in the venv is kept, whatever its build. A broken venv
# (no pip, its Python gone, a moved checkout) is repaired. Rerunning it is cheap, and works offline once
# everything is installed.
#
# Variables: VENV (default .venv), PYTHON (the Python that makes the venv; default python3),
# MEGADALLE_TORCH=cpu|gpu (default: detect), MEGADALLE_TORCH_INDEX (default: PyTorch's CPU index; a mirror of it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PYTHON_GIVEN="${PYTHON:-}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-}"
TORCH_CPU_INDEX="${MEGADALLE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
CPU_PINS="$ROOT/constraints/cpu.txt"        # torch's CPU build, its torchvision and triton
COMMON_PINS="$ROOT/constraints/common.txt"  # deepspeed and the rest, for every install
STAMP="$VENV/.megadalle-setup"              # what the last install here was made from: a rerun skips it

say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

# The argument is checked before anything is created or downloaded: pip would otherwise take `--help` or a
# mistyped extra as part of the requirement, after torch had been installed.
case "$EXTRAS" in -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0" | cut -c3-; exit 0 ;; esac
[ $# -le 1 ] || die "one argument, the extras separated by commas (e.g. dev,slurm); got $#: $*"
offered="$(grep -o '^        "[a-z_]*":' "$ROOT/setup.py" | tr -d ' ":' | paste -sd, -)"
wanted=()
if [ -n "$EXTRAS" ]; then
    case ",$EXTRAS," in *,,*) die "an empty extra in '$EXTRAS': name the extras separated by single commas (e.g. dev,slurm)" ;; esac
    IFS=, read -ra wanted <<<"$EXTRAS"
fi
for extra in ${wanted[@]+"${wanted[@]}"}; do
    case ",$offered," in *",$extra,"*) ;; *) die "unknown extra '$extra'; setup.py offers $offered" ;; esac
done

device="${MEGADALLE_TORCH:-}"
if [ -z "$device" ]; then
    if nvidia-smi -L >/dev/null 2>&1; then device=gpu; else device=cpu; fi
fi
case "$device" in cpu|gpu) ;; *) die "MEGADALLE_TORCH=$device: expected cpu or gpu" ;; esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- the virtual environment ---------------------------------------------------------------------------------
VERSION_CODE='import sys; print("%d.%d.%d" % sys.version_info[:3])'
too_old() { case "$1" in 3.[0-9].*|[0-2].*) return 0 ;; *) return 1 ;; esac; }
physical() { (cd "$1" 2>/dev/null && pwd -P) || printf '%s\n' "$1"; }

# A venv of its own beside a CUDA torch would fetch PyPI's CUDA build (GBs) and lose apex, or, under NVIDIA's
# PIP_CONSTRAINT, fail; MEGADALLE_TORCH=cpu asks for the CPU wheel, which only a venv of its own can hold.
system_torch=""
CUDA_TORCH_CODE='import importlib.metadata, torch; torch.version.cuda and print(importlib.metadata.version("torch"), torch.version.cuda)'

make_venv() {  # [--clear]: the Python is checked first, so that a Python that cannot serve leaves no folder behind
    local version fresh="" cuda=""
    version="$("$PYTHON" -c "$VERSION_CODE" 2>/dev/null)" ||
        die "PYTHON=$PYTHON does not run: set PYTHON to a Python >= 3.10 (e.g. PYTHON=python3.12)"
    ! too_old "$version" || die "PYTHON=$PYTHON is Python $version; megadalle needs >= 3.10: set PYTHON to a newer one (e.g. PYTHON=python3.12)"
    if [ "${MEGADALLE_TORCH:-}" != cpu ]; then
        read -r system_torch cuda < <("$PYTHON" -c "$CUDA_TORCH_CODE" 2>/dev/null | tail -n 1) || true
    fi
    if [ -n "$system_torch" ]; then
        say "$PYTHON has torch $system_torch, built for CUDA $cuda: the venv shares its packages (--system-site-packages), apex too where it has it, and no torch is installed"
        set -- --system-site-packages ${1+"$@"}
    fi
    [ -e "$VENV" ] || fresh=1
    if ! "$PYTHON" -m venv ${1+"$@"} "$VENV"; then
        # a venv that failed half-way (Debian's without ensurepip) has a bin/python and no pip: never leave one behind
        [ -z "$fresh" ] || rm -rf "$VENV"
        die "'$PYTHON -m venv $VENV' failed; on Debian/Ubuntu install the venv module first (sudo apt-get install python${version%.*}-venv), or set PYTHON to another Python >= 3.10"
    fi
}

venv_problem() {  # prints what is wrong with an existing $VENV, nothing when it is sound
    local made
    if ! "$VENV/bin/python" -c pass >/dev/null 2>&1; then
        if [ -L "$VENV/bin/python" ] && [ ! -e "$VENV/bin/python" ]; then
            echo "has lost its Python (bin/python leads to $(readlink "$VENV/bin/python"), which is gone)"
        elif [ -e "$VENV/bin/python" ]; then
            echo "has a Python that does not start"
        else
            echo "has no bin/python"
        fi
        return
    fi
    # a venv's scripts and its activate name the folder it was made in: a moved or copied checkout's still run
    # the old one (or nothing)
    [ -f "$VENV/bin/activate" ] || return 0
    # shellcheck disable=SC2016  # $1 and VIRTUAL_ENV are the inner shell's
    made="$(env -u VIRTUAL_ENV bash -c '. "$1/bin/activate" >/dev/null 2>&1; printf %s "${VIRTUAL_ENV:-}"' _ "$VENV" 2>/dev/null)" || made=""
    if [ -n "$made" ] && [ "$(physical "$made")" != "$(physical "$VENV")" ]; then
        echo "was made at $made and moved here (its scripts and activate still lead there)"
    fi
}

if [ ! -e "$VENV" ] || [ -z "$(ls -A "$VENV")" ]; then
    say "creating the virtual environment $VENV"
    make_venv
else
    problem="$(venv_problem)"
    if [ -n "$problem" ]; then
        [ -f "$VENV/pyvenv.cfg" ] ||
            die "$VENV $problem, and it is no venv (no pyvenv.cfg) that this script may rebuild: remove it, or set VENV to another folder"
        say "$VENV $problem: making it anew with $PYTHON, then installing again"
        make_venv --clear
    else
        version="$("$VENV/bin/python" -c "$VERSION_CODE")"
        ! too_old "$version" || die "$VENV has Python $version; megadalle needs >= 3.10: remove $VENV and rerun with PYTHON set to a newer Python"
        if [ -n "$PYTHON_GIVEN" ]; then
            origin='import sys; print(sys.base_prefix, "%d.%d.%d" % sys.version_info[:3])'
            [ "$("$PYTHON" -c "$origin" 2>/dev/null || true)" = "$("$VENV/bin/python" -c "$origin")" ] ||
                say "PYTHON=$PYTHON_GIVEN is ignored: $VENV exists, with Python $version; to make it with $PYTHON_GIVEN, remove it (rm -rf $(printf %q "$VENV")) and rerun"
        fi
    fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip)

if ! "${PIP[@]}" --version >/dev/null 2>&1; then
    say "$VENV has no pip: installing it with ensurepip"
    version="$("$PY" -c "$VERSION_CODE")"
    "$PY" -m ensurepip --upgrade >/dev/null 2>&1 ||
        die "$VENV has no pip, and its Python cannot install one (no ensurepip): on Debian/Ubuntu sudo apt-get install python${version%.*}-venv, then rerun"
fi
# pips before 23.2 (Ubuntu 22.04's venv brings 22.0.2) download whole wheels to read their dependencies, where
# later ones read the index's metadata files (PEP 658/714); only an old pip is upgraded, so reruns stay offline
pip_version="$("${PIP[@]}" --version | awk '{print $2}')"
case "$pip_version" in
    [0-9].*|1[0-9].*|2[0-2].*|23.[01]|23.[01].*)
        say "upgrading $VENV's pip $pip_version"
        "${PIP[@]}" install -q -U "pip>=23.2" || say "could not upgrade pip (offline?): going on with pip $pip_version" ;;
esac

# --- torch ---------------------------------------------------------------------------------------------------
index=()
probed=""
cpu_index() {  # the CPU index goes to pip only when it answers: an index out of reach costs pip minutes of retries
    [ -z "$probed" ] || return 0
    probed=1
    if "$PY" - "$TORCH_CPU_INDEX/" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5)
EOF
        index=(--extra-index-url "$TORCH_CPU_INDEX")
    fi
}

shares_packages() {  # whether $VENV shares its Python's packages: made so here (make_venv), or by an earlier run
    grep -qiE '^[[:space:]]*include-system-site-packages[[:space:]]*=[[:space:]]*true[[:space:]]*$' "$VENV/pyvenv.cfg" 2>/dev/null
}

pip_failed() {  # pip -q prints its error, not why; pins that pip takes from PIP_CONSTRAINT are the likely cause
    local cause=""
    if [ -n "${PIP_CONSTRAINT:-}" ]; then
        cause="; PIP_CONSTRAINT=$PIP_CONSTRAINT is set, and pip applies its pins too: one that no index serves, or that megadalle's requirements exclude, makes the install impossible"
        [ -n "$system_torch" ] || shares_packages ||
            cause="$cause. NVIDIA's containers pin their own torch build there: inside one, the venv must share the container's torch, so remove $VENV and rerun with PYTHON set to the container's Python (the one whose torch has CUDA)"
    fi
    die "$1$cause"
}

pins=(-c "$COMMON_PINS")
had_torch=""
[ -n "$system_torch" ] ||
    had_torch="$("$PY" -I -c 'import importlib.metadata, torch; print(importlib.metadata.version("torch"))' 2>/dev/null || true)"
if [ -n "$system_torch" ]; then
    echo "torch==$system_torch" >"$work/torch.txt"
    pins+=(-c "$work/torch.txt")
elif [ -n "$had_torch" ]; then
    # a torch that pip would swap for the CPU pin (or for the one a newer torchvision wants) is pinned as it is;
    # constraints/cpu.txt applies only to the torch it names (pip, offline, checks that pin and its platform
    # markers against the installed version: a conflict fails, and another build found in a local
    # --find-links folder would be "installed")
    if [ "$device" = cpu ] &&
        verdict="$("${PIP[@]}" install --dry-run --no-deps --no-index -c "$CPU_PINS" "torch==$had_torch" 2>/dev/null)" &&
        ! grep -q "Would install" <<<"$verdict"; then
        say "torch $had_torch already installed"
        pins+=(-c "$CPU_PINS")
    else
        say "torch $had_torch already installed: kept (pinned for the rest of the install)"
        echo "torch==$had_torch" >"$work/torch.txt"
        pins+=(-c "$work/torch.txt")
    fi
elif [ "$device" = gpu ]; then
    say "GPU found: installing megadalle with pip's default (CUDA) torch"
else
    pins+=(-c "$CPU_PINS")
    cpu_index
    if [ ${#index[@]} -gt 0 ]; then
        say "installing torch's CPU wheel from $TORCH_CPU_INDEX"
    else
        say "$TORCH_CPU_INDEX does not answer: taking torch's CPU wheel from pip's configured sources"
    fi
    where="pip's configured sources ($TORCH_CPU_INDEX did not answer)"
    [ ${#index[@]} -eq 0 ] || where="$TORCH_CPU_INDEX or pip's configured sources"
    "${PIP[@]}" install -q "${pins[@]}" ${index[@]+"${index[@]}"} torch ||
        pip_failed "pip found no CPU build of torch (constraints/cpu.txt) in $where, or could not reach them: point PIP_INDEX_URL (or PIP_EXTRA_INDEX_URL) at an index that serves it, or install a CPU torch into $VENV yourself, or set MEGADALLE_TORCH=gpu to take pip's default torch (the CUDA build, several GB)"
fi

# --- megadalle -----------------------------------------------------------------------------------------------
# An editable install of this checkout whose setup.py and constraints are unchanged needs no pip (whose build
# isolation would fetch setuptools from the index: offline reruns failed there).
fingerprint="$("$PY" - "$ROOT" "$ROOT/setup.py" "$CPU_PINS" "$COMMON_PINS" "$device" <<'EOF'
import hashlib, sys
digest = hashlib.sha256("\0".join(sys.argv[1:]).encode())
for name in sys.argv[2:-1]:
    digest.update(open(name, "rb").read())
print(digest.hexdigest())
EOF
)"
# (-I: the checkout's megadalle.egg-info, in the working directory, is no installed distribution)
installed_here() {  # megadalle is installed in the venv, editable, from this checkout
    "$PY" -I - "$ROOT" <<'EOF' 2>/dev/null
import importlib.metadata, json, os, sys, urllib.parse, urllib.request
url = json.loads(importlib.metadata.distribution("megadalle").read_text("direct_url.json") or "{}")
path = urllib.request.url2pathname(urllib.parse.urlparse(url.get("url", "")).path)
sys.exit(not (url.get("dir_info", {}).get("editable") and os.path.realpath(path) == os.path.realpath(sys.argv[1])))
EOF
}
done_extras=""
if [ -f "$STAMP" ] && [ "$(sed -n 1p "$STAMP")" = "$fingerprint" ]; then
    done_extras="$(sed -n 2p "$STAMP")"
fi
missing=""
for extra in ${wanted[@]+"${wanted[@]}"}; do
    case ",$done_extras," in *",$extra,"*) ;; *) missing=1 ;; esac
done
if [ -f "$STAMP" ] && [ "$(sed -n 1p "$STAMP")" = "$fingerprint" ] && [ -z "$missing" ] && installed_here; then
    say "megadalle${EXTRAS:+[$EXTRAS]} is installed from $ROOT, and setup.py and the constraints are unchanged: nothing to install"
else
    target="$ROOT"
    [ -z "$EXTRAS" ] || target="${ROOT}[$EXTRAS]"
    [ "$device" = gpu ] || [ -n "$system_torch" ] || cpu_index  # it also serves the torchvision built for the CPU torch
    say "installing megadalle${EXTRAS:+[$EXTRAS]} (editable) into $VENV"
    rm -f "$STAMP"
    "${PIP[@]}" install -q "${pins[@]}" ${index[@]+"${index[@]}"} -e "$target" ||
        pip_failed "pip could not install megadalle${EXTRAS:+[$EXTRAS]} into $VENV (its error is above; the same install without pip's -q says which versions conflict)"
    for extra in ${wanted[@]+"${wanted[@]}"}; do
        case ",$done_extras," in *",$extra,"*) ;; *) done_extras="$done_extras${done_extras:+,}$extra" ;; esac
    done
    printf '%s\n%s\n' "$fingerprint" "$done_extras" >"$STAMP"
fi
case ",$EXTRAS," in
    *,dev,*)
        if ! "$PY" -I -c 'import importlib.metadata as md, sys; sys.exit(md.version("DALL-E") != "0.1")' 2>/dev/null; then
            say "installing OpenAI's DALL-E 0.1 without its declared dependencies (they pull torchvision): import-dvae's tests"
            "${PIP[@]}" install -q --no-deps "DALL-E==0.1"
        fi ;;
esac
"$VENV/bin/megadalle" --help >/dev/null || die "the installed megadalle does not start"
say "done: now run  source $(printf %q "$VENV/bin/activate")  then  megadalle --help"
