"""Helper calls, maps, the ring buffer, trace_printk and BPF-to-BPF subprograms.

Every kernel helper is callable by name (``call("ktime_get_ns")`` or
``bpf.ktime_get_ns()``); arguments are checked against the helper's prototype
kinds (map / ctx / ptr / scalar) at build time.  Map operations take the map
objects of ``pybpfasm.maps`` (or anything with ``fd``, ``map_type``, ``key``
and ``value`` codecs).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from ..builder import HelperRef, Label, MapRef
from ..layout import ScalarType, is_struct, u8, u16, u32, u64
from .core import (
    U32,
    U64,
    Builder,
    Else,
    Facts,
    Function,
    Raw,
    Return,
    Scalar,
    _Chain,
    as_operand,
    convert,
    current,
    error,
    followed_by_branch,
    host,
    swap_const,
    to_be,
    ty_of,
    user_loc,
)
from .ir import ARG_REGS, R0, R1
from .memory import RefRegion, View, local, padding_bytes, stack_bytes, zero_fill
from .packet import CHANGES_PKT_DATA, Ctx, Packet

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4

# map types (uapi enum bpf_map_type) this module cares about
_HASH_OF_MAPS, _ARRAY_OF_MAPS = 13, 12
_PERCPU = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
_RINGBUF = 27


class MapValue(View):
    """A map value reference returned by ``lookup`` (nullable until checked)."""


class InnerMap:
    """The inner map a map-of-maps lookup returned (nullable): pass it where a map is expected."""

    def __init__(self, vreg: int, outer: Any):
        self.vreg = vreg
        self.outer = outer
        self.loc = user_loc()

    def _dsl_cond(self) -> Any:
        from .memory import NonNull
        return NonNull(self.vreg)

    def is_null(self) -> Any:
        from .memory import NonNull
        return NonNull(self.vreg, negate=True)

    def __bool__(self) -> bool:
        raise error("a DSL reference has no truth value at build time: use If(ref)")


def _map_type(m: Any) -> int:
    t = getattr(m, "map_type", None)
    if t is None:
        t = getattr(m, "type", 0)
    return int(t)


def _layout_of(codec: Any, size: int) -> Any:
    if is_struct(codec) or isinstance(codec, ScalarType):
        return codec
    scalar = _struct_scalar(codec)
    if scalar is not None:
        return scalar
    return {1: u8, 2: u16, 4: u32, 8: u64}.get(size) or _bytes(size)


def _struct_scalar(codec: Any) -> ScalarType | None:
    """The integer a one-field ``struct`` format codec (``"<I"``, ``">I"``) packs, with its byte order."""
    fmt = getattr(getattr(codec, "_struct", None), "format", None)
    if not isinstance(fmt, str) or len(fmt) != 2 or fmt[0] not in "<>!=" or fmt[1] not in "bBhHiIlLqQ":
        return None
    size = {"b": 1, "h": 2, "i": 4, "l": 4, "q": 8}[fmt[1].lower()]
    big = fmt[0] in ">!" or (fmt[0] == "=" and sys.byteorder == "big")
    signed = fmt[1].islower()
    name = f"{'be' if big else 's' if signed else 'u'}{size * 8}"
    return ScalarType(name, size, signed, "big" if big else sys.byteorder)


def _raw_key(m: Any) -> bool:
    """Is the map's key declared as plain bytes (``key=4``): stored exactly as the value sits in memory?"""
    from ..maps import RawCodec
    return isinstance(getattr(m, "key", None), RawCodec)


def _bytes(n: int) -> Any:
    from ..layout import Bytes
    return Bytes(n)


def key_layout(m: Any) -> Any:
    return _layout_of(getattr(m, "key", None), int(getattr(m, "key_size", 4)))


def value_layout(m: Any) -> Any:
    return _layout_of(getattr(m, "value", None), int(getattr(m, "value_size", 8)))


# ----------------------------------------------------------------------------- generic helper calls


def _arg_kinds(name: str) -> list[str] | None:
    try:
        from ..helpers import HELPERS
    except ImportError:  # pragma: no cover
        return None
    h = HELPERS.get(name[4:] if name.startswith("bpf_") else name)
    if h is None:
        raise error(f"unknown helper {name!r}")
    return [a.kind for a in h.args]


def _pointer_arg(x: Any) -> int:
    if isinstance(x, View):
        return x.addr.vreg
    raise error(f"expected a pointer (a view of packet, stack, map value or record), got {type(x).__name__}")


def call(name: str, *args: Any) -> Scalar:
    """Call a kernel helper by name (without or with the ``bpf_`` prefix); returns r0 as a u64 value."""
    b = current()
    helper = name[4:] if name.startswith("bpf_") else name
    kinds = _arg_kinds(helper)
    if kinds is not None:
        varargs = bool(kinds) and kinds[-1] == "varargs"
        fixed = kinds[:-1] if varargs else kinds
        if len(args) < len(fixed) or (not varargs and len(args) > len(fixed)):
            raise error(f"bpf_{helper} takes {len(fixed)} argument(s), got {len(args)}")
    else:  # pragma: no cover
        fixed, varargs = [], True
    if len(args) > 5:
        raise error("helpers take at most 5 arguments")
    regs: list[tuple[str, Any]] = []
    for i, a in enumerate(args):
        kind = fixed[i] if i < len(fixed) else "scalar"
        regs.append(_prepare_arg(helper, i, kind, a))
    for i, (how, v) in enumerate(regs):
        r = ARG_REGS[i]
        if how == "map":
            b.emit("lddw_map_fd", r, ref=MapRef(v))
        elif how == "imm":
            b.emit("mov64_k", r, imm=v)
        else:
            b.emit("mov64_x", r, v)
    b.emit("call", ref=HelperRef(helper), nargs=len(args))
    t = b.vreg()
    b.emit("mov64_x", t, R0)
    if helper in CHANGES_PKT_DATA and b.packet is not None:
        b.packet.invalidate()
    return Scalar(t, U64)


def _const_reg(v: int) -> int:
    from .core import load_const
    return load_const(v, U64).vreg


def _prepare_arg(helper: str, i: int, kind: str, a: Any) -> tuple[str, Any]:
    where = f"argument {i + 1} of bpf_{helper}"
    if kind == "map":
        if isinstance(a, InnerMap):
            if a.vreg not in current().facts.nonnull:
                raise error(f"{where}: inner map from line {a.loc.line if a.loc else '?'} used without a null check")
            return "reg", a.vreg
        if hasattr(a, "fd") or isinstance(a, str):
            return "map", a
        raise error(f"{where} must be a map, got {type(a).__name__}")
    if kind == "ctx":
        if isinstance(a, Packet):
            return "reg", a.ctx.vreg
        if isinstance(a, Ctx):
            return "reg", a.vreg
        raise error(f"{where} must be the program context (pkt), got {type(a).__name__}")
    if kind == "ptr":
        if isinstance(a, View):
            return "reg", _pointer_arg(a)
        if isinstance(a, int) and a == 0:
            return "imm", 0
        if isinstance(a, Scalar):
            return "reg", a.vreg  # a pointer computed by hand (escape hatch)
        raise error(f"{where} must be a pointer (view of packet, stack, map value or record), "
                    f"got {type(a).__name__}")
    # scalar
    if isinstance(a, Raw):  # bits as they are: no byte swap of a big-endian value
        v = a.bits()
        if isinstance(v, int):
            return ("imm", v) if -(1 << 31) <= v < (1 << 31) else ("reg", _const_reg(v))
        return "reg", v.vreg
    if isinstance(a, (View, InnerMap, Packet, Ctx)) or hasattr(a, "fd"):
        raise error(f"{where} must be a number, got {type(a).__name__}")
    v = as_operand(a)
    if isinstance(v, int):
        if -(1 << 31) <= v < (1 << 31):
            return "imm", v
        from .core import load_const
        return "reg", load_const(v, U64).vreg
    return "reg", convert(host(v), U64 if not v.ty.signed else v.ty.__class__(64, True)).vreg


class _HelperNamespace:
    """``bpf.ktime_get_ns()``, ``bpf.xdp_load_bytes(pkt, off, buf, n)``: every helper by attribute."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def f(*args: Any) -> Scalar:
            return call(name, *args)
        f.__name__ = name
        return f


bpf = _HelperNamespace()


# ----------------------------------------------------------------------------- maps


def _key_arg(m: Any, key: Any) -> View:
    """The key on the stack, laid out as the map declares it.

    A big-endian value (``ip.daddr``) keeps its wire bytes in a raw-bytes key
    (``key=4``: what user space writes with ``socket.inet_aton``); a host-order
    integer key (``key=u32`` / ``"<I"``) refuses it, since guessing between its
    number and its bytes would silently build keys no user-space entry matches.
    """
    if isinstance(key, View):
        return key
    lay = key_layout(m)
    name = getattr(m, "name", "") or "map"
    if is_struct(lay):
        if isinstance(key, dict) or hasattr(key, "_asdict"):
            return local(lay, key, _temp=True)
        raise error(f"key of {name} is a {lay.__name__}: pass a view, dict or {lay.__name__}(...)")
    if isinstance(key, Raw):
        return local(lay, key, _temp=True)
    v = as_operand(key)
    if isinstance(v, Scalar) and v.order == "be":
        if _raw_key(m):
            if v.nbytes != lay.size:
                raise error(f"key of {name} is {lay.size} raw bytes, but the value is a {v.nbytes}-byte "
                            f"big-endian field (be{v.nbytes * 8})")
            return local(lay, Raw(v), _temp=True)  # wire bytes, as they are
        if isinstance(lay, ScalarType) and not lay.is_network_order:
            raise error(f"key of {name} is a host-order u{lay.size * 8}, but the value is big-endian "
                        f"(be{v.nbytes * 8}): pass x.value() for its number, or declare the key as "
                        f"be{lay.size * 8} or {lay.size} raw bytes (key={lay.size}) for its wire bytes")
    return local(lay, v, _temp=True)


def _value_arg(m: Any, value: Any) -> View:
    if isinstance(value, View):
        return value
    return local(value_layout(m), value, _temp=True)


def lookup(m: Any, key: Any) -> Any:
    """``bpf_map_lookup_elem``: a nullable reference to the value (or to the inner map of a map-of-maps)."""
    with current().fn.temp_scope():
        k = _key_arg(m, key)
        r = call("map_lookup_elem", m, k)
        if _map_type(m) in (_HASH_OF_MAPS, _ARRAY_OF_MAPS):
            return InnerMap(r.vreg, m)
        return MapValue(RefRegion(r.vreg, f"value of map {getattr(m, 'name', '') or '?'}"), 0, value_layout(m))


def update(m: Any, key: Any, value: Any, flags: int = BPF_ANY) -> Scalar:
    """``bpf_map_update_elem`` (returns 0 or a negative error)."""
    with current().fn.temp_scope():
        return call("map_update_elem", m, _key_arg(m, key), _value_arg(m, value), flags)


def delete(m: Any, key: Any) -> Scalar:
    """``bpf_map_delete_elem``."""
    with current().fn.temp_scope():
        return call("map_delete_elem", m, _key_arg(m, key))


def add(m: Any, key: Any, n: Any = 1, *, create: bool = False, **fields: Any) -> None:
    """Add to a counter in one line: ``add(stats, IDX)`` / ``add(stats, IDX, packets=1, bytes=len)``.

    Per-CPU maps use plain increments, shared maps atomic adds.  With
    ``create=True`` a missing key is inserted (BPF_NOEXIST) with the increments
    as its initial value.
    """
    with current().fn.temp_scope():
        from .core import If
        atomic = _map_type(m) not in _PERCPU
        k = _key_arg(m, key)
        ref = lookup(m, k)
        with If(ref, followed=create):
            if fields:
                for name, inc in fields.items():
                    ref.add(inc, name, atomic=atomic)
            else:
                ref.add(n, atomic=atomic)
        if create:
            with Else():
                lay = value_layout(m)
                init = local(lay, fields, _temp=True) if fields and is_struct(lay) else local(lay, n, _temp=True)
                update(m, k, init, BPF_NOEXIST)


def redirect_map(m: Any, key: Any, flags: int = 0) -> Scalar:
    """``bpf_redirect_map`` (the map may be an inner map from a map-of-maps lookup, null-checked)."""
    return call("redirect_map", m, key, flags)


def redirect(ifindex: Any, flags: int = 0) -> Scalar:
    return call("redirect", ifindex, flags)


def trace_printk(fmt: str, *args: Any) -> Scalar:
    """``bpf_trace_printk(fmt, ...)``: up to 3 arguments; output in /sys/kernel/tracing/trace_pipe.

    An argument is a number or a view, passed as a pointer to its bytes for ``%pI4`` / ``%pI6`` /
    ``%pM``-style formats: ``trace_printk("%pI4\\n", ip.field_view("saddr"))`` (or ``ip.field_addr(...)``).
    """
    with current().fn.temp_scope():
        if len(args) > 3:
            raise error("trace_printk takes at most 3 arguments")
        data = fmt.encode() + b"\0"
        buf = stack_bytes(data, temp=True)
        args = tuple(a.addr if isinstance(a, View) else a for a in args)
        return call("trace_printk", buf, len(data), *args)


def csum_diff(from_view: Any, from_size: int, to_view: Any, to_size: int, seed: Any = 0) -> Scalar:
    """``bpf_csum_diff`` (views or 0 for the pointers).  The sum is in memory byte order, like the
    checksum fields: a big-endian ``seed`` (``ip.check``) is passed as its bits, not byte-swapped."""
    if isinstance(seed, Scalar) and seed.order == "be":
        seed = Raw(seed)
    return call("csum_diff", from_view, from_size, to_view, to_size, seed)


def csum_fold(csum: Any) -> Raw:
    """Fold a 32-bit one's-complement sum (``csum_diff``'s result) to 16 bits and complement it: the
    value to store in a checksum field, already in memory order, so ``ip.check = csum_fold(csum_diff(
    0, 0, ip, 20))`` stores it without a byte swap (set the field to 0 before summing)."""
    c = as_operand(csum)
    if isinstance(c, int):
        c &= 0xFFFFFFFF
        for _ in range(2):
            c = (c & 0xFFFF) + (c >> 16)
        return Raw(~c & 0xFFFF)
    if c.order == "be":  # bits already in memory order (a loaded checksum field): sum them as they are
        c = Scalar(c.vreg, c.ty, scope=c.scope)
    c = convert(c, U32)
    for _ in range(2):
        c = (c & 0xFFFF) + (c >> 16)
    return Raw(~c & 0xFFFF)


# ----------------------------------------------------------------------------- ring buffer


class reserve:  # noqa: N801 - reads as a construct: with reserve(events, Event) as ev:
    """``with reserve(ringbuf, Layout) as ev:`` -- a record, submitted at the end of the block.

    The block runs only if the reservation succeeded; ``with Else():`` may
    follow for the ring-full case.  Inside, ``submit(ev)`` / ``discard(ev)``
    end the record early; leaving the block any other way with the record
    open is a build error.

    The record's padding (``pad(n)`` / ``_x`` fields, alignment gaps, the tail) is always zeroed,
    with the widest aligned stores, so no uninitialised kernel bytes reach user space;
    ``zero=True`` zeroes the whole record first (for records whose fields are not all set).
    """

    def __init__(self, ringbuf: Any, layout: Any, flags: int = 0, *, zero: bool = False):
        self.ringbuf = ringbuf
        self.layout = layout
        self.flags = flags
        self.zero = zero
        self.loc = user_loc()

    def __enter__(self) -> View:
        b = current()
        b.flush_chain()
        r = call("ringbuf_reserve", self.ringbuf, self.layout.size, 0)
        self.vreg = r.vreg
        self.else_label = b.fn.label("rbfull")
        self.end = b.fn.label("rbend")
        self.entry = b.facts.copy()
        b.emit("jeq_k", r.vreg, imm=0, ref=self.else_label)
        f = b.facts.copy()
        f.nonnull.add(r.vreg)
        f.records[r.vreg] = self.loc
        b.facts = f
        self.scope = b.open_scope("reserve")
        region = RefRegion(r.vreg, "ring-buffer record", record=True)
        if self.zero:
            zero_fill(region, 0, self.layout.size)
        else:
            pad = padding_bytes(self.layout)
            if pad:
                zero_fill(region, 0, self.layout.size, set(range(self.layout.size)) - set(pad))
        return View(region, 0, self.layout)

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        if et is not None:
            return False
        b = current()
        b.close_scope(self.scope)
        ends: list[Facts] = []
        if not b.terminated:
            if self.vreg in b.facts.records:
                _end_record(self.vreg, "ringbuf_submit", self.flags)
            ends.append(b.facts)
            b.emit("ja", ref=self.end, loc=self.loc)
        b.place(self.else_label)
        b.terminated = False
        b.facts = self.entry
        b.chain = _Chain(self.end, ends, self.entry, self.loc, b.scope)
        if not followed_by_branch(self.loc):
            b.flush_chain()
        return False


def _end_record(vreg: int, helper: str, flags: int) -> None:
    b = current()
    if vreg not in b.facts.records:
        raise error("ring-buffer record already submitted or discarded")
    b.emit("mov64_x", R1, vreg)
    b.emit("mov64_k", ARG_REGS[1], imm=flags)
    b.emit("call", ref=HelperRef(helper), nargs=2)
    f = b.facts.copy()
    del f.records[vreg]
    f.nonnull.discard(vreg)
    b.facts = f


def submit(record: View, flags: int = 0) -> None:
    """Submit a reserved record now (instead of at the end of its ``with`` block)."""
    _end_record(record._region.vreg, "ringbuf_submit", flags)  # type: ignore[attr-defined]


def discard(record: View, flags: int = 0) -> None:
    """Discard a reserved record."""
    _end_record(record._region.vreg, "ringbuf_discard", flags)  # type: ignore[attr-defined]


def ringbuf_output(ringbuf: Any, data: View, size: Any = None, flags: int = 0) -> Scalar:
    """``bpf_ringbuf_output``: copy ``data`` (size defaults to the view's) into the ring buffer."""
    return call("ringbuf_output", ringbuf, data, data.size if size is None else size, flags)


# ----------------------------------------------------------------------------- subprograms


class subprog:  # noqa: N801 - used as a decorator
    """``@subprog`` -- a BPF-to-BPF function (static: verified at each call site, emitted once).

    Parameters receive DSL values: a ``pkt`` parameter (named ``pkt``) gets the
    packet/context, others are u64 scalars.  Call it like a Python function from
    a program; it must ``Return(value)`` on every path.
    """

    is_global = False

    def __init__(self, fn: Any):
        self.fn = fn
        self.name = fn.__name__
        sig = inspect.signature(fn)
        self.params = list(sig.parameters)
        self.types: dict[str, Any] = {}
        for p, param in sig.parameters.items():
            ann = param.annotation
            if isinstance(ann, str):
                ann = eval(ann, fn.__globals__)  # noqa: S307 - the user's own annotation
            if isinstance(ann, ScalarType):
                self.types[p] = ann
        if len(self.params) > 5:
            raise error(f"subprogram {self.name} takes more than 5 parameters")

    def __call__(self, *args: Any) -> Scalar:
        b = current()
        if len(args) != len(self.params):
            raise error(f"{self.name}() takes {len(self.params)} arguments, got {len(args)}")
        label = b.subprogs.get(self)
        if label is None:
            label = Label(f"fn:{self.name}")
            b.subprogs[self] = label
            b.pending_subprogs.append(self)
        regs: list[tuple[str, Any]] = []
        for i, (p, a) in enumerate(zip(self.params, args)):
            if p == "pkt":
                if not isinstance(a, Packet):
                    raise error(f"parameter pkt of {self.name} takes the packet")
                regs.append(("reg", a.ctx.vreg))
            elif p in self.types and self.types[p].is_network_order and isinstance(a, Scalar):
                regs.append(("reg", to_be(a, self.types[p].size).vreg))
            elif p in self.types and isinstance(a, int) and self.types[p].is_network_order:
                regs.append(("imm", swap_const(a, self.types[p].size)))
            else:
                regs.append(_prepare_arg(self.name, i, "scalar", a))
        for i, (how, v) in enumerate(regs):
            if how == "imm":
                b.emit("mov64_k", ARG_REGS[i], imm=v)
            else:
                b.emit("mov64_x", ARG_REGS[i], v)
        b.emit("call_local", ref=label, nargs=len(args))
        t = b.vreg()
        b.emit("mov64_x", t, R0)
        return Scalar(t, U64)

    def trace(self, b: Builder) -> Function:
        """Trace the body into its own function (own registers and stack frame)."""
        from .core import Facts, Scope
        saved = (b.fn, b.facts, b.scope, b.terminated, b.chain, b.loops, b.packet,
                 getattr(b, "fallback_loc", None))
        fn = Function(self.name, False)
        b.fn, b.facts, b.scope, b.terminated, b.chain, b.loops = fn, Facts(), Scope(None, "function"), False, None, []
        b.fallback_loc = _def_loc(self.fn)  # type: ignore[attr-defined]  # entry code: the subprogram's def line
        try:
            args: list[Any] = []
            for i, p in enumerate(self.params):
                t = fn.vreg()
                b.emit("mov64_x", t, ARG_REGS[i])
                if p == "pkt":
                    b.packet = Packet(t)
                    args.append(b.packet)
                elif p in self.types:
                    st = self.types[p]
                    if st.is_network_order:
                        args.append(Scalar(t, ty_of(st), None, "be", st.size))
                    else:
                        args.append(convert(Scalar(t, U64), ty_of(st)))
                else:
                    args.append(Scalar(t, U64))
            ret = self.fn(*args)
            b.flush_chain()
            if not b.terminated:
                if ret is None:
                    raise error(f"subprogram {self.name} can reach its end without Return()",
                                _def_loc(self.fn))
                Return(ret)
            if b.loops:
                raise error("a Range loop was left with Python break: use Break()", b.loops[-1].loc)
            return fn
        finally:
            (b.fn, b.facts, b.scope, b.terminated, b.chain, b.loops, b.packet,
             b.fallback_loc) = saved  # type: ignore[attr-defined]


def global_func(fn: Any) -> subprog:
    """``@global_func`` -- like ``@subprog``, but a *global* BPF function: the verifier checks its body
    once, from its prototype (scalar parameters are unknown u64 values, ``pkt`` is the context), instead
    of once per call site.  The program is then loaded with a small BTF describing its functions.
    Global functions cannot take pointers other than the packet context."""
    s = subprog(fn)
    s.is_global = True
    return s


def _def_loc(fn: Any) -> Any:
    from .core import def_loc
    return def_loc(fn)


_ = (R1, Else)
