"""The kernel as an oracle: ALU and JMP programs assembled by us run with BPF_PROG_TEST_RUN,
their results compared with Python's arithmetic as RFC 9669 defines it; and our kernel-syntax
disassembly of the kernel's own (xlated) program compared with bpftool's, line for line.

Each program reads two u64 operands from the packet (so the verifier cannot fold them), applies
one instruction, and stores the 64-bit result back into the packet, which test_run returns.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess

import pytest

from pybpfasm.asm import assemble_bytes
from pybpfasm.disasm import disassemble

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
EDGES = [0, 1, 2, 3, M64, M64 - 1, 1 << 63, (1 << 63) - 1, 1 << 31, (1 << 31) - 1, M32, 1 << 32, 0x80, 0xFF,
         0x8000, 0xFFFF, 0xFFFFFFFF80000000, 0x0123456789ABCDEF, 63, 64, 31, 32, 7]


def s64(v: int) -> int:
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def alu(op: str, a: int, b: int, bits: int) -> int:
    """RFC 9669 section 4.1 semantics; the result as the 64-bit register value."""
    mask = M64 if bits == 64 else M32
    sx = s64 if bits == 64 else s32
    a &= mask
    b &= mask
    if op == "+=":
        r = a + b
    elif op == "-=":
        r = a - b
    elif op == "*=":
        r = a * b
    elif op == "/=":
        r = 0 if b == 0 else a // b
    elif op == "s/=":
        r = 0 if b == 0 else _trunc_div(sx(a), sx(b))
    elif op == "%=":
        r = a if b == 0 else a % b
    elif op == "s%=":
        r = a if b == 0 else sx(a) - _trunc_div(sx(a), sx(b)) * sx(b)
    elif op == "|=":
        r = a | b
    elif op == "&=":
        r = a & b
    elif op == "^=":
        r = a ^ b
    elif op == "<<=":
        r = a << (b & (bits - 1))
    elif op == ">>=":
        r = a >> (b & (bits - 1))
    elif op == "s>>=":
        r = sx(a) >> (b & (bits - 1))
    elif op == "=":
        r = b
    else:
        raise ValueError(op)
    return r & mask


def jump(op: str, a: int, b: int, bits: int) -> bool:
    mask = M64 if bits == 64 else M32
    sx = s64 if bits == 64 else s32
    a &= mask
    b &= mask
    return {
        "==": a == b, "!=": a != b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "&": bool(a & b),
        "s>": sx(a) > sx(b), "s>=": sx(a) >= sx(b), "s<": sx(a) < sx(b), "s<=": sx(a) <= sx(b),
    }[op]


def unary(kind: str, a: int) -> int:
    if kind.startswith("movsx"):  # movsx{64|32}_{8|16|32}
        bits, width = int(kind[5:7]), int(kind.split("_")[1])
        v = a & ((1 << width) - 1)
        v = v - (1 << width) if v >> (width - 1) else v
        return v & (M64 if bits == 64 else M32)
    width = int(kind[-2:]) if kind[-2:].isdigit() else int(kind[-1])
    low = a & ((1 << width) - 1)
    if kind.startswith("le"):
        return low
    if kind.startswith(("be", "bswap")):
        return int.from_bytes(low.to_bytes(width // 8, "little"), "big")
    if kind == "neg64":
        return -a & M64
    if kind == "neg32":
        return -a & M32
    raise ValueError(kind)


_PROLOGUE = """
    r2 = *(u32 *)(r1 + 0)
    r3 = *(u32 *)(r1 + 4)
    r4 = r2
    r4 += 24
    if r4 > r3 goto out
    r6 = *(u64 *)(r2 + 0)
    r7 = *(u64 *)(r2 + 8)
"""
_EPILOGUE = """
    *(u64 *)(r2 + 16) = r6
out:
    r0 = 2
    exit
"""


def _program(body: str) -> bytes:
    return assemble_bytes(_PROLOGUE + body + _EPILOGUE)


def _run(prog, a: int, b: int) -> int:
    result = prog.test_run(struct.pack("<QQQ", a & M64, b & M64, 0) + bytes(40))
    assert result.retval == 2
    return struct.unpack_from("<Q", result.data, 16)[0]


def _inputs(rng: random.Random, n: int) -> list[tuple[int, int]]:
    pairs = [(rng.choice(EDGES), rng.choice(EDGES)) for _ in range(n // 2)]
    pairs += [(rng.getrandbits(64), rng.choice([rng.getrandbits(64), rng.getrandbits(8)])) for _ in range(n // 2)]
    return pairs


ALU_OPS = ["+=", "-=", "*=", "/=", "s/=", "%=", "s%=", "|=", "&=", "^=", "<<=", ">>=", "s>>=", "="]
JMP_OPS = ["==", "!=", ">", ">=", "<", "<=", "&", "s>", "s>=", "s<", "s<="]
IMMEDIATES = [0, 1, -1, 7, -2147483648, 2147483647, 63]


@pytest.fixture(scope="module")
def load(kernel):
    from pybpfasm.program import Program

    loaded = []

    def _load(code: bytes):
        prog = Program.load(code, prog_type="xdp", name="pyb_oracle")
        loaded.append(prog)
        return prog

    try:
        yield _load
    finally:
        for prog in loaded:
            prog.close()


@pytest.mark.kernel
@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", ALU_OPS)
def test_alu_matches_rfc(load, op: str, bits: int) -> None:
    rng = random.Random(f"{op}{bits}")
    reg = "r" if bits == 64 else "w"
    prog = load(_program(f"    {reg}6 {op} {reg}7\n"))
    for a, b in _inputs(rng, 24):
        assert _run(prog, a, b) == alu(op, a, b, bits), (op, bits, hex(a), hex(b))
    for imm in IMMEDIATES:
        if imm == 0 and op in ("/=", "s/=", "%=", "s%="):
            continue  # the verifier refuses a constant zero divisor; the register form covers it
        if op in ("<<=", ">>=", "s>>=") and not 0 <= imm < bits:
            continue  # ... and a constant shift beyond the width; the register form covers masking
        prog = load(_program(f"    {reg}6 {op} {imm}\n"))
        b = imm & M64 if bits == 64 else imm & M32  # ALU64 sign-extends the immediate
        for a, _ in _inputs(rng, 6):
            assert _run(prog, a, 0) == alu(op, a, b, bits), (op, bits, imm, hex(a))


@pytest.mark.kernel
@pytest.mark.parametrize("kind", ["neg64", "neg32", "le16", "le32", "le64", "be16", "be32", "be64",
                                  "bswap16", "bswap32", "bswap64", "movsx64_8", "movsx64_16", "movsx64_32",
                                  "movsx32_8", "movsx32_16"])
def test_unary_matches_rfc(load, kind: str) -> None:
    if kind.startswith("neg"):
        body = "    r6 = -r6\n" if kind == "neg64" else "    w6 = -w6\n"
    elif kind.startswith("movsx"):
        bits, width = kind[5:7], kind.split("_")[1]
        body = f"    r6 = (s{width})r7\n" if bits == "64" else f"    w6 = (s{width})w7\n"
    else:
        body = f"    r6 = {kind} r6\n"
    prog = load(_program(body))
    rng = random.Random(kind)
    for a, b in _inputs(rng, 24):
        operand = b if kind.startswith("movsx") else a
        assert _run(prog, a, b) == unary(kind, operand), (kind, hex(a), hex(b))


@pytest.mark.kernel
@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", JMP_OPS)
def test_jumps_match_rfc(load, op: str, bits: int) -> None:
    reg = "r" if bits == 64 else "w"
    rng = random.Random(f"j{op}{bits}")
    prog = load(_program(f"    r8 = 1\n    if {reg}6 {op} {reg}7 goto +1\n    r8 = 0\n    r6 = r8\n"))
    for a, b in _inputs(rng, 24):
        assert _run(prog, a, b) == int(jump(op, a, b, bits)), (op, bits, hex(a), hex(b))
    for imm in (0, 1, -1, -2147483648, 2147483647):
        prog = load(_program(f"    r8 = 1\n    if {reg}6 {op} {imm} goto +1\n    r8 = 0\n    r6 = r8\n"))
        for a, _ in _inputs(rng, 6) + [(imm, 0), (imm + 1, 0), (imm - 1, 0)]:
            assert _run(prog, a, 0) == int(jump(op, a, imm, bits)), (op, bits, imm, hex(a))


# Forms the disasm.c compiled into an older bpftool (Debian 12's 7.1, kernel 6.1 sources) prints
# differently from today's kernel (sdiv as "/=", bswap as "BUG_alu64_d7", ...) stay out of this
# comparison; their modern spelling is checked against the source in test_disasm.py.
_BPFTOOL_BODY = "".join(
    [f"    r6 {op} r7\n    w6 {op} {3 if '>' in op or '<' in op else -5}\n"
     for op in ALU_OPS if op not in ("s/=", "s%=")]
    + [f"    if r6 {op} r7 goto +0\n    if w6 {op} -3 goto +0\n" for op in JMP_OPS]
    + ["    r6 = be16 r6\n    r6 = le32 r6\n    r6 = be64 r6\n    r6 = -r6\n    w6 = -w6\n",
       "    r5 = 0x123456789abcdef0 ll\n    *(u32 *)(r10 - 8) = 3\n    *(u16 *)(r10 - 2) = w6\n",
       "    w5 = *(u8 *)(r10 - 2)\n    r5 = 1\n    *(u64 *)(r10 - 16) = r5\n",
       "    lock *(u64 *)(r10 - 16) += r5\n    lock *(u32 *)(r10 - 8) |= w5\n",
       "    r5 = atomic_fetch_xor((u64 *)(r10 - 16), r5)\n    r5 = xchg_64(r10 - 16, r5)\n",
       "    r0 = 0\n    r0 = cmpxchg_64(r10 - 16, r0, r5)\n    call 5\n"])


@pytest.mark.kernel
@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool not installed")
def test_disassembly_matches_bpftool(load) -> None:
    """bpftool prints kernel/bpf/disasm.c's text of the xlated program; we print the same bytes."""
    from pybpfasm import isa, syscall

    prog = load(assemble_bytes("    r6 = 7\n    r7 = 3\n" + _BPFTOOL_BODY + "    r0 = 2\n    exit\n"))
    info = syscall.prog_get_info(prog.fd)
    theirs = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(info.id)],
                            check=True, capture_output=True, text=True).stdout
    their_lines = {int(line.split(":")[0]): line for line in theirs.splitlines() if not line.startswith(";")}
    compared = 0
    slot = 0
    while slot * 8 < len(info.xlated):
        try:
            insn = isa.decode_one(info.xlated, slot * 8, slot)
        except isa.DecodeError:  # kernel-internal rewrites (e.g. the hidden register r11 of div checks)
            slot += 1
            continue
        mine = disassemble([insn]).rstrip("\n").replace("   0:", f"{slot:4d}:", 1)
        bpftool_line = their_lines[slot]
        if insn.form.name == "call":  # helper addresses: bpftool names them from kallsyms
            assert mine.split("call")[0] == bpftool_line.split("call")[0]
        else:
            assert mine == bpftool_line
            compared += 1
        slot += insn.slots
    assert compared >= 60


@pytest.mark.kernel
def test_assembled_text_with_map_reference_loads_and_runs(kernel) -> None:
    """A text program naming a map ("r1 = counters ll") loads with that map and updates it."""
    from pybpfasm.asm import assemble
    from pybpfasm.maps import ArrayMap
    from pybpfasm.program import Program

    text = """
        r1 = 0
        *(u32 *)(r10 - 4) = r1
        r2 = r10
        r2 += -4
        r1 = counters ll
        call bpf_map_lookup_elem
        if r0 == 0 goto out
        r1 = 1
        lock *(u64 *)(r0 + 0) += r1
    out:
        r0 = 2
        exit
    """
    with ArrayMap(value="Q", max_entries=1, name="counters") as counters:
        with Program.load(assemble(text, filename="count.s"), prog_type="xdp", maps={"counters": counters},
                          name="pyb_count") as prog:
            for _ in range(3):
                assert prog.test_run(bytes(64)).retval == 2
        assert counters[0] == 3
