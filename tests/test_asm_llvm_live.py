"""Randomized live comparison with LLVM 19: thousands of random valid instructions a run.

One llvm-mc process assembles them all (bytes compared with our encoder and our assembler),
one llvm-objdump process prints them (text compared with our llvm syntax).  Skips with a
reason where llvm-19 is not installed (CI installs it).  PYBPFASM_LLVM_RANDOM sets the count.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys

import pytest

from pybpfasm import isa
from pybpfasm.asm import assemble_bytes
from pybpfasm.textfmt import format_insn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors"))
from randinsn import llvm_forms, random_instruction  # noqa: E402

LLVM_MC = shutil.which("llvm-mc-19")
LLVM_OBJDUMP = shutil.which("llvm-objdump-19")
COUNT = int(os.environ.get("PYBPFASM_LLVM_RANDOM", "5000"))

pytestmark = [pytest.mark.llvm,
              pytest.mark.skipif(not (LLVM_MC and LLVM_OBJDUMP), reason="llvm-mc-19 / llvm-objdump-19 not installed")]


def test_random_instructions_match_llvm(tmp_path) -> None:
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    forms = llvm_forms()
    insns = [random_instruction(rng, rng.choice(forms), llvm=True) for _ in range(COUNT)]
    texts = [format_insn(i, "llvm") for i in insns]
    src = tmp_path / "random.s"
    src.write_text("".join(f"\t{t}\n" for t in texts))
    obj = tmp_path / "random.o"
    subprocess.run([LLVM_MC, "-triple", "bpfel", "-mcpu=v4", "-filetype=obj", str(src), "-o", str(obj)],
                   check=True, capture_output=True)
    dump = subprocess.run([LLVM_OBJDUMP, "-d", "--mcpu=v4", str(obj)], check=True, capture_output=True,
                          text=True).stdout
    lines = re.findall(r"^\s*\d+:\t((?:[0-9a-f]{2} ?)+)\t(.*)$", dump, re.M)
    assert len(lines) == COUNT, f"seed {seed}"
    ours = assemble_bytes(src.read_text())
    pos = 0
    for insn, text, (hexbytes, dumped) in zip(insns, texts, lines):
        theirs = bytes.fromhex(hexbytes.replace(" ", ""))
        assert isa.encode(insn) == theirs, f"seed {seed}: {text}"
        assert ours[pos:pos + len(theirs)] == theirs, f"seed {seed}: {text}"
        assert text == re.sub(r"\s+<[^<>]*>$", "", dumped).strip(), f"seed {seed}"
        pos += len(theirs)
    assert pos == len(ours)
