"""`megadalle generate`: draw n samples of a prompt, decode them, rerank with CLIP, keep the best.

Samples are drawn in seeded batches; each batch is decoded and scored at once, so only codes
and scores are held for all n (512 images of 256 px would be 400 MB), and the kept ones are
decoded again at the end, `batch_size` at a time (the dVAE's activations take ~0.34 GB per 256 px
image: `keep=512` in one call needed ~175 GB). Outputs: grid.png (best first, row by row),
sample_XX.png for each kept sample (its pixels alone, no frame), and scores.json with every sample's
CLIP score and what reproduces them: the samples depend on the seed, n and batch_size (each batch
draws from its own generator), the dtype and the device, beside the files and settings (`config`).
Each finished batch's codes and scores are saved as it goes (megadalle.sampling.resume): a run that Ctrl-C or
a stop signal ended (megadalle.sampling.stop) continues when the same command is run again.
"""
from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.ema import ema_choice
from megadalle.config.sample import (GenerateConfig, check_models, check_prompt_node, check_request, check_settings,
                                     trained_together)
from megadalle.devices import pick_device, pick_dtype
from megadalle.disk_errors import refused
from megadalle.listed_files import remove_listed_files
from megadalle.outputs import SETTINGS, finished_already, output_folder, stopped, write_record
from megadalle.progress import progress_bar
from megadalle.sampling.files import SamplingFiles, sampling_files
from megadalle.sampling.grid import save_grid, save_image
from megadalle.sampling.loop import SamplingSettings, sample_batches
from megadalle.sampling.memory import check_device_fits
from megadalle.sampling.prompt import check_prompt, warn, warn_if_unknown
from megadalle.sampling.rerank import MegadalleClip, as_reranker, rank
from megadalle.sampling.resume import SavedBatches, open_saved, sampling_key
from megadalle.sampling.stop import SamplingStopped, stops_on_signals


@dataclass
class Generated:
    images: torch.Tensor
    """The kept samples [keep, 3, S, S] in [0, 1], best first."""
    indices: list[int]
    """Their sample numbers (0..n-1)."""
    scores: list[float] | None
    """CLIP scores of all n samples in sample order (None without rerank)."""


@torch.no_grad()
def generate(model, dvae, clip, tokenizer, prompt: str, n: int, keep: int, batch_size: int,
             settings: SamplingSettings, seed: int, progress: bool = True,
             saved: SavedBatches | None = None, verb: str = "generate") -> Generated:
    """Sample `prompt` n times; with `clip` (may be None: megadalle's CLIP or any `rerank.Reranker`, e.g. an
    open_clip model) keep the `keep` best by CLIP score, else the first. Arguments the CLI would refuse are refused
    here too (ConfigError, a ValueError naming the argument). With `saved`, the batches it holds are not drawn
    again, and each batch drawn is added to it as soon as it is scored (megadalle.sampling.resume). Its warnings
    begin with `[verb]`, the command that called it."""
    check_models(model=model, dvae=dvae, tokenizer=tokenizer)
    trained_together(model, dvae, clip, tokenizer)
    n, keep, batch_size, seed = check_request(prompt, n, keep, batch_size, seed)
    check_settings(settings)
    check_prompt(tokenizer, prompt)
    check_device_fits(model, min(batch_size, n))
    device = next(model.parameters()).device
    warn_if_unknown(tokenizer, prompt, verb)
    warn_if_cut(tokenizer, prompt, model.cfg.text_len, "the model", verb)
    text = torch.tensor(tokenizer.encode(prompt, model.cfg.text_len), device=device)
    reranker = as_reranker(clip, tokenizer) if clip is not None else None
    if isinstance(reranker, MegadalleClip):  # scores each batch against the prompt cut to its own text_len
        warn_if_cut(reranker.tokenizer, prompt, reranker.clip.cfg.text_len, "CLIP", verb)
    codes, scores = (list(saved.codes), list(saved.scores)) if saved is not None else ([], [])
    with progress_bar(total=n * model.cfg.grid_len, initial=sum(map(len, codes)) * model.cfg.grid_len, desc="generate",
                      unit=" tok", unit_scale=True, disable=not progress) as bar:  # closed on a stop too: its line ends
        for batch in sample_batches(model, text, n, batch_size, settings, seed, on_token=bar.update,
                                    first_batch=len(codes)):
            codes.append(batch.cpu())
            if reranker is not None:
                scores.append(reranker.scores(decode(dvae, batch, model.cfg.grid_size), prompt).cpu())
            if saved is not None:
                with refused(saved.path, CONTINUES):  # the file holds the batches before this one whole
                    saved.add(codes[-1], scores[-1] if reranker is not None else None)
    codes_all = torch.cat(codes)
    score_all = torch.cat(scores) if clip is not None else None
    best = rank(score_all, keep) if score_all is not None else torch.arange(min(keep, n))
    images = torch.cat([decode(dvae, chunk.to(device), model.cfg.grid_size).cpu()
                        for chunk in codes_all[best].split(batch_size)])
    return Generated(images, best.tolist(), None if score_all is None else score_all.tolist())


def warn_if_cut(tokenizer, prompt: str, text_len: int, reader: str, verb: str = "generate") -> None:
    """Say so when `reader` (the model, or CLIP) cannot read the whole prompt: its end is dropped silently
    otherwise, and the image then ignores the words there, or CLIP ranks the samples without them. The prompt is
    named: evaluate samples many, and "'le' is cut" alone did not say of which."""
    ids = tokenizer.encode(prompt)
    if len(ids) > text_len:
        warn(f"the prompt {prompt!r} is {len(ids)} tokens and {reader} reads {text_len}: "
             f"{tokenizer.decode(ids[text_len:])!r} is cut", verb)


def decode(dvae, codes: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Raster codes [B, H*W] -> images [B, 3, S, S] in [0, 1]."""
    return dvae.decode_codes(codes.view(-1, grid_size, grid_size))


SCORES = "scores.json"
"""Written last: a folder holding one holds a finished generate's results."""

SAMPLE_NAME = re.compile(r"sample_(\d{2}|[1-9]\d{2,})\.png")
"""`sample_name`'s names and no others (sample_07.png, sample_123.png; not sample_7.png or sample_2019_x.png)."""


def sample_name(rank: int) -> str:
    return f"sample_{rank:02d}.png"


def kept_files(record: dict) -> list:
    """The sample files a scores.json lists (kept[].file)."""
    return [entry["file"] for entry in record.get("kept") or []]


CONTINUES = "rerun the same command: it continues from the samples saved so far"
"""What a rerun does after a disk that did not take the results: the batches are saved until scores.json is written."""


WRITING = ".writing.json"
"""The sample files a generate is about to write, listed before the first of them: one killed while writing them
(kill -9, OOM, a lost node) has no scores.json listing them, and the next run in the folder kept them beside its own."""


def write_outputs(result: Generated, output: str | Path, prompt: str, meta: dict) -> Path:
    """grid.png, sample_XX.png and scores.json in `output`; returns the grid's path. The kept samples of an
    earlier run in the same folder go first: the files its scores.json lists, or its `WRITING` (a run killed while
    writing them), of `sample_name`'s names (megadalle.listed_files says why no others), so every sample file
    scores.json lists is this run's, and no other file is touched. The record goes first too, and comes back last: a
    disk that does not take them all is one line (disk_errors), and leaves no record and none of this run's images,
    which the same command writes again."""
    output = Path(output)
    for record in (SCORES, WRITING):
        remove_listed_files(output, record, kept_files, SAMPLE_NAME)
    (output / SCORES).unlink(missing_ok=True)
    written: list[Path] = []
    with refused(then=CONTINUES):
        try:
            write_record(output / WRITING, {"kept": [{"file": sample_name(r)} for r in range(len(result.indices))]})
            written.append(save_grid(result.images, output / "grid.png"))
            for rank_, image in enumerate(result.images):
                written.append(save_image(image, output / sample_name(rank_)))
            kept = [{"rank": r, "sample": i, "file": sample_name(r),
                     "score": None if result.scores is None else result.scores[i]}
                    for r, i in enumerate(result.indices)]
            write_record(output / SCORES, {"prompt": prompt, **meta, "kept": kept, "all_scores": result.scores})
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        finally:
            (output / WRITING).unlink(missing_ok=True)
    return written[0]


RESULT_KEYS = ("keep", "output", "overwrite")
"""GenerateConfig's keys that change which samples are kept or where, not the samples: a rerun that changes them
continues the saved batches (megadalle.sampling.resume)."""


def run(cfg: DictConfig) -> int:
    """`megadalle generate`. Each finished batch is saved as it goes: Ctrl-C (exit code 130) or a stop signal
    (STOPPED_EXIT) ends it with one line, keeping them, and the same command continues (no traceback, and no
    folder left empty); a rerun of a finished one (a sweep's job before the one that stopped) is skipped. The output
    is held (folder_lock) for the whole run: two runs into one folder replaced each other's results without a word."""
    check_prompt_node(cfg.get("prompt"))
    gc = build(GenerateConfig, {**top_level(cfg, GenerateConfig), "seed": cfg.get("seed", 0)}, "")
    device = pick_device(gc.device)
    dtype = pick_dtype(gc.dtype, device)
    saved = None
    try:
        with stops_on_signals(), output_folder(gc.output, verb="generate"):
            files = sampling_files(gc.weights, gc.dvae_weights, gc.tokenizer, gc.clip_weights, gc.clip_model,
                                   gc.rerank, "rerank=false")
            key, older = (sampling_key(gc, files, device, dtype, RESULT_KEYS, earlier) for earlier in (False, True))
            done = {**key, "keep": gc.kept}
            if finished_already(gc.output, SCORES, "generate", gc.overwrite, done, older={**older, "keep": gc.kept}):
                return 0
            saved = open_saved(gc.output, key, gc.batch_size, gc.overwrite, older=older)
            return sample_and_write(gc, files, device, dtype, saved, done)
    except (KeyboardInterrupt, SamplingStopped) as stop:
        kept = (f"{saved.samples} of {gc.n} samples are saved in {saved.path}; the same command continues"
                if saved is not None and saved.samples else None)
        return stopped("generate", gc.output, SCORES, stop, kept)


def sample_and_write(gc: GenerateConfig, files: SamplingFiles, device: torch.device, dtype: torch.dtype,
                     saved: SavedBatches, done: dict) -> int:
    from megadalle.bundle import open_models

    models = open_models(files, ema_choice(gc.ema), device, dtype, lambda words: check_prompt(words, gc.prompt))
    model, dvae, clip, tokenizer = models.transformer, models.dvae, models.reranker, models.tokenizer
    settings = SamplingSettings(gc.temperature, gc.top_k, gc.top_p)
    if saved.samples:
        print(f"[generate] continuing: {saved.samples} of {gc.n} samples are saved in {saved.path}", file=sys.stderr)
    result = generate(model, dvae, clip, tokenizer, gc.prompt, gc.n, gc.kept, gc.batch_size, settings, gc.seed,
                      saved=saved)
    meta = {"n": gc.n, "keep": gc.kept, "batch_size": gc.batch_size, "seed": gc.seed, "sampling": asdict(settings),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "device": str(device),
            "config": asdict(gc), SETTINGS: done}
    grid = write_outputs(result, gc.output, gc.prompt, meta)
    saved.remove()
    best = f"; best CLIP score {result.scores[result.indices[0]]:.3f}" if result.scores else ""
    print(f"[generate] wrote {grid} ({len(result.indices)} of {gc.n} samples){best}")
    return 0
