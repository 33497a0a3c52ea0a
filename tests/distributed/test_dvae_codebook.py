"""train-dvae's codebook metrics over ranks: a code only another rank chose is alive, the perplexity is that of all
ranks' codes, and `dead_codes` resumes where a 2-rank run left it."""
import json

import pytest

import dist_launch as launch
from dist_dvae_codes_worker import VOCAB
from tests.dvae.conftest import write_image_shards
from tests.rewound_run import rewound_copy


@pytest.mark.distributed
def test_codes_used_on_different_ranks_are_all_alive(tmp_path):
    launch.run(2, {"out": str(tmp_path)}, tmp_path / "logs", script="dist_dvae_codes_worker.py")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # the same metrics on every rank
    assert [r["dead_codes"] for r in ranks[0]] == [0.0, 0.0, 0.0]
    assert [r["perplexity"] for r in ranks[0]] == pytest.approx([VOCAB] * 3)  # half each rank's, all used alike


def train(shards, run, extra=()) -> dict[int, dict]:
    overrides = [f"data.shards={shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16", "trainer.steps=8",
                 "trainer.micro_batch=2", "trainer.grad_accum=2", "trainer.lr=3e-3", "trainer.ema=null",
                 "trainer.checkpoint_every=4", "trainer.log_every=1", "usage_window=2", "logger=none",
                 f"run_dir={run}", *extra]
    launch.run(2, {"overrides": overrides}, run.parent / f"logs-{run.name}", script="dist_dvae_worker.py", timeout=600)
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.distributed
def test_dead_codes_resume_on_two_ranks_as_the_uninterrupted_run_counts_them(tmp_path):
    shards = tmp_path / "shards"
    write_image_shards(shards, 32, 32, 16)
    whole = train(shards, tmp_path / "a")
    assert any(whole[s]["dead_codes"] for s in (4, 5)), "codes must die before the resume, or the test proves nothing"
    again = train(shards, rewound_copy(tmp_path / "a", tmp_path / "b", step=4))
    assert [again[s]["dead_codes"] for s in range(4, 8)] == [whole[s]["dead_codes"] for s in range(4, 8)]
