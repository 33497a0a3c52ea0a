"""The Slurm test trains the tiny Transformer on the distributed tests' token data set."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "distributed"))

from dist_fixtures import token_data, train_overrides  # noqa: E402,F401
