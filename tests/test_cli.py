"""The CLI surface: help everywhere, without importing torch; one-line errors with exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from grpolab import __version__
from grpolab.cli import COMMANDS, main


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"grpolab {__version__}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_has_an_example_and_does_not_import_torch(command):
    code = (
        "import sys\nfrom grpolab.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout.lower()
    assert result.stdout.strip().endswith("NO-TORCH")
    # An option whose help already names its default does not get a second "(default: ...)".
    text = " ".join(result.stdout.split())
    assert not re.search(r"default[^()]*\)\s*\(default:", text), text


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2


def test_user_error_is_one_line_without_traceback(capsys):
    assert main(["model", "path", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("grpolab model: error: unknown model 'no-such-model'")
    assert "Traceback" not in err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "grpolab", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"grpolab {__version__}"
