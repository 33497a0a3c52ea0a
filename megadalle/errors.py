"""The base of errors a user can fix from the command line (a bad value, a refused resume).

The CLI prints these as one line naming the problem and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message alone tells the user what to change."""


class BundleError(UserError, ValueError):
    """A model folder, or a run's record of its pieces, that cannot be written or read as asked (bundle_write.py,
    sampling/files.py, run_pieces.py); the message names the key or file."""


class StoppedBySignal(Exception):
    """A stop signal (a scheduler's preemption or time-limit warning) ended a command's start-up before it had
    anything to save: the CLI prints its one line and exits with STOPPED_EXIT (75), which launch/slurm's batch
    script requeues, instead of the 143 of TERM's default action, which it does not."""
