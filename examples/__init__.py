"""The XDP programs of the seeds, written in the pybpfasm DSL: one module per program.

===================  ===========================================================================
hello                ``bpf_printk`` on every packet, XDP_PASS
packet_inspect       parse Ethernet + IPv4, print source, destination and protocol
packet_counter       per-IP-protocol packet counts (hash map, atomic add, BPF_NOEXIST insert)
connection_tracker   per-{src, dst, proto} packets and bytes (padded struct key)
mytcpdump            TCP/UDP packet events through a ring buffer, printed like tcpdump
xdp_dnat             VIP:port -> backend IP:port DNAT, incremental checksums, bpf_redirect
drop_port_8080       drop TCP to port 8080
icmp_lb              round-robin ICMP echo load balancer, bpf_csum_diff checksum, XDP_TX
xdp_metadata         5-tuple metadata to a ring buffer, printed in Python
xdp_stats            per-source-IPv4 packet counts in an LRU hash, printed every second
===================  ===========================================================================

Convention of an example module (what ``pybpfasm run examples/NAME.py --dev IFACE`` and the
tests rely on):

* its maps are module-level ``pybpfasm.maps`` objects, created in the kernel when the module is
  imported (as a libbpf skeleton creates its maps at load);
* its program is the module's one ``@xdp`` function (``program = ...`` picks one if there are
  several);
* ``add_arguments(parser)`` (optional) declares the example's own command-line options;
* ``configure(args)`` (optional) applies them before the program is built: fills maps
  (backends, services) or sets module constants the program reads at build time (like a
  C ``#define``);
* ``userspace(prog, maps, stop)`` (optional) is the user-space side: it prints counts or
  events until ``stop`` (a ``threading.Event``) is set; ``prog`` is the loaded
  ``pybpfasm.program.Program``, ``maps`` the module's maps by variable name.

``load(name_or_path)`` imports a FRESH copy of an example (new maps, new program), so tests
and runs never share state; ``close(module)`` closes its maps.  The small helpers below keep
the user-space parts as short as the seeds' loaders are long.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import os
import select
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from pybpfasm.errors import UserError

NAMES = ("hello", "packet_inspect", "packet_counter", "connection_tracker", "mytcpdump", "xdp_dnat",
         "drop_port_8080", "icmp_lb", "xdp_metadata", "xdp_stats")

_fresh = itertools.count(1)


class ExampleError(UserError):
    """An example cannot be found, has no program, or was given bad options."""


# ----------------------------------------------------------------------------- modules


def path_of(target: str) -> str:
    """The file of an example given as a path (``examples/hello.py``) or a name (``hello``)."""
    if target.endswith(".py") or os.sep in target:
        if not os.path.isfile(target):
            raise ExampleError(f"no such example file: {target}")
        return target
    path = os.path.join(os.path.dirname(__file__), f"{target}.py")
    if target.startswith("_") or not os.path.isfile(path):
        raise ExampleError(f"no example named {target!r} (known: {', '.join(NAMES)})")
    return path


def load(target: str) -> ModuleType:
    """Import a fresh copy of an example (its maps are created now, its program not yet built)."""
    path = path_of(target)
    stem = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"examples._run{next(_fresh)}_{stem}", path)
    if spec is None or spec.loader is None:
        raise ExampleError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def program_of(module: ModuleType) -> Any:
    """The module's ``@xdp`` program: ``module.program`` or its only XdpProgram."""
    from pybpfasm.dsl import XdpProgram

    chosen = getattr(module, "program", None)
    if isinstance(chosen, XdpProgram):
        return chosen
    found = [v for v in vars(module).values() if isinstance(v, XdpProgram)]
    if len(found) != 1:
        raise ExampleError(f"{module.__file__}: expected one @xdp program, found {len(found)} "
                           "(set `program = ...` to choose)")
    return found[0]


def maps_of(module: ModuleType) -> dict[str, Any]:
    """The module-level maps by variable name."""
    from pybpfasm.maps import Map

    return {name: v for name, v in vars(module).items() if isinstance(v, Map)}


def close(module: ModuleType) -> None:
    for m in maps_of(module).values():
        m.close()


# ----------------------------------------------------------------------------- user-space helpers


def every(seconds: float, stop: threading.Event) -> Iterator[None]:
    """Yield every ``seconds`` until ``stop`` is set (a ticker that stops promptly)."""
    while not stop.wait(seconds):
        yield


def ring_records(ringbuf_map: Any, stop: threading.Event, poll: float = 0.1) -> Iterator[bytes]:
    """Records of a ring buffer map as they come (copies), until ``stop`` is set."""
    from pybpfasm.ringbuf import RingBuffer

    with RingBuffer(ringbuf_map) as rb:
        while not stop.is_set():
            rb.wait(poll)
            yield from rb.drain()


TRACEFS = "/sys/kernel/tracing"
_TRACE_PIPES = (os.path.join(TRACEFS, "trace_pipe"), "/sys/kernel/debug/tracing/trace_pipe")


def follow_trace(stop: threading.Event, poll: float = 0.2) -> Iterator[str]:
    """Lines of the kernel trace pipe (what ``cat trace_pipe`` shows: bpf_printk output)."""
    pipe = next((p for p in _TRACE_PIPES if os.path.exists(p)), None)
    if pipe is None:
        raise ExampleError(f"no trace_pipe: mount tracefs first (mount -t tracefs nodev {TRACEFS})")
    fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        pending = b""
        while not stop.is_set():
            if not select.select([fd], [], [], poll)[0]:
                continue
            try:
                pending += os.read(fd, 65536)
            except BlockingIOError:
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
    finally:
        os.close(fd)


PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 41: "IPv6-in-IPv4", 47: "GRE", 50: "ESP (IPSec)",
               58: "ICMPv6"}


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, "other")


def ip(text: str) -> int:
    """Dotted quad -> the address as a number (store it in a be32 field)."""
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise ExampleError(f"bad IPv4 address {text!r}") from None


def ip_str(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` -> 6 bytes."""
    try:
        raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ExampleError(f"bad MAC address {text!r}")
    return raw


def host_port(text: str, default_port: int | None = None) -> tuple[int, int]:
    """``10.0.0.1:80`` -> (address, port)."""
    addr, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not sep:
        if default_port is None:
            raise ExampleError(f"expected ADDRESS:PORT, got {text!r}")
        return ip(text), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ExampleError(f"bad port in {text!r}")
    return ip(addr), int(port)
