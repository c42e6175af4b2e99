"""Memory the DSL can read and write through layouts: packet, stack, map values, ring-buffer records.

A ``View`` is a layout placed at an offset in a *region*.  Reading ``view.field``
emits one load of the field's width (a big-endian field stays raw until its
numeric value is needed), writing ``view.field = x`` one store.  Each region
decides whether an access is allowed on the current path:

* packet: only bytes covered by a bounds check on this path (``pkt.has`` /
  ``pkt.ensure`` / ``pkt.header``); one check covers several headers;
* map values and ring-buffer records: only after a null check, and a record
  only until it is submitted or discarded;
* stack: always (it is zero-initialised when created, so keys never carry
  uninitialised padding).

Variable-length headers are views on a *variable base*: ``view.next(Layout,
skip=expr)`` or ``view.at(expr, Layout)`` with a DSL value.  Checking such a
view first bounds the offset (so the verifier can track the pointer), then
checks the end against ``data_end``.
"""

from __future__ import annotations

import itertools
from typing import Any

from ..builder import Label
from ..layout import ArrayType, BytesType, ScalarType, Struct, is_struct
from .core import (
    S64,
    U32,
    U64,
    Cond,
    ConstCond,
    Facts,
    Raw,
    Scalar,
    _s32,
    as_operand,
    convert,
    current,
    error,
    host,
    load_const,
    norm,
    swap_const,
    to_be,
    user_loc,
)
from .ir import R10

VAR_OFFSET_LIMIT = 0x3FFF  # a variable packet offset is bounded to this before pointer arithmetic

_ids = itertools.count(1)

class _Empty:
    """A zero-byte layout (end markers for length checks)."""

    size = 0
    align = 1

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()

# ----------------------------------------------------------------------------- regions


class Region:
    describe = "memory"

    def pointer(self, start: int, end: int) -> tuple[int, int]:
        """(base register, constant offset) to access bytes [start, end) of this region here."""
        raise NotImplementedError


class StackRegion(Region):
    describe = "stack"

    def __init__(self, off: int, size: int):
        self.off = off
        self.size = size

    def pointer(self, start: int, end: int) -> tuple[int, int]:
        return R10, 0  # views on the stack carry their r10-relative offset


class RefRegion(Region):
    """Memory behind a pointer a helper returned (map value, ring-buffer record): nullable."""

    def __init__(self, vreg: int, describe: str, record: bool = False):
        self.vreg = vreg
        self.describe = describe
        self.record = record
        self.loc = user_loc()

    def pointer(self, start: int, end: int) -> tuple[int, int]:
        b = current()
        if self.vreg not in b.facts.nonnull:
            raise error(f"{self.describe} from line {self.loc.line if self.loc else '?'} is used without a null "
                        "check (wrap the access in `with If(ref):` or return early when it is null)")
        if self.record and self.vreg not in b.facts.records:
            raise error("ring-buffer record used after it was submitted or discarded")
        return self.vreg, 0


class PacketBase(Region):
    """A position in the packet: ``data`` (root) or a parent base plus a bounded variable offset."""

    describe = "packet"

    def __init__(self, packet: Any, parent: PacketBase | None = None, const: int = 0, var: Scalar | None = None):
        self.packet = packet
        self.parent = parent
        self.const = const
        self.var = var
        self.id = next(_ids)

    def pointer(self, start: int, end: int) -> tuple[int, int]:
        b = current()
        got = b.facts.checked.get(self.id)
        if got is None or got[0] < end:
            covered = f"only {got[0]} bytes from its base are checked" if got else "nothing is checked there"
            raise error(f"packet access to bytes {start}..{end} (from the header's base) is not covered by a "
                        f"bounds check on this path ({covered}): check first with pkt.ensure(view, otherwise=...), "
                        "pkt.header(...) or `with If(pkt.has(view)):`")
        return got[1], 0

    def offset(self) -> Scalar | int:
        """Offset of this base from ``data`` (a constant for the root)."""
        if self.parent is None:
            return 0
        po = self.parent.offset()
        v = convert(host(self.var), U64)  # type: ignore[arg-type]
        return (v + self.const) + po if not (isinstance(po, int) and po == 0) else v + self.const


# ----------------------------------------------------------------------------- loads and stores

_SZ = {1: "b", 2: "h", 4: "w", 8: "dw"}


def load(region: Region, off: int, ftype: Any) -> Scalar:
    if isinstance(ftype, BytesType) and ftype.size in (1, 2, 4, 8):
        ftype = ScalarType("raw", ftype.size, False, "big")
    if not isinstance(ftype, ScalarType):
        raise error(f"cannot load a {ftype!r} as one value")
    ptr, base = region.pointer(off, off + ftype.size)
    b = current()
    t = b.vreg()
    size = ftype.size
    b.emit(f"ldx{_SZ[size]}", t, ptr, base + off)
    ty = U64 if size == 8 else U32
    if ftype.signed:
        if size in (1, 2):
            b.emit(f"movsx32_{size * 8}", t, t)
        from .core import Ty
        return Scalar(t, Ty(ty.bits, True))
    if ftype.is_network_order:
        return Scalar(t, ty, None, "be", size)
    return Scalar(t, ty, (1 << (8 * size)) - 1 if size < 8 else None)


def store(region: Region, off: int, ftype: Any, value: Any) -> None:
    if isinstance(ftype, BytesType):
        if isinstance(value, (bytes, bytearray)):
            _store_bytes(region, off, bytes(value).ljust(ftype.size, b"\0"))
            return
        if isinstance(value, View):
            copy(View(region, off, ftype), value)
            return
        if ftype.size in (1, 2, 4, 8):
            ftype = ScalarType("raw", ftype.size, False, "big")
        else:
            raise error(f"assign bytes or a view of the same size to a Bytes({ftype.size}) field")
    if isinstance(value, View):
        raise error("assigning a view: read a field, or copy(dst_view, src_view)")
    if not isinstance(ftype, ScalarType):
        raise error(f"cannot store one value into a {ftype!r}")
    ptr, base = region.pointer(off, off + ftype.size)
    b = current()
    size = ftype.size
    as_is = isinstance(value, Raw)  # already in memory order: neither swapped nor converted
    v = value.bits() if isinstance(value, Raw) else as_operand(value)
    if isinstance(v, int):
        raw = v & ((1 << (8 * size)) - 1)
        if ftype.is_network_order and not as_is:
            raw = swap_const(raw, size)
        if size < 8:
            b.emit(f"st{_SZ[size]}", ptr, off=base + off, imm=_s32(raw))
            return
        sraw = norm(raw, S64)
        if -(1 << 31) <= sraw < (1 << 31):
            b.emit("stdw", ptr, off=base + off, imm=sraw)
            return
        v = load_const(raw, U64)
    elif as_is:
        pass
    elif ftype.is_network_order:
        v = to_be(v, size)
    else:
        v = host(v)
    b.emit(f"stx{_SZ[size]}", ptr, v.vreg, base + off)


def _chunk(left: int, *aligned: int | None) -> int:
    """Widest access (8/4/2/1 bytes) that fits ``left`` and keeps stack addresses aligned (the verifier
    insists on aligned stack access; ``None`` marks a side that needs no alignment)."""
    for n in (8, 4, 2, 1):
        if n <= left and all(a is None or a % n == 0 for a in aligned):
            return n
    return 1


def _strict(region: Region, off: int) -> int | None:
    return off if isinstance(region, StackRegion) else None


def _store_bytes(region: Region, off: int, data: bytes) -> None:
    pos = 0
    while pos < len(data):
        n = min(_chunk(len(data) - pos, _strict(region, off + pos)), 4)
        store(region, off + pos, ScalarType("raw", n, False, "little"), int.from_bytes(data[pos:pos + n], "little"))
        pos += n


def copy(dst: View, src: View) -> None:
    """Copy ``src``'s bytes to ``dst`` (same size), 8/4/2/1 bytes at a time."""
    size = dst.size
    if src.size != size:
        raise error(f"copy between views of different sizes ({src.size} and {size})")
    pos = 0
    while pos < size:
        n = _chunk(size - pos, _strict(dst._region, dst._off + pos), _strict(src._region, src._off + pos))
        t = ScalarType("raw", n, False, "little")
        store(dst._region, dst._off + pos, t, load(src._region, src._off + pos, t))
        pos += n


def padding_bytes(layout: Any) -> list[int]:
    """Byte offsets of ``layout`` no named field covers: explicit ``pad(n)`` / ``_x`` fields, the gaps
    alignment inserts and the tail (nested structs included)."""
    if not is_struct(layout):
        return []
    covered: set[int] = set()
    for off, leaf in layout._leaves():
        covered.update(range(off, off + leaf.size))
    return [i for i in range(layout.size) if i not in covered]


def zero_fill(region: Region, off: int, size: int, skip: set[int] | None = None) -> None:
    """Zero [off, off+size) except bytes in ``skip`` with as few stores as alignment allows."""
    skip = skip or set()
    pos = 0
    while pos < size:
        if pos in skip:
            pos += 1
            continue
        for n in (8, 4, 2, 1):
            if (off + pos) % n == 0 and pos + n <= size and not any(p in skip for p in range(pos, pos + n)) and \
                    (n < 8 or not isinstance(region, PacketBase)):
                store(region, off + pos, ScalarType("raw", n, False, "little"), 0)
                pos += n
                break


# ----------------------------------------------------------------------------- views


class View:
    """A layout at an offset in a region; fields read and write as attributes."""

    __slots__ = ("_region", "_off", "_layout")

    def __init__(self, region: Region, off: int, layout: Any):
        if not isinstance(getattr(layout, "size", None), int):
            raise error(f"{layout!r} is not a layout (a pybpfasm.layout Struct or field type)")
        object.__setattr__(self, "_region", region)
        object.__setattr__(self, "_off", off)
        object.__setattr__(self, "_layout", layout)

    @property
    def size(self) -> int:
        return self._layout.size

    def __repr__(self) -> str:
        return f"<View {self._layout!r} at {self._region.describe}+{self._off}>"

    def __bool__(self) -> bool:
        raise error("a DSL reference has no truth value at build time: use If(ref)")

    def _member(self, name: str) -> tuple[int, Any, tuple[int, int] | None]:
        lay = self._layout
        if not is_struct(lay):
            raise error(f"{lay!r} has no fields (use .get()/.set())")
        if name in lay.fields:
            f = lay.fields[name]
            return self._off + f.offset, f.type, None
        if name in getattr(lay, "_bits_", {}):
            f, shift, width = lay.bitfield(name)
            return self._off + f.offset, f.type, (shift, width)
        raise error(f"{lay.__name__} has no field {name!r}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        off, ftype, bits = self._member(name)
        return _read(self._region, off, ftype, bits)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.__getattr__(key)
        lay = self._layout
        if isinstance(lay, ArrayType):
            if not isinstance(key, int):
                raise error("array index must be a Python int")
            if not 0 <= key < lay.count:
                raise error(f"index {key} out of range for {lay!r}")
            return _read(self._region, self._off + key * lay.elem.size, lay.elem, None)
        raise error("indexing works on array views and by field name")

    def __setattr__(self, name: str, value: Any) -> None:
        off, ftype, bits = self._member(name)
        if bits is not None:
            raise error(f"{name} is a bit field: write the containing field")
        _write(self._region, off, ftype, value)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, str):
            self.__setattr__(key, value)
            return
        lay = self._layout
        if isinstance(lay, ArrayType) and isinstance(key, int) and 0 <= key < lay.count:
            _write(self._region, self._off + key * lay.elem.size, lay.elem, value)
            return
        raise error(f"bad index {key!r} for {lay!r}")

    def set_raw(self, name: str, value: Any) -> None:
        """``view.set_raw("check", x)`` == ``view.check = raw(x)``: store ``x``'s bits as they are (no byte
        swap into a be field) -- for values already in memory order such as a folded checksum."""
        self.__setattr__(name, value if isinstance(value, Raw) else Raw(value))

    def field_view(self, name: str) -> View:
        """The field ``name`` as a view of its own (for ``copy``, helper pointer arguments)."""
        off, ftype, bits = self._member(name)
        if bits is not None:
            raise error(f"{name} is a bit field: it has no address")
        return View(self._region, off, ftype)

    def field_addr(self, name: str) -> Scalar:
        """A pointer to field ``name`` (e.g. ``trace_printk("%pI4", ip.field_addr("saddr"))``); the field
        must be accessible (bounds-checked) here."""
        return self.field_view(name).addr

    # scalar-layout views (e.g. a u64 map value)
    def get(self) -> Scalar:
        """The value of a scalar view (a u64 map value, an array element)."""
        return load(self._region, self._off, self._layout)

    def set(self, value: Any) -> None:
        store(self._region, self._off, self._layout, value)

    def add(self, n: Any = 1, field: str | None = None, *, atomic: bool = True) -> None:
        """``*ptr += n`` on a scalar view or one field; atomic (lock add) unless ``atomic=False``."""
        off, ftype = (self._off, self._layout) if field is None else self._member(field)[:2]
        if not isinstance(ftype, ScalarType) or ftype.size not in (4, 8) or ftype.is_network_order:
            if not atomic and isinstance(ftype, ScalarType):
                store(self._region, off, ftype, load(self._region, off, ftype) + n)
                return
            raise error("atomic add needs a 4- or 8-byte host-order field")
        ptr, base = self._region.pointer(off, off + ftype.size)
        if not atomic:
            store(self._region, off, ftype, load(self._region, off, ftype) + n)
            return
        b = current()
        v = as_operand(n)
        if isinstance(v, int):
            v = load_const(v, U64 if ftype.size == 8 else U32)
        else:
            v = convert(host(v), U64 if ftype.size == 8 else U32)
        b.emit(f"atomic_add{ftype.size * 8}", ptr, v.vreg, base + off)

    @property
    def addr(self) -> Scalar:
        """A pointer to this view (for helper arguments); the whole view must be accessible."""
        ptr, base = self._region.pointer(self._off, self._off + self.size)
        b = current()
        t = b.vreg()
        b.emit("mov64_x", t, ptr)
        if base + self._off:
            b.emit("add64_k", t, imm=base + self._off)
        s = Scalar(t, U64)
        s.umax = None
        return s

    # packet navigation
    def next(self, layout: Any, skip: Any = 0) -> View:
        """The view right after this one (plus ``skip`` bytes, a constant or a DSL value)."""
        return self.at(self.size + skip if isinstance(skip, int) else skip, layout, _extra=self.size)

    def at(self, offset: Any, layout: Any, _extra: int = 0) -> View:
        """A view ``offset`` bytes from the start of this one (constant or DSL value)."""
        off = as_operand(offset)
        if isinstance(off, int):
            return View(self._region, self._off + off, layout)
        if not isinstance(self._region, PacketBase):
            raise error("variable offsets are supported in the packet only")
        base = PacketBase(self._region.packet, self._region, self._off + _extra, off)
        return View(base, 0, layout)

    def extent(self, n: Any) -> View:
        """A zero-size marker ``n`` bytes from this view's start: ``pkt.has(ip.extent(tot_len))``
        checks that ``n`` bytes (a constant or DSL value) starting here are in the frame."""
        return self.at(n, EMPTY)

    @property
    def offset(self) -> Scalar | int:
        """Offset of this view from the start of the packet (for bpf_xdp_load_bytes and the like)."""
        if not isinstance(self._region, PacketBase):
            raise error("only packet views have a packet offset")
        base = self._region.offset()
        if isinstance(base, int):
            return base + self._off
        return base + self._off if self._off else base

    def _dsl_cond(self) -> Cond:
        if isinstance(self._region, RefRegion):
            return NonNull(self._region.vreg)
        raise error("only references returned by helpers (map lookups, reserve) can be tested for null")

    def is_null(self) -> Cond:
        return NonNull(self._region.vreg, negate=True) if isinstance(self._region, RefRegion) else ConstCond(False)


def _read(region: Region, off: int, ftype: Any, bits: tuple[int, int] | None) -> Any:
    if is_struct(ftype) or isinstance(ftype, ArrayType) or (isinstance(ftype, BytesType) and ftype.size not in (
            1, 2, 4, 8)):
        return View(region, off, ftype)
    if isinstance(ftype, BytesType):
        return View(region, off, ftype)
    v = load(region, off, ftype)
    if bits is None:
        return v
    shift, width = bits
    v = host(v)
    if shift:
        v = v >> shift
    if shift + width < ftype.size * 8:
        v = v & ((1 << width) - 1)
    return v


def _write(region: Region, off: int, ftype: Any, value: Any) -> None:
    if is_struct(ftype):
        if isinstance(value, View):
            copy(View(region, off, ftype), value)
            return
        items = value._asdict() if hasattr(value, "_asdict") else dict(value)
        for k, v in items.items():
            if isinstance(v, int) and v == 0:
                continue
            _write(region, off + ftype.fields[k].offset, ftype.fields[k].type, v)
        return
    if isinstance(ftype, ArrayType):
        if isinstance(value, View):
            copy(View(region, off, ftype), value)
            return
        value = list(value)
        if all(isinstance(v, int) and v == 0 for v in value) and len(value) == ftype.count:
            zero_fill(region, off, ftype.size)  # widest stores the alignment allows
            return
        for i, v in enumerate(value):
            _write(region, off + i * ftype.elem.size, ftype.elem, v)
        return
    store(region, off, ftype, value)


class NonNull(Cond):
    """``ptr != NULL`` for a helper-returned pointer; true path learns it is non-null."""

    def __init__(self, vreg: int, negate: bool = False):
        self.vreg = vreg
        self.negate = negate

    def jump_if(self, truth: bool, target: Label) -> None:
        if self.negate:
            truth = not truth
        current().emit("jne_k" if truth else "jeq_k", self.vreg, imm=0, ref=target)

    def facts_true(self, f: Facts) -> Facts:
        if self.negate:
            return f
        f = f.copy()
        f.nonnull.add(self.vreg)
        return f

    def facts_false(self, f: Facts) -> Facts:
        if not self.negate:
            return f
        f = f.copy()
        f.nonnull.add(self.vreg)
        return f

    def __invert__(self) -> Cond:
        return NonNull(self.vreg, not self.negate)


# ----------------------------------------------------------------------------- stack objects


def local(layout: Any, value: Any = None, *, _temp: bool = False, **fields: Any) -> View:
    """A zero-initialised stack object: ``local(Flow, src=ip.saddr, proto=6)`` or ``local(u32, x)``.

    Only the bytes not written by the given fields are zeroed, with the widest
    aligned stores, so keys and values never carry uninitialised padding.
    """
    b = current()
    size = layout.size
    off = b.fn.alloc_temp(size) if _temp else b.fn.alloc((size + 7) & ~7, 8)
    region = StackRegion(off, size)
    view = View(region, off, layout)
    if is_struct(layout):
        if value is not None:
            fields = dict(value._asdict() if hasattr(value, "_asdict") else value, **fields)
        covered: set[int] = set()
        for k, v in fields.items():
            f = layout.field(k) if k in layout.fields else None
            if f is None:
                raise error(f"{layout.__name__} has no field {k!r}")
            if not (isinstance(v, int) and v == 0):
                covered.update(range(f.offset, f.offset + f.type.size))
        zero_fill(region, off, size, covered)
        for k, v in fields.items():
            if isinstance(v, int) and v == 0:
                continue
            setattr(view, k, v)
    else:
        if value is None:
            zero_fill(region, off, size)
        elif isinstance(layout, ScalarType):
            store(region, off, layout, value)
        else:
            zero_fill(region, off, size)
            _write(region, off, layout, value)
    return view


def stack_bytes(data: bytes, temp: bool = False) -> View:
    """Constant bytes on the stack (e.g. a format string)."""
    from ..layout import Bytes
    b = current()
    off = b.fn.alloc_temp(len(data)) if temp else b.fn.alloc((len(data) + 7) & ~7, 8)
    region = StackRegion(off, len(data))
    _store_bytes(region, off, data)
    return View(region, off, Bytes(len(data)))


__all__ = ["View", "local", "copy", "padding_bytes", "NonNull", "PacketBase", "RefRegion", "StackRegion", "Struct"]
