"""Errors that reach the user as one line and exit code 2.

A ``UserError`` means the input was wrong (a flag, a file, a model name): the CLI prints its message and
exits 2, with no traceback unless ``--debug`` is given. Anything else is a bug in grpolab and is shown in
full, with exit code 1: a failing reward function must never look like a model that scores 0.
"""


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and what to do."""


class RewardFunctionError(RuntimeError):
    """A reward function raised or returned something unusable; names the function."""
