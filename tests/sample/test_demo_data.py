"""The demo's data set and its pixel judge: the judge must read ground-truth images right."""
import random

import numpy as np
import torch

from megadalle.demo_data import SHAPES, all_scenes, render, split_scenes, write_dataset
from megadalle.demo_judge import chance, judge, matches


def as_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def test_judge_reads_ground_truth_scenes():
    rng = random.Random(0)
    scenes = all_scenes() * 4
    right = sum(judge(as_tensor(render(s, 32, rng))) == s for s in scenes)
    assert right / len(scenes) >= 0.98


def test_judge_tolerates_noise_and_rejects_blank_or_wrong_images():
    rng = random.Random(1)
    scene = all_scenes()[5]
    noisy = (as_tensor(render(scene, 32, rng)) + 0.05 * torch.randn(3, 32, 32)).clamp(0, 1)
    assert matches(noisy, scene)
    assert judge(torch.ones(3, 32, 32)) is None
    other = next(s for s in all_scenes() if s.shape != scene.shape)
    assert not matches(as_tensor(render(other, 32, rng)), scene)
    assert chance() == 1 / 12


def test_split_holds_out_whole_scenes_and_writer_pairs_files(tmp_path):
    train, held = split_scenes(len(SHAPES), seed=0)
    assert len(held) == len(SHAPES) and not set(train) & set(held)
    assert {s.colour for s in train} == {s.colour for s in all_scenes()}
    write_dataset(tmp_path, held, per_scene=2, size=16, seed=0)
    assert len(list(tmp_path.glob("*.png"))) == len(list(tmp_path.glob("*.txt"))) == 2 * len(held)
    assert (tmp_path / "000000.txt").read_text().strip() == held[0].caption
