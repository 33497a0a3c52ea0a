"""dVAE training: the objective learns (a large drop of the reconstruction NLL), and `train-dvae` runs
through the generic trainer with checkpoints, resume, media and exported weights."""
import json
from pathlib import Path

import pytest
import torch

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.config.dvae import DVAEObjective
from megadalle.models.dvae import DVAE, load_dvae
from megadalle.models.dvae_loss import cosine, elbo_loss, kl_weight, temperature, unfinished_schedules
from megadalle.train.dvae import reconstruction_grid, task_from_config, train_dvae

from tests.rewound_run import rewound_copy

from .conftest import rectangles


def test_short_training_lowers_the_reconstruction_loss_far_below_its_start(small_dvae_config):
    steps = 100
    cfg = small_dvae_config
    objective = DVAEObjective(kl_weight=6.6, kl_warmup_steps=20, tau_anneal_steps=steps)
    model = DVAE(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4)
    data = rectangles(512, 32, seed=1, white=True)  # like the demo's shapes on white
    nlls = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine(step, 2e-3, 2e-4, steps)
        images = data[torch.randint(0, len(data), (16,))]
        logits, stats = model(images, temperature(step, objective))
        loss, metrics = elbo_loss(images, logits, stats, kl_weight(step, objective), cfg.eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nlls.append(metrics["nll"])
    start, end = sum(nlls[:5]) / 5, sum(nlls[-10:]) / 10
    print(f"reconstruction NLL (nats per pixel channel): start {start:.3f}, end {end:.3f}")
    assert end < start - 1.0


def test_train_dvae_runs_through_the_trainer_resumes_and_exports(tmp_path, image_shards, capsys):
    overrides = [f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
                 "dvae.vocab_size=64", "trainer.steps=4", "trainer.micro_batch=4", "trainer.lr=1e-3",
                 "trainer.checkpoint_every=2", "trainer.log_every=1", "logger=none", f"run_dir={tmp_path / 'run'}",
                 "trainer.ema=0.9"]
    weights = train_dvae(compose("train-dvae", overrides))
    assert weights == tmp_path / "run" / "dvae.safetensors" and weights.with_suffix(".json").is_file()
    model = load_dvae(weights)
    assert model.cfg.vocab_size == 64 and model.encode(torch.rand(2, 3, 32, 32)).shape == (2, 8, 8)
    capsys.readouterr()
    assert main(["train-dvae", *overrides, "trainer.steps=6", "usage_window=3"]) == 0  # a metric's window only
    assert "resumed from" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000006"


def test_trainer_tiny_trains_the_dvae_with_tinys_values_and_a_whole_run_warm_up_is_named(tmp_path, image_shards,
                                                                                        capsys):
    """The schedule warning is the run's: a resume of it (killed after its step-1 checkpoint) does not repeat it."""
    command = ["train-dvae", f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
               "trainer=tiny", "trainer.steps=2", "trainer.checkpoint_every=1", "logger=none"]
    assert main([*command, f"run_dir={tmp_path / 'run'}"]) == 0
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["trainer"]
    assert (config["warmup_steps"], config["lr"], config["ema"]) == (5, 1e-3, None)  # tiny's, not the paper's
    out, err = capsys.readouterr()
    assert err.count("[train-dvae] warning: trainer.warmup_steps=5 >= trainer.steps=2: the whole run is warm-up") == 1
    assert "[train-dvae] optimizer: " in out and "[train]" not in out + err  # the verb's name, not train's
    schedules = [line for line in err.splitlines() if line.startswith("[train-dvae] warning: trainer.steps=2 ends")]
    assert schedules == ["[train-dvae] warning: trainer.steps=2 ends the Gumbel temperature at 1, not "
                         "dvae.objective.tau_end=0.0625 (dvae.objective.tau_anneal_steps=300) and the KL weight at "
                         "0.00616, not dvae.objective.kl_weight=1 (dvae.objective.kl_warmup_steps=20); set "
                         "dvae.objective.tau_anneal_steps and dvae.objective.kl_warmup_steps to at most 2, or raise "
                         "trainer.steps"]
    assert main([*command, f"run_dir={rewound_copy(tmp_path / 'run', tmp_path / 'resumed', 1)}"]) == 0
    out, err = capsys.readouterr()
    assert "[train-dvae] rank 0 resumed from" in out and "Gumbel temperature" not in err


def test_a_run_as_long_as_the_objectives_schedules_is_not_warned_and_a_shorter_one_names_what_it_cuts():
    objective = DVAEObjective(kl_warmup_steps=20, tau_anneal_steps=300)
    assert unfinished_schedules(objective, 300) is None
    assert unfinished_schedules(DVAEObjective(kl_weight=0, kl_warmup_steps=20, tau_start=1, tau_end=1), 2) is None
    cut = unfinished_schedules(objective, 100)
    assert f"temperature at {temperature(99, objective):.3g}, not dvae.objective.tau_end=0.0625" in cut
    assert "KL weight" not in cut


def test_loader_workers_leave_the_training_random_stream_alone_so_resumes_are_exact(tmp_path, image_shards):
    """The dVAE's Gumbel noise comes from torch's global generator, from which DataLoader used to draw its
    workers' seed when it started: at step 0 in one run, after the restored state in a resumed one."""
    def losses(run: Path, workers: int) -> list[float]:
        train_dvae(compose("train-dvae", [f"data.shards={image_shards}", f"data.num_workers={workers}", "dvae=tiny",
                                          "dvae.n_hid=16", "trainer.steps=4", "trainer.micro_batch=4",
                                          "trainer.checkpoint_every=2", "trainer.log_every=1", "logger=none",
                                          f"run_dir={run}"]))
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    uninterrupted = losses(tmp_path / "a", workers=1)
    assert losses(tmp_path / "b", workers=0) == uninterrupted
    resumed = rewound_copy(tmp_path / "a", tmp_path / "c", step=2)  # run a, as if killed after its step-2 checkpoint
    assert losses(resumed, workers=1) == uninterrupted[2:]


def test_task_reports_codebook_use_and_logs_a_reconstruction_grid(image_shards):
    task = task_from_config(compose("train-dvae", [f"data.shards={image_shards}", "dvae=tiny"]))
    model = task.build_model()
    loss, metrics = task.loss(model, {"image": rectangles(4, 32)}, step=0)
    assert loss.isfinite() and {"nll", "kl", "mse", "tau", "beta"} <= set(metrics) and metrics["tau"] == 1.0
    codebook = task.after_update(model, editor=None, step=0)
    assert set(codebook) == {"perplexity", "dead_codes"}
    assert 1 <= codebook["perplexity"] <= 128 and codebook["dead_codes"] == 0
    grid = reconstruction_grid(model, rectangles(3, 32))
    assert grid.shape == (64, 96, 3) and grid.dtype.name == "uint8"
    assert "reconstructions" in task.media(model, step=0)


def test_the_preview_shows_as_many_images_as_asked_across_micro_batches(image_shards):
    """preview=8 at micro_batch=4 showed 4 images: the last micro-batch's."""
    task = task_from_config(compose("train-dvae", [f"data.shards={image_shards}", "dvae=tiny", "preview=8"]))
    model = task.build_model()
    width = []
    for seed in range(3):
        task.loss(model, {"image": rectangles(4, 32, seed=seed)}, step=0)
        width.append(task.media(model, step=0)["reconstructions"].array.shape[1] // 32)
    assert width == [4, 8, 8]
    assert torch.equal(task._last_images, torch.cat([rectangles(4, 32, seed=1), rectangles(4, 32, seed=2)]))


@pytest.mark.parametrize("override, key", [("dvae.eps=0.7", "dvae.eps=0.7"), ("dvae.image_size=30", "dvae.image_size=30"),
                                           ("usage_window=0", "usage_window=0"),
                                           ("data.image_size=64", "data.image_size=64")])
def test_train_dvae_verb_rejects_bad_values_naming_them(override, key, capsys, image_shards):
    assert main(["train-dvae", f"data.shards={image_shards}", "dvae=tiny", override]) == 2
    assert key in capsys.readouterr().err


def test_a_temperature_that_would_rise_is_refused_naming_both_ends(tmp_path, capsys, image_shards):
    argv = ["train-dvae", f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
            "dvae.objective.tau_start=1", "dvae.objective.tau_end=2", "trainer=tiny", "trainer.steps=1",
            "logger=none", f"run_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    assert "dvae.objective.tau_end=2.0: must not exceed tau_start=1.0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_dvae_refuses_a_folder_without_shards_before_training(tmp_path, capsys):
    assert main(["train-dvae", f"data.shards={tmp_path}", "dvae=tiny", f"run_dir={tmp_path / 'run'}"]) == 2
    assert f"data.shards={tmp_path}: " in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_dvae_counts_the_images_it_upscales_from_tars_written_elsewhere(tmp_path, capsys):
    """A tar from elsewhere has no one image size to check before the run: a 16 px thumbnail among 32 px photos is
    enlarged to the dVAE's input without an error, so every update logs the share (images_upscaled), said once."""
    import webdataset as wds

    from .conftest import png

    (tmp_path / "tars").mkdir()
    with wds.TarWriter(str(tmp_path / "tars" / "00000.tar")) as sink:
        for i, image in enumerate([*rectangles(3, 32), *rectangles(1, 16, seed=1)]):
            sink.write({"__key__": f"k{i}", "png": png(image), "txt": f"picture {i}"})
    argv = ["train-dvae", f"data.shards={tmp_path / 'tars'}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
            "trainer=tiny", "trainer.steps=2", "trainer.micro_batch=4", "logger=none", f"run_dir={tmp_path / 'run'}"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_upscaled"] for r in records] == [0.25, 0.25]
    err = capsys.readouterr().err
    assert err.count("of this update's images are smaller than the model's input") == 1
    assert "warning: step 0: 25.0% of this update's images" in err and "min_side=<input size>" in err
