"""Finding and describing loaded BPF programs, maps and links, the way bpftool does.

Objects are selected as bpftool selects them (``id N``, ``pinned PATH``,
``name NAME``, ``tag TAG``) and described as records with bpftool's JSON keys
(``bytes_xlated``, ``map_ids``, ``loaded_at`` ...), plus the plain-text layout
of ``bpftool prog show`` / ``map show`` / ``link show``.  Errors a user can
cause (no such id, no permission, not a bpffs path) are ``IntrospectError``:
one line, never a traceback.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import syscall
from .errors import UserError

BPFFS_MAGIC = 0xCAFE4A11
DEFAULT_BPFFS = "/sys/fs/bpf"
KINDS = ("prog", "map", "link")


class IntrospectError(UserError):
    """A selector matched nothing, or the kernel refused to show an object."""


def _explain(exc: OSError, what: str) -> IntrospectError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return IntrospectError(f"{what}: permission denied (run as root: needs CAP_SYS_ADMIN / CAP_BPF)")
    if exc.errno == errno.ENOENT:
        return IntrospectError(f"{what}: no such object")
    return IntrospectError(f"{what}: {os.strerror(exc.errno or 0)}")


# --------------------------------------------------------------------------
# Selecting objects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """``id 12`` / ``pinned /sys/fs/bpf/x`` / ``name xdp_fwd`` / ``tag 0123abcd...``."""

    how: str
    value: str

    def __str__(self) -> str:
        return f"{self.how} {self.value}"


def parse_selector(words: list[str], kind: str = "prog") -> Selector:
    """Parse the bpftool-style words naming one object (``["id", "12"]``)."""
    allowed = ("id", "pinned", "name", "tag") if kind == "prog" else ("id", "pinned", "name")
    if kind == "link":
        allowed = ("id", "pinned")
    if len(words) != 2 or words[0] not in allowed:
        raise IntrospectError(f"expected {' | '.join(f'{a} ...' for a in allowed)}, got {' '.join(words) or 'nothing'}")
    how, value = words
    if how == "id" and not value.isdigit():
        raise IntrospectError(f"bad id {value!r}: expected a number")
    if how == "tag":
        value = value.lower().replace(" ", "")
        if len(value) != 16 or any(c not in "0123456789abcdef" for c in value):
            raise IntrospectError(f"bad tag {value!r}: expected 16 hex digits")
    return Selector(how, value)


def _fd_by_id(kind: str, obj_id: int) -> syscall.Fd:
    getter = {"prog": syscall.prog_get_fd_by_id, "map": syscall.map_get_fd_by_id,
              "link": syscall.link_get_fd_by_id}[kind]
    try:
        return getter(obj_id)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise IntrospectError(f"no {kind} with id {obj_id}") from None
        raise _explain(exc, f"{kind} id {obj_id}") from None


def _ids(kind: str) -> list[int]:
    try:
        return {"prog": syscall.prog_ids, "map": syscall.map_ids, "link": syscall.link_ids}[kind]()
    except OSError as exc:
        raise _explain(exc, f"listing {kind}s") from None


def is_bpffs(path: str) -> bool:
    try:
        return _fs_magic(path) == BPFFS_MAGIC
    except OSError:
        return False


def _fs_magic(path: str) -> int:
    """statfs(2).f_type (os.statvfs does not expose it)."""
    import ctypes

    class StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = StatFs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), path)
    return buf.f_type & 0xFFFFFFFF


def open_pinned(path: str, kind: str) -> syscall.Fd:
    if not os.path.exists(path):
        where = os.path.dirname(path) or "."
        extra = "" if is_bpffs(where) else f" ({where} is not on a bpffs mount; mount -t bpf bpf /sys/fs/bpf)"
        raise IntrospectError(f"no pinned object at {path}{extra}")
    if not is_bpffs(path):
        raise IntrospectError(f"{path} is not on a bpffs mount")
    try:
        fd = syscall.obj_get(path)
    except OSError as exc:
        raise _explain(exc, f"pinned {path}") from None
    actual = syscall.obj_type_of_fd(fd)
    if actual != kind:
        fd.close()
        raise IntrospectError(f"{path} is a pinned {actual}, not a {kind}")
    return fd


def _name_of(kind: str, fd: syscall.Fd) -> str:
    if kind == "prog":
        return syscall.prog_get_info(fd, arrays=False).name
    if kind == "map":
        return syscall.map_get_info(fd).name
    return ""


def select_fds(kind: str, sel: Selector) -> list[syscall.Fd]:
    """Every fd the selector names (``name`` and ``tag`` may match several objects)."""
    if sel.how == "id":
        return [_fd_by_id(kind, int(sel.value))]
    if sel.how == "pinned":
        return [open_pinned(sel.value, kind)]
    found: list[syscall.Fd] = []
    for obj_id in _ids(kind):
        try:
            fd = _fd_by_id(kind, obj_id)
        except IntrospectError:
            continue  # went away meanwhile
        if sel.how == "name":
            match = _name_of(kind, fd) == sel.value
        else:  # tag
            match = syscall.prog_get_info(fd, arrays=False).tag.hex() == sel.value
        if match:
            found.append(fd)
        else:
            fd.close()
    if not found:
        raise IntrospectError(f"no {kind} with {sel}")
    return found


def all_fds(kind: str) -> Iterator[syscall.Fd]:
    for obj_id in _ids(kind):
        try:
            yield _fd_by_id(kind, obj_id)
        except IntrospectError:
            continue


def require_root() -> None:
    if os.geteuid() != 0:
        raise IntrospectError("permission denied: inspecting BPF objects needs root (CAP_SYS_ADMIN / CAP_BPF)")


# --------------------------------------------------------------------------
# Pins (bpftool -f): walk bpffs and note which object each file is
# --------------------------------------------------------------------------


def _id_of(kind: str, fd: syscall.Fd) -> int:
    if kind == "prog":
        return syscall.prog_get_info(fd, arrays=False).id
    if kind == "map":
        return syscall.map_get_info(fd).id
    return syscall.link_get_info(fd).id


def pinned_paths(kind: str, root: str = DEFAULT_BPFFS) -> dict[int, list[str]]:
    """Object id -> pinned paths, for one kind, under ``root`` (bpftool's ``--bpffs``)."""
    out: dict[int, list[str]] = {}
    if not is_bpffs(root):
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                fd = syscall.obj_get(path)
            except OSError:
                continue
            with fd:
                if syscall.obj_type_of_fd(fd) != kind:
                    continue
                try:
                    obj_id = _id_of(kind, fd)
                except OSError:
                    continue
            out.setdefault(obj_id, []).append(path)
    return out


# --------------------------------------------------------------------------
# Records (bpftool's JSON) and their plain-text rendering
# --------------------------------------------------------------------------


def fdinfo(fd: syscall.Fd | int, key: str) -> str | None:
    """A field of /proc/self/fdinfo/FD (memlock, frozen, owner_prog_type ...)."""
    try:
        with open(f"/proc/self/fdinfo/{int(fd)}") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name == key:
                    return value.strip()
    except OSError:
        pass
    return None


def _type_name(value: Any) -> str | int:
    return value.name.lower() if hasattr(value, "name") else int(value)


def boot_time_to_wall(ns_since_boot: int) -> int:
    """bpftool's print_boot_time: seconds since the epoch of a CLOCK_BOOTTIME timestamp."""
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    real_s, real_ns = divmod(real, 10**9)
    boot_s, boot_ns = divmod(boot, 10**9)
    frac = real_ns - boot_ns + ns_since_boot
    return (real_s - boot_s) + int(frac / 10**9) if frac >= 0 else (real_s - boot_s) - ((-frac) // 10**9)


def _loaded_at_text(ns_since_boot: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(boot_time_to_wall(ns_since_boot)))


def prog_record(fd: syscall.Fd, pins: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """``bpftool prog show -j`` of one program."""
    info = syscall.prog_get_info(fd, arrays=True)
    rec: dict[str, Any] = {"id": info.id, "type": _type_name(info.type)}
    if info.name:
        rec["name"] = info.name
    rec["tag"] = info.tag.hex()
    rec["gpl_compatible"] = info.gpl_compatible
    if info.run_time_ns:
        rec["run_time_ns"] = info.run_time_ns
        rec["run_cnt"] = info.run_cnt
    if info.recursion_misses:
        rec["recursion_misses"] = info.recursion_misses
    if info.ifindex:
        rec["dev"] = {"ifindex": info.ifindex, "ns_dev": info.netns_dev, "ns_inode": info.netns_ino}
    if info.load_time:
        rec["loaded_at"] = boot_time_to_wall(info.load_time)
        rec["uid"] = info.created_by_uid
    rec["bytes_xlated"] = info.xlated_prog_len
    rec["jited"] = bool(info.jited_prog_len)
    if info.jited_prog_len:
        rec["bytes_jited"] = info.jited_prog_len
    memlock = fdinfo(fd, "memlock")
    if memlock is not None:
        rec["bytes_memlock"] = int(memlock)
    if info.map_ids:
        rec["map_ids"] = list(info.map_ids)
    if info.btf_id:
        rec["btf_id"] = info.btf_id
    if pins is not None:
        rec["pinned"] = pins.get(info.id, [])
    if info.verified_insns:
        rec["verified_insns"] = info.verified_insns
    return rec


def prog_plain(rec: dict[str, Any]) -> str:
    """``bpftool prog show`` text of a record (lines end with a newline)."""
    kind = rec["type"] if isinstance(rec["type"], str) else f"type {rec['type']}"
    head = f"{rec['id']}: {kind}  "
    if "name" in rec:
        head += f"name {rec['name']}  "
    head += f"tag {rec['tag']}"
    if "dev" in rec:
        head += f"  offloaded_to ifindex {rec['dev']['ifindex']}"
    head += "  gpl" if rec["gpl_compatible"] else ""
    if "run_time_ns" in rec:
        head += f" run_time_ns {rec['run_time_ns']} run_cnt {rec['run_cnt']}"
    if "recursion_misses" in rec:
        head += f" recursion_misses {rec['recursion_misses']}"
    out = head + "\n"
    if "loaded_at" in rec:
        out += f"\tloaded_at {time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(rec['loaded_at']))}  uid {rec['uid']}\n"
    body = f"\txlated {rec['bytes_xlated']}B"
    body += f"  jited {rec['bytes_jited']}B" if rec["jited"] else "  not jited"
    if "bytes_memlock" in rec:
        body += f"  memlock {rec['bytes_memlock']}B"
    if rec.get("map_ids"):
        body += "  map_ids " + ",".join(str(m) for m in rec["map_ids"])
    for path in rec.get("pinned", []):
        body += f"\n\tpinned {path}"
    if "btf_id" in rec:
        body += f"\n\tbtf_id {rec['btf_id']}"
    return out + body + "\n"


def prog_header_plain(fd: syscall.Fd) -> str:
    """The first line of ``prog show`` (bpftool prints it above each of several dumps)."""
    return prog_plain(prog_record(fd)).splitlines()[0] + "\n"


def map_record(fd: syscall.Fd, pins: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """``bpftool map show -j`` of one map."""
    info = syscall.map_get_info(fd)
    rec: dict[str, Any] = {"id": info.id, "type": _type_name(info.type)}
    if info.name:
        rec["name"] = info.name
    rec["flags"] = info.map_flags
    if info.ifindex:
        rec["dev"] = {"ifindex": info.ifindex, "ns_dev": info.netns_dev, "ns_inode": info.netns_ino}
    rec["bytes_key"] = info.key_size
    rec["bytes_value"] = info.value_size
    rec["max_entries"] = info.max_entries
    memlock = fdinfo(fd, "memlock")
    if memlock is not None:
        rec["bytes_memlock"] = int(memlock)
    if info.type == syscall.MapType.PROG_ARRAY:
        owner = fdinfo(fd, "owner_prog_type")
        if owner is not None:
            rec["owner_prog_type"] = _type_name(_enum(syscall.ProgType, int(owner)))
        jited = fdinfo(fd, "owner_jited")
        if jited is not None:
            rec["owner_jited"] = bool(int(jited))
    rec["frozen"] = int(fdinfo(fd, "frozen") or 0)
    if info.btf_id:
        rec["btf_id"] = info.btf_id
    if pins is not None:
        rec["pinned"] = pins.get(info.id, [])
    return rec


def _enum(enum: Any, value: int) -> Any:
    try:
        return enum(value)
    except ValueError:
        return value


def map_plain(rec: dict[str, Any]) -> str:
    """``bpftool map show`` text of a record."""
    kind = rec["type"] if isinstance(rec["type"], str) else f"type {rec['type']}"
    head = f"{rec['id']}: {kind}  "
    if "name" in rec:
        head += f"name {rec['name']}  "
    head += f"flags 0x{rec['flags']:x}"
    if "dev" in rec:
        head += f"  offloaded_to ifindex {rec['dev']['ifindex']}"
    body = f"\tkey {rec['bytes_key']}B  value {rec['bytes_value']}B  max_entries {rec['max_entries']}"
    if "bytes_memlock" in rec:
        body += f"  memlock {rec['bytes_memlock']}B"
    if "owner_prog_type" in rec or "owner_jited" in rec:
        body += "\n\t"
        if "owner_prog_type" in rec:
            body += f"owner_prog_type {rec['owner_prog_type']}  "
        if "owner_jited" in rec:
            body += f"owner{'' if rec['owner_jited'] else ' not'} jited"
    for path in rec.get("pinned", []):
        body += f"\n\tpinned {path}"
    if rec.get("btf_id") or rec.get("frozen"):
        body += "\n\t"
    if rec.get("btf_id"):
        body += f"btf_id {rec['btf_id']}"
    if rec.get("frozen"):
        body += f"{'  ' if rec.get('btf_id') else ''}frozen"
    return f"{head}\n{body}\n"


def link_record(fd: syscall.Fd, pins: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """``bpftool link show -j`` of one link (XDP/TCX links also name their interface)."""
    info = syscall.link_get_info(fd)
    rec: dict[str, Any] = {"id": info.id, "type": _type_name(info.type), "prog_id": info.prog_id}
    if info.attach_type is not None and info.type != syscall.LinkType.XDP:
        rec["attach_type"] = _type_name(info.attach_type)
    if info.ifindex is not None:
        rec["ifindex"] = info.ifindex
        name = _ifname(info.ifindex) if info.ifindex else None
        if name:
            rec["devname"] = name
    if pins is not None:
        rec["pinned"] = pins.get(info.id, [])
    return rec


def _ifname(ifindex: int) -> str | None:
    try:
        import socket

        return socket.if_indextoname(ifindex)
    except OSError:
        return None


def link_plain(rec: dict[str, Any]) -> str:
    kind = rec["type"] if isinstance(rec["type"], str) else f"type {rec['type']}"
    out = f"{rec['id']}: {kind}  prog {rec['prog_id']}  "
    if "attach_type" in rec:
        out += f"\n\tattach_type {rec['attach_type']}  "
    if "ifindex" in rec:
        out += f"\n\tifindex {rec.get('devname', '')}({rec['ifindex']})" if rec["ifindex"] else "\n\tdetached"
    for path in rec.get("pinned", []):
        out += f"\n\tpinned {path}"
    return out + "\n"


def records(kind: str, sel: Selector | None = None, *, bpffs: str | None = None) -> list[dict[str, Any]]:
    """Records of every object of a kind (or those a selector names), sorted by id."""
    pins = pinned_paths(kind, bpffs) if bpffs else None
    make = {"prog": prog_record, "map": map_record, "link": link_record}[kind]
    fds = select_fds(kind, sel) if sel else list(all_fds(kind))
    out = []
    for fd in fds:
        with fd:
            try:
                out.append(make(fd, pins))
            except OSError as exc:
                raise _explain(exc, f"{kind} info") from None
    return sorted(out, key=lambda r: r["id"])


def plain(kind: str, rec: dict[str, Any]) -> str:
    return {"prog": prog_plain, "map": map_plain, "link": link_plain}[kind](rec)
