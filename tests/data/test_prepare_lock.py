"""Two prepares on one output at once: their writers' temporary names are fixed, and one published an index.json
saying 32 px over a tar of 16 and 32 px images (train-dvae then failed reading it). The second is refused in one
line naming the first, before it touches a file."""
import socket

from megadalle.cli import main
from tests.data.conftest import jpeg_bytes
from tests.lock_holder import held_by_another_process


def test_a_second_prepare_on_a_busy_output_is_refused_before_touching_it(tmp_path, capsys):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(jpeg_bytes((40, 40), i))
        (root / f"{i}.txt").write_text(f"picture {i}")
    args = ["prepare", f"input={root}", f"output={out}", "min_side=16", "num_workers=0"]
    assert main([*args, "image_size=32"]) == 0
    capsys.readouterr()
    with held_by_another_process(out, "prepare") as pid:
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert main([*args, "image_size=16"]) == 2
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert capsys.readouterr().err == (f"megadalle prepare: output={out} is in use by a prepare (host "
                                       f"{socket.gethostname()}, pid {pid}); wait for it to end or stop it, or give "
                                       "another output=; if that process is gone (NFSv3 keeps a dead node's lock "
                                       f"until it reboots), remove {out / '.lock'}\n")
    assert main([*args, "image_size=16"]) == 0  # free once the first is gone
