"""Readers of the committed vector files (shared by the ISA / asm / disasm tests)."""

from __future__ import annotations

import os
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))


class LlvmVector(NamedTuple):
    form: str
    text: str  # input given to llvm-mc
    code: bytes  # llvm-mc's bytes
    objdump: str  # llvm-objdump-19 -d --mcpu=v4 text of those bytes


class HandVector(NamedTuple):
    form: str
    code: bytes
    kernel: str
    llvm: str
    ubpf: str  # "-" when the form has no ubpf spelling for these values


def _rows(name: str) -> list[list[str]]:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]


def llvm_vectors() -> list[LlvmVector]:
    return [LlvmVector(form, text, bytes.fromhex(code), dump) for form, text, code, dump in _rows("llvm19.txt")]


def hand_vectors() -> list[HandVector]:
    return [HandVector(f, bytes.fromhex(c), k, llvm, u) for f, c, k, llvm, u in _rows("handchecked.txt")]
