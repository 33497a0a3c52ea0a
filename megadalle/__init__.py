"""megadalle: DALL-E-style text-to-image training. `megadalle.load_pipeline(FOLDER)` loads a model folder.

Attributes are imported on first use, so `import megadalle` stays cheap (no torch until needed).
"""

__all__ = ["load_pipeline"]


def __getattr__(name: str):
    if name == "load_pipeline":
        from megadalle.bundle import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'megadalle' has no attribute {name!r}")
