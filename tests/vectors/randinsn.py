"""Random valid instructions for every form of ``isa.FORMS`` (shared by tests and bench/asm_speed.py).

Values favour the boundaries (0, +-1, INT16/INT32 limits) where encoders go wrong.
"""

from __future__ import annotations

import random

from pybpfasm import isa
from pybpfasm.isa import Form, Instruction, Pseudo

# Forms LLVM 19 cannot write in its assembly syntax (see tests/vectors/README.md).
NOT_IN_LLVM = frozenset({
    "call_local",  # objdump prints "call -0x1"; llvm-mc reads "call N" as a helper call
    "call_kfunc",  # LLVM emits kfunc calls as relocations
    "gotol",  # llvm-mc 19 accepts only a label operand for gotol
    *(f.name for f in isa.FORMS if f.wide and f.src != Pseudo.IMM),  # pseudo ld_imm64 sources 1-6
})

S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)
_EDGES16 = (0, 1, -1, 2, -2, 0x7FFF, -0x8000, 0x7FFE, -0x7FFF, 8, -8)
_EDGES32 = (0, 1, -1, 2, -2, 0x7FFFFFFF, -0x80000000, 0x7FFFFFFE, -0x7FFFFFFF, 0xFFFF, 0x8000, -0x8000, 16)
_EDGES64 = (0, 1, (1 << 64) - 1, 1 << 63, (1 << 63) - 1, 0xFFFFFFFF, 1 << 32, 0x80000000, 0xFFFFFFFF80000000)


def _pick(rng: random.Random, edges: tuple[int, ...], lo: int, hi: int) -> int:
    return rng.choice(edges) if rng.random() < 0.4 else rng.randint(lo, hi)


def field_value(rng: random.Random, role: object) -> int:
    if isinstance(role, int):
        return role
    if role == "zero":
        return 0
    if role == "reg":
        return rng.randint(0, 10)
    if role in ("imm", "jump32", "helper", "btf"):
        return _pick(rng, _EDGES32, *S32)
    if role in ("mem", "jump16", "btf_fd"):
        return _pick(rng, _EDGES16, *S16)
    raise ValueError(role)


def random_instruction(rng: random.Random, form: Form, *, llvm: bool = False) -> Instruction:
    """A random valid instruction of ``form``; ``llvm`` keeps to what LLVM's syntax can say."""
    values = {name: field_value(rng, getattr(form, name)) for name in ("dst", "src", "off")}
    imm2 = 0
    if form.wide:
        if form.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            imm, imm2 = rng.randint(0, (1 << 32) - 1), rng.randint(0, (1 << 32) - 1)
        else:
            imm = _pick(rng, _EDGES64, 0, (1 << 64) - 1)
    elif llvm and form.name.startswith("ldind"):
        imm = 0  # LLVM spells LD_IND "skb[rN]", without an immediate
    else:
        imm = field_value(rng, form.imm)
    return isa.make(form.name, dst=values["dst"], src=values["src"], off=values["off"], imm=imm, imm2=imm2)


def llvm_forms() -> list[Form]:
    return [f for f in isa.FORMS if f.name not in NOT_IN_LLVM]


def random_program(rng: random.Random, count: int, forms: list[Form] | None = None) -> list[Instruction]:
    forms = forms or list(isa.FORMS)
    return [random_instruction(rng, rng.choice(forms)) for _ in range(count)]
