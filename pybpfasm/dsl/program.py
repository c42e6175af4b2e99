"""``@xdp`` programs: trace once, allocate registers, clean up, resolve, load.

Pipeline: trace the function (and every ``@subprog`` it calls) into IR over
virtual registers -> per function: code sinking (``sink``), dead-code elimination,
register allocation with coalescing and spilling -> jump threading / dead-block
removal, early-exit blocks laid out last, spill stores sunk past them -> one
list of ``isa.Instruction`` and ``Label`` items (main first, then
subprograms) -> ``builder.resolve`` (labels and helper names) -> the loader
patches map fds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..builder import Label, MapRef, resolve
from ..isa import FORMS_BY_NAME, Instruction, SourceLoc, make
from .core import Builder, DslError, Function, building, def_loc, error
from .ir import R1, Item, Op
from .opt import optimize
from .packet import Packet
from .regalloc import allocate
from .sink import sink


@dataclass
class Compiled:
    items: list[Instruction | Label]
    maps: list[Any] = field(default_factory=list)
    # (name, params [(name, "ctx"|"u64")], global?, entry label or None for the main function)
    functions: list[tuple[str, list[tuple[str, str]], bool, Label | None]] = field(default_factory=list)

    @property
    def has_global_functions(self) -> bool:
        """Any ``@global_func`` subprogram (the main function is always global and does not count)."""
        return any(g for _, _, g, label in self.functions if label is not None)

    @property
    def instructions(self) -> list[Instruction]:
        """Resolved instructions (labels and helper names replaced; map refs left for the loader)."""
        return resolve(self.items)

    @property
    def funcs(self) -> dict[str, Any]:
        """``Program.load(funcs=...)``: every subprogram's BTF declaration (``btfext.Func``) by entry label.

        ``@global_func`` ones are global (verified once); a ``pkt`` parameter is the context, others u64.
        """
        from ..btfext import Func
        return {label.name: Func.of([p for p, _ in params], "global" if glob else "static", name=name)
                for name, params, glob, label in self.functions if label is not None}

    def load_options(self, kw: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keywords for ``Program.load(compiled.items, **compiled.load_options())``: BTF with func_info
        and DSL line info on (``btf=True``) unless ``kw`` says otherwise; ``funcs`` merged with the DSL's."""
        opts = dict(kw or {})
        opts.setdefault("btf", True)
        funcs = self.funcs
        if not opts["btf"] and self.has_global_functions:
            raise DslError("a program with @global_func functions needs BTF: drop btf=False", None)
        if opts["btf"]:
            opts["funcs"] = {**funcs, **(opts.get("funcs") or {})}
        return opts


def _lower(fn: Function) -> list[Instruction | Label]:
    items = allocate(sink(fn.items), fn.vreg, lambda: fn.alloc(8, 8), fn.loops)
    items = optimize(items, loops=fn.loops)
    out: list[Instruction | Label] = []
    for it in items:
        if isinstance(it, Label):
            out.append(it)
            continue
        out.append(_to_insn(it))
    return out


def _to_insn(op: Op) -> Instruction:
    form = FORMS_BY_NAME[op.form]
    kw: dict[str, Any] = {"dst": op.dst, "src": op.src, "ref": op.ref, "source": op.source}
    if form.off in ("mem",) or (isinstance(form.off, str) and form.off == "btf_fd"):
        kw["off"] = op.off
    if form.imm not in ("zero",) and not isinstance(form.imm, int):
        kw["imm"] = op.imm
    if form.src != "reg":
        kw.pop("src")
    if form.dst != "reg":
        kw.pop("dst")
    return make(op.form, **kw)


class XdpProgram:
    """An XDP program written as a Python function taking the packet."""

    prog_type = "XDP"

    def __init__(self, fn: Callable[..., Any], name: str | None = None, license: str = "GPL"):  # noqa: A002
        self.fn = fn
        self.name = (name or fn.__name__)[:15]
        self.license = license
        self._compiled: Compiled | None = None

    def __repr__(self) -> str:
        return f"<XdpProgram {self.name}>"

    def compile(self) -> Compiled:
        """Trace and compile (cached)."""
        if self._compiled is None:
            self._compiled = self._build()
        return self._compiled

    @property
    def items(self) -> list[Instruction | Label]:
        return self.compile().items

    @property
    def instructions(self) -> list[Instruction]:
        return self.compile().instructions

    def _build(self) -> Compiled:
        b = Builder(self)
        b.fallback_loc = _def_loc(self.fn)  # type: ignore[attr-defined]
        b.pending_subprogs = []  # type: ignore[attr-defined]
        with building(b):
            ctx = b.vreg()
            b.emit("mov64_x", ctx, R1, loc=_def_loc(self.fn))
            b.packet = Packet(ctx)
            ret = self.fn(b.packet)
            b.flush_chain()
            if b.loops:
                raise error("a Range loop was left with Python break: use Break()", b.loops[-1].loc)
            if not b.terminated:
                if ret is None:
                    raise DslError(f"program {self.fn.__name__} can reach its end without Return(action)",
                                   _def_loc(self.fn))
                from .core import Return
                Return(ret)
            functions = [b.fn]
            done = 0
            while done < len(b.pending_subprogs):  # type: ignore[attr-defined]
                sp = b.pending_subprogs[done]  # type: ignore[attr-defined]
                done += 1
                f = sp.trace(b)
                f.entry = b.subprogs[sp]  # type: ignore[attr-defined]
                functions.append(f)
        items: list[Instruction | Label] = []
        for f in functions:
            if not f.is_main:
                items.append(f.entry)  # type: ignore[attr-defined]
            items.extend(_lower(f))
        funcs: list[tuple[str, list[tuple[str, str]], bool, Label | None]] = [
            (self.name, [("ctx", "ctx")], True, None)]
        for sp, label in b.subprogs.items():
            funcs.append((sp.name, [(p, "ctx" if p == "pkt" else "u64") for p in sp.params], sp.is_global, label))
        maps: list[Any] = []
        for it in items:
            if isinstance(it, Instruction) and isinstance(it.ref, MapRef) and all(it.ref.map is not m for m in maps):
                maps.append(it.ref.map)
        return Compiled(items, maps, funcs)

    # -- loading
    def load(self, **kw: Any) -> Any:
        """Load into the kernel: a ``pybpfasm.program.Program`` (VerifierError names DSL lines).

        Goes through ``Program.load`` with BTF on (``btf=True``): func_info declares
        every subprogram (``@global_func`` ones as global, verified once) and line_info
        carries each instruction's DSL line, so the verifier log, ``pybpfasm dump
        --xlated`` and bpftool show the DSL source.  ``btf=False`` loads bare bytecode
        (only possible without global functions).  Other keywords go to ``Program.load``.
        """
        from ..program import Program
        kw.setdefault("name", self.name)
        kw.setdefault("license", self.license)
        kw.setdefault("prog_type", self.prog_type)
        return Program.load(self.items, **self.compile().load_options(kw))


def _def_loc(fn: Any) -> SourceLoc:
    """The ``def`` line of a DSL function (as ``user_loc`` names files: relative, with its text)."""
    return def_loc(fn)
def xdp(fn: Callable[..., Any] | None = None, *, name: str | None = None, license: str = "GPL") -> Any:  # noqa: A002
    """Decorator: ``@xdp`` or ``@xdp(name="fwd")`` turns ``def prog(pkt): ...`` into an XdpProgram."""
    if fn is None:
        return lambda f: XdpProgram(f, name, license)
    return XdpProgram(fn, name, license)


_ = (Item,)
