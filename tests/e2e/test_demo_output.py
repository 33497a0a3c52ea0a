"""Where `megadalle demo` writes: an output folder it may take (new, empty or an earlier demo's), refused in one line
otherwise before anything is written or removed, and any path, whatever hydra's grammar makes of its characters.
The stages are stand-ins here: what is checked is the folder, and the paths each stage's config is given."""
import pytest

import megadalle.demo as demo
from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.preflight.probes import PreflightError


def demo_line(capsys, output) -> tuple[int, str]:
    """(exit status, last stderr line) of `megadalle demo demo=fast output=<output>` through the CLI."""
    code = main(["demo", "demo=fast", f"output={output}"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.rstrip("\n").rsplit("\n", 1)[-1]


@pytest.fixture
def no_stage(monkeypatch):
    """A demo that got past its checks fails the test at its first stage."""
    monkeypatch.setattr(demo, "make_data", lambda *args: pytest.fail("the demo started on an output it must refuse"))


def test_a_users_folder_is_refused_before_its_raw_folder_is_removed(tmp_path, capsys, no_stage):
    """`demo output=<a folder of the user's>` deleted its raw/ in silence (the demo draws raw/ anew)."""
    folder = tmp_path / "userdir"
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "notes.txt").write_text("mine")
    code, line = demo_line(capsys, folder)
    assert (code, line) == (2, f"megadalle demo: output={folder}: a folder that holds no earlier demo (no made/ "
                               "record in it), whose raw/ the demo would replace; give a new or empty folder")
    with pytest.raises(PreflightError, match="holds no earlier demo"):  # a call without the CLI, the same check
        demo.run(compose("demo", ["demo=fast", f"output={folder}"]))
    assert sorted(p.name for p in folder.rglob("*")) == ["notes.txt", "raw"]


def test_an_empty_folder_and_an_earlier_demos_are_taken(tmp_path):
    from megadalle.preflight.demo import check_output

    (tmp_path / "empty").mkdir()
    (tmp_path / "earlier" / "made").mkdir(parents=True)
    (tmp_path / "earlier" / "raw").mkdir()
    for output in ("empty", "earlier", "new/sub"):
        check_output(tmp_path / output)


def test_an_output_that_is_a_file_or_under_one_is_one_line(tmp_path, capsys, no_stage):
    """A FileExistsError's traceback (a file), a NotADirectoryError's (a file above it)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert demo_line(capsys, afile) == (2, f"megadalle demo: output={afile}: a file; give a folder")
    assert demo_line(capsys, afile / "sub") == (2, f"megadalle demo: output={afile / 'sub'}: {afile} is a file, not "
                                                   "a folder")
