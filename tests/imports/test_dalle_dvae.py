"""`import-dvae`: files in the dall_e package's format convert to a dVAE that computes what dall_e computes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megadalle.cli import main
from megadalle.models.dvae import load_dvae
from megadalle.models.import_dalle import NotADalleFile, RefusedPickle, convert

dall_e = pytest.importorskip("dall_e", reason="the `dall-e` package: pip install --no-deps DALL-E==0.1 (scripts/setup.sh dev installs it)")

VOCAB, IMAGE = 512, 32


@pytest.fixture(scope="module")
def dalle_files(tmp_path_factory):
    """A randomly initialised dall_e Encoder/Decoder (the smallest its validators allow), saved as OpenAI did:
    the whole modules with torch.save."""
    torch.manual_seed(0)
    enc = dall_e.Encoder(n_hid=64, n_blk_per_group=1, vocab_size=VOCAB, use_mixed_precision=False)
    dec = dall_e.Decoder(n_init=32, n_hid=64, n_blk_per_group=1, vocab_size=VOCAB, use_mixed_precision=False)
    with torch.no_grad():  # dall_e's biases start at zero: make them matter to the comparison
        for module in (enc, dec):
            for name, p in module.named_parameters():
                if name.endswith(".b"):
                    p.normal_(std=0.1)
    root = tmp_path_factory.mktemp("dall_e")
    torch.save(enc, root / "encoder.pkl")
    torch.save(dec, root / "decoder.pkl")
    for name, module in (("encoder", enc), ("decoder", dec)):  # torch.save's format before torch 1.6
        torch.save(module, root / f"{name}-legacy.pkl", _use_new_zipfile_serialization=False)
    return root / "encoder.pkl", root / "decoder.pkl", enc, dec


@pytest.mark.parametrize("suffix", ["", "-legacy"])
def test_converted_model_gives_dall_e_codes_and_reconstructions(dalle_files, suffix):
    enc_path, dec_path, enc, dec = dalle_files
    enc_path, dec_path = (p.with_name(p.stem + suffix + ".pkl") for p in (enc_path, dec_path))
    model, cfg = convert(enc_path, dec_path, image_size=IMAGE)
    assert (cfg.n_hid, cfg.n_blk_per_group, cfg.n_groups, cfg.vocab_size, cfg.n_init) == (64, 1, 4, VOCAB, 32)
    images = torch.rand(3, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = enc(dall_e.map_pixels(images))  # dall_e's own forward, as its README uses it
        codes = logits.argmax(dim=1)
        one_hot = F.one_hot(codes, num_classes=VOCAB).permute(0, 3, 1, 2).float()
        reference = dall_e.unmap_pixels(torch.sigmoid(dec(one_hot).float()[:, :3]))
        torch.testing.assert_close(model.logits(images), logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(model.encode(images), codes)
        torch.testing.assert_close(model.decode_codes(codes), reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.stats_to_images(model.decoder(one_hot)), reference, rtol=1e-5, atol=1e-5)


def test_verb_writes_weights_that_load_without_pickle(dalle_files, tmp_path, capsys):
    enc_path, dec_path, enc, _ = dalle_files
    out = tmp_path / "dvae.safetensors"
    assert main(["import-dvae", f"encoder={enc_path}", f"decoder={dec_path}", f"output={out}", f"image_size={IMAGE}"]) == 0
    assert "4x4 grid at 32 px" in capsys.readouterr().err
    images = torch.rand(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        assert torch.equal(load_dvae(out).encode(images), enc(dall_e.map_pixels(images)).argmax(1))
    assert main(["import-dvae", f"encoder={dec_path}", f"decoder={dec_path}", f"output={out}"]) == 2
    assert "holds dall_e.decoder.Decoder, expected dall_e.encoder.Encoder" in capsys.readouterr().err
    assert main(["import-dvae", f"encoder={enc_path}", f"decoder={dec_path}", f"output={out}", "image_size=7"]) == 2
    assert capsys.readouterr().err == "megadalle import-dvae: image_size=7: must be a multiple of 8: the files' dVAE " \
                                      "halves the image 3 times (OpenAI's: 256 px, a 32x32 code grid)\n"  # not dvae.image_size
    assert main(["import-dvae", f"encoder={enc_path}", f"decoder={dec_path}", f"output={out}", f"image_size={IMAGE}"]) == 0
    capsys.readouterr()  # an earlier dVAE is replaced; anything else there is not


def test_the_output_replaces_only_an_earlier_dvaes_weights(dalle_files, tmp_path, capsys):
    """save_weights replaced any file at `output` (a Transformer's weights, a user's JSON beside) in silence."""
    from megadalle.weights import save_weights

    enc_path, dec_path, _, _ = dalle_files
    out = tmp_path / "model.safetensors"
    save_weights(out, {"w": torch.zeros(2)}, "transformer", {"width": 2})
    before = out.read_bytes()
    command = ["import-dvae", f"encoder={enc_path}", f"decoder={dec_path}", f"output={out}", f"image_size={IMAGE}"]
    assert main(command) == 2
    assert capsys.readouterr().err.startswith(f"megadalle import-dvae: output={out}: holds the weights of a "
                                              "'transformer' model")
    assert out.read_bytes() == before
    assert main(["import-dvae", f"encoder={tmp_path / 'nope.pkl'}", f"decoder={dec_path}", f"output={out}"]) == 2
    assert capsys.readouterr().err == f"megadalle import-dvae: encoder={tmp_path / 'nope.pkl'}: no such file\n"


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_anything_else_in_the_pickle_is_refused_by_name(dalle_files, tmp_path):
    marker = tmp_path / "pwned"
    enc_path, dec_path, enc, _ = dalle_files
    enc.payload = _CreatesFile(marker)  # a doctored encoder.pkl: the module carries one more object
    torch.save(enc, tmp_path / "evil.pkl")
    del enc.payload
    with pytest.raises(RefusedPickle, match="refused to load io.open"):
        convert(tmp_path / "evil.pkl", dec_path, image_size=IMAGE)
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(NotADalleFile, match="not a dall_e module"):
        convert(tmp_path / "dict.pt", dec_path)
    (tmp_path / "text.pkl").write_text("hello")
    with pytest.raises(NotADalleFile, match="not a torch.save file"):
        convert(tmp_path / "text.pkl", dec_path)
    enc.payload = _CreatesFile(marker)
    torch.save(enc, tmp_path / "evil-legacy.pkl", _use_new_zipfile_serialization=False)
    del enc.payload
    with pytest.raises(RefusedPickle, match="refused to load io.open"):
        convert(tmp_path / "evil-legacy.pkl", dec_path)
    assert not marker.exists()


def one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.removeprefix("megadalle import-dvae: ").strip()


def test_a_pair_that_does_not_belong_together_is_refused_by_its_blocks(dalle_files, tmp_path, capsys):
    """A decoder of 2 blocks per group beside an encoder of 1 was load_state_dict's 'Unexpected key(s)' traceback;
    a tensor reshaped inside a block, its 'size mismatch' traceback."""
    enc_path, _, enc, _ = dalle_files
    torch.manual_seed(0)
    dec2 = dall_e.Decoder(n_init=32, n_hid=64, n_blk_per_group=2, vocab_size=VOCAB, use_mixed_precision=False)
    torch.save(dec2, tmp_path / "dec2.pkl")
    out = tmp_path / "dvae.safetensors"
    assert main(["import-dvae", f"encoder={enc_path}", f"decoder={tmp_path / 'dec2.pkl'}", f"output={out}",
                 f"image_size={IMAGE}"]) == 2
    assert one_line(capsys) == ("encoder and decoder do not belong together: the encoder has 4 groups of 1 blocks, "
                                "the decoder 4 groups of 2 blocks")
    conv = enc.blocks.group_1.block_1.res_path.conv_1
    saved = conv.w
    conv.w = torch.nn.Parameter(torch.zeros(saved.shape[0] + 1, *saved.shape[1:]))
    torch.save(enc, tmp_path / "enc_reshaped.pkl")
    conv.w = saved
    with pytest.raises(NotADalleFile, match=r"their tensors do not fit the dVAE their shapes describe \(n_hid 64, 4 "
                                            r"groups of 1 blocks, 512 codes\): encoder\.net\.1\.0\.res\.1\.weight "
                                            r"\[17, 64, 3, 3\] where the model has \[16, 64, 3, 3\]"):
        convert(tmp_path / "enc_reshaped.pkl", dalle_files[1], image_size=IMAGE)
    assert not out.exists()


@pytest.mark.parametrize("suffix", ["", "-legacy"])
def test_a_file_cut_short_is_said_to_be(dalle_files, tmp_path, capsys, suffix):
    """A legacy file cut inside its storages gave torch's 'setStorage: ... out of bounds' traceback, or 'not a
    torch.save file (buffer length ...)'; a zip file cut short, 'not a torch.save file (persistent IDs ...)'."""
    enc_path, dec_path, _, _ = dalle_files
    whole = enc_path.with_name(enc_path.stem + suffix + ".pkl").read_bytes()
    cut = tmp_path / "encoder.pkl"
    for length in (len(whole) - 776, len(whole) // 2, 5000):
        cut.write_bytes(whole[:length])
        assert main(["import-dvae", f"encoder={cut}", f"decoder={dec_path}", f"output={tmp_path / 'd.safetensors'}",
                     f"image_size={IMAGE}"]) == 2
        message = one_line(capsys)
        assert message.startswith(f"{cut}: cut short (") and message.endswith(
            "); download it again, or copy it again from where it came"), message
