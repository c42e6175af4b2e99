"""``@xdp`` programs: trace once, allocate registers, clean up, resolve, load.

Pipeline: trace the function (and every ``@subprog`` it calls) into IR over
virtual registers -> per function: dead-code elimination, register allocation
with coalescing and spilling -> jump threading / dead-block removal -> one
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
from .core import Builder, DslError, Function, building, error
from .ir import R1, Item, Op
from .opt import optimize
from .packet import Packet
from .regalloc import allocate


@dataclass
class Compiled:
    items: list[Instruction | Label]
    maps: list[Any] = field(default_factory=list)
    # (name, params [(name, "ctx"|"u64")], global?, entry label or None for the main function)
    functions: list[tuple[str, list[tuple[str, str]], bool, Label | None]] = field(default_factory=list)

    @property
    def has_global_functions(self) -> bool:
        return any(g for _, _, g, _ in self.functions)

    @property
    def instructions(self) -> list[Instruction]:
        """Resolved instructions (labels and helper names replaced; map refs left for the loader)."""
        return resolve(self.items)


def _lower(fn: Function) -> list[Instruction | Label]:
    items = allocate(fn.items, fn.vreg, lambda: fn.alloc(8, 8), fn.loops)
    items = optimize(items)
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
        """Load into the kernel: a ``pybpfasm.program.Program`` (VerifierError names DSL lines)."""
        from ..program import Program
        kw.setdefault("name", self.name)
        kw.setdefault("license", self.license)
        if self.compile().has_global_functions:
            return self._load_with_btf(**kw)
        return Program.load(self.items, prog_type=self.prog_type, **kw)

    def _load_with_btf(self, name: str, license: str, log_level: int = 0, log_size: int = 0,  # noqa: A002
                       **_: Any) -> Any:
        """Global functions need BTF FUNC records and func_info: build both and load directly."""
        from ..program import Program, VerifierError, prepare
        from ..syscall import BPFError, ProgType, btf_load, prog_load
        from .btf import LINKAGE_GLOBAL, LINKAGE_STATIC, FuncDecl, build
        compiled = self.compile()
        final, used = prepare(compiled.items)
        entries: dict[str, int] = {}
        slot = 0
        for it in compiled.items:
            if isinstance(it, Label):
                entries[it.name] = slot
            else:
                slot += it.slots
        decls = [FuncDecl(fname, params, LINKAGE_GLOBAL if glob else LINKAGE_STATIC,
                          0 if label is None else entries[label.name])
                 for fname, params, glob, label in compiled.functions]
        blob, func_info = build(decls)
        btf = btf_load(blob, log_level=1, log_size=1 << 16)
        from ..isa import encode_program
        size = log_size or (1 << 20)
        try:
            res = prog_load(ProgType.XDP, encode_program(final), license, name=name, log_level=log_level or 1,
                            log_size=size, prog_btf_fd=int(btf.fd), func_info=func_info, func_info_rec_size=8)
        except BPFError as exc:
            raise VerifierError(name, getattr(exc, "log", "") or str(exc), exc.errno, final) from None
        finally:
            btf.fd.close()
        return Program(res.fd, name=name, prog_type=ProgType.XDP, insns=final, maps=used, log=res.log)


def _def_loc(fn: Any) -> SourceLoc:
    code = fn.__code__
    return SourceLoc(code.co_filename, code.co_firstlineno)


def xdp(fn: Callable[..., Any] | None = None, *, name: str | None = None, license: str = "GPL") -> Any:  # noqa: A002
    """Decorator: ``@xdp`` or ``@xdp(name="fwd")`` turns ``def prog(pkt): ...`` into an XdpProgram."""
    if fn is None:
        return lambda f: XdpProgram(f, name, license)
    return XdpProgram(fn, name, license)


_ = (Item,)
