"""Text assemblers for LLVM syntax (also accepting the kernel's verifier / bpftool spelling)
and ubpf / bpf_conformance syntax.

The parsers are compiled from the templates of ``isa.FORMS``; nothing here lists opcodes.
Each template becomes (a) *skeletons*, the line with every digit run turned into ``9``,
hex numbers into ``0`` first, label references into ``L`` and blanks removed (``r1 += -5``
-> ``r9+=-9``), (b) a regular expression extracting the operands, and (c) a small
generated function turning the captured text into encoding fields.  Assembling computes the
skeletons of the whole input with a few C-speed passes, then each line costs one dict
lookup, one regex match and one call: that keeps 100,000 lines near ``llvm-mc``'s time.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from . import isa
from .builder import AssemblyError, HelperRef, Label
from .isa import Form, Instruction, SourceLoc
from .textfmt import PLACEHOLDER_RE, templates

__all__ = ["AssemblyError", "assemble", "assemble_bytes", "SYNTAXES"]

SYNTAXES = ("llvm", "ubpf")

_HEX_OR_DEC = r"(?:0[xX][0-9a-fA-F]+|\d+)"
_NUM = r"[+-]?" + _HEX_OR_DEC  # lines are matched with blanks removed
_IDENT = r"[A-Za-z_.$][\w.$]*"

# Whole-text passes computing skeletons: strip comments, label references -> "L", hex -> "0",
# every digit -> "9" (blanks dropped), runs of 9 -> "9".  "r1 += -5" becomes "r9+=-9".
_COMMENT_RE = re.compile(r"(?:#|//|;)[^\n]*")
_LABEL_REF_RE = re.compile(r"(goto|gotol|may_goto|call|ja|ja32|local)[ \t]+(?!pc[+-]|local\b|runtime\b|helper\b)"
                           + _IDENT)
_UBPF_TAIL_LABEL_RE = re.compile(r",[ \t]*" + _IDENT + r"[ \t]*$", re.M)
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+")
_DIGITS = str.maketrans("0123456789", "9999999999", " \t")
_NINES_RE = re.compile(r"99+")

_LABEL_DEF_RE = re.compile(r"[ \t]*(" + _IDENT + r")[ \t]*:")
_KERNEL_PREFIX_RE = re.compile(r"[ \t]*(?:\d+:[ \t]*)?\(([0-9a-fA-F]{2})\)[ \t]*")
_BAD_REG_RE = re.compile(r"%?\b[rw](\d+)\b")


def _skeletons(text: str, syntax: str) -> str:
    text = _LABEL_REF_RE.sub(r"\1 L", text)
    if syntax == "ubpf":
        text = _UBPF_TAIL_LABEL_RE.sub(",L", text)
    return _NINES_RE.sub("9", _HEX_RE.sub("0", text).translate(_DIGITS))


# --------------------------------------------------------------------------
# Compiling templates.
# --------------------------------------------------------------------------

_REG_NAMES = {"dst": "dst", "rdst": "dst", "wdst": "dst", "src": "src", "rsrc": "src", "wsrc": "src"}


def _reg_prefix(name: str, form: Form, syntax: str) -> str:
    if syntax == "ubpf":
        return "%r"
    if name[0] in "rw":
        return name[0]
    return "w" if form.width == 32 else "r"


def _samples(name: str, form: Form, syntax: str) -> list[str]:
    """Sample spellings of a placeholder, one per skeleton shape it can take."""
    if name in _REG_NAMES:
        return [_reg_prefix(name, form, syntax) + "1"]
    if name == "off":
        return ["+1", "-1", ""] if syntax == "ubpf" else ["+ 1", "- 1"]
    if name == "target":
        return ["pc+1", "pc-1"] if syntax == "kernel" else ["+1", "-1", "1", "lbl"]
    if name == "helper":
        return ["lbl"] if syntax == "kernel" else ["1", "-1"] if syntax == "ubpf" else ["1", "-1", "lbl"]
    if name == "ind":
        return ["r1", "r1 + 1", "r1 + -1"]
    return ["1", "-1", "+1"]


def _group(name: str, form: Form, syntax: str, seen: set[str]) -> str:
    """The regex of one placeholder; repeated registers must repeat (backreference)."""
    if name in _REG_NAMES:
        field = _REG_NAMES[name]
        prefix = re.escape(_reg_prefix(name, form, syntax))
        if field in seen:
            return f"{prefix}(?P={field})"
        seen.add(field)
        return f"{prefix}(?P<{field}>\\d+)"
    if name in ("imm", "ximm", "kfunc"):
        return f"(?P<imm>{_NUM})"
    if name == "btf_fd":
        return f"(?P<off>{_NUM})"
    if name == "imm2":
        return f"(?P<imm2>{_NUM})"
    if name == "imm64":
        return f"(?P<imm64>{_NUM})"
    if name == "off":
        if syntax == "ubpf":
            return f"(?P<off>(?:[+-]{_HEX_OR_DEC})?)"
        return f"(?P<off>[+-]{_HEX_OR_DEC})"
    if name == "target":
        if syntax == "kernel":
            return r"pc(?P<target>[+-]\d+)"
        return f"(?P<target>{_NUM}|{_IDENT})"
    if name == "helper":
        if syntax == "kernel":
            return f"(?P<helper>{_IDENT})"
        if syntax == "ubpf":
            return f"(?P<helper>{_NUM})"
        return f"(?P<helper>{_NUM}|{_IDENT})"
    if name == "ind":
        return f"r(?P<src>\\d+)(?:\\+(?P<imm>{_NUM}))?"
    raise ValueError(f"{form.name}: unknown placeholder {{{name}}}")


def _literal_regex(text: str) -> str:
    return re.escape(text.replace(" ", ""))


# Operand kinds of a pattern's groups (what a captured text becomes).
_DST, _SRC, _IMM, _OFF, _OFF_OPT, _IMM64, _IMM64_U32, _IMM2, _TARGET16, _TARGET32, _HELPER, _BTF_FD = range(12)


def _kind(group: str, form: Form) -> int:
    if group == "dst":
        return _DST
    if group == "src":
        return _SRC
    if group == "imm":
        return _IMM
    if group == "off":
        return _BTF_FD if form.off == "btf_fd" else _OFF
    if group == "imm64":
        return _IMM64_U32 if form.src in (isa.Pseudo.MAP_VALUE, isa.Pseudo.MAP_IDX_VALUE) else _IMM64
    if group == "imm2":
        return _IMM2
    if group == "target":
        return _TARGET16 if form.off == "jump16" else _TARGET32
    if group == "helper":
        return _HELPER
    raise ValueError(group)


_BOUNDS = {
    _IMM: (-(1 << 31), (1 << 32) - 1, "immediate"),  # LLVM accepts 0xffffffff for -1
    _HELPER: (-(1 << 31), (1 << 32) - 1, "helper id"),
    _OFF: (-(1 << 15), (1 << 15) - 1, "offset"),
    _OFF_OPT: (-(1 << 15), (1 << 15) - 1, "offset"),
    _BTF_FD: (-(1 << 15), (1 << 15) - 1, "BTF fd index"),
    _TARGET16: (-(1 << 15), (1 << 15) - 1, "jump offset"),
    _TARGET32: (-(1 << 31), (1 << 31) - 1, "jump offset"),
    _IMM64: (-(1 << 63), (1 << 64) - 1, "64-bit immediate"),
    _IMM64_U32: (0, (1 << 32) - 1, "map fd/index"),
    _IMM2: (-(1 << 31), (1 << 32) - 1, "value offset"),
}


def _num(text: str) -> int:
    """An integer literal as LLVM writes it: optional sign (maybe spaced), decimal or 0x hex."""
    if " " in text or "\t" in text:
        text = text.replace(" ", "").replace("\t", "")
    if "x" in text or "X" in text:
        return int(text, 16)
    return int(text)


def _emitter_source(plan: tuple[tuple[int, int], ...], slots: int) -> str:
    """Python source of a factory of functions turning one match into a row.

    Generated because it runs once per input line; shared by every form with the same plan
    (the form and its fixed field values are the factory's arguments).
    """
    body = ["    dst, src, off, imm, imm2, ref, ref_col = d0, d1, d2, d3, 0, None, 0", "    g = m.groups()"]
    for i, kind in plan:
        if kind in (_DST, _SRC):
            var = "dst" if kind == _DST else "src"
            body += [f"    {var} = int(g[{i}])", f"    if {var} > 10: raise asm.bad_register(m, {i}, lineno)"]
            continue
        lo, hi, _ = _BOUNDS[kind]
        check = f"if not {lo} <= v <= {hi}: raise asm.out_of_range(m, {i}, {kind}, lineno)"
        body += [f"    t = g[{i}]", "    if t:"]
        if kind in (_TARGET16, _TARGET32, _HELPER):
            assign = "off = v" if kind == _TARGET16 else "imm = v - 4294967296 if v >= 2147483648 else v"
            body += ["        if t[0].isdigit() or t[0] in '+-':", "            v = _num(t)", f"            {check}",
                     f"            {assign}", "        else:", f"            ref, ref_col = t, asm.column(lineno, m.start({i + 1}))"]
            continue
        assign = {
            _IMM: "imm = v - 4294967296 if v >= 2147483648 else v",
            _OFF: "off = v", _OFF_OPT: "off = v", _BTF_FD: "off = v",
            _IMM64: "imm = v & 0xFFFFFFFFFFFFFFFF", _IMM64_U32: "imm = v", _IMM2: "imm2 = v & 0xFFFFFFFF",
        }[kind]
        body += ["        v = _num(t)", f"        {check}", f"        {assign}"]
    body += ["    rows.append([form, dst, src, off, imm, imm2, lineno, ref, ref_col])", f"    asm.pc += {slots}"]
    return ("def make(form, d0, d1, d2, d3):\n def emit(asm, m, lineno, rows):\n"
            + "\n".join(" " + line for line in body) + "\n return emit\n")


_FACTORIES: dict[tuple[tuple[tuple[int, int], ...], int], Callable[..., Callable[..., None]]] = {}


def _emitter(form: Form, plan: tuple[tuple[int, int], ...]) -> Callable[..., None]:
    slots = 2 if form.wide else 1
    key = (plan, slots)
    if key not in _FACTORIES:
        namespace: dict[str, object] = {"_num": _num}
        exec(_emitter_source(plan, slots), namespace)  # noqa: S102 - our own generated code
        _FACTORIES[key] = namespace["make"]  # type: ignore[assignment]
    fixed = form.fixed
    return _FACTORIES[key](form, fixed.get("dst", 0), fixed.get("src", 0), fixed.get("off", 0), fixed.get("imm", 0))


class _Pattern:
    """One spelling of one form.  The regex and the emitter are built on first use, which keeps
    start-up fast (most programs use a few dozen of the ~350 spellings)."""

    __slots__ = ("form", "source", "template", "syntax", "_regex", "emit")

    def __init__(self, form: Form, source: str, template: str, syntax: str):
        self.form = form
        self.source = source
        self.template = template
        self.syntax = syntax
        self._regex: re.Pattern[str] | None = None
        self.emit: Callable[..., None] | None = None

    @property
    def regex(self) -> re.Pattern[str]:
        if self._regex is None:
            regex = re.compile(self.source)
            plan = []
            for group, index in sorted(regex.groupindex.items(), key=lambda kv: kv[1]):
                kind = _kind(group, self.form)
                if kind == _OFF and self.syntax == "ubpf":
                    kind = _OFF_OPT
                plan.append((index - 1, kind))
            self.emit = _emitter(self.form, tuple(plan))
            self._regex = regex
        return self._regex


def _compile(form: Form, template: str, syntax: str) -> tuple[_Pattern, list[str]]:
    pieces = PLACEHOLDER_RE.split(template)
    literals, names = pieces[0::2], pieces[1::2]
    seen: set[str] = set()
    regex = [_literal_regex(literals[0])]
    for name, literal in zip(names, literals[1:]):
        regex.append(_group(name, form, syntax, seen))
        regex.append(_literal_regex(literal))
    pattern = _Pattern(form, "".join(regex), template, syntax)
    # Skeletons: every combination of placeholder sample spellings.
    variants = [literals[0]]
    for name, literal in zip(names, literals[1:]):
        variants = [v + s + literal for v in variants for s in _samples(name, form, syntax)]
    return pattern, sorted({_skeletons(v, syntax) for v in variants})


def _build_table(syntaxes: tuple[str, ...]) -> dict[str, list[_Pattern]]:
    table: dict[str, list[_Pattern]] = {}
    for syntax in syntaxes:
        for form in isa.FORMS:
            for template in templates(form, syntax):
                pattern, skeletons = _compile(form, template, syntax)
                for skel in skeletons:
                    table.setdefault(skel, []).append(pattern)
    return table


_TABLES: dict[str, dict[str, list[_Pattern]]] = {}


def _table(syntax: str) -> dict[str, list[_Pattern]]:
    if syntax not in _TABLES:
        if syntax == "llvm":
            _TABLES[syntax] = _build_table(("llvm", "kernel"))  # kernel spellings accepted too
        elif syntax == "ubpf":
            _TABLES[syntax] = _build_table(("ubpf",))
        else:
            raise ValueError(f"unknown assembler syntax {syntax!r} (expected llvm or ubpf)")
    return _TABLES[syntax]


# --------------------------------------------------------------------------
# Assembling.
# --------------------------------------------------------------------------


# A row is a list: [form, dst, src, off, imm, imm2, line, ref, ref_col]
_FORM, _RDST, _RSRC, _ROFF, _RIMM, _RIMM2, _LINE, _REF, _REFCOL = range(9)


_BLANKS = str.maketrans("", "", " \t")


class _Assembler:
    def __init__(self, text: str, syntax: str, filename: str):
        self.syntax = syntax
        self.filename = filename
        self.table = _table(syntax)
        self.text = text.replace("\r", "")
        self.stripped = _COMMENT_RE.sub("", self.text)  # comments removed, blanks kept
        self._stripped_lines: list[str] | None = None
        self._override: tuple[int, str] | None = None  # (line, text) while a label/prefix is cut off
        self.labels: dict[str, int] = {}
        self.rows: list[list] = []
        self.pc = 0

    def error(self, message: str, line: int, col: int) -> AssemblyError:
        raw_lines = self.text.split("\n")
        raw = raw_lines[line - 1] if line - 1 < len(raw_lines) else ""
        return AssemblyError(message, SourceLoc(self.filename, line, max(col, 1), raw.strip()))

    def stripped_line(self, line: int) -> str:
        if self._override is not None and self._override[0] == line:
            return self._override[1]
        if self._stripped_lines is None:
            self._stripped_lines = self.stripped.split("\n")
        return self._stripped_lines[line - 1]

    def column(self, line: int, pos: int) -> int:
        """The input column of character ``pos`` of the blank-free line."""
        text = self.stripped_line(line)
        seen = -1
        for col, ch in enumerate(text, start=1):
            if ch not in " \t":
                seen += 1
                if seen == pos:
                    return col
        return len(text)

    def error_compact(self, message: str, line: int, pos: int) -> AssemblyError:
        return self.error(message, line, self.column(line, pos))

    def run(self) -> list[list]:
        skeletons = _skeletons(self.stripped, self.syntax).split("\n")
        compact = self.stripped.translate(_BLANKS).split("\n")
        table = self.table
        rows = self.rows
        lineno = 0
        for skel, line in zip(skeletons, compact):
            lineno += 1
            if not skel:
                continue
            patterns = table.get(skel)
            if patterns is not None:
                for pattern in patterns:
                    m = pattern.regex.fullmatch(line)
                    if m is not None:
                        pattern.emit(self, m, lineno, rows)  # type: ignore[misc]
                        break
                else:
                    self._slow_line(lineno)
                continue
            self._slow_line(lineno)
        self._resolve()
        return rows

    def out_of_range(self, m: re.Match[str], index: int, kind: int, lineno: int) -> AssemblyError:
        lo, hi, what = _BOUNDS[kind]
        value = _num(m.group(index + 1))
        return self.error_compact(f"{what} {value} out of range [{lo}, {hi}]", lineno, m.start(index + 1))

    def bad_register(self, m: re.Match[str], index: int, lineno: int) -> AssemblyError:
        return self.error_compact(f"bad register r{m.group(index + 1)} (r0..r10)", lineno, m.start(index + 1) - 1)

    def _slow_line(self, lineno: int) -> None:
        """Label definitions, kernel "(bf)" prefixes, and error reporting."""
        line = self.stripped_line(lineno)
        m = _LABEL_DEF_RE.match(line)
        if m:
            name = m.group(1)
            if name in self.labels:
                raise self.error(f"duplicate label {name!r}", lineno, m.start(1) + 1)
            self.labels[name] = self.pc
            line = " " * m.end() + line[m.end():]
            if not line.strip():
                return
        opcode = None
        k = _KERNEL_PREFIX_RE.match(line)
        if k:
            opcode = int(k.group(1), 16)
            line = " " * k.end() + line[k.end():]
        patterns = self.table.get(_skeletons(line, self.syntax)) or []
        compact = line.translate(_BLANKS)
        for pattern in patterns:
            if opcode is not None and pattern.form.opcode != opcode:
                continue
            m = pattern.regex.fullmatch(compact)
            if m is not None:
                self._override = (lineno, line)  # columns are counted on the line without label/prefix
                try:
                    pattern.emit(self, m, lineno, self.rows)  # type: ignore[misc]
                finally:
                    self._override = None
                return
        col = len(line) - len(line.lstrip()) + 1
        for reg in _BAD_REG_RE.finditer(line):
            if int(reg.group(1)) >= isa.NUM_REGISTERS:
                raise self.error(f"bad register {reg.group(0)!r} (r0..r10)", lineno, reg.start() + 1)
        if patterns:
            expected = " or ".join(repr(p.template) for p in patterns[:3])
            raise self.error(f"operands do not fit {expected}", lineno, col)
        raise self.error(f"unknown instruction {line.strip()!r}", lineno, col)

    def _resolve(self) -> None:
        from .helpers import lookup

        call_local = isa.FORMS_BY_NAME["call_local"]
        labels = self.labels
        pc = 0
        for row in self.rows:
            form = row[_FORM]
            name = row[_REF]
            if name is not None:
                if form.imm == "helper":  # "call name": a local function if the label exists, else a helper
                    if name in labels:
                        row[_FORM], row[_RSRC] = call_local, call_local.src
                        row[_RIMM] = labels[name] - (pc + 1)
                    else:
                        helper = lookup(name)
                        if helper is None:
                            raise self.error(f"unknown helper or function {name!r}", row[_LINE], row[_REFCOL])
                        row[_RIMM] = helper.id
                else:
                    if name not in labels:
                        raise self.error(f"undefined label {name!r}", row[_LINE], row[_REFCOL])
                    delta = labels[name] - (pc + 1)
                    if form.off == "jump16":
                        if not -(1 << 15) <= delta < (1 << 15):
                            raise self.error(f"jump to {name!r} is {delta} instructions away, beyond the 16-bit "
                                             "offset (use gotol)", row[_LINE], row[_REFCOL])
                        row[_ROFF] = delta
                    else:
                        row[_RIMM] = delta
            pc += 2 if form.wide else 1


_SLOT = struct.Struct("<BBhi")
_WIDE = struct.Struct("<BBhIBBhI")


def _check(syntax: str) -> None:
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown assembler syntax {syntax!r} (expected llvm or ubpf)")


def assemble_bytes(text: str, syntax: str = "llvm", filename: str = "<input>") -> bytes:
    """Assemble text straight to little-endian bytecode (the fast path used by the CLI)."""
    _check(syntax)
    rows = _Assembler(text, syntax, filename).run()
    out: list[bytes] = []
    pack, pack_wide = _SLOT.pack, _WIDE.pack
    for form, dst, src, off, imm, imm2, *_ in rows:
        if form.wide:
            hi = imm2 if form.src in (isa.Pseudo.MAP_VALUE, isa.Pseudo.MAP_IDX_VALUE) else imm >> 32
            out.append(pack_wide(form.opcode, (src << 4) | dst, off, imm & 0xFFFFFFFF, 0, 0, 0, hi))
        else:
            out.append(pack(form.opcode, (src << 4) | dst, off, imm))
    return b"".join(out)


def assemble(text: str, syntax: str = "llvm", filename: str = "<input>") -> list[Instruction]:
    """Assemble text to instructions carrying their source location (and label / helper refs)."""
    _check(syntax)
    assembler = _Assembler(text, syntax, filename)
    rows = assembler.run()
    raw_lines = assembler.text.split("\n")
    out = []
    for form, dst, src, off, imm, imm2, line, ref_name, _ in rows:
        ref: object = None
        if ref_name is not None:
            ref = HelperRef(ref_name) if form.imm == "helper" else Label(ref_name)
        raw = raw_lines[line - 1]
        source = SourceLoc(filename, line, len(raw) - len(raw.lstrip()) + 1, raw.strip())
        insn = Instruction(form.opcode, dst, src, off, imm, imm2, ref=ref, source=source)
        try:
            isa.validate(insn)
        except isa.EncodingError as exc:
            raise AssemblyError(str(exc), source) from None
        out.append(insn)
    return out


def assembler(syntax: str) -> Callable[[str], bytes]:
    """A one-argument assembling function for a syntax (handy for property tests)."""
    _check(syntax)
    return lambda text: assemble_bytes(text, syntax)
