"""`--cfg job` prints the config the job would run, composed as a plain run composes it."""
from megadalle.cli import main


def test_cfg_job_shows_a_text_keys_text_and_a_required_key_as_required(capsys):
    """Hydra's own print showed `prompt: 1000.0` for prompt=1e3 and `tokenizer: null` for a required key."""
    assert main(["generate", "--cfg", "job", "prompt=1e3"]) == 0
    assert "prompt: '1e3'\n" in capsys.readouterr().out
    assert main(["train", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "  tokenizer: ???\n" in out and "  shards: ???\n" in out
