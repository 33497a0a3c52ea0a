"""The sentencepiece tokenizer: special ids, round trip, truncation, padding, reproducible BPE dropout."""
from __future__ import annotations

import errno
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from megadalle.cli import main
from megadalle.data.digest import sha256
from megadalle.data.tokenizer import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, TokenizerError, caption_lengths,
                                      iter_captions, train_tokenizer)
from megadalle.errors import UserError
from tests.data.conftest import WORDS, jpeg_bytes
from tests.data.sentencepiece_models import captions, sp_model

TEXT = "a small red cat sits on the mat near the big house"


def test_special_ids_and_small_vocab(tokenizer):
    sp = tokenizer.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert tokenizer.vocab_size == 64


def test_round_trip_and_case_folding(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert PAD_ID not in ids and UNK_ID not in ids
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.encode(TEXT.upper()) == ids  # nmt_nfkc_cf folds case


def test_truncation_and_padding(tokenizer):
    full = tokenizer.encode(TEXT)
    assert len(full) > 8
    assert tokenizer.encode(TEXT, 8) == full[:8]
    padded = tokenizer.encode("a cat", 12)
    assert len(padded) == 12 and padded[len(tokenizer.encode("a cat")):] == [PAD_ID] * (12 - len(tokenizer.encode("a cat")))
    assert tokenizer.decode(padded) == "a cat"
    batch = tokenizer.encode_batch([TEXT, "a cat"], 10)
    assert batch.shape == (2, 10) and batch.dtype.is_floating_point is False and batch[1, -1] == PAD_ID


def test_eos_survives_truncation(tokenizer):
    tok = Tokenizer(tokenizer.proto, add_bos=True, add_eos=True)
    ids = tok.encode(TEXT, 6)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and len(ids) == 6
    assert tok.decode(tok.encode("a cat", 10)) == "a cat"


@pytest.mark.parametrize("specials", [False, True])
def test_encode_cut_says_which_captions_lose_tokens(tokenizer, specials):
    """The flag the loaders count (metric captions_cut): set exactly when a piece of the caption is dropped."""
    tok = Tokenizer(tokenizer.proto, add_bos=specials, add_eos=specials)
    whole = len(tok.encode(TEXT))
    for text_len in (whole - 1, whole, whole + 3):
        ids, cut = tok.encode_cut(TEXT, text_len)
        assert ids == tok.encode(TEXT, text_len) and cut == (text_len < whole)
    ids, cut = tok.encode_batch_cut([TEXT, "a cat"], whole - 1)
    assert ids.tolist() == tok.encode_batch([TEXT, "a cat"], whole - 1).tolist() and cut.tolist() == [True, False]


def test_bpe_dropout_is_seeded(tokenizer):
    plain = tokenizer.encode(TEXT, 64)
    draws = [tokenizer.encode(TEXT, 64, dropout=0.5, seed=s) for s in range(6)]
    assert any(d != plain for d in draws)                                      # segmentations change
    assert all(tokenizer.decode(d) == TEXT for d in draws)                     # text does not
    assert draws[3] == tokenizer.encode(TEXT, 64, dropout=0.5, seed=3)         # same seed, same ids
    assert pickle.loads(pickle.dumps(tokenizer)).encode(TEXT, 64, dropout=0.5, seed=3) == draws[3]


def test_bpe_dropout_is_the_same_in_another_process(tokenizer, tmp_path):
    """What a resumed run or another DataLoader worker computes (sentencepiece's own sampling fails this)."""
    (tmp_path / "t.model").write_bytes(tokenizer.proto)
    code = ("from megadalle.data.tokenizer import Tokenizer; "
            f"print(Tokenizer({str(tmp_path / 't.model')!r}).encode({TEXT!r}, 64, dropout=0.5, seed=11))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(tokenizer.encode(TEXT, 64, dropout=0.5, seed=11))


def test_dropout_zero_is_sentencepiece(tokenizer):
    rng = np.random.default_rng(0)
    for text in [" ".join(rng.choice(WORDS, 10)) for _ in range(50)] + ["Unknown Ünïcode 42!", "  spaced   out  "]:
        assert tokenizer.bpe.encode(text, 0.0, rng) == tokenizer.sp.encode(text)


@pytest.mark.parametrize("kind", ["unigram", "word", "char"])
def test_a_model_that_is_not_bpe_is_refused_by_its_type(kind):
    """BPE dropout re-runs BPE merges: on a unigram or word model it gave <unk>s and other splits than generation."""
    with pytest.raises(TokenizerError, match=f"a {kind} sentencepiece model: .* needs model_type=bpe") as err:
        Tokenizer(sp_model(captions(), model_type=kind))
    assert isinstance(err.value, UserError)


def test_files_megadalle_cannot_use_are_user_errors(tmp_path):
    """Each was a traceback (ValueError, RuntimeError, OSError); callers prefix the key (tests/cli, tests/sample)."""
    default_ids = sp_model(captions(), pad_id=-1, unk_id=0, bos_id=1, eos_id=2)  # sentencepiece's defaults
    (tmp_path / "corpus.txt").write_text("a red circle\n")
    for model, expected in ((default_ids, "special ids pad/unk/bos/eos are -1/0/1/2, megadalle needs 0/1/2/3"),
                            (tmp_path / "corpus.txt", "not a sentencepiece model"),
                            (tmp_path / "none.model", "cannot be read")):
        with pytest.raises(TokenizerError, match=re.escape(expected)) as err:
            Tokenizer(model)
        assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_user_defined_symbols_stay_whole_under_dropout():
    """sentencepiece cuts a user-defined piece out before merging: dropout at 0 is sentencepiece's encoding, and
    dropout never splits the piece (it was rebuilt from characters, as <unk>s, before)."""
    tok = Tokenizer(sp_model([c + " <red>" for c in captions()], user_defined_symbols=["<red>"]))
    red = tok.sp.piece_to_id("<red>")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice([*WORDS, "<red>", "x<red>y"], 10)) for _ in range(50)] + ["<red><red> cat", "<red>"]
    for text in texts:
        assert tok.bpe.encode(text, 0.0, rng) == tok.sp.encode(text)
        for seed in range(3):
            ids = tok.encode(text, dropout=0.5, seed=seed)
            assert ids.count(red) == text.count("<red>")
            assert UNK_ID not in tok.encode(text.replace("x", ""), dropout=0.5, seed=seed)  # x alone is unknown
            assert tok.decode(ids) == tok.decode(tok.encode(text))


def test_vocab_too_small_is_a_clear_error(caption_shards, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"vocab_size=8: the captions need at least \d+ pieces"):
        train_tokenizer(caption_shards, tmp_path / "t.model", vocab_size=8)
    assert not (tmp_path / "t.model").exists()
    assert main(["tokenizer", f"input={caption_shards}", f"output={tmp_path / 't.model'}", "vocab_size=8"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar: one line naming the fix, no traceback
    assert err.startswith("megadalle tokenizer: vocab_size=8") and re.search(r"set vocab_size=\d+ or more", err)


def test_the_minimum_size_counts_the_byte_pieces_of_byte_fallback(caption_shards, tmp_path):
    """With byte_fallback the minimum sentencepiece names includes 256 byte pieces: the message says so."""
    with pytest.raises(ValueError, match=r"need at least \d+ pieces \(distinct characters \+ 4 specials \+ 256 byte "
                                         r"pieces for byte_fallback\)"):
        train_tokenizer(caption_shards, tmp_path / "t.model", vocab_size=64, byte_fallback=True)


COVERAGE = "must be in [0.98, 1], the range sentencepiece accepts (1 keeps every character)"
SENTENCES = "must exceed 100, the least sentencepiece samples (it failed with its own internal check)"


@pytest.mark.parametrize("key, value, refusal", [
    ("character_coverage", 0.95, COVERAGE), ("character_coverage", 0.9799, COVERAGE), ("character_coverage", 0.98, None),
    ("character_coverage", 1.0, None), ("character_coverage", 1.01, COVERAGE),
    ("max_sentences", 50, SENTENCES), ("max_sentences", 100, SENTENCES), ("max_sentences", 101, None)])
def test_values_sentencepiece_refuses_are_refused_by_name(caption_shards, tmp_path, capsys, key, value, refusal):
    """character_coverage=0.95 and max_sentences of 1 to 100 passed validation, then failed inside sentencepiece's
    training with its own check, naming no key (it takes coverage 0.98 to 1, and over 100 sentences)."""
    argv = ["tokenizer", f"input={caption_shards}", f"output={tmp_path / 't.model'}", "vocab_size=64", f"{key}={value}"]
    assert main(argv) == (0 if refusal is None else 2)
    if refusal is not None:
        assert capsys.readouterr().err.strip() == f"megadalle tokenizer: {key}={value}: {refusal}"


def test_cli_verb_with_oversized_vocab(caption_shards, tmp_path, capsys):
    out = tmp_path / "tok.model"
    assert main(["tokenizer", f"input={caption_shards}", f"output={out}", "vocab_size=16384"]) == 0
    tok = Tokenizer(out)
    assert 64 < tok.vocab_size < 16384  # the corpus caps it; hard_vocab_limit=False makes that work
    out_text = capsys.readouterr().out
    assert f"vocabulary {tok.vocab_size} (asked for 16384" in out_text
    n = caption_lengths(tok, caption_shards, dropout=0.1)
    assert f"{n['median']} tokens (median), {n['p99']} (99th percentile), {n['max']} at most" in out_text
    assert (f"under train's BPE dropout (data.bpe_dropout=0.1, one seeded draw per caption) they are "
            f"{n['dropout_p99']} tokens (99th percentile), {n['dropout_max']} at most: "
            f"model.text_len={n['dropout_max']} keeps them whole") in out_text
    assert main(["tokenizer", f"input={caption_shards}", f"output={out}", "normalization=lower", "overwrite=true"]) == 2
    assert "normalization='lower'" in capsys.readouterr().err


def test_a_tokenizer_at_output_is_replaced_only_with_overwrite(caption_shards, tmp_path, capsys, monkeypatch):
    """It was replaced in silence, and the runs trained with it then refused the new one by digest (export too). Any
    other file there, or one inside the input shards, is no tokenizer to replace: overwrite=true wrote the model over
    a photo or the shards' index.json."""
    out = tmp_path / "tok.model"
    assert main(["tokenizer", f"input={caption_shards}", f"output={out}", "vocab_size=100"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(spm.SentencePieceTrainer, "train", lambda **kw: pytest.fail("trained over it"))
    assert main(["tokenizer", f"input={caption_shards}", f"output={out}", "vocab_size=90"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"megadalle tokenizer: output={out}: holds a tokenizer already (sha256 {sha256(out)[:12]}), which the runs "
        "trained with it need as it is; give another output=, or overwrite=true to replace it")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8 a photo")
    for output, why in ((tmp_path / "photo.jpg", "an existing file that is no sentencepiece model"),
                        (caption_shards / "index.json", f"inside input={caption_shards}, the shards it reads")):
        assert main(["tokenizer", f"input={caption_shards}", f"output={output}", "overwrite=true"]) == 2
        assert capsys.readouterr().err.startswith(f"megadalle tokenizer: output={output}: {why}")
    monkeypatch.undo()
    assert main(["tokenizer", f"input={caption_shards}", f"output={out}", "vocab_size=90", "overwrite=true"]) == 0
    assert Tokenizer(out).vocab_size == 90 and (tmp_path / "photo.jpg").read_bytes() == b"\xff\xd8 a photo"


def test_without_bpe_dropout_in_train_the_verb_prints_no_dropout_lengths(caption_shards, tmp_path, capsys,
                                                                         monkeypatch):
    import megadalle.data.tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, "train_dropout", lambda: 0.0)  # a conf/data/tokens.yaml edited to 0
    assert main(["tokenizer", f"input={caption_shards}", f"output={tmp_path / 'tok.model'}", "vocab_size=100"]) == 0
    out = capsys.readouterr().out
    assert "tokens (median)" in out and "under train's BPE dropout" not in out


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_an_output_that_cannot_take_the_model_is_refused_before_training(caption_shards, tmp_path, capsys,
                                                                        monkeypatch, where):
    """`output=<a folder>` used to train first, then fail to write (IsADirectoryError) as a traceback."""
    monkeypatch.setattr(spm.SentencePieceTrainer, "train", lambda **kw: pytest.fail("trained before the check"))
    (tmp_path / "tok").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    output = tmp_path / "tok" if where == "folder" else tmp_path / "notes.txt" / "t.model"
    assert main(["tokenizer", f"input={caption_shards}", f"output={output}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"megadalle tokenizer: output={output}: ") and len(err.splitlines()) == 1
    assert (f"a folder; give the file to write (output={output / 'tokenizer.model'})" if where == "folder"
            else f"{tmp_path / 'notes.txt'} is a file, not a folder") in err


def test_training_is_reproducible(caption_shards, tokenizer, tmp_path):
    again = train_tokenizer(caption_shards, tmp_path / "again.model", vocab_size=64)
    assert again.proto == tokenizer.proto == (tmp_path / "again.model").read_bytes()


def test_caption_lengths_count_tokens(caption_shards, tokenizer):
    lengths = sorted(len(tokenizer.encode(c)) for c in iter_captions(caption_shards))
    n = caption_lengths(tokenizer, caption_shards)
    assert n["captions"] == len(lengths) and n["max"] == lengths[-1] and n["median"] <= n["p99"] <= n["max"]
    assert caption_lengths(tokenizer, caption_shards, limit=10)["captions"] == 10


def test_caption_lengths_under_bpe_dropout(caption_shards, tokenizer):
    """A caption of exactly text_len tokens was reported as fitting, though at data.bpe_dropout=0.1 most of its
    training draws are longer and cut: the lengths under dropout are reported too, the same on every call."""
    n = caption_lengths(tokenizer, caption_shards, dropout=0.1)
    assert n == caption_lengths(tokenizer, caption_shards, dropout=0.1)
    assert n["dropout_max"] > n["max"] and n["dropout_p99"] >= n["p99"]
    longest = max(iter_captions(caption_shards), key=lambda c: len(tokenizer.encode(c)))
    cut = [len(tokenizer.encode(longest, dropout=0.1, seed=s)) > n["max"] for s in range(40)]
    assert sum(cut) > len(cut) / 2  # text_len = the plain maximum cuts most draws of the longest caption
    assert "dropout_max" not in caption_lengths(tokenizer, caption_shards)


def test_captions_longer_than_sentencepieces_default_are_learned(tmp_path):
    """sentencepiece skips sentences over max_sentence_length (4192 bytes by default) without a word: a word
    found only in long captions came out as unknown characters."""
    from megadalle.data.shards import ShardWriter

    long = " ".join(f"zebracorn {c}" for c in captions(200, seed=5))  # about 8 kB in one caption line
    assert len(long.encode()) > 4192
    with ShardWriter(tmp_path / "shards") as w:
        for i, text in enumerate([*captions(300), long, long + " again"]):
            w.write({"__key__": f"{i:06d}", "txt": text})
    tok = train_tokenizer(tmp_path / "shards", tmp_path / "tok.model", vocab_size=80)
    assert UNK_ID not in tok.encode("zebracorn") and tok.decode(tok.encode("zebracorn")) == "zebracorn"


def test_the_tokenizer_reads_captions_by_the_readers_rule(tmp_path, monkeypatch):
    """Training's captions are those every reader picks from (captions.caption_lines), not a rule of its own
    (str.splitlines also splits at U+2028, form feeds, U+0085...)."""
    from megadalle.data import tokenizer
    from megadalle.data.captions import caption_lines
    from megadalle.data.shards import ShardWriter, iter_samples

    texts = ["a cat\u2028on a mat", "a dog\x0cin a park\nsecond line", "\u00a0\n  a bird  ", "x\x85y"]
    with ShardWriter(tmp_path / "shards") as w:
        for i, text in enumerate(texts):
            w.write({"__key__": f"{i:06d}", "txt": text})
    shards = tmp_path / "shards"
    assert list(iter_captions(shards)) == [c for s in iter_samples(shards, ["txt"]) for c in caption_lines(s["txt"])]
    monkeypatch.setattr(tokenizer, "caption_lines", lambda text: [text.upper()])
    assert list(iter_captions(shards)) == [t.upper() for t in texts]


def test_captions_holding_characters_outside_the_vocabulary_are_counted_with_an_example(tmp_path, capsys):
    """character_coverage leaves the rarest characters out: they were read as <unk> without a word."""
    from tests.data.conftest import write_counts

    texts = [*captions(1998), "a cat 🐱 on a mat", "قطة على حصيرة"]
    root = write_counts(tmp_path / "shards", [len(texts)], lambda i: {"__key__": f"{i:06d}", "txt": texts[i]})
    assert main(["tokenizer", f"input={root}", f"output={tmp_path / 'tok.model'}", "vocab_size=200"]) == 0
    assert ("tokenizer: 2 of the first 2000 captions (0.1%) hold characters the tokenizer does not know, read as <unk> "
            "(e.g. 'a cat 🐱 on a mat': '🐱'); byte_fallback=true or character_coverage=1 keeps them"
            in capsys.readouterr().out)
    assert main(["tokenizer", f"input={root}", f"output={tmp_path / 'all.model'}", "vocab_size=200",
                 "character_coverage=1"]) == 0
    assert "does not know" not in capsys.readouterr().out


def test_a_model_the_disk_does_not_take_is_one_line(caption_shards, tmp_path, capsys, monkeypatch):
    """The tokenizer's model on a full disk was a traceback."""
    real, out = Path.open, tmp_path / "t.model"

    def full(self, mode="r", *args, **kwargs):
        if "t.model" in self.name and "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full)
    assert main(["tokenizer", f"input={caption_shards}", f"output={out}", "vocab_size=64"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"megadalle tokenizer: cannot write {out} (No space left on device): free space on its disk, then rerun the "
        "same command")
    assert not list(tmp_path.iterdir())


def test_a_caption_that_is_not_utf8_in_tars_indexed_without_decoding_is_named(tmp_path, capsys):
    """sentencepiece's error ("INTERNAL: UnicodeDecodeError ...") named neither the shard nor the sample."""
    import io
    import tarfile

    root = tmp_path / "foreign"
    root.mkdir()
    with tarfile.open(root / "00000.tar", "w") as tar:
        for i in range(6):
            text = f"a red circle number {i}".encode() if i != 3 else "caf\xe9 au lait".encode("latin-1")
            for name, data in ((f"k{i}.jpg", jpeg_bytes((32, 32), i)), (f"k{i}.txt", text)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert main(["index", f"dir={root}", "decode=false", "num_workers=0"]) == 0
    capsys.readouterr()
    assert main(["tokenizer", f"input={root}", f"output={tmp_path / 'tok.model'}", "vocab_size=40"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"megadalle tokenizer: {root / '00000.tar'}:k3: its caption is not UTF-8 (UnicodeDecodeError")
    assert "\n" not in err and not (tmp_path / "tok.model").exists()
