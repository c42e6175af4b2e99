"""``pybpfasm run EXAMPLE --dev IFACE [--mode M] [--duration S] [example options]``.

Runs one of the DSL examples (``examples/NAME.py`` or just ``NAME``) the way the seeds'
loaders do: import it (its maps are created), apply its options (``configure``), build and
load its ``@xdp`` program, attach it, run its user-space part (printing counts or events)
until Ctrl-C / SIGTERM / ``--duration``, then detach.  The example module's conventions
are described in ``examples/__init__.py``.

The example's own options are known only once it is imported, so everything after
EXAMPLE is parsed in a second step together with the example's ``add_arguments``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parser.add_argument("--dev", "-d", default=d(None), metavar="IFACE", help="interface to attach to")
    parser.add_argument("--mode", choices=("native", "generic", "auto"), default=d("auto"),
                        help="XDP mode (default: auto = native, else generic)")
    parser.add_argument("--method", choices=("link", "netlink"), default=d("link"),
                        help="bpf_link (default: detached even if this process dies) or netlink (like ip link)")
    parser.add_argument("--netns", default=d(None), metavar="NAME", help="namespace of --dev (default: this one)")
    parser.add_argument("--duration", type=float, default=d(None), metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")


def example_parser(module: ModuleType, target: str) -> argparse.ArgumentParser:
    """The second-step parser: common options plus the example's own."""
    parser = argparse.ArgumentParser(prog=f"pybpfasm run {target}",
                                     description=(module.__doc__ or "").strip().split("\n")[0])
    _common_options(parser, defaults=False)
    add_arguments = getattr(module, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(parser)
    return parser


def parse_example_args(module: ModuleType, args: argparse.Namespace) -> argparse.Namespace:
    """Merge: options given after EXAMPLE override those given before it."""
    parsed = example_parser(module, args.example).parse_args(args.example_args)
    for name in ("dev", "mode", "method", "netns", "duration"):
        if not hasattr(parsed, name):
            setattr(parsed, name, getattr(args, name))
    parsed.example = args.example
    return parsed


@contextmanager
def stop_on_signals(stop: threading.Event, duration: float | None) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM (restoring the old handlers after) or after ``duration``."""
    handler = lambda signum, frame: stop.set()  # noqa: E731
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = threading.Timer(duration, stop.set) if duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        for sig, h in old.items():
            signal.signal(sig, h)


def run_example(module: ModuleType, args: argparse.Namespace, stop: threading.Event | None = None,
                out: Any = None) -> int:
    """Configure, load, attach, run user space until ``stop``, detach. ``args`` as parsed by run."""
    import examples
    from pybpfasm import xdp

    from .main import CliError

    out = out or sys.stdout
    stop = stop or threading.Event()
    if not args.dev:
        raise CliError("run needs --dev IFACE")
    where = xdp.resolve_interface(args.dev, args.netns)   # fail before doing anything else
    configure = getattr(module, "configure", None)
    if configure is not None:
        configure(args)
    dsl_prog = examples.program_of(module)
    prog = dsl_prog.load()
    try:
        with xdp.attach_xdp(where.ifindex, prog, mode=args.mode, method=args.method, netns=args.netns) as att:
            print(f"{dsl_prog.name}: {len(dsl_prog.instructions)} instructions, attached to {where.ifname} "
                  f"({att.mode}, {att.method}); Ctrl-C to stop", file=out, flush=True)
            userspace = getattr(module, "userspace", None)
            if userspace is not None:
                userspace(prog, examples.maps_of(module), stop)
            stop.wait()
        print(f"detached from {where.ifname}", file=out, flush=True)
    finally:
        prog.close()
    return 0


def _run(args: argparse.Namespace) -> int:
    import examples

    module = examples.load(args.example)
    try:
        parsed = parse_example_args(module, args)
        stop = threading.Event()
        with stop_on_signals(stop, parsed.duration):
            return run_example(module, parsed, stop)
    finally:
        examples.close(module)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run a DSL example on an interface until Ctrl-C (examples/NAME.py)",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("example", metavar="EXAMPLE", help="examples/NAME.py or NAME (hello, xdp_dnat, ...)")
    _common_options(p, defaults=True)
    p.add_argument("example_args", nargs=argparse.REMAINDER, metavar="...",
                   help="--dev and the other options may also follow EXAMPLE, with the example's own "
                        "(pybpfasm run EXAMPLE --help lists them)")
    p.set_defaults(func=_run)

