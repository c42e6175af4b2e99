"""func_info and line_info for a program: BTF FUNC types per subprogram, source lines per instruction.

Why: with ``func_info`` the verifier knows which subprograms are *global*
(verified once, on their own, whatever the number of call sites) and which
are static (verified again at every call site); with ``line_info`` its log
prints ``; <source line> @ file:line`` and ``bpftool prog dump xlated`` shows
the DSL source next to the instructions.  libbpf calls this data ".BTF.ext".

Subprogram entries are what the kernel finds too: targets of ``call_local``
(BPF-to-BPF calls) and of ``ld_imm64`` with ``BPF_PSEUDO_FUNC`` (callbacks).
"""

from __future__ import annotations

import linecache
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .btf import BTFBuilder, BTFSpec, Linkage
from .builder import Label
from .isa import CallKind, Class, Instruction, JmpOp, Pseudo, SourceLoc
from .syscall import ProgType

FUNC_INFO = struct.Struct("<II")  # struct bpf_func_info
LINE_INFO = struct.Struct("<IIII")  # struct bpf_line_info
MAX_LINE = (1 << 22) - 1
MAX_COL = (1 << 10) - 1

_CALL = Class.JMP | JmpOp.CALL
_LDDW = 0x18

# The context struct each program type's main function takes. For a global
# function's ctx argument the kernel only compares this name.
CTX_STRUCTS: dict[int, str] = {
    ProgType.XDP: "xdp_md",
    ProgType.SOCKET_FILTER: "__sk_buff",
    ProgType.SCHED_CLS: "__sk_buff",
    ProgType.SCHED_ACT: "__sk_buff",
    ProgType.CGROUP_SKB: "__sk_buff",
    ProgType.LWT_IN: "__sk_buff",
    ProgType.LWT_OUT: "__sk_buff",
    ProgType.LWT_XMIT: "__sk_buff",
    ProgType.SK_SKB: "__sk_buff",
    ProgType.SK_MSG: "sk_msg_md",
    ProgType.SOCK_OPS: "bpf_sock_ops",
    ProgType.CGROUP_SOCK: "bpf_sock",
    ProgType.CGROUP_SOCK_ADDR: "bpf_sock_addr",
    ProgType.FLOW_DISSECTOR: "__sk_buff",
}
_XDP_MD_FIELDS = ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex")

# Argument kinds of a subprogram signature: "ctx" or a scalar.
SCALARS: dict[str, tuple[int, bool]] = {
    "u8": (1, False), "u16": (2, False), "u32": (4, False), "u64": (8, False),
    "s8": (1, True), "s16": (2, True), "s32": (4, True), "s64": (8, True), "int": (4, True),
}


@dataclass(frozen=True)
class Func:
    """How a subprogram is declared: ``linkage`` "static" (verified per call site) or "global"
    (verified once, alone: its arguments are only what the signature says, its return an
    unknown scalar).  ``args`` are "ctx" (the program's context pointer) or scalar kinds
    ("u64", "u32", "s64", "int"...); ``ret`` a scalar kind.  ``name`` overrides the BTF name.
    """

    linkage: str = "static"
    args: tuple[str, ...] = ()
    ret: str = "int"
    name: str = ""
    arg_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.linkage not in ("static", "global"):
            raise ValueError(f"linkage must be 'static' or 'global', not {self.linkage!r}")
        if len(self.args) > 5:
            raise ValueError("a BPF function takes at most 5 arguments")
        for kind in self.args:
            if kind != "ctx" and kind not in SCALARS:
                raise ValueError(f"argument kind {kind!r}: use 'ctx' or one of {', '.join(SCALARS)}")
        if self.ret not in SCALARS:
            raise ValueError(f"return kind {self.ret!r}: use one of {', '.join(SCALARS)}")

    @classmethod
    def of(cls, params: Sequence[str], linkage: str = "static", *, ctx_params: Iterable[str] = ("pkt", "ctx"),
           scalar: str = "u64", ret: str = "int", name: str = "") -> Func:
        """From a Python parameter list: ``ctx_params`` take the context pointer, the rest ``scalar``."""
        ctx = set(ctx_params)
        return cls(linkage, tuple("ctx" if p in ctx else scalar for p in params), ret, name, tuple(params))


@dataclass(frozen=True)
class FuncEntry:
    """A function of a loaded program: where it starts (slot index) and how it was declared."""

    insn_off: int
    name: str
    linkage: str
    type_id: int


@dataclass
class DebugInfo:
    btf: BTFBuilder
    func_info: bytes
    line_info: bytes
    functions: list[FuncEntry] = field(default_factory=list)
    lines: list[tuple[int, SourceLoc]] = field(default_factory=list)


def subprog_entries(insns: Sequence[Instruction]) -> dict[int, str]:
    """Slot index -> label name ('' if none) of every BPF-to-BPF function entry (not main)."""
    entries: dict[int, str] = {}
    pc = 0
    for insn in insns:
        target = None
        if insn.opcode == _CALL and insn.src == CallKind.PSEUDO_CALL:
            target = pc + 1 + insn.imm
        elif insn.opcode == _LDDW and insn.src == Pseudo.FUNC:
            low = insn.imm & 0xFFFFFFFF
            target = pc + 1 + (low - (1 << 32) if low >> 31 else low)
        if target is not None:
            name = insn.ref.name if isinstance(insn.ref, Label) else ""
            if target not in entries or not entries[target]:
                entries[target] = name
        pc += insn.slots
    entries.pop(0, None)
    return entries


def c_identifier(label: str) -> str:
    """A BTF-valid function name from a label ("fn:csum" -> "csum")."""
    base = label.rsplit(":", 1)[-1]
    name = re.sub(r"\W", "_", base, flags=re.ASCII)
    if not name or name[0].isdigit():
        name = "f_" + name
    return name


class _Types:
    """The few C types programs need, built on demand."""

    def __init__(self, b: BTFBuilder, prog_type: ProgType | int):
        self.b, self.prog_type = b, prog_type
        self._ctx: int | None = None

    def scalar(self, kind: str) -> int:
        size, signed = SCALARS[kind]
        return self.b.scalar(size, signed=signed)

    def ctx_ptr(self) -> int:
        if self._ctx is None:
            name = CTX_STRUCTS.get(int(self.prog_type))
            if name is None:
                self._ctx = self.b.ptr(0)  # void *
            elif name == "xdp_md":
                u32 = self.b.typedef("__u32", self.scalar("u32"))
                self._ctx = self.b.ptr(self.b.struct(name, 24, [(f, u32, 32 * i)
                                                                for i, f in enumerate(_XDP_MD_FIELDS)]))
            else:  # the kernel compares only the name of a ctx struct
                self._ctx = self.b.ptr(self.b.struct(name, 0))
        return self._ctx

    def func(self, name: str, sig: Func) -> int:
        params = []
        for i, kind in enumerate(sig.args):
            pname = sig.arg_names[i] if i < len(sig.arg_names) else ("ctx" if kind == "ctx" else f"a{i + 1}")
            params.append((pname, self.ctx_ptr() if kind == "ctx" else self.scalar(kind)))
        proto = self.b.func_proto(self.scalar(sig.ret), params)
        return self.b.func(name, proto, Linkage.GLOBAL if sig.linkage == "global" else Linkage.STATIC)


def _lookup(funcs: Mapping[object, Func], keys: Iterable[object]) -> Func | None:
    for key in keys:
        if key in funcs:
            return funcs[key]
    return None


def _text(loc: SourceLoc) -> str:
    text = loc.text or linecache.getline(loc.file, loc.line)
    return text.strip()


def build(insns: Sequence[Instruction], *, prog_type: ProgType | int = ProgType.XDP, name: str = "",
          funcs: Mapping[object, Func] | Iterable[Func] | None = None,
          func_names: Mapping[object, str] | None = None, lines: bool = True) -> DebugInfo:
    """BTF + func_info + line_info for resolved instructions.

    ``funcs`` maps a subprogram (by BTF name, label name or slot index) to its
    ``Func``; it may also be a list of Func with names.  ``func_names`` names
    entries (label name or slot index -> name).  Unnamed entries are called
    after their label ("fn:csum" -> "csum") or ``sub_<slot>``.  The main
    function is ``int <name>(ctx)`` with global linkage, as clang emits it.
    """
    if funcs is not None and not isinstance(funcs, Mapping):
        funcs = {f.name: f for f in funcs}
    funcs = dict(funcs or {})
    func_names = dict(func_names or {})
    b = BTFBuilder()
    types = _Types(b, prog_type)
    main_name = c_identifier(name) if name else "main"
    main_sig = funcs.get(0) or funcs.get(main_name) or Func("global", ("ctx",))
    functions = [FuncEntry(0, main_name, main_sig.linkage, types.func(main_name, main_sig))]
    used = {main_name}
    for off, label in sorted(subprog_entries(insns).items()):
        explicit = func_names.get(off) or (func_names.get(label) if label else None)
        fname = explicit or (c_identifier(label) if label else f"sub_{off}")
        sig = _lookup(funcs, [off, label, fname] if label else [off, fname]) or Func()
        fname = sig.name or fname
        unique, n = fname, 2
        while unique in used:
            unique, n = f"{fname}_{n}", n + 1
        used.add(unique)
        functions.append(FuncEntry(off, unique, sig.linkage, types.func(unique, sig)))
    unknown = set(funcs) - {0, main_name} - {f.insn_off for f in functions} - {f.name for f in functions} \
        - set(subprog_entries(insns).values())
    if unknown:
        raise ValueError(f"funcs name no subprogram of this program: {', '.join(map(str, sorted(map(str, unknown))))}"
                         f" (functions: {', '.join(f.name for f in functions)})")
    func_info = b"".join(FUNC_INFO.pack(f.insn_off, f.type_id) for f in functions)
    line_recs = _line_records(insns, {f.insn_off for f in functions}) if lines else []
    line_info = b"".join(
        LINE_INFO.pack(off, b.string(loc.file), b.string(_text(loc)),
                       (min(loc.line, MAX_LINE) << 10) | min(max(loc.column, 0), MAX_COL))
        for off, loc in line_recs)
    return DebugInfo(b, func_info, line_info, functions, line_recs)


def _line_records(insns: Sequence[Instruction], starts: set[int]) -> list[tuple[int, SourceLoc]]:
    """(slot, source) where the source changes, plus one at every function start (the kernel
    requires it); a function start without a source borrows the function's first one."""
    if not any(i.source for i in insns):
        return []
    slots, pc = [], 0
    for insn in insns:
        slots.append(pc)
        pc += insn.slots
    out: list[tuple[int, SourceLoc]] = []
    prev: SourceLoc | None = None
    for idx, insn in enumerate(insns):
        off, loc = slots[idx], insn.source
        if off in starts and loc is None:
            loc = _first_source(insns, slots, idx, starts) or SourceLoc("?", 0)
        if loc is not None and (off in starts or loc != prev):
            out.append((off, loc))
            prev = loc
    return out


def _first_source(insns: Sequence[Instruction], slots: list[int], idx: int, starts: set[int]) -> SourceLoc | None:
    """The first SourceLoc of the function starting at insns[idx] (stopping at the next function)."""
    for j in range(idx, len(insns)):
        if j > idx and slots[j] in starts:
            return None
        if insns[j].source is not None:
            return insns[j].source
    return None


# --------------------------------------------------------------------------
# Reading a loaded program's debug info back from the kernel.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRecord:
    insn_off: int
    file: str
    line: int
    column: int
    text: str


def decode_line_info(raw: bytes, spec: BTFSpec, rec_size: int = LINE_INFO.size) -> list[LineRecord]:
    out = []
    for pos in range(0, len(raw) - rec_size + 1, rec_size):
        off, file_off, line_off, line_col = LINE_INFO.unpack_from(raw, pos)
        out.append(LineRecord(off, spec.string(file_off), line_col >> 10, line_col & MAX_COL, spec.string(line_off)))
    return out


def xlated_annotations(prog_fd: int, *, linum: bool = False) -> dict[int, list[str]]:
    """Lines ``bpftool prog dump xlated`` prints before xlated slot N of a program with BTF:
    the function's signature (``int work(unsigned long long x):``) at each function start and
    ``; <source line>`` (with ``linum``: `` [file:F line_num:L line_col:C]``) where line info starts."""
    out: dict[int, list[str]] = {}
    funcs, lines, spec = _prog_debug_info(prog_fd)
    for off, type_id in funcs:
        out.setdefault(off, []).append(spec.func_signature(type_id) + ":")
    for rec in lines:
        text = "; " + rec.text.lstrip()
        if linum:
            text += f" [file:{rec.file} line_num:{rec.line} line_col:{rec.column}]"
        out.setdefault(rec.insn_off, []).append(text)
    return out


def prog_debug_info(prog_fd: int) -> tuple[list[tuple[int, str]], list[LineRecord]]:
    """A loaded program's functions (xlated slot, name) and line records (offsets into the
    xlated image), read back with BPF_OBJ_GET_INFO_BY_FD and the program's BTF object."""
    funcs, lines, spec = _prog_debug_info(prog_fd)
    return [(off, spec.type(type_id).name) for off, type_id in funcs], lines


def _prog_debug_info(prog_fd: int) -> tuple[list[tuple[int, int]], list[LineRecord], BTFSpec]:
    import ctypes

    from . import syscall

    first = syscall.obj_get_info_by_fd(prog_fd, syscall.ProgInfoStruct())
    if not first.btf_id:
        return [], [], BTFSpec(BTFBuilder().encode())
    second = syscall.ProgInfoStruct()
    fbuf = (ctypes.c_char * max(first.nr_func_info * first.func_info_rec_size, 1))()
    lbuf = (ctypes.c_char * max(first.nr_line_info * first.line_info_rec_size, 1))()
    second.nr_func_info, second.func_info_rec_size = first.nr_func_info, first.func_info_rec_size
    second.func_info = ctypes.addressof(fbuf)
    second.nr_line_info, second.line_info_rec_size = first.nr_line_info, first.line_info_rec_size
    second.line_info = ctypes.addressof(lbuf)
    syscall.obj_get_info_by_fd(prog_fd, second)
    spec = BTFSpec.from_kernel(first.btf_id)
    frec = second.func_info_rec_size or FUNC_INFO.size
    fraw = fbuf.raw[:second.nr_func_info * frec]
    funcs = [FUNC_INFO.unpack_from(fraw, pos) for pos in range(0, len(fraw) - frec + 1, frec)]
    lines = decode_line_info(lbuf.raw[:second.nr_line_info * second.line_info_rec_size], spec,
                             second.line_info_rec_size or LINE_INFO.size)
    return funcs, lines, spec
