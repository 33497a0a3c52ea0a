"""The README's set-up: CI runs its test command verbatim, and scripts/setup.sh refuses bad input early.

The full fresh-install check (a new venv with nothing preinstalled) is .ci/fresh-install: it takes
minutes of installing, so it is a script, not a test.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading_text: str) -> list[str]:
    """Lines of the first ```bash block after the README line containing `heading_text`."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading_text):]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1).strip().splitlines()


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_block("Run the tests")
    assert command[0].startswith("scripts/setup.sh dev")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n".join(command) in ci


def test_readme_set_up_uses_the_script_and_a_venv():
    command = readme_block("## Set-up")
    assert command == ["scripts/setup.sh && source .venv/bin/activate", "megadalle demo"]
    for script in ("scripts/setup.sh", ".ci/fresh-install", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), script
    constraints = (ROOT / "constraints" / "cpu.txt").read_text()
    assert "https://download.pytorch.org/whl/cpu" in constraints and "torch==" in constraints


def test_setup_refuses_an_unknown_torch_kind_before_creating_anything(tmp_path):
    venv = tmp_path / "venv"
    done = subprocess.run([str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env=dict(os.environ, VENV=str(venv), MEGADALLE_TORCH="rocm"))
    assert done.returncode == 1
    assert done.stderr.strip() == "[setup] error: MEGADALLE_TORCH=rocm: expected cpu or gpu"
    assert not venv.exists()


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "[setup] error: unknown extra 'nosuch'; setup.py offers dev,slurm,open_clip,eval"),
    (["dev,slurn"], "[setup] error: unknown extra 'slurn'; setup.py offers dev,slurm,open_clip,eval"),
    (["dev", "slurm"], "[setup] error: one argument, the extras separated by commas (e.g. dev,slurm); got 2: dev slurm"),
])
def test_setup_refuses_bad_arguments_before_creating_anything(tmp_path, args, message):
    venv = tmp_path / "venv"
    done = subprocess.run([str(ROOT / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          env=dict(os.environ, VENV=str(venv)))
    assert (done.returncode, done.stderr.strip()) == (1, message) and not venv.exists()


def test_setup_help_prints_its_usage_and_installs_nothing(tmp_path):
    venv = tmp_path / "venv"
    done = subprocess.run([str(ROOT / "scripts" / "setup.sh"), "--help"], capture_output=True, text=True,
                          env=dict(os.environ, VENV=str(venv)))
    assert done.returncode == 0 and done.stdout.startswith("Set megadalle up in a virtual environment") and not venv.exists()
