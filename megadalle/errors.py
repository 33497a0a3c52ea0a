"""The base of errors a user can fix from the command line (a bad value, a refused resume).

The CLI prints these as one line naming the problem and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message alone tells the user what to change."""
