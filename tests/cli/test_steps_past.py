"""A rerun asking fewer updates than its run's checkpoint has done trains nothing, and says so once: it kept the
checkpoint's weights in silence while run.json (and the demo's record) said the smaller step count."""
import pytest

from megadalle.cli import main


@pytest.mark.distributed
def test_a_rerun_with_fewer_steps_than_its_checkpoint_says_it_trains_nothing(train_overrides, tmp_path, capsys):
    command = ["train", *train_overrides, f"out_dir={tmp_path}", "name=exp"]
    assert main([*command, "trainer.steps=2"]) == 0
    capsys.readouterr()
    assert main([*command, "trainer.steps=1"]) == 0
    printed = capsys.readouterr()
    warning = ("[train] warning: the checkpoint at step 2 is past trainer.steps=1: nothing to train, its weights of "
               "step 2 are used")
    assert printed.err.count(warning) == 1, printed.err
    assert "step 2: loss=" not in printed.out and "finished at step 2" in printed.out
    assert (tmp_path / "transformer" / "exp" / "checkpoints" / "latest").read_text() == "step_00000002"
