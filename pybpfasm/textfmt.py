"""Render instructions as text in the three syntaxes, from the templates in ``isa.FORMS``.

``llvm``   what ``llvm-objdump-19 -d --mcpu=v4`` prints (hex immediates, ``wN`` for
           narrow loads/stores), minus its ``<.text+0x..>`` target suffix.
``kernel`` exactly ``kernel/bpf/disasm.c``'s ``print_bpf_insn`` (what the verifier log and
           ``bpftool prog dump xlated`` print): ``(bf) r6 = r1``, decimal ALU immediates,
           ``0x%x`` jump immediates, ``goto pc+3``, ``call bpf_map_lookup_elem#1``.
``ubpf``   the ubpf / bpf_conformance assembler syntax: ``mov %r0, 1``, ``ldxw %r0, [%r1+4]``.

The same placeholder vocabulary is used by ``pybpfasm.asm`` to build its parsers, so the
table stays the only place where instruction spellings live.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from . import isa
from .isa import Form, Instruction, Pseudo

SYNTAXES = ("llvm", "kernel", "ubpf")

# Placeholders a template may use (see the isa module docstring).
PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")

# ubpf operand kinds -> template fragments (ubpf templates are built from Form.ubpf_operands).
_UBPF_OPERANDS = {
    "dst": "{rdst}", "src": "{rsrc}", "imm": "{imm}", "target": "{target}", "helper": "{helper}",
    "kfunc": "{kfunc}", "imm64": "{imm64}", "imm2": "{imm2}",
    "dst_mem": "[{rdst}{off}]", "src_mem": "[{rsrc}{off}]",
}


def ubpf_template(form: Form, mnemonic: str | None = None) -> str:
    """The ubpf syntax template of a form: mnemonic then comma-separated operands."""
    mnemonic = mnemonic or form.ubpf
    ops = ", ".join(_UBPF_OPERANDS[o] for o in form.ubpf_operands)
    return f"{mnemonic} {ops}" if ops else mnemonic


def templates(form: Form, syntax: str) -> tuple[str, ...]:
    """Every spelling of a form in a syntax; the first is the one we print."""
    if syntax == "llvm":
        return (form.llvm, *form.alias_llvm)
    if syntax == "kernel":
        return (form.kernel,)
    if syntax == "ubpf":
        return tuple(ubpf_template(form, m) for m in (form.ubpf, *form.alias_ubpf))
    raise ValueError(f"unknown syntax {syntax!r} (expected one of {', '.join(SYNTAXES)})")


@dataclass(frozen=True)
class KernelCallbacks:
    """Hooks mirroring ``struct bpf_insn_cbs`` of the kernel's disassembler.

    ``imm(insn, full_imm)`` prints the constant of an ``ld_imm64`` (bpftool prints
    ``map[id:N]`` there); ``call(insn)`` names a call target when the helper table does
    not (kfuncs, JIT addresses) and may return None.  ``allow_ptr_leaks`` False prints map
    pointers as 0, as an unprivileged verifier log does.
    """

    imm: Callable[[Instruction, int], str] | None = None
    call: Callable[[Instruction], str | None] | None = None
    allow_ptr_leaks: bool = True


_NO_CALLBACKS = KernelCallbacks()


def _hex_signed(value: int) -> str:
    return f"-0x{-value:x}" if value < 0 else f"0x{value:x}"


def _signed_plus(value: int) -> str:
    return f"+{value}" if value >= 0 else str(value)


def _reg(prefix: str, n: int) -> str:
    return f"{prefix}{n}"


def _target_value(insn: Instruction, form: Form) -> int:
    return insn.off if form.off == "jump16" else insn.imm


def _full_imm64(insn: Instruction) -> int:
    """The constant the kernel sees in both imm halves (fd/index | offset << 32 for map values)."""
    if insn.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
        return (insn.imm & 0xFFFFFFFF) | ((insn.imm2 & 0xFFFFFFFF) << 32)
    return insn.imm & ((1 << 64) - 1)


def _helper_name(insn: Instruction, cbs: KernelCallbacks) -> str:
    """__func_get_name of disasm.c: table name for helpers, else the callback, else a fallback."""
    from .helpers import by_id

    if insn.src == 0 and insn.imm in by_id:
        return by_id[insn.imm].kernel_name
    if cbs.call is not None:
        name = cbs.call(insn)
        if name:
            return name
    if insn.src == isa.CallKind.PSEUDO_CALL:
        return _signed_plus(insn.imm)
    if insn.src == isa.CallKind.KFUNC:
        return "kernel-function"
    return "unknown"


def _render_llvm(name: str, insn: Instruction, form: Form, cbs: KernelCallbacks) -> str:
    if name in ("imm", "ximm", "helper", "kfunc"):
        return _hex_signed(insn.imm)
    if name == "off":
        return f"+ 0x{insn.off:x}" if insn.off >= 0 else f"- 0x{-insn.off:x}"
    if name == "target":
        if form.name == "call_local":  # objdump prints a BPF-to-BPF call like an immediate: "call 0x2"
            return _hex_signed(insn.imm)
        return ("+" if _target_value(insn, form) >= 0 else "") + _hex_signed(_target_value(insn, form))
    if name == "imm64":
        if form.src in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            return _hex_signed(insn.imm)
        return _hex_signed(isa.signed(insn.imm, 64))
    if name == "imm2":
        return _hex_signed(insn.imm2)
    if name == "btf_fd":
        return str(insn.off)
    if name == "ind":
        return f"r{insn.src}" if insn.imm == 0 else f"r{insn.src} + {_hex_signed(insn.imm)}"
    raise KeyError(name)


def _render_kernel(name: str, insn: Instruction, form: Form, cbs: KernelCallbacks) -> str:
    if name == "imm":
        return str(insn.imm)
    if name == "ximm":
        return f"0x{insn.imm & 0xFFFFFFFF:x}"
    if name == "off":
        return _signed_plus(insn.off)
    if name == "target":
        if form.name == "call_local":
            return "pc" + _helper_name(insn, cbs)
        return "pc" + _signed_plus(_target_value(insn, form))
    if name in ("helper", "kfunc"):
        return f"{_helper_name(insn, cbs)}#{insn.imm}"
    if name == "imm64":
        full = _full_imm64(insn)
        if insn.src in (Pseudo.MAP_FD, Pseudo.MAP_VALUE) and not cbs.allow_ptr_leaks:
            full = 0
        if cbs.imm is not None:
            return cbs.imm(insn, full)
        return f"0x{full:x}"
    if name == "imm2":
        return str(insn.imm2)
    if name == "btf_fd":
        return str(insn.off)
    if name == "ind":
        return f"r{insn.src} + {insn.imm}"
    raise KeyError(name)


def _render_ubpf(name: str, insn: Instruction, form: Form, cbs: KernelCallbacks) -> str:
    if name in ("imm", "ximm", "helper", "kfunc"):
        return str(insn.imm)
    if name == "off":
        return "" if insn.off == 0 else _signed_plus(insn.off)
    if name == "target":
        return _signed_plus(_target_value(insn, form))
    if name == "imm64":
        return f"0x{insn.imm:x}"
    if name == "imm2":
        return str(insn.imm2)
    if name == "btf_fd":
        return str(insn.off)
    raise KeyError(name)


_RENDERERS = {"llvm": _render_llvm, "kernel": _render_kernel, "ubpf": _render_ubpf}


@cache
def _compiled(form_name: str, syntax: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a form's printed template into literal pieces and placeholder names."""
    template = templates(isa.FORMS_BY_NAME[form_name], syntax)[0]
    pieces = PLACEHOLDER_RE.split(template)
    return tuple(pieces[0::2]), tuple(pieces[1::2])


def format_insn(insn: Instruction, syntax: str = "kernel", *, callbacks: KernelCallbacks | None = None,
                opcode_prefix: bool = True) -> str:
    """One instruction as text.

    In kernel syntax the line starts with the opcode in parentheses, as ``print_bpf_insn``
    prints it (``opcode_prefix=False`` drops it).
    """
    form = isa.form_of(insn)
    cbs = callbacks or _NO_CALLBACKS
    literals, names = _compiled(form.name, syntax)
    render = _RENDERERS[syntax]
    reg_prefix = "%r" if syntax == "ubpf" else None
    width_prefix = "w" if form.width == 32 else "r"
    out = [literals[0]]
    for name, literal in zip(names, literals[1:]):
        if name in ("dst", "src", "rdst", "rsrc", "wdst", "wsrc"):
            n = insn.dst if name.endswith("dst") else insn.src
            if reg_prefix:
                prefix = reg_prefix
            elif name[0] == "r":
                prefix = "r"
            elif name[0] == "w":
                prefix = "w"
            else:
                prefix = width_prefix
            out.append(_reg(prefix, n))
        else:
            out.append(render(name, insn, form, cbs))
        out.append(literal)
    text = "".join(out)
    if syntax == "kernel" and opcode_prefix:
        return f"({insn.opcode:02x}) {text}"
    return text
