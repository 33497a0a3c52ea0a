"""A `-m` sweep's jobs each write their own outputs, and a second sweep does not take over the first one's job
folders (megadalle.sweep_jobs): every verb's output path goes per job, a training sweep's run_dir= and name= too,
and a job folder recording other swept values is refused, before any job runs."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import megadalle.cli
from megadalle.cli import main
from megadalle.sweep_jobs import FILE, per_job

SYNTHETIC = ["data=synthetic", "model=tiny", "trainer=tiny", "logger=none", "trainer.steps=1", "trainer.warmup_steps=0"]


@pytest.fixture
def stages(monkeypatch):
    """Each job's config, the verb's stage replaced by a record of it."""
    seen = []
    monkeypatch.setattr(megadalle.cli, "resolve", lambda verb: lambda cfg: seen.append(cfg.copy()) or 0)
    return seen


def test_a_file_output_goes_to_a_folder_of_the_jobs_number_beside_it(tmp_path):
    assert per_job(tmp_path / "t" / "tok.model", 1, FILE) == str(tmp_path / "t" / "1" / "tok.model")
    assert per_job(tmp_path / "exp", 0) == str(tmp_path / "exp" / "0")
    assert per_job(tmp_path / "m.safetensors", 0, ".safetensors") == str(tmp_path / "0" / "m.safetensors")
    assert per_job(tmp_path / "m", 0, ".safetensors") == str(tmp_path / "m" / "0")


def test_a_folder_with_a_dot_in_its_name_is_a_folder(stages, tmp_path):
    """Any name with a suffix was taken for a file: run_dir=runs/exp.v2 trained job 0 in runs/0/exp.v2."""
    assert main(["train", "-m", *SYNTHETIC, "seed=1,2", f"run_dir={tmp_path / 'exp.v2'}", f"out_dir={tmp_path}"]) == 0
    assert [cfg.run_dir for cfg in stages] == [str(tmp_path / "exp.v2" / str(job)) for job in (0, 1)]


def test_a_tokenizer_sweep_writes_one_model_per_job(image_shards, tmp_path):
    """Both jobs wrote the one output=tok.model: job 1's replaced job 0's, in silence."""
    output = tmp_path / "t" / "tok.model"
    assert main(["tokenizer", "-m", f"input={image_shards}", f"output={output}", "vocab_size=40,50",
                 f"out_dir={tmp_path}"]) == 0
    assert [(tmp_path / "t" / str(job) / "tok.model").is_file() for job in (0, 1)] == [True, True]
    assert not output.exists()


def test_every_path_a_job_writes_goes_per_job(image_shards, stages, tmp_path):
    """train-dvae's weights= and export's output= were one file or folder for every job."""
    weights = tmp_path / "dv" / "my_dvae.safetensors"
    assert main(["train-dvae", "-m", f"data.shards={image_shards}", "dvae=tiny", "trainer=tiny", "logger=none",
                 "trainer.lr=1e-3,3e-4", f"weights={weights}", f"out_dir={tmp_path}"]) == 0
    assert [cfg.weights for cfg in stages] == [str(tmp_path / "dv" / str(job) / "my_dvae.safetensors")
                                               for job in (0, 1)]
    assert [cfg.run_dir for cfg in stages] == [str(tmp_path / "multirun" / "train-dvae" / str(job)) for job in (0, 1)]


def test_a_training_sweep_given_a_run_dir_or_a_name_trains_one_run_per_job(stages, tmp_path):
    """run_dir=D was every job's run (job 1 resumed job 0); name=N was ignored."""
    assert main(["train", "-m", *SYNTHETIC, "seed=1,2", f"run_dir={tmp_path / 'rd'}", f"out_dir={tmp_path}"]) == 0
    assert main(["train", "-m", *SYNTHETIC, "seed=1,2", "name=seeds", f"out_dir={tmp_path}"]) == 0
    assert [cfg.run_dir for cfg in stages] == [str(tmp_path / "rd" / "0"), str(tmp_path / "rd" / "1"),
                                               str(tmp_path / "transformer" / "seeds" / "0"),
                                               str(tmp_path / "transformer" / "seeds" / "1")]


@pytest.mark.distributed
def test_a_training_sweep_given_a_run_dir_resumes_no_job_from_another(tmp_path, capsys):
    assert main(["train", "-m", *SYNTHETIC, "trainer.steps=1,2", f"run_dir={tmp_path / 'rd'}",
                 f"out_dir={tmp_path}"]) == 0
    assert "resumed" not in capsys.readouterr().out
    assert [(tmp_path / "rd" / str(job) / "checkpoints" / "latest").read_text() for job in (0, 1)] == \
        ["step_00000001", "step_00000002"]


def test_a_sweep_over_other_values_is_refused_in_an_earlier_sweeps_job_folders(stages, tmp_path, capsys):
    """A second sweep met the first one's folders by number and went on from its jobs (a run of trainer.steps=3
    "finished at step 3" for a job of trainer.steps=2); and every sweep, a refused one too, rewrote the record."""
    sweep = ["train", "-m", *SYNTHETIC, f"out_dir={tmp_path}"]
    assert main([*sweep, "trainer.steps=2,3"]) == 0
    capsys.readouterr()
    assert main([*sweep, "trainer.steps=3,2"]) == 2
    folder = tmp_path / "multirun" / "train" / "0"
    assert (f"megadalle train: job 0 (trainer.steps=3): {folder} holds job 0 of another sweep (trainer.steps=2); "
            "give this sweep a folder of its own: hydra.sweep.dir=") in capsys.readouterr().err
    assert len(stages) == 2
    assert "trainer.steps=2" in OmegaConf.load(folder / ".hydra" / "overrides.yaml")
    assert main([*sweep, "trainer.steps=2,3", "trainer.lr=1e-3"]) == 0  # the same sweep again: it goes on
    assert main([*sweep, "trainer.steps=3,2", f"hydra.sweep.dir={tmp_path / 'other'}"]) == 0
    assert len(stages) == 6


def test_a_sweep_over_run_dir_or_name_runs_each_job_in_the_one_it_gives(stages, tmp_path):
    """A swept path went per job too: `run_dir=rd/a,rd/b` trained fresh runs in rd/a/0 and rd/b/1, not rd/a and rd/b."""
    assert main(["train", "-m", *SYNTHETIC, f"run_dir={tmp_path / 'a'},{tmp_path / 'b'}", f"out_dir={tmp_path}"]) == 0
    assert main(["train", "-m", *SYNTHETIC, "name=a,b", f"out_dir={tmp_path}"]) == 0
    assert [cfg.run_dir for cfg in stages] == [str(tmp_path / "a"), str(tmp_path / "b"),
                                               str(tmp_path / "transformer" / "a"), str(tmp_path / "transformer" / "b")]
    assert "run_dir=" in (tmp_path / "b" / ".hydra" / "overrides.yaml").read_text()


def test_a_swept_output_file_is_the_jobs_own(image_shards, stages, tmp_path):
    weights = [tmp_path / "dv" / f"{name}.safetensors" for name in ("a", "b")]
    assert main(["train-dvae", "-m", f"data.shards={image_shards}", "dvae=tiny", "trainer=tiny", "logger=none",
                 f"weights={weights[0]},{weights[1]}", f"out_dir={tmp_path}"]) == 0
    assert [cfg.weights for cfg in stages] == [str(path) for path in weights]


def test_a_job_with_a_folder_of_its_own_leaves_the_sweep_folders_record(stages, tmp_path, capsys):
    """A job whose run is elsewhere (run_dir=) wrote its record into <out_dir>/multirun/<verb>/<i> too, over the
    record of another sweep's job there, which was then refused when rerun ("holds job 0 of another sweep")."""
    first = ["train", "-m", *SYNTHETIC, "trainer.lr=1e-3,3e-4", f"out_dir={tmp_path}"]
    assert main(first) == 0
    assert main(["train", "-m", *SYNTHETIC, f"run_dir={tmp_path / 'x' / 'rdB'}", "seed=5,6",
                 f"out_dir={tmp_path}"]) == 0
    assert "trainer.lr=0.001" in (tmp_path / "multirun" / "train" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "seed=5" in (tmp_path / "x" / "rdB" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert main(first) == 0, capsys.readouterr().err
    assert len(stages) == 6


def test_a_sweep_over_other_values_is_refused_in_an_earlier_sweeps_runs_of_a_run_dir(stages, tmp_path, capsys):
    sweep = ["train", "-m", *SYNTHETIC, f"run_dir={tmp_path / 'rd'}", f"out_dir={tmp_path}"]
    assert main([*sweep, "trainer.steps=2,3"]) == 0
    capsys.readouterr()
    assert main([*sweep, "trainer.steps=3,2", f"hydra.sweep.dir={tmp_path / 'other'}"]) == 2
    assert (f"job 0 (trainer.steps=3): {tmp_path / 'rd' / '0'} holds job 0 of another sweep (trainer.steps=2); give "
            "this sweep a folder of its own: run_dir=<new folder>") in capsys.readouterr().err
    assert len(stages) == 2


def test_a_sweep_value_is_checked_for_every_job_before_the_first_runs(stages, tmp_path, capsys):
    assert main(["train", "-m", *SYNTHETIC, "trainer.lr=1e-3,-1", f"out_dir={tmp_path}"]) == 2
    assert "job 1 (trainer.lr=-1): trainer.lr=-1.0: must be positive; no job has run" in capsys.readouterr().err
    assert stages == []


def test_a_verbs_own_value_is_checked_for_every_job_before_the_first_runs(stages, tmp_path, capsys):
    """Only preflight and the groups were checked: `plan -m gpus=1,abc` ran job 0, then job 1 failed."""
    assert main(["plan", "-m", "model=tiny", "gpus=1,abc", f"out_dir={tmp_path}"]) == 2
    assert "job 1 (gpus=abc): gpus: Value 'abc' of type 'str' could not be converted to Integer; no job has run" in \
        capsys.readouterr().err
    assert stages == []


@pytest.mark.parametrize("swept", [["min_side=0,8"], ["dir=a,b", "min_side=0,8"]])
def test_an_index_sweep_writing_into_one_folder_is_refused(swept, tmp_path, capsys, monkeypatch):
    """A sweep over dir and another key (`dir=a,b min_side=0,8`) wrote two jobs into each folder."""
    monkeypatch.chdir(tmp_path)
    given = [f"dir={tmp_path}"] if len(swept) == 1 else []
    assert main(["index", "-m", *given, *swept]) == 2
    named = given[0] if given else "dir=a,b"
    assert (f"megadalle index: {named}: several jobs of this sweep over min_side would write into the same dir, each "
            "over the one before") in capsys.readouterr().err


def test_a_refused_job_leaves_the_record_of_the_job_before_it(stages, tmp_path, capsys):
    """Hydra wrote the job's .hydra/overrides.yaml before the job ran: a job refused by a launcher's process (no
    check before the jobs) still replaced the record of the run it was refused from."""
    sweep = ["train", "-m", *SYNTHETIC, "seed=0,1", f"out_dir={tmp_path}"]
    assert main(sweep) == 0
    record = tmp_path / "multirun" / "train" / "0" / ".hydra" / "overrides.yaml"
    before = record.read_text()
    megadalle.cli.resolve = lambda verb: lambda cfg: 2
    assert main([*sweep, "trainer.lr=2e-3"]) == 2
    assert record.read_text() == before


def test_help_after_a_sweep_shows_the_config(capsys):
    assert main(["train", "-m", "trainer.lr=1e-3,2e-3", "model=small", "--help"]) == 0
    assert "model      12b 1b [small] tiny" in capsys.readouterr().out


def test_a_bare_word_in_a_sweep_gets_a_plain_runs_hint(tmp_path, capsys):
    assert main(["generate", "-m", f"weights={tmp_path}", "a", "red", "circle", "seed=0,1"]) == 2
    assert ("megadalle generate: a red circle: expected key=value; for the prompt, write 'prompt=\"a red circle\"'"
            in capsys.readouterr().err)


def config_dir(tmp_path: Path) -> Path:
    """A user's config folder: a model option of its own, a primary config giving a required key, a misspelt key."""
    folder = tmp_path / "myconf"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "mine.yaml").write_text("defaults:\n  - tiny\n  - _self_\nd_model: 64\nhead_dim: 16\n")
    (folder / "typo.yaml").write_text("defaults:\n  - train\n  - _self_\ntrainer:\n  lrr: 1\n")
    return folder


def test_a_config_dirs_group_options_and_primary_config_are_honoured(stages, token_shards, tmp_path, capsys):
    """--config-dir's model=mine was refused ("no such model config"), and keys a --config-name config set were
    taken for unset required keys."""
    folder = config_dir(tmp_path)
    shards, tok = token_shards
    (folder / "tokens.yaml").write_text(f"defaults:\n  - train\n  - _self_\ndata:\n  shards: {shards}\n"
                                        f"  tokenizer: {tok}\n")
    assert main(["plan", "--config-dir", str(folder), "model=mine", f"out_dir={tmp_path}"]) == 0
    assert main(["train", "--config-dir", str(folder), "--config-name", "tokens", "model=mine", "trainer=tiny",
                 "logger=none", "data.num_workers=0", "trainer.micro_batch=2", f"run_dir={tmp_path / 'r'}"]) == 0
    assert (stages[-1].model.d_model, stages[-1].data.tokenizer) == (64, str(tok))
    capsys.readouterr()
    assert main(["train", "--config-path", str(folder), "model=tiny"]) == 2
    assert f"--config-path {folder}: megadalle's verbs read their configs from its own conf/; add a folder of " \
           "yours with --config-dir DIR" in capsys.readouterr().err


def test_hydras_own_fix_is_kept_in_the_one_line(tmp_path, capsys):
    """The line kept hydra's first line: "Could not override ..." without "+key", the launcher options, the key."""
    assert main(["train", *SYNTHETIC, "deepspeed.extra.foo=1", f"out_dir={tmp_path}"]) == 2
    assert "To append to your config use +deepspeed.extra.foo=1" in capsys.readouterr().err
    assert main(["plan", "-m", "hydra/launcher=submitit_slurmm", f"out_dir={tmp_path}"]) == 2
    assert "Available options in 'hydra/launcher': basic, submitit_local, submitit_slurm" in capsys.readouterr().err
    assert main(["train", "--config-dir", str(config_dir(tmp_path)), "--config-name", "typo", *SYNTHETIC,
                 f"out_dir={tmp_path}"]) == 2
    assert "In 'typo': ConfigKeyError raised while composing config: Key 'lrr' not in 'TrainerConfig'" in \
        capsys.readouterr().err




@pytest.mark.parametrize("verb, swept, place, jobs", [
    ("train", ["run_dir=a,b", "trainer.lr=1e-3,3e-4"], "run_dir {}/a", ("run_dir=a trainer.lr=0.001", "0.0003")),
    ("train", ["name=a,b", "seed=1,2"], "name {}/transformer/a", ("name=a seed=1", "2")),
    ("prepare", ["output=a,b", "image_size=16,32"], "output {}/a", ("output=a image_size=16", "32")),
    ("tokenizer", ["output=t/a.model,t/b.model", "vocab_size=40,50"], "output {}/t/a.model",
     ("output=t/a.model vocab_size=40", "50")),
])
def test_a_path_swept_with_another_key_is_refused_before_any_job_runs(verb, swept, place, jobs, image_shards,
                                                                    stages, tmp_path, capsys, monkeypatch):
    """A swept path stays as given, so with another key swept it was two jobs' own: prepare's second job replaced
    the first one's shards in silence, and a training sweep's was refused in it only after the first had trained."""
    monkeypatch.chdir(tmp_path)
    inputs = {"train": SYNTHETIC, "prepare": [f"input={image_shards}"], "tokenizer": [f"input={image_shards}"]}
    assert main([verb, "-m", *inputs[verb], *swept, f"out_dir={tmp_path}"]) == 2
    first, value = jobs
    second = f"{first.rsplit('=', 1)[0]}={value}"
    key = place.split()[0]
    assert (f"megadalle {verb}: job 1 ({second}): {place.format(tmp_path)} is shared with job 0 ({first}): each would "
            f"write over the other; sweep over {key} alone, or give it one value (a place per job under it); no job "
            "has run") in capsys.readouterr().err
    assert stages == []


@pytest.fixture
def standin(monkeypatch):
    """`hydra/launcher=standin`: a launcher whose jobs run elsewhere (as submitit's on Slurm), standing in for one
    by recording the jobs it is handed and running none. Yields them."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    launched = []

    class StandIn(Launcher):
        def setup(self, *, hydra_context, task_function, config) -> None:
            pass

        def launch(self, job_overrides, initial_job_idx):
            launched.extend(list(job) for job in job_overrides)
            return []

    ConfigStore.instance().store(group="hydra/launcher", name="standin", node={"_target_": "standin"})
    monkeypatch.setattr(Plugins, "instantiate_launcher", lambda self, **kwargs: StandIn())
    yield launched
    # hydra lists the launchers it has (test_hydras_own_fix_is_kept_in_the_one_line)
    del ConfigStore.instance().repo["hydra"]["launcher"]["standin.yaml"]


def test_a_place_two_jobs_share_is_refused_before_another_launcher_gets_them(standin, tmp_path, capsys,
                                                                             monkeypatch):
    """The check ran under hydra's basic launcher only: submitit's jobs given one run_dir trained into it side by
    side, or the second was refused there once the first had trained."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-m", *SYNTHETIC, "run_dir=a,b", "trainer.lr=1e-3,3e-4", "hydra/launcher=standin",
                 f"out_dir={tmp_path}"]) == 2
    assert (f"megadalle train: job 1 (run_dir=a trainer.lr=0.0003): run_dir {tmp_path}/a is shared with job 0 "
            "(run_dir=a trainer.lr=0.001): each would write over the other") in capsys.readouterr().err
    assert standin == []
    assert main(["train", "-m", *SYNTHETIC, "run_dir=a,b", f"out_dir={tmp_path}", "hydra/launcher=standin"]) == 0
    assert [[item for item in job if item.startswith("run_dir=")] for job in standin] == [["run_dir=a"], ["run_dir=b"]]
