"""disk_errors.refused, the one conversion of a full disk into one line that every writing verb goes through."""
import errno
import os

import pytest

from megadalle.data import atomic
from megadalle.disk_errors import DiskRefused, refused
from megadalle.errors import UserError
from megadalle.train.disk_full import RunFileError, one_line

FULL = os.strerror(errno.ENOSPC)


def full_disk(filename=None):
    raise OSError(errno.ENOSPC, FULL, *([filename] if filename else []))


@pytest.mark.parametrize("path, filename, named", [("/out/a.png", "/out/.a.png.tmp", "/out/a.png"),
                                                    (None, "/out/b.json", "/out/b.json"),
                                                    (None, None, "a file")])
def test_the_line_names_the_writers_path_else_the_errors_file(path, filename, named):
    with pytest.raises(DiskRefused) as failed, refused(path, "rerun it"):
        full_disk(filename)
    assert isinstance(failed.value, UserError) and isinstance(failed.value, OSError)
    assert str(failed.value) == f"cannot write {named} ({FULL}): free space on its disk, then rerun it"


def test_the_writer_nearest_the_file_says_it_and_a_subclass_keeps_its_line():
    with pytest.raises(RunFileError, match=r"^cannot write /run/m.jsonl \(.*\): free space on its disk, then rerun "
                                           r"the inner way$"):
        with one_line(), refused("/run/m.jsonl", "rerun the inner way"):
            full_disk()
    with pytest.raises(RunFileError, match="^cannot write a file of the run directory "):
        with one_line():
            full_disk()


def test_any_other_os_error_passes_as_it_was():
    err = PermissionError(errno.EACCES, "Permission denied", "/out/x")
    with pytest.raises(PermissionError) as failed, refused("/out/x"):
        raise err
    assert failed.value is err


def test_an_atomic_write_names_the_file_asked_for_not_its_temporary(tmp_path, monkeypatch):
    """A write to the open temporary names nothing: the line said "a file" of generate's grid.png."""
    monkeypatch.setattr(type(tmp_path), "write_bytes", lambda self, data: full_disk())
    with pytest.raises(DiskRefused, match=f"^cannot write {tmp_path / 'grid.png'} "), refused():
        atomic.write_bytes(tmp_path / "grid.png", b"png")
    assert list(tmp_path.iterdir()) == []
