"""Disassemble bytecode (or instruction lists) one instruction a line, with slot indexes.

The default ``kernel`` syntax prints what ``bpftool prog dump xlated`` prints
(``   0: (bf) r6 = r1``); an ``ld_imm64`` takes two slots, so the index then jumps by 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import isa
from .isa import Instruction
from .textfmt import KernelCallbacks, format_insn


def _instructions(program: bytes | Sequence[Instruction]) -> Sequence[Instruction]:
    if isinstance(program, (bytes, bytearray, memoryview)):
        return isa.decode(bytes(program))
    return program


def disassemble_lines(program: bytes | Sequence[Instruction], syntax: str = "kernel", *,
                      callbacks: KernelCallbacks | None = None, annotate: bool = False,
                      index: bool = True) -> Iterable[str]:
    """Yield the text lines of a program.

    ``annotate`` adds a ``; file:line  source text`` comment line before the first
    instruction of each source line (from ``Instruction.source``), the way bpftool
    interleaves line info.
    """
    pc = 0
    last_source = None
    for insn in _instructions(program):
        if annotate and insn.source is not None and insn.source != last_source:
            loc = insn.source
            text = f"  {loc.text.strip()}" if loc.text else ""
            yield f"; {loc}{text}"
            last_source = loc
        text = format_insn(insn, syntax, callbacks=callbacks)
        yield f"{pc:4d}: {text}" if index else text
        pc += insn.slots


def disassemble(program: bytes | Sequence[Instruction], syntax: str = "kernel", *,
                callbacks: KernelCallbacks | None = None, annotate: bool = False, index: bool = True) -> str:
    """The whole listing as one string (one instruction a line, newline-terminated)."""
    lines = list(disassemble_lines(program, syntax, callbacks=callbacks, annotate=annotate, index=index))
    return "".join(line + "\n" for line in lines)
