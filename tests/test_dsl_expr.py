"""Property test: random expression trees compiled by the DSL and run in the kernel equal a Python model.

Inputs come from the packet (so nothing folds at build time), results are written
back into the packet. Many expressions share one program load. The Python model
below is written from RFC 9669 (division by zero gives 0, modulo by zero leaves
the dividend, INT_MIN / -1 overflows to INT_MIN, shift counts are masked) and the
DSL's documented C-like typing (wider type wins; equal widths are unsigned if
either side is), independently of the compiler's own constant folder.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpfasm.dsl import XDP_ABORTED, XDP_PASS, Return, bpf, xdp
from pybpfasm.layout import Layout, u64

N_VARS = 4
N_EXPRS = 24
VAR_TYPES = [(32, False), (32, True), (64, False), (64, True)]  # x0: u32, x1: s32, x2: u64, x3: s64
BINOPS = ["+", "-", "*", "//", "%", "&", "|", "^", "<<", ">>"]
CMPS = ["<", "<=", ">", ">=", "==", "!="]
EXAMPLES = int(os.environ.get("PYBPFASM_EXPR_EXAMPLES", "25"))


def norm(v: int, bits: int, signed: bool) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def promote(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return (a[0], a[1] and b[1])


def model_binop(op: str, x: int, y: int, ty) -> int:
    bits, signed = ty
    ux, uy = x & ((1 << bits) - 1), y & ((1 << bits) - 1)
    sx, sy = norm(x, bits, True), norm(y, bits, True)
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
        r = ux << (uy % bits)
    elif op == ">>":
        r = (sx >> (uy % bits)) if signed else (ux >> (uy % bits))
    elif op == "//":
        if signed:
            r = 0 if sy == 0 else int(abs(sx) // abs(sy)) * (1 if (sx < 0) == (sy < 0) else -1)
        else:
            r = 0 if uy == 0 else ux // uy
    elif op == "%":
        if signed:
            r = sx if sy == 0 else (abs(sx) % abs(sy)) * (-1 if sx < 0 else 1)
        else:
            r = ux if uy == 0 else ux % uy
    else:
        raise AssertionError(op)
    return norm(r, bits, signed)


def model(node, env):
    """(value, type) of a node; constants are untyped (None) until combined."""
    kind = node[0]
    if kind == "var":
        bits, signed = VAR_TYPES[node[1]]
        return norm(env[node[1]], bits, signed), VAR_TYPES[node[1]]
    if kind == "const":
        return node[1], None
    if kind == "neg":
        v, t = model(node[1], env)
        return norm(-v, *t), t
    if kind == "inv":
        v, t = model(node[1], env)
        return norm(~v, *t), t
    if kind == "cast":
        v, t = model(node[1], env)
        return norm(v, *node[2]), node[2]
    if kind == "cmp":
        va, ta = model(node[2], env)
        vb, tb = model(node[3], env)
        if ta is None or tb is None:  # against a constant: compare the typed value mathematically
            x, y = va, vb
        else:
            ty = promote(ta, tb)
            x, y = norm(va, *ty), norm(vb, *ty)
        ok = {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y}[node[1]]
        return int(ok), (32, False)
    op = node[1]
    va, ta = model(node[2], env)
    vb, tb = model(node[3], env)
    ty = promote(ta, tb)
    return model_binop(op, va, vb, ty), ty


def emit_dsl(node, xs):
    kind = node[0]
    if kind == "var":
        return xs[node[1]]
    if kind == "const":
        return node[1]
    if kind == "neg":
        return -emit_dsl(node[1], xs)
    if kind == "inv":
        return ~emit_dsl(node[1], xs)
    if kind == "cast":
        bits, signed = node[2]
        return emit_dsl(node[1], xs).cast(_LAYOUT[(bits, signed)])
    if kind == "cmp":
        a, b = emit_dsl(node[2], xs), emit_dsl(node[3], xs)
        cond = {"<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b, ">=": lambda: a >= b,
                "==": lambda: a == b, "!=": lambda: a != b}[node[1]]()
        return cond.value()
    a, b = emit_dsl(node[2], xs), emit_dsl(node[3], xs)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b,
            "%": lambda: a % b, "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b,
            "<<": lambda: a << b, ">>": lambda: a >> b}[node[1]]()


def _layouts():
    from pybpfasm.layout import s32, s64, u32
    return {(32, False): u32, (32, True): s32, (64, False): u64, (64, True): s64}


_LAYOUT = _layouts()

consts = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 31, 32, 63, 64, -1, -2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                                    2**63, 2**63 - 1, 2**64 - 1, -2**31, -2**63]),
                   st.integers(-2**40, 2**40))
var_leaf = st.builds(lambda i: ("var", i), st.integers(0, N_VARS - 1))
leaf = st.one_of(var_leaf, var_leaf, st.builds(lambda c: ("const", c), consts))


def _has_var(node) -> bool:
    if node[0] == "var":
        return True
    if node[0] == "const":
        return False
    return any(_has_var(c) for c in node[1:] if isinstance(c, tuple) and c and isinstance(c[0], str))


def _fix(node):
    """Every operator needs a DSL operand: Python would fold constant-only subtrees itself."""
    return node if _has_var(node) else ("var", 0)


def _bin(op, a, b):
    a, b = (a, b) if _has_var(a) or _has_var(b) else (("var", 2), b)
    return ("bin", op, a, b)


def _cmp(op, a, b):
    a, b = (a, b) if _has_var(a) or _has_var(b) else (("var", 3), b)
    return ("cmp", op, a, b)


def extend(children):
    return st.one_of(
        st.builds(_bin, st.sampled_from(BINOPS), children, children),
        st.builds(lambda c: ("neg", _fix(c)), children),
        st.builds(lambda c: ("inv", _fix(c)), children),
        st.builds(lambda c, t: ("cast", _fix(c), t), children, st.sampled_from(VAR_TYPES)),
        st.builds(_cmp, st.sampled_from(CMPS), children, children),
    )


exprs = st.recursive(leaf, extend, max_leaves=8).map(_fix)

Io = Layout("Io", [("x", u64[N_VARS]), ("out", u64[N_EXPRS])], packed=True)


def compile_batch(trees, across_calls: bool = False):
    """One program computing every tree. ``across_calls`` computes them all first, with helper
    calls in between, and stores them at the end: two dozen values live across calls, so the
    register allocator must spill and split."""
    @xdp
    def prog(pkt):
        io = pkt.header(Io, otherwise=XDP_ABORTED)
        xs = [io.x[i].cast(_LAYOUT[VAR_TYPES[i]]) for i in range(N_VARS)]
        values = []
        for i, tree in enumerate(trees):
            v = emit_dsl(tree, xs)
            if across_calls:
                values.append(v)
                if i % 4 == 3:
                    bpf.ktime_get_ns()
            else:
                store(io, i, v)
        for i, v in enumerate(values):
            store(io, i, v)
        Return(XDP_PASS)

    return prog


def store(io, i, v):
    if isinstance(v, int):  # a bare constant leaf
        io.out[i] = v & (2**64 - 1)
    else:
        io.out[i] = v.cast(_LAYOUT[(64, v.ty.signed)])


@pytest.mark.kernel
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees=st.lists(exprs, min_size=N_EXPRS, max_size=N_EXPRS),
       inputs=st.lists(st.one_of(st.integers(0, 2**64 - 1),
                                 st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 5, 2**31 - 1])),
                       min_size=N_VARS, max_size=N_VARS),
       across_calls=st.booleans())
def test_expressions_match_python_model(kernel, trees, inputs, across_calls):
    prog = compile_batch(trees, across_calls)
    loaded = prog.load()
    try:
        frame = struct.pack(f"<{N_VARS}Q", *inputs) + bytes(8 * N_EXPRS)
        res = loaded.test_run(frame)
    finally:
        loaded.close()
    assert res.retval == XDP_PASS
    got = struct.unpack_from(f"<{N_EXPRS}Q", res.data, 8 * N_VARS)
    for i, tree in enumerate(trees):
        value, ty = model(tree, inputs)
        want = value & (2**64 - 1) if ty is None else norm(value, 64, ty[1]) & (2**64 - 1)
        assert got[i] == want, f"expression {i}: {tree} with inputs {inputs}: kernel {got[i]:#x} model {want:#x}"


@pytest.mark.kernel
def test_division_and_shift_edge_cases(kernel):
    """Every var pair through // % >> << (and by constant 0), on inputs built to hit x/0, x%0, INT_MIN/-1."""
    trees = []
    for op in ("//", "%", ">>", "<<"):
        for i in range(N_VARS):
            for j in range(N_VARS):
                trees.append(("bin", op, ("var", i), ("var", j)))
            trees.append(("bin", op, ("var", i), ("const", 0)))
            trees.append(("bin", op, ("var", i), ("const", -1)))
    vectors = [
        [0, 0, 0, 0],
        [5, 0, 7, 0],
        [2**31, 2**64 - 1, 2**63, 2**64 - 1],  # INT_MIN / -1 in 32 and 64 bits
        [2**32 - 1, 2**31, 2**64 - 1, 2**63],
        [123456789, 2**32 - 7, 987654321987, 2**64 - 12345],
    ]
    for start in range(0, len(trees), N_EXPRS):
        batch = trees[start:start + N_EXPRS]
        batch += [("var", 0)] * (N_EXPRS - len(batch))
        loaded = compile_batch(batch).load()
        try:
            for inputs in vectors:
                res = loaded.test_run(struct.pack(f"<{N_VARS}Q", *inputs) + bytes(8 * N_EXPRS))
                got = struct.unpack_from(f"<{N_EXPRS}Q", res.data, 8 * N_VARS)
                for k, tree in enumerate(batch):
                    value, ty = model(tree, inputs)
                    assert got[k] == norm(value, 64, ty[1]) & (2**64 - 1), (tree, inputs)
        finally:
            loaded.close()
