"""`megadalle import-dvae`: OpenAI's released dVAE (the `dall-e` package's files) -> megadalle dVAE weights.

OpenAI ships `encoder.pkl` and `decoder.pkl` as whole modules saved with `torch.save`, so loading
them the usual way (`torch.load(weights_only=False)`) runs whatever the pickle names. Here the
pickle is read by our own restricted unpickler: it admits only the globals that format needs (the
`dall_e` module classes, the torch containers and layers they hold, tensor rebuilding, storage
types, OrderedDict, set, torch.device) and refuses anything else, naming it. No class from the file
is ever instantiated: every module becomes a `Record` holding its attribute dict, the tensors are
rebuilt from the raw storages (torch.save's zip archive, or its pre-1.6 stream format, whose
storages follow the pickle), and the parameters are then mapped by name onto
`models/dvae.py`, whose layout follows OpenAI's (checked block by block below, config derived from
the tensors' shapes, strict loading: nothing left over, nothing missing).

OpenAI's layout (dall_e/encoder.py, decoder.py)      megadalle/models/dvae.py
  blocks.input (Conv2d w, b)                           encoder.net.0 / decoder.embedding (weight, bias)
  blocks.group_G.block_I.id_path                       <side>.net.{groups}.{(G-1)*(blocks+1)+I-1}.id
  blocks.group_G.block_I.res_path.conv_J               ....res.{2J-1} (after its ReLU)
  blocks.output.conv                                   encoder.net.3 / decoder.net.2
"""
from __future__ import annotations

import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from megadalle.config import check
from megadalle.config.dvae import DVAEConfig
from megadalle.errors import UserError

DALL_E_CLASSES = {
    ("dall_e.encoder", "Encoder"), ("dall_e.encoder", "EncoderBlock"),
    ("dall_e.decoder", "Decoder"), ("dall_e.decoder", "DecoderBlock"),
    ("dall_e.utils", "Conv2d"),
    ("torch.nn.modules.container", "Sequential"), ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.pooling", "MaxPool2d"), ("torch.nn.modules.upsampling", "Upsample"),
    ("torch.nn.modules.linear", "Identity"),
}
"""Module classes the files hold; each becomes a Record (never the class itself)."""
STORAGE_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
                  "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ByteStorage": torch.uint8, "BoolStorage": torch.bool, "UntypedStorage": torch.uint8}


class RefusedPickle(UserError, pickle.UnpicklingError):
    """The file names something the dall_e format does not need: it is not loaded."""


class NotADalleFile(UserError, ValueError):
    """The file loads but is not the dall_e module it should be."""


class Record:
    """A module of the file: its class name and its attribute dict, nothing run."""

    qualname = ""

    def child(self, name: str) -> "Record":
        return self.__dict__["_modules"][name]


def _record_class(module: str, name: str) -> type:
    return type(name, (Record,), {"qualname": f"{module}.{name}"})


@dataclass(frozen=True)
class _Storage:
    """A storage the pickle refers to; its bytes are read once unpickling is over (legacy files put them after)."""

    key: str
    dtype: torch.dtype


@dataclass(frozen=True)
class _View:
    """A tensor the pickle rebuilds: a strided view of a storage, materialised by `_materialise`."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> _View:
    return _View(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data


SAFE_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("torch", "device"): torch.device,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""First pickle of torch.save's pre-1.6 format (`_use_new_zipfile_serialization=False`)."""
ZIP_MAGIC = b"PK\x03\x04"
"""First bytes of a zip archive (torch.save's format since 1.6), whose directory is at its end."""


class DalleUnpickler(pickle.Unpickler):
    """Unpickles torch.save's object pickle admitting only the dall_e format's globals; storages stay references."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # torch.save's pickle protocol 2 spelling
        if (module, name) in SAFE_FUNCTIONS:
            return SAFE_FUNCTIONS[(module, name)]
        if (module, name) in DALL_E_CLASSES:
            return _record_class(module, name)
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise RefusedPickle(f"{self.source}: refused to load {module}.{name}: not a class the dall_e dVAE "
                            f"format needs (only its modules, torch layers, tensors and storages are admitted)")

    def persistent_load(self, pid: Any) -> _Storage | type:
        # legacy files also name each module class with its source, for change warnings: the class is already vetted
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and isinstance(pid[1], type) \
                and issubclass(pid[1], Record):
            return pid[1]
        # zip: ("storage", type, key, location, numel); legacy: the same + view_metadata (None for whole storages)
        ok = (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
              and (len(pid) == 5 or pid[5] is None))
        if not ok:
            raise RefusedPickle(f"{self.source}: refused persistent id {str(pid)[:80]!r}: not a tensor storage")
        return self.storages.setdefault(str(pid[2]), _Storage(str(pid[2]), pid[1]))


def _flat(raw: bytes | bytearray, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _cut_short(path: Path, what: str) -> NotADalleFile:
    return NotADalleFile(f"{path}: cut short ({what}); download it again, or copy it again from where it came")


def _read_exactly(f, count: int, path: Path, what: str) -> bytes:
    """`count` bytes of `f`, all of them: a storage cut short read as a shorter tensor (or an empty one)."""
    raw = f.read(count)
    if len(raw) != count:
        raise _cut_short(path, f"{what}: {len(raw)} of its {count} bytes there")
    return raw


def _read_zip(path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise NotADalleFile(f"{path}: expected one */data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as f:
            unpickler = DalleUnpickler(f, str(path))
            root = unpickler.load()
        storages = {key: _flat(archive.read(f"{prefix}data/{key}"), s.dtype) for key, s in unpickler.storages.items()}
    return root, storages


def _read_legacy(path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """Magic number, protocol, sys_info, the objects, the storage keys; then each storage: int64 count, bytes."""
    with open(path, "rb") as f:
        if f.read(4) == ZIP_MAGIC:  # a zip archive's first bytes, and no zip (is_zipfile): its end is missing
            raise _cut_short(path, "a zip archive without its end record")
        f.seek(0)
        if DalleUnpickler(f, str(path)).load() != LEGACY_MAGIC:
            raise NotADalleFile(f"{path}: neither a torch zip archive nor a legacy torch.save file")
        try:
            return _legacy_body(f, path)
        except EOFError:
            raise _cut_short(path, "it ends inside its pickles") from None
        except pickle.UnpicklingError as err:
            if "truncated" not in str(err):  # pickle's own word for data that stops inside an opcode
                raise
            raise _cut_short(path, "it ends inside its pickles") from None


def _legacy_body(f, path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """What follows the magic number: protocol, sys_info, the objects, the storage keys, then the storages."""
    protocol, sys_info = DalleUnpickler(f, str(path)).load(), DalleUnpickler(f, str(path)).load()
    if protocol != 1001 or not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise NotADalleFile(f"{path}: legacy torch format {protocol!r} / {sys_info!r} not understood")
    unpickler = DalleUnpickler(f, str(path))
    root = unpickler.load()
    storages = {}
    for key in DalleUnpickler(f, str(path)).load():
        dtype = unpickler.storages[str(key)].dtype
        count = int.from_bytes(_read_exactly(f, 8, path, f"storage {key}'s length"), "little")
        size = count * torch.empty(0, dtype=dtype).element_size()
        storages[str(key)] = _flat(_read_exactly(f, size, path, f"storage {key}"), dtype)
    return root, storages


def _materialise(record: Record, storages: dict[str, torch.Tensor]) -> None:
    """Replace the record tree's tensor views by tensors (copies, so no storage is shared)."""
    for store in ("_parameters", "_buffers"):
        table = record.__dict__.get(store, {})
        for name, view in table.items():
            if isinstance(view, _View):
                table[name] = torch.as_strided(storages[view.storage.key], view.size, view.stride, view.offset).clone()
    for child in record.__dict__.get("_modules", {}).values():
        if isinstance(child, Record):
            _materialise(child, storages)


def read_dalle_file(path: str | Path) -> Record:
    """The module tree of a `torch.save`d dall_e module (zip or legacy format), read without running anything
    from the file."""
    path = Path(path)
    if not path.is_file():
        raise NotADalleFile(f"no file at {path}")
    try:
        root, storages = (_read_zip if zipfile.is_zipfile(path) else _read_legacy)(path)
    except (RefusedPickle, NotADalleFile):
        raise
    except zipfile.BadZipFile as err:
        raise NotADalleFile(f"{path}: a damaged zip archive ({err}); download it again") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
        raise NotADalleFile(f"{path}: not a torch.save file ({type(err).__name__}: {err})") from None
    if not isinstance(root, Record):
        raise NotADalleFile(f"{path}: holds a {type(root).__name__}, not a dall_e module")
    try:
        _materialise(root, storages)
    except RuntimeError as err:  # a view past the end of its storage
        raise NotADalleFile(f"{path}: a tensor does not fit in its storage ({err})") from None
    return root


def named_tensors(record: Record, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every parameter and buffer of the record tree, like state_dict()."""
    for store in ("_parameters", "_buffers"):
        for name, value in record.__dict__.get(store, {}).items():
            if value is not None:
                yield prefix + name, value
    for name, child in record.__dict__.get("_modules", {}).items():
        if child is not None:
            yield from named_tensors(child, f"{prefix}{name}.")


BLOCK = re.compile(r"^blocks\.group_(\d+)\.block_(\d+)\.(id_path|res_path\.conv_(\d))\.(w|b)$")


def _expect(record: Record, qualname: str, path: Path) -> None:
    if record.qualname != qualname:
        raise NotADalleFile(f"{path}: holds {record.qualname}, expected {qualname}")


def _blocks_per_group(side: Record) -> dict[str, list[str]]:
    """The names of the blocks each group of an encoder or decoder holds, by group name, in order."""
    blocks = side.child("blocks")
    groups = [name for name in blocks.__dict__["_modules"] if name.startswith("group_")]
    return {group: [name for name in blocks.child(group).__dict__["_modules"] if name.startswith("block_")]
            for group in groups}


def _groups(counts: list[int]) -> str:
    return f"{len(counts)} groups of {'/'.join(map(str, sorted(set(counts))))} blocks"


def dalle_config(encoder: Record, decoder: Record, image_size: int) -> DVAEConfig:
    """The DVAEConfig of the pair, read off the tensors' shapes and the group/block counts."""
    enc = encoder.child("blocks")
    groups = _blocks_per_group(encoder)
    enc_blocks = [len(blocks) for blocks in groups.values()]
    dec_blocks = [len(blocks) for blocks in _blocks_per_group(decoder).values()]
    if enc_blocks != dec_blocks:
        raise NotADalleFile(f"encoder and decoder do not belong together: the encoder has {_groups(enc_blocks)}, "
                            f"the decoder {_groups(dec_blocks)}")
    if len(set(enc_blocks)) != 1:
        raise NotADalleFile(f"the encoder's groups hold different numbers of blocks ({enc_blocks}); megadalle's "
                            "dVAE, as dall_e's, has as many in each")
    enc_in = enc.child("input").__dict__["_parameters"]["w"]
    dec_in = decoder.child("blocks").child("input").__dict__["_parameters"]["w"]
    dec_out = decoder.child("blocks").child("output").child("conv").__dict__["_parameters"]["w"]
    enc_out = enc.child("output").child("conv").__dict__["_parameters"]["w"]
    if enc_in.shape[1] != 3 or dec_out.shape[0] != 6:
        raise NotADalleFile(f"expected RGB in and 6 channels out; got {enc_in.shape[1]} in, {dec_out.shape[0]} out")
    if dec_in.shape[1] != enc_out.shape[0] or dec_out.shape[1] != enc_in.shape[0]:
        raise NotADalleFile("encoder and decoder do not belong together (vocabulary or width differ)")
    first, blocks = next(iter(groups.items()))
    post_gain = enc.child(first).child(blocks[0]).__dict__.get("post_gain")
    if post_gain is not None and abs(post_gain - 1 / (len(groups) * len(blocks)) ** 2) > 1e-12:
        raise NotADalleFile(f"post_gain {post_gain} is not 1/(groups x blocks)^2 as megadalle's dVAE computes it")
    return DVAEConfig(image_size=image_size, n_hid=enc_in.shape[0], n_blk_per_group=len(blocks),
                      n_groups=len(groups), vocab_size=enc_out.shape[0], n_init=dec_in.shape[0], eps=0.1)


def rename(name: str, side: str, cfg: DVAEConfig) -> str:
    """An OpenAI parameter name -> its megadalle name (`side` is "encoder" or "decoder")."""
    suffix = {"w": "weight", "b": "bias"}
    if name in ("blocks.input.w", "blocks.input.b"):
        return f"{side}.{'net.0' if side == 'encoder' else 'embedding'}.{suffix[name[-1]]}"
    if name in ("blocks.output.conv.w", "blocks.output.conv.b"):
        return f"{side}.net.{3 if side == 'encoder' else 2}.{suffix[name[-1]]}"
    match = BLOCK.match(name)
    if not match:
        raise NotADalleFile(f"unexpected parameter {name!r} in the {side}")
    group, block, part, conv, wb = match.groups()
    index = (int(group) - 1) * (cfg.n_blk_per_group + 1) + int(block) - 1
    inner = "id" if part == "id_path" else f"res.{2 * int(conv) - 1}"
    return f"{side}.net.{1 if side == 'encoder' else 0}.{index}.{inner}.{suffix[wb]}"


def convert(encoder_path: str | Path, decoder_path: str | Path, image_size: int = 256):
    """(megadalle DVAE in eval mode, its config) from OpenAI's encoder and decoder files."""
    from megadalle.models.dvae import DVAE
    from megadalle.weights import first_of, mismatches

    encoder, decoder = read_dalle_file(encoder_path), read_dalle_file(decoder_path)
    _expect(encoder, "dall_e.encoder.Encoder", Path(encoder_path))
    _expect(decoder, "dall_e.decoder.Decoder", Path(decoder_path))
    cfg = dalle_config(encoder, decoder, image_size)
    check(image_size % cfg.downsample == 0, "image_size", image_size, f"must be a multiple of {cfg.downsample}: "
          f"the files' dVAE halves the image {cfg.n_groups - 1} times (OpenAI's: 256 px, a 32x32 code grid)")
    cfg.validate("dvae")  # the rest of the config is read off the files
    state = {rename(name, side, cfg): tensor.float()
             for side, record in (("encoder", encoder), ("decoder", decoder))
             for name, tensor in named_tensors(record)}
    model = DVAE(cfg)
    wrong = mismatches({name: tuple(t.shape) for name, t in state.items()},
                       {name: tuple(t.shape) for name, t in model.state_dict().items()})
    if wrong:  # the checks above hold, yet the tensors are not those of the dVAE they describe
        raise NotADalleFile(f"{encoder_path} and {decoder_path}: their tensors do not fit the dVAE their shapes "
                            f"describe (n_hid {cfg.n_hid}, {cfg.n_groups} groups of {cfg.n_blk_per_group} blocks, "
                            f"{cfg.vocab_size} codes): {first_of(wrong)}")
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def run(cfg) -> int:
    """`megadalle import-dvae encoder=encoder.pkl decoder=decoder.pkl output=dvae.safetensors`."""
    from megadalle.config import build, top_level
    from megadalle.config.dvae import ImportDVAEConfig
    from megadalle.weights import save_weights

    ic = build(ImportDVAEConfig, top_level(cfg, ImportDVAEConfig), "")
    model, dvae_cfg = convert(ic.encoder, ic.decoder, ic.image_size)
    path = save_weights(ic.output, model.state_dict(), kind="dvae", config=dvae_cfg)
    print(f"[import-dvae] {path} + {path.with_suffix('.json').name}: {dvae_cfg.n_groups} groups x "
          f"{dvae_cfg.n_blk_per_group} blocks, n_hid {dvae_cfg.n_hid}, {dvae_cfg.vocab_size} codes, "
          f"{dvae_cfg.grid_size}x{dvae_cfg.grid_size} grid at {dvae_cfg.image_size} px", file=sys.stderr)
    return 0
