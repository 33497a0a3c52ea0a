"""`python -m megadalle.train ARGS` is `megadalle train ARGS`."""
from megadalle.cli import run_verb

run_verb("train")
