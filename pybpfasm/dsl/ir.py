"""The DSL's intermediate form: BPF instructions over virtual registers.

An ``Op`` is an ``isa`` form name plus fields, where a register may be a
physical one (0..10) or a virtual one (>= ``FIRST_VREG``).  Keeping the ISA's
own forms means code generation is a 1:1 rewrite of registers after
allocation; the register allocator only needs each op's defs and uses, which
``defs_uses`` derives from the form name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..builder import Label
from ..isa import FORMS_BY_NAME, SourceLoc

FIRST_VREG = 16
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
CALLER_SAVED = (R0, R1, R2, R3, R4, R5)
ARG_REGS = (R1, R2, R3, R4, R5)


@dataclass
class Op:
    """One instruction with possibly-virtual registers."""

    form: str
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm2: int = 0
    ref: Any = None
    source: SourceLoc | None = None
    nargs: int = 0  # calls: how many of r1..r5 are arguments
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Op({self.form} d={self.dst} s={self.src} off={self.off} imm={self.imm} ref={self.ref})"


Item = Op | Label

_MOVE_FORMS = frozenset({"mov64_x"})


def is_move(op: Op) -> bool:
    """A whole-register copy (what coalescing may delete)."""
    return op.form in _MOVE_FORMS


def is_jump(op: Op) -> bool:
    f = FORMS_BY_NAME[op.form]
    return f.off == "jump16" or op.form == "gotol"


def is_cond_jump(op: Op) -> bool:
    return is_jump(op) and op.form not in ("ja", "gotol")


def ends_block(op: Op) -> bool:
    return op.form in ("ja", "gotol", "exit")


def has_side_effect(op: Op) -> bool:
    """Ops that must stay even if their result is unused."""
    f = op.form
    return (f.startswith(("st", "atomic", "call", "exit", "j", "may_goto", "gotol")) or is_jump(op)
            or op.meta.get("keep", False))


def defs_uses(op: Op) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Registers written and read by ``op``."""
    f = op.form
    if f in ("mov64_x", "mov32_x") or f.startswith("movsx"):
        return (op.dst,), (op.src,)
    if f in ("mov64_k", "mov32_k"):
        return (op.dst,), ()
    if f.startswith("lddw"):
        return (op.dst,), ()
    if f.startswith("ldx"):
        return (op.dst,), (op.src,)
    if f.startswith("stx"):
        return (), (op.dst, op.src)
    if f.startswith("st"):
        return (), (op.dst,)
    if f.startswith("atomic_cmpxchg"):
        return (R0,), (op.dst, op.src, R0)
    if f.startswith(("atomic_fetch", "atomic_xchg")):
        return (op.src,), (op.dst, op.src)
    if f.startswith("atomic"):
        return (), (op.dst, op.src)
    if f in ("call", "call_local"):
        return CALLER_SAVED, ARG_REGS[:op.nargs]
    if f == "call_kfunc":
        return CALLER_SAVED, ARG_REGS[:op.nargs]
    if f == "exit":
        return (), (R0,)
    if f in ("ja", "gotol", "may_goto"):
        return (), ()
    form = FORMS_BY_NAME[f]
    if form.off == "jump16":  # conditional jump
        return (), ((op.dst, op.src) if f.endswith("_x") else (op.dst,))
    # ALU: neg, byte swaps, binary ops
    if f.endswith("_x"):
        return (op.dst,), (op.dst, op.src)
    return (op.dst,), (op.dst,)


def regs_of(op: Op) -> list[str]:
    """Which fields of ``op`` hold registers (to rewrite after allocation)."""
    form = FORMS_BY_NAME[op.form]
    out = []
    if form.dst == "reg":
        out.append("dst")
    if form.src == "reg":
        out.append("src")
    return out
