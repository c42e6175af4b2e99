"""``pybpfasm net list [dev IF] [--netns NS]``, ``net attach``, ``net detach`` (bpftool net, XDP part).

``net list`` shows which program id is attached to which interface in which
XDP mode (bpftool's ``xdp:`` section; tc and flow dissector are not covered).
``net attach xdp|xdpgeneric|xdpdrv|xdpoffload PROG dev IF [overwrite]`` attaches
through netlink, so the program stays after the command exits, as with bpftool.
"""

from __future__ import annotations

import argparse
import sys

from .. import introspect, xdp
from .prog import add_output_flags, emit_json, wants_json

BPFTOOL_MODE = {"native": "driver", "generic": "generic", "offload": "offload"}
ATTACH_TYPES = {"xdp": "auto", "xdpgeneric": "generic", "xdpdrv": "native", "xdpoffload": "offload"}


def _entries(statuses: list[xdp.XdpStatus]) -> list[dict]:
    out = []
    for st in statuses:
        entry: dict = {"devname": st.ifname, "ifindex": st.ifindex}
        if st.attached == "multi":
            entry["multi_attachments"] = [{"mode": BPFTOOL_MODE[m], "id": st.prog_ids[m]}
                                          for m in ("generic", "native", "offload") if m in st.prog_ids]
        else:
            mode, prog_id = next(iter(st.prog_ids.items()))
            entry["mode"], entry["id"] = BPFTOOL_MODE[mode], prog_id
        out.append(entry)
    return out


def _list(args: argparse.Namespace) -> int:
    words = list(getattr(args, "words", None) or [])
    if words and words[0] == "dev":
        words = words[1:]
    if len(words) > 1:
        raise introspect.IntrospectError(f"expected 'dev IF', got {' '.join(args.words)}")
    args.dev = words[0] if words else None
    if args.dev:
        statuses = [s for s in [xdp.query_xdp(args.dev, args.netns)] if s.prog_ids]
    else:
        statuses = xdp.list_xdp(args.netns)
    entries = _entries(statuses)
    if wants_json(args):
        emit_json([{"xdp": entries}], args)
        return 0
    lines = ["xdp:"]
    for e in entries:
        if "multi_attachments" in e:
            progs = "".join(f" {a['mode']} id {a['id']}" for a in e["multi_attachments"])
            lines.append(f"{e['devname']}({e['ifindex']}){progs}")
        else:
            lines.append(f"{e['devname']}({e['ifindex']}) {e['mode']} id {e['id']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _attach(args: argparse.Namespace) -> int:
    introspect.require_root()
    sel = introspect.parse_selector(args.prog, "prog")
    fds = introspect.select_fds("prog", sel)
    if len(fds) != 1:
        for fd in fds:
            fd.close()
        raise introspect.IntrospectError(f"{sel} matches {len(fds)} programs; use id N")
    with fds[0] as fd:
        att = xdp.attach_xdp(args.dev, fd, mode=ATTACH_TYPES[args.type], replace=bool(args.overwrite), netns=args.netns)
        att.close()  # the attachment outlives this command
    return 0


def _detach(args: argparse.Namespace) -> int:
    introspect.require_root()
    mode = None if args.type == "xdp" else ATTACH_TYPES[args.type]
    xdp.detach_xdp(args.dev, mode, args.netns)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    net = subparsers.add_parser("net", help="XDP attachments of network interfaces (like bpftool net)")
    sub = net.add_subparsers(dest="net_command", metavar="{list,show,attach,detach}")
    for name in ("list", "show"):
        p = sub.add_parser(name, help="XDP programs attached per interface")
        p.add_argument("words", nargs="*", metavar="dev IF", help="only this interface")
        p.add_argument("--netns", help="namespace name (/run/netns) instead of the current one")
        add_output_flags(p)
        p.set_defaults(func=_list)
    p = sub.add_parser("attach", help="attach an XDP program with netlink (stays after exit)")
    p.add_argument("type", choices=sorted(ATTACH_TYPES), help="xdp (auto), xdpdrv, xdpgeneric, xdpoffload")
    p.add_argument("prog", nargs=2, metavar="PROG", help="id N | pinned PATH | name NAME | tag TAG")
    p.add_argument("dev_kw", choices=["dev"], help=argparse.SUPPRESS)
    p.add_argument("dev", help="interface")
    p.add_argument("overwrite", nargs="?", choices=["overwrite"], help="replace a program that is there")
    p.add_argument("--netns", help="namespace name (/run/netns)")
    p.set_defaults(func=_attach)
    p = sub.add_parser("detach", help="detach the netlink-attached XDP program")
    p.add_argument("type", choices=sorted(ATTACH_TYPES))
    p.add_argument("dev_kw", choices=["dev"], help=argparse.SUPPRESS)
    p.add_argument("dev", help="interface")
    p.add_argument("--netns", help="namespace name (/run/netns)")
    p.set_defaults(func=_detach)
    net.set_defaults(func=_list, words=None, netns=None, json=False, pretty=False)
