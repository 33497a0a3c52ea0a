"""`--cfg job -p KEY` prints the part of the job's config under KEY, composed as a plain run composes it."""
from megadalle.cli import main


def test_cfg_job_with_a_package_shows_a_text_keys_text(capsys):
    """With -p the print was hydra's own: `prompt=1e3` as 1000.0, a required key as null."""
    assert main(["generate", "--cfg", "job", "-p", "prompt", "prompt=1e3"]) == 0
    assert capsys.readouterr().out == "1e3\n"
    assert main(["train", "--cfg", "job", "-p", "data.tokenizer"]) == 0
    assert capsys.readouterr().out == "???\n"
    assert main(["train", "--cfg", "job", "-p", "trainer", "trainer.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# @package trainer\n") and "lr: 0.001\n" in out


def test_cfg_job_with_a_package_not_in_the_config_is_one_line(capsys):
    assert main(["generate", "--cfg", "job", "-p", "trainer"]) == 2
    assert capsys.readouterr().err == "megadalle generate: --package trainer: no such key in the config\n"
