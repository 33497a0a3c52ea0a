"""Every file under a folder with its bytes: what a refused or a careful encode must leave exactly as it was.

A helper, not a test module: encode's tests of the outputs it must not touch (tests/dvae/test_encode.py,
test_encode_foreign_val.py) compare the same snapshot, and neither should be the other's library.
"""


def file_bytes(root):
    """{path relative to `root`: its bytes} for each file under `root`."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
