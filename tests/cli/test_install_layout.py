"""Where megadalle is imported from: the kernels live in the checkout's top-level kernels/, which only an install
maps to megadalle.kernels (setup.py's package_dir), so a megadalle/ source folder in the working directory shadows
an installed package and has no kernels. The Docker image must not run from such a folder, and a user who does
gets one line saying what to do. Also the image's ssh set-up for multi-node runs."""
import os
import re
import shutil
import subprocess
import sys
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
