"""Where megadalle is imported from: the kernels live in the checkout's top-level kernels/, which only an install
maps to megadalle.kernels (setup.py's package_dir), so a megadalle/ source folder in the working directory shadows
an installed package and has no kernels. The Docker image must not run from such a folder, and a user who does
gets one line saying what to do. Also the image's ssh set-up for multi-node runs, its build context, and its
environment for a user without a home."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fake_checkout(where: Path) -> Path:
    """megadalle/__init__.py (where the check lives), kernels/ and setup.py beside it: a checkout's layout."""
    (where / "megadalle").mkdir(parents=True)
    shutil.copy(ROOT / "megadalle" / "__init__.py", where / "megadalle" / "__init__.py")
    (where / "kernels").mkdir()
    (where / "kernels" / "__init__.py").write_text("")
    (where / "setup.py").write_text("")
    return where


def bare_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """No site-packages (-S, so no editable install of this checkout serves megadalle.kernels) and no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_importing_the_kernels_from_a_checkouts_source_folder_says_to_install(tmp_path):
    """`import megadalle.kernels` from a checkout over a non-editable install said only "No module named
    'megadalle.kernels'" (the Docker image's import check ran where its source copy sat)."""
    checkout = fake_checkout(tmp_path / "checkout")
    done = bare_python("import megadalle.kernels", checkout)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ModuleNotFoundError: megadalle.kernels is not importable: the megadalle imported is the source folder "
        f"{checkout / 'megadalle'} of a checkout, whose kernels/ only an install makes megadalle.kernels: run "
        f"scripts/setup.sh there (an editable install), or start Python outside the checkout to use an installed "
        f"megadalle")
    # an ImportError still, for code that tries the kernels and falls back
    assert bare_python("try:\n import megadalle.kernels\nexcept ImportError:\n print('fallback')", checkout).stdout \
        == "fallback\n"


def test_an_installed_megadalle_imports_its_kernels_untouched(tmp_path):
    site = tmp_path / "site"
    (site / "megadalle" / "kernels").mkdir(parents=True)
    shutil.copy(ROOT / "megadalle" / "__init__.py", site / "megadalle" / "__init__.py")
    (site / "megadalle" / "kernels" / "__init__.py").write_text("WHERE = 'installed'\n")
    done = bare_python(f"import sys; sys.path.insert(0, {str(site)!r}); import megadalle.kernels as k; print(k.WHERE)",
                       tmp_path)
    assert (done.returncode, done.stdout) == (0, "installed\n"), done.stderr


def dockerfile_steps() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.M) if not m[0].startswith("#")]


def test_the_image_runs_from_no_folder_holding_megadalles_source():
    """WORKDIR /opt/megadalle held the copied megadalle/ source: the image's own import check, `python -m megadalle`
    and `deepspeed --module megadalle` there imported the source folder, which has no kernels."""
    workdir, copied_to, checks = "/", {}, []
    for instruction, args in dockerfile_steps():
        if instruction == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, args))
        elif instruction == "COPY":
            *sources, dest = args.split()
            for source in sources:
                target = os.path.join(workdir, dest)
                copied_to[source] = os.path.normpath(os.path.join(target, os.path.basename(source))
                                                     if dest.endswith("/") else target)
        elif instruction == "RUN" and "import megadalle" in args:
            checks.append(args)
    source = copied_to["megadalle"]
    assert os.path.dirname(source) != workdir, f"the image starts in {workdir}, beside the source {source}"
    (install,) = checks
    assert f"rm -rf {os.path.dirname(source)}" in install, install  # the copy goes once installed
    assert re.search(r"cd / && python -c \"import megadalle\.kernels", install), install
    assert "-c /tmp/megadalle-src/constraints/common.txt" in install and "constraints/common.txt" in copied_to


def test_the_entrypoint_installs_the_mounted_key_as_roots_own(tmp_path):
    """The multi-node recipe bind-mounted the user's ~/.ssh/megadalle.pub as root's authorized_keys, which sshd's
    StrictModes refuses: the file belongs to the host user. The entrypoint now installs a root-owned copy, mode 600."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test makes a key file owned by another user and checks the copy's owner")
    readme = (ROOT / "README.md").read_text()
    docker = (ROOT / "Dockerfile").read_text()
    for text in (readme, docker):
        assert "/root/.ssh/authorized_keys" not in text
        assert "-v ~/.ssh/megadalle.pub:/etc/megadalle/authorized_keys:ro" in text
    script = (ROOT / "launch" / "docker" / "50-ssh-host-keys.sh").read_text()
    mounted = tmp_path / "etc" / "megadalle" / "authorized_keys"
    mounted.parent.mkdir(parents=True)
    mounted.write_text("ssh-ed25519 AAAA launcher\n")
    os.chown(mounted, 1000, 1000)
    mounted.chmod(0o644)
    home = tmp_path / "root" / ".ssh"
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "ssh-keygen").write_text("#!/bin/sh\nexit 0\n")  # host keys: not this test's business
    (fakes / "ssh-keygen").chmod(0o755)
    script = script.replace("/etc/megadalle/", f"{mounted.parent}/").replace("/root/.ssh", str(home))
    # sourced, as NVIDIA's entrypoint does, by a shell that goes on to the container's command
    done = subprocess.run(["bash", "-c", f"{script}\necho next"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH=f"{fakes}:{os.environ['PATH']}"))
    assert (done.returncode, done.stdout) == (0, "next\n"), done.stderr
    installed = home / "authorized_keys"
    assert installed.read_text() == "ssh-ed25519 AAAA launcher\n"
    stat = installed.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (0, 0, 0o600)
    assert home.stat().st_mode & 0o777 == 0o700


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last .dockerignore pattern that matches it or a
    folder above it decides, a `!` pattern letting it in (`**` any folders, `*` and `?` within one name)."""
    excluded = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not keep
    return excluded


def test_the_build_context_holds_what_the_image_copies_and_no_venv_outputs_or_git():
    """Without a .dockerignore the legacy builder and podman sent the checkout's .venv (2.4 GB) and outputs/."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    sources = [source for step, args in dockerfile_steps() if step == "COPY" for source in args.split()[:-1]]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copied = [f for f in tracked if any(f == s or f.startswith(s.rstrip("/") + "/") for s in sources)]
    assert len(copied) > len(sources) and "megadalle/__init__.py" in copied and "launch/train.sh" in copied
    assert [f for f in copied if dockerignored(f, patterns)] == []
    for junk in (".venv/bin/python", "outputs/run/metrics.jsonl", ".git/HEAD", "wandb/latest-run", "scratch/x.tar",
                 "megadalle/__pycache__/cli.cpython-312.pyc", "megadalle.egg-info/PKG-INFO", "tests/conftest.py"):
        assert dockerignored(junk, patterns), junk


def test_a_container_user_without_a_home_compiles_kernels_and_logs_to_wandb():
    """`docker run --user UID` (HOME=/, not writable): Triton's cache at /.triton raised PermissionError at the first
    kernel, and wandb failed to make /.cache. The image's ENV, rebased from /tmp to a scratch folder, as such a user."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv: the test runs Python as a uid with no home")
    nobody = ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups", sys.executable]
    if subprocess.run([*nobody, "-c", "import triton, wandb"], cwd="/", capture_output=True, timeout=120).returncode:
        pytest.skip(f"{sys.executable} or its packages are not readable by another uid")
    env = {}
    for instruction, args in dockerfile_steps():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in args.split())
    scratch = Path(tempfile.mkdtemp(prefix="megadalle-nouser-", dir="/tmp"))
    try:
        scratch.chmod(0o777)
        env = {k: v.replace("/tmp", str(scratch), 1) if v.startswith("/tmp") else v for k, v in env.items()}
        code = ("import sys, wandb; from triton.runtime.cache import get_cache_manager\n"
                "print(get_cache_manager('a' * 64).cache_dir)\n"
                "wandb.init(mode='offline', dir=sys.argv[1], project='nouser').finish()\n")
        done = subprocess.run([*nobody, "-c", code, str(scratch)], env={"HOME": "/", "PATH": os.environ["PATH"], **env},
                              cwd=scratch, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{env['TRITON_HOME']}/.triton/cache/")
        assert "/.cache: permission denied" not in done.stderr, done.stderr
    finally:
        shutil.rmtree(scratch)
