"""Command-line flags from dataclass fields, so a flag's name, type, default and help are written once.

``add_fields`` turns the fields that carry ``metadata={"help": ...}`` into argparse flags without
importing anything heavy (``--help`` stays fast); ``parse_fields`` reads the flags back into the dataclass
with TRL's parser (transformers' ``HfArgumentParser``), the machinery ``grpolab train`` uses, and turns a
value a field refuses into one line naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from grpolab.errors import UserError, one_line

Config = TypeVar("Config")


def add_fields(parser: argparse.ArgumentParser, cls: type, groups: dict[str, tuple[str, ...]] | None = None,
               **defaults: Any) -> None:
    """One ``--NAME`` flag per field of ``cls`` with help metadata; ``groups`` titles sections of the help,
    ``defaults`` override the dataclass's defaults for this command."""
    hints = typing.get_type_hints(cls)
    sections = {
        name: parser.add_argument_group(title) for title, names in (groups or {}).items() for name in names
    }
    for spec in dataclasses.fields(cls):
        if "help" not in spec.metadata:
            continue
        target = sections.get(spec.name, parser)
        default = defaults.get(spec.name, _default(spec))
        kind = _scalar(hints[spec.name])
        target.add_argument(
            f"--{spec.name}",
            type=kind,
            default=None if isinstance(default, dict) else default,
            choices=spec.metadata.get("choices"),
            help=spec.metadata["help"],
        )


def parse_fields(cls: type[Config], argv: list[str], command: str, **defaults: Any) -> Config:
    """The dataclass ``cls`` from ``argv`` (flags of other dataclasses are left to the caller's parser)."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str):
            raise UserError(f"{message} (see 'grpolab {command} --help')")

    parser = Parser(cls)
    parser.set_defaults(**defaults)
    try:
        config, _ = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as error:
        raise UserError(one_line(error)) from None
    return config


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None


def _scalar(annotation: Any) -> type:
    """The type argparse converts a flag's text with: int, float, else str (mappings, lists come as text)."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    return args[0] if args[0] in (int, float) else str
