"""`megadalle generate`'s verb-level keys (conf/generate.yaml)."""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from pathlib import PurePath

from omegaconf import MISSING

from megadalle.config import ConfigError, check
from megadalle.config.ema import check_ema

DTYPE_CHOICES = ("auto", "fp32", "bf16")
"""The Transformer's dtype when sampling (megadalle.devices.pick_dtype); the names the export uses."""


DEFAULT_KEEP = 8
"""The grid's samples when `keep` is not given (the paper shows CLIP's best 8 of 512 per caption)."""


@dataclass
class GenerateConfig:
    weights: str = MISSING
    """The Transformer: exported weights (a folder of shards, its index JSON, or one .safetensors + .json) or a
    training run directory (newest checkpoint)."""
    prompt: str = MISSING
    """The caption to draw."""
    n: int = 512
    """Samples drawn (the paper's 512)."""
    keep: int | None = None
    """Best samples by CLIP score written to the grid; null = 8, or all n when fewer are drawn (a keep given
    larger than n is refused)."""
    batch_size: int = 32
    """Samples drawn, decoded and scored together. Each batch has its own generator, seeded from `seed` and the
    batch index, so the samples depend on it: the same seed with another batch_size draws other samples."""
    temperature: float = 1.0
    """Divides the image-token logits before sampling: below 1 sharper (less varied), above 1 flatter."""
    top_k: int = 0
    """Keep the k most likely image tokens at each step; 0 keeps all."""
    top_p: float = 0.9
    """Keep the smallest set of tokens with this much probability; 1.0 keeps all. 0.9: on the demo it kept
    CLIP's reranking from lowering accuracy, which the full distribution did (benchmarks/RESULTS.md, Sampling
    defaults); unlike top_k it means the same at any image vocabulary."""
    dvae_weights: str | None = None
    """The dVAE (weights or run directory); null = a model folder's own (its bundle.json), the one a run directory's
    run.json records, else `dvae.safetensors` beside `weights`."""
    clip_model: str = "megadalle"
    """The reranker: megadalle (its CLIP, from `clip_weights`) or open_clip:<arch> (e.g. open_clip:ViT-B-32, weights
    from the local file `clip_weights`; never downloaded). Not `clip=`: hydra reads that as the `clip` config group."""
    clip_weights: str | None = None
    """CLIP (weights or run directory); null = a model folder's own (its bundle.json), the one a run directory's
    run.json records, else `clip.safetensors` beside `weights`. For open_clip: its state dict (.safetensors, or
    .pt/.bin read with weights_only)."""
    tokenizer: str | None = None
    """The BPE model; null = a model folder's own (its bundle.json), the one a run directory's run.json records
    (data.tokenizer), else `tokenizer.model` beside `weights`."""
    rerank: bool = True
    """Sort by CLIP score; false keeps sample order and needs no CLIP."""
    ema: str = "auto"
    """Which weights of a run directory (`weights`, `dvae_weights`, `clip_weights`): auto = its EMA when it trained
    one (trainer.ema), else its live weights; true = the EMA (refused for a run without one); false = the live
    weights. Exported weights are what they were exported as (ema=true on them is refused)."""
    output: str = "generate"
    """Directory for grid.png, the kept samples and scores.json, and meanwhile for the finished batches
    (unfinished.safetensors), which the same command continues after a stop. In a `-m` sweep, the sweep's
    folder: job i writes to `<output>/<i>` (with no output given, to its job folder
    `<out_dir>/multirun/generate/<i>`)."""
    overwrite: bool = False
    """Replace the results of an earlier generate of other settings in `output` (its scores.json, grid.png and the
    samples it listed; other files stay), and discard the saved batches of an unfinished generate with other
    settings. false refuses either before any model is read. Results of the same settings are done either way:
    the run says so and draws nothing (a stopped sweep's same command skips its finished jobs)."""
    device: str = "auto"
    """auto = cuda when available, else cpu."""
    dtype: str = "auto"
    """The Transformer's: auto = bf16 on a CUDA GPU that has it (half the memory, tensor cores), else fp32 (on a
    CPU bf16's speed depends on the CPU and the batch: megadalle/devices.py); fp32 or bf16 to choose. The dVAE and
    CLIP stay fp32."""
    seed: int = 0
    """Seed of the sampling: the same seed, prompt, weights, batch_size and device give the same samples."""

    @property
    def kept(self) -> int:
        """`keep`, or its default: 8 of the samples drawn, all of them when n < 8."""
        return min(DEFAULT_KEEP, self.n) if self.keep is None else self.keep

    def validate(self, where: str = "") -> None:
        check_request(self.prompt, self.n, self.kept, self.batch_size, self.seed)
        check_sampling(self)


def check_prompt_node(value) -> None:
    """A command line's `prompt` that hydra read as no text: null, or a bracketed caption read as a list. OmegaConf
    said "Incompatible value 'None' for field of type 'str'" or "Cannot convert 'ListConfig' to string", with no way
    out; this names the value, and the quoted form that keeps it as the text typed."""
    from omegaconf import ListConfig

    from megadalle.config.override import override_word

    if value is None:
        raise ConfigError(f"prompt=null: expected one prompt (text); for the word, write "
                          f"{override_word('prompt', 'null')}")
    if isinstance(value, (ListConfig, list)):
        text = f"[{','.join(map(str, value))}]"
        raise ConfigError(f"prompt={text}: hydra reads the brackets as a list, and generate takes one prompt; quote it "
                          f"to keep it as text: {override_word('prompt', text)}")


def check_request(prompt, n, keep, batch_size, seed) -> tuple[int, int, int, int]:
    """What one `generate` call samples: one prompt that is not blank, positive counts, no more kept than drawn (a
    larger keep quietly kept n), an integer seed; returns (n, keep, batch_size, seed) as Python ints. Checked
    for the CLI (GenerateConfig.validate) and for Python callers of megadalle.sample.generate alike, whose
    arguments no schema has typed: a list of prompts or seed=None failed as TypeErrors deep in the tokenizer or
    the sampler, and "" sampled every image from pads alone. A numpy integer is the int it holds (seed=np.int64(0)
    overflowed in the sampler's seed arithmetic); a bool is no count or seed (n=True failed deep in the sampler,
    seed=True sampled as seed 1)."""
    check(isinstance(prompt, str), "prompt", prompt, "expected one prompt (a str); call generate once per prompt")
    check(bool(prompt.strip()), "prompt", prompt, "must not be empty")
    n, keep, batch_size, seed = (_integer(name, value) for name, value in
                                 (("n", n), ("keep", keep), ("batch_size", batch_size), ("seed", seed)))
    for name, value in (("n", n), ("keep", keep), ("batch_size", batch_size)):
        check(value > 0, name, value, "must be positive")
    check(keep <= n, "keep", keep, f"must be at most n={n}, the samples drawn")
    return n, keep, batch_size, seed


def _integer(name: str, value) -> int:
    """`value` as a Python int: an int or a numpy integer (operator.index), never a bool."""
    check(not isinstance(value, bool), name, value, "expected an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(f"{name}={value!r}: expected an integer") from None


PIECES = {"model": ("the Transformer", ("parameters", "cfg"), ".transformer"),
          "dvae": ("the dVAE", ("decode_codes",), ".dvae"),
          "tokenizer": ("a Tokenizer", ("encode", "decode"), ".tokenizer")}
"""generate's model arguments: what each is, what it must have, and the Pipeline attribute that holds it."""


def check_models(**pieces) -> None:
    """generate's `model`, `dvae` and `tokenizer` are the loaded objects, not the CLI's paths to them (a path, or a
    whole Pipeline, failed as an AttributeError deep in the sampler): refused naming the argument and what to
    pass."""
    for name, value in pieces.items():
        what, needs, attribute = PIECES[name]
        if all(hasattr(value, need) for need in needs):
            continue
        got = (f"the path {str(value)!r}" if isinstance(value, (str, PurePath))
               else f"a {type(value).__name__}")
        source = ("pass its" if type(value).__name__ == "Pipeline"
                  else "load it with megadalle.load_pipeline(PATH) and pass its")
        raise ConfigError(f"{name}: expected {what}, got {got}; {source} {attribute}")


def trained_together(model, dvae, clip, tokenizer) -> None:
    """The loaded models, as the verbs check their files (sampling.compatible.check_compatible): a dVAE of a larger
    codebook decoded another model's codes in silence, one of a smaller codebook failed once every sample was drawn,
    and a dVAE given as `model` got through to an AttributeError. A reranker other than megadalle's CLIP (open_clip)
    brings its own tokenizer and is not compared."""
    from megadalle.config.clip import ClipConfig
    from megadalle.config.dvae import DVAEConfig
    from megadalle.config.model import TransformerConfig
    from megadalle.sampling.compatible import check_compatible

    for name, value, config in (("model", model, TransformerConfig), ("dvae", dvae, DVAEConfig)):
        check(isinstance(getattr(value, "cfg", None), config), name, type(value).__name__,
              f"expected {PIECES[name][0]}; pass the Pipeline's {PIECES[name][2]}")
    clip_config = getattr(getattr(clip, "clip", clip), "cfg", None)  # megadalle's CLIP, or wrapped as a reranker
    check_compatible(model.cfg, dvae.cfg, clip_config if isinstance(clip_config, ClipConfig) else None,
                     getattr(tokenizer, "vocab_size", None))


def check_settings(settings) -> None:
    """The sampling settings of `settings` (a SamplingSettings, or a verb's config): its temperature, top_k and
    top_p. Checked for the CLI (check_sampling) and for Python callers of megadalle.sample.generate alike, before
    any sampling: there top_k=-5 and top_p=1.5 were taken silently, and temperature=0 or top_p=0 failed inside the
    first batch, after the prefill."""
    if not all(hasattr(settings, key) for key in ("temperature", "top_k", "top_p")):  # None, a dict: AttributeError
        raise ConfigError(f"settings: expected a megadalle.sampling.loop.SamplingSettings (temperature, top_k, top_p), "
                          f"got {type(settings).__name__}")
    temperature, top_k, top_p = settings.temperature, settings.top_k, settings.top_p
    number = lambda value: isinstance(value, numbers.Real) and not isinstance(value, bool)  # noqa: E731
    check(number(temperature) and 0 < temperature < math.inf, "temperature", temperature,
          "must be positive and finite (inf samples every image token alike, whatever the model says)")
    check(isinstance(top_k, numbers.Integral) and not isinstance(top_k, bool) and top_k >= 0, "top_k", top_k,
          "must be an integer >= 0 (0 keeps every token)")
    check(number(top_p) and 0 < top_p <= 1, "top_p", top_p, "must be in (0, 1]")


def check_sampling(cfg) -> None:
    """The keys the sampling verbs (`generate`, `evaluate`) share: the sampling settings, the reranker, the device,
    the dtype and `ema`. Checked in one place, so that the verbs cannot drift apart (evaluate once handed device=bogus
    to torch)."""
    check_settings(cfg)
    check(cfg.clip_model == "megadalle" or cfg.clip_model.startswith("open_clip:"), "clip_model", cfg.clip_model,
          "expected megadalle or open_clip:<arch>")
    check(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), "device", cfg.device,
          "expected auto, cpu, cuda or cuda:N")
    check(cfg.dtype in DTYPE_CHOICES, "dtype", cfg.dtype, f"expected one of {', '.join(DTYPE_CHOICES)}")
    check_ema(cfg.ema)
