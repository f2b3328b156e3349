"""The ``grpolab`` command: a dispatcher that imports a command's module only when it runs.

Each command lives in ``grpolab.commands.<name>`` and exposes ``add_arguments(parser)`` and ``run(args)``.
Parsers are built without importing torch, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from grpolab import __version__
from grpolab.errors import UserError

COMMANDS: dict[str, str] = {
    "data": "Generate a task's data set as JSONL (e.g. 4x4 Sudoku puzzles with unique solutions).",
    "train": "Train a LoRA adapter with GRPO (TRL's GRPOTrainer) from a YAML recipe and flags.",
    "sft": "Supervised warm-up (TRL's SFTTrainer) on a task's reference answers before GRPO.",
    "eval": "Evaluate a model or trained adapter with the task's strict scorer; compare runs.",
    "chat": "Interactive multi-turn chat with a model, an adapter or a merged model.",
    "merge": "Merge a LoRA adapter into its base model and verify the merged logits.",
    "serve": "Start a vLLM generation server for GRPO training in vLLM server mode.",
    "doctor": "Check the environment: versions, devices, extras, cache and embedded model.",
    "model": "Prepare or inspect a model: convert the embedded default, run a quick check.",
    "probe": "Before training: sample GRPO groups and say whether they carry signal (train, sft, harder, "
             "easier).",
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the commands without importing any of them."""
    parser = argparse.ArgumentParser(
        prog="grpolab",
        description="GRPO fine-tuning for tasks with checkable answers: data, training, evaluation, chat, "
                    "merge.",
        epilog="commands:\n"
        + "\n".join(f"  {name:<8} {summary}" for name, summary in COMMANDS.items())
        + "\n\nRun 'grpolab COMMAND --help' for a command's options and an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"grpolab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument(
        "command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS)
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: a usage mistake is one line pointing at --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def command_parser(name: str, argv: list[str] | None = None):
    """(module, parser) for one command; only that command's module is imported.

    A command with ``TAKES_ARGV`` sees its arguments while building the parser (``grpolab data TASK`` adds
    the options of the task named there).
    """
    module = importlib.import_module(f"grpolab.commands.{name}")
    parser = _CommandParser(
        prog=f"grpolab {name}",
        description=COMMANDS[name],
        epilog=getattr(module, "EXAMPLE", None),
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    if getattr(module, "TAKES_ARGV", False):
        module.add_arguments(parser, argv or [])
    else:
        module.add_arguments(parser)
    return module, parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv:
        top.print_help()
        return 2
    head = top.parse_args(argv)
    module, parser = command_parser(head.command, head.rest)
    if getattr(module, "ACCEPTS_EXTRA", False):
        args, extra = parser.parse_known_args(head.rest)
    else:
        args, extra = parser.parse_args(head.rest), []
    args.command, args.extra, args.argv = head.command, extra, head.rest
    args.debug = args.debug or head.debug
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch's DataLoader warns that pin_memory needs an accelerator on every CPU run; nothing to act on.
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    try:
        return int(module.run(args) or 0)
    except UserError as error:
        if args.debug:
            raise
        _close_progress_bars()
        print(f"grpolab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grpolab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `grpolab doctor --json | head`
        sys.stderr.close()
        return 0


def _close_progress_bars() -> None:
    """End an open progress bar's line, so the error is a line of its own (and the last one)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
