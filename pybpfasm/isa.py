"""The BPF instruction set (RFC 9669) as one declarative table.

Every instruction form the ISA defines is one ``Form`` row in ``FORMS``.  A form
says which opcode byte it has, what each of the four encoding fields (dst, src,
off, imm) carries, and how it is spelled in the three text syntaxes we speak:
LLVM (what ``llvm-mc`` accepts and ``llvm-objdump`` prints), the kernel's
verifier / bpftool dump (``kernel/bpf/disasm.c``), and ubpf / bpf_conformance.

The encoder, decoder, both assemblers, the disassembler and the DSL all read
this table; nothing else in the code base lists opcodes.

Templates use these placeholders (filled by ``pybpfasm.textfmt``):

``{dst}`` ``{src}``   register, spelled ``rN`` or ``wN`` according to ``Form.width``
``{rdst}`` ``{rsrc}`` register always spelled ``rN`` (memory bases, 64-bit halves)
``{imm}``            signed 32-bit immediate
``{imm64}``          the 64-bit constant of ``ld_imm64`` (or a symbolic reference)
``{off}``            memory offset, rendered ``+ 4`` / ``- 4`` (LLVM) or ``+4`` (kernel)
``{target}``         jump / call target: relative offset or a label
``{wdst}`` ``{wsrc}`` register always spelled ``wN`` (LLVM's narrow loads / stores)
``{helper}``         helper id (or name)
``{kfunc}``          kfunc BTF id (imm of a kfunc call)
``{btf_fd}``         BTF fd index (off of a kfunc call), a plain number
``{ximm}``           like ``{imm}``; the kernel prints it as unsigned hex (jump conditions)
``{imm2}``           second half of a map-value ``ld_imm64`` (value offset)
``{ind}``            ``rN`` or ``rN + imm`` (the index of a legacy LD_IND)

ubpf templates are built from ``Form.ubpf`` (the mnemonic) and ``Form.ubpf_operands``.

Spellings were checked against ``llvm-objdump-19 -d --mcpu=v4`` (which prints
``wN`` for 8/16/32-bit loads and stores), ``kernel/bpf/disasm.c`` and the
bpf_conformance assembler (``lock fetch add32``, ``call local``, ``ja32``);
every LLVM spelling is in ``tests/vectors/llvm19.txt``.  Forms LLVM cannot write
(pseudo ``ld_imm64`` sources, kfunc calls) get spellings of ours (``map_fd(5) ll``,
``call_kfunc 7, 0``) and are checked by hand (``tests/vectors/handchecked.txt``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import Any

# --------------------------------------------------------------------------
# Encoding constants (RFC 9669 section 3 and 4); facts, shared with the kernel uapi.
# --------------------------------------------------------------------------


class Class(IntEnum):
    """Instruction class: the low three bits of the opcode."""

    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class Source(IntEnum):
    """Operand source bit of ALU and JMP opcodes."""

    K = 0x00  # immediate
    X = 0x08  # register


class AluOp(IntEnum):
    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90
    XOR = 0xA0
    MOV = 0xB0
    ARSH = 0xC0
    END = 0xD0


class JmpOp(IntEnum):
    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0
    JCOND = 0xE0  # may_goto


class Size(IntEnum):
    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18

    @property
    def nbytes(self) -> int:
        return {Size.W: 4, Size.H: 2, Size.B: 1, Size.DW: 8}[self]


class Mode(IntEnum):
    IMM = 0x00
    ABS = 0x20
    IND = 0x40
    MEM = 0x60
    MEMSX = 0x80
    ATOMIC = 0xC0


class AtomicOp(IntEnum):
    """The imm field of an atomic instruction."""

    ADD = 0x00
    OR = 0x40
    AND = 0x50
    XOR = 0xA0
    FETCH = 0x01
    XCHG = 0xE0 | 0x01
    CMPXCHG = 0xF0 | 0x01


class Pseudo(IntEnum):
    """src field of ``ld_imm64``: how the kernel interprets the 64-bit constant."""

    IMM = 0
    MAP_FD = 1
    MAP_VALUE = 2
    BTF_ID = 3
    FUNC = 4
    MAP_IDX = 5
    MAP_IDX_VALUE = 6


class CallKind(IntEnum):
    """src field of ``call``."""

    HELPER = 0
    PSEUDO_CALL = 1  # BPF-to-BPF call, imm is a relative instruction offset
    KFUNC = 2  # imm is a BTF id, off a BTF fd index


NUM_REGISTERS = 11  # r0..r10
R10 = 10  # frame pointer (read-only)

# --------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------

# What an encoding field carries in a form.
#   "zero"    must be zero
#   "reg"     a register number
#   "imm"     signed 32-bit value
#   "mem"     signed 16-bit memory offset
#   "jump16"  signed 16-bit pc-relative target
#   "jump32"  signed 32-bit pc-relative target (gotol, BPF-to-BPF call)
#   "helper"  helper id (imm of call)
#   "btf"     BTF id (imm of kfunc call)
#   "btf_fd"  BTF fd index (off of kfunc call)
#   "imm64"   64-bit constant split over both slots of ld_imm64
#   int       a fixed value that selects this form
Role = Any


@dataclass(frozen=True)
class Form:
    """One instruction form: an opcode plus the meaning of its fields."""

    name: str  # unique identifier, e.g. "add64_x"
    opcode: int
    dst: Role
    src: Role
    off: Role
    imm: Role
    llvm: str  # LLVM syntax template
    kernel: str  # kernel verifier / bpftool syntax template
    ubpf: str  # ubpf / bpf_conformance mnemonic
    ubpf_operands: tuple[str, ...]  # operand order in ubpf syntax
    width: int = 64  # register view for {dst}/{src}: 64 -> rN, 32 -> wN
    wide: bool = False  # occupies two 8-byte slots (ld_imm64)
    alias_llvm: tuple[str, ...] = ()  # other LLVM spellings the assembler accepts
    alias_ubpf: tuple[str, ...] = ()  # other ubpf / bpf_conformance mnemonics the assembler accepts

    @property
    def cls(self) -> Class:
        return Class(self.opcode & 0x07)

    @cached_property
    def fixed(self) -> dict[str, int]:
        """The fields whose value selects this form among same-opcode forms."""
        return {
            k: int(v)
            for k, v in (("dst", self.dst), ("src", self.src), ("off", self.off), ("imm", self.imm))
            if isinstance(v, int) and not isinstance(v, bool)
        }

    @cached_property
    def bounds(self) -> tuple[tuple[str, int, int], ...]:
        """(field, lowest, highest) of every field but a 64-bit constant: what ``validate`` checks."""
        out = []
        for name in ("dst", "src", "off", "imm"):
            role = getattr(self, name)
            if isinstance(role, int) and not isinstance(role, bool):
                out.append((name, int(role), int(role)))
            elif role == "zero":
                out.append((name, 0, 0))
            elif role == "reg":
                out.append((name, 0, NUM_REGISTERS - 1))
            elif role != "imm64":
                out.append((name, *_RANGES[role]))
        return tuple(out)


def _alu_forms() -> Iterator[Form]:
    # (op, llvm operator, ubpf name)
    binary = [
        (AluOp.ADD, "+=", "add"),
        (AluOp.SUB, "-=", "sub"),
        (AluOp.MUL, "*=", "mul"),
        (AluOp.DIV, "/=", "div"),
        (AluOp.OR, "|=", "or"),
        (AluOp.AND, "&=", "and"),
        (AluOp.LSH, "<<=", "lsh"),
        (AluOp.RSH, ">>=", "rsh"),
        (AluOp.MOD, "%=", "mod"),
        (AluOp.XOR, "^=", "xor"),
        (AluOp.MOV, "=", "mov"),
        (AluOp.ARSH, "s>>=", "arsh"),
    ]
    signed = [(AluOp.DIV, "s/=", "sdiv"), (AluOp.MOD, "s%=", "smod")]
    for cls, width, sfx in ((Class.ALU64, 64, "64"), (Class.ALU, 32, "32")):
        usfx = "" if width == 64 else "32"
        for op, sym, uname in binary:
            yield Form(f"{uname}{sfx}_x", cls | op | Source.X, "reg", "reg", 0, "zero",
                       f"{{dst}} {sym} {{src}}", f"{{dst}} {sym} {{src}}",
                       uname + usfx, ("dst", "src"), width)
            yield Form(f"{uname}{sfx}_k", cls | op | Source.K, "reg", "zero", 0, "imm",
                       f"{{dst}} {sym} {{imm}}", f"{{dst}} {sym} {{imm}}",
                       uname + usfx, ("dst", "imm"), width)
        for op, sym, uname in signed:
            yield Form(f"{uname}{sfx}_x", cls | op | Source.X, "reg", "reg", 1, "zero",
                       f"{{dst}} {sym} {{src}}", f"{{dst}} {sym} {{src}}",
                       uname + usfx, ("dst", "src"), width)
            yield Form(f"{uname}{sfx}_k", cls | op | Source.K, "reg", "zero", 1, "imm",
                       f"{{dst}} {sym} {{imm}}", f"{{dst}} {sym} {{imm}}",
                       uname + usfx, ("dst", "imm"), width)
        yield Form(f"neg{sfx}", cls | AluOp.NEG | Source.K, "reg", "zero", 0, "zero",
                   "{dst} = -{dst}", "{dst} = -{dst}", "neg" + usfx, ("dst",), width)
        # Sign-extending moves (MOVSX): off is the source width.
        for bits in (8, 16, 32) if width == 64 else (8, 16):
            yield Form(f"movsx{sfx}_{bits}", cls | AluOp.MOV | Source.X, "reg", "reg", bits, "zero",
                       f"{{dst}} = (s{bits}){{src}}", f"{{dst}} = (s{bits}){{src}}",
                       f"movsx{bits}{width}", ("dst", "src"), width)
    # Byte swaps. ALU class: to-le (src bit 0) / to-be (src bit 1); ALU64 class: bswap.
    for bits in (16, 32, 64):
        yield Form(f"le{bits}", Class.ALU | AluOp.END | Source.K, "reg", "zero", 0, bits,
                   f"{{rdst}} = le{bits} {{rdst}}", f"{{rdst}} = le{bits} {{rdst}}",
                   f"le{bits}", ("dst",))
        yield Form(f"be{bits}", Class.ALU | AluOp.END | Source.X, "reg", "zero", 0, bits,
                   f"{{rdst}} = be{bits} {{rdst}}", f"{{rdst}} = be{bits} {{rdst}}",
                   f"be{bits}", ("dst",))
        yield Form(f"bswap{bits}", Class.ALU64 | AluOp.END | Source.K, "reg", "zero", 0, bits,
                   f"{{rdst}} = bswap{bits} {{rdst}}", f"{{rdst}} = bswap{bits} {{rdst}}",
                   f"bswap{bits}", ("dst",), alias_ubpf=(f"swap{bits}",))


_JMP_CONDS = [
    (JmpOp.JEQ, "==", "jeq"),
    (JmpOp.JGT, ">", "jgt"),
    (JmpOp.JGE, ">=", "jge"),
    (JmpOp.JSET, "&", "jset"),
    (JmpOp.JNE, "!=", "jne"),
    (JmpOp.JSGT, "s>", "jsgt"),
    (JmpOp.JSGE, "s>=", "jsge"),
    (JmpOp.JLT, "<", "jlt"),
    (JmpOp.JLE, "<=", "jle"),
    (JmpOp.JSLT, "s<", "jslt"),
    (JmpOp.JSLE, "s<=", "jsle"),
]


def _jmp_forms() -> Iterator[Form]:
    for cls, width, sfx in ((Class.JMP, 64, ""), (Class.JMP32, 32, "32")):
        for op, sym, uname in _JMP_CONDS:
            yield Form(f"{uname}{sfx}_x", cls | op | Source.X, "reg", "reg", "jump16", "zero",
                       f"if {{dst}} {sym} {{src}} goto {{target}}",
                       f"if {{dst}} {sym} {{src}} goto {{target}}",
                       uname + sfx, ("dst", "src", "target"), width)
            yield Form(f"{uname}{sfx}_k", cls | op | Source.K, "reg", "zero", "jump16", "imm",
                       f"if {{dst}} {sym} {{imm}} goto {{target}}",
                       f"if {{dst}} {sym} {{ximm}} goto {{target}}",
                       uname + sfx, ("dst", "imm", "target"), width)
    yield Form("ja", Class.JMP | JmpOp.JA, "zero", "zero", "jump16", "zero",
               "goto {target}", "goto {target}", "ja", ("target",))
    yield Form("gotol", Class.JMP32 | JmpOp.JA, "zero", "zero", "zero", "jump32",
               "gotol {target}", "gotol {target}", "ja32", ("target",))
    yield Form("may_goto", Class.JMP | JmpOp.JCOND, "zero", "zero", "jump16", "zero",
               "may_goto {target}", "may_goto {target}", "may_goto", ("target",))
    yield Form("call", Class.JMP | JmpOp.CALL, "zero", CallKind.HELPER, "zero", "helper",
               "call {helper}", "call {helper}", "call", ("helper",), alias_ubpf=("call helper",))
    # LLVM prints a BPF-to-BPF call as "call -0x1" (assembling "call N" gives a helper call; use a label).
    yield Form("call_local", Class.JMP | JmpOp.CALL, "zero", CallKind.PSEUDO_CALL, "zero", "jump32",
               "call {target}", "call {target}", "call local", ("target",))
    # LLVM has no spelling for a kfunc call (it emits a relocation); ours is "call_kfunc ID, BTF_FD".
    yield Form("call_kfunc", Class.JMP | JmpOp.CALL, "zero", CallKind.KFUNC, "btf_fd", "btf",
               "call_kfunc {kfunc}, {btf_fd}", "call {kfunc}", "call runtime", ("kfunc",))
    yield Form("exit", Class.JMP | JmpOp.EXIT, "zero", "zero", "zero", "zero",
               "exit", "exit", "exit", ())


_SIZES = [(Size.B, 8, "b"), (Size.H, 16, "h"), (Size.W, 32, "w"), (Size.DW, 64, "dw")]


def _mem_forms() -> Iterator[Form]:
    for size, bits, usz in _SIZES:
        narrow = bits <= 32  # llvm-objdump --mcpu=v4 prints wN for zero-extending narrow loads/stores
        yield Form(f"ldx{usz}", Class.LDX | Mode.MEM | size, "reg", "reg", "mem", "zero",
                   f"{{{'wdst' if narrow else 'rdst'}}} = *(u{bits} *)({{rsrc}} {{off}})",
                   f"{{rdst}} = *(u{bits} *)({{rsrc}} {{off}})",
                   f"ldx{usz}", ("dst", "src_mem"),
                   alias_llvm=(f"{{rdst}} = *(u{bits} *)({{rsrc}} {{off}})",) if narrow else ())
        if size != Size.DW:
            yield Form(f"ldxs{usz}", Class.LDX | Mode.MEMSX | size, "reg", "reg", "mem", "zero",
                       f"{{dst}} = *(s{bits} *)({{rsrc}} {{off}})",
                       f"{{dst}} = *(s{bits} *)({{rsrc}} {{off}})",
                       f"ldxs{usz}", ("dst", "src_mem"))
        yield Form(f"st{usz}", Class.ST | Mode.MEM | size, "reg", "zero", "mem", "imm",
                   f"*(u{bits} *)({{rdst}} {{off}}) = {{imm}}",
                   f"*(u{bits} *)({{rdst}} {{off}}) = {{imm}}",
                   f"st{usz}", ("dst_mem", "imm"))
        yield Form(f"stx{usz}", Class.STX | Mode.MEM | size, "reg", "reg", "mem", "zero",
                   f"*(u{bits} *)({{rdst}} {{off}}) = {{{'wsrc' if narrow else 'rsrc'}}}",
                   f"*(u{bits} *)({{rdst}} {{off}}) = {{rsrc}}",
                   f"stx{usz}", ("dst_mem", "src"),
                   alias_llvm=(f"*(u{bits} *)({{rdst}} {{off}}) = {{rsrc}}",) if narrow else ())


def _atomic_forms() -> Iterator[Form]:
    alu = [(AtomicOp.ADD, "+=", "add"), (AtomicOp.OR, "|=", "or"),
           (AtomicOp.AND, "&=", "and"), (AtomicOp.XOR, "^=", "xor")]
    for size, bits, _usz, width in ((Size.W, 32, "w", 32), (Size.DW, 64, "dw", 64)):
        op = Class.STX | Mode.ATOMIC | size
        k64 = "64" if bits == 64 else ""
        for aop, sym, name in alu:
            yield Form(f"atomic_{name}{bits}", op, "reg", "reg", "mem", int(aop),
                       f"lock *(u{bits} *)({{rdst}} {{off}}) {sym} {{src}}",
                       f"lock *(u{bits} *)({{rdst}} {{off}}) {sym} {{rsrc}}",
                       f"lock {name}{'32' if bits == 32 else ''}", ("dst_mem", "src"), width)
            yield Form(f"atomic_fetch_{name}{bits}", op, "reg", "reg", "mem", int(aop | AtomicOp.FETCH),
                       f"{{src}} = atomic_fetch_{name}((u{bits} *)({{rdst}} {{off}}), {{src}})",
                       f"{{rsrc}} = atomic{k64}_fetch_{name}((u{bits} *)({{rdst}} {{off}}), {{rsrc}})",
                       f"lock fetch {name}{'32' if bits == 32 else ''}", ("dst_mem", "src"), width)
        xs = "xchg_64" if bits == 64 else "xchg32_32"
        cs = "cmpxchg_64" if bits == 64 else "cmpxchg32_32"
        w0 = "r0" if bits == 64 else "w0"
        yield Form(f"atomic_xchg{bits}", op, "reg", "reg", "mem", int(AtomicOp.XCHG),
                   f"{{src}} = {xs}({{rdst}} {{off}}, {{src}})",
                   f"{{rsrc}} = atomic{k64}_xchg((u{bits} *)({{rdst}} {{off}}), {{rsrc}})",
                   f"lock xchg{'32' if bits == 32 else ''}", ("dst_mem", "src"), width)
        yield Form(f"atomic_cmpxchg{bits}", op, "reg", "reg", "mem", int(AtomicOp.CMPXCHG),
                   f"{w0} = {cs}({{rdst}} {{off}}, {w0}, {{src}})",
                   f"r0 = atomic{k64}_cmpxchg((u{bits} *)({{rdst}} {{off}}), r0, {{rsrc}})",
                   f"lock cmpxchg{'32' if bits == 32 else ''}", ("dst_mem", "src"), width)


def _ld_forms() -> Iterator[Form]:
    # Pseudo sources other than 0 have no LLVM spelling (LLVM emits relocations); ours name the source.
    # The kernel prints every ld_imm64 as "rN = <imm>" (a callback may print map[id:N]).
    kinds = [
        (Pseudo.IMM, "lddw", "{dst} = {imm64} ll", ("dst", "imm64")),
        (Pseudo.MAP_FD, "lddw_map_fd", "{dst} = map_fd({imm64}) ll", ("dst", "imm64")),
        (Pseudo.MAP_VALUE, "lddw_map_value", "{dst} = map_value({imm64}, {imm2}) ll", ("dst", "imm64", "imm2")),
        (Pseudo.BTF_ID, "lddw_btf_id", "{dst} = btf_id({imm64}) ll", ("dst", "imm64")),
        (Pseudo.FUNC, "lddw_func", "{dst} = func({imm64}) ll", ("dst", "imm64")),
        (Pseudo.MAP_IDX, "lddw_map_idx", "{dst} = map_idx({imm64}) ll", ("dst", "imm64")),
        (Pseudo.MAP_IDX_VALUE, "lddw_map_idx_value", "{dst} = map_idx_value({imm64}, {imm2}) ll",
         ("dst", "imm64", "imm2")),
    ]
    for pseudo, name, llvm, operands in kinds:
        yield Form(name, Class.LD | Mode.IMM | Size.DW, "reg", int(pseudo), "zero", "imm64",
                   llvm, "{rdst} = {imm64}", name, operands, wide=True)
    # Legacy packet access (decoded, assembled, never emitted by the DSL). LLVM spells LD_IND
    # without an immediate ("skb[r1]"), so {ind} prints "rN + imm" only when imm is not 0.
    for size, bits, usz in _SIZES[:3]:
        yield Form(f"ldabs{usz}", Class.LD | Mode.ABS | size, "zero", "zero", "zero", "imm",
                   f"r0 = *(u{bits} *)skb[{{imm}}]", f"r0 = *(u{bits} *)skb[{{imm}}]",
                   f"ldabs{usz}", ("imm",))
        yield Form(f"ldind{usz}", Class.LD | Mode.IND | size, "zero", "reg", "zero", "imm",
                   f"r0 = *(u{bits} *)skb[{{ind}}]",
                   f"r0 = *(u{bits} *)skb[{{rsrc}} + {{imm}}]",
                   f"ldind{usz}", ("src", "imm"))


FORMS: tuple[Form, ...] = (*_alu_forms(), *_jmp_forms(), *_mem_forms(), *_atomic_forms(), *_ld_forms())
FORMS_BY_NAME: Mapping[str, Form] = {f.name: f for f in FORMS}
assert len(FORMS_BY_NAME) == len(FORMS), "form names must be unique"

_FORMS_BY_OPCODE: dict[int, list[Form]] = {}
for _f in FORMS:
    _FORMS_BY_OPCODE.setdefault(_f.opcode, []).append(_f)
# opcode -> (form, fixed fields) for form_of
_SELECTORS: dict[int, list[tuple[Form, tuple[tuple[str, int], ...]]]] = {
    op: [(f, tuple(f.fixed.items())) for f in forms] for op, forms in _FORMS_BY_OPCODE.items()}


# --------------------------------------------------------------------------
# Instructions.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceLoc:
    """Where an instruction came from: a DSL file:line or a text input's line:column."""

    file: str
    line: int
    column: int = 0
    text: str = ""

    def __str__(self) -> str:
        col = f":{self.column}" if self.column else ""
        return f"{self.file}:{self.line}{col}"


class EncodingError(ValueError):
    """An instruction whose fields do not fit its form (carries the source location if known)."""

    def __init__(self, message: str, source: SourceLoc | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


def _s(value: int, bits: int) -> int:
    """Interpret the low ``bits`` of value as a signed integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@dataclass(frozen=True)
class Instruction:
    """One BPF instruction (one slot, or two for ``ld_imm64``).

    Fields hold the encoded values: ``off`` and ``imm`` are signed. For
    ``ld_imm64`` ``imm`` is the whole 64-bit constant (unsigned), except for
    ``MAP_VALUE`` / ``MAP_IDX_VALUE`` where ``imm`` is the map fd/index and
    ``imm2`` the value offset, as in the kernel.

    ``ref`` is a symbolic operand resolved later (a label for a jump, a
    function for a BPF-to-BPF call, a map for ``ld_imm64``, a helper name).
    ``source`` records where the instruction was written; neither takes part
    in equality.
    """

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm2: int = 0
    ref: Any = field(default=None, compare=False)
    source: SourceLoc | None = field(default=None, compare=False)

    @property
    def form(self) -> Form:
        return form_of(self)

    @property
    def slots(self) -> int:
        return 2 if self.opcode == (Class.LD | Mode.IMM | Size.DW) else 1

    @property
    def cls(self) -> Class:
        return Class(self.opcode & 0x07)

    def encode(self) -> bytes:
        return encode(self)

    def with_(self, **changes: Any) -> Instruction:
        """A copy with some fields changed (keeps ref and source unless given)."""
        from dataclasses import replace

        return replace(self, **changes)


def form_of(insn: Instruction) -> Form:
    """The table row describing ``insn``; raises EncodingError when none does."""
    for form, fixed in _SELECTORS.get(insn.opcode, ()):
        for name, value in fixed:
            if getattr(insn, name) != value:
                break
        else:
            return form
    raise EncodingError(
        f"no BPF instruction has opcode 0x{insn.opcode:02x} with src={insn.src} off={insn.off} imm={insn.imm}",
        insn.source,
    )


def make(form_name: str, *, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, imm2: int = 0,
         ref: Any = None, source: SourceLoc | None = None) -> Instruction:
    """Build an instruction of a named form, filling the fields the form fixes."""
    form = FORMS_BY_NAME[form_name]
    values = {"dst": dst, "src": src, "off": off, "imm": imm}
    values.update(form.fixed)
    if form.wide:  # 64-bit constants and map offsets are stored unsigned
        if form.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            values["imm"] &= 0xFFFFFFFF
            imm2 &= 0xFFFFFFFF
        elif -(1 << 63) <= values["imm"] < 0:
            values["imm"] &= (1 << 64) - 1
    insn = Instruction(form.opcode, values["dst"], values["src"], values["off"], values["imm"], imm2,
                       ref=ref, source=source)
    validate(insn, form)
    return insn


_RANGES = {
    "imm": (-(1 << 31), (1 << 31) - 1),
    "jump32": (-(1 << 31), (1 << 31) - 1),
    "helper": (-(1 << 31), (1 << 31) - 1),
    "btf": (-(1 << 31), (1 << 31) - 1),
    "mem": (-(1 << 15), (1 << 15) - 1),
    "jump16": (-(1 << 15), (1 << 15) - 1),
    "btf_fd": (-(1 << 15), (1 << 15) - 1),
}


def validate(insn: Instruction, form: Form | None = None) -> Form:
    """Check every field against its form; returns the form."""
    form = form or form_of(insn)
    for name, lo, hi in form.bounds:
        value = getattr(insn, name)
        if not lo <= value <= hi:
            role = getattr(form, name)
            if role == "reg":
                raise EncodingError(f"{form.name}: r{value} is not a register (r0..r10)", insn.source)
            if lo == hi:  # a fixed value (0 or the one selecting this form)
                raise EncodingError(f"{form.name}: {name} must be {lo}, not {value}", insn.source)
            raise EncodingError(f"{form.name}: {name} {value} out of range [{lo}, {hi}]", insn.source)
    if form.wide and form.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
        if not (0 <= insn.imm < (1 << 32) and 0 <= insn.imm2 < (1 << 32)):
            raise EncodingError(f"{form.name}: map fd/index and value offset must be unsigned 32-bit", insn.source)
    elif form.wide:
        if not 0 <= insn.imm < (1 << 64):
            raise EncodingError(f"{form.name}: 64-bit constant {insn.imm} must be stored unsigned", insn.source)
        if insn.imm2:
            raise EncodingError(f"{form.name}: imm2 is only used by map-value loads", insn.source)
    elif insn.imm2:
        raise EncodingError(f"{form.name}: imm2 is only used by map-value loads", insn.source)
    return form


def encode(insn: Instruction) -> bytes:
    """Little-endian bytecode of one instruction (8 or 16 bytes)."""
    form = validate(insn)
    regs = (insn.src << 4) | insn.dst
    if form.wide:
        if form.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            lo, hi = insn.imm & 0xFFFFFFFF, insn.imm2 & 0xFFFFFFFF
        else:
            lo, hi = insn.imm & 0xFFFFFFFF, (insn.imm >> 32) & 0xFFFFFFFF
        return struct.pack("<BBhIBBhI", insn.opcode, regs, insn.off, lo, 0, 0, 0, hi)
    return struct.pack("<BBhi", insn.opcode, regs, insn.off, insn.imm)


def encode_program(insns: list[Instruction] | tuple[Instruction, ...]) -> bytes:
    return b"".join(encode(i) for i in insns)


class DecodeError(ValueError):
    """Bytes that are not a valid BPF instruction; ``index`` is the slot number."""

    def __init__(self, message: str, index: int):
        self.index = index
        super().__init__(f"slot {index}: {message}")


def decode_one(data: bytes, pos: int = 0, index: int = 0) -> Instruction:
    """Decode the instruction at byte offset ``pos``."""
    if len(data) - pos < 8:
        raise DecodeError("truncated instruction", index)
    opcode, regs, off, imm = struct.unpack_from("<BBhi", data, pos)
    dst, src = regs & 0x0F, regs >> 4
    if opcode == (Class.LD | Mode.IMM | Size.DW):
        if len(data) - pos < 16:
            raise DecodeError("ld_imm64 is missing its second slot", index)
        op2, regs2, off2, hi = struct.unpack_from("<BBhI", data, pos + 8)
        if op2 or regs2 or off2:
            raise DecodeError("second slot of ld_imm64 must be zero except imm", index)
        if src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            insn = Instruction(opcode, dst, src, off, imm & 0xFFFFFFFF, hi)
        else:
            insn = Instruction(opcode, dst, src, off, (imm & 0xFFFFFFFF) | (hi << 32))
    else:
        insn = Instruction(opcode, dst, src, off, imm)
    try:
        validate(insn)
    except EncodingError as exc:
        raise DecodeError(str(exc), index) from None
    return insn


def decode(data: bytes) -> list[Instruction]:
    """Decode a whole program; raises DecodeError naming the slot of the first bad one."""
    if len(data) % 8:
        raise DecodeError(f"length {len(data)} is not a multiple of 8", len(data) // 8)
    out: list[Instruction] = []
    pos = 0
    while pos < len(data):
        insn = decode_one(data, pos, pos // 8)
        out.append(insn)
        pos += 8 * insn.slots
    return out


def signed(value: int, bits: int) -> int:
    """Public helper: two's-complement reinterpretation."""
    return _s(value, bits)
