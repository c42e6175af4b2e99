"""Attaching XDP programs to interfaces: netlink (IFLA_XDP) and bpf_link.

Two kernel interfaces do the same job with different lifetimes:

* netlink ``IFLA_XDP`` (what ``ip link set dev X xdp`` uses): the program stays
  attached until someone detaches it, whatever happens to the process.
  Atomic replacement uses ``XDP_FLAGS_REPLACE`` with ``IFLA_XDP_EXPECTED_FD``.
* ``BPF_LINK_CREATE`` with attach type ``BPF_XDP``: the attachment lives as
  long as the link fd, or its pin in bpffs, exists; ``BPF_LINK_UPDATE``
  swaps the program atomically; nobody can replace it by accident through
  netlink.

``attach_xdp`` picks either; ``query_xdp`` reports what is attached in which
mode.  Errors carry the kernel's extended-ack text (``XDP program already
attached``, ``Native and generic XDP can't be active at the same time`` ...)
in one line.
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from . import netlab, syscall
from .errors import UserError

XDP_FLAGS_UPDATE_IF_NOEXIST = syscall.XdpFlags.UPDATE_IF_NOEXIST
XDP_FLAGS_SKB_MODE = syscall.XdpFlags.SKB_MODE
XDP_FLAGS_DRV_MODE = syscall.XdpFlags.DRV_MODE
XDP_FLAGS_HW_MODE = syscall.XdpFlags.HW_MODE
XDP_FLAGS_REPLACE = syscall.XdpFlags.REPLACE

# IFLA_XDP_ATTACHED values
XDP_ATTACHED_NONE = 0
XDP_ATTACHED_DRV = 1
XDP_ATTACHED_SKB = 2
XDP_ATTACHED_HW = 3
XDP_ATTACHED_MULTI = 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE, "offload": XDP_FLAGS_HW_MODE}
MODES = ("native", "generic", "offload", "auto")
METHODS = ("netlink", "link")
# IFLA_XDP_ATTACHED as pyroute2 decodes it (name or number) -> our mode name
_ATTACHED_NAMES = {
    0: None, None: None,
    1: "native", "xdp": "native",
    2: "generic", "xdpgeneric": "generic",
    3: "offload", "xdpoffload": "offload",
    4: "multi", "xdpmulti": "multi",
}
# errors after which "auto" does not fall back from native to generic: they are not about the mode
_NO_FALLBACK = {errno.EBUSY, errno.EEXIST, errno.ENODEV, errno.EPERM, errno.EACCES, errno.EBADF}


class XdpError(UserError):
    """Attaching, replacing, detaching or querying XDP failed; one line with the kernel's reason."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def _errno_name(code: int) -> str:
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"  # errno.errorcode says ENOTSUP, the same number; the kernel says EOPNOTSUPP
    return syscall.errno_name(code)


def _describe(exc: BaseException) -> tuple[str, int | None]:
    """The kernel's reason: the extended ack text when there is one, else strerror; plus errno."""
    if isinstance(exc, NetlinkError):
        text = exc.args[1] if len(exc.args) > 1 and exc.args[1] else os.strerror(exc.code)
        return f"{text} ({_errno_name(exc.code)})", exc.code
    code = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and code:
        text = getattr(exc, "strerror", None) or os.strerror(code)
        return f"{text} ({_errno_name(code)})", code
    return str(exc), code


def _hint(code: int | None, mode: str = "") -> str:
    if mode == "offload" and code == errno.EINVAL:
        return "; offload needs a NIC that offloads XDP and a program loaded for it (prog_ifindex)"
    if code in (errno.EBUSY, errno.EEXIST):
        return "; detach the program that is there, or replace it explicitly"
    if code == errno.EPERM:
        return "; needs root (CAP_NET_ADMIN and CAP_BPF)"
    return ""


def _prog_fd(prog: Any) -> int:
    """The fd number of a program object (anything with ``.fd``), an ``Fd`` or an int."""
    fd = getattr(prog, "fd", prog)
    try:
        number = operator.index(fd)
    except (TypeError, ValueError) as exc:
        raise XdpError(f"not a loaded program: {prog!r}") from exc
    if number < 0:
        raise XdpError(f"not a loaded program: {prog!r}")
    return number


def _prog_id_of_fd(fd: int) -> int | None:
    try:
        return syscall.prog_get_info(fd, arrays=False).id
    except OSError:
        return None


@dataclass(frozen=True)
class Interface:
    """An interface as XDP sees it: index in a namespace (None: the current one)."""

    ifindex: int
    ifname: str
    netns: str | None = None

    def __str__(self) -> str:
        return f"{self.ifname}" + (f" (netns {self.netns})" if self.netns else "")


def resolve_interface(iface: str | int, netns: str | None = None) -> Interface:
    """Name or index -> ``Interface``; a missing interface is a one-line ``XdpError``."""
    try:
        with netlab.iproute(netns) as ipr:
            if isinstance(iface, int) or (isinstance(iface, str) and iface.isdigit()):
                links = [ln for ln in ipr.get_links() if ln["index"] == int(iface)]
            else:
                index = ipr.link_lookup(ifname=iface)
                links = ipr.get_links(*index) if index else []
    except netlab.NetLabError as exc:
        raise XdpError(str(exc)) from exc
    if not links:
        where = f" in netns {netns}" if netns else ""
        raise XdpError(f"no such interface {iface!r}{where}", errno.ENODEV)
    link = links[0]
    return Interface(link["index"], link.get_attr("IFLA_IFNAME"), netns)


# --------------------------------------------------------------------------
# Query
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class XdpStatus:
    """What ``IFLA_XDP`` says about one interface."""

    ifindex: int
    ifname: str
    attached: str | None  # "native" | "generic" | "offload" | "multi" | None
    prog_ids: dict[str, int] = field(default_factory=dict)  # mode -> program id

    def prog_id(self, mode: str | None = None) -> int | None:
        """The program attached in ``mode`` (None: in whatever single mode is active)."""
        if mode is not None:
            return self.prog_ids.get(mode)
        return next(iter(self.prog_ids.values()), None)


def _status_of(link: Any) -> XdpStatus:
    xdp = link.get_attr("IFLA_XDP")
    attached: str | None = None
    ids: dict[str, int] = {}
    if xdp is not None:
        attached = _ATTACHED_NAMES.get(xdp.get_attr("IFLA_XDP_ATTACHED"))
        for mode, key in (("native", "IFLA_XDP_DRV_PROG_ID"), ("generic", "IFLA_XDP_SKB_PROG_ID"),
                          ("offload", "IFLA_XDP_HW_PROG_ID")):
            value = xdp.get_attr(key)
            if value:
                ids[mode] = value
        single = xdp.get_attr("IFLA_XDP_PROG_ID")
        if single and attached in MODE_FLAGS and attached not in ids:
            ids[attached] = single
    return XdpStatus(link["index"], link.get_attr("IFLA_IFNAME"), attached, ids)


def query_xdp(iface: str | int, netns: str | None = None) -> XdpStatus:
    """Which program ids are attached to ``iface``, in which mode."""
    where = resolve_interface(iface, netns)
    with netlab.iproute(netns) as ipr:
        (link,) = ipr.get_links(where.ifindex)
        return _status_of(link)


def list_xdp(netns: str | None = None, *, attached_only: bool = True) -> list[XdpStatus]:
    """XDP status of every interface of a namespace (like ``bpftool net list``'s xdp part)."""
    with netlab.iproute(netns) as ipr:
        statuses = [_status_of(link) for link in ipr.get_links()]
    statuses.sort(key=lambda s: s.ifindex)
    return [s for s in statuses if s.prog_ids or not attached_only]


# --------------------------------------------------------------------------
# Netlink attachments
# --------------------------------------------------------------------------


def _netlink_set_xdp(where: Interface, fd: int, flags: int, expected_fd: int | None = None) -> None:
    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd)]
    if flags:
        attrs.append(("IFLA_XDP_FLAGS", flags))
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    with netlab.iproute(where.netns) as ipr:
        ipr.link("set", index=where.ifindex, xdp={"attrs": attrs})


def _try_modes(mode: str) -> list[str]:
    if mode == "auto":
        return ["native", "generic"]
    if mode not in MODE_FLAGS:
        raise XdpError(f"unknown XDP mode {mode!r}; use one of {', '.join(MODES)}")
    return [mode]


class XdpAttachment:
    """An XDP program attached through netlink (and the base of ``XdpLink``).

    ``detach()`` removes it (only if our program is still the one there);
    leaving a ``with`` block detaches; ``close()`` just releases our program
    fd and leaves the program attached, as ``ip link set ... xdp`` would.
    """

    method = "netlink"

    def __init__(self, interface: Interface, mode: str, prog_fd: int | None, prog_id: int | None):
        self.interface = interface
        self.mode = mode
        self._prog_fd: int | None = prog_fd  # our own dup, the EXPECTED_FD of the next replace
        self.prog_id = prog_id
        self.attached = True

    @property
    def ifindex(self) -> int:
        return self.interface.ifindex

    @property
    def ifname(self) -> str:
        return self.interface.ifname

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.interface} mode={self.mode} prog_id={self.prog_id}"
                f"{'' if self.attached else ' detached'}>")

    def __enter__(self) -> XdpAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _forget_prog(self) -> None:
        if self._prog_fd is not None:
            os.close(self._prog_fd)
            self._prog_fd = None

    def replace(self, prog: Any) -> None:
        """Swap in ``prog`` atomically: fails if someone else changed the attachment meanwhile."""
        if not self.attached:
            raise XdpError(f"XDP on {self.interface}: attachment already detached")
        new_fd = _prog_fd(prog)
        try:
            _netlink_set_xdp(self.interface, new_fd, MODE_FLAGS[self.mode] | XDP_FLAGS_REPLACE, self._prog_fd)
        except (NetlinkError, OSError) as exc:
            text, code = _describe(exc)
            raise XdpError(f"cannot replace XDP program on {self.interface} ({self.mode}, netlink): {text}",
                           code) from exc
        self._forget_prog()
        self._prog_fd = os.dup(new_fd)
        self.prog_id = _prog_id_of_fd(new_fd)

    def detach(self) -> None:
        """Remove our program; a no-op if done already. Leaves someone else's program alone."""
        if not self.attached:
            return
        flags = MODE_FLAGS[self.mode]
        try:
            if self._prog_fd is not None:
                _netlink_set_xdp(self.interface, -1, flags | XDP_FLAGS_REPLACE, self._prog_fd)
            else:
                _netlink_set_xdp(self.interface, -1, flags)
        except netlab.NetLabError:
            pass  # the interface's namespace is gone: so is the attachment
        except (NetlinkError, OSError) as exc:
            text, code = _describe(exc)
            if code in (errno.ENODEV, errno.ENOENT):
                pass  # interface is gone: so is the attachment
            elif code != errno.EEXIST:  # EEXIST: the expected program is no longer there
                raise XdpError(f"cannot detach XDP from {self.interface} ({self.mode}): {text}", code) from exc
        finally:
            self.attached = False
            self._forget_prog()

    def close(self) -> None:
        """Release our reference to the program without detaching (netlink keeps it attached)."""
        self._forget_prog()


def _attach_netlink(where: Interface, fd: int, mode: str, replace: Any) -> XdpAttachment:
    base = 0
    expected: int | None = None
    if replace is False or replace is None:
        base = XDP_FLAGS_UPDATE_IF_NOEXIST
    elif replace is not True:
        base = XDP_FLAGS_REPLACE
        expected = _prog_fd(replace)
    failures: list[str] = []
    for candidate in _try_modes(mode):
        try:
            _netlink_set_xdp(where, fd, base | MODE_FLAGS[candidate], expected)
        except (NetlinkError, OSError) as exc:
            text, code = _describe(exc)
            failures.append(f"{candidate}: {text}" if mode == "auto" else text)
            if mode == "auto" and code not in _NO_FALLBACK:
                continue
            raise XdpError(f"cannot attach XDP program to {where} ({mode}, netlink): {'; '.join(failures)}"
                           f"{'' if expected is not None else _hint(code, mode)}", code) from exc
        return XdpAttachment(where, candidate, os.dup(fd), _prog_id_of_fd(fd))
    raise AssertionError("unreachable")  # pragma: no cover


def attach_xdp(iface: str | int, prog: Any, mode: str = "auto", method: str = "netlink", *,
               replace: Any = False, netns: str | None = None) -> XdpAttachment:
    """Attach a loaded XDP program (``Program`` or fd) to an interface.

    ``mode``: ``native`` (driver), ``generic`` (skb), ``offload`` (NIC) or
    ``auto`` (native, falling back to generic when the driver can't).
    ``method``: ``netlink`` (stays attached after the process exits) or
    ``link`` (a bpf_link: detached when its last fd closes, unless pinned).
    ``replace``: ``False`` refuses to displace an attached program, ``True``
    replaces whatever is there, a program (or fd) replaces exactly that
    program atomically (netlink only; a link is updated with ``XdpLink.update``).
    ``netns``: namespace of the interface (None: the current one).
    """
    if method not in METHODS:
        raise XdpError(f"unknown attach method {method!r}; use netlink or link")
    fd = _prog_fd(prog)
    where = resolve_interface(iface, netns)
    if method == "netlink":
        return _attach_netlink(where, fd, mode, replace)
    if replace not in (False, None):
        raise XdpError("replace= is for netlink attachments; update a bpf_link with XdpLink.update(prog)")
    return XdpLink.create(where, fd, mode)


# --------------------------------------------------------------------------
# bpf_link attachments
# --------------------------------------------------------------------------


def _mode_of_prog(status: XdpStatus, prog_id: int) -> str:
    for mode, pid in status.prog_ids.items():
        if pid == prog_id:
            return mode
    return status.attached or "unknown"


class XdpLink(XdpAttachment):
    """An XDP attachment held by a bpf_link.

    The program stays attached while the link has an fd or a bpffs pin:
    ``close()`` (and leaving a ``with`` block) only drops this process's fd,
    so an unpinned link goes away and a pinned one survives; ``detach()``
    cuts the attachment for everybody (the pin then refers to a defunct link).
    """

    method = "link"

    def __init__(self, fd: syscall.Fd, interface: Interface, mode: str, prog_id: int | None, link_id: int,
                 prog_fd: int | None = None):
        super().__init__(interface, mode, prog_fd, prog_id)
        self.fd = fd
        self.id = link_id
        self.pinned_path: str | None = None

    @classmethod
    def create(cls, where: Interface, prog_fd: int, mode: str = "auto") -> XdpLink:
        """BPF_LINK_CREATE(BPF_XDP) on ``where``; ``auto`` tries native, then generic."""
        failures: list[str] = []
        for candidate in _try_modes(mode):
            try:
                with netlab.enter_netns(where.netns):  # target_ifindex is looked up in our netns
                    fd = syscall.link_create(prog_fd, where.ifindex, syscall.AttachType.XDP,
                                             flags=MODE_FLAGS[candidate])
            except OSError as exc:
                text, code = _link_reason(exc)
                failures.append(f"{candidate}: {text}" if mode == "auto" else text)
                if mode == "auto" and code not in _NO_FALLBACK:
                    continue
                raise XdpError(f"cannot attach XDP program to {where} ({mode}, bpf_link): {'; '.join(failures)}",
                               code) from exc
            info = syscall.link_get_info(fd)
            return cls(fd, where, candidate, info.prog_id, info.id, os.dup(prog_fd))
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _from_fd(cls, fd: syscall.Fd, netns: str | None) -> XdpLink:
        info = syscall.link_get_info(fd)
        if info.type != syscall.LinkType.XDP:
            fd.close()
            raise XdpError(f"link {info.id} is a {getattr(info.type, 'name', info.type)} link, not an XDP link")
        ifindex = info.ifindex or 0
        if ifindex == 0:  # defunct: detached, or its interface is gone
            link = cls(fd, Interface(0, "(detached)", netns), "unknown", info.prog_id or None, info.id)
            link.attached = False
            return link
        try:
            where = resolve_interface(ifindex, netns)
            status = query_xdp(ifindex, netns)
        except XdpError:
            where, status = None, None
        if where is None or status is None or info.prog_id not in status.prog_ids.values():
            # the link's ifindex belongs to another namespace (bpf_link_info does not say which)
            where = Interface(ifindex, f"ifindex {ifindex}", netns)
            return cls(fd, where, "unknown", info.prog_id, info.id)
        return cls(fd, where, _mode_of_prog(status, info.prog_id), info.prog_id, info.id)

    @classmethod
    def from_pinned(cls, path: str | os.PathLike[str], netns: str | None = None) -> XdpLink:
        """Open a link pinned in bpffs (e.g. by an earlier process).

        ``netns`` names the namespace of the link's interface: the kernel reports
        only an ifindex; without the right namespace the interface name stays
        ``ifindex N`` and the mode ``unknown``.
        """
        try:
            fd = syscall.obj_get(path)
        except OSError as exc:
            text, code = _link_reason(exc)
            raise XdpError(f"cannot open pinned link {os.fspath(path)}: {text}", code) from exc
        if syscall.obj_type_of_fd(fd) != "link":
            kind = syscall.obj_type_of_fd(fd)
            fd.close()
            raise XdpError(f"{os.fspath(path)} is a pinned {kind}, not a link")
        link = cls._from_fd(fd, netns)
        link.pinned_path = os.fspath(path)
        return link

    @classmethod
    def from_id(cls, link_id: int, netns: str | None = None) -> XdpLink:
        try:
            fd = syscall.link_get_fd_by_id(link_id)
        except OSError as exc:
            text, code = _link_reason(exc)
            raise XdpError(f"no link with id {link_id}: {text}", code) from exc
        return cls._from_fd(fd, netns)

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin in bpffs so the attachment outlives this process."""
        path = os.fspath(path)
        if "." in os.path.basename(path):
            raise XdpError(f"cannot pin link at {path}: bpffs names may not contain '.'")
        try:
            syscall.obj_pin(self.fd, path)
        except OSError as exc:
            text, code = _link_reason(exc)
            where = " (is it on a bpffs mount, e.g. /sys/fs/bpf?)" if code in (errno.EPERM, errno.EINVAL) else ""
            raise XdpError(f"cannot pin link {self.id} at {path}: {text}{where}", code) from exc
        self.pinned_path = path

    def unpin(self) -> None:
        if self.pinned_path:
            try:
                os.unlink(self.pinned_path)
            except FileNotFoundError:
                pass
            self.pinned_path = None

    def update(self, prog: Any, old_prog: Any = None) -> None:
        """Swap the link's program atomically (BPF_LINK_UPDATE).

        With ``old_prog`` (or, by default, the program this object attached),
        the swap happens only if that program is still the link's: BPF_F_REPLACE.
        """
        new_fd = _prog_fd(prog)
        expected = _prog_fd(old_prog) if old_prog is not None else self._prog_fd
        try:
            syscall.link_update(self.fd, new_fd, old_prog_fd=expected)
        except OSError as exc:
            text, code = _link_reason(exc)
            raise XdpError(f"cannot update XDP link {self.id} on {self.interface}: {text}", code) from exc
        self._forget_prog()
        self._prog_fd = os.dup(new_fd)
        self.prog_id = _prog_id_of_fd(new_fd)

    replace = update

    def detach(self) -> None:
        """BPF_LINK_DETACH: the interface loses the program even if the link is pinned."""
        if self.attached and not self.fd.closed:
            try:
                syscall.link_detach(self.fd)
            except OSError as exc:
                text, code = _link_reason(exc)
                if code != errno.ENOLINK:
                    raise XdpError(f"cannot detach XDP link {self.id}: {text}", code) from exc
        self.attached = False
        self._forget_prog()

    def close(self) -> None:
        """Drop this process's fd (an unpinned link detaches with its last fd)."""
        self._forget_prog()
        self.fd.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _link_reason(exc: OSError) -> tuple[str, int | None]:
    code = exc.errno
    hint = getattr(exc, "hint", "")
    text = os.strerror(code) if code else str(exc)
    return (f"{text} ({_errno_name(code)})" + (f"; {hint}" if hint else "")) if code else text, code


def detach_xdp(iface: str | int, mode: str | None = None, netns: str | None = None) -> None:
    """Detach whatever netlink-attached program ``iface`` has (in ``mode``, or in every mode)."""
    where = resolve_interface(iface, netns)
    modes = [mode] if mode else [m for m in query_xdp(where.ifindex, netns).prog_ids]
    for m in modes:
        if m not in MODE_FLAGS:
            raise XdpError(f"unknown XDP mode {m!r}")
        try:
            _netlink_set_xdp(where, -1, MODE_FLAGS[m])
        except (NetlinkError, OSError) as exc:
            text, code = _describe(exc)
            raise XdpError(f"cannot detach XDP from {where} ({m}): {text}", code) from exc


@contextmanager
def attached(iface: str | int, prog: Any, **kwargs: Any) -> Iterator[XdpAttachment]:
    """``with attached("eth0", prog, mode="native"):`` detaches on exit."""
    attachment = attach_xdp(iface, prog, **kwargs)
    try:
        yield attachment
    finally:
        attachment.detach()
