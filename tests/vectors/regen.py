#!/usr/bin/env python3
"""Regenerate tests/vectors/llvm19.txt: LLVM 19's encoding and disassembly of every form.

For every instruction form LLVM 19 can write (all of ``isa.FORMS`` except those listed in
``randinsn.NOT_IN_LLVM``), a deterministic set of instructions with boundary registers,
immediates and offsets is rendered in LLVM syntax (hex immediates as objdump prints them,
plus decimal and ``rN`` alias spellings), then given to LLVM:

    llvm-mc-19 -triple bpfel -mcpu=v4 -show-encoding vectors.s        (bytes of each line)
    llvm-mc-19 -triple bpfel -mcpu=v4 -filetype=obj vectors.s -o v.o
    llvm-objdump-19 -d --mcpu=v4 v.o                                  (text of each instruction)

Each output line is ``form<TAB>input text<TAB>hex bytes<TAB>objdump text`` (objdump's
``<.text+0x..>`` suffix removed).  The bytes and the objdump text are LLVM's, not ours.

    .venv/bin/python tests/vectors/regen.py      # rewrites tests/vectors/llvm19.txt
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

from randinsn import NOT_IN_LLVM  # noqa: E402

from pybpfasm import isa  # noqa: E402
from pybpfasm.isa import Form, Instruction  # noqa: E402
from pybpfasm.textfmt import format_insn  # noqa: E402

LLVM_MC = os.environ.get("LLVM_MC", "llvm-mc-19")
LLVM_OBJDUMP = os.environ.get("LLVM_OBJDUMP", "llvm-objdump-19")
OUT = os.path.join(HERE, "llvm19.txt")

IMM32 = [0, 1, -1, 2, 0x7F, -0x80, 0x7FFF, -0x8000, 0xFFFF, 0x7FFFFFFF, -0x80000000, 0x7FFFFFFE, -0x7FFFFFFF]
OFF16 = [0, 1, -1, 2, -2, 0x7F, -0x80, 0x7FFF, -0x8000, 0x7FFE, -0x7FFF]
IMM64 = [0, 1, 0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF,
         0xFFFFFFFF80000000, 0x123456789ABCDEF0, 0x80000000]
REGS = [(1, 2), (0, 10), (10, 0), (9, 9)]


def instructions(form: Form) -> list[Instruction]:
    """Deterministic boundary instructions of one form."""
    out = []
    base = {"dst": 1 if form.dst == "reg" else 0, "src": 2 if form.src == "reg" else 0, "off": 0, "imm": 0}
    for dst, src in REGS:
        values = dict(base)
        if form.dst == "reg":
            values["dst"] = dst
        if form.src == "reg":
            values["src"] = src
        out.append(values)
    if form.off in ("mem", "jump16", "btf_fd"):
        out += [dict(base, off=v) for v in OFF16]
    if form.imm in ("imm", "helper", "jump32", "btf"):
        out += [dict(base, imm=v) for v in IMM32]
    if form.imm == "imm64":
        out += [dict(base, imm=v) for v in IMM64]
    insns = []
    for v in out:
        if form.name.startswith("ldind"):
            v["imm"] = 0  # LLVM spells LD_IND "skb[rN]", without an immediate
        insn = isa.make(form.name, dst=v["dst"], src=v["src"], off=v["off"], imm=v["imm"])
        if insn not in insns:
            insns.append(insn)
    return insns


_HEX = re.compile(r"(-?)0x([0-9a-f]+)")


def spellings(form: Form, insn: Instruction) -> list[str]:
    """Our LLVM text plus alternative spellings LLVM also accepts."""
    text = format_insn(insn, "llvm")
    out = [text]
    decimal = _HEX.sub(lambda m: str(int(m.group(1) + m.group(2), 16)), text)
    if decimal != text:
        out.append(decimal)
    if form.alias_llvm:  # e.g. "r0 = *(u32 *)(r1 + 4)" for "w0 = ..."
        out.append(re.sub(r"\bw(\d+)\b", r"r\1", text))
    return out


def main() -> int:
    rows: list[tuple[str, str]] = []
    for form in isa.FORMS:
        if form.name in NOT_IN_LLVM:
            continue
        for insn in instructions(form):
            rows += [(form.name, text) for text in spellings(form, insn)]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "vectors.s")
        obj = os.path.join(tmp, "vectors.o")
        with open(src, "w") as f:
            f.write("".join(f"\t{text}\n" for _, text in rows))
        enc = subprocess.run([LLVM_MC, "-triple", "bpfel", "-mcpu=v4", "-show-encoding", src],
                             check=True, capture_output=True, text=True)
        if enc.stderr.strip():
            print(enc.stderr, file=sys.stderr)
            return 1
        encodings = [bytes(int(b, 16) for b in m.group(1).split(","))
                     for m in re.finditer(r"# encoding: \[([^\]]*)\]", enc.stdout)]
        subprocess.run([LLVM_MC, "-triple", "bpfel", "-mcpu=v4", "-filetype=obj", src, "-o", obj], check=True)
        dump = subprocess.run([LLVM_OBJDUMP, "-d", "--mcpu=v4", obj], check=True, capture_output=True, text=True)
        texts = [re.sub(r"\s+<[^<>]*>$", "", m.group(1)).strip()
                 for m in re.finditer(r"^\s*\d+:\t(?:[0-9a-f]{2} ?)+\t(.*)$", dump.stdout, re.M)]
    if not len(rows) == len(encodings) == len(texts):
        print(f"count mismatch: {len(rows)} lines, {len(encodings)} encodings, {len(texts)} objdump lines",
              file=sys.stderr)
        return 1
    version = subprocess.run([LLVM_MC, "--version"], capture_output=True, text=True).stdout
    version = next((line.strip() for line in version.splitlines() if "version" in line), "?")
    with open(OUT, "w") as f:
        f.write("# Generated by tests/vectors/regen.py with " + version + "\n")
        f.write("# llvm-mc-19 -triple bpfel -mcpu=v4 -show-encoding ; llvm-objdump-19 -d --mcpu=v4\n")
        f.write("# form<TAB>input text<TAB>LLVM bytes (hex)<TAB>llvm-objdump text\n")
        for (name, text), code, dumped in zip(rows, encodings, texts):
            f.write(f"{name}\t{text}\t{code.hex()}\t{dumped}\n")
    print(f"wrote {len(rows)} vectors for {len({n for n, _ in rows})} forms to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
