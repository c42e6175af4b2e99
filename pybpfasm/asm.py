"""Text assemblers for LLVM syntax (also accepting the kernel's verifier / bpftool spelling)
and ubpf / bpf_conformance syntax.

The parsers are compiled from the templates of ``isa.FORMS``; nothing here lists opcodes.
Each template becomes

* *skeletons*: the line with every number (decimal or hex) turned into ``9``, label
  references into ``L`` and blanks removed (``r1 += -0x5`` -> ``r9+=-9``);
* a regular expression extracting the operands from the blank-free line;
* a small generated function turning the captured text into the encoded bytes.

Assembling computes the skeletons of the whole input with a few C-speed passes; each line
then costs one dict lookup, one regex match and one call.  That keeps 100,000 lines close
to ``llvm-mc``'s time (see ``bench/asm_speed.py``).
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable, Iterable

from . import isa
from .builder import AssemblyError, MapRef
from .isa import Form, Instruction, SourceLoc
from .textfmt import PLACEHOLDER_RE, templates

__all__ = ["AssemblyError", "assemble", "assemble_bytes", "SYNTAXES"]

SYNTAXES = ("llvm", "ubpf")

# Deliberately loose (short regexes compile faster, and ~200 get compiled for a large input):
# "12ab" or "1x" match here and are refused when converted.
_HEX_OR_DEC = r"[0-9][0-9a-fA-FxX]*"
_NUM = r"[+-]?" + _HEX_OR_DEC  # lines are matched with blanks removed
_REG = r"1?[0-9]"  # r11..r19 match here and are refused when converted
_IDENT = r"[A-Za-z_.$][\w.$]*"

_COMMENT_RE = re.compile(r"(?:#|//|;)[^\n]*")
_LABEL_REF_RE = re.compile(r"(?:goto|gotol|may_goto|call|ja|ja32|local)[ \t]+(?!pc[+-]|local\b|runtime\b|helper\b)("
                           + _IDENT + ")")
_UBPF_TAIL_LABEL_RE = re.compile(r",[ \t]*(" + _IDENT + r")[ \t]*$", re.M)
_MAP_REF_RE = re.compile(r"=[ \t]*(" + _IDENT + r")[ \t]+ll\b")  # "r1 = my_map ll", as clang -S writes maps
# Words after which a label may follow (checked on a skeleton before the label-aware pass).
_LABEL_WORDS_RE = re.compile(r"goto|call|ja|local|,[A-Za-z_.$]|=[A-Za-z_.$].*ll$")
_DIRECTIVE_RE = re.compile(r"[ \t]*\.[A-Za-z_]\w*(?![\w.$]*[ \t]*:)")  # ".text", ".globl f" (not ".L1:")
_DIGITS = str.maketrans("0123456789", "9999999999", " \t")
_NUMBER_RE = re.compile(r"9(?:[xX][9a-fA-F]+|9+)")  # after _DIGITS: "0x1f" is "9x9f", "123" is "999"
_BLANKS = str.maketrans("", "", " \t")

_LABEL_DEF_RE = re.compile(r"(" + _IDENT + r"):")  # on blank-free lines
_KERNEL_PREFIX_RE = re.compile(r"(?:\d+:)?(?:\(([0-9a-fA-F]{2})\))?")  # "0:" index and/or "(bf)" opcode
_BAD_REG_RE = re.compile(r"%?\b[rw](\d+)\b")


def _skeletons(text: str, syntax: str, labels: bool) -> str:
    """Skeletons of every line of ``text``.  Label references are rare, so the whole-input pass
    skips them (``labels=False``) and lines whose skeleton is unknown are retried with them."""
    if labels:
        text = _LABEL_REF_RE.sub(_label, text)
        text = _MAP_REF_RE.sub(_label, text)
        if syntax == "ubpf":
            text = _UBPF_TAIL_LABEL_RE.sub(_label, text)
    return _NUMBER_RE.sub("9", text.translate(_DIGITS))


def _label(m: re.Match[str]) -> str:
    """The match with its label (group 1) replaced by "L"."""
    text = m.group(0)
    return text[: m.start(1) - m.start()] + "L" + text[m.end(1) - m.start():]


def _line_skeleton(line: str, syntax: str) -> str:
    """The label-aware skeleton of one line (cheaper than ``_skeletons`` for a single line)."""
    m = _LABEL_REF_RE.search(line) or _MAP_REF_RE.search(line)
    if m is None and syntax == "ubpf":
        m = _UBPF_TAIL_LABEL_RE.search(line)
    if m is not None:
        line = line[: m.start(1)] + "L" + line[m.end(1):]
    return _NUMBER_RE.sub("9", line.translate(_DIGITS))


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
    if name == "imm64" and syntax == "llvm" and form.src == isa.Pseudo.IMM:
        return ["1", "-1", "+1", "lbl"]
    return ["1", "-1", "+1"]


def _group(name: str, form: Form, syntax: str, seen: set[str]) -> str:
    """The regex of one placeholder; a repeated register must repeat (backreference)."""
    if name in _REG_NAMES:
        field = _REG_NAMES[name]
        prefix = re.escape(_reg_prefix(name, form, syntax))
        if field in seen:
            return f"{prefix}(?P={field})"
        seen.add(field)
        return f"{prefix}(?P<{field}>{_REG})"
    if name in ("imm", "ximm", "kfunc"):
        return f"(?P<imm>{_NUM})"
    if name == "btf_fd":
        return f"(?P<off>{_NUM})"
    if name == "imm2":
        return f"(?P<imm2>{_NUM})"
    if name == "imm64":
        if syntax == "llvm" and form.src == isa.Pseudo.IMM:
            return f"(?P<imm64>{_NUM}|{_IDENT})"  # a name: a map reference (assemble() gives a MapRef)
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
        return f"r(?P<src>{_REG})(?:\\+(?P<imm>{_NUM}))?"
    raise ValueError(f"{form.name}: unknown placeholder {{{name}}}")


# What a captured group becomes.
_DST, _SRC, _IMM, _OFF, _OFF_OPT, _IMM64, _IMM64_U32, _IMM2, _TARGET16, _TARGET32, _HELPER, _BTF_FD = range(12)

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


def _kind(group: str, form: Form, syntax: str) -> int:
    if group == "dst":
        return _DST
    if group == "src":
        return _SRC
    if group == "imm":
        return _IMM
    if group == "off":
        if form.off == "btf_fd":
            return _BTF_FD
        return _OFF_OPT if syntax == "ubpf" else _OFF
    if group == "imm64":
        return _IMM64_U32 if form.src in (isa.Pseudo.MAP_VALUE, isa.Pseudo.MAP_IDX_VALUE) else _IMM64
    if group == "imm2":
        return _IMM2
    if group == "target":
        return _TARGET16 if form.off == "jump16" else _TARGET32
    if group == "helper":
        return _HELPER
    raise ValueError(group)


def _num(text: str) -> int:
    """An integer literal as LLVM writes it: optional sign, decimal or 0x hex."""
    if "x" in text or "X" in text:
        return int(text, 16)
    return int(text)


_REGISTERS = {str(n): n for n in range(isa.NUM_REGISTERS)}  # a dict lookup beats int() per operand
_SLOT = struct.Struct("<BBhi")
_WIDE = struct.Struct("<BBhIBBhI")


def _emitter_source(plan: tuple[tuple[int, int, bool], ...], wide: int) -> str:
    """Python source of a factory of functions turning one match into bytes.

    Generated because it runs once per input line; shared by every form with the same plan
    (the form's opcode and fixed field values are the factory's arguments).  ``plan`` lists
    (group index, kind, optional) per captured group; ``wide`` is 0 for one slot, 1 for
    ``ld_imm64``, 2 for ``ld_imm64`` whose second half is ``imm2``.  Registers need no range
    check: the regexes only accept r0..r10 (anything else falls to the error path).
    """
    names = [f"g{i}" for i, _, _ in plan]
    body = []
    if names:
        body.append(f"{', '.join(names)}{',' if len(names) == 1 else ''} = m.groups()")
    fields = {"dst": "d0", "src": "d1", "off": "d2", "imm": "d3", "imm2": "0"}
    has_ref = any(kind in (_TARGET16, _TARGET32, _HELPER, _IMM64) for _, kind, _ in plan)
    if has_ref:
        body.append("ref = None")
    for i, kind, optional in plan:
        g = f"g{i}"
        if kind in (_DST, _SRC):
            var = "dst" if kind == _DST else "src"
            body.append(f"{var} = REG[{g}]")
            fields[var] = var
            continue
        lo, hi, _ = _BOUNDS[kind]
        convert = [f"v = int({g}, 16) if 'x' in {g} or 'X' in {g} else int({g})",
                   f"if not {lo} <= v <= {hi}: raise asm.out_of_range(m, {i}, {kind}, line + 1)"]
        target = {_IMM: "imm", _OFF: "off", _OFF_OPT: "off", _BTF_FD: "off", _IMM64: "imm", _IMM64_U32: "imm",
                  _IMM2: "imm2", _TARGET16: "off", _TARGET32: "imm", _HELPER: "imm"}[kind]
        assign = {
            _IMM: "imm = v - 4294967296 if v >= 2147483648 else v", _TARGET32: "imm = v",
            _HELPER: "imm = v - 4294967296 if v >= 2147483648 else v",
            _IMM64: "imm = v & 0xFFFFFFFFFFFFFFFF", _IMM2: "imm2 = v & 0xFFFFFFFF",
        }.get(kind, f"{target} = v")
        if kind in (_TARGET16, _TARGET32, _HELPER, _IMM64):  # a number, or a name resolved later
            body += [f"{target} = {fields[target]}", f"if {g}[0].isdigit() or {g}[0] in '+-':",
                     *("    " + line for line in convert), f"    {assign}",
                     "else:", f"    ref = ({g}, m.start({i + 1}))"]
        elif optional:
            body += [f"{target} = {fields[target]}", f"if {g}:", *("    " + line for line in convert),
                     f"    {assign}"]
        else:
            body += [*convert, assign]
        fields[target] = target
    d, sr, off, imm, imm2 = (fields[k] for k in ("dst", "src", "off", "imm", "imm2"))
    if wide:
        hi = imm2 if wide == 2 else f"{imm} >> 32"
        code = f"pack_wide(opcode, ({sr} << 4) | {d}, {off}, {imm} & 0xFFFFFFFF, 0, 0, 0, {hi})"
    else:
        code = f"pack(opcode, ({sr} << 4) | {d}, {off}, {imm})"
    if has_ref:
        body += ["if ref is None:", f"    out[line] = {code}", "else:",
                 f"    asm.defer(form, {d}, {sr}, {off}, {imm}, {imm2}, line, ref)"]
    else:
        body.append(f"out[line] = {code}")
    # ``line`` is the 0-based line index; ``out`` has one entry per input line.
    # Two functions from one body: ``emit`` for one line, ``emit_many`` for a skeleton group
    # (the loop inside saves a call per line); ``emit_many`` returns the lines not matched.
    bad = f"asm.bad_operand(m, {[(i, k) for i, k, _ in plan]}, line + 1)"
    one = "".join(f"            {text}\n" for text in body)
    many = "".join(f"                {text}\n" for text in body)
    return ("def make(form, opcode, d0, d1, d2, d3):\n"
            "    def emit(asm, m, line, out):\n        try:\n" + one
            + "        except AssemblyError:\n            raise\n"
            + "        except (KeyError, ValueError):  # r11..r19, or a malformed number\n"
            + f"            raise {bad} from None\n"
            + "    def emit_many(asm, lines, matches, out):\n        rest = []\n"
            + "        for line, m in zip(lines, matches):\n"
            + "            if m is None:\n                rest.append(line)\n                continue\n"
            + "            try:\n" + many
            + "            except AssemblyError as exc:\n                asm.errors.append(exc)\n"
            + f"            except (KeyError, ValueError):\n                asm.errors.append({bad})\n"
            + "        return rest\n"
            + "    return emit, emit_many\n")


_FACTORIES: dict[tuple[tuple[tuple[int, int, bool], ...], int], Callable[..., tuple[Callable[..., None],
                                                                                    Callable[..., list[int]]]]] = {}


def _emitter(form: Form, plan: tuple[tuple[int, int, bool], ...]) -> tuple[Callable[..., None],
                                                                         Callable[..., list[int]]]:
    wide = 0
    if form.wide:
        wide = 2 if form.src in (isa.Pseudo.MAP_VALUE, isa.Pseudo.MAP_IDX_VALUE) else 1
    key = (plan, wide)
    if key not in _FACTORIES:
        namespace: dict[str, object] = {"pack": _SLOT.pack, "pack_wide": _WIDE.pack, "REG": _REGISTERS,
                                        "AssemblyError": AssemblyError}
        exec(_emitter_source(plan, wide), namespace)  # noqa: S102 - our own generated code
        _FACTORIES[key] = namespace["make"]  # type: ignore[assignment]
    fixed = form.fixed
    return _FACTORIES[key](form, form.opcode, fixed.get("dst", 0), fixed.get("src", 0), fixed.get("off", 0),
                           fixed.get("imm", 0))


_GROUP_NAME_RE = re.compile(r"\(\?P<(\w+)>")
_BACKREF_RE = re.compile(r"\(\?P=(\w+)\)")


class _Pattern:
    """One spelling of one form.  ``match`` compiles the regex and the emitter on first use,
    which keeps start-up fast (a program uses a few dozen of the ~350 spellings)."""

    __slots__ = ("form", "source", "template", "syntax", "match", "emit", "emit_many")

    def __init__(self, form: Form, source: str, template: str, syntax: str):
        self.form = form
        self.source = source
        self.template = template
        self.syntax = syntax
        self.match: Callable[[str], re.Match[str] | None] = self._first_match
        self.emit: Callable[..., None] = self._no_emit
        self.emit_many: Callable[..., list[int]] = self._no_emit  # type: ignore[assignment]

    def matcher(self) -> Callable[[str], re.Match[str] | None]:
        """The compiled ``fullmatch`` (compiling it, and the emitter, if not done yet)."""
        if self.match == self._first_match:
            self._first_match("")
        return self.match

    def _first_match(self, line: str) -> re.Match[str] | None:
        # Named groups give the plan; the compiled regex uses plain numbered groups (cheaper to compile).
        names = _GROUP_NAME_RE.findall(self.source)
        plan = []
        for index, group in enumerate(names):
            kind = _kind(group, self.form, self.syntax)
            optional = kind == _OFF_OPT or (kind == _IMM and "{ind}" in self.template)
            plan.append((index, kind, optional))
        source = _GROUP_NAME_RE.sub("(", self.source)
        source = _BACKREF_RE.sub(lambda m: f"\\{names.index(m.group(1)) + 1}", source)
        self.emit, self.emit_many = _emitter(self.form, tuple(plan))
        self.match = re.compile(source).fullmatch
        return self.match(line)

    def _no_emit(self, *args: object) -> None:  # pragma: no cover - match() always runs first
        raise AssertionError("emit before match")


def _compile(form: Form, template: str, syntax: str) -> tuple[_Pattern, list[str]]:
    """The pattern of a template and its skeleton variants (not yet reduced to skeletons)."""
    pieces = PLACEHOLDER_RE.split(template)
    literals, names = pieces[0::2], pieces[1::2]
    seen: set[str] = set()
    regex = [re.escape(literals[0].replace(" ", ""))]
    for name, literal in zip(names, literals[1:]):
        regex.append(_group(name, form, syntax, seen))
        regex.append(re.escape(literal.replace(" ", "")))
    variants = [literals[0]]
    for name, literal in zip(names, literals[1:]):
        variants = [v + s + literal for v in variants for s in _samples(name, form, syntax)]
    return _Pattern(form, "".join(regex), template, syntax), variants


def _build_table(syntaxes: tuple[str, ...]) -> dict[str, list[_Pattern]]:
    entries: list[tuple[_Pattern, str]] = []
    for syntax in syntaxes:
        for form in isa.FORMS:
            for template in templates(form, syntax):
                pattern, variants = _compile(form, template, syntax)
                entries.extend((pattern, v) for v in variants)
    # One pass over all variants at once (a per-variant call would cost start-up time).
    skeletons = _skeletons("\n".join(v for _, v in entries), syntaxes[0], labels=True).split("\n")
    table: dict[str, list[_Pattern]] = {}
    for (pattern, _), skel in zip(entries, skeletons):
        patterns = table.setdefault(skel, [])
        if pattern not in patterns:
            patterns.append(pattern)
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


_PENDING = (b"\0" * 8, b"\0" * 16)  # placeholders of deferred instructions (1 or 2 slots)


def _group_by(pairs: Iterable[tuple[int, str]]) -> dict[str, list[int]]:
    """Line indexes grouped by skeleton (empty skeletons, blank lines, left out)."""
    groups: dict[str, list[int]] = {}
    for index, skel in pairs:
        if skel:
            lines = groups.get(skel)
            if lines is None:
                groups[skel] = [index]
            else:
                lines.append(index)
    return groups


class _Assembler:
    """One assembly run.  ``out`` has one entry per input line: the instruction's bytes, a
    placeholder while a label / helper / map name in it is unresolved, or b"" (no instruction).

    Lines are processed grouped by skeleton (one ``map`` of a regex over all lines of a
    shape, then one generated call per line), which is what makes large inputs fast; label
    definitions, label references and errors take the per-line path afterwards.
    """

    def __init__(self, text: str, syntax: str, filename: str):
        self.syntax = syntax
        self.filename = filename
        self.table = _table(syntax)
        self.text = text.replace("\r", "") if "\r" in text else text
        has_comments = "#" in text or "//" in text or ";" in text
        self.stripped = _COMMENT_RE.sub("", self.text) if has_comments else self.text  # blanks kept
        self._stripped_lines: list[str] | None = None
        self._overrides: dict[int, str] = {}  # line -> text without its label / "(bf)" prefix
        self.label_lines: dict[str, int] = {}  # label -> index of the line it precedes
        self.out: list[bytes] = []
        self.deferred: list[tuple[int, Form, int, int, int, int, int, str, int]] = []
        self.errors: list[AssemblyError] = []
        self.map_refs = False  # may "r1 = name ll" stay symbolic (assemble()) or not (raw bytes)?

    # -- errors ------------------------------------------------------------
    def error(self, message: str, line: int, col: int) -> AssemblyError:
        raw_lines = self.text.split("\n")
        raw = raw_lines[line - 1] if line - 1 < len(raw_lines) else ""
        return AssemblyError(message, SourceLoc(self.filename, line, max(col, 1), raw.strip()))

    def stripped_line(self, line: int) -> str:
        if line in self._overrides:
            return self._overrides[line]
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

    def out_of_range(self, m: re.Match[str], index: int, kind: int, lineno: int) -> AssemblyError:
        lo, hi, what = _BOUNDS[kind]
        value = _num(m.group(index + 1))
        col = self.column(lineno, m.start(index + 1))
        return self.error(f"{what} {value} out of range [{lo}, {hi}]", lineno, col)

    def bad_operand(self, m: re.Match[str], plan: list[tuple[int, int]], lineno: int) -> AssemblyError:
        """The error for a register beyond r10 or a malformed number the loose regexes let through."""
        for index, kind in plan:
            text = m.group(index + 1)
            if kind in (_DST, _SRC) and text not in _REGISTERS:
                col = self.column(lineno, m.start(index + 1) - 1)
                return self.error(f"bad register r{text} (r0..r10)", lineno, col)
            if kind not in (_DST, _SRC) and text and (text[0].isdigit() or text[0] in "+-"):
                try:
                    _num(text)
                except ValueError:
                    return self.error(f"bad number {text!r}", lineno, self.column(lineno, m.start(index + 1)))
        return self.error("bad operand", lineno, 1)  # pragma: no cover - one of the above applies

    # -- passes ------------------------------------------------------------
    def defer(self, form: Form, dst: int, src: int, off: int, imm: int, imm2: int, line: int,
              ref: tuple[str, int]) -> None:
        """An instruction naming a label, helper or map: encoded once every label is known.
        ``ref`` is the name and its position in the blank-free line."""
        self.deferred.append((line, form, dst, src, off, imm, imm2, ref[0], ref[1]))
        self.out[line] = _PENDING[1 if form.wide else 0]

    def run(self) -> list[bytes]:
        skeletons = _skeletons(self.stripped, self.syntax, labels=False).split("\n")
        compact = self.stripped.translate(_BLANKS).split("\n")
        self.out = [b""] * len(skeletons)
        # Pass 1: every line, grouped by skeleton.
        unknown = self._match_groups(_group_by(enumerate(skeletons)), compact.__getitem__)
        # Pass 2: what pass 1 did not know: label definitions (cut off), "(bf)" prefixes, label
        # references (their skeleton needs the label-aware rules), directives and errors.
        retry: dict[int, str] = {}  # line -> blank-free text left to match
        for index in unknown:
            text = self._cut_line(index, compact[index])
            if text:
                retry[index] = text
        if retry:
            texts = [self.stripped_line(index + 1) for index in retry]
            relabelled = _skeletons("\n".join(texts), self.syntax, labels=True).split("\n")
            skeleton_of = dict(zip(retry, relabelled))
            failed = self._match_groups(_group_by(skeleton_of.items()), retry.__getitem__)
            for index in failed:  # mostly errors; kernel "(bf)" lines whose opcode picks the form
                try:
                    self._last_chance(index + 1, skeleton_of[index], retry[index])
                except AssemblyError as exc:
                    self.errors.append(exc)
        if self.errors:
            raise min(self.errors, key=lambda e: e.source.line if e.source else 0)
        self._resolve()
        return self.out

    def _match_groups(self, groups: dict[str, list[int]], text_of: Callable[[int], str]) -> list[int]:
        """Match and emit every line of every skeleton group; returns the lines left (sorted)."""
        left: list[int] = []
        table = self.table
        out = self.out
        for skel, indexes in groups.items():
            patterns = table.get(skel)
            if patterns is None:
                left += indexes
                continue
            for pattern in patterns:  # usually one; u8/u16/u32 spellings share a skeleton
                match = pattern.matcher()
                indexes = pattern.emit_many(self, indexes, map(match, map(text_of, indexes)), out)
                if not indexes:
                    break
            left += indexes
        left.sort()
        return left

    def _cut_line(self, index: int, compact: str) -> str:
        """Record a label definition / skip a directive; returns the instruction text left."""
        lineno = index + 1
        if compact[0] == "." and _DIRECTIVE_RE.match(self.stripped_line(lineno)):
            return ""  # assembler directives (.text, .globl, .section ...) carry no instruction
        label = _LABEL_DEF_RE.match(compact)
        if not label:
            return compact
        name = label.group(1)
        if name in self.label_lines:
            self.errors.append(self.error(f"duplicate label {name!r}", lineno, self.column(lineno, label.start(1))))
            return ""
        self.label_lines[name] = index
        rest = compact[label.end():]
        if rest:  # "name: insn": columns and label-aware skeletons see the line without the label
            cut = self.column(lineno, label.end()) - 1
            line = self.stripped_line(lineno)
            self._overrides[lineno] = " " * cut + line[cut:]
        return rest

    def _last_chance(self, lineno: int, skel: str, compact: str) -> None:
        """A kernel-listing line ("0: (bf) r6 = r1", the opcode picks among same-looking forms),
        or an error naming what is wrong."""
        opcode = None
        prefix = _KERNEL_PREFIX_RE.match(compact)
        if prefix.end():
            opcode = int(prefix.group(1), 16) if prefix.group(1) else None
            cut = self.column(lineno, prefix.end()) - 1  # the current line's blank-free text is ``compact``
            line = self.stripped_line(lineno)
            self._overrides[lineno] = " " * cut + line[cut:]
            compact = compact[prefix.end():]
            skel = _line_skeleton(self.stripped_line(lineno), self.syntax)
        patterns = self.table.get(skel) or []
        for pattern in patterns:
            if opcode is not None and pattern.form.opcode != opcode:
                continue
            match = pattern.matcher()(compact)
            if match is not None:
                pattern.emit(self, match, lineno - 1, self.out)
                return
        line = self.stripped_line(lineno)
        col = len(line) - len(line.lstrip()) + 1
        for reg in _BAD_REG_RE.finditer(line):
            if int(reg.group(1)) >= isa.NUM_REGISTERS:
                raise self.error(f"bad register {reg.group(0)!r} (r0..r10)", lineno, reg.start() + 1)
        if patterns:
            expected = " or ".join(repr(p.template) for p in patterns[:3])
            raise self.error(f"operands do not fit {expected}", lineno, col)
        raise self.error(f"unknown instruction {line.strip()!r}", lineno, col)

    def _pcs(self) -> list[int]:
        """The byte offset of the instruction on or after each line (pc = offset // 8)."""
        return [0, *itertools.accumulate(map(len, self.out))]

    def _resolve(self) -> None:
        if not self.deferred:
            return
        from .helpers import lookup

        offsets = self._pcs()
        labels = {name: offsets[line] >> 3 for name, line in self.label_lines.items()}
        call_local = isa.FORMS_BY_NAME["call_local"]
        pack = _SLOT.pack
        for line, form, dst, src, off, imm, _imm2, name, pos in self.deferred:
            lineno, pc = line + 1, offsets[line] >> 3
            if form.wide:  # "r1 = my_map ll": only a loader can fill in the map
                if not self.map_refs:
                    raise self.error(f"map reference {name!r} needs a loader: use pybpfasm.asm.assemble() "
                                     "and load the instructions with their maps", lineno, self.column(lineno, pos))
                self.out[line] = _WIDE.pack(form.opcode, dst, 0, 0, 0, 0, 0, 0)
                continue
            if form.imm == "helper":  # "call name": a local function if the label exists, else a helper
                if name in labels:
                    form, src, imm = call_local, call_local.fixed["src"], labels[name] - (pc + 1)
                else:
                    helper = lookup(name)
                    if helper is None:
                        raise self.error(f"unknown helper or function {name!r}", lineno, self.column(lineno, pos))
                    imm = helper.id
            else:
                if name not in labels and name == "exit" and self.syntax == "ubpf":
                    labels[name] = self._first_exit(offsets)  # bpf_conformance: "exit" names the first exit
                if labels.get(name, -1) < 0:
                    raise self.error(f"undefined label {name!r}", lineno, self.column(lineno, pos))
                delta = labels[name] - (pc + 1)
                if form.off == "jump16":
                    if not -(1 << 15) <= delta < (1 << 15):
                        raise self.error(f"jump to {name!r} is {delta} instructions away, beyond the 16-bit "
                                         "offset (use gotol)", lineno, self.column(lineno, pos))
                    off = delta
                else:
                    imm = delta
            self.out[line] = pack(form.opcode, (src << 4) | dst, off, imm)  # never ld_imm64: no label operand

    def _first_exit(self, offsets: list[int]) -> int:
        exit_opcode = isa.FORMS_BY_NAME["exit"].opcode
        for line, chunk in enumerate(self.out):
            if chunk and chunk is not _PENDING[0] and chunk[0] == exit_opcode:
                return offsets[line] >> 3
        return -1  # no exit: reported as an undefined label


def _check(syntax: str) -> None:
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown assembler syntax {syntax!r} (expected llvm or ubpf)")


def assemble_bytes(text: str, syntax: str = "llvm", filename: str = "<input>") -> bytes:
    """Assemble text straight to little-endian bytecode (the fast path used by the CLI)."""
    _check(syntax)
    return b"".join(_Assembler(text, syntax, filename).run())


def assemble(text: str, syntax: str = "llvm", filename: str = "<input>") -> list[Instruction]:
    """Assemble text to instructions carrying their source location.

    Labels and helper names are resolved; ``r1 = my_map ll`` gives an ``ld_imm64`` whose
    ref is ``MapRef("my_map")``, which ``pybpfasm.program`` resolves from the maps it is given.
    """
    _check(syntax)
    assembler = _Assembler(text, syntax, filename)
    assembler.map_refs = True
    chunks = assembler.run()
    maps = {line: name for line, form, *_rest, name, _pos in assembler.deferred if form.wide}
    raw_lines = assembler.text.split("\n")
    out = []
    slot = 0
    for line, chunk in enumerate(chunks):
        if not chunk:
            continue
        raw = raw_lines[line]
        source = SourceLoc(filename, line + 1, len(raw) - len(raw.lstrip()) + 1, raw.strip())
        try:
            insn = isa.decode_one(chunk, 0, slot)
        except isa.DecodeError as exc:
            raise AssemblyError(str(exc).split(": ", 1)[-1], source) from None
        ref = MapRef(maps[line]) if line in maps else None  # labels and helpers are resolved
        out.append(insn.with_(ref=ref, source=source))
        slot += insn.slots
    return out


def assembler(syntax: str) -> Callable[[str], bytes]:
    """A one-argument assembling function for a syntax (handy for property tests)."""
    _check(syntax)
    return lambda text: assemble_bytes(text, syntax)
