"""The text tokenizer: sentencepiece BPE trained on the shards' captions, and the `Tokenizer` that uses it.

Ids 0-3 are fixed (pad, unk, bos, eos) so that pad = 0 matches TransformerConfig.text_pad_id.
Training uses `hard_vocab_limit=False`: on a small corpus (the demo's few thousand captions) the
requested size is an upper bound and the model may come out smaller (`Tokenizer.vocab_size` is the
real one; the Transformer's text_vocab must be at least that). A size below the number of distinct
characters plus the 4 specials (plus 256 byte pieces with byte_fallback) cannot work and raises an error
naming the minimum.

Only BPE models are accepted: BPE dropout (`bpe_dropout.py`) re-runs BPE merges, so a unigram, word or char
model would be tokenized one way in training and another at generation.
"""
from __future__ import annotations

import io
import itertools
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import sentencepiece as spm
import torch
from omegaconf import DictConfig

from megadalle import stoppable_call
from megadalle.data import atomic
from megadalle.data.bpe_dropout import BpeDropout
from megadalle.data.captions import caption_lines
from megadalle.data.batches import sample_name, unreadable
from megadalle.data.fields import decode_field
from megadalle.data.shards import iter_shard, open_index
from megadalle.disk_errors import refused
from megadalle.errors import UserError
from megadalle.progress import progress_bar

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
from megadalle.config import ConfigError  # noqa: E402
from megadalle.config.data import NORMALIZATIONS  # noqa: E402  (one list for config and code)

MAX_SENTENCE_BYTES = 1 << 30
"""The max_sentence_length training passes, sentencepiece's largest: its default (4192 bytes) silently left
longer captions out of training, so a word found only in long captions never became a piece. Covering every
caption this way costs nothing (it is only a filter) and spares a pass over the shards to find the longest."""


class TokenizerError(UserError, ValueError):
    """A file megadalle cannot tokenize with; callers that know the key prefix it (`data.tokenizer=FILE: ...`). One
    that cannot be read at all names its path (`FILE: cannot be read`, what a Python caller sees); `reason` is the
    message without it, for the callers that name the key."""

    def __init__(self, reason: str, path: str | Path | None = None):
        super().__init__(reason if path is None else f"{path}: {reason}")
        self.reason = reason


def model_type(proto: bytes) -> str:
    """The sentencepiece algorithm a model was trained with (`bpe`, `unigram`, `word`, `char`), from its proto."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    spec = model_pb2.ModelProto.FromString(proto).trainer_spec
    return model_pb2.TrainerSpec.ModelType.Name(spec.model_type).lower()


class Tokenizer:
    """Caption <-> ids with truncation to `text_len` and padding with PAD_ID.

    BPE dropout (`dropout` > 0, `bpe_dropout.py`) draws from a numpy generator seeded by `seed`: the
    same (text, seed) gives the same ids in any process, which is what makes dropout reproducible
    across resumes and workers (the loader seeds by stream position). Picklable (carries the model
    bytes), so DataLoader workers get their own copy.
    """

    def __init__(self, model: str | Path | bytes, add_bos: bool = False, add_eos: bool = False):
        path = None if isinstance(model, bytes) else model
        try:
            self.proto = model if path is None else Path(model).read_bytes()
        except OSError as err:
            raise TokenizerError(f"cannot be read ({err.strerror})", path) from None
        self.add_bos, self.add_eos = add_bos, add_eos
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        except RuntimeError:  # sentencepiece's only answer to bytes that do not parse as its model
            raise TokenizerError("not a sentencepiece model (train one with `megadalle tokenizer`)") from None
        kind = model_type(self.proto)
        if kind != "bpe":
            raise TokenizerError(f"a {kind} sentencepiece model: megadalle's BPE dropout needs model_type=bpe (train "
                                 "one with `megadalle tokenizer`)")
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise TokenizerError(f"special ids pad/unk/bos/eos are {'/'.join(map(str, ids))}, megadalle needs "
                                 f"{PAD_ID}/{UNK_ID}/{BOS_ID}/{EOS_ID} (train one with `megadalle tokenizer`, or give "
                                 f"sentencepiece pad_id={PAD_ID} unk_id={UNK_ID} bos_id={BOS_ID} eos_id={EOS_ID})")
        self.bpe = BpeDropout(self.sp)

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    def encode(self, text: str, text_len: int | None = None, dropout: float = 0.0, seed: int | None = None) -> list[int]:
        """Ids of `text`; with `text_len`, truncated (keeping eos last if added) and padded to exactly text_len."""
        if text_len is None:
            return self._pieces(text, dropout, seed)
        return self.encode_cut(text, text_len, dropout, seed)[0]

    def encode_cut(self, text: str, text_len: int, dropout: float = 0.0,
                   seed: int | None = None) -> tuple[list[int], bool]:
        """`encode`'s ids fitted to text_len, and whether the caption lost tokens to fit: the loaders count
        these, since a caption's last words often carry what the image depends on."""
        if text_len < 0:  # ids[:-3] cut from the end, and the padding was empty: encode(text, -3) gave 2 ids
            raise ValueError(f"text_len={text_len!r}: must be >= 0")
        ids = self._pieces(text, dropout, seed)
        cut = len(ids) > text_len
        if self.add_eos:
            ids = ids[: min(len(ids), text_len) - 1] + [EOS_ID]
        ids = ids[:text_len]
        return ids + [PAD_ID] * (text_len - len(ids)), cut

    def _pieces(self, text: str, dropout: float, seed: int | None) -> list[int]:
        if dropout > 0.0:
            ids = self.bpe.encode(text, dropout, np.random.default_rng(seed))
        else:
            ids = self.sp.encode(text)
        return ([BOS_ID] if self.add_bos else []) + list(ids) + ([EOS_ID] if self.add_eos else [])

    def encode_batch(self, texts: list[str], text_len: int, dropout: float = 0.0, seed: int | None = None) -> torch.Tensor:
        """LongTensor [len(texts), text_len]; with a seed, text i uses seed + i."""
        return self.encode_batch_cut(texts, text_len, dropout, seed)[0]

    def encode_batch_cut(self, texts: list[str], text_len: int, dropout: float = 0.0,
                         seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_batch`'s ids and a BoolTensor [len(texts)]: which captions were cut to fit. One str is refused:
        it was read as a list of its characters, a row each."""
        if isinstance(texts, str):
            raise TypeError(f"texts={texts!r}: expected a list of captions, got one str (encode_batch([text]) "
                            "for one, or encode(text, text_len))")
        pairs = [self.encode_cut(t, text_len, dropout, None if seed is None else seed + i)
                 for i, t in enumerate(texts)]
        return (torch.tensor([ids for ids, _ in pairs], dtype=torch.long),
                torch.tensor([cut for _, cut in pairs], dtype=torch.bool))

    def decode(self, ids) -> str:
        """Text of ids, ignoring pad, bos and eos."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.sp.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def __getstate__(self):
        return {"proto": self.proto, "add_bos": self.add_bos, "add_eos": self.add_eos}

    def __setstate__(self, state):
        self.__init__(state["proto"], state["add_bos"], state["add_eos"])


class UnreadableCaption(ValueError):
    """A caption `iter_captions` cannot read, named; it reaches `train_tokenizer` inside sentencepiece's error text."""


def iter_captions(shards: str | Path) -> Iterator[str]:
    """Every caption of every sample (a sample's `txt` may hold several, one per line), by the rule every reader
    picks captions by (`captions.caption_lines`): the tokenizer learns the captions training will feed it. A caption
    that is not UTF-8 (in tars indexed with decode=false) is named by shard and key: sentencepiece's error named
    neither."""
    for path in open_index(shards).paths():
        for sample in iter_shard(path, ["txt"], decode=False):
            try:
                text = decode_field("txt", sample["txt"])
            except UnicodeDecodeError as err:
                raise UnreadableCaption(f"{sample_name(path, sample['__key__'])}: "
                                        f"{unreadable('caption is not UTF-8', err)}") from None
            yield from caption_lines(text)


def train_tokenizer(shards: str | Path, output: str | Path, vocab_size: int = 16384,
                    normalization: str = "nmt_nfkc_cf", character_coverage: float = 0.9995,
                    max_sentences: int = 10_000_000, byte_fallback: bool = False, seed: int = 0) -> Tokenizer:
    """Train BPE on the captions of a shard directory and write the model to `output` atomically (a disk that does
    not take it: one line, `refused`). sentencepiece trains in a child process (stoppable_call.py): in this one a
    Ctrl-C or a stop signal waited for the training's end."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization={normalization!r}: expected one of {NORMALIZATIONS}")
    total = open_index(shards).total
    try:
        model = stoppable_call.call(train_bpe, str(shards), vocab_size, normalization, character_coverage,
                                    max_sentences, byte_fallback, seed)
    except stoppable_call.ChildDied as died:
        raise UserError(f"the tokenizer's training on {total} samples of {shards} ended with {died.how} before it "
                        f"finished (SIGKILL: the kernel's out-of-memory killer, most often); max_sentences="
                        f"{max_sentences} bounds the captions it holds") from None
    except RuntimeError as err:
        if unread := re.search(rf"{UnreadableCaption.__name__}: (.*)", str(err), re.DOTALL):
            raise UserError(unread.group(1).strip()) from None
        need = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err))
        if need:
            parts = "distinct characters + 4 specials" + (" + 256 byte pieces for byte_fallback" * byte_fallback)
            raise ConfigError(f"vocab_size={vocab_size}: the captions need at least {need.group(1)} pieces "
                              f"({parts}); set vocab_size={need.group(1)} or more") from None
        raise ConfigError(f"sentencepiece training on {total} samples of {shards} failed: {err}") from None
    with refused(output):
        atomic.write_bytes(output, model)
    return Tokenizer(model)


def train_bpe(shards: str, vocab_size: int, normalization: str, character_coverage: float, max_sentences: int,
              byte_fallback: bool, seed: int) -> bytes:
    """The BPE model sentencepiece trains on the shards' captions, as bytes (`train_tokenizer`'s child's work)."""
    captions = progress_bar(iter_captions(shards), desc="tokenizer: reading captions", unit=" lines", mininterval=1.0)
    buf = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, hard_vocab_limit=False,
        normalization_rule_name=normalization, character_coverage=character_coverage,
        input_sentence_size=max_sentences, shuffle_input_sentence=True, byte_fallback=byte_fallback,
        max_sentence_length=MAX_SENTENCE_BYTES, num_threads=os.cpu_count() or 1, minloglevel=2)
    return buf.getvalue()


def caption_lengths(tok: Tokenizer, shards: str | Path, limit: int = 100_000, dropout: float = 0.0) -> dict:
    """Token counts of the first `limit` captions: their median, 99th percentile and maximum; with `dropout`,
    also the 99th percentile and maximum under BPE dropout (`dropout_p99`, `dropout_max`).

    The Transformer and CLIP read `text_len` tokens and drop the rest silently, and a caption's last words
    often carry what the image depends on (where, how many); so `tokenizer` prints these for choosing
    text_len before any training. BPE dropout splits words into more pieces, so a caption that fits exactly
    without it is cut in most of the Transformer's training draws: each caption is drawn once under dropout
    (seeded by its position, so the numbers repeat), as one epoch of training draws it.

    `unknown` counts the captions holding characters outside the vocabulary (character_coverage left them out), read
    as <unk>: the model learns nothing of them, so `tokenizer` says how many, with the first (`unknown_example`)."""
    captions = list(itertools.islice(iter_captions(shards), limit))
    if not captions:
        raise ValueError(f"{shards} holds no captions")
    encoded = [tok.encode(c) for c in captions]
    lengths = np.array([len(ids) for ids in encoded])
    unknown = [c for c, ids in zip(captions, encoded) if UNK_ID in ids]
    stats = {"captions": int(lengths.size), "median": int(np.median(lengths)),
             "p99": int(np.percentile(lengths, 99, method="higher")), "max": int(lengths.max()),
             "unknown": len(unknown), "unknown_example": unknown[0] if unknown else None}
    if dropout > 0.0:
        drawn = np.array([len(tok.encode(c, dropout=dropout, seed=i)) for i, c in enumerate(captions)])
        stats.update(dropout_p99=int(np.percentile(drawn, 99, method="higher")), dropout_max=int(drawn.max()))
    return stats


def unknown_note(tok: Tokenizer, n: dict) -> str:
    """What to say of the captions `caption_lengths` found holding characters the tokenizer reads as <unk>: how many,
    the first and its unknown characters, and the settings that keep them."""
    example = n["unknown_example"]
    chars = "".join(ch for ch in dict.fromkeys(example) if UNK_ID in tok.encode(ch))
    shown = example if len(example) <= 60 else example[:57] + "..."
    share = 100 * n["unknown"] / n["captions"]
    return (f"tokenizer: {n['unknown']} of the first {n['captions']} captions ({share:.1f}%) hold characters the "
            f"tokenizer does not know, read as <unk> (e.g. {shown!r}: {chars!r}); byte_fallback=true or "
            "character_coverage=1 keeps them")


def train_dropout() -> float:
    """`train`'s default data.bpe_dropout (conf/data/tokens.yaml), read where it is set."""
    from omegaconf import OmegaConf

    from megadalle.config.compose import conf_dir

    return float(OmegaConf.load(conf_dir() / "data" / "tokens.yaml").bpe_dropout)


def run(cfg: DictConfig) -> int:
    """`megadalle tokenizer input=SHARDS output=FILE vocab_size=16384`."""
    from megadalle.config import build, top_level
    from megadalle.config.data import TokenizerConfig

    tc = build(TokenizerConfig, top_level(cfg, TokenizerConfig), "")
    tok = train_tokenizer(tc.input, tc.output, tc.vocab_size, tc.normalization, tc.character_coverage,
                          tc.max_sentences, tc.byte_fallback, tc.seed)
    note = "" if tok.vocab_size == tc.vocab_size else f" (asked for {tc.vocab_size}: the corpus supports no more)"
    print(f"tokenizer: wrote {tc.output}, vocabulary {tok.vocab_size}{note}")
    dropout = train_dropout()
    n = caption_lengths(tok, tc.input, dropout=dropout)
    print(f"tokenizer: captions are {n['median']} tokens (median), {n['p99']} (99th percentile), {n['max']} at "
          f"most over the first {n['captions']}; a text_len below that cuts their ends (clip.text_len={n['max']} "
          "keeps them whole)")
    if n["unknown"]:
        print(unknown_note(tok, n))
    if dropout > 0:
        print(f"tokenizer: under train's BPE dropout (data.bpe_dropout={dropout}, one seeded draw per caption) "
              f"they are {n['dropout_p99']} tokens (99th percentile), {n['dropout_max']} at most: model.text_len="
              f"{n['dropout_max']} keeps them whole")
    return 0
