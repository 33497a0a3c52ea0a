"""Which keys a command line gives (hydra's override grammar: `key=v`, `+key=v`, `++key=v`, `group@package=option`,
`~key` deletes) and the one line naming every required key still missing (megadalle.config.required)."""
import pytest
from omegaconf import OmegaConf

from megadalle.config import ConfigError
from megadalle.config.required import check_required, override_keys


def test_the_keys_an_override_list_gives():
    assert override_keys(["a.b=1", "+c=2", "++d.e=3", "model@trainer.model=tiny", "~x", "~y=1", "z"]) == {
        "a.b", "c", "d.e", "model"}


def test_two_missing_keys_are_named_together_in_the_plural():
    cfg = OmegaConf.create({"data": {"shards": "???", "tokenizer": "???"}, "tokenizer": "tok.model"})
    with pytest.raises(ConfigError) as refused:
        check_required(cfg)
    assert str(refused.value) == ("required keys not set: data.shards, data.tokenizer (give data.shards=... "
                                  "data.tokenizer=... on the command line; tokenizer is set, but this verb reads "
                                  "data.tokenizer)")


def test_one_missing_key_is_named_in_the_singular():
    with pytest.raises(ConfigError, match=r"^required key not set: weights \(give weights=\.\.\. on the command line\)$"):
        check_required(OmegaConf.create({"weights": "???", "seed": 0}))
