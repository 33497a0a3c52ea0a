"""`python -m megadalle.plan ARGS` is `megadalle plan ARGS`."""
from megadalle.cli import run_verb

run_verb("plan")
