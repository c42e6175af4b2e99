"""Programmatic assembly: instructions with symbolic operands, labels, and resolution.

A ``ProgramBuilder`` collects instructions whose jump targets, call targets,
map references and helper calls may still be symbolic.  ``resolve()`` turns
labels and function names into pc-relative offsets and helper names into ids,
leaving map references (``MapRef``) for the loader, which knows the fds.

This mirrors how cilium/ebpf's ``asm.Instructions`` carries references and
symbols until load time.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import isa
from .isa import Instruction, SourceLoc


class AssemblyError(ValueError):
    """A program that cannot be assembled; names the source location when known."""

    def __init__(self, message: str, source: SourceLoc | None = None):
        self.source = source
        self.bare_message = message
        super().__init__(f"{source}: {message}" if source else message)


@dataclass(frozen=True)
class Label:
    """A jump target (or, for calls, a BPF-to-BPF function entry)."""

    name: str


@dataclass(frozen=True)
class ResolvedLabel(Label):
    """The label a jump or call pointed at, after ``resolve`` turned it into an offset.

    Kept so names survive (BTF names a subprogram after its entry label), but
    ``resolve`` leaves it alone: resolving already-resolved instructions again
    (e.g. ``Program.load(compiled.instructions)``) is a no-op, not an
    "undefined label" error.  Never used as a label definition.
    """


@dataclass(frozen=True)
class MapRef:
    """A map operand of ``ld_imm64``, resolved to an fd by the loader.

    ``map`` is any object with an ``fd`` attribute (a ``pybpfasm.maps`` map) or
    a name to be looked up in the maps passed to the loader.  ``value_offset``
    makes it a direct map-value load (``BPF_PSEUDO_MAP_VALUE``).
    """

    map: Any
    value_offset: int | None = None

    @property
    def name(self) -> str:
        return self.map if isinstance(self.map, str) else getattr(self.map, "name", repr(self.map))


@dataclass(frozen=True)
class HelperRef:
    """A helper call by name, resolved to its id by ``resolve``."""

    name: str


def caller_location(depth: int = 2) -> SourceLoc | None:
    """The file:line of the user code ``depth`` frames up (used to tag instructions)."""
    frame = inspect.currentframe()
    try:
        for _ in range(depth):
            if frame is None:
                return None
            frame = frame.f_back
        if frame is None:
            return None
        return SourceLoc(os.path.relpath(frame.f_code.co_filename), frame.f_lineno)
    finally:
        del frame


@dataclass
class ProgramBuilder:
    """An ordered list of instructions and labels, with symbolic references."""

    items: list[Instruction | Label] = field(default_factory=list)

    def emit(self, *insns: Instruction) -> ProgramBuilder:
        self.items.extend(insns)
        return self

    def label(self, name: str) -> ProgramBuilder:
        self.items.append(Label(name))
        return self

    def extend(self, items: Iterable[Instruction | Label]) -> ProgramBuilder:
        self.items.extend(items)
        return self

    def resolve(self, helpers: dict[str, int] | None = None) -> list[Instruction]:
        return resolve(self.items, helpers)


def _helper_ids() -> dict[str, int]:
    try:
        from .helpers import helper_ids  # generated from the kernel uapi
    except ImportError:  # pragma: no cover - helpers table not built yet
        return {}
    return helper_ids()  # both "map_lookup_elem" and "bpf_map_lookup_elem"


def resolve(items: Sequence[Instruction | Label], helpers: dict[str, int] | None = None) -> list[Instruction]:
    """Replace labels by pc-relative offsets and helper names by ids.

    Jump targets are ``Label`` refs on jump forms; a ``Label`` ref on
    ``call_local`` / ``lddw_func`` names a function entry. A resolved ref becomes
    a ``ResolvedLabel`` (name kept, never re-resolved), so ``resolve`` is
    idempotent. ``MapRef`` refs are left in place for the loader.
    """
    positions: dict[str, int] = {}
    pc = 0
    for item in items:
        if isinstance(item, ResolvedLabel):
            raise AssemblyError(f"ResolvedLabel({item.name!r}) is a resolved reference, not a label definition")
        if isinstance(item, Label):
            if item.name in positions:
                raise AssemblyError(f"duplicate label {item.name!r}")
            positions[item.name] = pc
        else:
            pc += item.slots
    helper_ids = helpers if helpers is not None else _helper_ids()
    out: list[Instruction] = []
    pc = 0
    for item in items:
        if isinstance(item, Label):
            continue
        insn = item
        ref = insn.ref
        if isinstance(ref, Label) and not isinstance(ref, ResolvedLabel):
            if ref.name not in positions:
                raise AssemblyError(f"undefined label {ref.name!r}", insn.source)
            delta = positions[ref.name] - (pc + 1)
            form = insn.form
            if form.name == "lddw_func":
                insn = replace(insn, imm=delta & ((1 << 64) - 1))
            elif form.off == "jump16":
                if not -(1 << 15) <= delta < (1 << 15):
                    raise AssemblyError(f"jump to {ref.name!r} is {delta} slots away; "
                                        "out of 16-bit range (use gotol)", insn.source)
                insn = replace(insn, off=delta)
            elif form.imm == "jump32":
                insn = replace(insn, imm=delta)
            else:
                raise AssemblyError(f"{form.name} takes no label", insn.source)
            insn = replace(insn, ref=ResolvedLabel(ref.name))
        elif isinstance(ref, HelperRef):
            if ref.name not in helper_ids:
                raise AssemblyError(f"unknown helper {ref.name!r}", insn.source)
            insn = replace(insn, imm=helper_ids[ref.name])
        isa.validate(insn)
        out.append(insn)
        pc += insn.slots
    return out
