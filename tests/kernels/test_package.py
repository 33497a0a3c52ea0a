"""`megadalle.kernels` imports each public name's module on first use: the dispatch and the config check inputs
with the kernels' own constants and check, without loading the Triton kernels."""
import importlib
import subprocess
import sys

import pytest

import megadalle.kernels as kernels

LIGHT_USE = """
import sys

import megadalle.attention.dispatch
from megadalle.kernels import DTYPES, HEAD_DIMS, Layout, build_layout, check_batch_and_heads, grid_column_major_order

print("\\n".join(sorted(name for name in sys.modules if name.startswith("megadalle.kernels"))))
"""


def test_the_dispatch_and_the_input_checks_load_no_triton_module_of_the_kernels():
    """The package imported every module, triton's (tiles, forward, backward) with them, as it was imported."""
    done = subprocess.run([sys.executable, "-c", LIGHT_USE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["megadalle.kernels", "megadalle.kernels.inputs", "megadalle.kernels.layout"]


@pytest.mark.parametrize("name", kernels.__all__)
def test_every_public_name_is_its_modules_own(name):
    home = importlib.import_module(f"megadalle.kernels.{kernels._MODULES[name]}")
    assert getattr(kernels, name) is getattr(home, name)
    assert name in dir(kernels)


def test_a_star_import_gives_every_public_name_and_an_unknown_name_is_an_attribute_error():
    names = {}
    exec("from megadalle.kernels import *", names)
    assert set(kernels.__all__) <= set(names)
    with pytest.raises(AttributeError, match="module 'megadalle.kernels' has no attribute 'sparse_atention'"):
        kernels.sparse_atention
