"""ShardWriter's size limit counts what a sample really adds to a tar: each member's 512-byte header as well as its
data padded to 512-byte blocks. Without the headers a shard of many small members (captions, codes) overran
max_bytes by half a kilobyte a member, and a storage quota or an object store's part size set from max_bytes was
exceeded. Each shard's bytes are read back independently (the .idx and tarfile's own member offsets)."""
from __future__ import annotations

import tarfile

from megadalle.data.index import load_offsets
from megadalle.data.shards import ShardIndex, ShardWriter

BLOCK = 512


def write(root, max_bytes: int, samples: int, members: dict[str, int]) -> list:
    """`samples` samples, each with `members` (field -> data length in bytes), under `max_bytes`."""
    with ShardWriter(root, max_bytes=max_bytes) as w:
        for i in range(samples):
            w.write({"__key__": f"{i:04d}", **{f: bytes([i % 251]) * n for f, n in members.items()}})
    return ShardIndex.load(root).shards


def members_end(shard) -> int:
    """Where the shard's last member ends (its data padded to a block), by tarfile: the bytes the limit governs,
    before tar's end-of-archive padding."""
    with tarfile.open(shard) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + -(-last.size // BLOCK) * BLOCK


def test_a_sample_that_fits_only_without_its_headers_opens_a_new_shard(tmp_path):
    """Two members of 1024 B take (512 + 1024) * 2 = 3072 B with their headers; a limit of 5120 then holds one such
    sample (a second would make 6144), where a count of the second's data alone (3072 + 2048) would let it in."""
    shards = write(tmp_path, 5120, 5, {"a.bin": 1024, "b.bin": 1024})
    assert [s.count for s in shards] == [1, 1, 1, 1, 1]
    for s in shards:
        path = tmp_path / s.name
        assert members_end(path) == load_offsets(path)[-1] == 3072 <= 5120


def test_every_shard_stays_within_max_bytes_and_a_sample_filling_it_exactly_fits(tmp_path):
    """Samples of one 1024 B member (1536 B with its header): two fill a 3072 B limit exactly and stay together,
    a third opens a new shard; at 4096 B still two (a third makes 4608), not three as data alone (3072) would
    allow."""
    for limit in (3072, 4096):
        root = tmp_path / str(limit)
        shards = write(root, limit, 7, {"bin": 1024})
        assert [s.count for s in shards] == [2, 2, 2, 1]
        for s in shards:
            path = root / s.name
            end = load_offsets(path)[-1]
            assert end == members_end(path) == s.count * (BLOCK + 1024) <= limit


def test_many_small_members_count_their_headers(tmp_path):
    """Captions and codes are small: two 20 B members take 2 * 1024 B (a header and one padded block each), not
    2 * 512; a 5 KiB limit holds two such samples (4096 B), not a third (4096 + 1024 by data alone)."""
    shards = write(tmp_path, 5120, 5, {"txt": 20, "json": 20})
    assert [s.count for s in shards] == [2, 2, 1]
    for s in shards:
        path = tmp_path / s.name
        assert members_end(path) == load_offsets(path)[-1] == s.count * 2 * 2 * BLOCK <= 5120
