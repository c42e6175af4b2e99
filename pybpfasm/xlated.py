"""``bpftool prog dump xlated`` / ``dump jited`` output, byte for byte, without bpftool.

The xlated image is what the verifier left after rewriting (map fds became map
ids, helper ids became offsets from ``__bpf_call_base``, BPF-to-BPF calls carry
the subprogram index).  bpftool prints it with the kernel's ``disasm.c`` and
three callbacks that name things; this module reproduces all of it:

* instructions: ``pybpfasm.textfmt`` kernel syntax (``disasm.c``), except where
  the ``disasm.c`` compiled into the bpftool we match (Debian's bpftool 7.1.0,
  kernel 6.1 sources) spells newer instructions differently or not at all
  (``sdiv`` prints as ``/=``, ``bswap`` as ``BUG_alu64_d7`` ...): those, and
  anything our ISA table refuses (kernel-internal encodings), go through
  ``legacy_insn_text``, a rendering of that older ``print_bpf_insn``.
* helper calls: ``__bpf_call_base + imm`` looked up in ``/proc/kallsyms`` the
  way bpftool does it, including its sort (``qsort`` with a comparator that
  truncates address differences to ``int``) and glibc's ``bsearch`` probing, so
  aliases at one address resolve to the same name.
* BPF-to-BPF calls: ``pc+N#bpf_prog_<tag>_<func>`` through the jited ksyms.
* ``ld_imm64``: ``map[id:N]``, ``map[id:N][0]+off``, ``subprog[+N]``.

Programs loaded with BTF (func_info / line_info) get bpftool's annotation lines
(function signatures, ``; source line``) from ``pybpfasm.btfext``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import isa, textfmt

# __BPF_FUNC_MAX_ID of the bpftool whose output we reproduce (kernel 6.1 uapi: last helper 209).
LEGACY_FUNC_MAX_ID = 210

# Forms that the older disasm.c prints differently from today's (textfmt follows today's).
LEGACY_DIVERGENT_FORMS = frozenset({
    "sdiv64_x", "sdiv64_k", "smod64_x", "smod64_k", "sdiv32_x", "sdiv32_k", "smod32_x", "smod32_k",
    "movsx64_8", "movsx64_16", "movsx64_32", "movsx32_8", "movsx32_16",
    "bswap16", "bswap32", "bswap64", "ldxsb", "ldxsh", "ldxsw", "gotol", "may_goto",
})
# Call targets and subprog constants carry kernel-rewritten fields (off / imm) after JIT:
# always rendered from the raw encoding.
REWRITTEN_FORMS = frozenset({"call_local", "lddw_func"})


# --------------------------------------------------------------------------
# Kernel symbols, resolved exactly as bpftool's kernel_syms_load / _search
# --------------------------------------------------------------------------

_KALLSYMS_LINE = re.compile(r"\s*(?:0[xX])?([0-9a-fA-F]+)\s*(\S|\s)\s*(\S+)")
_FGETS_SIZE = 256  # bpftool reads /proc/kallsyms with fgets(buff, 256)
_LONG_LINE = re.compile(r"^[^\n]{255,}", re.M)
_SIMPLE_LINE = re.compile(r"^[ \t]*(?:0[xX])?([0-9a-fA-F]+)[ \t]+\S[ \t]+(\S+)", re.M)


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _cmp(a: int, b: int) -> int:
    """bpftool's kernel_syms_cmp: ``(int)(a - b)`` on unsigned longs."""
    return _int32((a - b) & 0xFFFFFFFFFFFFFFFF)


def _fgets_chunks(text: str) -> Iterable[str]:
    for line in text.splitlines(keepends=True):
        while len(line) > _FGETS_SIZE - 1:
            yield line[:_FGETS_SIZE - 1]
            line = line[_FGETS_SIZE - 1:]
        if line:
            yield line


def _parse_lines(text: str) -> Iterable[tuple[int, str]]:
    """(address, name) of each line as ``sscanf(line, "%p %*c %s")`` reads fgets' pieces of it."""
    if not _LONG_LINE.search(text):  # the usual case: one regex pass in C
        yield from ((int(addr, 16), name) for addr, name in _SIMPLE_LINE.findall(text))
        return
    for line in text.splitlines(keepends=True):
        if len(line) < _FGETS_SIZE:  # the common case, fast
            fields = line.split(None, 3)
            if len(fields) >= 3:
                try:
                    yield int(fields[0], 16) & 0xFFFFFFFFFFFFFFFF, fields[2]
                    continue
                except ValueError:
                    pass
        for chunk in _fgets_chunks(line):
            m = _KALLSYMS_LINE.match(chunk)
            if m:
                yield int(m.group(1), 16) & 0xFFFFFFFFFFFFFFFF, m.group(3)


def _glibc_msort(items: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """glibc 2.36 qsort (a stable top-down merge sort), for comparators that are not a total order."""
    if len(items) <= 1:
        return items
    half = len(items) // 2
    left, right = _glibc_msort(items[:half]), _glibc_msort(items[half:])
    out: list[tuple[int, str]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if _cmp(left[i][0], right[j][0]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


@dataclass
class KernelSymbols:
    """``/proc/kallsyms`` as bpftool sees it: sorted symbols and ``__bpf_call_base``."""

    addresses: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    call_base: int = 0

    @classmethod
    def parse(cls, text: str) -> KernelSymbols:
        pairs = list(_parse_lines(text))
        call_base = 0
        for address, name in pairs:
            if name == "__bpf_call_base":
                call_base = address
                if not address:  # kernel.kptr_restrict hides addresses: bpftool drops every symbol
                    return cls([], [], 0)
                break
        syms = [p for p in pairs if p[0]]
        if not syms:
            return cls([], [], call_base)
        low = [a & 0xFFFFFFFF for a, _ in syms]
        keys = [k - 0x100000000 if k & 0x80000000 else k for k in low]
        if max(keys) - min(keys) < (1 << 31):
            # the truncating comparator is then a plain order of the signed low 32 bits, and a
            # stable sort by that key is what glibc's stable merge sort produces
            order = sorted(range(len(syms)), key=keys.__getitem__)
            syms = [syms[i] for i in order]
        else:
            syms = _glibc_msort(syms)
        return cls([a for a, _ in syms], [n for _, n in syms], call_base)

    @classmethod
    def load(cls, path: str = "/proc/kallsyms") -> KernelSymbols:
        try:
            with open(path, errors="replace") as f:
                return cls.parse(f.read())
        except OSError:
            return cls()

    def search(self, address: int) -> str | None:
        """glibc bsearch with bpftool's comparator: the same alias bpftool would print."""
        lo, hi = 0, len(self.addresses)
        address &= 0xFFFFFFFFFFFFFFFF
        while lo < hi:
            idx = (lo + hi) // 2
            c = _cmp(address, self.addresses[idx])
            if c < 0:
                hi = idx
            elif c > 0:
                lo = idx + 1
            else:
                return self.names[idx]
        return None


# --------------------------------------------------------------------------
# The callbacks of xlated_dumper.c (print_call / print_imm)
# --------------------------------------------------------------------------


@dataclass
class RawInsn:
    """One 8-byte slot as the C code sees ``struct bpf_insn``; ``imm2`` is the next slot's imm."""

    code: int
    dst: int
    src: int
    off: int
    imm: int
    imm2: int = 0

    @classmethod
    def at(cls, data: bytes, slot: int) -> RawInsn:
        code, regs, off, imm = struct.unpack_from("<BBhi", data, slot * 8)
        imm2 = struct.unpack_from("<i", data, slot * 8 + 12)[0] if len(data) >= slot * 8 + 16 else 0
        return cls(code, regs & 0x0F, regs >> 4, off, imm, imm2)


@dataclass
class XlatedNamer:
    """Names for call targets and 64-bit constants, as bpftool's dump_data callbacks make them."""

    ksyms: KernelSymbols
    jited_ksyms: Sequence[int] = ()

    def call_name(self, raw: RawInsn) -> str:
        address = (self.ksyms.call_base + raw.imm) & 0xFFFFFFFFFFFFFFFF
        if raw.src == isa.CallKind.PSEUDO_CALL and (raw.imm & 0xFFFFFFFF) < len(self.jited_ksyms):
            address = self.jited_ksyms[raw.imm & 0xFFFFFFFF]
        sym = self.ksyms.search(address)
        if raw.src == isa.CallKind.PSEUDO_CALL:
            if not self.jited_ksyms:  # interpreted program: no addresses
                return f"{raw.off:+d}"
            return f"{raw.off:+d}#{sym}" if sym else f"{raw.off:+d}#0x{address:x}"
        return sym if sym else f"0x{address:x}"

    def imm_text(self, raw: RawInsn, full_imm: int) -> str:
        if raw.src == isa.Pseudo.MAP_FD:
            return f"map[id:{raw.imm & 0xFFFFFFFF}]"
        if raw.src == isa.Pseudo.MAP_VALUE:
            return f"map[id:{raw.imm & 0xFFFFFFFF}][0]+{raw.imm2 & 0xFFFFFFFF}"
        if raw.src == isa.Pseudo.MAP_IDX_VALUE:
            return f"map[idx:{raw.imm & 0xFFFFFFFF}]+{raw.imm2 & 0xFFFFFFFF}"
        if raw.src == isa.Pseudo.FUNC:
            return f"subprog[{raw.imm:+d}]"
        return f"0x{full_imm & 0xFFFFFFFFFFFFFFFF:x}"


# --------------------------------------------------------------------------
# The older print_bpf_insn, for what textfmt spells the modern way
# --------------------------------------------------------------------------

_LDST = {0x00: "u32", 0x08: "u16", 0x10: "u8", 0x18: "u64"}
_ALU_OPS = {0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=", 0x60: "<<=", 0x70: ">>=",
            0x80: "neg", 0x90: "%=", 0xA0: "^=", 0xB0: "=", 0xC0: "s>>=", 0xD0: "endian"}
_JMP_OPS = {0x00: "jmp", 0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>", 0x70: "s>=",
            0x80: "call", 0x90: "exit", 0xA0: "<", 0xB0: "<=", 0xC0: "s<", 0xD0: "s<="}
_ATOMIC_OPS = {0x00: "add", 0x50: "and", 0x40: "or", 0xA0: "xor"}
_CLASSES = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")
_NULL = "(null)"  # glibc's printf("%s", NULL)
BPF_FETCH, BPF_XCHG, BPF_CMPXCHG = 0x01, 0xE1, 0xF1


def legacy_insn_text(raw: RawInsn, namer: XlatedNamer) -> str:
    """One line (without newline) of print_bpf_insn as in kernel 6.1's disasm.c, allow_ptr_leaks on."""
    code, cls, op = raw.code, raw.code & 0x07, raw.code & 0xF0
    size, mode, is_x = raw.code & 0x18, raw.code & 0xE0, raw.code & 0x08
    head = f"({code:02x})"
    if cls in (isa.Class.ALU, isa.Class.ALU64):
        w = "w" if cls == isa.Class.ALU else "r"
        if op == isa.AluOp.END:
            if cls == isa.Class.ALU64:
                return f"BUG_alu64_{code:02x}"
            return f"{head} r{raw.dst} = {'be' if is_x else 'le'}{raw.imm} r{raw.dst}"
        if op == isa.AluOp.NEG:
            return f"{head} {w}{raw.dst} = -{w}{raw.dst}"
        if is_x:
            return f"{head} {w}{raw.dst} {_ALU_OPS.get(op, _NULL)} {w}{raw.src}"
        return f"{head} {w}{raw.dst} {_ALU_OPS.get(op, _NULL)} {raw.imm}"
    if cls == isa.Class.STX:
        mem = f"({_LDST[size]} *)(r{raw.dst} {raw.off:+d})"
        if mode == isa.Mode.MEM:
            return f"{head} *{mem} = r{raw.src}"
        if mode == isa.Mode.ATOMIC:
            imm = raw.imm
            wide = "64" if size == isa.Size.DW else ""
            if imm in (0x00, 0x50, 0x40, 0xA0):
                return f"{head} lock *{mem} {_ALU_OPS[imm & 0xF0]} r{raw.src}"
            if imm in (0x01, 0x51, 0x41, 0xA1):
                return f"{head} r{raw.src} = atomic{wide}_fetch_{_ATOMIC_OPS[imm & 0xF0]}({mem}, r{raw.src})"
            if imm == BPF_CMPXCHG:
                return f"{head} r0 = atomic{wide}_cmpxchg({mem}, r0, r{raw.src})"
            if imm == BPF_XCHG:
                return f"{head} r{raw.src} = atomic{wide}_xchg({mem}, r{raw.src})"
        return f"BUG_{code:02x}"
    if cls == isa.Class.ST:
        if mode == isa.Mode.MEM:
            return f"{head} *({_LDST[size]} *)(r{raw.dst} {raw.off:+d}) = {raw.imm}"
        if mode == 0xC0:  # BPF_NOSPEC, kernel-internal
            return f"{head} nospec"
        return f"BUG_st_{code:02x}"
    if cls == isa.Class.LDX:
        if mode != isa.Mode.MEM:
            return f"BUG_ldx_{code:02x}"
        return f"{head} r{raw.dst} = *({_LDST[size]} *)(r{raw.src} {raw.off:+d})"
    if cls == isa.Class.LD:
        if mode == isa.Mode.ABS:
            return f"{head} r0 = *({_LDST[size]} *)skb[{raw.imm}]"
        if mode == isa.Mode.IND:
            return f"{head} r0 = *({_LDST[size]} *)skb[r{raw.src} + {raw.imm}]"
        if mode == isa.Mode.IMM and size == isa.Size.DW:
            full = (raw.imm & 0xFFFFFFFF) | ((raw.imm2 & 0xFFFFFFFF) << 32)
            return f"{head} r{raw.dst} = {namer.imm_text(raw, full)}"
        return f"BUG_ld_{code:02x}"
    # JMP / JMP32
    w = "w" if cls == isa.Class.JMP32 else "r"
    if op == isa.JmpOp.CALL:
        if raw.src == isa.CallKind.PSEUDO_CALL:
            return f"{head} call pc{_func_name(raw, namer)}"
        return f"{head} call {_func_name(raw, namer)}#{raw.imm}"
    if code == isa.Class.JMP | isa.JmpOp.JA:
        return f"{head} goto pc{raw.off:+d}"
    if code == isa.Class.JMP | isa.JmpOp.EXIT:
        return f"{head} exit"
    if is_x:
        return f"{head} if {w}{raw.dst} {_JMP_OPS.get(op, _NULL)} {w}{raw.src} goto pc{raw.off:+d}"
    return f"{head} if {w}{raw.dst} {_JMP_OPS.get(op, _NULL)} 0x{raw.imm & 0xFFFFFFFF:x} goto pc{raw.off:+d}"


def _func_name(raw: RawInsn, namer: XlatedNamer) -> str:
    """__func_get_name: the helper table for small helper ids, else bpftool's print_call."""
    if raw.src == 0 and 0 <= raw.imm < LEGACY_FUNC_MAX_ID:
        from .helpers import by_id

        helper = by_id.get(raw.imm)
        if helper is not None:
            return helper.kernel_name
        if raw.imm == 0:
            return "bpf_unspec"  # func_id_str[BPF_FUNC_unspec]
    return namer.call_name(raw)


# --------------------------------------------------------------------------
# Dumping
# --------------------------------------------------------------------------


def _modern_callbacks(raw: RawInsn, namer: XlatedNamer) -> textfmt.KernelCallbacks:
    return textfmt.KernelCallbacks(imm=lambda _insn, full: namer.imm_text(raw, full),
                                   call=lambda _insn: _func_name(raw, namer), allow_ptr_leaks=True)


def insn_text(data: bytes, slot: int, namer: XlatedNamer, *, legacy: bool = False) -> str:
    """The bpftool text of the instruction at ``slot`` (without index and newline).

    By default newer instructions are spelled as today's ``disasm.c`` does (what a
    current bpftool prints); ``legacy`` spells them as bpftool built from kernel 6.1
    sources does (Debian 12's bpftool 7.1: ``bswap`` as ``BUG_alu64_d7`` ...), for
    diffing against that bpftool.
    """
    raw = RawInsn.at(data, slot)
    try:
        insn = isa.decode_one(data, slot * 8, slot)
    except isa.DecodeError:
        insn = None
    if insn is None or insn.form.name in REWRITTEN_FORMS:
        return legacy_insn_text(raw, namer)
    if legacy and (insn.form.name in LEGACY_DIVERGENT_FORMS or _helper_id_diverges(raw)):
        return legacy_insn_text(raw, namer)
    return textfmt.format_insn(insn, "kernel", callbacks=_modern_callbacks(raw, namer))


def _helper_id_diverges(raw: RawInsn) -> bool:
    """A helper call whose imm today's table names but the older table does not."""
    return (raw.code & 0xF7) == (isa.Class.JMP | isa.JmpOp.CALL) and raw.src == 0 and raw.imm >= LEGACY_FUNC_MAX_ID


def _hex_bytes(data: bytes) -> str:
    """bpftool's fprint_hex(..., " ") for up to 8 bytes."""
    return " ".join(f"{b:02x}" for b in data)


def xlated_lines(xlated: bytes, namer: XlatedNamer, *, opcodes: bool = False, legacy: bool = False,
                 annotations: dict[int, list[str]] | None = None) -> list[str]:
    """bpftool's dump_xlated_plain, one string per output line.

    ``annotations`` (from ``btfext.xlated_annotations``) are the BTF lines bpftool
    prints before a slot: function signatures and ``; source line``.
    """
    lines: list[str] = []
    count = len(xlated) // 8
    skip = False
    for slot in range(count):
        if skip:
            skip = False
            continue
        double = xlated[slot * 8] == 0x18
        if annotations:
            lines.extend(annotations.get(slot, ()))
        lines.append(f"{slot: 4d}: {insn_text(xlated, slot, namer, legacy=legacy)}")
        if opcodes:
            text = "       " + _hex_bytes(xlated[slot * 8:slot * 8 + 8])
            if double:
                text += " " + _hex_bytes(xlated[slot * 8 + 8:slot * 8 + 16])
            lines.append(text)
        skip = double
    return lines


def xlated_json(xlated: bytes, namer: XlatedNamer, *, opcodes: bool = False, legacy: bool = False) -> list[dict]:
    """bpftool's dump_xlated_json as Python objects."""
    out: list[dict] = []
    count = len(xlated) // 8
    skip = False
    for slot in range(count):
        if skip:
            skip = False
            continue
        double = xlated[slot * 8] == 0x18
        entry: dict = {"disasm": insn_text(xlated, slot, namer, legacy=legacy)}
        if opcodes:
            raw = xlated[slot * 8:slot * 8 + 8]
            imm = xlated[slot * 8 + 4:slot * 8 + (16 if double else 8)]
            entry["opcodes"] = {
                "code": f"0x{raw[0]:02x}", "src_reg": f"0x{raw[1] >> 4:x}", "dst_reg": f"0x{raw[1] & 0xF:x}",
                "off": [f"0x{b:02x}" for b in raw[2:4]], "imm": [f"0x{b:02x}" for b in imm],
            }
        out.append(entry)
        skip = double
    return out


def jited_lines(jited: bytes, func_lens: Sequence[int] = (), ksyms: Sequence[int] = (),
                symbols: KernelSymbols | None = None, width: int = 16) -> list[str]:
    """The JIT image as hex, one block per function (named through kallsyms when it knows them)."""
    lens = list(func_lens) or [len(jited)]
    lines: list[str] = []
    pos = 0
    for n, length in enumerate(lens):
        if len(lens) > 1 or ksyms:
            name = symbols.search(ksyms[n]) if symbols and n < len(ksyms) else None
            lines.append(f"{name or f'func #{n}'}:")
        chunk = jited[pos:pos + length]
        for start in range(0, len(chunk), width):
            piece = chunk[start:start + width]
            groups = [_hex_bytes(piece[i:i + 8]) for i in range(0, len(piece), 8)]
            lines.append(f"{start:4x}:\t" + "  ".join(groups))
        pos += length
        if n + 1 < len(lens):
            lines.append("")
    return lines


def namer_for(jited_ksyms: Sequence[int] = (), kallsyms_path: str | None = None) -> XlatedNamer:
    return XlatedNamer(KernelSymbols.load(kallsyms_path or "/proc/kallsyms"), list(jited_ksyms))


def dump_xlated(info: Any, *, opcodes: bool = False, symbols: KernelSymbols | None = None,
                legacy: bool = False) -> str:
    """The full ``bpftool prog dump xlated`` text of a ``syscall.ProgInfo`` (with arrays)."""
    xlated: bytes = info.xlated
    namer = XlatedNamer(symbols or KernelSymbols.load(), list(info.jited_ksyms))
    return "".join(line + "\n" for line in xlated_lines(xlated, namer, opcodes=opcodes, legacy=legacy))


def kallsyms_readable() -> bool:
    return os.access("/proc/kallsyms", os.R_OK)
