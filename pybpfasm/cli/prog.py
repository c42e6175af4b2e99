"""``pybpfasm prog list|show [id N | pinned PATH | name NAME | tag TAG]`` (bpftool prog show).

Also home of the small output helpers the other bpftool-like commands share
(``--json`` / ``--pretty`` and the selector words).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import introspect


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-j", "--json", action="store_true", help="JSON output (bpftool's keys)")
    parser.add_argument("-p", "--pretty", action="store_true", help="indented JSON output")


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False) or getattr(args, "pretty", False))


def emit_json(obj: Any, args: argparse.Namespace) -> None:
    if getattr(args, "pretty", False):
        print(json.dumps(obj, indent=4))
    else:
        print(json.dumps(obj, separators=(",", ":")))


def selector_of(words: list[str] | None, kind: str) -> introspect.Selector | None:
    return introspect.parse_selector(words, kind) if words else None


def show_objects(kind: str, args: argparse.Namespace) -> int:
    introspect.require_root()
    sel = selector_of(args.selector, kind)
    recs = introspect.records(kind, sel, bpffs=introspect.DEFAULT_BPFFS if args.bpffs else None)
    if wants_json(args):
        # bpftool: an array for a listing or several matches, a bare object for exactly one
        emit_json(recs if sel is None or len(recs) != 1 else recs[0], args)
    else:
        sys.stdout.write("".join(introspect.plain(kind, r) for r in recs))
    return 0


def add_show_parsers(sub: argparse._SubParsersAction, kind: str, selectors: str) -> None:
    """``KIND list|show [SELECTOR] [-f] [-j|-p]``, the same for programs, maps and links (as in bpftool)."""
    plural = {"prog": "programs", "map": "maps", "link": "links"}[kind]
    for name in ("list", "show"):
        p = sub.add_parser(name, help=f"show {plural} (all, or those a selector names)")
        p.add_argument("selector", nargs="*", metavar="SELECTOR", help=selectors)
        p.add_argument("-f", "--bpffs", action="store_true", help="also show pinned paths under /sys/fs/bpf")
        add_output_flags(p)
        p.set_defaults(func=lambda args: show_objects(kind, args))


def _show(args: argparse.Namespace) -> int:
    return show_objects("prog", args)


def register(subparsers: argparse._SubParsersAction) -> None:
    prog = subparsers.add_parser("prog", help="list and show loaded BPF programs (like bpftool prog)")
    sub = prog.add_subparsers(dest="prog_command", metavar="{list,show}")
    add_show_parsers(sub, "prog", "id N | pinned PATH | name NAME | tag TAG")
    prog.set_defaults(func=_show, selector=None, bpffs=False, json=False, pretty=False)
