"""The advice a refused elastic resume gives (train/universal.keep_batch): the rank counts it suggests must be
ones that really keep the global batch, and counted in ranks (data-parallel size x pipeline stages), since the
user types them into the launcher as they are."""
from megadalle.train.universal import Layout, keep_batch


def test_a_batch_the_ranks_do_not_divide_suggests_the_four_nearest_divisors_in_ranks_of_every_stage():
    """24 samples on 5 data-parallel ranks of 2 pipeline stages: the divisors of 24 nearest 5 are 4 and 6 (1 away),
    3 (2 away), then 2 and 8 tie at 3 away and the smaller one is kept; each times 2 stages."""
    advice = keep_batch(24, Layout(dp_world=5, pipeline_stages=2, zero_stage=1, global_batch=24))
    assert advice == ("the global batch of 24 is not divisible by 5 data-parallel ranks; resume on a rank count "
                      "whose data-parallel size divides it: 4, 6, 8, 12 ranks")


def test_a_batch_the_ranks_divide_lists_every_micro_batch_and_accumulation_pair():
    advice = keep_batch(12, Layout(dp_world=3, pipeline_stages=2, zero_stage=1, global_batch=12))
    assert advice == ("keep the global batch: trainer.micro_batch * trainer.grad_accum = 4 "
                      "(micro_batch x grad_accum: 1 x 4, 2 x 2, 4 x 1)")
