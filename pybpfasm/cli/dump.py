"""``pybpfasm dump --xlated|--jited {id N | pinned PATH | name NAME | tag TAG} [--opcodes]``.

``--xlated`` prints exactly what ``bpftool prog dump xlated`` prints for the
same program (see ``pybpfasm.xlated``); ``--jited`` prints the JIT image as
hex bytes, one block per function.  ``bpftool``'s word order also works:
``pybpfasm dump xlated id 7 opcodes``.
"""

from __future__ import annotations

import argparse
import sys

from .. import btfext, introspect, syscall, xlated
from .prog import emit_json, wants_json

_HEADER_KEYS = ("id", "type", "name", "tag", "gpl_compatible", "run_time_ns", "run_cnt", "recursion_misses")


def _parse(args: argparse.Namespace) -> tuple[str, introspect.Selector, bool]:
    words = list(args.words)
    mode = "jited" if args.jited else "xlated"
    if words and words[0] in ("xlated", "jited"):
        mode = words.pop(0)
    opcodes = args.opcodes
    while words and words[-1] in ("opcodes", "linum"):  # bpftool's trailing keywords
        if words.pop() == "opcodes":
            opcodes = True
        else:
            args.linum = True
    return mode, introspect.parse_selector(words, "prog"), opcodes


def _dump(args: argparse.Namespace) -> int:
    mode, sel, opcodes = _parse(args)
    introspect.require_root()
    fds = introspect.select_fds("prog", sel)
    symbols = xlated.KernelSymbols.load()
    many = len(fds) > 1
    results = []
    out: list[str] = []
    try:
        for n, fd in enumerate(fds):
            info = syscall.prog_get_info(fd)
            if many and not wants_json(args):
                if n:
                    out.append("\n")  # bpftool separates several programs by an empty line
                out.append(introspect.prog_header_plain(fd))
            annotations = btfext.xlated_annotations(fd, linum=args.linum) if info.btf_id else None
            if mode == "xlated":
                if not info.xlated:
                    raise introspect.IntrospectError(f"program {info.id}: no xlated instructions visible "
                                                     "(kernel.kptr_restrict or missing CAP_SYS_ADMIN?)")
                namer = xlated.XlatedNamer(symbols, info.jited_ksyms)
                if wants_json(args):
                    body = xlated.xlated_json(info.xlated, namer, opcodes=opcodes, legacy=args.legacy_bpftool)
                    if many:  # bpftool: the prog header fields, then the instructions
                        head = {k: v for k, v in introspect.prog_record(fd).items() if k in _HEADER_KEYS}
                        results.append({**head, "insns": body})
                    else:
                        results.append(body)
                else:
                    out.extend(line + "\n" for line in xlated.xlated_lines(info.xlated, namer, opcodes=opcodes,
                                                                     legacy=args.legacy_bpftool,
                                                                     annotations=annotations))
            else:
                if not info.jited:
                    raise introspect.IntrospectError(f"program {info.id} is not JIT-compiled "
                                                     "(net.core.bpf_jit_enable=0?)")
                lines = xlated.jited_lines(info.jited, info.jited_func_lens, info.jited_ksyms, symbols)
                if wants_json(args):
                    results.append({"id": info.id, "jited": info.jited.hex(), "lines": lines})
                else:
                    out.extend(line + "\n" for line in lines)
    finally:
        for fd in fds:
            fd.close()
    if wants_json(args):
        emit_json(results if many or mode == "jited" else results[0], args)
    else:
        sys.stdout.write("".join(out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dump", help="print a loaded program's xlated instructions or JIT image (bpftool-exact)",
                              usage="pybpfasm dump (--xlated | --jited) {id N | pinned PATH | name NAME | tag TAG} "
                                    "[--opcodes] [--json]")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--xlated", action="store_true", help="the verifier-rewritten instructions (default)")
    kind.add_argument("--jited", action="store_true", help="the JIT image bytes")
    p.add_argument("--opcodes", action="store_true", help="also print each instruction's bytes")
    p.add_argument("--linum", action="store_true", help="with BTF line info: also print file, line and column")
    p.add_argument("--legacy-bpftool", action="store_true",
                   help="spell sdiv/movsx/bswap/gotol/... as bpftool built from kernel 6.1 sources does "
                        "(Debian 12's bpftool 7.1), for diffing against it")
    p.add_argument("-j", "--json", action="store_true", help="JSON output (bpftool's layout)")
    p.add_argument("-p", "--pretty", action="store_true", help="indented JSON")
    p.add_argument("words", nargs="+", metavar="SELECTOR", help="id N | pinned PATH | name NAME | tag TAG")
    p.set_defaults(func=_dump)
