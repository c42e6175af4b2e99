"""Loading programs: map references to fds, the verifier log mapped back to source.

``Program.load(insns, prog_type="xdp", maps={...})`` takes our instruction list
(or a ``ProgramBuilder`` / items with labels and helper names, resolved first),
patches every ``MapRef`` into an ``ld_imm64`` with the map's fd
(``BPF_PSEUDO_MAP_FD``, or ``BPF_PSEUDO_MAP_VALUE`` plus the value offset) and
calls BPF_PROG_LOAD.  When the verifier refuses, the log is always captured (a
first attempt without a log is retried with one, and the buffer grows on
ENOSPC) and raised as ``VerifierError``: the verifier's reason, the failing
instruction and the source line that emitted it, then the log's last lines.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import btfext, builder, isa, syscall
from .btf import load_btf
from .btfext import Func, FuncEntry
from .builder import HelperRef, Label, MapRef
from .errors import UserError
from .isa import Instruction, Pseudo, SourceLoc
from .syscall import AttachType, BPFError, Fd, ProgInfo, ProgType, TestRunResult

LOG_TAIL_LINES = 20
_FIRST_LOG_SIZE = 1 << 20
_MAX_LOG_SIZE = 1 << 30  # the kernel's limit is UINT_MAX >> 2

_INSN_LINE = re.compile(r"^(\d+): \(([0-9a-f]{2})\) ?(.*?)(?:\s+;.*)?$")
_INSN_MENTION = re.compile(r"\binsn (\d+)\b")
_LOG_SOURCE = re.compile(r"^; (.*?)(?: @ (\S+):(\d+))?$")  # line_info, as the verifier prints it
_TRAILER = ("processed ", "verification time", "stack depth", "max_states_per_insn", "Func#", "mark_precise",
            "last_idx", "regs=", "parent ")


class VerifierError(UserError):
    """The verifier rejected a program.

    ``log`` is the full verifier log, ``insn_index`` the failing instruction's
    slot index (as the verifier counts, ld_imm64 takes two), ``instruction``
    our Instruction there, ``source`` its SourceLoc, ``reason`` the verifier's
    error line and ``errno`` the bpf() errno.
    """

    def __init__(self, program_name: str, log: str, err: int, insns: Sequence[Instruction] = ()):
        self.program_name = program_name
        self.log = log
        self.errno = err
        self.reason = _reason(log) or os.strerror(err)
        self.insn_index, verifier_text = _failing_insn(log)
        self.instruction: Instruction | None = None
        self.source: SourceLoc | None = None
        self.log_source = _log_source(log)  # from line_info (programs loaded with BTF)
        if self.insn_index is not None:
            self.instruction = _insn_at_slot(insns, self.insn_index)
            if self.instruction is not None:
                self.source = self.instruction.source
        if self.source is None and self.log_source is not None and self.log_source.file:
            self.source = self.log_source
        self.insn_text = (self.source.text if self.source and self.source.text else verifier_text) or (
            _render(self.instruction) if self.instruction is not None else "")
        super().__init__(self._message())

    def _message(self) -> str:
        name = f" {self.program_name!r}" if self.program_name else ""
        head = f"verifier rejected program{name}: {self.reason}"
        if self.insn_index is not None:
            where = []
            if self.source is not None:
                where.append(str(self.source))
            if self.insn_text:
                where.append(f"`{self.insn_text.strip()}`")
            head += f" at insn {self.insn_index}" + (f" ({': '.join(where)})" if where else "")
        tail = self.log_tail()
        return head + ("\nverifier log (last lines):\n" + tail if tail else "")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        body = [ln for ln in self.log.rstrip("\n").splitlines() if ln.strip()]
        return "\n".join("  " + ln for ln in body[-lines:])

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (e.g. across a fork in netlab.run_in_netns): drop refs that hold fds."""
        state = dict(self.__dict__)
        if self.instruction is not None:
            state["instruction"] = self.instruction.with_(ref=None)
        return (_restore_verifier_error, (str(self), state))

    @property
    def summary(self) -> str:
        """The first line of the message (for one-line reports)."""
        return str(self).splitlines()[0]


def _restore_verifier_error(message: str, state: dict[str, Any]) -> VerifierError:
    err = VerifierError.__new__(VerifierError)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


def _is_noise(line: str) -> bool:
    return line.startswith(_TRAILER) or line.startswith("; ") or bool(re.match(r"^(\d+: R\d|from \d+ to \d+)", line))


def _reason(log: str) -> str:
    """The verifier's error text: the lines after the last instruction it printed."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    last_insn = max((i for i, ln in enumerate(lines) if _INSN_LINE.match(ln)), default=-1)
    after = [ln for ln in lines[last_insn + 1:] if not _is_noise(ln)]
    if after:
        return "; ".join(after)
    for line in reversed(lines):
        if not _is_noise(line) and not _INSN_LINE.match(line):
            return line
    return ""


def _failing_insn(log: str) -> tuple[int | None, str]:
    lines = [ln for ln in log.splitlines() if ln.strip()]
    for line in reversed(lines):
        m = _INSN_LINE.match(line.strip())
        if m:
            return int(m.group(1)), m.group(3).strip()
    for line in reversed(lines[-5:]):  # "unreachable insn 3", "jump out of range from insn 1 to 9"
        m = _INSN_MENTION.search(line)
        if m:
            return int(m.group(1)), ""
    return None, ""


def _log_source(log: str) -> SourceLoc | None:
    """The "; <source line> @ file:line" the verifier printed last before the failing instruction."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    last_insn = max((i for i, ln in enumerate(lines) if _INSN_LINE.match(ln)), default=len(lines))
    for line in reversed(lines[:last_insn]):
        m = _LOG_SOURCE.match(line) if line.startswith("; ") else None
        if m:
            return SourceLoc(m.group(2) or "", int(m.group(3) or 0), 0, m.group(1))
    return None


def _insn_at_slot(insns: Sequence[Instruction], slot: int) -> Instruction | None:
    pc = 0
    for insn in insns:
        if pc == slot:
            return insn
        pc += insn.slots
        if pc > slot:
            return insn  # second slot of an ld_imm64
    return None


def _render(insn: Instruction) -> str:
    try:
        from .textfmt import format_insn

        return format_insn(insn, "kernel")
    except Exception:  # noqa: BLE001 - best effort for a message
        return insn.form.name


# --------------------------------------------------------------------------
# Preparing instructions.
# --------------------------------------------------------------------------


def _needs_resolve(items: Sequence[Any]) -> bool:
    return any(isinstance(i, Label) or isinstance(getattr(i, "ref", None), (Label, HelperRef)) for i in items)


def _map_fd(ref: MapRef, maps: Mapping[str, Any] | None, insn: Instruction) -> tuple[int, Any]:
    target = ref.map
    if isinstance(target, str):
        if not maps or target not in maps:
            known = ", ".join(sorted(maps)) if maps else "none given"
            raise builder.AssemblyError(f"program uses map {target!r}, but no such map was passed (maps: {known})",
                                        insn.source)
        target = maps[target]
    if isinstance(target, (int, Fd)):
        return int(target), target
    fd = getattr(target, "fd", None)
    if fd is None:
        raise builder.AssemblyError(f"map reference {ref.name!r} is not a map (no .fd)", insn.source)
    return int(fd), target


def prepare(items: Any, maps: Mapping[str, Any] | None = None,
            helpers: dict[str, int] | None = None) -> tuple[list[Instruction], list[Any]]:
    """Resolve labels/helpers and patch map references to fds.

    Returns the final instruction list (sources kept) and the map objects used.
    """
    if isinstance(items, (bytes, bytearray, memoryview)):
        items = isa.decode(bytes(items))
    elif hasattr(items, "items") and not isinstance(items, Mapping):  # a ProgramBuilder
        items = items.items
    items = list(items)
    if _needs_resolve(items):
        items = builder.resolve(items, helpers)
    out: list[Instruction] = []
    used: list[Any] = []
    for insn in items:
        if isinstance(insn.ref, MapRef):
            if insn.slots != 2:
                raise builder.AssemblyError("a map reference needs an ld_imm64 instruction", insn.source)
            fd, obj = _map_fd(insn.ref, maps, insn)
            used.append(obj)
            if insn.ref.value_offset is None:
                insn = insn.with_(src=Pseudo.MAP_FD, imm=fd, imm2=0)
            else:
                insn = insn.with_(src=Pseudo.MAP_VALUE, imm=fd, imm2=insn.ref.value_offset)
            isa.validate(insn)
        out.append(insn)
    return out, used


# --------------------------------------------------------------------------
# Programs.
# --------------------------------------------------------------------------


def _parse_prog_type(value: ProgType | int | str) -> ProgType:
    return ProgType.parse(value) if isinstance(value, str) else ProgType(value)


_DEFAULT_ATTACH = {ProgType.XDP: None}


class Program:
    """A loaded BPF program owning its fd; keeps its instructions for error/xlated mapping."""

    fd: Fd
    name: str
    prog_type: ProgType | int
    insns: list[Instruction]
    maps: list[Any]
    log: str
    expected_attach_type: AttachType | int | None
    functions: list[FuncEntry]

    def __init__(self, fd: Fd, *, name: str = "", prog_type: ProgType | int = ProgType.UNSPEC,
                 insns: Sequence[Instruction] = (), maps: Sequence[Any] = (), log: str = "",
                 expected_attach_type: AttachType | int | None = None, functions: Sequence[FuncEntry] = ()):
        self.fd, self.name, self.prog_type = fd, name, prog_type
        self.insns, self.maps, self.log = list(insns), list(maps), log
        self.expected_attach_type = expected_attach_type
        self.functions = list(functions)

    @classmethod
    def load(cls, insns: Any, *, prog_type: ProgType | int | str = "xdp", name: str = "", license: str = "GPL",
             maps: Mapping[str, Any] | None = None, expected_attach_type: AttachType | int | str | None = None,
             log_level: int = 0, log_size: int = 0, prog_flags: int = 0, ifindex: int = 0, kern_version: int = 0,
             helpers: dict[str, int] | None = None, btf: bool | None = None,
             funcs: Mapping[Any, Func] | Sequence[Func] | None = None, func_names: Mapping[Any, str] | None = None,
             line_info: bool = True) -> Program:
        """Load a program; raises VerifierError (with source lines) when the verifier refuses.

        ``log_level`` > 0 keeps the verifier log of a successful load in ``.log``;
        with 0 the first attempt runs without a log and only a failure is retried
        with one (level 1), as libbpf does.

        ``btf=True`` (the default when ``funcs`` or ``func_names`` is given) loads
        BTF with func_info (one FUNC per function: main and every BPF-to-BPF
        call target) and, unless ``line_info=False``, line_info from each
        instruction's SourceLoc, so the verifier log and ``bpftool prog dump
        xlated`` show the source lines.  ``funcs`` declares subprograms (keyed
        by BTF name, label name or slot index) as ``Func(linkage="global",
        args=("ctx", "u64"))``: a global one is verified once, not per call site.
        """
        pt = _parse_prog_type(prog_type)
        at = AttachType.parse(expected_attach_type) if isinstance(expected_attach_type, str) \
            else expected_attach_type
        final, used = prepare(insns, maps, helpers)
        code = isa.encode_program(final)
        btf_fd: Fd | None = None
        debug: btfext.DebugInfo | None = None
        if btf or (btf is None and (funcs or func_names)):
            try:
                debug = btfext.build(final, prog_type=pt, name=name, funcs=funcs, func_names=func_names,
                                     lines=line_info)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            btf_fd = load_btf(debug.btf.encode())
        try:
            return cls._load_code(pt, code, final, used, at, debug, btf_fd, license=license, name=name,
                                  log_level=log_level, log_size=log_size, prog_flags=prog_flags, ifindex=ifindex,
                                  kern_version=kern_version)
        finally:
            if btf_fd is not None:
                btf_fd.close()  # the loaded program holds its own reference

    @classmethod
    def _load_code(cls, pt: ProgType, code: bytes, final: list[Instruction], used: list[Any],
                   at: AttachType | int | None, debug: btfext.DebugInfo | None, btf_fd: Fd | None, *,
                   license: str, name: str, log_level: int, log_size: int, prog_flags: int, ifindex: int,
                   kern_version: int) -> Program:
        extra: dict[str, Any] = {}
        if debug is not None and btf_fd is not None:
            extra = dict(prog_btf_fd=int(btf_fd), func_info=debug.func_info, line_info=debug.line_info)
        size = log_size or (_FIRST_LOG_SIZE if log_level else 0)
        level = log_level
        while True:
            try:
                res = syscall.prog_load(pt, code, license, name=name, log_level=level, log_size=size,
                                        prog_flags=prog_flags, kern_version=kern_version, ifindex=ifindex,
                                        expected_attach_type=at, **extra)
                return cls(res.fd, name=name, prog_type=pt, insns=final, maps=used, log=res.log,
                           expected_attach_type=at, functions=debug.functions if debug else ())
            except BPFError as exc:
                if exc.errno in (errno.EPERM, errno.EBADF, errno.ENOMEM):  # not the verifier's verdict
                    raise
                if exc.errno == errno.ENOSPC and size and size < _MAX_LOG_SIZE:
                    needed = getattr(exc, "log_true_size", 0)
                    size = min(_MAX_LOG_SIZE, max(needed + 1, size * 4))
                    continue
                if not size:  # first attempt ran without a log: retry to capture it
                    size, level = _FIRST_LOG_SIZE, 1
                    continue
                if not exc.log:
                    raise
                raise VerifierError(name, exc.log, exc.errno, final) from None

    # ----- opening existing programs ---------------------------------------

    @classmethod
    def from_fd(cls, fd: Fd | int) -> Program:
        """Wrap a program fd (taking ownership of an Fd; an int is dup'ed)."""
        owned = fd if isinstance(fd, Fd) else Fd(os.dup(fd))
        info = syscall.prog_get_info(owned, arrays=False)
        return cls(owned, name=info.name, prog_type=info.type)

    @classmethod
    def from_pinned(cls, path: str | os.PathLike[str]) -> Program:
        fd = syscall.obj_get(path)
        if syscall.obj_type_of_fd(fd) != "prog":
            fd.close()
            raise UserError(f"{os.fspath(path)} is not a pinned program")
        return cls.from_fd(fd)

    @classmethod
    def from_id(cls, prog_id: int) -> Program:
        return cls.from_fd(syscall.prog_get_fd_by_id(prog_id))

    # ----- use -------------------------------------------------------------

    def test_run(self, data: bytes = b"", *, ctx: bytes | None = None, repeat: int = 1,
                 data_out_size: int | None = None, ctx_out_size: int = 0, flags: int = 0, cpu: int = 0,
                 batch_size: int = 0) -> TestRunResult:
        """BPF_PROG_TEST_RUN: returns retval, the (possibly rewritten) packet, ctx out and mean duration."""
        return syscall.prog_test_run(self.fd, data, data_size_out=data_out_size, ctx=ctx,
                                     ctx_size_out=ctx_out_size, repeat=repeat, flags=flags, cpu=cpu,
                                     batch_size=batch_size)

    def pin(self, path: str | os.PathLike[str]) -> None:
        syscall.obj_pin(self.fd, path)

    def info(self, *, arrays: bool = True) -> ProgInfo:
        """bpf_prog_info: name, id, tag, xlated/jited images, map ids, verified_insns, run stats."""
        return syscall.prog_get_info(self.fd, arrays=arrays)

    @property
    def id(self) -> int:
        return self.info(arrays=False).id

    @property
    def tag(self) -> str:
        return self.info(arrays=False).tag.hex()

    def source_of(self, insn_index: int) -> SourceLoc | None:
        """The source location of the instruction at verifier slot ``insn_index``."""
        insn = _insn_at_slot(self.insns, insn_index)
        return insn.source if insn is not None else None

    def close(self) -> None:
        self.fd.close()

    @property
    def closed(self) -> bool:
        return self.fd.closed

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.fd.closed else f"fd={int(self.fd)}"
        kind = self.prog_type.name.lower() if isinstance(self.prog_type, ProgType) else self.prog_type
        return f"<Program {self.name!r} {kind} {state}>"


def load(insns: Any, **kw: Any) -> Program:
    """Shorthand for ``Program.load``."""
    return Program.load(insns, **kw)
