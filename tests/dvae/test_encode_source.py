"""The input `prepare` and `encode` record in index.json (meta "source") is the one they read, resolved: the advice on
a changed output names it to rebuild from, and a relative path typed in one folder is no path from another."""
import pytest

from megadalle.cli import main
from megadalle.data.coverage import OutputChanged
from megadalle.data.index import ShardIndex
from megadalle.data.shards import open_index
from megadalle.models.dvae import DVAE
from megadalle.weights import save_weights

from .conftest import png, rectangles


def test_a_relative_input_is_recorded_resolved_and_the_rebuild_advice_names_it(tmp_path, small_dvae_config,
                                                                               monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "pics").mkdir(parents=True)
    elsewhere.mkdir()
    for i, image in enumerate(rectangles(4, 32)):
        (work / "pics" / f"p{i}.png").write_bytes(png(image))
        (work / "pics" / f"p{i}.txt").write_text(f"picture {i}")
    save_weights(work / "dvae.safetensors", DVAE(small_dvae_config).state_dict(), kind="dvae",
                 config=small_dvae_config)
    monkeypatch.chdir(work)
    assert main(["prepare", "input=pics", "output=shards", "image_size=32", "min_side=32", "num_workers=0",
                 "shard_max_samples=2"]) == 0
    assert main(["encode", "dvae_weights=dvae.safetensors", "input=shards", "output=tokens", "device=cpu"]) == 0
    assert ShardIndex.load(work / "shards").meta["source"] == str((work / "pics").resolve())
    assert ShardIndex.load(work / "tokens").meta["source"] == str((work / "shards").resolve())

    monkeypatch.chdir(elsewhere)
    (work / "tokens" / "shard-000001.tar").unlink()
    with pytest.raises(OutputChanged) as changed:
        open_index(work / "tokens")
    rebuild = (f"megadalle encode input={(work / 'shards').resolve()} output={work / 'tokens'} "
               f"dvae_weights={(work / 'dvae.safetensors').resolve()}")
    assert f"rebuild it with `{rebuild}`" in str(changed.value)
    assert main(rebuild.split()[1:]) == 0 and open_index(work / "tokens").total == 4  # as printed, from elsewhere


def test_a_val_encoded_on_purpose_is_advised_its_own_encode(tmp_path, small_dvae_config):
    """`encode input=other/val output=tokens/val`, chosen: a damaged one was advised to rebuild `tokens` from
    `other`, because its source is named val like a carried split's."""
    (tmp_path / "pics").mkdir()
    for i, image in enumerate(rectangles(4, 32)):
        (tmp_path / "pics" / f"p{i}.png").write_bytes(png(image))
        (tmp_path / "pics" / f"p{i}.txt").write_text(f"picture {i}")
    save_weights(tmp_path / "dvae.safetensors", DVAE(small_dvae_config).state_dict(), kind="dvae",
                 config=small_dvae_config)
    assert main(["prepare", f"input={tmp_path / 'pics'}", f"output={tmp_path / 'other' / 'val'}", "image_size=32",
                 "min_side=32", "num_workers=0", "shard_max_samples=2"]) == 0
    assert main(["encode", f"dvae_weights={tmp_path / 'dvae.safetensors'}", f"input={tmp_path / 'other' / 'val'}",
                 f"output={tmp_path / 'tokens' / 'val'}", "device=cpu"]) == 0
    (tmp_path / "tokens" / "val" / "shard-000001.tar").unlink()
    with pytest.raises(OutputChanged) as changed:
        open_index(tmp_path / "tokens" / "val")
    assert (f"rebuild it with `megadalle encode input={tmp_path / 'other' / 'val'} output={tmp_path / 'tokens' / 'val'} "
            in str(changed.value))
