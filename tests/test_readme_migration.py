"""README 'Coming from rl-trl / sudoku_trl_grpo': every grpolab command it gives parses, and train commands
dry-run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from grpolab.cli import COMMANDS as GRPOLAB_COMMANDS
from grpolab.cli import command_parser, main
from grpolab.training import recipes
from tests.test_recipes import _recipe_inputs

README = Path(__file__).resolve().parents[1] / "README.md"


def migration_commands() -> list[list[str]]:
    """The `grpolab ...` commands in the section's tables, as argv lists (shell redirections dropped)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Coming from rl-trl / sudoku_trl_grpo")[1].split("\n## ")[0]
    commands = []
    for code in re.findall(r"`([^`]+)`", section):
        words = shlex.split(code.split(">")[0].split("(")[0])
        rest = words[words.index("grpolab") + 1 :] if "grpolab" in words else []
        if rest and rest[0] in GRPOLAB_COMMANDS:  # not `docker compose run grpolab bash`
            commands.append(rest)
    return commands


COMMANDS = migration_commands()


def test_the_section_covers_both_references():
    names = {argv[0] for argv in COMMANDS}
    assert {"train", "eval", "chat", "merge", "serve", "data", "doctor"} <= names
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(argv)[:60] for argv in COMMANDS])
def test_each_command_parses(argv, tmp_path, monkeypatch):
    if argv[0] in ("train", "sft"):
        # The data file and warm-up adapter the recipe names, as the README's earlier steps leave them.
        monkeypatch.chdir(tmp_path)
        if "--config" in argv:
            _recipe_inputs(tmp_path, recipes.find_recipe(argv[argv.index("--config") + 1]))
        assert main([*argv, "--dry_run"]) == 0  # recipe, flags, data and accelerate config all resolve
        return
    module, parser = command_parser(argv[0])
    if getattr(module, "ACCEPTS_EXTRA", False):
        parser.parse_known_args(argv[1:])
    else:
        parser.parse_args(argv[1:])
