"""``grpolab doctor``: check the environment before a run and name the fix for anything that blocks it."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  grpolab doctor               # table: versions, device, extras, cache, embedded model
  grpolab doctor --json | jq '.checks[] | select(.status != "ok")'

exit status: 0 when nothing blocks training the embedded model, 1 when a FAIL row does."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from grpolab import doctor

    checks = doctor.collect()
    print(doctor.to_json(checks) if args.json else doctor.format_table(checks))
    return doctor.exit_code(checks)
