"""The distributed tests import their helpers (dist_*.py: toy task, launcher, token data) from this folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from dist_fixtures import token_data, train_overrides  # noqa: E402,F401
