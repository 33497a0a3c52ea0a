"""Weights for users: safetensors plus a JSON of the config that built the model, in two forms.

- one file: `model.safetensors` with `model.json` beside it (small models: the dVAE, CLIP, the demo);
- a folder, the layout Hugging Face tools read: `model-00001-of-0000N.safetensors` shards cut by
  size, `model.safetensors.index.json` whose `weight_map` names each tensor's shard, and
  `config.json`. A 12B model is 24 GB in bf16: shards keep every file, and the memory of whoever
  writes or reads one, a few GB.

Both are self-describing (the JSON names the model kind and carries its config) and load without
pickle; `load_weights` reads either. Training checkpoints (DeepSpeed's format) stay in run directories.

A package because its concepts are looked for separately, one per module, each importing only those listed
above it:

    errors.py    how weights go wrong (another model, none there, output in the way, damaged), one class each
    records.py   the files' names, and the records beside the tensors: the config JSON, the index, the kind;
                 the model folder a path lies in (its manifest's name), which no export but its own writes into
    dtypes.py    the dtype each tensor is written and read in (the export dtypes; integer tensors keep theirs)
    replace.py   what an export may write over: only an earlier export, never a user's other files
    writers.py   `save_weights`, and the streamed writers (one file, or shards) an export goes through
    load.py      `load_weights` and `read_config`: either form, from a file, an index JSON or a folder;
                 `load_into`, a model built from its config and checked against the files before a tensor is
                 read (`check_into`, that check alone, from the files' headers); and `mismatches`, how tensors
                 differ from a model's (import-dvae says it of OpenAI's too)

The names below are those its callers (the verbs, preflight, the model folder's modules, train/consolidate.py,
tests) use.
"""
from megadalle.weights.dtypes import DTYPES, as_dtype, export_layout
from megadalle.weights.errors import AmbiguousOutput, OutputInTheWay, WeightsError, WeightsNotFound
from megadalle.weights.load import (check_into, exported_checkpoint, first_of, load_into, load_weights, mismatches,
                                    read_config, read_source, shard_of)
from megadalle.weights.records import INDEX, MANIFEST, SINGLE, SOURCE, config_path, model_folder_around, read_record
from megadalle.weights.replace import check_replaceable, one_file
from megadalle.weights.writers import OLD, TMP, ShardedWriter, SingleFileWriter, save_weights

__all__ = ["DTYPES", "as_dtype", "export_layout", "AmbiguousOutput", "OutputInTheWay", "WeightsError",
           "WeightsNotFound", "check_into", "exported_checkpoint", "first_of", "load_into", "load_weights",
           "mismatches", "read_config", "read_source", "shard_of", "INDEX", "MANIFEST", "SINGLE", "SOURCE",
           "config_path", "model_folder_around", "read_record", "check_replaceable", "one_file", "OLD", "TMP",
           "ShardedWriter", "SingleFileWriter", "save_weights"]
