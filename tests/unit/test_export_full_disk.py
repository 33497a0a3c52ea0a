"""An export on a full disk: the writer's abort closed its file first, and that close flushed and failed again
(ENOSPC), a traceback that hid the first error and kept the temporary with the data written so far on the full
disk. Now the failure is one line and the temporary goes."""
import errno
import os

import pytest
import torch

from megadalle.errors import UserError
from megadalle.weights import ShardedWriter, export_layout
from megadalle.weights.writers import SingleFileWriter


class FullDisk:
    """A planned file's stream on a full disk: the flush of close fails (the descriptor closes), and with
    `writes_fail` every write too (else the buffer takes them)."""

    def __init__(self, file, writes_fail):
        self.file, self.writes_fail = file, writes_fail

    def __getattr__(self, name):
        return getattr(self.file, name)

    def write(self, data):
        if self.writes_fail:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(data)

    def close(self):
        self.file.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writes_fail", [True, False])
@pytest.mark.parametrize("one_file", [True, False])
def test_a_full_disk_is_one_line_and_the_temporary_goes(tmp_path, one_file, writes_fail):
    state = {"a": torch.ones(4, 3), "b": torch.zeros(5)}
    layout = export_layout(state, torch.float32)
    target = tmp_path / ("out.safetensors" if one_file else "out")
    writer = SingleFileWriter(target, layout, "dvae") if one_file else ShardedWriter(target, layout, "dvae")
    for file in dict.fromkeys(writer.files.values()):
        file.file = FullDisk(file.file, writes_fail)
    with pytest.raises(UserError) as failed:  # as consolidate.export does it
        try:
            for name, tensor in state.items():
                writer.add(name, tensor)
            writer.close({"config": 1})
        except BaseException:
            writer.abort()
            raise
    assert str(failed.value) == (f"cannot write {target} (No space left on device): free space on its disk, then "
                                 "rerun the same command")
    assert list(tmp_path.iterdir()) == []
