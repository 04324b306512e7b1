"""Errors that mean "the input is wrong", as opposed to a bug.

The CLI prints them as one message and exits with status 2, so each message must say which
file (or key) is at fault and what to change.
"""


class UserError(Exception):
    """Bad input: a config, a data file, a checkpoint. The message names it and the fix."""


class DataError(UserError):
    """Bad or inconsistent training data (shards, manifests, raw corpora)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, or does not match the run."""
