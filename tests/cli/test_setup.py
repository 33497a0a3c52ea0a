"""The README's set-up: CI runs its test command verbatim, and scripts/setup.sh refuses bad input early; its
logic (torch's CPU pin, a user's torch kept, broken venvs repaired, offline reruns) runs whole against a fake pip.

The full fresh-install check (a new venv with nothing preinstalled) is .ci/fresh-install: it takes
minutes of installing, so it is a script, not a test.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.fake_setup import fake_python, make_fake_venv, pip_calls, site_packages

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
    # the README names the CPU pin, and its by-hand install takes both constraint files
    linux = re.search(r'^(torch==\S+); platform_system == "Linux"', constraints, re.M).group(1)
    readme = (ROOT / "README.md").read_text()
    assert f"`{linux}` on Linux" in readme
    assert "pip install -c constraints/cpu.txt -c constraints/common.txt --extra-index-url" in readme


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


# --- scripts/setup.sh's logic, run whole against a fake pip (tests/cli/fake_setup.py) --------------------------
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def run_setup(tmp_path, venv, *args, cwd=None, **env):
    """scripts/setup.sh with the fake pip's log in tmp_path, PyTorch's CPU index out of reach, a CPU machine."""
    full = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON", "PIP_INDEX_URL")}
    full.update(VENV=str(venv), MEGADALLE_TORCH="cpu", MEGADALLE_TORCH_INDEX=UNREACHABLE,
                FAKE_PIP_LOG=str(tmp_path / "pip.log"))
    full.update(env)
    return subprocess.run([str(ROOT / "scripts" / "setup.sh"), *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)


def installs(tmp_path) -> list[dict]:
    return pip_calls(tmp_path / "pip.log")


def editable(call) -> bool:
    return "-e" in call["args"]


def changes(tmp_path) -> list[dict]:
    """The pip calls that install something (not the offline --dry-run that checks the installed torch)."""
    return [c for c in installs(tmp_path) if "--dry-run" not in c["args"]]


def pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_a_cpu_install_pins_torch_to_its_cpu_build_for_torch_and_megadalle(tmp_path):
    venv = make_fake_venv(tmp_path / "my venv")
    done = run_setup(tmp_path, venv)
    assert done.returncode == 0, done.stderr
    torch, megadalle = installs(tmp_path)
    assert torch["args"][-1] == "torch" and megadalle["args"][-2:] == ["-e", str(ROOT)]
    for call in (torch, megadalle):
        assert any('torch==2.13.0+cpu; platform_system == "Linux"' in c for c in call["constraints"]), call
        assert any("deepspeed==" in c for c in call["constraints"]), call
        assert "--extra-index-url" not in call["args"]  # the CPU index did not answer
    assert "does not answer: taking torch's CPU wheel from pip's configured sources" in done.stdout
    # the path is quoted for the shell: a folder with a space in its name
    assert done.stdout.strip().splitlines()[-1] == (
        f"[setup] done: now run  source {str(venv).replace(' ', chr(92) + ' ')}/bin/activate  then  megadalle --help")


def test_the_cpu_index_goes_to_pip_when_it_answers(tmp_path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        done = run_setup(tmp_path, make_fake_venv(tmp_path / "venv"), MEGADALLE_TORCH_INDEX=url)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert [c["args"][c["args"].index("--extra-index-url") + 1] for c in installs(tmp_path)] == [url, url]


def test_where_no_source_serves_the_cpu_torch_setup_stops_with_one_line(tmp_path):
    """It took pip's default torch to see whether it needed nvidia-* wheels: 1.3 GB of CUDA wheels downloaded, then a
    triton pin that only suits the CPU build failed. The pin on the +cpu build makes pip stop before any download."""
    done = run_setup(tmp_path, make_fake_venv(tmp_path / "venv"), FAKE_PIP_NO_TORCH="1")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("[setup] error: pip found no CPU build of torch"), done.stderr
    assert "PIP_INDEX_URL" in last and "MEGADALLE_TORCH=gpu" in last
    assert not any(editable(c) for c in installs(tmp_path))


@pytest.mark.parametrize("device", ["cpu", "gpu"], ids=["cpu-machine", "cuda-machine"])  # (a `gpu` id means a GPU test)
def test_a_torch_already_in_the_venv_is_kept_and_pinned(tmp_path, device):
    """A user's torch was reported as kept, then the install under constraints/cpu.txt replaced it."""
    venv = make_fake_venv(tmp_path / "venv", torch="2.6.0+cu124")
    done = run_setup(tmp_path, venv, "eval", MEGADALLE_TORCH=device)
    assert done.returncode == 0, done.stderr
    assert "torch 2.6.0+cu124 already installed: kept" in done.stdout
    calls = changes(tmp_path)
    assert len(calls) == 1 and editable(calls[0]) and calls[0]["args"][-1] == f"{ROOT}[eval]"
    constraints = "".join(calls[0]["constraints"])
    assert "torch==2.6.0+cu124" in constraints and "torch==2.13.0" not in constraints and "triton" not in constraints
    assert "deepspeed==" in constraints


def test_the_cpu_torch_of_an_earlier_run_keeps_its_pins(tmp_path):
    venv = make_fake_venv(tmp_path / "venv", torch="2.13.0+cpu")
    done = run_setup(tmp_path, venv, "dev")
    assert done.returncode == 0, done.stderr
    megadalle = next(c for c in installs(tmp_path) if editable(c))
    assert "torchvision==0.28.0" in "".join(megadalle["constraints"])


def test_the_gpu_path_takes_pips_default_torch_under_the_common_pins(tmp_path):
    done = run_setup(tmp_path, make_fake_venv(tmp_path / "venv"), MEGADALLE_TORCH="gpu")
    assert done.returncode == 0, done.stderr
    (call,) = installs(tmp_path)
    assert editable(call) and "--extra-index-url" not in call["args"]
    assert len(call["constraints"]) == 1 and "deepspeed==" in call["constraints"][0]
    assert not [pin for pin in pins(call["constraints"][0]) if pin.startswith(("torch", "triton"))]


@pytest.mark.parametrize("pip, upgraded", [("22.0.2", True), ("23.1.2", True), ("23.2.1", False), ("25.1", False)])
def test_an_old_pip_is_upgraded_before_anything_else(tmp_path, pip, upgraded):
    """Ubuntu 22.04's venv brings pip 22.0.2, which failed on setup.sh's options; only an old pip is upgraded, so a
    rerun needs no network."""
    done = run_setup(tmp_path, make_fake_venv(tmp_path / "venv", pip=pip))
    assert done.returncode == 0, done.stderr
    first = installs(tmp_path)[0]["args"]
    assert (first == ["install", "-q", "-U", "pip>=23.2"]) == upgraded


def test_a_rerun_with_nothing_changed_runs_no_pip_install(tmp_path):
    """Rerun offline, `pip install -e .` failed: build isolation fetches setuptools from the index."""
    venv = make_fake_venv(tmp_path / "venv")
    assert run_setup(tmp_path, venv, "dev").returncode == 0
    (tmp_path / "pip.log").unlink()
    # run from a checkout, whose megadalle.egg-info (no editable install's record) must not be taken for the install
    checkout = tmp_path / "checkout"
    (checkout / "megadalle.egg-info").mkdir(parents=True)
    (checkout / "megadalle.egg-info" / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: megadalle\nVersion: 0.1.0\n")
    again = run_setup(tmp_path, venv, "dev", cwd=checkout)
    assert again.returncode == 0, again.stderr
    assert "nothing to install" in again.stdout and changes(tmp_path) == []
    fewer = run_setup(tmp_path, venv)  # extras installed before stay installed
    assert fewer.returncode == 0 and changes(tmp_path) == []
    more = run_setup(tmp_path, venv, "dev,slurm")
    assert more.returncode == 0, more.stderr
    assert [c["args"][-1] for c in changes(tmp_path)] == [f"{ROOT}[dev,slurm]"]


@pytest.mark.parametrize("extras", ["dev,,slurm", "dev,", ",dev"])
def test_setup_refuses_an_empty_extra_before_creating_anything(tmp_path, extras):
    venv = tmp_path / "venv"
    done = subprocess.run([str(ROOT / "scripts" / "setup.sh"), extras], capture_output=True, text=True,
                          env=dict(os.environ, VENV=str(venv)))
    assert done.returncode == 1 and done.stderr.startswith(f"[setup] error: an empty extra in '{extras}'")
    assert not venv.exists()


def test_a_python_too_old_is_refused_before_a_venv_folder_is_made(tmp_path):
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 3.8.18\n")
    old.chmod(0o755)
    done = run_setup(tmp_path, tmp_path / "venv", PYTHON=str(old))
    assert done.returncode == 1 and "is Python 3.8.18; megadalle needs >= 3.10" in done.stderr
    assert not (tmp_path / "venv").exists()


def test_a_venv_without_pip_gets_it_from_ensurepip(tmp_path):
    """A first run on Debian without python3-venv left a venv without pip, which the next run took for sound."""
    venv = make_fake_venv(tmp_path / "venv", pip=None)
    fakes = tmp_path / "fakes" / "ensurepip"
    fakes.mkdir(parents=True)
    (fakes / "__init__.py").write_text("")
    (fakes / "__main__.py").write_text(
        "import sys\nfrom pathlib import Path\nsys.path.insert(0, sys.argv[0].rsplit('/fakes/', 1)[0] + '/shim')\n"
        "from fake_setup import install_fake_pip\ninstall_fake_pip(Path(sys.prefix))\n")
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "fake_setup.py").write_text((ROOT / "tests" / "cli" / "fake_setup.py").read_text())
    done = run_setup(tmp_path, venv, PYTHONPATH=str(tmp_path / "fakes"))
    assert done.returncode == 0, done.stderr
    assert "has no pip: installing it with ensurepip" in done.stdout and any(editable(c) for c in installs(tmp_path))


def test_a_venv_without_pip_or_ensurepip_says_what_to_install(tmp_path):
    venv = make_fake_venv(tmp_path / "venv", pip=None)
    fakes = tmp_path / "fakes" / "ensurepip"
    fakes.mkdir(parents=True)
    (fakes / "__init__.py").write_text("")
    (fakes / "__main__.py").write_text("raise SystemExit('ensurepip is disabled in Debian/Ubuntu for the system python')")
    done = run_setup(tmp_path, venv, PYTHONPATH=str(tmp_path / "fakes"))
    assert done.returncode == 1
    assert re.search(r"has no pip, and its Python cannot install one .*sudo apt-get install python3\.\d+-venv, then "
                     r"rerun$", done.stderr.strip()), done.stderr


def test_a_venv_whose_python_is_gone_is_made_anew(tmp_path):
    """Its bin/python led to an interpreter since removed (a pyenv version, an upgraded system Python)."""
    venv = make_fake_venv(tmp_path / "venv")
    for name in (venv / "bin").glob("python*"):
        name.unlink()
        name.symlink_to(tmp_path / "gone" / "python3")
    made = tmp_path / "made.log"
    done = run_setup(tmp_path, venv, PYTHON=str(fake_python(tmp_path / "python3", made)))
    assert done.returncode == 0, done.stderr
    assert "has lost its Python" in done.stdout and made.read_text().split() == ["-m", "venv", "--clear", str(venv)]
    assert any(editable(c) for c in installs(tmp_path))


def test_a_venv_of_a_moved_checkout_is_made_anew(tmp_path):
    """Its scripts and activate lead to where it was made: `source .venv/bin/activate` activated the old one."""
    made_at = tmp_path / "old" / "venv"
    venv = make_fake_venv(made_at)
    made_at.rename(tmp_path / "venv")
    venv = tmp_path / "venv"
    made = tmp_path / "made.log"
    done = run_setup(tmp_path, venv, PYTHON=str(fake_python(tmp_path / "python3", made)))
    assert done.returncode == 0, done.stderr
    assert f"was made at {made_at} and moved here" in done.stdout
    assert made.read_text().split() == ["-m", "venv", "--clear", str(venv)]


def test_a_python_chosen_for_an_existing_venv_is_said_to_be_ignored(tmp_path):
    venv = make_fake_venv(tmp_path / "venv", torch="2.13.0+cpu")
    other = tmp_path / "python3.12"
    other.write_text("#!/bin/sh\necho /opt/python3.12 3.12.1\n")
    other.chmod(0o755)
    done = run_setup(tmp_path, venv, PYTHON=str(other))
    assert done.returncode == 0, done.stderr
    assert f"PYTHON={other} is ignored: {venv} exists, with Python" in done.stdout
    same = run_setup(tmp_path, venv, PYTHON=sys.executable)
    assert same.returncode == 0 and "is ignored" not in same.stdout


NGC_TORCH = "2.9.0a0+145a3a7bda.nv25.10"  # NVIDIA PyTorch container 25.10's build, which its PIP_CONSTRAINT pins


def base_python_with_torch(tmp_path, made, cuda) -> Path:
    """A PYTHON (fake_python's: its `-m venv` is logged in `made`) that imports a torch of version NGC_TORCH,
    built for CUDA `cuda` (None: a CPU build)."""
    site = tmp_path / "base-site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(f"import types\nversion = types.SimpleNamespace(cuda={cuda!r})\n")
    (site / f"torch-{NGC_TORCH}.dist-info").mkdir()
    (site / f"torch-{NGC_TORCH}.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torch\nVersion: {NGC_TORCH}\n")
    inner = fake_python(tmp_path / "inner-python3", made)
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nPYTHONPATH='{site}' exec '{inner}' \"$@\"\n")
    python.chmod(0o755)
    return python


@pytest.mark.parametrize("torch_env", [{}, {"MEGADALLE_TORCH": "gpu"}], ids=["detected", "cuda-machine"])
def test_a_venv_beside_a_cuda_torch_shares_it_and_installs_no_torch(tmp_path, torch_env):
    """In NVIDIA's container the venv had no system packages: pip, under the container's PIP_CONSTRAINT (a torch
    build no index serves), failed without a word from setup.sh; without it, it would fetch PyPI's CUDA torch and lose
    apex."""
    made = tmp_path / "made.log"
    env = {"PYTHON": str(base_python_with_torch(tmp_path, made, "13.0")), "MEGADALLE_TORCH": "", **torch_env}
    done = run_setup(tmp_path, tmp_path / "venv", **env)
    assert done.returncode == 0, done.stderr
    assert made.read_text().split() == ["-m", "venv", "--system-site-packages", str(tmp_path / "venv")]
    said = (f"[setup] {tmp_path / 'python3'} has torch {NGC_TORCH}, built for CUDA 13.0: the venv shares its packages "
            f"(--system-site-packages), apex too where it has it, and no torch is installed")
    assert said in done.stdout.splitlines(), done.stdout
    (call,) = changes(tmp_path)
    assert editable(call) and "--extra-index-url" not in call["args"]
    assert f"torch=={NGC_TORCH}" in "".join(call["constraints"]) and "torch==2.13.0" not in "".join(call["constraints"])


@pytest.mark.parametrize("cuda, torch_env", [(None, "gpu"), ("13.0", "cpu")], ids=["cpu-torch", "cpu-asked"])
def test_a_venv_beside_a_cpu_torch_or_asked_for_cpu_is_its_own(tmp_path, cuda, torch_env):
    made = tmp_path / "made.log"
    done = run_setup(tmp_path, tmp_path / "venv", PYTHON=str(base_python_with_torch(tmp_path, made, cuda)),
                     MEGADALLE_TORCH=torch_env)
    assert done.returncode == 0, done.stderr
    assert made.read_text().split() == ["-m", "venv", str(tmp_path / "venv")]
    assert "--system-site-packages" not in done.stdout and NGC_TORCH not in "".join(map(str, installs(tmp_path)))


FAILING_PIP = """import sys
if sys.argv[1:] == ["--version"]:
    print("pip 25.0 from here")
    sys.exit(0)
print("ERROR: Cannot install megadalle==0.1.0 because these package versions have conflicting dependencies.",
      file=sys.stderr)
sys.exit(1)
"""


@pytest.mark.parametrize("constraint", [True, False], ids=["PIP_CONSTRAINT", "none"])
def test_a_failing_pip_install_ends_with_a_setup_line_naming_pip_constraint(tmp_path, constraint):
    """pip -q said only "conflicting dependencies", and setup.sh nothing: the container's PIP_CONSTRAINT was the
    cause."""
    venv = make_fake_venv(tmp_path / "venv")
    (site_packages(venv) / "pip" / "__main__.py").write_text(FAILING_PIP)
    pinned = tmp_path / "constraint.txt"
    pinned.write_text(f"torch=={NGC_TORCH}\n")
    env = {"PIP_CONSTRAINT": str(pinned)} if constraint else {}
    done = run_setup(tmp_path, venv, MEGADALLE_TORCH="gpu", **env)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"[setup] error: pip could not install megadalle into {venv} (its error is above"), last
    assert (f"PIP_CONSTRAINT={pinned} is set" in last) == constraint
    assert ("remove " + str(venv) + " and rerun with PYTHON set to the container's Python" in last) == constraint


def test_a_failing_pip_in_a_venv_that_shares_its_pythons_packages_is_not_told_to_make_one_that_does(tmp_path):
    """On a rerun system_torch was unset (make_venv sets it), and a venv made beside the container's torch was told
    to be removed and made again with the container's Python: what it already was."""
    venv = make_fake_venv(tmp_path / "venv")
    (site_packages(venv) / "pip" / "__main__.py").write_text(FAILING_PIP)
    config = venv / "pyvenv.cfg"
    config.write_text(re.sub(r"(?m)^include-system-site-packages = false$", "include-system-site-packages = true",
                             config.read_text()))
    assert "include-system-site-packages = true" in config.read_text()
    pinned = tmp_path / "constraint.txt"
    pinned.write_text(f"torch=={NGC_TORCH}\n")
    done = run_setup(tmp_path, venv, MEGADALLE_TORCH="gpu", PIP_CONSTRAINT=str(pinned))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert f"PIP_CONSTRAINT={pinned} is set" in last, last
    assert "rerun with PYTHON set to the container's Python" not in last, last

def test_a_folder_that_is_no_venv_is_never_cleared(tmp_path):
    folder = tmp_path / "stuff"
    (folder / "bin").mkdir(parents=True)
    (folder / "keep.txt").write_text("mine")
    done = run_setup(tmp_path, folder)
    assert done.returncode == 1 and "no venv (no pyvenv.cfg) that this script may rebuild" in done.stderr
    assert (folder / "keep.txt").read_text() == "mine"


def project_texts():
    """The README and every file whose text reaches a user: messages, config comments, scripts, skip reasons."""
    for path in [ROOT / "README.md", ROOT / "Dockerfile", ROOT / "setup.py",
                 *(p for folder in ("megadalle", "kernels", "conf", "scripts", "launch", "benchmarks", "tests", ".ci")
                   for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in ("", ".py", ".yaml", ".sh", ".md",
                                                                                       ".sbatch", ".txt"))]:
        if path != Path(__file__) and "__pycache__" not in path.parts:
            yield path, path.read_text(errors="replace")


def test_no_text_tells_a_user_to_pip_install_megadalles_extras():
    """megadalle is not on PyPI (`pip install 'megadalle[eval]'` finds nothing), and `pip install -e '.[eval]'` in the
    CPU venv pulls PyPI's CUDA torch: scripts/setup.sh EXTRAS installs an extra under the right torch."""
    bare = re.compile(r"pip install[^\n`]*?(megadalle\[|-e\s+['\"]?\.\[)")
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path, text in project_texts() for m in bare.finditer(text)]
    assert not found, found
    offered = set(re.findall(r'^        "([a-z_]+)":', (ROOT / "setup.py").read_text(), re.M))
    named = {(path.name, extra) for path, text in project_texts()
             for group in re.findall(r"[`(]scripts/setup\.sh ([a-z_]+(?:,[a-z_]+)*)\b", text)  # a command, not prose
             for extra in group.split(",")}
    assert named and {extra for _, extra in named} <= offered, sorted(named)


def test_the_missing_extra_errors_name_setup_sh(tmp_path, monkeypatch):
    """The messages as a user reads them (the source splits them over lines)."""
    from megadalle.fidelity import FeatureExtractorError, inception
    from megadalle.sampling.rerank import RerankerError, load_open_clip

    monkeypatch.setitem(sys.modules, "open_clip", None)  # None in sys.modules: the import raises ImportError
    with pytest.raises(RerankerError) as rerank:
        load_open_clip("ViT-B-32", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    (tmp_path / "inception.pth").write_bytes(b"")
    with pytest.raises(FeatureExtractorError) as fidelity:
        inception(str(tmp_path / "inception.pth"))
    for err, extra in ((rerank, "open_clip"), (fidelity, "eval")):
        assert f"`scripts/setup.sh {extra}`" in str(err.value) and "pip install" not in str(err.value), err.value
