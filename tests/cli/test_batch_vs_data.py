"""A global batch larger than the training set held some samples twice in one update, in silence (for CLIP a
duplicate is a negative of its own caption): every training verb refuses it before it starts, naming the batch, how
it is made and the sample count; a run started without the CLI, at its task's start."""
import pytest

from megadalle.data.order import BatchLargerThanData, check_global_batch
from megadalle.train.task import DataPart
from tests.cli.preflight_run import fails


def test_a_global_batch_up_to_the_sample_count_passes_and_a_larger_one_is_refused():
    check_global_batch(4, 2, 1, 8, "s")
    with pytest.raises(BatchLargerThanData, match=r"^global batch 16 \(trainer.micro_batch=4 x trainer.grad_accum=2 "
                                                  r"x 2 data-parallel ranks\) is larger than the 8 samples of "
                                                  r"data.shards=s: each update would read some samples twice"):
        check_global_batch(4, 2, 2, 8, "s")
    with pytest.raises(BatchLargerThanData, match=r"read some samples twice \(and CLIP contrast fewer pairs than the "
                                                  r"batch holds\); lower"):
        check_global_batch(4, 2, 2, 8, "s", contrastive=True)


def test_each_training_verb_refuses_it_before_it_starts(capsys, image_shards, token_shards):
    """Only CLIP's refusal says what a repeat does to its contrast."""
    clip = fails(capsys, ["train-clip", "clip=tiny", "trainer=tiny", "trainer.micro_batch=9", "logger=none",
                          f"data.shards={image_shards}", f"tokenizer={token_shards[1]}"],
                 "megadalle train-clip: global batch 9 (trainer.micro_batch=9 x trainer.grad_accum=1 x 1 data-parallel "
                 f"rank) is larger than the 8 samples of data.shards={image_shards}")
    dvae = fails(capsys, ["train-dvae", "dvae=tiny", "trainer=tiny", "trainer.grad_accum=3", "logger=none",
                          f"data.shards={image_shards}"],
                 "global batch 12 (trainer.micro_batch=4 x trainer.grad_accum=3")
    shards, tok = token_shards
    train = fails(capsys, ["train", "model=tiny", "trainer=tiny", "trainer.micro_batch=65", "logger=none",
                           f"data.shards={shards}", f"data.tokenizer={tok}"], "is larger than the 64 samples of")
    assert ["CLIP" in err for err in (clip, dvae, train)] == [True, False, False]


def test_the_ranks_launched_count(capsys, monkeypatch, image_shards):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    fails(capsys, ["train-dvae", "dvae=tiny", "trainer=tiny", "logger=none", f"data.shards={image_shards}"],
          "global batch 12 (trainer.micro_batch=4 x trainer.grad_accum=1 x 3 data-parallel ranks)")


def test_a_run_started_without_the_cli_is_refused_at_its_task_start(image_shards):
    from megadalle.config.compose import compose
    from megadalle.train.dvae import task_from_config

    task = task_from_config(compose("train-dvae", ["dvae=tiny", f"data.shards={image_shards}"]))
    assert task.data_identity(DataPart(micro_batch=4, grad_accum=1, dp_rank=0, dp_world=2))["global_batch"] == 8
    with pytest.raises(BatchLargerThanData, match="global batch 16 ") as refused:
        task.data_identity(DataPart(micro_batch=4, grad_accum=2, dp_rank=1, dp_world=2))
    assert "CLIP" not in str(refused.value)
