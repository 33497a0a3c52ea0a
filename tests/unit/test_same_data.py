"""Every rank of a run trains on the data rank 0 reads, or all stop with one line."""
import pytest

from megadalle.train import distributed, loop

IDENTITY = {"fingerprint": "abc", "seed": 0, "global_batch": 8}


def test_ranks_reading_the_same_data_go_on(monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: dict(IDENTITY))
    loop.check_same_data(dict(IDENTITY))


def test_a_rank_reading_other_data_than_rank_0_stops_the_run(monkeypatch):
    """Each rank opens the index itself: a shard folder that changed while the run started was indexed again
    between two ranks' opens, and they trained on different data sets, each believing its own."""
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: dict(IDENTITY))
    with pytest.raises(loop.DataDisagreement, match=r"reads other data than rank 0 \(fingerprint: not the same\): the "
                                                    r"shards changed while the run started"):
        loop.check_same_data({**IDENTITY, "fingerprint": "abd"})
