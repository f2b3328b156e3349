"""Every `grpolab ...` command the README and the guides in docs/ give parses, into the values it names.

The migration page's train and sft commands also dry-run: recipe, flags, data and accelerate config all
resolve, as the page promises a user coming from the reference projects.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from grpolab.cli import COMMANDS as GRPOLAB_COMMANDS
from grpolab.cli import command_parser, main
from grpolab.errors import UserError
from grpolab.training import recipes
from tests.test_recipes import _recipe_inputs

ROOT = Path(__file__).resolve().parents[1]
GUIDES = sorted(page for page in (ROOT / "docs").glob("*.md") if page.name != "benchmarks.md")
PAGES = [ROOT / "README.md", *GUIDES]
MIGRATION = ROOT / "docs" / "migration.md"
TRAINERS = ("train", "sft")


def _argv(code: str) -> list[str] | None:
    """The grpolab arguments of one shell snippet (env vars, redirections, comments and `nohup` dropped)."""
    code = code.split(" #")[0].split(">")[0].split("|")[0].strip()
    try:
        words = shlex.split(code.split("(")[0] if "grpolab" in code.split("(")[0] else code)
    except ValueError:
        return None
    if "grpolab" not in words or "..." in words:  # "grpolab eval --adapter ..." is prose, not a command
        return None
    rest = words[words.index("grpolab") + 1 :]
    return rest if rest and rest[0] in GRPOLAB_COMMANDS else None  # not `docker compose run grpolab bash`


def _runs_bare(name: str) -> bool:
    """Whether ``grpolab NAME`` alone is a whole command (doctor is; merge needs --adapter)."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            command_parser(name, [])[1].parse_known_args([])
        except SystemExit:
            return False
    return True


def commands(path: Path) -> list[list[str]]:
    """The `grpolab ...` commands of one page: lines of its code blocks and its inline code spans."""
    text = path.read_text(encoding="utf-8")
    snippets = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        snippets += block.replace("\\\n", " ").splitlines()
    found = [argv for argv in map(_argv, snippets) if argv]
    # Inline code is a command when it has arguments and does not stop at a flag: `grpolab merge` or
    # `grpolab eval --compare` in a sentence names a command, it is not one to run.
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    inline = [argv for argv in map(_argv, re.findall(r"`([^`\n]+)`", outside)) if argv]
    found += [
        argv for argv in inline if (len(argv) > 1 or _runs_bare(argv[0])) and not argv[-1].startswith("--")
    ]
    return [argv for index, argv in enumerate(found) if argv not in found[:index]]


ALL = [(path.name, argv) for path in PAGES for argv in commands(path)]


def test_the_pages_have_commands_and_the_migration_page_covers_both_references():
    names = {argv[0] for argv in commands(MIGRATION)}
    assert {"train", "eval", "chat", "merge", "serve", "data", "doctor"} <= names
    assert len(commands(MIGRATION)) >= 15
    assert {name for name, _ in ALL} >= {"README.md", "gpu.md", "tasks.md", "evaluation.md", "probe.md"}


def _given(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of an argv (a flag followed by another flag, or last, is a bare switch)."""
    pairs = {}
    for index, word in enumerate(argv):
        if word.startswith("--"):
            name, _, inline = word[2:].partition("=")
            following = argv[index + 1] if index + 1 < len(argv) else ""
            pairs[name] = inline or ("" if following.startswith("--") else following)
    return pairs


@pytest.mark.parametrize(("page", "argv"), ALL, ids=[f"{page}: {' '.join(argv)[:50]}" for page, argv in ALL])
def test_each_command_parses_into_the_values_it_names(page, argv, capsys):
    if {"--help", "--help_trl"} & set(argv):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code in (0, None) and "--" in capsys.readouterr().out
        return
    if argv[0] in TRAINERS:
        from trl import SFTConfig

        extra = (SFTConfig, "sft-sudoku-smollm2.yaml", "sft") if argv[0] == "sft" else ()
        try:
            parsed = recipes.parse_train_args(argv[1:], *extra)
        except UserError as error:  # a placeholder the page asks the reader to fill in
            assert re.search(r"MODEL|RUN|PATH|\.\.\.", " ".join(argv)), f"{page}: {error}"
            return
        fields = {name: value for config in parsed for name, value in vars(config).items()}
        for name, value in _given(argv[1:]).items():
            if name in fields and value and not value.startswith(("{", "[")):
                shown = str(fields[name]).lower()
                assert value.split(",")[0].lower() in shown, f"--{name} {value} parsed as {fields[name]!r}"
        return
    module, parser = command_parser(argv[0], argv[1:])
    if getattr(module, "ACCEPTS_EXTRA", False):
        namespace = parser.parse_known_args(argv[1:])[0]
    else:
        namespace = parser.parse_args(argv[1:])
    for name, value in _given(argv[1:]).items():
        dest = name.replace("-", "_")
        if hasattr(namespace, dest) and value:
            shown = str(getattr(namespace, dest)).lower()
            assert value.lower() in shown or shown in value.lower(), (
                f"--{name} {value} parsed as {getattr(namespace, dest)!r}"
            )


MIGRATION_TRAINERS = [argv for argv in commands(MIGRATION) if argv[0] in TRAINERS]


@pytest.mark.parametrize("argv", MIGRATION_TRAINERS, ids=[" ".join(argv)[:60] for argv in MIGRATION_TRAINERS])
def test_migration_train_commands_dry_run(argv, tmp_path, monkeypatch):
    # The data file and warm-up adapter the recipe names, as the page's earlier steps leave them.
    monkeypatch.chdir(tmp_path)
    if "--config" in argv:
        _recipe_inputs(tmp_path, recipes.find_recipe(argv[argv.index("--config") + 1]))
    assert main([*argv, "--dry_run"]) == 0
