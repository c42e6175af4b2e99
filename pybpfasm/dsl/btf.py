"""The little BTF a program with global functions needs: one FUNC per function, and func_info.

A global BPF function is verified once, on its own, from its BTF prototype
(scalar arguments are unknown values, a ``struct xdp_md *`` is the context),
instead of once per call site like a static one.  The kernel learns which
functions are global from BTF ``FUNC`` records (linkage) referenced by the
program's ``func_info``.  Nothing else (no line info, no CO-RE) is needed.

Layout of the blob (``include/uapi/linux/btf.h``): a 24-byte header, the type
section (``struct btf_type`` records, 12 bytes plus kind-specific data) and the
string section.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_STRUCT, KIND_FUNC, KIND_FUNC_PROTO = 1, 2, 4, 12, 13
INT_SIGNED = 1
LINKAGE_STATIC, LINKAGE_GLOBAL = 0, 1


@dataclass
class FuncDecl:
    name: str
    params: Sequence[tuple[str, str]]  # (name, "ctx" or "u64")
    linkage: int
    insn_off: int  # slot index of the function's first instruction


class _Builder:
    def __init__(self) -> None:
        self.types = bytearray()
        self.strings = bytearray(b"\0")
        self.count = 0
        self._names: dict[str, int] = {"": 0}

    def name(self, s: str) -> int:
        if s not in self._names:
            self._names[s] = len(self.strings)
            self.strings += s.encode() + b"\0"
        return self._names[s]

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"") -> int:
        self.types += struct.pack("<III", self.name(name), (kind << 24) | vlen, size_or_type) + extra
        self.count += 1
        return self.count


def build(funcs: Sequence[FuncDecl]) -> tuple[bytes, bytes]:
    """(BTF blob, func_info records) for the given functions, in instruction order."""
    b = _Builder()
    t_int = b.add("int", KIND_INT, 0, 4, struct.pack("<I", (INT_SIGNED << 24) | 32))
    t_u64 = b.add("long long unsigned int", KIND_INT, 0, 8, struct.pack("<I", 64))
    t_ctx = b.add("xdp_md", KIND_STRUCT, 0, 24)
    t_ctxp = b.add("", KIND_PTR, 0, t_ctx)
    info = bytearray()
    for f in sorted(funcs, key=lambda f: f.insn_off):
        params = b"".join(struct.pack("<II", b.name(pname), t_ctxp if kind == "ctx" else t_u64)
                          for pname, kind in f.params)
        proto = b.add("", KIND_FUNC_PROTO, len(f.params), t_int, params)
        func = b.add(f.name, KIND_FUNC, f.linkage, proto)
        info += struct.pack("<II", f.insn_off, func)
    hdr = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(b.types), len(b.types), len(b.strings))
    return hdr + bytes(b.types) + bytes(b.strings), bytes(info)
