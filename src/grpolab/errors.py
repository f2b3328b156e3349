"""Errors that reach the user as one line and exit code 2.

A ``UserError`` means the input was wrong (a flag, a file, a model name): the CLI prints its message and
exits 2, with no traceback unless ``--debug`` is given. Anything else is a bug in grpolab and is shown in
full, with exit code 1: a failing reward function must never look like a model that scores 0.
"""


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and what to do."""


class RewardFunctionError(RuntimeError):
    """A reward function raised or returned something unusable; names the function."""


class UserRewardError(UserError, RewardFunctionError):
    """A reward function of the user's own (``package.module:function``) raised, hung or returned junk.

    The user's to fix, so it is one line and exit code 2; a task's built-in reward failing the same way
    is a bug of ours and stays a RewardFunctionError with its traceback.
    """


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): for one-line errors."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def one_line(error: BaseException) -> str:
    """An exception's whole message on one line (a multi-line message joined by spaces)."""
    return " ".join(str(error).split())
