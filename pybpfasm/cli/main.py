"""Entry point of the ``pybpfasm`` command: dispatches to command modules.

Each module in ``COMMAND_MODULES`` defines ``register(subparsers)`` which adds
its subcommands and sets ``func`` on them. A user error is raised as
``CliError`` (or any ``UserError``) and printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = ["asm", "prog", "map", "link", "net", "dump", "run", "mcast", "demo"]


class CliError(Exception):
    """A user error: printed as one line, no traceback."""


# Subcommands registered by a module of another name.
COMMAND_ALIASES = {"disasm": "asm"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; given the command about to run, import only its module (start-up time:
    other command families pull in pyroute2 and friends, ~0.4 s)."""
    parser = argparse.ArgumentParser(prog="pybpfasm", description="Pure-Python eBPF toolchain")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    module_name = COMMAND_ALIASES.get(command or "", command)
    names = [module_name] if module_name in COMMAND_MODULES else COMMAND_MODULES
    for name in names:
        try:
            module = importlib.import_module(f"pybpfasm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pybpfasm.cli.{name}":
                continue  # command family not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # user errors: one line, no traceback
        from pybpfasm.errors import is_user_error

        if not is_user_error(exc):
            raise
        print(f"pybpfasm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
