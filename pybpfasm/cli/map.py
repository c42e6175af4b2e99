"""``pybpfasm map list|show|dump|lookup|update|delete|getnext`` (bpftool map).

Keys and values are bytes written as bpftool writes them: ``key 1 0 0 0``
(each word one byte, C ``strtoul`` base 0: ``0x1f``, ``017``, ``31``) or
``key hex 01 00 00 00``.  Per-CPU maps print one value per possible CPU and
accept one value (stored on every CPU) or all of them back to back.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Any

from .. import introspect, syscall
from ..errors import UserError
from .prog import add_output_flags, add_show_parsers, emit_json, show_objects, wants_json

PER_CPU_TYPES = {syscall.MapType.PERCPU_HASH, syscall.MapType.PERCPU_ARRAY, syscall.MapType.LRU_PERCPU_HASH,
                 syscall.MapType.PERCPU_CGROUP_STORAGE}
UPDATE_FLAGS = {"any": syscall.BPF_ANY, "noexist": syscall.BPF_NOEXIST, "exist": syscall.BPF_EXIST}


class MapCommandError(UserError):
    pass


def fprint_hex(data: bytes, sep: str = " ") -> str:
    """bpftool's fprint_hex: a wider gap every 8 bytes, a new line every 16."""
    out = []
    for i, b in enumerate(data):
        if i == 0:
            pfx = ""
        elif i % 16 == 0:
            out.append("\n")
            pfx = ""
        elif i % 8 == 0:
            out.append("  ")
            pfx = ""
        else:
            pfx = sep
        out.append(f"{pfx}{b:02x}")
    return "".join(out)


def parse_byte(word: str, base16: bool) -> int:
    """C strtoul(word, &end, base16 ? 16 : 0) that must consume the word and fit a byte."""
    text = word.lower()
    try:
        if base16:
            value = int(text[2:] if text.startswith("0x") else text, 16)
        elif text.startswith("0x"):
            value = int(text[2:], 16)
        elif text.startswith("0") and len(text) > 1:
            value = int(text[1:], 8)
        else:
            value = int(text, 10)
    except ValueError:
        raise MapCommandError(f"error parsing byte: {word}") from None
    if not 0 <= value <= 255:
        raise MapCommandError(f"error parsing byte: {word}")
    return value


def parse_bytes(words: list[str], what: str, size: int | None) -> tuple[bytes, list[str]]:
    """Bytes after ``key`` / ``value`` up to the next keyword; returns them and the remaining words."""
    base16 = bool(words) and words[0] == "hex"
    if base16:
        words = words[1:]
    out = bytearray()
    rest = list(words)
    while rest and rest[0] not in ("key", "value", *UPDATE_FLAGS):
        out.append(parse_byte(rest.pop(0), base16))
    if size is not None and len(out) != size:
        raise MapCommandError(f"{what} expected {size} bytes got {len(out)}")
    return bytes(out), rest


class OpenMap:
    """A map fd with the sizes the byte-level commands need."""

    def __init__(self, fd: syscall.Fd):
        self.fd = fd
        self.info = syscall.map_get_info(fd)
        self.per_cpu = self.info.type in PER_CPU_TYPES
        self.ncpus = syscall.possible_cpus() if self.per_cpu else 1
        self.slot = (self.info.value_size + 7) // 8 * 8 if self.per_cpu else self.info.value_size
        self.value_buf_size = self.slot * self.ncpus

    def close(self) -> None:
        self.fd.close()

    def values_of(self, raw: bytes) -> list[bytes]:
        if not self.per_cpu:
            return [raw]
        return [raw[i * self.slot:i * self.slot + self.info.value_size] for i in range(self.ncpus)]

    def pack_value(self, value: bytes) -> bytes:
        vs = self.info.value_size
        if not self.per_cpu:
            return value
        if len(value) == vs:
            return (value + bytes(self.slot - vs)) * self.ncpus
        if len(value) == vs * self.ncpus:
            return b"".join(value[i * vs:(i + 1) * vs] + bytes(self.slot - vs) for i in range(self.ncpus))
        raise MapCommandError(f"value expected {vs} bytes (or {vs * self.ncpus} for all {self.ncpus} CPUs) "
                              f"got {len(value)}")


def _take_flags(args: argparse.Namespace) -> list[str]:
    """Words after the map with -j/-p pulled out (argparse leaves them in the remainder)."""
    words = []
    for word in args.words:
        if word in ("-j", "--json"):
            args.json = True
        elif word in ("-p", "--pretty"):
            args.pretty = True
        else:
            words.append(word)
    return words


def _open_one(args: argparse.Namespace) -> tuple[OpenMap, list[str]]:
    words = _take_flags(args)
    if len(words) < 2:
        raise MapCommandError("expected a map: id N | pinned PATH | name NAME")
    introspect.require_root()
    sel = introspect.parse_selector(words[:2], "map")
    fds = introspect.select_fds("map", sel)
    if len(fds) > 1:
        for fd in fds:
            fd.close()
        raise MapCommandError(f"{sel} matches {len(fds)} maps; use id N")
    return OpenMap(fds[0]), words[2:]


def entry_plain(m: OpenMap, key: bytes, raw: bytes) -> str:
    """bpftool's print_entry_plain."""
    ks, vs = m.info.key_size, m.info.value_size
    if not m.per_cpu:
        break_names = ks > 16 or vs > 16
        single_line = ks + vs <= 24 and not break_names
        sep = "\n" if break_names else " "
        return (f"key:{sep}{fprint_hex(key)}{'  ' if single_line else chr(10)}"
                f"value:{sep}{fprint_hex(raw)}\n")
    lines = f"key:\n{fprint_hex(key)}\n"
    for cpu, value in enumerate(m.values_of(raw)):
        lines += f"value (CPU {cpu:02d}):{chr(10) if vs > 16 else ' '}{fprint_hex(value)}\n"
    return lines


def entry_error_plain(m: OpenMap, key: bytes, msg: str) -> str:
    ks = m.info.key_size
    break_names = ks > 16 or len(msg) > 16
    single_line = ks + len(msg) <= 24 and not break_names
    sep = "\n" if break_names else " "
    return f"key:{sep}{fprint_hex(key)}{'  ' if single_line else chr(10)}value:{sep}{msg}\n"


def _hex_list(data: bytes) -> list[str]:
    return [f"0x{b:02x}" for b in data]


def entry_json(m: OpenMap, key: bytes, raw: bytes) -> dict[str, Any]:
    """bpftool's print_entry_json (maps without BTF)."""
    if not m.per_cpu:
        return {"key": _hex_list(key), "value": _hex_list(raw)}
    return {"key": _hex_list(key),
            "values": [{"cpu": cpu, "value": _hex_list(v)} for cpu, v in enumerate(m.values_of(raw))]}


def _lookup(m: OpenMap, key: bytes) -> bytes | None:
    try:
        return syscall.map_lookup_elem(m.fd, key, m.value_buf_size)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def _keys(m: OpenMap) -> list[bytes]:
    if m.info.type in (syscall.MapType.RINGBUF, syscall.MapType.USER_RINGBUF):
        raise MapCommandError(f"map {m.info.id} is a ring buffer: it has no keys to dump")
    keys: list[bytes] = []
    key: bytes | None = None
    while True:
        try:
            key = syscall.map_get_next_key(m.fd, key, m.info.key_size)
        except OSError as exc:
            raise MapCommandError(f"can't get next key of map {m.info.id}: {exc.strerror}") from None
        if key is None:
            return keys
        keys.append(key)


def _dump(args: argparse.Namespace) -> int:
    m, rest = _open_one(args)
    try:
        if rest:
            raise MapCommandError(f"unexpected words: {' '.join(rest)}")
        found = 0
        plain: list[str] = []
        objs: list[dict[str, Any]] = []
        for key in _keys(m):
            try:
                raw = _lookup(m, key)
            except OSError as exc:
                raw, err = None, exc.strerror or "error"
            else:
                err = "<no entry>"
            if raw is None:
                if wants_json(args):
                    objs.append({"key": _hex_list(key), "value": err})
                else:
                    plain.append(entry_error_plain(m, key, err))
                continue
            found += 1
            if wants_json(args):
                objs.append(entry_json(m, key, raw))
            else:
                plain.append(entry_plain(m, key, raw))
        if wants_json(args):
            emit_json(objs, args)
        else:
            sys.stdout.write("".join(plain) + f"Found {found} element{'' if found == 1 else 's'}\n")
    finally:
        m.close()
    return 0


def _key_from(words: list[str], m: OpenMap) -> tuple[bytes, list[str]]:
    if not words or words[0] != "key":
        raise MapCommandError("expected 'key' followed by the key bytes")
    return parse_bytes(words[1:], "key", m.info.key_size)


def _lookup_cmd(args: argparse.Namespace) -> int:
    m, rest = _open_one(args)
    try:
        key, rest = _key_from(rest, m)
        if rest:
            raise MapCommandError(f"unexpected words: {' '.join(rest)}")
        raw = _lookup(m, key)
        if raw is None:
            raise MapCommandError(f"key {fprint_hex(key)} not found in map {m.info.id}")
        if wants_json(args):
            emit_json(entry_json(m, key, raw), args)
        else:
            sys.stdout.write(entry_plain(m, key, raw))
    finally:
        m.close()
    return 0


def _update_cmd(args: argparse.Namespace) -> int:
    m, rest = _open_one(args)
    try:
        key, rest = _key_from(rest, m)
        if not rest or rest[0] != "value":
            raise MapCommandError("expected 'value' followed by the value bytes")
        value, rest = parse_bytes(rest[1:], "value", None)
        flag = syscall.BPF_ANY
        if rest:
            if len(rest) != 1 or rest[0] not in UPDATE_FLAGS:
                raise MapCommandError(f"unexpected words: {' '.join(rest)} (flags: any | exist | noexist)")
            flag = UPDATE_FLAGS[rest[0]]
        if not m.per_cpu and len(value) != m.info.value_size:
            raise MapCommandError(f"value expected {m.info.value_size} bytes got {len(value)}")
        try:
            syscall.map_update_elem(m.fd, key, m.pack_value(value), int(flag))
        except OSError as exc:
            raise MapCommandError(f"update failed: {exc}") from None
    finally:
        m.close()
    return 0


def _delete_cmd(args: argparse.Namespace) -> int:
    m, rest = _open_one(args)
    try:
        key, rest = _key_from(rest, m)
        if rest:
            raise MapCommandError(f"unexpected words: {' '.join(rest)}")
        try:
            syscall.map_delete_elem(m.fd, key)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise MapCommandError(f"key {fprint_hex(key)} not found in map {m.info.id}") from None
            raise MapCommandError(f"delete failed: {exc}") from None
    finally:
        m.close()
    return 0


def _getnext_cmd(args: argparse.Namespace) -> int:
    m, rest = _open_one(args)
    try:
        key: bytes | None = None
        if rest:
            key, rest = _key_from(rest, m)
        if rest:
            raise MapCommandError(f"unexpected words: {' '.join(rest)}")
        nxt = syscall.map_get_next_key(m.fd, key, m.info.key_size)
        if nxt is None:
            raise MapCommandError("no more keys")
        if wants_json(args):
            emit_json({"key": _hex_list(key or b""), "next_key": _hex_list(nxt)}, args)
        else:
            print(f"key:\n{fprint_hex(key) if key else 'None'}\nnext key:\n{fprint_hex(nxt)}")
    finally:
        m.close()
    return 0


def _show(args: argparse.Namespace) -> int:
    return show_objects("map", args)


def register(subparsers: argparse._SubParsersAction) -> None:
    mp = subparsers.add_parser("map", help="inspect and edit BPF maps (like bpftool map)")
    sub = mp.add_subparsers(dest="map_command", metavar="{list,show,dump,lookup,update,delete,getnext}")
    add_show_parsers(sub, "map", "id N | pinned PATH | name NAME")
    usage = {
        "dump": ("print every entry", "MAP"),
        "lookup": ("print one entry", "MAP key [hex] BYTES"),
        "update": ("create or change an entry", "MAP key [hex] BYTES value [hex] BYTES [any|exist|noexist]"),
        "delete": ("delete an entry", "MAP key [hex] BYTES"),
        "getnext": ("the key after KEY (or the first)", "MAP [key [hex] BYTES]"),
    }
    handlers = {"dump": _dump, "lookup": _lookup_cmd, "update": _update_cmd, "delete": _delete_cmd,
                "getnext": _getnext_cmd}
    for name, (text, words) in usage.items():
        p = sub.add_parser(name, help=text, usage=f"pybpfasm map {name} {words}  (MAP: id N | pinned PATH | name NAME)")
        p.add_argument("words", nargs=argparse.REMAINDER)
        add_output_flags(p)
        p.set_defaults(func=handlers[name])
    mp.set_defaults(func=_show, selector=None, bpffs=False, json=False, pretty=False)
