"""Fakes for scripts/setup.sh's tests: a real venv (made in a fraction of a second, without pip) holding a fake pip
that logs each call and installs nothing but the records a real install leaves (a torch package and its version,
megadalle's editable record, DALL-E's), and a fake `megadalle` script. So the script's logic runs whole, offline,
in a second or two, and a test reads which pip commands it gave, with the constraints' contents at that moment.

`python fake_setup.py DIR` makes such a venv (a fake PYTHON's `-m venv --clear DIR` calls it).
The fake pip reads FAKE_PIP_LOG (where to log, one JSON object per call) and FAKE_PIP_NO_TORCH (set: no source
serves torch, as where the CPU wheel is nowhere to be had).
"""
from __future__ import annotations

import json
import os
import stat
import sys
import venv
from pathlib import Path

FAKE_PIP = r'''
import json, os, platform, re, sys
from pathlib import Path

HERE = Path(__file__).parent
SITE = HERE.parent
args = sys.argv[1:]


def dist(name, version, files=None):
    info = SITE / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for file, text in (files or {}).items():
        (info / file).write_text(text)


def pinned(files, name):
    """name's version in the constraint files (the line whose platform_system marker fits Linux)."""
    for text in files:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            found = re.fullmatch(rf"{name}==(\S+?)(?:;\s*platform_system\s*(==|!=)\s*\"(\w+)\")?", line)
            if found and (not found[2] or (found[2] == "==") == (found[3] == platform.system())):
                return found[1]


version = (HERE / "VERSION").read_text().strip()
if args == ["--version"]:
    print(f"pip {version} from {HERE} (python {sys.version_info[0]}.{sys.version_info[1]})")
    sys.exit(0)
constraints = [Path(args[i + 1]).read_text() for i, a in enumerate(args) if a == "-c"]
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "constraints": constraints}) + "\n")
assert args[0] == "install", args
wanted = [a for i, a in enumerate(args) if i and not a.startswith("-") and args[i - 1] not in ("-c", "--extra-index-url", "-e")]
if "-e" in args:
    root = re.sub(r"\[.*\]$", "", args[args.index("-e") + 1])
    dist("megadalle", "0.1.0", {"direct_url.json": json.dumps({"url": Path(root).as_uri(), "dir_info": {"editable": True}})})
elif "--dry-run" in args:  # the installed torch against the constraints: a conflict fails
    asked = wanted[0].split("==")[1]
    sys.exit(0 if pinned(constraints, "torch") in (None, asked) else 1)
elif wanted == ["torch"]:
    if os.environ.get("FAKE_PIP_NO_TORCH"):
        print(f"ERROR: No matching distribution found for torch=={pinned(constraints, 'torch')}", file=sys.stderr)
        sys.exit(1)
    (SITE / "torch").mkdir()
    (SITE / "torch" / "__init__.py").write_text("")
    dist("torch", pinned(constraints, "torch") or "2.13.0")
elif wanted and wanted[0].startswith("pip"):
    (HERE / "VERSION").write_text("26.0\n")
elif wanted == ["DALL-E==0.1"]:
    dist("DALL_E", "0.1")
'''


def site_packages(venv_dir: Path) -> Path:
    return next((venv_dir / "lib").glob("python3*/site-packages"))


def install_fake_pip(venv_dir: Path, version: str = "24.0") -> None:
    pip = site_packages(venv_dir) / "pip"
    pip.mkdir()
    (pip / "__init__.py").write_text("")
    (pip / "__main__.py").write_text(FAKE_PIP)
    (pip / "VERSION").write_text(version + "\n")


def add_torch(venv_dir: Path, version: str) -> None:
    site = site_packages(venv_dir)
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("")
    info = site / f"torch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")


def make_fake_venv(venv_dir: Path, pip: str | None = "24.0", torch: str | None = None) -> Path:
    """A venv from this Python, with a fake pip of version `pip` (None: no pip) and a fake torch."""
    venv.EnvBuilder(clear=True, with_pip=False, symlinks=os.name != "nt").create(venv_dir)
    if pip:
        install_fake_pip(venv_dir, pip)
    if torch:
        add_torch(venv_dir, torch)
    script = venv_dir / "bin" / "megadalle"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return venv_dir


def fake_python(path: Path, log: Path) -> Path:
    """A PYTHON whose `-m venv [--clear] DIR` makes a fake venv (logged); anything else runs this Python."""
    path.write_text(f"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
    echo "$*" >> '{log}'
    for last; do :; done
    exec '{sys.executable}' '{Path(__file__).resolve()}' "$last"
fi
exec '{sys.executable}' "$@"
""")
    path.chmod(0o755)
    return path


def pip_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


if __name__ == "__main__":
    make_fake_venv(Path(sys.argv[1]))
