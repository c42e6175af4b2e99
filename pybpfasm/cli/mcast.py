"""``pybpfasm mcast load|show|unload``: the multicast forwarder from the command line."""

from __future__ import annotations

import argparse
import json


def _show(args: argparse.Namespace) -> int:
    from loader.pins import list_instances
    from loader.status import gather, render

    names = [args.instance] if args.instance else list_instances()
    if not names:
        from loader.pins import PinError

        raise PinError("no forwarder instance is pinned (start one with python -m pybpfasm.load)")
    statuses = [gather(n) for n in names]
    if args.json:
        print(json.dumps(statuses[0] if args.instance else statuses, indent=2))
    else:
        print("\n\n".join(render(s) for s in statuses))
    return 0


def _unload(args: argparse.Namespace) -> int:
    from loader.instance import remove_instance

    remove_instance(args.instance)
    print(f"instance {args.instance} detached and unpinned")
    return 0


def _load(args: argparse.Namespace) -> int:
    from pybpfasm.load import run

    return run(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    from pybpfasm.load import DEFAULT_INSTANCE, add_arguments

    mcast = subparsers.add_parser("mcast", help="the XDP multicast forwarder (IGMP snooping)")
    sub = mcast.add_subparsers(dest="mcast_command", metavar="ACTION")
    load = sub.add_parser("load", help="load, attach and run the controller (same as python -m pybpfasm.load)")
    add_arguments(load)
    load.set_defaults(func=_load)
    show = sub.add_parser("show", help="groups, ports, counters and program statistics from the pinned state")
    show.add_argument("--instance", default=None, help="instance name (default: every pinned instance)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)
    unload = sub.add_parser("unload", help="detach the programs and unpin an instance")
    unload.add_argument("--instance", default=DEFAULT_INSTANCE)
    unload.set_defaults(func=_unload)
    mcast.set_defaults(func=lambda args: (mcast.print_help(), 2)[1])
