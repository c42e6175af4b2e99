"""``pybpfasm link list|show [id N | pinned PATH]``, ``link detach``, ``link pin`` (bpftool link)."""

from __future__ import annotations

import argparse

from .. import introspect, syscall
from .prog import add_show_parsers, show_objects


def _show(args: argparse.Namespace) -> int:
    return show_objects("link", args)


def _one_link(words: list[str]) -> syscall.Fd:
    introspect.require_root()
    sel = introspect.parse_selector(words, "link")
    (fd,) = introspect.select_fds("link", sel)
    return fd


def _detach(args: argparse.Namespace) -> int:
    """BPF_LINK_DETACH: the hook loses the program even while the link is pinned or held."""
    with _one_link(args.selector) as fd:
        try:
            syscall.link_detach(fd)
        except OSError as exc:
            raise introspect.IntrospectError(f"cannot detach link {' '.join(args.selector)}: {exc}") from None
    return 0


def _pin(args: argparse.Namespace) -> int:
    with _one_link(args.selector) as fd:
        try:
            syscall.obj_pin(fd, args.path)
        except OSError as exc:
            raise introspect.IntrospectError(f"cannot pin at {args.path}: {exc}") from None
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    link = subparsers.add_parser("link", help="list, show, pin and detach BPF links (like bpftool link)")
    sub = link.add_subparsers(dest="link_command", metavar="{list,show,detach,pin}")
    add_show_parsers(sub, "link", "id N | pinned PATH")
    p = sub.add_parser("detach", help="detach a link from its hook")
    p.add_argument("selector", nargs=2, metavar="SELECTOR", help="id N | pinned PATH")
    p.set_defaults(func=_detach)
    p = sub.add_parser("pin", help="pin a link in bpffs")
    p.add_argument("selector", nargs=2, metavar="SELECTOR", help="id N | pinned PATH")
    p.add_argument("path", help="bpffs path (no '.' in names)")
    p.set_defaults(func=_pin)
    link.set_defaults(func=_show, selector=None, bpffs=False, json=False, pretty=False)
