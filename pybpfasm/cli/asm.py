"""``pybpfasm asm`` and ``pybpfasm disasm``: text <-> raw little-endian bytecode (8 bytes a slot).

``-`` means stdin / stdout.  Errors in the input are raised as ``AssemblyError`` /
``DecodeError`` naming line:column (or slot); ``cli.main`` prints them as one line.
"""

from __future__ import annotations

import argparse
import sys


def _read_text(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    with open(path, encoding="utf-8") as f:
        return f.read(), path


def _read_bytes(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def cmd_asm(args: argparse.Namespace) -> int:
    from pybpfasm.asm import assemble_bytes

    text, name = _read_text(args.file)
    code = assemble_bytes(text, args.syntax, name)
    if args.output == "-":
        sys.stdout.buffer.write(code)
        sys.stdout.buffer.flush()
    else:
        with open(args.output, "wb") as f:
            f.write(code)
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from pybpfasm.disasm import disassemble

    text = disassemble(_read_bytes(args.file), args.syntax, index=not args.no_index)
    sys.stdout.write(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("asm", help="assemble BPF text to raw bytecode",
                              description="Assemble LLVM-syntax (also kernel verifier/bpftool spelling) or "
                                          "ubpf/bpf_conformance-syntax text to raw little-endian bytecode.")
    p.add_argument("file", help="input text file, - for stdin")
    p.add_argument("-o", "--output", default="-", help="output file (default: - for stdout)")
    p.add_argument("--syntax", choices=("llvm", "ubpf"), default="llvm", help="input syntax (default llvm)")
    p.set_defaults(func=cmd_asm)

    d = subparsers.add_parser("disasm", help="disassemble raw bytecode, one instruction a line",
                              description="Print raw little-endian bytecode one instruction a line with its slot "
                                          "index (kernel syntax is what bpftool prog dump xlated prints).")
    d.add_argument("file", help="input bytecode file, - for stdin")
    d.add_argument("--syntax", choices=("kernel", "llvm", "ubpf"), default="kernel",
                   help="output syntax (default kernel, as bpftool / the verifier print)")
    d.add_argument("--no-index", action="store_true", help="omit the slot index column")
    d.set_defaults(func=cmd_disasm)
