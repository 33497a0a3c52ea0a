"""The learning check on real data (scikit-learn's digits) runs through every CLI verb at its fast size, and its
judge can judge: it reads held-out real digits far above chance. The full-size figure is in benchmarks/RESULTS.md."""
import json

import pytest

from tests.benchmark_run import load_benchmark

pytest.importorskip("sklearn", reason="the learning check's data and judge come from scikit-learn: "
                                      "scripts/setup.sh dev")

def test_fast_learning_check_runs_every_verb_and_judges_every_sample(tmp_path):
    check = load_benchmark("learning_check.py")
    preset = check.PRESETS["fast"]
    result = check.run_check(tmp_path, preset, seed=3, dvae_overrides=("dvae.objective.sigma=0.2",))
    dvae_run, dalle_run = (json.loads((tmp_path / "runs" / run / "run.json").read_text())["config"]
                           for run in ("dvae", "dalle"))
    assert dvae_run["dvae"]["objective"]["sigma"] == 0.2, "--dvae overrides reach train-dvae"
    assert dvae_run["seed"] == dalle_run["seed"] == 3, "the seed reaches every training stage"
    assert set(result["seconds"]) == {"prepare", "tokenizer", "train-dvae", "encode", "train", "evaluate"}
    assert result["judge_accuracy_on_real"] > 0.9, "a judge that cannot read real digits proves nothing"
    assert sorted(result["per_caption"]) == sorted(check.caption(d) for d in range(10))
    assert 0.0 <= result["accuracy"] <= 1.0 and result["chance"] == 0.1
    assert (result["accuracy"], result["stderr"]) == check.caption_accuracy(result["per_caption"])
    assert result["val_loss_last"] < result["val_loss_first"], "the Transformer's held-out loss must fall"
    assert len(list((tmp_path / "evaluate" / "samples").glob("*.png"))) == 10 * preset.samples
    assert (tmp_path / "shards" / "val" / "index.json").is_file() and (tmp_path / "tokens" / "val").is_dir()


def test_the_standard_error_is_over_captions_not_samples():
    """RESULTS.md's medium run: a binomial error over its 100 samples said 26% ± 4%; over its ten captions, the unit
    (a caption's samples share its errors), it is ± 12%."""
    check = load_benchmark("learning_check.py")
    shares = [0.7, 0.0, 0.0, 0.0, 0.7, 0.2, 0.0, 0.0, 1.0, 0.0]
    accuracy, stderr = check.caption_accuracy({check.caption(d): share for d, share in enumerate(shares)})
    assert accuracy == pytest.approx(0.26) and stderr == pytest.approx(0.1222, abs=1e-4)
