"""A sweep's job checks (megadalle/sweep_jobs.py): a rerun of a sweep is told from another sweep by its swept
values, not by the order they were given in; and a refusal of a shared place advises sweeping over its key alone
only where that key is swept."""
import pytest
from omegaconf import OmegaConf

from megadalle.config import ConfigError
from megadalle.sweep_jobs import RECORD, check_record, check_shared_places

SWEPT = ["seed", "trainer.lr"]


def recorded(folder, overrides):
    (folder / RECORD).mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / RECORD / "overrides.yaml")
    return (str(folder), "hydra.sweep.dir")


def test_a_rerun_giving_the_swept_keys_in_another_order_continues_its_job(tmp_path):
    """`seed=1,2 trainer.lr=1e-3,3e-4` rerun as `trainer.lr=... seed=...` is the same sweep: refusing it as another
    one would stop a user resuming their own runs."""
    home = recorded(tmp_path / "0", ["trainer.lr=0.001", "model=tiny", "seed=1"])
    check_record(home, 0, ["seed=1", "trainer.lr=0.001", "model=tiny"], SWEPT)


def test_a_job_of_other_swept_values_is_refused_naming_them(tmp_path):
    home = recorded(tmp_path / "0", ["trainer.lr=0.001", "seed=1"])
    with pytest.raises(ConfigError) as refused:
        check_record(home, 0, ["seed=2", "trainer.lr=0.001"], SWEPT)
    assert str(refused.value) == (f"{tmp_path / '0'} holds job 0 of another sweep (trainer.lr=0.001 seed=1); give this "
                                  "sweep a folder of its own: hydra.sweep.dir=<new folder> (or rerun that sweep's "
                                  "values to continue it)")


def test_the_hint_to_sweep_a_key_alone_comes_only_where_that_key_is_swept(tmp_path):
    """Telling a user to sweep over a key they never swept is advice they cannot follow."""
    place = str(tmp_path / "a")
    first = ["output=a", "image_size=16"]
    with pytest.raises(ConfigError) as refused:
        check_shared_places({place: (0, first)}, {place: "output"}, 1, ["output=a", "image_size=32"],
                            ["output", "image_size"])
    assert str(refused.value) == (f"output {place} is shared with job 0 (output=a image_size=16): each would write "
                                  "over the other; sweep over output alone, or give it one value (a place per job "
                                  "under it)")
    with pytest.raises(ConfigError) as refused:
        check_shared_places({place: (0, first)}, {place: "output"}, 1, ["output=a", "image_size=32"], ["image_size"])
    assert str(refused.value) == (f"output {place} is shared with job 0 (image_size=16): each would write over the "
                                  "other")
