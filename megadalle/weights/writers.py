"""Writing weights, whole or streamed, so that an interrupted write never leaves a file that looks finished.

`save_weights` writes a state dict held in memory (the small models). The streamed writers take tensors one at a
time into files planned from their shapes (planned_safetensors.py), so that an export of a 12B model holds one
tensor, not the model; each writes under a temporary name, renamed when complete, and removes what a killed
export on this machine left.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from megadalle.disk_errors import refused
from megadalle.planned_safetensors import Layout, PlannedFile, nbytes
from megadalle.processes import owner_gone, owner_tag
from megadalle.weights.dtypes import cast
from megadalle.weights.errors import OutputInTheWay
from megadalle.weights.records import CONFIG, INDEX, config_path, config_record
from megadalle.weights.replace import check_replaceable

TMP = ".tmp-"
"""Temporaries are `<target>.tmp-<host>-<pid>.<start>` (processes.owner_tag): a later export can tell a dead
writer's."""
OLD = ".old"
"""An earlier export moved aside while its replacement is renamed in (`<target>.old.tmp-<owner>`), removed after."""


def file_metadata(kind: str) -> dict[str, str]:
    """The header metadata of one exported file: the model kind (records.recorded_kind), and the "format" that
    Hugging Face's loaders (huggingface_hub, transformers, accelerate) require of a file before they read it."""
    return {"format": "pt", "kind": kind}


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], kind: str, config: Any) -> Path:
    """Write one `path` (.safetensors) and its config JSON atomically; `config` is a dataclass or dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (path, config_path(path)):
        remove_stale_temporaries(target)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    tmp_weights, tmp_json = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".json.tmp")
    save_file(tensors, str(tmp_weights), metadata=file_metadata(kind))
    tmp_json.write_text(config_record(kind, config))
    swap_in([(tmp_json, config_path(path)), (tmp_weights, path)])
    return path


def remove_stale_temporaries(target: Path) -> None:
    """Remove the temporaries of `target` that a killed export on this machine left: its process is gone, and
    nothing else would ever remove a file the size of the model (24 GB at 12B). A live export's, or one from
    another machine (whose processes cannot be seen from here), is left alone. (Containers that share a host
    name but not a process namespace, exporting to one target on shared storage, would defeat this.)"""
    for prefix in (f"{target.name}{TMP}", f"{target.name}{OLD}{TMP}"):
        for tmp in target.parent.glob(f"{glob.escape(prefix)}*"):
            if owner_gone(tmp.name[len(prefix):]):
                remove(tmp)


def remove(path: Path) -> None:
    """`path`, a file or a folder, gone (if it was there)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def swap_in(moves: list[tuple[Path, Path]]) -> None:
    """Each (temporary, target) of `moves` renamed into place, the earlier export there first moved aside whole and
    removed once all are in: a stop or a kill at any point leaves each target whole, old or new, or absent (a rerun
    writes it again; `remove_stale_temporaries` clears what was moved aside). Removing an earlier folder in place,
    then renaming, was stopped midway by a SIGTERM, and the half-removed export was refused by the rerun the stop
    told the user to make; a kill between a single file's two renames left the new config JSON beside the old
    tensors, which loaded without a word where the shapes agreed."""
    aside = [(target, target.with_name(f"{target.name}{OLD}{TMP}{owner_tag()}")) for _, target in moves]
    for target, old in aside:
        if target.exists():
            os.replace(target, old)
    for tmp, target in moves:
        os.replace(tmp, target)
    for _, old in aside:
        remove(old)


class _StreamedWriter:
    """Tensors, as they come and in any order, into safetensors files planned from a `Layout`, under a
    temporary name renamed at `close`: an interrupted export leaves nothing that looks finished.

    Only the tensor being written is held (planned_safetensors.py), whatever the size of the files.
    Each tensor is cast to the dtype its layout planned (`export_layout`). A disk that does not take them is one
    line naming the target, not the temporary (disk_errors.refused); the caller's `abort` removes what was written.
    """

    def __init__(self, target: Path, layout: Layout, kind: str):
        self.target, self.layout, self.kind = target, layout, kind
        self.tmp = target.with_name(f"{target.name}{TMP}{owner_tag()}")
        self.files: dict[str, PlannedFile] = {}
        remove_stale_temporaries(target)

    def add(self, name: str, tensor: torch.Tensor, first_row: int = 0) -> None:
        """`tensor` as the planned `name`, or as its rows from `first_row` on (PlannedFile.write)."""
        if name not in self.files:
            raise ValueError(f"{name} is not among the {len(self.layout)} tensors planned for {self.target}")
        with refused(self.target):
            self.files[name].write(name, cast(tensor, self.layout[name][1]), first_row)

    def _close_files(self) -> None:
        with refused(self.target):
            for file in dict.fromkeys(self.files.values()):
                file.close()

    def abort(self) -> None:
        """Remove what was written, whatever closing the files says."""
        try:
            for file in dict.fromkeys(self.files.values()):
                file.release()
        finally:
            remove(self.tmp)



class SingleFileWriter(_StreamedWriter):
    """One `.safetensors` file with its config JSON beside (`model.json` for `model.safetensors`)."""

    def __init__(self, path: str | Path, layout: Layout, kind: str):
        check_replaceable(path, kind=kind)  # the kind is known here: a dVAE's file is no place for a Transformer
        super().__init__(Path(path), layout, kind)
        remove_stale_temporaries(config_path(self.target))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        file = PlannedFile(self.tmp, layout, file_metadata(kind))
        self.files = dict.fromkeys(layout, file)

    def close(self, config: Any, before_replace: Callable[[], None] | None = None, record: dict | None = None) -> Path:
        """Write the config JSON (with the keys of `record` beside the config), then put both in place (calling
        `before_replace` first); return the file. What came to `path` while the tensors were written is checked
        again, as at the start."""
        self._close_files()
        try:
            check_replaceable(self.target, kind=self.kind)
        except OutputInTheWay:
            self.abort()
            raise
        tmp_json = self.target.with_name(self.target.name + ".json.tmp")
        with refused(self.target):
            try:
                tmp_json.write_text(config_record(self.kind, config, record))
            except OSError:
                tmp_json.unlink(missing_ok=True)
                raise
        if before_replace is not None:
            before_replace()
        swap_in([(tmp_json, config_path(self.target)), (self.tmp, self.target)])
        return self.target


class ShardedWriter(_StreamedWriter):
    """A folder of shards cut by size in the layout's order (`model-0000k-of-0000N.safetensors`); `close`
    adds the index and config.json."""

    def __init__(self, folder: str | Path, layout: Layout, kind: str, max_shard_bytes: int = 5 << 30):
        super().__init__(Path(folder), layout, kind)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        shards: list[Layout] = [{}]
        size = 0
        for name, (shape, tensor_dtype) in layout.items():
            tensor_bytes = nbytes(shape, tensor_dtype)
            if shards[-1] and size + tensor_bytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = (shape, tensor_dtype)
            size += tensor_bytes
        self.weight_map = {}
        for i, shard in enumerate(shards):
            filename = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            file = PlannedFile(self.tmp / filename, shard, {"format": "pt"})
            self.files.update(dict.fromkeys(shard, file))
            self.weight_map.update(dict.fromkeys(shard, filename))
        self.total_bytes = sum(nbytes(shape, d) for shape, d in layout.values())

    def close(self, config: Any, before_replace: Callable[[], None] | None = None, record: dict | None = None) -> Path:
        """Write the index and config.json (with the keys of `record` beside the config), then put the folder in
        place; return it. `before_replace` is called
        once the new folder is complete, just before an earlier one is touched (a model folder marks itself
        unfinished then: bundle_write.py)."""
        self._close_files()
        index = {"metadata": {"total_size": self.total_bytes, "kind": self.kind}, "weight_map": self.weight_map}
        with refused(self.target):
            (self.tmp / INDEX).write_text(json.dumps(index, indent=1))
            (self.tmp / CONFIG).write_text(config_record(self.kind, config, record))
        if self.target.exists():
            try:
                check_replaceable(self.target, kind=self.kind)
            except OutputInTheWay:
                shutil.rmtree(self.tmp)
                raise
        if before_replace is not None:
            before_replace()
        swap_in([(self.tmp, self.target)])
        return self.target
