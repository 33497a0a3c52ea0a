"""`megadalle evaluate`: how good are a trained model's samples? CLIP score, FID and KID, as JSON and Markdown.

For each caption (a text file, or the first non-blank caption line of each sample of image shards)
the Transformer draws `n` samples (`generate`'s sampling, seeded by caption), the dVAE decodes them,
CLIP (megadalle's, or an open_clip reranker, as `generate` reranks) scores every one against its
caption (the mean over all samples, and the mean of each caption's best: what reranking buys), and
a feature extractor (megadalle.fidelity: torch-fidelity's InceptionV3 from a local weights file by
default) turns them into features for FID and KID against the real images of the shards. Samples
are featurised caption by caption and dropped, so memory holds features, not images.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig

from megadalle.caption_unit import mean_se
from megadalle.config import ConfigError, build, check, top_level
from megadalle.config.data import VAL_DIR
from megadalle.config.ema import ema_choice
from megadalle.config.evaluate import EvaluateConfig
from megadalle.data import atomic
from megadalle.data.captions import caption_lines, first_caption
from megadalle.data.images import upscaled_message
from megadalle.devices import pick_device, pick_dtype
from megadalle.disk_errors import refused
from megadalle.fidelity import Extractor, feature_extractor, frechet_distance, kernel_distance
from megadalle.listed_files import remove_listed_files
from megadalle.outputs import SETTINGS, finished_already, output_folder, stopped, write_record
from megadalle.progress import progress_bar
from megadalle.sample import generate
from megadalle.sampling.files import SamplingFiles, sampling_files
from megadalle.sampling.loop import SamplingSettings
from megadalle.sampling.prompt import code_points, ids
from megadalle.sampling.resume import folder_state, sampling_key
from megadalle.sampling.stop import SamplingStopped, stops_on_signals


@dataclass
class Scores:
    captions: int
    samples_per_caption: int
    samples: int = 0
    """Samples drawn (captions x samples_per_caption): those behind the CLIP score and FID."""
    clip_score: float | None = None
    """Mean cosine similarity (CLIP) of every sample with its caption."""
    clip_score_se: float | None = None
    """Standard error of clip_score over captions (caption_unit: a caption's samples are no independent draws);
    None for a single caption."""
    clip_score_best: float | None = None
    """Mean over captions of the best sample's CLIP score (the top of a reranked grid)."""
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    real_images: int = 0
    feature_extractor: str | None = None
    seconds: float = 0.0

    def markdown(self) -> str:
        clip = self.clip_score if self.clip_score_se is None else f"{self.clip_score:.4f} ± {self.clip_score_se:.4f}"
        rows = [("captions", self.captions), ("samples per caption", self.samples_per_caption),
                ("samples (CLIP score, FID)", self.samples),
                ("CLIP score (all samples)", clip), ("CLIP score (best per caption)", self.clip_score_best),
                ("FID", self.fid), ("KID", None if self.kid is None else f"{self.kid:.5f} ± {self.kid_std:.5f}"),
                ("real images", self.real_images), ("feature extractor", self.feature_extractor),
                ("seconds", f"{self.seconds:.1f}")]
        cell = lambda v: "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
        table = "| metric | value |\n|---|---|\n" + "".join(f"| {name} | {cell(v)} |\n" for name, v in rows)
        return table + "".join(f"\n{note}\n" for note in self.notes())

    def notes(self) -> list[str]:
        """What the figures may be compared with. FID's estimate is biased upward, more so the fewer the samples:
        published figures draw 30,000 (50,000 for FID-50k), and a few hundred samples give a larger FID of the
        same model, comparable only with FIDs of the same counts."""
        notes = []
        spreads = [f"CLIP score ± its standard error over the {self.captions} captions (a caption's samples are no "
                   "independent draws)"] if self.clip_score_se is not None else []
        spreads += ["KID ± its standard deviation over subsets"] if self.kid is not None else []
        if spreads:
            notes.append("; ".join(spreads) + ".")
        if self.fid is not None:
            notes.append(f"FID of {self.samples} samples against {self.real_images} real images: biased upward at "
                         "few samples, comparable only with FIDs of the same counts, not with published figures of "
                         "30,000 samples.")
        return notes


def read_captions(cfg: EvaluateConfig) -> list[str]:
    """The captions that may be sampled, read before any model is: a bad file is then one line, not a traceback
    after minutes of loading. A file's are all its captions; shards' those of their first `max_captions` samples
    with one (reading every shard could take long). Which of them the tokenizer reads something of is known once it
    is loaded: `readable_captions` keeps the first `max_captions` of those."""
    if cfg.captions is not None:
        return file_captions(cfg.captions)
    return shard_captions(cfg.shards, cfg.max_captions, say=False)  # said by the read that counts (sample_and_score)


def file_captions(path: str) -> list[str]:
    """The captions of a UTF-8 text file, one a line, read as `prepare` reads a caption file: as utf-8-sig (a
    byte-order mark, from Notepad or Excel, is no part of the first caption) and by `caption_lines` (a line breaks
    at a newline only, not at the U+2028 or form feed inside a scraped caption, and holds visible text)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"captions={path!r}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"captions={path!r}: a directory; give a text file, one caption per line") from None
    except OSError as err:
        raise ConfigError(f"captions={path!r}: cannot be read ({err.strerror})") from None
    captions = caption_lines(text)
    check(bool(captions), "captions", path,
          "every line is blank (or holds only invisible characters, like U+200B); give a text file, one caption a line")
    return captions


def shard_captions(shards: str, limit: int, counts: Callable[[str], bool] = bool, say: bool = True) -> list[str]:
    """Each sample's first caption, for the samples up to the `limit`-th whose caption `counts` (every one by
    default; `sample_and_score` reads again counting those its tokenizer reads something of, so that max_captions
    counts the captions scored: a caption of U+FFFD alone made max_captions=3 score 2 of shards that held more). A
    sample without one is skipped, and counted on stderr where `say`: sampling "" would score an unconditional image
    as if it had a caption."""
    from megadalle.data.reader import iter_samples
    from megadalle.preflight.probes import shard_index

    shard_index("shards", shards)  # a missing, empty or unindexable folder, named by its key
    captions, read, counted = [], 0, 0
    for sample in iter_samples(shards, ["txt"]):
        if counted == limit:
            break
        read += 1
        caption = first_caption(sample.get("txt", ""))
        if caption:
            captions.append(caption)
            counted += counts(caption)
    check(bool(captions), "shards", shards, "no sample has a caption (a non-blank line in its txt field)")
    if say and read > len(captions):
        print(f"[evaluate] shards={shards}: {read - len(captions)} of the first {read} samples have no caption "
              "(a blank txt field); skipped", file=sys.stderr)
    return captions


def note_held_out_split(cfg: EvaluateConfig) -> None:
    """`prepare`'s output holds its training samples at the root and the held-out split in `<output>/val`: evaluate
    reads the root's index, so `shards=<prepare output>` scored the samples the model trained on (their captions,
    and their images as FID's reals) with the held-out split beside them unused. Said once per key that names such
    a folder; the user may mean it (how well the model fits its training set)."""
    for key, folder in (("shards", cfg.shards), ("real", cfg.real)):
        if folder is not None and Path(folder, VAL_DIR, "index.json").is_file():
            held_out = Path(folder, VAL_DIR)
            print(f"[evaluate] {key}={folder} reads its training samples, not its held-out split {held_out}: "
                  f"pass {key}={held_out} to score samples the model did not train on", file=sys.stderr)


def caption_source(cfg: EvaluateConfig) -> str:
    return f"captions={cfg.captions}" if cfg.captions is not None else f"shards={cfg.shards}"


def readable_captions(tokenizer, captions: list[str], source: str, limit: int) -> list[str]:
    """The first `limit` captions the tokenizer reads something of. A caption of characters it drops (U+FFFD,
    its own word mark U+2581) is visible text, yet would be sampled from pads alone: it is skipped like a blank
    line, and counted on stderr; none left is refused. The limit counts the captions kept, not those read: a
    skipped one made max_captions=2 score 1 caption of a file that held 2. Captions left unread past the limit are
    said in one line: a 70-line file scored 64 without a word."""
    readable, skipped = [], []
    for caption in captions:
        if len(readable) == limit:
            break
        (readable if ids(tokenizer, caption) else skipped).append(caption)
    key, _, value = source.partition("=")
    dropped = f"it drops {code_points(''.join(''.join(skipped).split()))}"
    check(bool(readable), key, value, f"the tokenizer reads nothing of any caption ({dropped})")
    if skipped:
        print(f"[evaluate] {source}: {len(skipped)} of the first {len(readable) + len(skipped)} captions hold nothing "
              f"the tokenizer reads ({dropped}); skipped", file=sys.stderr)
    if len(readable) + len(skipped) < len(captions):  # the rest were read, never scored: said, not only by tqdm
        print(f"[evaluate] {source}: scoring the first {len(readable)} of {len(captions)} captions "
              f"(max_captions={limit})", file=sys.stderr)
    return readable


def check_fidelity_inputs(cfg: EvaluateConfig, captions: int) -> None:
    """FID and KID need 2 or more samples and real images: refused before sampling, not by numpy after it. The
    real shards must hold images (token shards from `encode` have none) and at least 2 of them."""
    from megadalle.preflight.probes import image_shards

    if cfg.real_images is None:
        return
    key = "real" if cfg.real else "shards"
    images = image_shards(key, cfg.real_images).total
    check(images >= 2, key, cfg.real_images, f"holds {images} image(s); FID and KID need at least 2 (or fid=false)")
    fits_fidelity_samples(cfg, captions)


def fits_fidelity_samples(cfg: EvaluateConfig, captions: int) -> None:
    """FID and KID of `captions` x n samples: 2 at least. Checked again once the tokenizer has dropped the captions
    it reads nothing of (`sample_and_score`): one caption left was sampled and scored, then a numpy traceback."""
    if cfg.real_images is None:
        return
    check(cfg.n * captions >= 2, "n", cfg.n,
          f"{captions} caption(s) of {cfg.captions or cfg.shards} x n={cfg.n} is {cfg.n * captions} sample(s); FID "
          "and KID need at least 2 (raise n, or fid=false)")


def real_features(shards: str, image_size: int, limit: int, extract: Extractor, batch_size: int) -> torch.Tensor:
    """Features of the first `limit` images of image shards, resized as the dVAE's images are; says how many were
    upscaled (blurry references make FID and KID of sharp samples worse)."""
    from megadalle.data.loader import image_loader

    loader = image_loader(shards, batch_size, image_size, shuffle=False, epochs=1, rank=0, world_size=1)
    feats, count, upscaled = [], 0, 0
    for batch in progress_bar(loader, desc="real images", unit=" batch", leave=False):
        images = batch["image"][: limit - count]
        feats.append(extract(images).float().cpu())
        upscaled += int(batch["upscaled"][: len(images)].sum())
        count += len(images)
        if count >= limit:
            break
    if upscaled:
        said = upscaled_message(shards, upscaled, count, image_size, "real images", "blurry references for FID and KID")
        print(f"[evaluate] {said}", file=sys.stderr)
    return torch.cat(feats)


SAMPLE_FILE = re.compile(r"\d{4,}_\d{3,}\.png")
"""`sample_names`' names: the only files of <output>/samples that a rerun may remove."""


def sample_names(caption_index: int, n: int) -> list[str]:
    return [f"{caption_index:04d}_{k:03d}.png" for k in range(n)]


def sample_index(captions: list[str], n: int, ranked: bool) -> list[dict]:
    """samples/index.json: each caption with its files, and their order: with a CLIP scoring them (`ranked`),
    `<caption>_000.png` is the caption's best sample by CLIP score, not its first drawn; else sample order."""
    order = "CLIP score, best first" if ranked else "sample number"
    return [{"caption": caption, "files": sample_names(i, n), "order": order} for i, caption in enumerate(captions)]


def listed_samples(index: list) -> list:
    """The sample files a samples/index.json lists (each caption's files)."""
    return [name for entry in index for name in entry["files"]]


def clear_earlier_samples(folder: Path) -> None:
    """Remove the samples an earlier evaluate listed in `folder`/index.json, and the index: a rerun with fewer
    captions or samples left the rest beside its own, which an outside judge then read as this run's. Only listed
    files of evaluate's own names go (megadalle.listed_files); any other file stays, and so does the folder unless
    it is left empty."""
    if not remove_listed_files(folder, "index.json", listed_samples, SAMPLE_FILE):
        return
    (folder / "index.json").unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def save_images(images: torch.Tensor, folder: Path, caption_index: int) -> None:
    """Each image [3, S, S] in [0, 1] as `<caption>_<sample>.png` (the pixels only), named by `sample_names`."""
    from megadalle.sampling.grid import save_image

    for name, image in zip(sample_names(caption_index, len(images)), images):
        save_image(image, folder / name)


METRICS = "metrics.json"
"""Written last: a folder holding one holds a finished evaluate's results."""


def clear_earlier_record(output: Path) -> None:
    """Remove an earlier run's metrics.json, then its metrics.md (write_report's order reversed: a stop between the
    two leaves a metrics.md alone, which reads as unfinished, never a metrics.json without its metrics.md). Done
    before the first earlier sample goes, as generate's record goes first: an overwrite stopped midway kept the
    earlier record over samples it had deleted, and a rerun of the earlier command skipped as done already."""
    record = output / METRICS
    record.unlink(missing_ok=True)
    record.with_suffix(".md").unlink(missing_ok=True)


def evaluate(model, dvae, clip, tokenizer, captions: list[str], cfg: EvaluateConfig, extract: Extractor | None,
             progress: bool = True) -> Scores:
    """Sample every caption `cfg.n` times and score the samples (see the module docstring). `clip`: None,
    megadalle's CLIP or any `sampling.rerank.Reranker` (an open_clip model), as `generate` takes it."""
    start = time.perf_counter()
    captions = readable_captions(tokenizer, captions, caption_source(cfg), cfg.max_captions)
    settings = SamplingSettings(cfg.temperature, cfg.top_k, cfg.top_p)
    clear_earlier_record(Path(cfg.output))
    samples = Path(cfg.output) / "samples"
    clear_earlier_samples(samples)
    if cfg.save_samples:  # the index first: a run stopped midway still names its files for the next to clear
        samples.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(samples / "index.json",
                           json.dumps(sample_index(captions, cfg.n, clip is not None), indent=1).encode())
    per_caption, best, fake = [], [], []
    with progress_bar(captions, desc="evaluate", unit=" caption", disable=not progress) as bar:  # closed on a stop too
        for i, caption in enumerate(bar):
            result = generate(model, dvae, clip, tokenizer, caption, cfg.n, cfg.n, cfg.batch_size, settings,
                              cfg.seed + i, progress=False, verb="evaluate")
            if result.scores is not None:
                per_caption.append(sum(result.scores) / len(result.scores))
                best.append(max(result.scores))
            if extract is not None:  # batch_size at a time: Inception on n images at once could exceed the GPU
                fake += [extract(chunk).float().cpu() for chunk in result.images.split(cfg.batch_size)]
            if cfg.save_samples:
                save_images(result.images, samples, i)
    out = Scores(len(captions), cfg.n, len(captions) * cfg.n)
    if per_caption:  # every caption has n samples: the mean of their means is the mean over all samples
        (out.clip_score, out.clip_score_se), out.clip_score_best = mean_se(per_caption), sum(best) / len(best)
    if extract is not None and cfg.real_images is not None:
        reals = real_features(cfg.real_images, dvae.cfg.image_size, cfg.max_real, extract, cfg.batch_size).numpy()
        fakes = torch.cat(fake).numpy()
        out.fid = frechet_distance(reals, fakes)
        out.kid, out.kid_std = kernel_distance(reals, fakes, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
        out.real_images, out.feature_extractor = len(reals), cfg.feature_extractor
    out.seconds = time.perf_counter() - start
    return out


def write_report(scores: Scores, cfg: EvaluateConfig, settings: dict) -> Path:
    """metrics.md, then metrics.json (scores + the settings that produced them: the record, written last) in
    `cfg.output`; returns the JSON. An earlier run's record went before sampling (clear_earlier_record), and this
    run's metrics.md goes again when its record cannot follow (a full disk): no metrics.md of one run beside the
    metrics.json of another, or alone."""
    path = Path(cfg.output) / METRICS
    markdown = atomic.write_bytes(path.with_suffix(".md"), scores.markdown().encode())
    try:
        return write_record(path, {**asdict(scores), "config": asdict(cfg), SETTINGS: settings})
    except BaseException:
        markdown.unlink(missing_ok=True)
        raise


def run(cfg: DictConfig) -> int:
    """Everything a user can get wrong (captions, and what the tokenizer reads of them, real images, output and
    an earlier run's results there, the files and whether they belong together) is checked before any model is
    read; then the CLIP, the dVAE and the Transformer are loaded, the reranker first, so that a bad open_clip
    file fails before a large Transformer has loaded. Ctrl-C (exit code 130) or a stop signal (STOPPED_EXIT: the same
    command starts again) ends it with one line, no traceback, and no folder it made left empty."""
    ec = build(EvaluateConfig, {**top_level(cfg, EvaluateConfig), "seed": cfg.get("seed", 0)}, "")
    captions = read_captions(ec)
    note_held_out_split(ec)
    check_fidelity_inputs(ec, min(len(captions), ec.max_captions))
    extract = feature_extractor(ec.feature_extractor, ec.feature_weights) if ec.real_images else None
    device = pick_device(ec.device)
    try:
        with stops_on_signals(), output_folder(ec.output, verb="evaluate"):
            files = sampling_files(ec.weights, ec.dvae_weights, ec.tokenizer, ec.clip_weights, ec.clip_model,
                                   ec.clip_score, without_clip(ec))
            dtype = pick_dtype(ec.dtype, device)
            settings, older = ({**sampling_key(ec, files, device, dtype, ("output", "overwrite"), earlier),
                                "captions": captions,
                                "real_files": folder_state(ec.real_images, earlier) if ec.real_images else None}
                               for earlier in (False, True))
            if finished_already(ec.output, METRICS, "evaluate", ec.overwrite, settings, older=older):
                return 0
            return sample_and_score(ec, files, captions, extract, device, dtype, settings)
    except (KeyboardInterrupt, SamplingStopped) as stop:
        return stopped("evaluate", ec.output, METRICS, stop)


def without_clip(ec: EvaluateConfig) -> str:
    """The key that does without CLIP, as a missing one's refusal names it."""
    return "clip_score=false" + ("" if ec.fid or ec.save_samples else " with save_samples=true")


def sample_and_score(ec: EvaluateConfig, files: SamplingFiles, captions: list[str], extract: Extractor | None,
                     device: torch.device, dtype: torch.dtype, settings: dict) -> int:
    from megadalle.bundle import open_models

    def keep_readable(words) -> None:  # before any model is read, as the captions file's other checks
        if ec.captions is None:  # on through the shards to max_captions captions the tokenizer reads
            captions[:] = shard_captions(ec.shards, ec.max_captions, lambda caption: bool(ids(words, caption)))
        captions[:] = readable_captions(words, captions, caption_source(ec), ec.max_captions)
        fits_fidelity_samples(ec, len(captions))

    models = open_models(files, ema_choice(ec.ema), device, dtype, keep_readable)
    model, dvae, clip, tokenizer = models.transformer, models.dvae, models.reranker, models.tokenizer
    with refused():  # a full disk, writing the samples or the report: one line (the same command starts again)
        scores = evaluate(model, dvae, clip, tokenizer, captions, ec, extract)
        path = write_report(scores, ec, settings)
    print(scores.markdown() + f"\n[evaluate] wrote {path} and {path.with_suffix('.md').name}")
    return 0


if __name__ == "__main__":  # `python -m megadalle.evaluate ARGS` is `megadalle evaluate ARGS`
    from megadalle.cli import run_verb

    run_verb("evaluate")
