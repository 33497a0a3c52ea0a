"""A train-clip run whose losses contrast each micro-batch (`clip.negatives=micro_batch`: micro_batch x data-parallel
ranks pairs) resumes only with that contrast: 8 x 1 resumed as 4 x 2, which README lists as resumable for other runs,
halved it, and its loss and val/loss fell by ln 2 with no word. Under `clip.negatives=update` the layout may change."""
import json
from pathlib import Path

import pytest

from megadalle.cli import main
from megadalle.train.checkpoint import MANIFEST, CheckpointError
from megadalle.train.universal import Layout, keep_objective

from tests.sample.clip_run import clip_overrides


def test_micro_batch_negatives_refuse_another_micro_batch_and_update_negatives_take_it(tmp_path, capsys):
    base = ["train-clip", *clip_overrides(tmp_path, "trainer.steps=1", "trainer.warmup_steps=0")]
    for negatives in ("micro_batch", "update"):
        run = [*base, f"clip.negatives={negatives}", f"run_dir={tmp_path / negatives}"]
        assert main([*run, "trainer.micro_batch=8", "trainer.grad_accum=1"]) == 0
        capsys.readouterr()
        code = main([*run, "trainer.micro_batch=4", "trainer.grad_accum=2", "trainer.steps=2"])
        captured = capsys.readouterr()
        if negatives == "update":
            assert code == 0 and "at step 1" in captured.out, captured.err
            assert "[train-clip] warning: the learning rate at step 1, where the run resumes" in captured.err  # steps=2
            continue
        assert code == 2 and "clip.negatives=micro_batch" in captured.err and "trainer.micro_batch=4 (there 8) would " \
            "contrast 4 x ranks pairs instead of 8 x ranks" in captured.err and "keep trainer.micro_batch=8" in \
            captured.err and "clip.negatives=update from the start" in captured.err, captured.err


def test_micro_batch_negatives_refuse_a_checkpoint_of_another_rank_count(tmp_path, capsys):
    """The loop's resume checks the contrast: a checkpoint whose manifest says 2 data-parallel ranks (rewritten here,
    as a 2-rank run of 8 x 1 would have saved it) is refused on 1, which contrasts half the pairs."""
    run = ["train-clip", *clip_overrides(tmp_path, "trainer.steps=1", "trainer.warmup_steps=0",
                                         "clip.negatives=micro_batch", "trainer.micro_batch=8")]
    assert main(run) == 0
    manifest = tmp_path / "run" / "checkpoints" / "step_00000001" / MANIFEST
    record = json.loads(manifest.read_text())
    record["layout"]["dp_world"] = 2
    manifest.write_text(json.dumps(record))
    capsys.readouterr()
    assert main([*run, "trainer.steps=2"]) == 2
    assert "with trainer.micro_batch=8 on 1 data-parallel ranks: it trained with clip.negatives=micro_batch, each " \
           "loss contrasting trainer.micro_batch x ranks = 8 x 2 = 16 pairs, 8 here" in capsys.readouterr().err


def test_micro_batch_negatives_refuse_another_number_of_pairs_in_any_run_directory(tmp_path, capsys):
    """A new run directory resuming the run's checkpoint (no run.json to compare) took another micro_batch in
    silence; the checkpoint records it."""
    run = ["train-clip", *clip_overrides(tmp_path, "trainer.steps=1", "trainer.warmup_steps=0",
                                         "clip.negatives=micro_batch", "trainer.micro_batch=8")]
    assert main(run) == 0
    step = tmp_path / "run" / "checkpoints" / "step_00000001"
    capsys.readouterr()
    assert main([*run, "trainer.steps=2", "trainer.micro_batch=4", "trainer.grad_accum=2", f"resume={step}",
                 f"run_dir={tmp_path / 'new'}"]) == 2
    assert f"cannot resume {step} with trainer.micro_batch=4 on 1 data-parallel ranks: it trained with " \
           "clip.negatives=micro_batch, each loss contrasting trainer.micro_batch x ranks = 8 x 1 = 8 pairs, 4 here" \
           in capsys.readouterr().err


CONTRASTED = {"clip.negatives": "micro_batch"}
"""The flattened config of a CLIP run whose losses contrast each micro-batch."""


def test_micro_batch_negatives_keep_the_pairs_of_each_loss():
    saved = Layout(dp_world=2, pipeline_stages=1, zero_stage=1, global_batch=16, micro_batch=8)
    keep_objective(saved, saved, Path("step_00000003"), CONTRASTED)
    keep_objective(saved, Layout(4, 1, 1, 16, micro_batch=4), Path("step_00000003"), CONTRASTED)  # 4 x 4 = 8 x 2
    keep_objective(saved, Layout(1, 1, 1, 16, micro_batch=8), Path("step_00000003"), {})
    with pytest.raises(CheckpointError, match=r"on 1 data-parallel ranks: it trained with clip.negatives=micro_batch, "
                                              r".* = 16 pairs, 8 here .* resume with trainer.micro_batch=8 on 2 "
                                              r"data-parallel ranks"):
        keep_objective(saved, Layout(1, 1, 1, 16, micro_batch=8), Path("step_00000003"), CONTRASTED)
    old = Layout(dp_world=2, pipeline_stages=1, zero_stage=1, global_batch=16)  # recorded before micro_batch was
    with pytest.raises(CheckpointError, match=r"= 8 x 2 = 16 pairs, 8 here"):
        keep_objective(old, Layout(1, 1, 1, 16, micro_batch=8), Path("step_00000003"), CONTRASTED)
    assert old == Layout(2, 1, 1, 16, micro_batch=8)  # no conversion for another split of the same global batch
