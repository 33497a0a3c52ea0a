"""What a sampling verb's refusal of another run's saved batches or results says differs
(megadalle.sampling.resume.differences): both values of a setting, and the files behind a setting only where the
setting itself is the same."""
import pytest
import torch

from megadalle.config import ConfigError
from megadalle.sampling.resume import SavedBatches, UNFINISHED, differences, open_saved

EXPORTS = "/scratch/project/exports/2026-12-06/megadalle-finetuned-cc12m-{}/model.safetensors"


def test_an_unfinished_runs_refusal_says_both_long_paths(tmp_path):
    """A difference said over 120 characters was named alone: two ~70-character export paths gave "weights: others
    there", two ordinary prompts "prompt: others there"."""
    there, here = EXPORTS.format("step-1000"), EXPORTS.format("step-2000")
    SavedBatches(tmp_path / UNFINISHED, {"weights": there, "seed": 0}).add(torch.zeros(2, 4, dtype=torch.long), None)
    with pytest.raises(ConfigError) as refused:
        open_saved(tmp_path, {"weights": here, "seed": 0}, 2, overwrite=False)
    assert f"with other settings (weights={there!r} there, {here!r} here); rerun" in str(refused.value)


def test_a_long_list_is_said_shortened():
    there, here = [f"caption {i}" for i in range(100)], [f"caption {i}" for i in range(99)]
    said = differences({"captions": there}, {"captions": here})[1]
    assert said.startswith("captions=['caption 0', 'caption 1', ") and said.count("…") == 2 and len(said) < 150


def test_real_images_newly_given_is_the_difference_not_its_files():
    """The refusal said "the files in real_images changed since" beside "real_images=None there, ...": they were
    never there."""
    there = {"real_images": None, "real_files": None, "weights": "/m", "files": {"weights": "a"}}
    here = {"real_images": "/reals", "real_files": "b", "weights": "/m", "files": {"weights": "a"}}
    assert differences(there, here) == (["real_files", "real_images"], "real_images=None there, '/reals' here", False)
    assert differences({**here, "real_files": "c"}, here)[1:] == ("the files in real_images changed since", True)


def test_the_files_behind_weights_given_otherwise_are_not_said_changed():
    there = {"weights": "/a", "dvae_weights": "/d", "files": {"weights": "a", "dvae_weights": "d"}}
    here = {"weights": "/b", "dvae_weights": "/d", "files": {"weights": "b", "dvae_weights": "e"}}
    assert differences(there, here)[1:] == ("the files behind dvae_weights changed since (a newer checkpoint, another "
                                            "export); weights='/a' there, '/b' here", True)
