"""The sampling settings a user gives (temperature, top_p) reach every token's draw: the sampling loop draws exactly
what a plain reference draws with them, and `megadalle generate temperature=... top_p=...` samples with them.

A setting dropped on the way (the loop passing top_p 1.0, or generate building its settings without top_p) samples
the model's unfiltered distribution: no error, only other images, and scores.json still says what the user asked.
"""
import pytest
import torch

from megadalle.bundle import load_pipeline
from megadalle.config.compose import compose
from megadalle.data.tokenizer import Tokenizer
from megadalle.models.dvae import DVAE
from megadalle.sample import run
from megadalle.sampling.loop import SamplingSettings, batch_generator, sample_codes
from megadalle.weights import save_weights
from tests.sample.tiny_transformer import tiny
from tests.tiny_models import write_tiny_models

PROMPT = "a red circle at the top left"


def reference_codes(model, text: torch.Tensor, temperature: float, top_p: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Codes [B, grid_len] drawn token by token from full forward passes (no cache): softmax(logits / temperature)
    cut to its nucleus (the most likely tokens until their mass reaches top_p), then the exponential race
    argmax(p / E), E ~ Exp(1), that filters.draw documents, with one [B, vocab] draw of `generator` per token."""
    batch, grid_len = text.shape[0], model.cfg.grid_len
    codes = torch.zeros(batch, grid_len, dtype=torch.long)
    for i in range(grid_len):
        _, logits = model(text, codes)  # causal: position i reads only the codes before it
        probs = (logits[:, i].double() / temperature).softmax(-1)
        ranked, order = probs.sort(-1, descending=True)
        in_nucleus = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, ranked.cumsum(-1) - ranked < top_p)
        race = torch.empty(probs.shape).exponential_(generator=generator)
        codes[:, i] = (torch.where(in_nucleus, probs, 0.0) / race.double()).argmax(-1)
    return codes


@pytest.mark.parametrize("temperature,top_p", [(0.7, 0.8), (1.6, 0.5), (1.0, 0.3)])
def test_the_loop_draws_what_a_reference_draws_with_the_same_temperature_and_top_p(temperature, top_p):
    model = tiny("row", "conv")
    text = torch.randint(1, 40, (3, 6), generator=torch.Generator().manual_seed(1))
    text[0, 3:] = 0
    settings = SamplingSettings(temperature=temperature, top_p=top_p)
    got = sample_codes(model, text, settings, batch_generator(7, 0, "cpu"))
    assert torch.equal(got, reference_codes(model, text, temperature, top_p, batch_generator(7, 0, "cpu")))


def greedy_codes(model, text: torch.Tensor) -> torch.Tensor:
    """The argmax continuation [B, grid_len], one full forward pass per token."""
    codes = torch.zeros(text.shape[0], model.cfg.grid_len, dtype=torch.long)
    for i in range(model.cfg.grid_len):
        codes[:, i] = model(text, codes)[1][:, i].argmax(-1)
    return codes


@pytest.fixture
def spread_models(tmp_path):
    """generate's tiny models, the Transformer's weights drawn N(0, 0.3): its initial logits differ by ~1e-3, where
    a greedy reference and the cached sampler could round a near tie apart. Returns (folder, that Transformer)."""
    write_tiny_models(tmp_path)
    model = load_pipeline(tmp_path / "model.safetensors", rerank=False).transformer
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    save_weights(tmp_path / "model.safetensors", model.state_dict(), "transformer", model.cfg)
    return tmp_path, model


@pytest.mark.parametrize("settings", [["top_p=0.01"], ["temperature=0.001", "top_p=1.0"]],
                         ids=["top_p below 1/vocab", "temperature near 0"])
def test_generate_samples_with_the_temperature_and_top_p_it_is_given(spread_models, tmp_path, monkeypatch, settings):
    """top_p below 1 / image_vocab keeps only the most likely token (the most likely one has at least that mass), and a
    temperature near 0 puts all the mass on it: either way every sample is the greedy continuation, whatever the
    seed. Unfiltered, 4 samples of 16 tokens, each of 16 codes, would all be greedy by no chance worth counting."""
    folder, model = spread_models
    decoded = []
    real = DVAE.decode_codes
    monkeypatch.setattr(DVAE, "decode_codes", lambda self, codes: decoded.append(codes.flatten(1)) or real(self, codes))
    assert run(compose("generate", [f"weights={folder / 'model.safetensors'}", f"prompt={PROMPT}", "n=4", "keep=4",
                                    "batch_size=2", "rerank=false", "seed=3", *settings,
                                    f"output={tmp_path / 'out'}"])) == 0
    text = torch.tensor(Tokenizer(folder / "tokenizer.model").encode(PROMPT, model.cfg.text_len))[None]
    assert torch.equal(torch.cat(decoded), greedy_codes(model, text).expand(4, -1))
