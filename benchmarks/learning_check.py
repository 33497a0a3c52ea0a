"""Does the whole pipeline learn on REAL images? scikit-learn's handwritten digits, through the CLI verbs.

    python benchmarks/learning_check.py                 # full size (minutes on 2 CPU cores)
    python benchmarks/learning_check.py --preset fast   # what tests/eval/test_learning_check.py runs
    python benchmarks/learning_check.py --preset medium # a shorter run for a busy machine

The data set is the 1,797 8x8 scans of handwritten digits (UCI) that scikit-learn ships with
its wheel (no download): each digit is upsampled to 16 px, white ink on black, captioned "the digit
seven". It goes through `prepare` (10% held out for validation), `tokenizer`, `train-dvae`, `encode`,
`train` (with validation loss) and `evaluate save_samples=true` over the ten captions, exactly as a
user would run them. The judge is independent of megadalle: a scikit-learn logistic regression
trained on the real digits (its own accuracy on held-out real digits is printed beside, to show it
can judge), reading each sample shrunk back to 8x8. It prints accuracy against chance (10%), with its standard
error over the ten captions (a caption's samples are no independent draws: megadalle/caption_unit.py), and
writes --json (by default a new benchmarks/learning_check-<UTC time>.json) with the CPU model and the load
average.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from arguments import default_out
from megadalle.caption_unit import mean_se

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 16
"""Side of the images written (8x8 scans, upsampled): a dVAE with 2 groups gives an 8x8 token grid."""


@dataclass(frozen=True)
class Preset:
    dvae_steps: int
    dvae_batch: int
    steps: int
    batch: int
    samples: int
    """Samples per caption (ten captions)."""
    images: int | None = None
    """Use the first this many digits; None = all 1,797."""
    lr: float = 2e-3


PRESETS = {"fast": Preset(dvae_steps=20, dvae_batch=32, steps=30, batch=16, samples=2, images=400),
           "medium": Preset(dvae_steps=50, dvae_batch=32, steps=150, batch=32, samples=10),
           "full": Preset(dvae_steps=300, dvae_batch=32, steps=600, batch=32, samples=10)}
"""fast: CI (seconds on an idle machine); medium: a loaded shared machine; full: the figure to quote."""


def caption(digit: int) -> str:
    return f"the digit {WORDS[digit]}"


def write_digits(folder: Path, limit: int | None = None) -> int:
    """The first `limit` scikit-learn digits (all by default) as `NNNN.png` (16 px RGB) + `NNNN.txt` (caption)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    for i, (scan, label) in enumerate(zip(digits.images[:limit], digits.target[:limit])):
        grey = Image.fromarray((scan * 255 / 16).round().astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
        grey.convert("RGB").save(folder / f"{i:04d}.png")
        (folder / f"{i:04d}.txt").write_text(caption(int(label)))
    return len(digits.images[:limit])


def to_scan(image: Image.Image) -> np.ndarray:
    """A picture back on the scans' scale: grey, 8x8 box average, values 0-16, flattened."""
    grey = np.asarray(image.convert("L").resize((8, 8), Image.BOX), dtype=np.float64)
    return (grey * 16 / 255).ravel()


def train_judge(seed: int = 0):
    """(classifier on real digits, its accuracy on a held-out quarter of them)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # the judge sees the scans as they come back from the pipeline: through the same 16 px round trip
    scans = np.stack([to_scan(Image.fromarray((s * 255 / 16).round().astype(np.uint8)).resize((SIZE, SIZE),
                                                                                             Image.BILINEAR))
                      for s in digits.images])
    x_train, x_test, y_train, y_test = train_test_split(scans, digits.target, test_size=0.25, random_state=seed)
    judge = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return judge, float(judge.score(x_test, y_test))


def judge_samples(judge, samples: Path) -> dict[str, float]:
    """Share of each caption's samples the judge reads as its digit."""
    per = {}
    for entry in json.loads((samples / "index.json").read_text()):
        wanted = WORDS.index(entry["caption"].split()[-1])
        scans = np.stack([to_scan(Image.open(samples / name)) for name in entry["files"]])
        per[entry["caption"]] = float((judge.predict(scans) == wanted).mean())
    return per


def caption_accuracy(per_caption: dict[str, float]) -> tuple[float, float | None]:
    """The mean of the captions' shares and its standard error over the captions, the unit: a caption's samples
    share its errors. A binomial error over all samples (10 a caption) put 26% at ± 4%, where its ten captions
    give ± 12%."""
    return mean_se(list(per_caption.values()))


def verb(*args: str) -> None:
    from megadalle.cli import main

    code = main(list(args))
    if code != 0:
        raise RuntimeError(f"megadalle {' '.join(args)} exited with {code}")


def trainer(group: str, steps: int, batch: int, lr: float) -> list[str]:
    """A short run's settings over the stage's `trainer` group (train-dvae's `dvae` keeps the dVAE's optimiser)."""
    return [f"trainer={group}", f"trainer.steps={steps}", f"trainer.micro_batch={batch}", f"trainer.lr={lr}",
            f"trainer.min_lr={lr / 10}", f"trainer.warmup_steps={max(1, steps // 20)}", "trainer.ema=null",
            f"trainer.log_every={max(1, steps // 5)}", "trainer.checkpoint_every=0", "trainer.keep_checkpoints=1",
            f"trainer.eval_every={max(1, steps // 4)}", "trainer.eval_batches=2", "logger=none", "data.num_workers=0"]


def run_check(work: str | Path, preset: Preset, seed: int = 0, dvae_overrides: tuple[str, ...] = ()) -> dict:
    """Every verb on the digits in `work`; returns accuracy, chance, the judge's own accuracy, stage seconds.

    `seed` seeds every stage that draws (tokenizer, train-dvae, train, evaluate) and the judge, so runs
    over seeds differ in their training as well as their samples; `dvae_overrides` go to train-dvae."""
    work = Path(work)
    times: dict[str, float] = {}

    def stage(name: str, *args: str) -> None:
        began = time.perf_counter()
        verb(*args)
        times[name] = round(time.perf_counter() - began, 1)

    count = write_digits(work / "raw", preset.images)
    stage("prepare", "prepare", f"input={work / 'raw'}", f"output={work / 'shards'}", f"image_size={SIZE}",
          "format=png", "min_side=8", "num_workers=0", "val_fraction=0.1")
    stage("tokenizer", "tokenizer", f"input={work / 'shards'}", f"output={work / 'tokenizer.model'}", "vocab_size=32",
          f"seed={seed}")
    from megadalle.data.tokenizer import Tokenizer
    vocab = Tokenizer(work / "tokenizer.model").vocab_size
    stage("train-dvae", "train-dvae", "dvae=tiny", f"dvae.image_size={SIZE}", "dvae.n_groups=2", "dvae.n_hid=32",
          f"dvae.objective.tau_anneal_steps={preset.dvae_steps}", f"data.shards={work / 'shards'}",
          f"weights={work / 'dvae.safetensors'}", f"run_dir={work / 'runs/dvae'}", f"seed={seed}",
          *trainer("dvae", preset.dvae_steps, preset.dvae_batch, preset.lr), *dvae_overrides)
    stage("encode", "encode", f"dvae_weights={work / 'dvae.safetensors'}", f"input={work / 'shards'}",
          f"output={work / 'tokens'}", "device=cpu")
    stage("train", "train", "model=tiny", "model.text_len=8", f"model.text_vocab={vocab}", "model.grid_size=8",
          "model.image_vocab=128", f"data.shards={work / 'tokens'}", f"data.tokenizer={work / 'tokenizer.model'}",
          "data.bpe_dropout=0.0", f"run_dir={work / 'runs/dalle'}", f"seed={seed}",
          *trainer("tiny", preset.steps, preset.batch, preset.lr))
    (work / "captions.txt").write_text("\n".join(caption(d) for d in range(10)) + "\n")
    stage("evaluate", "evaluate", f"weights={work / 'runs/dalle'}", f"dvae_weights={work / 'dvae.safetensors'}",
          f"tokenizer={work / 'tokenizer.model'}", f"captions={work / 'captions.txt'}", f"n={preset.samples}",
          f"batch_size={preset.samples}", "clip_score=false", "fid=false", "save_samples=true",
          f"output={work / 'evaluate'}", "device=cpu", f"seed={seed}")
    judge, judge_accuracy = train_judge(seed)
    per_caption = judge_samples(judge, work / "evaluate" / "samples")
    accuracy, stderr = caption_accuracy(per_caption)
    val = [r["val/loss"] for r in map(json.loads, (work / "runs/dalle/metrics.jsonl").read_text().splitlines())
           if "val/loss" in r]
    return {"accuracy": accuracy, "chance": 0.1, "stderr": stderr,
            "judge_accuracy_on_real": judge_accuracy, "per_caption": per_caption, "images": count,
            "val_loss_first": val[0], "val_loss_last": val[-1], "seconds": times, "preset": asdict(preset)}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--work", default="outputs/learning_check")
    parser.add_argument("--json", default=default_out("learning_check"))
    parser.add_argument("--seed", type=int, default=0, help="seeds every training stage, the samples and the judge")
    parser.add_argument("--dvae", action="append", default=[], metavar="KEY=VALUE",
                        help="a train-dvae override, e.g. dvae.objective.reconstruction=logit_laplace (repeatable)")
    args = parser.parse_args()
    result = run_check(args.work, PRESETS[args.preset], args.seed, tuple(args.dvae))
    result.update(dvae_overrides=args.dvae, cpu=cpu_model(), threads=int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                  loadavg=Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    print("\n| caption | judged correct |\n|---|---|")
    for name, value in result["per_caption"].items():
        print(f"| {name} | {value:.0%} |")
    print(f"\ncaption accuracy: {result['accuracy']:.0%} ± {result['stderr']:.0%} (chance 10%); the judge reads "
          f"{result['judge_accuracy_on_real']:.0%} of held-out real digits right")
    print(f"validation loss {result['val_loss_first']:.3f} -> {result['val_loss_last']:.3f}; stage seconds "
          f"{result['seconds']}; {result['cpu']}, load {result['loadavg']}")
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
