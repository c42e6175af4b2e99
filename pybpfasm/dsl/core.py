"""Tracing core: the builder, scalar values, conditions, variables and structured control flow.

A DSL function runs once at build time.  Every operation on a DSL value emits
IR immediately (into the current function's item list) and returns a new
value held in a fresh virtual register.  Python ints stay Python ints, so
constant expressions fold for free.

Control flow cannot be traced through Python's ``if``/``while`` (a DSL value
refuses ``bool()``), so it is written with context managers and a generator::

    with If(x > 3): ...
    with Elif(x == 0): ...
    with Else(): ...
    for i in Range(8): ... Break() ... Continue()
    Return(XDP_DROP)

While tracing, the builder keeps *facts* about the current path: which packet
ranges are bounds-checked, which map values are known non-null, which
variables are set, which ring-buffer records are open.  Facts fork at every
branch and are intersected where paths join, which is how the DSL refuses, at
build time and naming the DSL line, what the verifier would reject.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..builder import AssemblyError, Label
from ..isa import SourceLoc
from ..layout import ScalarType
from .ir import FIRST_VREG, R0, R10, Item, Op

_DSL_DIR = os.path.dirname(os.path.abspath(__file__))
# the DSL's implementation modules; DSL code written with it (reference.py, users) is never skipped
_SKIP_FILES = tuple(os.path.join(_DSL_DIR, m + ".py") for m in
                    ("__init__", "core", "memory", "packet", "calls", "program", "ir", "regalloc", "opt")) + (
    contextlib.__file__,)


class DslError(AssemblyError):
    """A DSL program the verifier would reject (or that is ill-formed); names the DSL line."""


def user_loc() -> SourceLoc | None:
    """The first stack frame outside the DSL package: the user's DSL line."""
    frame = sys._getframe(1)
    while frame is not None:
        fname = frame.f_code.co_filename
        if frame.f_code.co_name == "_build" and fname in _SKIP_FILES:
            return getattr(_BUILDERS[-1], "fallback_loc", None) if _BUILDERS else None
        if fname not in _SKIP_FILES and not fname.startswith("<frozen"):
            return source_loc(fname, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


def source_loc(fname: str, line: int) -> SourceLoc:
    """A SourceLoc for a line of a DSL file: relative path when below the working directory, line text."""
    text = linecache.getline(fname, line).strip()
    try:
        rel = os.path.relpath(fname)
    except ValueError:
        rel = fname
    if rel.startswith(".."):
        rel = fname
    return SourceLoc(rel, line, 0, text)


def def_loc(fn: Any) -> SourceLoc:
    """The ``def`` line of a DSL function (a program or subprogram): where its entry code comes from."""
    code = fn.__code__
    line = code.co_firstlineno
    lines = linecache.getlines(code.co_filename)
    while 0 < line <= len(lines) and lines[line - 1].lstrip().startswith("@"):
        line += 1  # decorators: co_firstlineno points at the first one; name the def itself
    return source_loc(code.co_filename, line)


def error(message: str, loc: SourceLoc | None = None) -> DslError:
    return DslError(message, loc or user_loc())


_FOLLOWED: dict[str, dict[int, bool]] = {}


def _with_followers(fname: str) -> dict[int, bool]:
    """For every ``with`` statement line of a file: is the next statement ``with Elif/Else``?"""
    import ast

    lines = linecache.getlines(fname)
    out: dict[int, bool] = {}
    if not lines:
        return out
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return out
    for node in ast.walk(tree):
        for body_name in ("body", "orelse", "finalbody"):
            body = getattr(node, body_name, None)
            if not isinstance(body, list):
                continue
            for stmt, nxt in zip(body, body[1:] + [None]):
                if not isinstance(stmt, ast.With):
                    continue
                followed = False
                if isinstance(nxt, ast.With) and nxt.items and isinstance(nxt.items[0].context_expr, ast.Call):
                    f = nxt.items[0].context_expr.func
                    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                    followed = name in ("Elif", "Else")
                out[stmt.lineno] = followed
    return out


def followed_by_branch(loc: SourceLoc | None) -> bool:
    """Is the ``with`` statement at ``loc`` directly followed by ``with Elif(...)`` / ``with Else()``?

    Python evaluates an Elif's condition before Elif runs, so the builder must
    know, when an If block ends, whether that code belongs to the false branch.
    """
    if loc is None:
        return False
    fname = loc.file if os.path.isabs(loc.file) else os.path.abspath(loc.file)
    table = _FOLLOWED.get(fname)
    if table is None:
        table = _FOLLOWED[fname] = _with_followers(fname)
    return table.get(loc.line, False)


# ----------------------------------------------------------------------------- facts


@dataclass
class Facts:
    """What is known on the current path."""

    checked: dict[int, tuple[int, int]] = field(default_factory=dict)  # base id -> (end, pointer vreg)
    nonnull: set[int] = field(default_factory=set)  # vregs known non-null
    assigned: set[int] = field(default_factory=set)  # Var ids set on every path
    records: dict[int, SourceLoc | None] = field(default_factory=dict)  # open ringbuf records: vreg -> reserve line

    def copy(self) -> Facts:
        return Facts(dict(self.checked), set(self.nonnull), set(self.assigned), dict(self.records))


def merge(paths: list[Facts], loc: SourceLoc | None) -> Facts:
    """Facts that hold after paths join: the intersection."""
    if not paths:
        return Facts()
    first = paths[0]
    out = first.copy()
    for f in paths[1:]:
        out.checked = {k: (min(v[0], f.checked[k][0]), v[1]) for k, v in out.checked.items()
                       if k in f.checked and f.checked[k][1] == v[1]}
        out.nonnull &= f.nonnull
        out.assigned &= f.assigned
        if set(f.records) != set(out.records):
            open_somewhere = (set(f.records) ^ set(out.records))
            where = next(iter(open_somewhere))
            rloc = f.records.get(where) or out.records.get(where)
            raise DslError(f"ring-buffer record reserved at {rloc} is submitted or discarded on some paths "
                           "but not on others", loc)
    return out


# ----------------------------------------------------------------------------- functions and builder


class Scope:
    """A lexical block (If body, loop body, ...): values defined inside die when it closes."""

    def __init__(self, parent: Scope | None, kind: str):
        self.parent = parent
        self.kind = kind
        self.closed = False


class Function:
    """One BPF function being traced: its items, virtual registers and stack frame."""

    def __init__(self, name: str, is_main: bool):
        self.name = name
        self.is_main = is_main
        self.items: list[Item] = []
        self.next_vreg = FIRST_VREG
        self.frame = 0  # bytes of stack used (grows down from r10)
        self.label_counter = 0
        self.temp_free: list[tuple[int, int]] = []
        self.loops: list[tuple[str, str]] = []  # (body label, exit label) of each Range loop
        self.temp_in_use: list[tuple[int, int]] = []

    def vreg(self) -> int:
        v = self.next_vreg
        self.next_vreg += 1
        return v

    def alloc(self, size: int, align: int = 8) -> int:
        """Reserve ``size`` bytes of stack; returns the (negative) offset from r10."""
        self.frame += size
        if self.frame % align:
            self.frame += align - self.frame % align
        if self.frame > 512:
            raise error(f"{self.name}: stack frame exceeds 512 bytes")
        return -self.frame

    @contextlib.contextmanager
    def temp_scope(self) -> Iterator[None]:
        """Stack taken by ``alloc_temp`` inside is free again afterwards (helper-call keys and values)."""
        saved = list(self.temp_in_use)
        try:
            yield
        finally:
            for slot in self.temp_in_use[len(saved):]:
                self.temp_free.append(slot)
            self.temp_in_use = saved

    def alloc_temp(self, size: int) -> int:
        size = (size + 7) & ~7
        for i, (off, sz) in enumerate(self.temp_free):
            if sz == size:
                del self.temp_free[i]
                self.temp_in_use.append((off, sz))
                return off
        off = self.alloc(size, 8)
        self.temp_in_use.append((off, size))
        return off

    def label(self, hint: str) -> Label:
        self.label_counter += 1
        return Label(f"{self.name}.{hint}{self.label_counter}")


@dataclass
class _Chain:
    end: Label
    ends: list[Facts]
    false_facts: Facts
    loc: SourceLoc | None
    scope: Scope


@dataclass
class _Loop:
    cont: Label
    exit: Label
    breaks: list[Facts]
    conts: list[Facts]
    loc: SourceLoc | None


class Builder:
    """The tracing state of one program (a stack of functions being traced)."""

    def __init__(self, program: Any):
        self.program = program
        self.fn: Function = Function("main", True)
        self.facts = Facts()
        self.scope = Scope(None, "function")
        self.terminated = False
        self.chain: _Chain | None = None
        self.loops: list[_Loop] = []
        self.packet: Any = None
        self.subprogs: dict[Any, Any] = {}

    # -- emission
    def emit(self, form: str, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, ref: Any = None,
             nargs: int = 0, loc: SourceLoc | None = None, **meta: Any) -> Op:
        meta["depth"] = len(self.loops)
        op = Op(form, dst, src, off, imm, 0, ref, loc or user_loc(), nargs, meta)
        self.fn.items.append(op)
        return op

    def place(self, label: Label) -> None:
        self.fn.items.append(label)

    def vreg(self) -> int:
        return self.fn.vreg()

    # -- if/elif/else chains are closed lazily: an Elif/Else may still follow
    def flush_chain(self) -> None:
        chain = self.chain
        if chain is None:
            return
        self.chain = None
        self.fn.items.append(chain.end)
        paths = chain.ends + [chain.false_facts]
        self.facts = merge(paths, chain.loc)
        self.terminated = False

    def take_chain(self, what: str) -> _Chain:
        chain = self.chain
        if chain is None or chain.scope is not self.scope:
            raise error(f"{what} without a preceding If (it must directly follow the If/Elif `with` block, "
                        "in code whose source Python can read)")
        self.chain = None
        return chain

    def open_scope(self, kind: str) -> Scope:
        self.scope = Scope(self.scope, kind)
        return self.scope

    def close_scope(self, scope: Scope) -> None:
        if self.chain is not None:
            self.flush_chain()
        assert self.scope is scope, "scopes closed out of order"
        scope.closed = True
        self.scope = scope.parent  # type: ignore[assignment]


_BUILDERS: list[Builder] = []


def current() -> Builder:
    if not _BUILDERS:
        raise DslError("DSL operations are only valid while a program is being built "
                       "(inside an @xdp function)", user_loc())
    return _BUILDERS[-1]


@contextlib.contextmanager
def building(builder: Builder) -> Iterator[Builder]:
    _BUILDERS.append(builder)
    try:
        yield builder
    finally:
        _BUILDERS.pop()


# ----------------------------------------------------------------------------- scalars


@dataclass(frozen=True)
class Ty:
    bits: int  # 32 or 64
    signed: bool


U32, U64, S32, S64 = Ty(32, False), Ty(64, False), Ty(32, True), Ty(64, True)


def ty_of(t: Any) -> Ty:
    """The register type of a layout scalar (narrow types widen to 32 bits)."""
    if isinstance(t, Ty):
        return t
    if isinstance(t, ScalarType):
        return Ty(64 if t.size == 8 else 32, t.signed)
    raise TypeError(f"{t!r} is not a scalar type")


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _fits_imm(v: int, bits: int) -> bool:
    if bits == 32:
        return True  # any 32-bit pattern
    return -(1 << 31) <= v < (1 << 31) or False


def norm(v: int, ty: Ty) -> int:
    """A Python int reduced to the type's range (two's complement)."""
    mask = (1 << ty.bits) - 1
    v &= mask
    if ty.signed and v >> (ty.bits - 1):
        v -= 1 << ty.bits
    return v


class Scalar:
    """A DSL integer held in a virtual register.

    ``order`` is "host" or "be": a big-endian packet field is kept as loaded
    (raw bytes) until an operation needs its numeric value, so comparisons and
    bit operations with constants swap the constant at build time instead of
    the value at run time (what clang does with ``bpf_htons``).
    """

    __slots__ = ("vreg", "ty", "umax", "order", "nbytes", "scope", "is_var_alias")

    def __init__(self, vreg: int, ty: Ty, umax: int | None = None, order: str = "host", nbytes: int = 0,
                 scope: Scope | None = None):
        self.vreg = vreg
        self.ty = ty
        self.umax = umax
        self.order = order
        self.nbytes = nbytes
        self.scope = scope if scope is not None else current().scope
        self.is_var_alias = False

    def __bool__(self) -> bool:
        raise error("a DSL value has no truth value at build time: use If(...), All(...), Any(...), Not(...)")

    def __repr__(self) -> str:
        return f"<Scalar v{self.vreg} {'s' if self.ty.signed else 'u'}{self.ty.bits}{' be' if self.order == 'be' else ''}>"

    def __index__(self) -> int:
        raise error("a DSL value cannot be used as a Python index or count")

    # arithmetic
    def __add__(self, o: Any) -> Scalar: return binop("+", self, o)
    def __radd__(self, o: Any) -> Scalar: return binop("+", o, self)
    def __sub__(self, o: Any) -> Scalar: return binop("-", self, o)
    def __rsub__(self, o: Any) -> Scalar: return binop("-", o, self)
    def __mul__(self, o: Any) -> Scalar: return binop("*", self, o)
    def __rmul__(self, o: Any) -> Scalar: return binop("*", o, self)
    def __floordiv__(self, o: Any) -> Scalar: return binop("//", self, o)
    def __rfloordiv__(self, o: Any) -> Scalar: return binop("//", o, self)
    def __mod__(self, o: Any) -> Scalar: return binop("%", self, o)
    def __rmod__(self, o: Any) -> Scalar: return binop("%", o, self)
    def __and__(self, o: Any) -> Scalar: return binop("&", self, o)
    def __rand__(self, o: Any) -> Scalar: return binop("&", o, self)
    def __or__(self, o: Any) -> Scalar: return binop("|", self, o)
    def __ror__(self, o: Any) -> Scalar: return binop("|", o, self)
    def __xor__(self, o: Any) -> Scalar: return binop("^", self, o)
    def __rxor__(self, o: Any) -> Scalar: return binop("^", o, self)
    def __lshift__(self, o: Any) -> Scalar: return binop("<<", self, o)
    def __rlshift__(self, o: Any) -> Scalar: return binop("<<", o, self)
    def __rshift__(self, o: Any) -> Scalar: return binop(">>", self, o)
    def __rrshift__(self, o: Any) -> Scalar: return binop(">>", o, self)
    def __neg__(self) -> Scalar: return unop("neg", self)
    def __invert__(self) -> Scalar: return unop("~", self)
    def __pos__(self) -> Scalar: return self

    def __truediv__(self, o: Any) -> Scalar:
        raise error("use // for integer division (BPF division truncates toward zero)")

    __rtruediv__ = __truediv__

    # comparisons -> conditions
    def __lt__(self, o: Any) -> Cond: return Cmp("<", self, o)
    def __le__(self, o: Any) -> Cond: return Cmp("<=", self, o)
    def __gt__(self, o: Any) -> Cond: return Cmp(">", self, o)
    def __ge__(self, o: Any) -> Cond: return Cmp(">=", self, o)
    def __eq__(self, o: Any) -> Cond: return Cmp("==", self, o)  # type: ignore[override]
    def __ne__(self, o: Any) -> Cond: return Cmp("!=", self, o)  # type: ignore[override]
    __hash__ = object.__hash__

    # casts
    def cast(self, t: Any) -> Scalar:
        """Convert to a register type (u32/u64/s32/s64 or a layout scalar): truncates or extends like C."""
        return convert(self, ty_of(t))

    def u32(self) -> Scalar: return convert(self, U32)
    def u64(self) -> Scalar: return convert(self, U64)
    def s32(self) -> Scalar: return convert(self, S32)
    def s64(self) -> Scalar: return convert(self, S64)

    def be(self) -> Scalar:
        """This host-order value in network byte order (``bpf_htons``/``htonl`` of its width)."""
        return to_be(self, 4 if self.ty.bits == 32 else 8)

    def value(self) -> Scalar:
        """The numeric (host order) value."""
        return host(self)

    def raw_be(self, nbytes: int) -> Scalar:
        """Reinterpret the register's low bytes as an already network-ordered ``nbytes`` field (no swap):
        for values computed in memory order, such as a folded ``bpf_csum_diff`` result."""
        v = host(self)
        return Scalar(v.vreg, U64 if nbytes == 8 else U32, None, "be", nbytes, scope=v.scope)


class Raw:
    """``raw(x)``: a value whose bits are already in memory (network) order -- stored as they are."""

    __slots__ = ("x", "loc")

    def __init__(self, x: Any):
        if isinstance(x, Raw):
            x = x.x
        self.x = x
        self.loc = user_loc()

    def __repr__(self) -> str:
        return f"raw({self.x!r})"

    def __bool__(self) -> bool:
        raise error("a DSL value has no truth value at build time: use If(...)")

    def bits(self) -> Scalar | int:
        """The operand with its register (or constant) bits untouched: no byte swap either way."""
        v = as_operand(self.x)
        return v


def raw(x: Any) -> Raw:
    """Mark ``x`` as already in memory byte order: ``ip.check = raw(x)`` stores its low bytes as they
    are into a be16/be32 field (no ``htons``), a helper argument gets its bits unchanged.  For values
    computed in memory order, e.g. a checksum from ``bpf_csum_diff`` (see ``csum_fold``)."""
    return Raw(x)


# -- helpers to get operands in registers

def check_live(v: Scalar) -> None:
    s = v.scope
    if s is not None and s.closed:
        raise error("this value was computed inside a block that has ended; "
                    "use a Var to carry values out of If/loop/with blocks")


def host(v: Scalar) -> Scalar:
    """Numeric value of a (possibly raw big-endian) scalar."""
    check_live(v)
    if v.order == "host":
        return v
    b = current()
    t = b.vreg()
    b.emit("mov64_x", t, v.vreg)
    b.emit(f"be{v.nbytes * 8}", t, imm=v.nbytes * 8)
    return Scalar(t, v.ty, (1 << (v.nbytes * 8)) - 1)


def to_be(v: Scalar, nbytes: int) -> Scalar:
    """Raw big-endian form of ``nbytes`` (for storing into a be field)."""
    check_live(v)
    if v.order == "be" and v.nbytes == nbytes:
        return v
    v = host(v)
    b = current()
    t = b.vreg()
    b.emit("mov64_x", t, v.vreg)
    b.emit(f"be{nbytes * 8}", t, imm=nbytes * 8)
    return Scalar(t, Ty(64 if nbytes == 8 else 32, False), None, "be", nbytes)


def swap_const(value: int, nbytes: int) -> int:
    return int.from_bytes((value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "big"), "little")


def load_const(value: int, ty: Ty) -> Scalar:
    """A constant in a fresh register."""
    b = current()
    t = b.vreg()
    value = norm(value, ty)
    if ty.bits == 32:
        b.emit("mov32_k", t, imm=_s32(value))
    elif -(1 << 31) <= value < (1 << 31):
        b.emit("mov64_k", t, imm=value)
    else:
        b.emit("lddw", t, imm=value & ((1 << 64) - 1))
    return Scalar(t, ty, value if value >= 0 else None)


def convert(v: Scalar, ty: Ty) -> Scalar:
    """C conversion between register types."""
    v = host(v)
    if v.ty == ty:
        return v
    b = current()
    if v.ty.bits == ty.bits:
        return Scalar(v.vreg, ty, v.umax if not ty.signed else None, scope=v.scope)
    t = b.vreg()
    if ty.bits == 32:  # truncate: 32-bit move zero-extends
        b.emit("mov32_x", t, v.vreg)
        umax = v.umax if (v.umax is not None and v.umax <= 0xFFFFFFFF) else None
        return Scalar(t, ty, umax)
    if v.ty.signed:  # 32 -> 64 sign-extend
        b.emit("movsx64_32", t, v.vreg)
        return Scalar(t, ty, None)
    return Scalar(v.vreg, ty, v.umax if v.umax is not None else 0xFFFFFFFF, scope=v.scope)  # already zero-extended


def as_operand(x: Any) -> Scalar | int:
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, Scalar):
        check_live(x)
        return x
    reader = getattr(x, "_dsl_scalar", None)
    if reader is not None:
        return reader()
    if isinstance(x, Cond):
        return x.value()  # a condition used as a number: 0 or 1
    raise error(f"{type(x).__name__} is not a DSL integer value")


def result_type(a: Scalar | int, b: Scalar | int) -> Ty:
    """C-like promotion: the wider type wins; equal widths are unsigned if either is."""
    if isinstance(a, int):
        return b.ty if isinstance(b, Scalar) else U64
    if isinstance(b, int):
        return a.ty
    if a.ty.bits != b.ty.bits:
        return a.ty if a.ty.bits > b.ty.bits else b.ty
    return Ty(a.ty.bits, a.ty.signed and b.ty.signed)


_ALU = {"+": "add", "-": "sub", "*": "mul", "//": "div", "%": "mod", "&": "and", "|": "or", "^": "xor",
        "<<": "lsh", ">>": "rsh"}


def fold(op: str, x: int, y: int, ty: Ty) -> int:
    """Evaluate like the BPF ISA (RFC 9669) on values of type ``ty``."""
    bits = ty.bits
    mask = (1 << bits) - 1
    ux, uy = x & mask, y & mask
    sx, sy = norm(x, Ty(bits, True)), norm(y, Ty(bits, True))
    if op == "+":
        r = ux + uy
    elif op == "-":
        r = ux - uy
    elif op == "*":
        r = ux * uy
    elif op == "&":
        r = ux & uy
    elif op == "|":
        r = ux | uy
    elif op == "^":
        r = ux ^ uy
    elif op == "<<":
        r = ux << (uy & (bits - 1))
    elif op == ">>":
        r = (sx >> (uy & (bits - 1))) if ty.signed else (ux >> (uy & (bits - 1)))
    elif op == "//":
        if ty.signed:
            if sy == 0:
                r = 0
            else:
                q = abs(sx) // abs(sy)
                r = q if (sx < 0) == (sy < 0) else -q
        else:
            r = 0 if uy == 0 else ux // uy
    elif op == "%":
        if ty.signed:
            if sy == 0:
                r = sx
            else:
                m = abs(sx) % abs(sy)
                r = -m if sx < 0 else m
        else:
            r = ux if uy == 0 else ux % uy
    else:
        raise ValueError(op)
    return norm(r, ty)


def _umax_of(op: str, a: Scalar | int, b: Scalar | int, ty: Ty) -> int | None:
    def um(x: Scalar | int) -> int | None:
        if isinstance(x, int):
            return x if x >= 0 else None
        return x.umax if x.order == "host" else None

    ua, ub = um(a), um(b)
    limit = (1 << ty.bits) - 1
    r: int | None = None
    if ty.signed:
        return None
    if op == "&":
        cands = [u for u in (ua, ub) if u is not None]
        r = min(cands) if cands else None
    elif ua is None or ub is None:
        return None
    elif op == "+":
        r = ua + ub
    elif op == "*":
        r = ua * ub
    elif op == ">>" and isinstance(b, int):
        r = ua >> (b & (ty.bits - 1))
    elif op == "<<" and isinstance(b, int):
        r = ua << (b & (ty.bits - 1))
    elif op in ("//",):
        r = ua
    elif op == "%":
        r = min(ua, ub) if ub else ua
    elif op == "|" or op == "^":
        r = (1 << max(ua, ub).bit_length()) - 1
    return r if r is not None and r <= limit else None


def binop(op: str, a: Any, b: Any) -> Scalar:
    a, b = as_operand(a), as_operand(b)
    # bitwise ops with a constant or another raw value of the same width stay in network order
    if op in ("&", "|", "^"):
        raw = _raw_bitop(op, a, b)
        if raw is not None:
            return raw
    if isinstance(a, Scalar):
        a = host(a)
    if isinstance(b, Scalar):
        b = host(b)
    ty = result_type(a, b)
    if isinstance(a, int) and isinstance(b, int):
        return load_const(fold(op, a, b, ty), ty)  # pragma: no cover - Python folds before us
    bld = current()
    # division by a constant zero: the ISA's result, decided now (the verifier rejects the instruction)
    if isinstance(b, int) and op in ("//", "%") and norm(b, ty) == 0:
        return load_const(0, ty) if op == "//" else _copy_if_alias(convert(a, ty))  # type: ignore[arg-type]
    # identities
    if isinstance(b, int):
        bn = norm(b, ty)
        if (op in ("+", "-", "|", "^", "<<", ">>") and bn == 0) or (op in ("*", "//") and bn == 1) or \
                (op == "&" and bn == norm(-1, ty)):
            return _copy_if_alias(convert(a, ty))  # type: ignore[arg-type]
    if isinstance(a, int) and op in ("+", "*", "&", "|", "^"):
        a, b = b, a  # commutative: constant second
    if op == "&" and isinstance(b, int) and ty.bits == 64 and norm(b, ty) == 0xFFFFFFFF and isinstance(a, Scalar):
        t = bld.vreg()  # x & 0xffffffff: a 32-bit move zero-extends
        bld.emit("mov32_x", t, convert(a, ty).vreg)
        return Scalar(t, ty, 0xFFFFFFFF)
    if isinstance(a, int):
        a = load_const(a, ty)
    a = convert(a, ty)
    t = bld.vreg()
    bld.emit("mov64_x", t, a.vreg)
    suffix = "64" if ty.bits == 64 else "32"
    name = _ALU[op]
    if op == ">>" and ty.signed:
        name = "arsh"
    if op in ("//", "%") and ty.signed:
        name = "sdiv" if op == "//" else "smod"
    if isinstance(b, int):
        bv = norm(b, ty)
        if op in ("<<", ">>"):
            bv &= ty.bits - 1
        if ty.bits == 64 and not -(1 << 31) <= bv < (1 << 31):
            c = load_const(bv, ty)
            bld.emit(f"{name}{suffix}_x", t, c.vreg)
        else:
            bld.emit(f"{name}{suffix}_k", t, imm=_s32(bv) if ty.bits == 32 else bv)
    else:
        bb = convert(b, ty) if op not in ("<<", ">>") else b
        bld.emit(f"{name}{suffix}_x", t, bb.vreg)
    return Scalar(t, ty, _umax_of(op, a, b, ty))


def _copy_if_alias(v: Scalar) -> Scalar:
    if not v.is_var_alias:
        return v
    b = current()
    t = b.vreg()
    b.emit("mov64_x", t, v.vreg)
    return Scalar(t, v.ty, v.umax, v.order, v.nbytes)


def _raw_bitop(op: str, a: Scalar | int, b: Scalar | int) -> Scalar | None:
    if isinstance(a, int):
        a, b = b, a
    if not isinstance(a, Scalar) or a.order != "be":
        return None
    n = a.nbytes
    bld = current()
    t = bld.vreg()
    if isinstance(b, int):
        if b < 0 or b >> (8 * n):
            return None
        bld.emit("mov64_x", t, a.vreg)
        c = swap_const(b, n)
        suffix = "64" if n == 8 else "32"
        if n == 8 and not -(1 << 31) <= norm(c, S64) < (1 << 31):
            cv = load_const(c, U64)
            bld.emit(f"{_ALU[op]}64_x", t, cv.vreg)
        else:
            bld.emit(f"{_ALU[op]}{suffix}_k", t, imm=_s32(c) if n < 8 else norm(c, S64))
        return Scalar(t, a.ty, None, "be", n)
    if isinstance(b, Scalar) and b.order == "be" and b.nbytes == n:
        bld.emit("mov64_x", t, a.vreg)
        bld.emit(f"{_ALU[op]}{'64' if n == 8 else '32'}_x", t, b.vreg)
        return Scalar(t, a.ty, None, "be", n)
    return None


def unop(op: str, a: Any) -> Scalar:
    a = as_operand(a)
    if isinstance(a, int):  # pragma: no cover
        raise error("unary operator on a constant")
    if op == "~":
        return binop("^", a, -1)
    a = host(a)
    b = current()
    t = b.vreg()
    b.emit("mov64_x", t, a.vreg)
    b.emit("neg64" if a.ty.bits == 64 else "neg32", t)
    return Scalar(t, a.ty)


def cast(x: Any, t: Any) -> Scalar:
    """``cast(x, u64)``: C conversion of a DSL value (constants become registers)."""
    ty = ty_of(t)
    x = as_operand(x)
    if isinstance(x, int):
        return load_const(x, ty)
    return convert(x, ty)


# ----------------------------------------------------------------------------- conditions


class Cond:
    """A condition: compiled to jumps, never to a 0/1 value unless asked (``.value()``)."""

    def jump_if(self, truth: bool, target: Label) -> None:
        raise NotImplementedError

    def facts_true(self, f: Facts) -> Facts:
        return f

    def facts_false(self, f: Facts) -> Facts:
        return f

    def __bool__(self) -> bool:
        raise error("a DSL condition has no truth value at build time: use If(...); for 'and'/'or'/'not' use "
                    "All(...)/Any(...)/Not(...) or &, |, ~")

    def __and__(self, o: Any) -> Cond: return All(self, o)
    def __rand__(self, o: Any) -> Cond: return All(o, self)
    def __or__(self, o: Any) -> Cond: return AnyOf(self, o)
    def __ror__(self, o: Any) -> Cond: return AnyOf(o, self)
    def __invert__(self) -> Cond: return Not(self)

    def value(self) -> Scalar:
        """Materialise as 0/1 (u32)."""
        b = current()
        t = b.vreg()
        done = b.fn.label("cv")
        b.emit("mov32_k", t, imm=1)
        self.jump_if(True, done)
        b.emit("mov32_k", t, imm=0)
        b.place(done)
        return Scalar(t, U32, 1)


class ConstCond(Cond):
    def __init__(self, truth: bool):
        self.truth = truth

    def jump_if(self, truth: bool, target: Label) -> None:
        if truth == self.truth:
            current().emit("ja", ref=target)


_JOPS = {"==": "jeq", "!=": "jne", "<": "jlt", "<=": "jle", ">": "jgt", ">=": "jge"}
_SJOPS = {"<": "jslt", "<=": "jsle", ">": "jsgt", ">=": "jsge"}
_NEG = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_SWAP = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_PY = {"==": lambda x, y: x == y, "!=": lambda x, y: x != y, "<": lambda x, y: x < y,
       "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}


class Cmp(Cond):
    def __init__(self, op: str, a: Any, b: Any):
        self.op, self.a, self.b = op, as_operand(a), as_operand(b)

    def jump_if(self, truth: bool, target: Label) -> None:
        op, a, b = self.op, self.a, self.b
        if not truth:
            op = _NEG[op]
        if isinstance(a, int) and isinstance(b, int):
            ConstCond(_PY[op](a, b)).jump_if(True, target)
            return
        if isinstance(a, int):
            a, b, op = b, a, _SWAP[op]
        assert isinstance(a, Scalar)
        bld = current()
        # equality with a raw network-order value: compare raw against the swapped constant
        if op in ("==", "!=") and a.order == "be" and (isinstance(b, int) or (isinstance(b, Scalar) and
                                                                               b.order == "be" and b.nbytes == a.nbytes)):
            n = a.nbytes
            width = "" if n == 8 else "32"
            if isinstance(b, int):
                if b < 0 or b >> (8 * n):
                    ConstCond(op == "!=").jump_if(True, target)
                    return
                c = swap_const(b, n)
                if n == 8 and not -(1 << 31) <= norm(c, S64) < (1 << 31):
                    cv = load_const(c, U64)
                    bld.emit(f"{_JOPS[op]}_x", a.vreg, cv.vreg, ref=target)
                else:
                    bld.emit(f"{_JOPS[op]}{width}_k", a.vreg, imm=_s32(c) if n < 8 else norm(c, S64), ref=target)
            else:
                bld.emit(f"{_JOPS[op]}{width}_x", a.vreg, b.vreg, ref=target)
            return
        a = host(a)
        if isinstance(b, Scalar):
            b = host(b)
        ty = result_type(a, b)
        a = convert(a, ty)
        jname = _SJOPS[op] if (ty.signed and op in _SJOPS) else _JOPS[op]
        width = "32" if ty.bits == 32 else ""
        if isinstance(b, int):
            lo = -(1 << (ty.bits - 1)) if ty.signed else 0
            hi = (1 << (ty.bits - 1)) - 1 if ty.signed else (1 << ty.bits) - 1
            if not lo <= b <= hi:  # constant outside the value's range: known at build time
                below = b < lo
                ConstCond({"==": False, "!=": True, "<": not below, "<=": not below,
                           ">": below, ">=": below}[op]).jump_if(True, target)
                return
            bn = norm(b, ty)
            if ty.bits == 64 and not -(1 << 31) <= bn < (1 << 31):
                cv = load_const(bn, ty)
                bld.emit(f"{jname}_x", a.vreg, cv.vreg, ref=target)
            else:
                bld.emit(f"{jname}{width}_k", a.vreg, imm=_s32(bn) if ty.bits == 32 else bn, ref=target)
        else:
            b = convert(b, ty)
            bld.emit(f"{jname}{width}_x", a.vreg, b.vreg, ref=target)


class All(Cond):
    """Short-circuit 'and' of conditions."""

    def __init__(self, *conds: Any):
        self.conds = [as_cond(c) for c in conds]

    def jump_if(self, truth: bool, target: Label) -> None:
        if truth:
            b = current()
            skip = b.fn.label("and")
            saved = b.facts
            for c in self.conds[:-1]:
                c.jump_if(False, skip)
                b.facts = c.facts_true(b.facts)
            self.conds[-1].jump_if(True, target)
            b.facts = saved
            b.place(skip)
        else:
            b = current()
            saved = b.facts
            for c in self.conds:
                c.jump_if(False, target)
                b.facts = c.facts_true(b.facts)
            b.facts = saved

    def facts_true(self, f: Facts) -> Facts:
        for c in self.conds:
            f = c.facts_true(f)
        return f

    def facts_false(self, f: Facts) -> Facts:
        paths = []
        g = f
        for c in self.conds:
            paths.append(c.facts_false(g))
            g = c.facts_true(g)
        return merge(paths, None)


class AnyOf(Cond):
    """Short-circuit 'or' of conditions."""

    def __init__(self, *conds: Any):
        self.conds = [as_cond(c) for c in conds]

    def jump_if(self, truth: bool, target: Label) -> None:
        b = current()
        saved = b.facts
        if truth:
            for c in self.conds:
                c.jump_if(True, target)
                b.facts = c.facts_false(b.facts)
        else:
            skip = b.fn.label("or")
            for c in self.conds[:-1]:
                c.jump_if(True, skip)
                b.facts = c.facts_false(b.facts)
            self.conds[-1].jump_if(False, target)
            b.place(skip)
        b.facts = saved

    def facts_true(self, f: Facts) -> Facts:
        paths = []
        g = f
        for c in self.conds:
            paths.append(c.facts_true(g))
            g = c.facts_false(g)
        return merge(paths, None)

    def facts_false(self, f: Facts) -> Facts:
        for c in self.conds:
            f = c.facts_false(f)
        return f


class Not(Cond):
    def __init__(self, c: Any):
        self.c = as_cond(c)

    def jump_if(self, truth: bool, target: Label) -> None:
        self.c.jump_if(not truth, target)

    def facts_true(self, f: Facts) -> Facts:
        return self.c.facts_false(f)

    def facts_false(self, f: Facts) -> Facts:
        return self.c.facts_true(f)


def Any_(*conds: Any) -> Cond:  # noqa: N802
    return AnyOf(*conds)


def as_cond(c: Any) -> Cond:
    if isinstance(c, Cond):
        return c
    if isinstance(c, bool):
        return ConstCond(c)
    if isinstance(c, int):
        return ConstCond(c != 0)
    to_cond = getattr(c, "_dsl_cond", None)
    if to_cond is not None:
        return to_cond()
    if isinstance(c, Scalar) or getattr(c, "_dsl_scalar", None) is not None:
        return Cmp("!=", c, 0)
    raise error(f"{type(c).__name__} cannot be used as a condition")


# ----------------------------------------------------------------------------- variables


class Var:
    """A mutable DSL variable: ``v = Var(u32, 0)``; ``v.set(x)``; ``v += 1``; read by using it.

    Types are register types: u32/s32/u64/s64 (u8/u16 declare a 32-bit variable).
    Reading a Var that is not set on every path to the read is a build error.
    """

    def __init__(self, type: Any = U64, init: Any = None, name: str = ""):  # noqa: A002
        b = current()
        self.ty = ty_of(type)
        self.vreg = b.vreg()
        self.name = name
        self.loc = user_loc()
        self.scope = b.scope
        if init is not None:
            self.set(init)

    def set(self, value: Any) -> None:
        b = current()
        if self.scope.closed:
            raise error("Var used after the block that created it ended")
        v = as_operand(value)
        if isinstance(v, int):
            v = norm(v, self.ty)
            if self.ty.bits == 32:
                b.emit("mov32_k", self.vreg, imm=_s32(v))
            elif -(1 << 31) <= v < (1 << 31):
                b.emit("mov64_k", self.vreg, imm=v)
            else:
                b.emit("lddw", self.vreg, imm=v & ((1 << 64) - 1))
        else:
            v = convert(v, self.ty)
            b.emit("mov64_x", self.vreg, v.vreg)
        if id(self) not in b.facts.assigned:
            b.facts = b.facts.copy()  # facts objects are shared between paths: copy on write
            b.facts.assigned.add(id(self))

    def _dsl_scalar(self) -> Scalar:
        b = current()
        if id(self) not in b.facts.assigned:
            raise error(f"variable{' ' + self.name if self.name else ''} (declared at {self.loc}) "
                        "is read before it is set on some path")
        s = Scalar(self.vreg, self.ty, None, scope=self.scope)
        s.is_var_alias = True
        return s

    def get(self) -> Scalar:
        """A snapshot of the current value (unaffected by later ``set``)."""
        return _copy_if_alias(self._dsl_scalar())

    def __bool__(self) -> bool:
        raise error("a DSL value has no truth value at build time: use If(...)")

    def __iadd__(self, o: Any) -> Var: self.set(self._dsl_scalar() + o); return self  # noqa: E702
    def __isub__(self, o: Any) -> Var: self.set(self._dsl_scalar() - o); return self  # noqa: E702
    def __imul__(self, o: Any) -> Var: self.set(self._dsl_scalar() * o); return self  # noqa: E702
    def __iand__(self, o: Any) -> Var: self.set(self._dsl_scalar() & o); return self  # noqa: E702
    def __ior__(self, o: Any) -> Var: self.set(self._dsl_scalar() | o); return self  # noqa: E702
    def __ixor__(self, o: Any) -> Var: self.set(self._dsl_scalar() ^ o); return self  # noqa: E702
    def __ilshift__(self, o: Any) -> Var: self.set(self._dsl_scalar() << o); return self  # noqa: E702
    def __irshift__(self, o: Any) -> Var: self.set(self._dsl_scalar() >> o); return self  # noqa: E702
    def __ifloordiv__(self, o: Any) -> Var: self.set(self._dsl_scalar() // o); return self  # noqa: E702
    def __imod__(self, o: Any) -> Var: self.set(self._dsl_scalar() % o); return self  # noqa: E702


def _fwd(name: str) -> Any:
    def f(self: Var, *args: Any) -> Any:
        return getattr(self._dsl_scalar(), name)(*args)
    f.__name__ = name
    return f


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
              "__rfloordiv__", "__mod__", "__rmod__", "__and__", "__rand__", "__or__", "__ror__", "__xor__",
              "__rxor__", "__lshift__", "__rlshift__", "__rshift__", "__rrshift__", "__neg__", "__invert__",
              "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "cast", "u32", "u64", "s32", "s64", "be"):
    setattr(Var, _name, _fwd(_name))
Var.__hash__ = object.__hash__  # type: ignore[method-assign]


def _cond_arith(name: str) -> Any:
    def f(self: Cond, *args: Any) -> Any:
        return getattr(self.value(), name)(*args)
    f.__name__ = name
    return f


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__lshift__", "__rlshift__",
              "__xor__", "__rxor__", "__neg__"):
    setattr(Cond, _name, _cond_arith(_name))


# ----------------------------------------------------------------------------- control flow


class If:
    """``with If(cond):`` -- the body runs when cond holds; Elif/Else may follow."""

    def __init__(self, cond: Any, *, followed: bool | None = None):
        self.cond = as_cond(cond)
        self.loc = user_loc()
        self.followed = followed  # None: look at the source for a following Elif/Else

    def _begin(self, b: Builder, entry: Facts) -> None:
        self.else_label = b.fn.label("else")
        b.facts = entry
        self.cond.jump_if(False, self.else_label)
        self.false_facts = self.cond.facts_false(entry).copy()
        b.facts = self.cond.facts_true(entry).copy()
        self.scope = b.open_scope("if")

    def __enter__(self) -> None:
        b = current()
        b.flush_chain()
        self.end = b.fn.label("endif")
        self.ends: list[Facts] = []
        self._begin(b, b.facts.copy())

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        if et is not None:
            return False
        b = current()
        b.close_scope(self.scope)
        if not b.terminated:
            self.ends.append(b.facts)
            b.emit("ja", ref=self.end, loc=self.loc)
        b.place(self.else_label)
        b.terminated = False
        b.facts = self.false_facts
        b.chain = _Chain(self.end, self.ends, self.false_facts, self.loc, b.scope)
        followed = self.followed if self.followed is not None else followed_by_branch(self.loc)
        if not followed:
            b.flush_chain()
        return False


class Elif(If):
    """``with Elif(cond):`` after an If/Elif block."""

    def __enter__(self) -> None:
        b = current()
        chain = b.take_chain("Elif")
        self.end, self.ends = chain.end, chain.ends
        self._begin(b, chain.false_facts.copy())


class Else:
    """``with Else():`` after an If/Elif block (or a ring-buffer reserve block)."""

    def __init__(self) -> None:
        self.loc = user_loc()

    def __enter__(self) -> None:
        b = current()
        self.chain = b.take_chain("Else")
        b.facts = self.chain.false_facts.copy()
        self.scope = b.open_scope("else")

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        if et is not None:
            return False
        b = current()
        b.close_scope(self.scope)
        ends = list(self.chain.ends)
        if not b.terminated:
            ends.append(b.facts)
        b.place(self.chain.end)
        if ends:
            b.facts = merge(ends, self.loc)
            b.terminated = False
        else:
            b.terminated = True
        return False


def Return(value: Any = 0) -> None:  # noqa: N802
    """Return from the program (an XDP action) or from a subprogram."""
    b = current()
    if b.chain is not None:
        b.flush_chain()
    if b.facts.records:
        rloc = next(iter(b.facts.records.values()))
        raise error(f"return while the ring-buffer record reserved at {rloc} is neither submitted nor discarded")
    v = as_operand(value)
    if isinstance(v, int):
        if -(1 << 31) <= v < (1 << 31):
            b.emit("mov64_k", R0, imm=v)
        else:
            b.emit("lddw", R0, imm=v & ((1 << 64) - 1))
    else:
        v = host(v)
        b.emit("mov64_x", R0, v.vreg)
    b.emit("exit")
    b.terminated = True


def _loop_for(what: str) -> _Loop:
    b = current()
    if not b.loops:
        raise error(f"{what}() outside a Range loop")
    return b.loops[-1]


def Break() -> None:  # noqa: N802
    """Leave the innermost Range loop."""
    b = current()
    loop = _loop_for("Break")
    b.flush_chain()
    _check_records_for_jump(b, "Break")
    loop.breaks.append(b.facts)
    b.emit("ja", ref=loop.exit)
    b.terminated = True


def Continue() -> None:  # noqa: N802
    """Go to the next iteration of the innermost Range loop."""
    b = current()
    loop = _loop_for("Continue")
    b.flush_chain()
    _check_records_for_jump(b, "Continue")
    loop.conts.append(b.facts)
    b.emit("ja", ref=loop.cont)
    b.terminated = True


def _check_records_for_jump(b: Builder, what: str) -> None:
    outer = getattr(b, "_loop_records", {})
    extra = set(b.facts.records) - set(outer)
    if extra:
        raise error(f"{what} leaves a ring-buffer record open (submit or discard it first)")


AUTO_CONVERGE_ABOVE = 8


def Range(*args: Any, converge: bool | None = None, unroll: int = 1) -> Iterator[Scalar]:  # noqa: N802
    """``for i in Range(N):`` a loop with a constant bound the verifier accepts.

    ``Range(stop)``, ``Range(start, stop[, step])`` with Python ints only (a DSL
    value as bound is a build error: use a constant bound and ``Break()``).

    ``converge=True`` puts ``may_goto`` at the loop head: the verifier then
    widens the loop state and stops re-verifying the body once it repeats,
    instead of walking every iteration (and every exit path of every
    iteration) -- the difference between ~20,000 and over a million processed
    instructions for an IGMPv3 record walk after a checksum loop.  It costs a
    few instructions per iteration at run time.  The default (None) converges
    loops of more than 8 iterations and unrolls shorter ones in the verifier.

    ``unroll=k`` traces the body k times per trip of the loop (the counter
    advancing between copies, a bound check between copies only when the trip
    count is not a multiple of k): one ``may_goto`` and one back edge per k
    iterations, for hot converged loops such as a checksum.
    """
    loc = user_loc()
    for a in args:
        if not isinstance(a, int) or isinstance(a, bool):
            raise DslError("loop bound must be a Python int constant, not a DSL value "
                           "(loop to a constant maximum and Break() when done)", loc)
    if not isinstance(unroll, int) or isinstance(unroll, bool) or unroll < 1:
        raise DslError("unroll must be a positive Python int", loc)
    r = range(*args)
    if len(r) == 0:
        return
    if converge is None:
        converge = len(r) > AUTO_CONVERGE_ABOVE
    return _range_gen(r, converge, loc, min(unroll, len(r)))


def _range_gen(r: range, converge: bool, loc: SourceLoc | None, unroll: int = 1) -> Iterator[Scalar]:
    b = current()
    b.flush_chain()
    big = max(abs(r.start), abs(r.stop)) >= (1 << 31)
    signed = r.start < 0 or r.stop < 0
    ty = Ty(64 if big else 32, signed)
    counter = Var(ty, r.start)
    body = b.fn.label("loop")
    loop = _Loop(b.fn.label("cont"), b.fn.label("endloop"), [], [], loc)
    entry = b.facts.copy()
    b.place(body)
    b.fn.loops.append((body.name, loop.exit.name))
    b.loops.append(loop)
    scope = b.open_scope("loop")
    saved_records = getattr(b, "_loop_records", {})
    b._loop_records = dict(b.facts.records)  # type: ignore[attr-defined]
    i = counter._dsl_scalar()
    i.scope = scope
    i.umax = max(r.start, r.stop) if not signed else None
    yield i
    open_scope: Scope | None = scope
    for _copy in range(1, unroll):  # the next copy of the body: its own Continue target, no back edge
        b.close_scope(scope)
        open_scope = None
        ends = list(loop.conts)
        if not b.terminated:
            ends.append(b.facts)
        if not ends:
            break
        b.place(loop.cont)
        b.facts = merge(ends, loc)
        b.terminated = False
        loop.cont, loop.conts = b.fn.label("cont"), []
        b.emit("add32_k" if ty.bits == 32 else "add64_k", counter.vreg, imm=r.step, loc=loc)
        if len(r) % unroll:  # the trip count is not a multiple of the copies: stop mid-trip
            jop = ("jsge" if signed else "jge") if r.step > 0 else ("jsle" if signed else "jle")
            loop.breaks.append(b.facts.copy())
            b.emit(f"{jop}{'32' if ty.bits == 32 else ''}_k", counter.vreg,
                   imm=_s32(r.stop) if ty.bits == 32 else r.stop, ref=loop.exit, loc=loc)
        scope = open_scope = b.open_scope("loop")
        i = counter._dsl_scalar()
        i.scope = scope
        i.umax = max(r.start, r.stop) if not signed else None
        yield i
    if open_scope is not None:
        b.close_scope(open_scope)
    b._loop_records = saved_records  # type: ignore[attr-defined]
    b.loops.pop()
    ends = list(loop.conts)
    if not b.terminated:
        ends.append(b.facts)
    b.place(loop.cont)
    if ends:
        back = merge(ends, loc)
        for k in entry.checked:
            if k not in back.checked:
                raise DslError("a packet check made before the loop does not hold at the end of its body "
                               "(packet pointers invalidated inside the loop)", loc)
        b.facts = back
        b.terminated = False
        if converge:  # on the latch: runs once per taken back edge, and the verifier converges there
            b.emit("may_goto", ref=loop.exit, loc=loc)
        b.emit("add32_k" if ty.bits == 32 else "add64_k", counter.vreg, imm=r.step, loc=loc)
        jop = ("jslt" if signed else "jlt") if r.step > 0 else ("jsgt" if signed else "jgt")
        stop = r.stop
        b.emit(f"{jop}{'32' if ty.bits == 32 else ''}_k", counter.vreg, imm=_s32(stop) if ty.bits == 32 else stop,
               ref=body, loc=loc)
        exits = [back] + loop.breaks
    else:
        exits = loop.breaks
    b.place(loop.exit)
    if exits:
        b.facts = merge([e.copy() for e in exits], loc)
        b.facts.assigned &= entry.assigned | {id(counter)}
        b.terminated = False
    else:
        b.terminated = True


def emit(*insns: Any) -> None:
    """Escape hatch: append raw ``isa.Instruction`` objects (physical registers only, r6-r9 preserved by you)."""
    b = current()
    for insn in insns:
        if isinstance(insn, Label):
            b.place(insn)
            continue
        from ..isa import form_of
        f = form_of(insn)
        b.emit(f.name, insn.dst, insn.src, insn.off, insn.imm, ref=insn.ref, keep=True)


def stack_pointer(off: int) -> Scalar:
    """r10 + off in a fresh register (for passing stack memory to helpers)."""
    b = current()
    t = b.vreg()
    b.emit("mov64_x", t, R10)
    b.emit("add64_k", t, imm=off)
    return Scalar(t, U64)
