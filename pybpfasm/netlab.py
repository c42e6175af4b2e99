"""Network labs: named namespaces and veth pairs that are always cleaned up.

Tests, demos and end-to-end checks need small throw-away topologies (a host
namespace, a veth, a forwarder namespace ...).  ``Lab`` creates them under one
unique name prefix and deletes everything it made when the ``with`` block
ends, even on exceptions; ``sweep(prefix)`` removes leftovers of a crashed run.

Links are managed with pyroute2 (``IPRoute(netns=NAME)``), ethtool features
with the legacy ``SIOCETHTOOL`` ioctl, sysctls by writing ``/proc/sys`` from a
thread that has entered the namespace (``/proc/sys/net`` follows the calling
thread's namespace).  Namespaces are the ``ip netns`` kind: a bind mount in
``/run/netns/NAME``, so ``ip -n NAME ...`` and ``nsenter --net=/run/netns/NAME``
work on them too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import pickle
import socket
import struct
import subprocess
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from .errors import UserError

NETNS_DIR = "/run/netns"
IFNAMSIZ = 16
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NetLabError(UserError):
    """A lab operation failed (no such namespace or interface, name too long, ...)."""


# --------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def list_netns(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def create_netns(name: str) -> str:
    """Create the named namespace (like ``ip netns add``) with its loopback up."""
    if "/" in name or not name:
        raise NetLabError(f"bad namespace name {name!r}")
    if netns_exists(name):
        raise NetLabError(f"namespace {name!r} already exists")
    netns.create(name)
    set_up("lo", netns=name)
    return name


def delete_netns(name: str) -> None:
    """Delete a namespace; its interfaces (and their veth peers) go with it."""
    if not netns_exists(name):
        return
    # Delete links first so veth peers in other namespaces vanish now, not
    # when the kernel gets around to tearing the namespace down.
    try:
        with iproute(name) as ipr:
            for link in ipr.get_links():
                if link.get_attr("IFLA_IFNAME") != "lo":
                    try:
                        ipr.link("del", index=link["index"])
                    except NetlinkError:
                        pass
    except (OSError, NetlinkError):
        pass
    netns.remove(name)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def enter_netns(name: str | None) -> Iterator[None]:
    """Move the *calling thread* into namespace ``name`` for the block (None: stay).

    Sockets created inside keep the namespace after the block; ``/proc/sys/net``
    opened inside is the namespace's.  Other threads are not affected.
    """
    if name is None:
        yield
        return
    if not netns_exists(name):
        raise NetLabError(f"no such network namespace {name!r}")
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)


def run_in_netns(name: str | None, fn: Callable[..., T], *args: Any, fork: bool = False, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` inside namespace ``name`` and return its result.

    ``fork=False`` runs it in a fresh thread (cheap, shares memory);
    ``fork=True`` runs it in a forked child (isolation: a crash or a leaked fd
    stays there); result and exception travel back pickled.
    """
    if fork:
        return _run_forked(name, fn, args, kwargs)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            with enter_netns(name):
                box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _run_forked(name: str | None, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        try:
            if name is not None:
                fd = os.open(netns_path(name), os.O_RDONLY)
                _setns(fd)
                os.close(fd)
            payload = pickle.dumps(("ok", fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001
            try:
                payload = pickle.dumps(("error", exc))
            except Exception:  # unpicklable exception
                payload = pickle.dumps(("error", RuntimeError(traceback.format_exc())))
        with os.fdopen(wfd, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"child in namespace {name!r} died (wait status {status})")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise value
    return value


def ns_command(name: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed to run inside namespace ``name`` (keeps the root /sys and bpffs)."""
    if name is None:
        return list(argv)
    return ["nsenter", f"--net={netns_path(name)}", "--", *argv]


def popen_in_netns(name: str | None, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(ns_command(name, argv), **kwargs)


def run_cmd(name: str | None, argv: Sequence[str], *, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command inside namespace ``name``; output captured as text unless told otherwise."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    proc = subprocess.run(ns_command(name, argv), check=False, **kwargs)
    if check and proc.returncode != 0:
        err = (proc.stderr or "").strip() if isinstance(proc.stderr, str) else ""
        raise NetLabError(f"{' '.join(argv)} in netns {name}: exit {proc.returncode}: {err}")
    return proc


# --------------------------------------------------------------------------
# Links and addresses
# --------------------------------------------------------------------------


@contextmanager
def iproute(name: str | None = None) -> Iterator[IPRoute]:
    """An rtnetlink socket in namespace ``name`` (None: the current one)."""
    if name is not None and not netns_exists(name):
        raise NetLabError(f"no such network namespace {name!r}")
    ipr = IPRoute(netns=name, ext_ack=True) if name is not None else IPRoute(ext_ack=True)
    try:
        yield ipr
    finally:
        ipr.close()


def _check_ifname(ifname: str) -> None:
    if not ifname or len(ifname.encode()) >= IFNAMSIZ or "/" in ifname or " " in ifname:
        raise NetLabError(f"bad interface name {ifname!r} (1..15 characters, no '/' or space)")


def _index(ipr: IPRoute, ifname: str, name: str | None) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = f" in netns {name}" if name else ""
        raise NetLabError(f"no such interface {ifname!r}{where}")
    return found[0]


def link_index(ifname: str, netns: str | None = None) -> int:
    with iproute(netns) as ipr:
        return _index(ipr, ifname, netns)


def link_mac(ifname: str, netns: str | None = None) -> str:
    with iproute(netns) as ipr:
        (link,) = ipr.get_links(_index(ipr, ifname, netns))
        return link.get_attr("IFLA_ADDRESS")


def link_exists(ifname: str, netns: str | None = None) -> bool:
    try:
        with iproute(netns) as ipr:
            return bool(ipr.link_lookup(ifname=ifname))
    except NetLabError:
        return False


def add_veth(ifname: str, peer: str, *, netns: str | None = None, peer_netns: str | None = None,
             mac: str | None = None, peer_mac: str | None = None, up: bool = True) -> None:
    """Create veth ``ifname``<->``peer``, each end in its namespace (None: the current one)."""
    _check_ifname(ifname)
    _check_ifname(peer)
    for ns in (netns, peer_netns):
        if ns is not None and not netns_exists(ns):
            raise NetLabError(f"no such network namespace {ns!r}")
    here_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    with iproute(netns) as ipr:
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_netns != netns:
            peer_spec["net_ns_fd"] = peer_netns if peer_netns is not None else here_fd
        if peer_mac:
            peer_spec["address"] = peer_mac
        spec: dict[str, Any] = {"ifname": ifname, "kind": "veth", "peer": peer_spec}
        if mac:
            spec["address"] = mac
        try:
            ipr.link("add", **spec)
        except NetlinkError as exc:
            raise NetLabError(f"cannot create veth {ifname}/{peer}: {exc.args[-1]}") from exc
        finally:
            os.close(here_fd)
    if up:
        set_up(ifname, netns=netns)
        set_up(peer, netns=peer_netns)


def delete_link(ifname: str, netns: str | None = None) -> None:
    """Delete an interface if present (a veth takes its peer along)."""
    try:
        with iproute(netns) as ipr:
            for index in ipr.link_lookup(ifname=ifname):
                try:
                    ipr.link("del", index=index)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise
    except NetLabError:
        pass


def set_up(ifname: str, netns: str | None = None) -> None:
    with iproute(netns) as ipr:
        ipr.link("set", index=_index(ipr, ifname, netns), state="up")


def set_down(ifname: str, netns: str | None = None) -> None:
    with iproute(netns) as ipr:
        ipr.link("set", index=_index(ipr, ifname, netns), state="down")


def set_mtu(ifname: str, mtu: int, netns: str | None = None) -> None:
    with iproute(netns) as ipr:
        ipr.link("set", index=_index(ipr, ifname, netns), mtu=mtu)


def add_address(ifname: str, cidr: str, netns: str | None = None) -> None:
    """Add ``cidr`` (``10.0.0.1/24`` or ``fd00::1/64``) to an interface."""
    address, _, plen = cidr.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    prefixlen = int(plen) if plen else (128 if family == socket.AF_INET6 else 32)
    with iproute(netns) as ipr:
        index = _index(ipr, ifname, netns)
        try:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen, family=family)
        except NetlinkError as exc:
            raise NetLabError(f"cannot add {cidr} to {ifname}: {exc.args[-1]}") from exc


def add_route(dst: str, *, gateway: str | None = None, ifname: str | None = None, netns: str | None = None) -> None:
    """Add a route (``dst`` like ``224.0.0.0/4`` or ``default``)."""
    with iproute(netns) as ipr:
        spec: dict[str, Any] = {"dst": dst}
        if gateway:
            spec["gateway"] = gateway
        if ifname:
            spec["oif"] = _index(ipr, ifname, netns)
        ipr.route("add", **spec)


# --------------------------------------------------------------------------
# ethtool features (legacy SIOCETHTOOL get/set one feature)
# --------------------------------------------------------------------------

SIOCETHTOOL = 0x8946
# (get command, set command) of struct ethtool_value features
ETHTOOL_FEATURES = {
    "rx": (0x00000014, 0x00000015),  # ETHTOOL_GRXCSUM / SRXCSUM
    "tx": (0x00000016, 0x00000017),  # ETHTOOL_GTXCSUM / STXCSUM (all tx checksum features)
    "sg": (0x00000018, 0x00000019),
    "tso": (0x0000001E, 0x0000001F),
    "gso": (0x00000023, 0x00000024),
    "gro": (0x0000002B, 0x0000002C),
}


def _ethtool_value(ifname: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
    ifreq = struct.pack(f"{IFNAMSIZ}sP16x", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise NetLabError(f"no such interface {ifname!r}") from exc
            raise NetLabError(f"ethtool {ifname}: {os.strerror(exc.errno or 0)}") from exc
    return struct.unpack("=II", value.raw)[1]


def ethtool_get(ifname: str, feature: str, netns: str | None = None) -> bool:
    """Whether an offload feature (``tx``, ``rx``, ``gro``, ``gso``, ``tso``, ``sg``) is on."""
    get_cmd, _ = ETHTOOL_FEATURES[feature]
    return bool(run_in_netns(netns, _ethtool_value, ifname, get_cmd))


def ethtool_set(ifname: str, feature: str, on: bool, netns: str | None = None) -> None:
    """Like ``ethtool -K IFNAME FEATURE on|off``."""
    _check_ifname(ifname)
    get_cmd, set_cmd = ETHTOOL_FEATURES[feature]

    def apply() -> None:
        _ethtool_value(ifname, set_cmd, int(on))
        if bool(_ethtool_value(ifname, get_cmd)) != on:
            raise NetLabError(f"{ifname}: the driver refused to turn {feature} {'on' if on else 'off'}")

    run_in_netns(netns, apply)


def disable_tx_checksum(ifname: str, netns: str | None = None) -> None:
    """``ethtool -K IF tx off``: a local sender then completes checksums itself.

    Needed on a veth whose frames an XDP program redirects: the partial
    checksum of CHECKSUM_PARTIAL skbs is lost on the XDP redirect path.
    """
    ethtool_set(ifname, "tx", False, netns)


def enable_gro(ifname: str, netns: str | None = None) -> None:
    """``ethtool -K IF gro on``: lets a veth accept native-XDP redirected frames.

    A veth drops frames redirected into it unless its peer runs an XDP
    program or has GRO (which enables the veth's NAPI path) on.
    """
    ethtool_set(ifname, "gro", True, netns)


# --------------------------------------------------------------------------
# sysctls
# --------------------------------------------------------------------------


def write_sysctl(key: str, value: str | int, netns: str | None = None) -> None:
    """Write ``/proc/sys/<key>`` (dotted or slashed key) inside a namespace."""
    path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key.lstrip("/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(f"{value}\n")

    try:
        run_in_netns(netns, write)
    except FileNotFoundError as exc:
        raise NetLabError(f"no sysctl {key} (in netns {netns})") from exc


def read_sysctl(key: str, netns: str | None = None) -> str:
    path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key.lstrip("/")

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    return run_in_netns(netns, read)


def set_igmp_version(version: int, ifname: str = "all", netns: str | None = None) -> None:
    """Force IGMPv1/2/3 (0: automatic) on ``ifname`` (or ``all``) in a namespace."""
    if version not in (0, 1, 2, 3):
        raise NetLabError(f"IGMP version must be 0..3, not {version}")
    # sysctl names of interfaces use '/' literally; pass the path form
    write_sysctl(f"net/ipv4/conf/{ifname}/force_igmp_version", version, netns)


# --------------------------------------------------------------------------
# The lab: everything created under one prefix, removed on exit
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VethPair:
    name: str
    peer: str
    netns: str | None
    peer_netns: str | None

    @property
    def index(self) -> int:
        return link_index(self.name, self.netns)

    @property
    def peer_index(self) -> int:
        return link_index(self.peer, self.peer_netns)


@dataclass
class Lab:
    """A set of namespaces and veths with a common name prefix, torn down on exit.

    ``Lab("pyb1a2b3c")`` then ``lab.netns("h1")`` makes namespace
    ``pyb1a2b3c-h1``; ``lab.veth("a", "b", peer_netns=ns)`` makes interfaces
    ``pyb1a2b3ca`` / ``pyb1a2b3cb`` (interface names are limited to 15 bytes).
    """

    prefix: str
    namespaces: list[str] = field(default_factory=list)
    veths: list[VethPair] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.prefix or "/" in self.prefix or "." in self.prefix:
            raise NetLabError(f"bad lab prefix {self.prefix!r}")

    def ifname(self, suffix: str) -> str:
        name = self.prefix + suffix
        _check_ifname(name)
        return name

    def netns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        if netns_exists(name):
            raise NetLabError(f"namespace {name!r} already exists")
        self.namespaces.append(name)  # recorded first: a failure below still gets cleaned up
        create_netns(name)
        return name

    def veth(self, suffix: str, peer_suffix: str, *, netns: str | None = None, peer_netns: str | None = None,
             mac: str | None = None, peer_mac: str | None = None) -> VethPair:
        pair = VethPair(self.ifname(suffix), self.ifname(peer_suffix), netns, peer_netns)
        for name, ns in ((pair.name, netns), (pair.peer, peer_netns)):
            if link_exists(name, ns):
                raise NetLabError(f"interface {name!r} already exists" + (f" in netns {ns}" if ns else ""))
        self.veths.append(pair)  # recorded first: a failure below still gets cleaned up
        add_veth(pair.name, pair.peer, netns=netns, peer_netns=peer_netns, mac=mac, peer_mac=peer_mac)
        return pair

    def close(self) -> None:
        """Delete every veth and namespace this lab made (idempotent, never raises)."""
        errors: list[str] = []
        for pair in reversed(self.veths):
            try:
                if pair.netns is None or netns_exists(pair.netns):
                    delete_link(pair.name, pair.netns)
            except Exception as exc:  # noqa: BLE001 - keep cleaning
                errors.append(f"{pair.name}: {exc}")
        self.veths.clear()
        for name in reversed(self.namespaces):
            try:
                delete_netns(name)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{name}: {exc}")
        self.namespaces.clear()
        if errors:  # pragma: no cover - best effort, but say so
            import sys

            print("netlab cleanup: " + "; ".join(errors), file=sys.stderr)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove_pins(path: str) -> list[str]:
    """Unpin a file, or a directory of pins bottom-up (bpffs has no recursive rmdir)."""
    if os.path.isdir(path) and not os.path.islink(path):
        removed = []
        for root, dirs, files in os.walk(path, topdown=False):
            for f in files:
                os.unlink(os.path.join(root, f))
                removed.append(f"pin {os.path.join(root, f)}")
            for d in dirs:
                os.rmdir(os.path.join(root, d))
        os.rmdir(path)
        return removed + [f"pin dir {path}"]
    os.unlink(path)
    return [f"pin {path}"]


def sweep(prefix: str, *, bpffs: str | None = "/sys/fs/bpf") -> list[str]:
    """Delete stale namespaces, root-namespace links and bpffs pins whose names start with ``prefix``.

    Returns what was removed; for cleaning up after a killed test run.  Pins
    are looked for directly under ``bpffs`` (files and directory trees).
    """
    if len(prefix) < 3:
        raise NetLabError("sweep prefix must be at least 3 characters (refusing to delete broadly)")
    removed: list[str] = []
    if bpffs and os.path.isdir(bpffs):
        for name in sorted(os.listdir(bpffs)):
            if name.startswith(prefix):
                removed += _remove_pins(os.path.join(bpffs, name))
    for name in list_netns(prefix):
        delete_netns(name)
        removed.append(f"netns {name}")
    with iproute() as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if ifname and ifname.startswith(prefix):
                try:
                    ipr.link("del", index=link["index"])
                    removed.append(f"link {ifname}")
                except NetlinkError:
                    pass
    return removed
