"""The staging folder a kill left (`.encode-<shard>/`, between the shard's publish and the folder's removal) goes
when encode starts again: the rerun skips the finished shard, and the empty folder stayed in the output for good. A
rank of a split encode leaves alone the staging folders of the shards the other ranks encode."""
import pytest

from megadalle.cli import main
from megadalle.encode import encode_shards
from megadalle.models.dvae import DVAE, load_dvae
from megadalle.weights import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory, small_dvae_config):
    path = tmp_path_factory.mktemp("dvae") / "dvae.safetensors"
    save_weights(path, DVAE(small_dvae_config).state_dict(), kind="dvae", config=small_dvae_config)
    return path


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_rerun_removes_the_staging_folder_a_kill_left_and_changes_nothing_else(tmp_path, image_shards, weights):
    out = tmp_path / "tokens"
    args = ["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={out}", "device=cpu"]
    assert main(args) == 0
    finished = files(out)
    (out / ".encode-shard-000000.tar").mkdir()  # what a kill just after shard 0's publish leaves
    assert main(args) == 0
    assert not (out / ".encode-shard-000000.tar").exists()
    assert files(out) == finished


def test_a_rank_removes_its_own_and_orphaned_staging_but_not_another_ranks(tmp_path, image_shards, weights):
    """Shards 0 and 2 are rank 0's of 2 (round-robin), shard 1 is rank 1's; the input has no shard 9."""
    model = load_dvae(weights)
    assert encode_shards(model, image_shards, tmp_path, rank=1, world_size=2) is None
    (tmp_path / ".encode-shard-000000.tar").mkdir()  # rank 0, writing shard 0 now
    (tmp_path / ".encode-shard-000000.tar" / "shard-000000.tar").write_bytes(b"rank 0's codes so far")
    (tmp_path / ".encode-shard-000001.tar").mkdir()  # rank 1's, killed after its publish
    (tmp_path / ".encode-shard-000009.tar").mkdir()  # of a shard the input no longer has
    assert encode_shards(model, image_shards, tmp_path, rank=1, world_size=2) is None
    assert sorted(p.name for p in tmp_path.glob(".encode-*")) == [".encode-shard-000000.tar"]
    assert (tmp_path / ".encode-shard-000000.tar" / "shard-000000.tar").read_bytes() == b"rank 0's codes so far"
