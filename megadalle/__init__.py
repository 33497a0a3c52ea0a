"""megadalle: DALL-E-style text-to-image training. `megadalle.load_pipeline(FOLDER)` loads a model folder.

Attributes are imported on first use, so `import megadalle` stays cheap (no torch until needed): `load_pipeline`,
and each submodule by its name (`megadalle.sample.generate` after `import megadalle`, as README writes it: it was an
AttributeError unless the submodule had been imported first).
"""
import importlib
import importlib.util
import sys
from importlib.abc import MetaPathFinder
from pathlib import Path

__all__ = ["load_pipeline"]


def __getattr__(name: str):
    if name == "load_pipeline":
        from megadalle.bundle import load_pipeline

        return load_pipeline
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'megadalle' has no attribute {name!r}")


class _KernelsNeedAnInstall(MetaPathFinder):
    """Last on sys.meta_path: asked for `megadalle.kernels` only when no installed megadalle serves it.

    The kernels live in the checkout's top-level kernels/ folder, which an install maps to megadalle.kernels
    (setup.py's package_dir): a checkout's megadalle/ source folder, imported from the working directory,
    shadows an installed (non-editable) megadalle and has no kernels/ inside. Say so in one line, rather than
    "No module named 'megadalle.kernels'".
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "megadalle.kernels":
            return None
        package = Path(__file__).resolve().parent
        where = (f"the megadalle imported is the source folder {package} of a checkout, whose kernels/ only an "
                 f"install makes megadalle.kernels: run scripts/setup.sh there (an editable install), or start "
                 f"Python outside the checkout to use an installed megadalle"
                 if (package.parent / "kernels" / "__init__.py").is_file() and (package.parent / "setup.py").is_file()
                 else f"the megadalle imported from {package} has no kernels beside it: install megadalle from a "
                      f"whole checkout (scripts/setup.sh)")
        raise ModuleNotFoundError(f"megadalle.kernels is not importable: {where}", name=fullname)


if not any(isinstance(finder, _KernelsNeedAnInstall) for finder in sys.meta_path):
    sys.meta_path.append(_KernelsNeedAnInstall())
