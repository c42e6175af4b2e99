"""``python -m pybpfasm.load``: load, attach and pin the multicast forwarder, then run its controller.

    python -m pybpfasm.load --upstream eth0 --downstream veth1,veth2 [--mode auto|native|generic]
                            [--instance NAME] [--keep] [--unknown drop|pass]

The controller runs in the foreground until SIGINT/SIGTERM, which detach the
programs and unpin the instance -- unless ``--keep``, which leaves forwarding
(with the membership of that moment) in place for a later controller to
re-adopt: running the same command again finds the pinned instance and
continues where the previous controller stopped (also after ``kill -9``).

Native mode and veths: a frame redirected by native XDP into a veth is
dropped unless the veth's *peer* runs an XDP program or has GRO enabled
(``ethtool -K PEER gro on``); the demo lab does this for its hosts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence

from pybpfasm.errors import UserError, is_user_error

DEFAULT_INSTANCE = "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", required=True, metavar="IF", help="interface multicast data arrives on")
    parser.add_argument("--downstream", required=True, metavar="IF[,IF...]",
                        help="comma-separated interfaces of the receivers (IGMP is snooped here)")
    parser.add_argument("--mode", choices=("auto", "native", "generic"), default="auto", help="XDP mode")
    parser.add_argument("--instance", default=DEFAULT_INSTANCE, help="name of the pinned instance")
    parser.add_argument("--keep", action="store_true", help="on exit, leave forwarding in place (pinned)")
    parser.add_argument("--unknown", choices=("drop", "pass"), default="drop",
                        help="what to do with multicast data for groups nobody joined")
    parser.add_argument("--quiet", action="store_true", help="do not log membership changes")


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _check_environment() -> None:
    from loader.pins import BPFFS, bpffs_mounted

    if os.geteuid() != 0:
        raise UserError("needs root (CAP_BPF and CAP_NET_ADMIN) to load and attach XDP programs")
    if not bpffs_mounted(BPFFS):
        raise UserError(f"no bpf filesystem mounted at {BPFFS} (mount -t bpf bpf {BPFFS})")


def _is_veth(ifname: str) -> bool:
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            (link,) = ipr.get_links(ifname=ifname)
            info = link.get_attr("IFLA_LINKINFO")
            return bool(info) and info.get_attr("IFLA_INFO_KIND") == "veth"
    except Exception:  # noqa: BLE001 - only a hint
        return False


def open_or_create(args: argparse.Namespace):  # -> (Instance, adopted: bool)
    from loader.instance import Instance, InstanceError
    from loader.pins import PinLayout

    downstreams = [d for d in args.downstream.split(",") if d]
    layout = PinLayout(args.instance)
    if layout.exists():
        inst = Instance.open(args.instance)
        pinned = set(inst.links)
        wanted = {args.upstream, *downstreams}
        if pinned != wanted or inst.upstream != args.upstream:
            inst.close()
            raise InstanceError(f"instance {args.instance!r} is pinned with upstream {inst.upstream} and "
                                f"downstream {','.join(sorted(pinned - {inst.upstream or ''}))}; "
                                f"unload it first (pybpfasm mcast unload --instance {args.instance})")
        return inst, True
    inst = Instance.create(args.instance, args.upstream, downstreams, mode=args.mode,
                           pass_unknown=args.unknown == "pass")
    return inst, False


def run(args: argparse.Namespace) -> int:
    from loader.controller import Controller

    _check_environment()
    inst, adopted = open_or_create(args)
    ctl = None
    started = False
    previous = {}

    stopped_by: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        if ctl is not None:
            ctl.stop()

    try:
        ctl = Controller(inst, log=None if args.quiet else _log)
        modes = inst.modes()
        downs = ", ".join(f"{d} ({modes.get(d, '?')})" for d in inst.downstreams)
        _log(f"instance {inst.name}: {'re-adopted' if adopted else 'loaded'}; upstream {inst.upstream} "
             f"({modes.get(inst.upstream or '', '?')}), downstream {downs}; pinned at {inst.layout.base}")
        if adopted:
            _log(f"re-adopted {len(ctl.adopted_groups)} groups, {ctl.adopted_hosts} host memberships")
        native_veths = [d for d in inst.downstreams if modes.get(d) == "native" and _is_veth(d)]
        if native_veths:
            _log(f"note: {', '.join(native_veths)} are veths in native mode: their peers need GRO on "
                 "(ethtool -K PEER gro on) or an XDP program, or redirected frames are dropped")
        _log("controller running; Ctrl-C / SIGTERM to stop" + (" (forwarding stays: --keep)" if args.keep
                                                                 else " and unload"))
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        started = True
        ctl.run()
        _log(f"{stopped_by[0] if stopped_by else 'stop'}: stopping after {ctl.events} events, "
             f"{ctl.changes} membership changes")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if ctl is not None:
            ctl.close()
        if args.keep or (adopted and not started):
            inst.close()
            _log(f"kept: forwarding continues; state pinned at {inst.layout.base}")
        else:
            inst.remove()
            _log("detached and unpinned")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pybpfasm.load", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"pybpfasm.load: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
