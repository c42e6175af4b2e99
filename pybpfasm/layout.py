"""Struct layouts declared once: map keys/values, ring-buffer records, packet headers.

One declaration serves three users:

* the DSL (field offsets, widths, byte order and signedness for loads/stores),
* map and ring-buffer codecs (``size``, ``pack(value) -> bytes``, ``unpack(bytes)``),
* Python code (the controller decodes events with a precompiled ``struct.Struct``).

Declaring::

    from pybpfasm.layout import Struct, u8, u32, be16, be32, Bytes, pad

    class Flow(Struct):
        src = be32
        dst = be32
        proto = u8
        _pad = pad(3)        # explicit padding (optional: C-like padding is implicit)

    Flow.size                        # 12
    Flow.offset_of("dst")            # 4
    raw = Flow.pack(src=0x0A000001, dst=0x0A000002, proto=6)   # or Flow.pack(obj / dict)
    flow = Flow.unpack(raw)          # a namedtuple: flow.src, flow.dst, flow.proto
    Flow(src=1)                      # a value (namedtuple) with every other field 0
    Flow.zero()                      # b"\\0" * 12

or functionally: ``Flow = Layout("Flow", [("src", be32), ("dst", be32), ("proto", u8)])``.

Field types carry explicit byte order: ``u8 u16 u32 u64`` / ``s8 ... s64`` are host order
(little-endian on every BPF target we load on), ``be16 be32 be64`` / ``le16 le32 le64`` are
fixed. ``Bytes(n)`` is an opaque byte string (MAC addresses), ``u32[4]`` an array, a Struct
class a nested struct, ``pad(n)`` explicit zero padding.

Alignment rules (C's, so a layout matches the struct clang would produce): a scalar is
aligned to its size, an array to its element, ``Bytes`` and ``pad`` to 1, a nested struct
to its largest member; padding is inserted before a misaligned field and at the end so
the size is a multiple of the alignment. ``_packed_ = True`` in the class body turns this
off (wire headers are declared packed: a packet gives no alignment guarantee anyway).
Padding always packs as zero bytes (map keys must not carry garbage).

Scalar types are codecs too: ``u32.pack(5)``, ``u32.unpack(b) -> int``, ``u32.size``.
"""

from __future__ import annotations

import struct
import sys
from collections import namedtuple
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UserError


class LayoutError(UserError, ValueError):
    """A layout declaration or a value that does not fit it."""


_HOST = "<" if sys.byteorder == "little" else ">"


class FieldType:
    """Base of everything that can be a field: scalars, arrays, bytes, padding, structs."""

    size: int
    align: int

    def __getitem__(self, count: int) -> ArrayType:
        return ArrayType(self, count)


@dataclass(frozen=True, eq=True)
class ScalarType(FieldType):
    """An integer of ``size`` bytes with an explicit byte order ("little"/"big")."""

    name: str
    size: int
    signed: bool
    byteorder: str

    @property
    def align(self) -> int:  # type: ignore[override]
        return self.size

    @property
    def bits(self) -> int:
        return self.size * 8

    @property
    def fmt_char(self) -> str:
        c = {1: "b", 2: "h", 4: "i", 8: "q"}[self.size]
        return c if self.signed else c.upper()

    @property
    def order_char(self) -> str:
        if self.size == 1:
            return ""
        return "<" if self.byteorder == "little" else ">"

    @property
    def is_network_order(self) -> bool:
        return self.byteorder == "big" and self.size > 1

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    # codec interface
    def pack(self, value: int = 0) -> bytes:
        return int(value).to_bytes(self.size, self.byteorder, signed=self.signed)

    def unpack(self, data: bytes) -> int:
        return int.from_bytes(bytes(data[: self.size]), self.byteorder, signed=self.signed)

    def zero(self) -> bytes:
        return bytes(self.size)

    def __getitem__(self, count: int) -> ArrayType:
        return ArrayType(self, count)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=True)
class BytesType(FieldType):
    """``n`` opaque bytes (e.g. a MAC address); packs from bytes, unpacks to bytes."""

    size: int

    align = 1  # type: ignore[assignment]

    def pack(self, value: bytes = b"") -> bytes:
        value = bytes(value)
        if len(value) > self.size:
            raise LayoutError(f"{len(value)} bytes do not fit Bytes({self.size})")
        return value.ljust(self.size, b"\0")

    def unpack(self, data: bytes) -> bytes:
        return bytes(data[: self.size])

    def zero(self) -> bytes:
        return bytes(self.size)

    def __getitem__(self, count: int) -> ArrayType:
        return ArrayType(self, count)

    def __repr__(self) -> str:
        return f"Bytes({self.size})"


@dataclass(frozen=True, eq=True)
class PadType(FieldType):
    """Explicit zero padding (not visible in unpacked values)."""

    size: int

    align = 1  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"pad({self.size})"


@dataclass(frozen=True, eq=True)
class ArrayType(FieldType):
    """``count`` consecutive elements; unpacks to a tuple."""

    elem: Any
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise LayoutError(f"array length must be a positive int, not {self.count!r}")
        if isinstance(self.elem, PadType):
            raise LayoutError("arrays of padding: use pad(n)")

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.elem.size * self.count

    @property
    def align(self) -> int:  # type: ignore[override]
        return self.elem.align

    def pack(self, value: Iterable[Any] = ()) -> bytes:
        vals = list(value)
        if len(vals) > self.count:
            raise LayoutError(f"{len(vals)} elements do not fit {self!r}")
        vals += [None] * (self.count - len(vals))
        return b"".join(self.elem.pack(v) if v is not None else self.elem.zero() for v in vals)

    def unpack(self, data: bytes) -> tuple[Any, ...]:
        n = self.elem.size
        return tuple(self.elem.unpack(data[i * n:(i + 1) * n]) for i in range(self.count))

    def zero(self) -> bytes:
        return bytes(self.size)

    def __repr__(self) -> str:
        return f"{self.elem!r}[{self.count}]"


def _scalar(name: str, size: int, signed: bool, order: str) -> ScalarType:
    return ScalarType(name, size, signed, order)


_host_order = sys.byteorder
u8 = _scalar("u8", 1, False, _host_order)
u16 = _scalar("u16", 2, False, _host_order)
u32 = _scalar("u32", 4, False, _host_order)
u64 = _scalar("u64", 8, False, _host_order)
s8 = _scalar("s8", 1, True, _host_order)
s16 = _scalar("s16", 2, True, _host_order)
s32 = _scalar("s32", 4, True, _host_order)
s64 = _scalar("s64", 8, True, _host_order)
be16 = _scalar("be16", 2, False, "big")
be32 = _scalar("be32", 4, False, "big")
be64 = _scalar("be64", 8, False, "big")
le16 = _scalar("le16", 2, False, "little")
le32 = _scalar("le32", 4, False, "little")
le64 = _scalar("le64", 8, False, "little")

SCALARS: dict[str, ScalarType] = {t.name: t for t in (u8, u16, u32, u64, s8, s16, s32, s64,
                                                      be16, be32, be64, le16, le32, le64)}


def Bytes(n: int) -> BytesType:  # noqa: N802 - reads like a type
    """``n`` opaque bytes."""
    if not isinstance(n, int) or n < 1:
        raise LayoutError(f"Bytes(n) needs a positive int, not {n!r}")
    return BytesType(n)


def pad(n: int) -> PadType:
    """``n`` bytes of explicit zero padding."""
    if not isinstance(n, int) or n < 1:
        raise LayoutError(f"pad(n) needs a positive int, not {n!r}")
    return PadType(n)


@dataclass(frozen=True)
class Field:
    """A named member at a byte offset (padding members have ``name`` starting with '_')."""

    name: str
    type: Any
    offset: int

    @property
    def size(self) -> int:
        return self.type.size

    @property
    def is_padding(self) -> bool:
        """Padding: ``pad(n)`` or any field named ``_x`` (packed as zeros, hidden from values)."""
        return isinstance(self.type, PadType) or self.name.startswith("_")


def _is_struct(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, Struct) and t is not Struct


def _is_field_type(t: Any) -> bool:
    return isinstance(t, FieldType) or _is_struct(t)


class _StructMeta(type):
    """Collects field declarations from the class body in order and compiles the codec."""

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any):
        decls = [(k, v) for k, v in ns.items() if not k.startswith("__") and _is_field_type(v)]
        for k, _ in decls:
            del ns[k]
        cls = super().__new__(mcs, name, bases, ns)
        if bases and bases != (object,):
            inherited: list[tuple[str, Any]] = []
            for b in bases:
                if _is_struct(b):
                    inherited += [(f.name, f.type) for f in b._decl_fields]
            cls._compile(inherited + decls)
        return cls

    def __call__(cls, *args: Any, **kw: Any) -> Any:
        """``Flow(src=1)`` builds a value (namedtuple) with unnamed fields zero."""
        return cls.value(*args, **kw)

    def __len__(cls) -> int:
        return cls.size

    def __repr__(cls) -> str:
        return f"<layout {cls.__name__} size={getattr(cls, 'size', '?')}>"


class Struct(metaclass=_StructMeta):
    """Base class of declared layouts; see the module docstring."""

    _packed_: bool = False
    #: sub-byte fields: name -> (containing field, shift, width), e.g. IPv4 "ihl": ("ver_ihl", 0, 4)
    _bits_: dict[str, tuple[str, int, int]] = {}
    size: int
    align: int
    fields: dict[str, Field]
    Tuple: type

    @classmethod
    def _compile(cls, decls: list[tuple[str, Any]]) -> None:
        packed = bool(cls.__dict__.get("_packed_", False))
        offset = 0
        max_align = 1
        fields: list[Field] = []
        for fname, ftype in decls:
            if not _is_field_type(ftype):
                raise LayoutError(f"{cls.__name__}.{fname}: {ftype!r} is not a field type")
            align = 1 if packed else ftype.align
            max_align = max(max_align, align)
            if offset % align:
                offset += align - offset % align
            fields.append(Field(fname, ftype, offset))
            offset += ftype.size
        if not packed and offset % max_align:
            offset += max_align - offset % max_align
        cls.size = offset
        cls.align = 1 if packed else max_align
        cls._decl_fields = fields
        cls.fields = {f.name: f for f in fields if not f.is_padding}
        cls.Tuple = namedtuple(cls.__name__, [f.name for f in fields if not f.is_padding])  # type: ignore[misc]
        cls.Tuple.__new__.__defaults__ = (0,) * len(cls.fields)  # type: ignore[attr-defined]
        cls._build_codec()

    # ---------------------------------------------------------------- codec compile
    @classmethod
    def _leaves(cls, base: int = 0) -> list[tuple[int, Any]]:
        """(offset, leaf type) for every scalar/Bytes leaf in order (arrays and structs flattened)."""
        out: list[tuple[int, Any]] = []

        def walk(t: Any, off: int) -> None:
            if _is_struct(t):
                for f in t._decl_fields:
                    if not f.is_padding:
                        walk(f.type, off + f.offset)
            elif isinstance(t, ArrayType):
                for i in range(t.count):
                    walk(t.elem, off + i * t.elem.size)
            else:
                out.append((off, t))

        walk(cls, base)
        return out

    @classmethod
    def _build_codec(cls) -> None:
        leaves = cls._leaves()
        # Split leaves into runs of one byte order so each run is one struct.Struct.
        segments: list[tuple[str, int, list[tuple[int, Any]]]] = []
        for off, t in leaves:
            order = t.order_char if isinstance(t, ScalarType) else ""
            if segments and (order == "" or segments[-1][0] in ("", order)):
                seg_order = segments[-1][0] or order
                segments[-1] = (seg_order, segments[-1][1], segments[-1][2] + [(off, t)])
            else:
                segments.append((order, off, [(off, t)]))
        structs: list[tuple[struct.Struct, int, int]] = []
        for order, start, items in segments:
            fmt = [order or "<"]
            pos = start
            for off, t in items:
                if off > pos:
                    fmt.append(f"{off - pos}x")
                fmt.append(f"{t.size}s" if isinstance(t, BytesType) else t.fmt_char)
                pos = off + t.size
            structs.append((struct.Struct("".join(fmt)), start, len(items)))
        cls._structs = structs

        # Generated unpack: one unpack_from per segment, then rebuild nested values.
        env: dict[str, Any] = {}
        counter = iter(range(1 << 30))
        flat = [f"_t{si}[{i}]" for si, (_, _, items) in enumerate(segments) for i in range(len(items))]
        it = iter(flat)

        def build(t: Any) -> str:
            if _is_struct(t):
                k = f"_N{next(counter)}"
                env[k] = t.Tuple
                return f"{k}({', '.join(build(f.type) for f in t._decl_fields if not f.is_padding)})"
            if isinstance(t, ArrayType):
                return "(" + "".join(build(t.elem) + ", " for _ in range(t.count)) + ")"
            return next(it)

        lines = ["def _unpack(data):"]
        if len(structs) == 1 and structs[0][1] == 0:
            env["_S0"] = structs[0][0]
            lines.append("    _t0 = _S0.unpack_from(data, 0)")
        else:
            for si, (s, start, _n) in enumerate(structs):
                env[f"_S{si}"] = s
                lines.append(f"    _t{si} = _S{si}.unpack_from(data, {start})")
        lines.append(f"    return {build(cls)}")
        exec("\n".join(lines), env)  # noqa: S102 - generated from our own field table
        cls._unpack_fn = staticmethod(env["_unpack"])

    # ---------------------------------------------------------------- public API
    @classmethod
    def offset_of(cls, path: str) -> int:
        """Byte offset of a field; dotted paths reach into nested structs (``"inner.x"``)."""
        return cls.field(path).offset

    @classmethod
    def field(cls, path: str) -> Field:
        """The Field for a (dotted) path, with the offset from the start of this struct."""
        layout: Any = cls
        base = 0
        parts = path.split(".")
        for i, part in enumerate(parts):
            if not _is_struct(layout) or part not in layout.fields:
                raise LayoutError(f"{cls.__name__} has no field {path!r}")
            f = layout.fields[part]
            base += f.offset
            if i == len(parts) - 1:
                return Field(path, f.type, base)
            layout = f.type
        raise AssertionError("unreachable")

    @classmethod
    def bitfield(cls, name: str) -> tuple[Field, int, int]:
        """(containing field, shift, width) of a declared sub-byte field such as IPv4 ``ihl``."""
        if name not in cls._bits_:
            raise LayoutError(f"{cls.__name__} has no bit field {name!r}")
        base, shift, width = cls._bits_[name]
        return cls.field(base), shift, width

    @classmethod
    def get_bits(cls, value: Any, name: str) -> int:
        """Read a bit field from an unpacked value (``IPv4.get_bits(ip, "ihl")``)."""
        base, shift, width = cls._bits_[name]
        return (getattr(value, base) >> shift) & ((1 << width) - 1)

    @classmethod
    def value(cls, *args: Any, **kw: Any) -> Any:
        """A value of this layout (namedtuple); missing fields are zero."""
        return cls.Tuple(*args, **kw)

    @classmethod
    def zero(cls) -> bytes:
        return bytes(cls.size)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Any:
        """Decode ``size`` bytes into a namedtuple (arrays -> tuples, Bytes -> bytes)."""
        if len(data) < cls.size:
            raise LayoutError(f"{cls.__name__} needs {cls.size} bytes, got {len(data)}")
        return cls._unpack_fn(data)

    @classmethod
    def unpack_from(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        return cls.unpack(memoryview(data)[offset:offset + cls.size])

    @classmethod
    def pack(cls, value: Any = None, /, **fields: Any) -> bytes:
        """Encode a value: a namedtuple, a dict, an object with attributes, or keyword fields.

        Missing fields and all padding are zero.
        """
        if value is None:
            value = fields
        elif fields:
            raise LayoutError("pack() takes a value or keyword fields, not both")
        flat: list[Any] = []
        cls._flatten(value, flat)
        buf = bytearray(cls.size)
        pos = 0
        for s, start, n in cls._structs:
            try:
                s.pack_into(buf, start, *flat[pos:pos + n])
            except struct.error as exc:
                raise LayoutError(f"{cls.__name__}: {exc}") from None
            pos += n
        return bytes(buf)

    @classmethod
    def _flatten(cls, value: Any, out: list[Any]) -> None:
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.fields)
            if unknown:
                raise LayoutError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
            get = value.get
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raise LayoutError(f"{cls.__name__}.pack() takes a value, not bytes")
        else:
            def get(name: str, default: Any = None) -> Any:
                return getattr(value, name, default)
        for f in cls.fields.values():
            _flatten_type(f.type, get(f.name, None), out, f"{cls.__name__}.{f.name}")


def _flatten_type(t: Any, v: Any, out: list[Any], where: str) -> None:
    if _is_struct(t):
        t._flatten({} if v is None else v, out)
    elif isinstance(t, ArrayType):
        vals = list(v) if v is not None else []
        if len(vals) > t.count:
            raise LayoutError(f"{where}: {len(vals)} elements do not fit {t!r}")
        vals += [None] * (t.count - len(vals))
        for x in vals:
            _flatten_type(t.elem, x, out, where)
    elif isinstance(t, BytesType):
        b = bytes(v) if v is not None else b""
        if len(b) > t.size:
            raise LayoutError(f"{where}: {len(b)} bytes do not fit Bytes({t.size})")
        out.append(b)
    else:
        iv = 0 if v is None else v
        if not isinstance(iv, int):
            raise LayoutError(f"{where}: expected an int, got {type(iv).__name__}")
        if not t.min <= iv <= t.max:
            if not t.signed and -(1 << (t.bits - 1)) <= iv < 0:
                iv &= t.max  # allow -1 for all-ones, as C does
            else:
                raise LayoutError(f"{where}: {iv} does not fit {t!r}")
        out.append(iv)


def Layout(name: str, fields: Iterable[tuple[str, Any]], packed: bool = False) -> type[Struct]:  # noqa: N802
    """Declare a layout from a list of (name, type) pairs (same rules as a Struct class)."""
    ns: dict[str, Any] = {"_packed_": packed}
    for fname, ftype in fields:
        if fname in ns:
            raise LayoutError(f"{name}: duplicate field {fname!r}")
        ns[fname] = ftype
    return _StructMeta(name, (Struct,), ns)


def codec(layout: Any) -> Any:
    """Anything usable as a map key/value codec: a Struct class, a scalar, an array, Bytes, an int size."""
    if isinstance(layout, int):
        return BytesType(layout)
    if _is_struct(layout) or isinstance(layout, (ScalarType, ArrayType, BytesType)):
        return layout
    raise LayoutError(f"{layout!r} is not a layout")


def is_struct(t: Any) -> bool:
    """True for a declared Struct subclass."""
    return _is_struct(t)


__all__ = [
    "Struct", "Layout", "Field", "FieldType", "ScalarType", "ArrayType", "BytesType", "PadType",
    "LayoutError", "Bytes", "pad", "codec", "is_struct", "SCALARS",
    "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "be16", "be32", "be64", "le16", "le32", "le64",
]
