"""Task registry: a plain dict from name to module; a dotted path 'package.module:TASK' admits user tasks.

This is the one list of task names: every command resolves ``--task`` (and ``grpolab data TASK``) here.
"""

from __future__ import annotations

import importlib

from grpolab.errors import UserError
from grpolab.tasks.base import ChatInputError, ChatSupport, Option, Task, Verdict, completion_text

TASKS: dict[str, str] = {
    "arith": "grpolab.tasks.arith",
    "sudoku": "grpolab.tasks.sudoku",
    "gsm8k": "grpolab.tasks.gsm8k",
    "calc": "grpolab.tasks.calc",
    "guess": "grpolab.tasks.guess",
}

__all__ = [
    "TASKS",
    "ChatInputError",
    "ChatSupport",
    "Option",
    "Task",
    "Verdict",
    "completion_text",
    "get_task",
    "import_object",
    "TASK_HELP",
]

TASK_HELP = f"{', '.join(TASKS)}, reasoning_gym/NAME or package.module:TASK"


def import_object(path: str, what: str):
    """The object at ``package.module:attr`` (user code plugs in this way); a UserError if it is missing."""
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise UserError(
            f"cannot import {what} '{path}': {error}; check the name and that the module is "
            "importable from here (PYTHONPATH)"
        ) from None
    except Exception as error:  # user code that fails while it is imported: the user's to fix
        raise UserError(f"importing {what} '{path}' failed: {type(error).__name__}: {error}") from error


def get_task(name: str) -> Task:
    """The Task called ``name``, a reasoning-gym dataset ``reasoning_gym/NAME``, or the ``TASK`` object at a
    dotted path ``package.module:ATTR``."""
    if name in TASKS:
        return importlib.import_module(TASKS[name]).TASK
    if name == "reasoning_gym" or name.startswith("reasoning_gym/"):
        from grpolab.tasks import gym

        return (
            gym.make_task(name.removeprefix(gym.PREFIX)) if name.startswith(gym.PREFIX) else gym.any_dataset()
        )
    if ":" in name:
        task = import_object(name, "task")
        if not isinstance(task, Task):
            raise UserError(f"'{name}' is a {type(task).__name__}, not a grpolab Task")
        return task
    raise UserError(f"unknown task '{name}': choose one of {TASK_HELP}")
