"""The distributed tests import their helpers (toy task, launch, tokens) from this folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import token_data, train_overrides  # noqa: E402,F401
