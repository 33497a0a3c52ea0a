"""Which side of the validation split a sample lands on: one image is one sample whatever the manifest's
shape, and a sample's side depends on that sample alone, never on what else the input holds."""
from __future__ import annotations

import csv
import json

import pytest

from megadalle.data.prepare import prepare
from megadalle.data.shards import iter_samples
from tests.data.conftest import jpeg_bytes
from tests.data.test_prepare import config


def samples(root) -> list[dict]:
    return list(iter_samples(root, ["txt", "json"])) if (root / "index.json").exists() else []


def image_of(sample) -> str:
    return sample["txt"].split(" caption")[0]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_manifest_row_per_caption_gives_one_sample_per_image_on_one_side(tmp_path, kind):
    names = [f"img/{i:02d}.jpg" for i in range(12)]
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(jpeg_bytes((40, 40), i))
    # COCO's order: annotation after annotation, an image's five captions far apart, spelled two ways
    rows = [(("./" if c == 2 else "") + name, f"{name} caption {c}") for c in range(5) for name in names]
    manifest = tmp_path / f"m.{kind}"
    with open(manifest, "w", newline="") as f:
        if kind == "csv":
            csv.writer(f).writerows([("image", "caption"), *rows])
        else:
            f.writelines(json.dumps({"image": image, "caption": caption}) + "\n" for image, caption in rows)
    out = tmp_path / "out"
    summary = prepare(config(manifest, out, val_fraction=0.5), progress=False)
    train, val = samples(out), samples(out / "val")
    assert summary.kept == len(train) + len(val) == 12 and train and val
    assert not {image_of(s) for s in train} & {image_of(s) for s in val}
    for s in train + val:
        assert s["txt"].split("\n") == [f"{image_of(s)} caption {c}" for c in range(5)]
        assert s["json"]["captions"] == 5
    assert [image_of(s) for s in train] == sorted(image_of(s) for s in train)  # first-appearance order
