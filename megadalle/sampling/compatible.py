"""Do a Transformer, a dVAE, a CLIP and a tokenizer belong together?

Each is trained on its own and any of them can be swapped on the command line (`export dvae_weights=...`,
`generate tokenizer=...`). A dVAE of another grid decodes the sampled codes as the wrong picture without a
word, a smaller codebook fails deep inside its decoder, and a larger one decoded meaningless pictures with exit
code 0: it is another dVAE (`train` refuses token shards of a codebook larger than model.image_vocab, so no model
learnt the codes of one). A tokenizer with more pieces than an embedding table fails on its first out-of-range
id. So `export` and every sampling verb check the four against each other first, from their configs (no weights
read), and say which setting disagrees. A tokenizer of the same size but other contents (retrained in place, or
another corpus's) gives the prompt ids the Transformer never learnt: where a run's run.json or a model folder's
bundle.json records the sha256 of its tokenizer, the tokenizer is compared with it by content, and so is the
tokenizer a megadalle CLIP records (clip_record.py): a CLIP trained with another tokenizer of the same size read the
prompt as other words and reranked by noise. A dVAE of the same grid and codebook but other weights decodes the
samples as other pictures: where the records hold the digest of the dVAE whose codes the Transformer learnt, the
dVAE's reader compares it with that once its weights are read (dvae_record.py), not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from megadalle.config.override import override_word
from megadalle.errors import UserError

if TYPE_CHECKING:
    from megadalle.config.model import TransformerConfig


class IncompatibleModels(UserError, ValueError):
    """Models that cannot sample together; the message names both sides and their values."""


def check_compatible(transformer, dvae, clip=None, tokenizer_vocab: int | None = None,
                     names: dict[str, str] | None = None) -> None:
    """`transformer` (TransformerConfig), `dvae` (DVAEConfig), `clip` (ClipConfig of megadalle's CLIP, or None
    for none or an open_clip model, which brings its own tokenizer) and the tokenizer's number of pieces;
    `names` says where each came from (a path), for the message."""
    problems = mismatches(transformer, dvae, clip, tokenizer_vocab, names)
    if problems:
        raise IncompatibleModels("these models were not trained together: " + "; ".join(problems)
                                 + ". Give the dVAE, CLIP and tokenizer the Transformer was trained with "
                                   "(dvae_weights=, clip_weights=, tokenizer=)")


def mismatches(transformer, dvae, clip=None, tokenizer_vocab: int | None = None,
               names: dict[str, str] | None = None) -> list[str]:
    """What `check_compatible` refuses, one phrase each (none when they fit), from the configs alone; `train`
    checks its grids' dVAE against the model it is about to train with these too."""
    names = names or {}
    where = {kind: f" ({names[kind]})" if kind in names else "" for kind in ("transformer", "dvae", "clip", "tokenizer")}
    problems = []
    if dvae.grid_size != transformer.grid_size:
        problems.append(f"the dVAE{where['dvae']} codes {dvae.image_size} px images as a {dvae.grid_size}x"
                        f"{dvae.grid_size} grid, the Transformer{where['transformer']} samples "
                        f"{transformer.grid_size}x{transformer.grid_size} grids")
    if transformer.image_vocab > dvae.vocab_size:
        problems.append(f"the Transformer{where['transformer']} draws codes from 0 to {transformer.image_vocab - 1} "
                        f"(model.image_vocab={transformer.image_vocab}), the dVAE{where['dvae']} decodes "
                        f"{dvae.vocab_size} codes")
    elif transformer.image_vocab < dvae.vocab_size:
        problems.append(f"the dVAE{where['dvae']} has a codebook of {dvae.vocab_size} codes, the Transformer"
                        f"{where['transformer']} learnt {transformer.image_vocab} (model.image_vocab="
                        f"{transformer.image_vocab}): another dVAE than its own, whose codes mean other pictures")
    if tokenizer_vocab is not None:
        from megadalle.data.tokenizer import PAD_ID

        for name, key, model in (("Transformer", "model", transformer), ("CLIP", "clip", clip)):
            if model is None:
                continue
            if tokenizer_vocab > model.text_vocab:
                problems.append(f"the tokenizer{where['tokenizer']} has {tokenizer_vocab} pieces, the {name}"
                                f"{where[name.lower()]} reads {model.text_vocab} ({key}.text_vocab)")
            if model.text_pad_id != PAD_ID:
                problems.append(f"the {name}{where[name.lower()]} pads captions with id {model.text_pad_id}, the "
                                f"tokenizer with {PAD_ID}")
    return problems


@dataclass(frozen=True)
class TokenizerRecord:
    """What a record says of the tokenizer a Transformer trained with."""

    sha256: str
    path: str
    """The tokenizer file it was, when recorded."""
    record: str
    """The record: `RUN/run.json` or `FOLDER/bundle.json`."""


def keyed_config(path, kind: str):
    """`load.model_config`, its refusal (nothing there, weights or a run of another model) naming the verbs' key for
    `kind`: `clip_weights=model/dvae.safetensors: holds a 'dvae' model, not a 'clip' model`."""
    from megadalle.run_pieces import VERB_KEYS
    from megadalle.sampling.load import ModelNotFound, WrongKind, model_config
    from megadalle.weights.errors import WeightsError, WeightsNotFound

    try:
        return model_config(path, kind)
    except (ModelNotFound, WrongKind, WeightsError, WeightsNotFound) as err:
        said = "no weights file or run directory there" if isinstance(err, ModelNotFound) else \
            str(err).removeprefix(f"{path} ")
        raise type(err)(f"{VERB_KEYS.get(kind, 'weights')}={path}: {said}") from None


def check_files(transformer, dvae, clip, tokenizer, recorded: TokenizerRecord | None = None,
                transformer_config: TransformerConfig | None = None) -> list[str]:
    """`check_compatible` for models on disk (weights or run directories; `clip` None for no megadalle CLIP),
    their configs read without a tensor: a mismatch is named before a large model's weights are read
    (`transformer_config`: the Transformer's, where the caller has it: export, from the run's task it built). A
    tokenizer megadalle cannot use is refused under its key, `tokenizer`, and so is one whose contents are not
    the `recorded` one's (None: nothing records it, plain weights or a record older than the digests), or not
    the ones the CLIP was trained with (`clip_record`). What passes with a doubt (a CLIP exported before that
    record, a CLIP reading larger images than the dVAE decodes) is returned, for the caller to say once its own
    checks after these have passed too (megadalle.warn.say_all). The dVAE's weights are not compared here: its
    reader does that with the weights it reads (dvae_record.check)."""
    from megadalle.data.digest import sha256
    from megadalle.data.tokenizer import Tokenizer, TokenizerError

    names = {"transformer": str(transformer), "dvae": str(dvae), "tokenizer": str(tokenizer)}
    if clip is not None:
        names["clip"] = str(clip)
    configs = (transformer_config or keyed_config(transformer, "transformer"), keyed_config(dvae, "dvae"),
               None if clip is None else keyed_config(clip, "clip"))
    try:
        vocab = Tokenizer(tokenizer).vocab_size
    except TokenizerError as err:
        raise TokenizerError(f"tokenizer={tokenizer}: {err.reason}") from None
    check_compatible(*configs, vocab, names)
    digest = sha256(tokenizer)
    if recorded is not None and digest != recorded.sha256:
        raise IncompatibleModels(f"tokenizer={tokenizer}: not the tokenizer the Transformer was trained with (sha256 "
                                 f"{digest[:12]}; {recorded.record} records {recorded.path}, sha256 "
                                 f"{recorded.sha256[:12]}): give the tokenizer it was trained with (tokenizer=FILE)")
    if clip is None:
        return []
    warnings = check_clip_tokenizer(clip, tokenizer, digest)
    if configs[2].image_size > configs[1].image_size:
        warnings.append(f"the CLIP ({clip}) reads {configs[2].image_size} px images, the dVAE ({dvae}) decodes "
                        f"{configs[1].image_size} px samples: they are upscaled for it, blurrier than the images it "
                        "trained on")
    return warnings


def check_clip_tokenizer(clip, tokenizer, digest: str) -> list[str]:
    """Refuse the CLIP at `clip` when it records another tokenizer than `tokenizer` (sha256 `digest`): it would
    read the prompt's ids as other words and rank the samples by noise. One that records none is let through with
    the warning returned."""
    from megadalle.sampling import clip_record

    record = clip_record.recorded(clip)
    if record is None:
        return [f"clip_weights={clip} records no tokenizer (exported before train-clip recorded it): not checked "
                f"against tokenizer={tokenizer}; a CLIP trained with another tokenizer ranks the samples by noise"]
    if record.sha256 != digest:
        raise IncompatibleModels(f"clip_weights={clip}: a CLIP trained with another tokenizer than tokenizer="
                                 f"{tokenizer} (sha256 {digest[:12]}; {record.record} records {record.path}, sha256 "
                                 f"{record.sha256[:12]}): it would read the prompt as other words and rank the "
                                 "samples by noise; give the CLIP trained with this tokenizer (clip_weights=), or "
                                 f"train one with {override_word('tokenizer', tokenizer)}")
    return []
