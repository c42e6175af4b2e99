"""BTF (BPF Type Format): write type tables, load them with BPF_BTF_LOAD, read the kernel's.

Why: the verifier only treats a subprogram as *global* (verified once, not at
every call site) when the program carries BTF describing it, and only shows
source lines (in its log and in ``bpftool prog dump xlated``) when the program
carries line info whose strings live in a BTF blob.  Reading
``/sys/kernel/btf/vmlinux`` gives struct layouts and kfunc ids without libbpf.

Layout (include/uapi/linux/btf.h): a 24-byte header (magic 0xeB9F, version 1,
flags, hdr_len, type_off/len, str_off/len, offsets relative to the header's
end), then ``struct btf_type`` records (name_off, info = kind<<24 | kflag<<31 |
vlen, size-or-type) each followed by its kind's extra data, then the
NUL-separated string section whose first string is "".  Type id 0 is void;
the first record is id 1.
"""

from __future__ import annotations

import errno
import functools
import struct
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from . import syscall
from .errors import UserError
from .syscall import BPFError, Fd

MAGIC = 0xEB9F
VERSION = 1
HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
VMLINUX_PATH = "/sys/kernel/btf/vmlinux"
MAX_VLEN = 0xFFFF

_FIRST_LOG_SIZE = 1 << 16
_MAX_LOG_SIZE = 1 << 26


class Kind(IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class Linkage(IntEnum):
    """FUNC linkage (in the vlen field): the verifier checks a GLOBAL function once, on its own."""

    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


class VarLinkage(IntEnum):
    STATIC = 0
    GLOBAL_ALLOCATED = 1
    GLOBAL_EXTERN = 2


INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4

# Bytes of extra data after the 12-byte btf_type: (fixed, per vlen item).
_EXTRA: dict[int, tuple[int, int]] = {
    Kind.INT: (4, 0), Kind.ARRAY: (12, 0), Kind.STRUCT: (0, 12), Kind.UNION: (0, 12), Kind.ENUM: (0, 8),
    Kind.FUNC_PROTO: (0, 8), Kind.VAR: (4, 0), Kind.DATASEC: (0, 12), Kind.DECL_TAG: (4, 0), Kind.ENUM64: (0, 12),
}


class BTFError(UserError):
    """The kernel refused a BTF blob; ``log`` is the BTF verifier's log, ``reason`` its last line."""

    def __init__(self, log: str, err: int, what: str = "BTF"):
        self.log, self.errno = log, err
        lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
        self.reason = lines[-1] if lines else errno.errorcode.get(err, str(err))
        tail = "\n".join("  " + ln for ln in lines[-8:])
        super().__init__(f"kernel rejected {what}: {self.reason}" + (f"\nBTF log (last lines):\n{tail}" if tail else ""))


def _is_identifier(name: str) -> bool:
    return bool(name) and (name[0].isalpha() or name[0] == "_") and all(c.isalnum() or c == "_" for c in name) \
        and name.isascii()


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A struct/union member: ``offset`` in bits; ``bitfield_size`` > 0 for a bit field."""

    name: str
    type: int
    offset: int
    bitfield_size: int = 0


class BTFBuilder:
    """A BTF type table under construction; identical records are stored once.

    Every ``add`` method returns the new (or existing identical) type id.
    """

    def __init__(self) -> None:
        self._records: list[bytes] = []
        self._record_ids: dict[bytes, int] = {}
        self._kinds: list[tuple[Kind, str]] = []
        self._strings = bytearray(b"\0")
        self._string_offs: dict[str, int] = {"": 0}

    def __len__(self) -> int:
        return len(self._records)

    def string(self, text: str) -> int:
        """The offset of ``text`` in the string section (added once)."""
        off = self._string_offs.get(text)
        if off is None:
            raw = text.encode()
            if b"\0" in raw:
                raise ValueError(f"BTF string {text!r} contains NUL")
            off = len(self._strings)
            self._strings += raw + b"\0"
            self._string_offs[text] = off
        return off

    def _add(self, kind: Kind, name: str, size_or_type: int, *, vlen: int = 0, kflag: bool = False,
             extra: bytes = b"") -> int:
        if not 0 <= vlen <= MAX_VLEN:
            raise ValueError(f"BTF {kind.name}: {vlen} items exceed {MAX_VLEN}")
        info = (int(kflag) << 31) | (int(kind) << 24) | vlen
        record = _TYPE.pack(self.string(name), info, size_or_type) + extra
        existing = self._record_ids.get(record)
        if existing is not None:
            return existing
        self._records.append(record)
        self._kinds.append((kind, name))
        type_id = len(self._records)
        self._record_ids[record] = type_id
        return type_id

    # ----- kinds -------------------------------------------------------------

    def int_(self, name: str, size: int, *, signed: bool = False, char: bool = False, bool_: bool = False,
             bits: int | None = None, bit_offset: int = 0) -> int:
        if signed + char + bool_ > 1:  # the kernel accepts one encoding bit at most
            raise ValueError("a BTF INT is signed, char or bool: at most one")
        encoding = (INT_SIGNED if signed else 0) | (INT_CHAR if char else 0) | (INT_BOOL if bool_ else 0)
        nbits = size * 8 if bits is None else bits
        return self._add(Kind.INT, name, size, extra=_U32.pack((encoding << 24) | (bit_offset << 16) | nbits))

    def scalar(self, size: int, *, signed: bool = False) -> int:
        """The C integer type of ``size`` bytes (``unsigned int``, ``long long``...)."""
        names = {1: "char", 2: "short", 4: "int", 8: "long long"}
        if size not in names:
            raise ValueError(f"no C integer type of {size} bytes")
        return self.int_(names[size] if signed else "unsigned " + names[size], size, signed=signed)

    def ptr(self, target: int) -> int:
        return self._add(Kind.PTR, "", target)

    def const(self, target: int) -> int:
        return self._add(Kind.CONST, "", target)

    def volatile(self, target: int) -> int:
        return self._add(Kind.VOLATILE, "", target)

    def restrict(self, target: int) -> int:
        return self._add(Kind.RESTRICT, "", target)

    def typedef(self, name: str, target: int) -> int:
        return self._add(Kind.TYPEDEF, name, target)

    def fwd(self, name: str, *, union: bool = False) -> int:
        return self._add(Kind.FWD, name, 0, kflag=union)

    def array(self, elem: int, nelems: int, index_type: int | None = None) -> int:
        index = index_type if index_type is not None else self.int_("__ARRAY_SIZE_TYPE__", 4)
        return self._add(Kind.ARRAY, "", 0, extra=struct.pack("<III", elem, index, nelems))

    def _composite(self, kind: Kind, name: str, size: int, members: Iterable[Member | tuple[str, int, int]]) -> int:
        items = [m if isinstance(m, Member) else Member(*m) for m in members]
        kflag = any(m.bitfield_size for m in items)
        extra = b"".join(
            struct.pack("<III", self.string(m.name), m.type,
                        (m.bitfield_size << 24) | m.offset if kflag else m.offset) for m in items)
        return self._add(kind, name, size, vlen=len(items), kflag=kflag, extra=extra)

    def struct(self, name: str, size: int, members: Iterable[Member | tuple[str, int, int]] = ()) -> int:
        """A struct; member offsets are in bits, as in BTF."""
        return self._composite(Kind.STRUCT, name, size, members)

    def union(self, name: str, size: int, members: Iterable[Member | tuple[str, int, int]] = ()) -> int:
        return self._composite(Kind.UNION, name, size, members)

    def enum(self, name: str, values: Mapping[str, int] | Iterable[tuple[str, int]], *, size: int = 4,
             signed: bool = False) -> int:
        items = list(values.items() if isinstance(values, Mapping) else values)
        if size == 8 or any(not -(1 << 31) <= v < (1 << 32) for _, v in items):
            extra = b"".join(struct.pack("<III", self.string(n), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF)
                             for n, v in items)
            return self._add(Kind.ENUM64, name, 8, vlen=len(items), kflag=signed, extra=extra)
        extra = b"".join(struct.pack("<II", self.string(n), v & 0xFFFFFFFF) for n, v in items)
        return self._add(Kind.ENUM, name, size, vlen=len(items), kflag=signed, extra=extra)

    def func_proto(self, ret: int, params: Iterable[tuple[str, int] | int] = ()) -> int:
        """``ret (*)(params)``; a param is ``(name, type)`` or a bare type id."""
        items = [p if isinstance(p, tuple) else ("", p) for p in params]
        extra = b"".join(struct.pack("<II", self.string(n), t) for n, t in items)
        return self._add(Kind.FUNC_PROTO, "", ret, vlen=len(items), extra=extra)

    def func(self, name: str, proto: int, linkage: Linkage | int | str = Linkage.STATIC) -> int:
        if not _is_identifier(name):
            raise ValueError(f"BTF function name {name!r} is not a C identifier (the kernel would refuse it)")
        link = Linkage[linkage.upper()] if isinstance(linkage, str) else Linkage(linkage)
        return self._add(Kind.FUNC, name, proto, vlen=int(link))

    def var(self, name: str, type_id: int, linkage: VarLinkage | int = VarLinkage.GLOBAL_ALLOCATED) -> int:
        return self._add(Kind.VAR, name, type_id, extra=_U32.pack(int(linkage)))

    def datasec(self, name: str, size: int, variables: Iterable[tuple[int, int, int]]) -> int:
        """A data section: ``variables`` are (var type id, byte offset, size)."""
        items = list(variables)
        extra = b"".join(struct.pack("<III", *v) for v in items)
        return self._add(Kind.DATASEC, name, size, vlen=len(items), extra=extra)

    def float_(self, name: str, size: int) -> int:
        return self._add(Kind.FLOAT, name, size)

    def decl_tag(self, name: str, target: int, component_idx: int = -1) -> int:
        return self._add(Kind.DECL_TAG, name, target, extra=struct.pack("<i", component_idx))

    def type_tag(self, name: str, target: int) -> int:
        return self._add(Kind.TYPE_TAG, name, target)

    # ----- output ------------------------------------------------------------

    def find(self, name: str, kind: Kind | None = None) -> int | None:
        """The first id of a type with this name (and kind), or None."""
        for i, (k, n) in enumerate(self._kinds, 1):
            if n == name and (kind is None or k == kind):
                return i
        return None

    def encode(self) -> bytes:
        types = b"".join(self._records)
        strings = bytes(self._strings)
        header = HEADER.pack(MAGIC, VERSION, 0, HEADER.size, 0, len(types), len(types), len(strings))
        return header + types + strings

    def load(self) -> Fd:
        """BPF_BTF_LOAD; raises BTFError with the kernel's BTF log on refusal."""
        return load_btf(self.encode())

    def spec(self) -> BTFSpec:
        """A reader over what was built (for checks and tests)."""
        return BTFSpec(self.encode())


def load_btf(data: bytes) -> Fd:
    """Load a BTF blob; a refusal is retried with a log and raised as BTFError."""
    size = 0
    while True:
        try:
            return syscall.btf_load(data, log_level=1 if size else 0, log_size=size).fd
        except BPFError as exc:
            if exc.errno in (errno.EPERM, errno.EBADF, errno.ENOMEM, errno.EFAULT):
                raise
            if not size:
                size = _FIRST_LOG_SIZE
                continue
            if exc.errno == errno.ENOSPC and size < _MAX_LOG_SIZE:
                size = min(_MAX_LOG_SIZE, max(size * 4, getattr(exc, "log_true_size", 0) + 1))
                continue
            raise BTFError(exc.log, exc.errno) from None


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


@dataclass
class Type:
    """One decoded BTF type. Fields beyond id/kind/name are filled per kind."""

    id: int
    kind: Kind
    name: str
    size: int = 0  # INT, ENUM, STRUCT, UNION, DATASEC, FLOAT, ENUM64
    type: int = 0  # PTR, TYPEDEF, modifiers, FUNC (its proto), FUNC_PROTO (return), VAR, DECL_TAG
    vlen: int = 0
    kflag: bool = False
    members: list[Member] = field(default_factory=list)
    params: list[tuple[str, int]] = field(default_factory=list)
    values: list[tuple[str, int]] = field(default_factory=list)
    int_encoding: int = 0
    int_bits: int = 0
    int_offset: int = 0
    array: tuple[int, int, int] = (0, 0, 0)  # elem type, index type, nelems
    var_linkage: int = 0
    component_idx: int = 0
    secinfo: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def linkage(self) -> Linkage:
        return Linkage(self.vlen) if self.kind == Kind.FUNC else Linkage.STATIC

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"{self.kind.name.lower()} {self.name} has no member {name!r}")


class BTFSpec:
    """A read-only view of a BTF blob, indexed lazily (vmlinux has ~100k types).

    ``base`` makes it split BTF (a kernel module's): ids and string offsets
    continue the base's.
    """

    def __init__(self, data: bytes, base: BTFSpec | None = None):
        if len(data) < HEADER.size:
            raise ValueError("BTF blob shorter than its header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"not BTF (magic 0x{magic:04x}, want 0x{MAGIC:04x} little-endian)")
        if version != VERSION:
            raise ValueError(f"BTF version {version} not supported")
        self.data = data
        self.base = base
        self._types = memoryview(data)[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.first_id = base.next_id if base else 1
        self.str_base = base.str_end if base else 0
        self._offsets: array | None = None
        self._by_name: dict[int, list[int]] | None = None
        self._cache: dict[int, Type] = {}

    @classmethod
    def from_file(cls, path: str, base: BTFSpec | None = None) -> BTFSpec:
        with open(path, "rb") as f:
            return cls(f.read(), base)

    @classmethod
    def from_kernel(cls, btf_id: int) -> BTFSpec:
        """The BTF object the kernel holds under ``btf_id`` (e.g. a program's ``btf_id``)."""
        with syscall.btf_get_fd_by_id(btf_id) as fd:
            info, raw, name = syscall.btf_get_info(fd)
        base = vmlinux() if info.kernel_btf and name != "vmlinux" else None
        return cls(raw, base)

    @property
    def str_end(self) -> int:
        return self.str_base + len(self._strings)

    @property
    def next_id(self) -> int:
        return self.first_id + len(self._index())

    def __len__(self) -> int:
        """Number of types in this blob (split BTF: without the base's)."""
        return len(self._index())

    def _index(self) -> array:
        if self._offsets is None:
            offsets = array("I")
            by_name: dict[int, list[int]] = {}
            buf, pos, end, tid = self._types, 0, len(self._types), self.first_id
            unpack = _TYPE.unpack_from
            extra = _EXTRA
            while pos < end:
                name_off, info, _ = unpack(buf, pos)
                offsets.append(pos)
                if name_off:
                    ids = by_name.get(name_off)
                    if ids is None:
                        by_name[name_off] = [tid]
                    else:
                        ids.append(tid)
                fixed, per = extra.get((info >> 24) & 0x1F, (0, 0))
                pos += 12 + fixed + per * (info & 0xFFFF)
                tid += 1
            if pos != end:
                raise ValueError("BTF type section is truncated")
            self._offsets, self._by_name = offsets, by_name
        return self._offsets

    def string(self, off: int) -> str:
        if off < self.str_base:
            assert self.base is not None
            return self.base.string(off)
        local = off - self.str_base
        if local >= len(self._strings):
            raise ValueError(f"BTF string offset {off} out of range")
        return self._strings[local:self._strings.index(b"\0", local)].decode(errors="replace")

    def type(self, type_id: int) -> Type:
        """Decode one type (cached)."""
        if type_id < self.first_id:
            if self.base is not None:
                return self.base.type(type_id)
            if type_id == 0:
                return Type(0, Kind.UNKN, "void")
        cached = self._cache.get(type_id)
        if cached is not None:
            return cached
        offsets = self._index()
        idx = type_id - self.first_id
        if not 0 <= idx < len(offsets):
            raise KeyError(f"no BTF type id {type_id}")
        t = self._decode(type_id, offsets[idx])
        self._cache[type_id] = t
        return t

    def _decode(self, type_id: int, pos: int) -> Type:
        buf, s = self._types, self.string
        name_off, info, size_or_type = _TYPE.unpack_from(buf, pos)
        kind, vlen, kflag = Kind((info >> 24) & 0x1F), info & 0xFFFF, bool(info >> 31)
        t = Type(type_id, kind, s(name_off), vlen=vlen, kflag=kflag)
        p = pos + 12
        if kind in (Kind.INT, Kind.ENUM, Kind.STRUCT, Kind.UNION, Kind.DATASEC, Kind.FLOAT, Kind.ENUM64):
            t.size = size_or_type
        else:
            t.type = size_or_type
        if kind == Kind.INT:
            (v,) = _U32.unpack_from(buf, p)
            t.int_encoding, t.int_offset, t.int_bits = (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF
        elif kind == Kind.ARRAY:
            t.array = struct.unpack_from("<III", buf, p)
        elif kind in (Kind.STRUCT, Kind.UNION):
            for i in range(vlen):
                mname, mtype, moff = struct.unpack_from("<III", buf, p + 12 * i)
                t.members.append(Member(s(mname), mtype, moff & 0xFFFFFF if kflag else moff,
                                        moff >> 24 if kflag else 0))
        elif kind == Kind.ENUM:
            for i in range(vlen):
                vname, val = struct.unpack_from("<Ii" if kflag else "<II", buf, p + 8 * i)
                t.values.append((s(vname), val))
        elif kind == Kind.ENUM64:
            for i in range(vlen):
                vname, lo, hi = struct.unpack_from("<III", buf, p + 12 * i)
                val = (hi << 32) | lo
                t.values.append((s(vname), val - (1 << 64) if kflag and hi >> 31 else val))
        elif kind == Kind.FUNC_PROTO:
            t.params = [(s(n), ty) for n, ty in (struct.unpack_from("<II", buf, p + 8 * i) for i in range(vlen))]
        elif kind == Kind.VAR:
            (t.var_linkage,) = _U32.unpack_from(buf, p)
        elif kind == Kind.DATASEC:
            t.secinfo = [struct.unpack_from("<III", buf, p + 12 * i) for i in range(vlen)]
        elif kind == Kind.DECL_TAG:
            (t.component_idx,) = struct.unpack_from("<i", buf, p)
        return t

    # ----- lookups -----------------------------------------------------------

    def ids_named(self, name: str, kind: Kind | None = None) -> list[int]:
        """Ids of the types called ``name`` (optionally of one kind), base first.

        Finds the name's string offset(s) with a bytes search, then the ids
        carrying it, so no string is decoded.
        """
        out = self.base.ids_named(name, kind) if self.base is not None else []
        self._index()
        assert self._by_name is not None
        needle = b"\0" + name.encode() + b"\0"
        start = 0
        while True:
            pos = self._strings.find(needle, start)
            if pos < 0:
                break
            for tid in self._by_name.get(self.str_base + pos + 1, ()):
                if kind is None or self._kind_of(tid) == kind:
                    out.append(tid)
            start = pos + 1
        return out

    def _kind_of(self, type_id: int) -> int:
        pos = self._index()[type_id - self.first_id]
        return (_U32.unpack_from(self._types, pos + 4)[0] >> 24) & 0x1F

    def find(self, name: str, kind: Kind | None = None) -> Type:
        ids = self.ids_named(name, kind)
        if not ids:
            what = f"{kind.name.lower()} " if kind is not None else ""
            raise KeyError(f"no BTF {what}type named {name!r}")
        return self.type(ids[0])

    def struct(self, name: str) -> Type:
        """A struct (or, failing that, a union) by name, with its members."""
        ids = self.ids_named(name, Kind.STRUCT) or self.ids_named(name, Kind.UNION)
        if not ids:
            raise KeyError(f"no BTF struct named {name!r}")
        return self.type(ids[0])

    def resolve(self, type_id: int) -> Type:
        """Skip typedefs and modifiers (const, volatile, restrict, type tags)."""
        t = self.type(type_id)
        while t.kind in (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            t = self.type(t.type)
        return t

    def sizeof(self, type_id: int) -> int:
        t = self.resolve(type_id)
        if t.kind == Kind.PTR:
            return 8
        if t.kind == Kind.ARRAY:
            return t.array[2] * self.sizeof(t.array[0])
        if t.kind in (Kind.FWD, Kind.FUNC, Kind.FUNC_PROTO, Kind.UNKN):
            raise ValueError(f"BTF type {type_id} ({t.kind.name}) has no size")
        return t.size

    def member_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``a.b.c`` inside a struct, through nested (anonymous too) members."""
        t = self.struct(struct_name)
        total = 0
        for part in path.split("."):
            found = self._find_member(t, part)
            if found is None:
                raise KeyError(f"{t.kind.name.lower()} {t.name or '(anonymous)'} has no member {part!r}")
            bits, type_id = found
            total += bits
            t = self.resolve(type_id)
        if total % 8:
            raise ValueError(f"{struct_name}.{path} is a bit field (bit offset {total})")
        return total // 8

    def _find_member(self, t: Type, name: str) -> tuple[int, int] | None:
        for m in t.members:
            if m.name == name:
                return m.offset, m.type
        for m in t.members:  # anonymous struct/union members
            if not m.name:
                inner = self.resolve(m.type)
                if inner.kind in (Kind.STRUCT, Kind.UNION):
                    found = self._find_member(inner, name)
                    if found is not None:
                        return m.offset + found[0], found[1]
        return None

    def func_id(self, name: str) -> int | None:
        ids = self.ids_named(name, Kind.FUNC)
        return ids[0] if ids else None

    def kfunc_ids(self) -> set[int]:
        """FUNC ids tagged ``bpf_kfunc`` (pahole >= 1.26 emits the tag for every kfunc)."""
        return {self.type(tid).type for tid in self.ids_named("bpf_kfunc", Kind.DECL_TAG)}

    def kfunc_id(self, name: str) -> int | None:
        """The BTF id of kfunc ``name`` (a FUNC tagged bpf_kfunc), or None."""
        kfuncs = self.kfunc_ids()
        for tid in self.ids_named(name, Kind.FUNC):
            if tid in kfuncs:
                return tid
        return None

    def func_signature(self, func_id: int) -> str:
        """``int name(struct xdp_md * ctx, unsigned long long x)``, as bpftool prints a FUNC."""
        f = self.type(func_id)
        proto = self.type(f.type)
        params = ", ".join("..." if not ty and i == len(proto.params) - 1 else f"{self.format(ty)} {n}".rstrip()
                           for i, (n, ty) in enumerate(proto.params))
        return f"{self.format(proto.type)} {f.name}({params})"

    def format(self, type_id: int) -> str:
        """A C-like rendering of a type reference (for messages)."""
        t = self.type(type_id)
        if t.kind == Kind.PTR:
            return self.format(t.type) + " *"
        if t.kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT):
            return f"{t.kind.name.lower()} {self.format(t.type)}"
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
            word = "enum" if t.kind in (Kind.ENUM, Kind.ENUM64) else t.kind.name.lower()
            return f"{word} {t.name}".rstrip()
        if t.kind == Kind.FUNC_PROTO:
            args = ", ".join(self.format(ty) + (f" {n}" if n else "") for n, ty in t.params) or "void"
            return f"{self.format(t.type)} (*)({args})"
        return t.name or t.kind.name.lower()


@functools.lru_cache(maxsize=1)
def vmlinux() -> BTFSpec:
    """The running kernel's BTF (read once per process)."""
    try:
        return BTFSpec.from_file(VMLINUX_PATH)
    except FileNotFoundError:
        raise UserError(f"{VMLINUX_PATH} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF") from None


def kfunc_id(name: str) -> int | None:
    """The vmlinux BTF id of kfunc ``name`` (the imm of a ``call_kfunc`` with off=0), or None."""
    return vmlinux().kfunc_id(name)


def describe(data_or_spec: bytes | BTFSpec) -> Iterable[str]:
    """One line per type, like ``bpftool btf dump`` (for debugging)."""
    spec = data_or_spec if isinstance(data_or_spec, BTFSpec) else BTFSpec(data_or_spec)
    for tid in range(spec.first_id, spec.next_id):
        t = spec.type(tid)
        extra: list[Any] = []
        if t.kind == Kind.FUNC:
            extra.append(f"type_id={t.type} linkage={t.linkage.name.lower()}")
        elif t.kind in (Kind.STRUCT, Kind.UNION, Kind.INT, Kind.ENUM):
            extra.append(f"size={t.size} vlen={t.vlen}")
        elif t.kind == Kind.FUNC_PROTO:
            extra.append(f"ret_type_id={t.type} vlen={t.vlen}")
        elif t.type:
            extra.append(f"type_id={t.type}")
        yield f"[{tid}] {t.kind.name} '{t.name or '(anon)'}' " + " ".join(extra)
