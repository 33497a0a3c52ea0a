"""A train-dvae run with a codebook-use term (`dvae.objective.usage_weight` > 0) resumes only at its micro_batch: the
term is each micro-batch's entropy of codes, so 4 x 2 resumed as 8 x 1 trained another objective in silence (its
loss drifted from the uninterrupted run's from the first update after the resume), in the run's own directory and in
a new one resuming its checkpoint. grad_accum may change at the same micro_batch, and without the term so may
micro_batch."""
from megadalle.cli import main

BASE = ["train-dvae", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16", "trainer.ema=null", "logger=none",
        "deepspeed.zero_stage=0", "trainer.warmup_steps=0"]


def run(tmp_path, image_shards, name, *overrides):
    return main([*BASE, f"data.shards={image_shards}", f"run_dir={tmp_path / name}", *overrides])


def test_a_resume_at_another_micro_batch_is_refused_where_the_usage_term_makes_it_another_objective(
        tmp_path, image_shards, capsys):
    assert run(tmp_path, image_shards, "a", "trainer.steps=1", "trainer.micro_batch=4", "trainer.grad_accum=2") == 0
    capsys.readouterr()
    assert run(tmp_path, image_shards, "a", "trainer.steps=2", "trainer.micro_batch=8", "trainer.grad_accum=1") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a'} holds a dVAE run trained with dvae.objective.usage_weight=8.0, whose codebook-use " \
           "term is each micro-batch's: trainer.micro_batch=8 (there 4) would train another objective" in err, err
    assert "keep trainer.micro_batch=4 to resume it" in err
    step = tmp_path / "a" / "checkpoints" / "step_00000001"
    assert run(tmp_path, image_shards, "b", "trainer.steps=2", "trainer.micro_batch=8", "trainer.grad_accum=1",
               f"resume={step}") == 2
    err = capsys.readouterr().err
    assert f"cannot resume {step} with trainer.micro_batch=8: it trained with 4, and its codebook-use term " \
           "(dvae.objective.usage_weight) is each micro-batch's, another objective at another micro_batch; resume " \
           "with trainer.micro_batch=4" in err, err
    assert run(tmp_path, image_shards, "b", "trainer.steps=2", "trainer.micro_batch=4", "trainer.grad_accum=2",
               f"resume={step}") == 0


def test_without_the_usage_term_micro_batch_may_change_at_the_same_global_batch(tmp_path, image_shards, capsys):
    paper = "dvae.objective.usage_weight=0"
    assert run(tmp_path, image_shards, "a", paper, "trainer.steps=1", "trainer.micro_batch=4",
               "trainer.grad_accum=2") == 0
    assert run(tmp_path, image_shards, "a", paper, "trainer.steps=2", "trainer.micro_batch=8",
               "trainer.grad_accum=1") == 0
    assert "at step 1" in capsys.readouterr().out
