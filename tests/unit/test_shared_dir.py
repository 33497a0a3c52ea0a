"""The file rank 0 leaves in the run directory for the other ranks to find (train/shared_dir.py)."""
from megadalle.train import shared_dir


def test_a_token_a_killed_run_left_is_removed_by_the_next(tmp_path):
    """A run killed between making its token and removing it left the file; the next run's rank 0, holding the
    lock, clears it, so tokens do not pile up in the run directory."""
    left = tmp_path / f"{shared_dir.TOKEN_PREFIX}deadbeef"
    left.touch()
    token = shared_dir.make_token(tmp_path)
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [token]
    assert shared_dir.check_token(tmp_path, token, rank=0) is None  # one process: rank 0 sees it, then removes it
    assert not list(tmp_path.iterdir())
