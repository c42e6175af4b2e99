#!/usr/bin/env python3
"""Assembler speed: ``pybpfasm asm`` versus ``llvm-mc-19``, whole process each, on the same file.

Generates a 100,000-instruction LLVM-syntax file mixing every form LLVM can write (plus
labels and helper calls by name), then times both tools end to end (best of N runs) and
prints both times and the ratio.  Target: ratio <= 2.0.

    .venv/bin/python bench/asm_speed.py [--lines 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _randinsn():
    spec = importlib.util.spec_from_file_location("randinsn", os.path.join(ROOT, "tests", "vectors", "randinsn.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def make_source(lines: int, seed: int = 1) -> str:
    from pybpfasm.textfmt import format_insn

    randinsn = _randinsn()
    rng = random.Random(seed)
    forms = randinsn.llvm_forms()
    out = []
    for i in range(lines):
        if i % 50 == 0:
            out.append(f"L{i}:")
        if i % 50 == 10:
            out.append(f"\tif r1 != 0 goto L{i - 10}")
            continue
        if i % 50 == 20:
            out.append("\tcall bpf_map_lookup_elem")
            continue
        out.append("\t" + format_insn(randinsn.random_instruction(rng, rng.choice(forms), llvm=True), "llvm"))
    return "\n".join(out) + "\n"


def _run(cmd: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU time (user+sys) of one whole-process run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    llvm_mc = shutil.which("llvm-mc-19")
    # An installed package runs from compiled bytecode (pip compiles it); this machine may set
    # PYTHONDONTWRITEBYTECODE, which would make every timed run recompile our sources.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "pybpfasm")], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "bench.s")
        with open(src, "w") as f:
            f.write(make_source(args.lines))
        ours_cmd = [sys.executable, "-m", "pybpfasm.cli.main", "asm", src, "-o", os.path.join(tmp, "ours.bin")]
        llvm_cmd = [llvm_mc, "-triple", "bpfel", "-mcpu=v4", "-filetype=obj", src, "-o", os.path.join(tmp, "llvm.o")] \
            if llvm_mc else None
        # Runs alternate (ours, llvm, ours, ...) so both see the same load on a shared machine;
        # CPU time is printed too because wall time then also measures the other tenants.
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(_run(ours_cmd))
            if llvm_cmd:
                theirs.append(_run(llvm_cmd))
        print(f"instructions:       {args.lines}   (best of {args.runs} alternating runs, whole process)")
        print(f"                    {'wall':>8} {'cpu':>8}")
        best = [min(t[0] for t in ours), min(t[1] for t in ours)]
        print(f"pybpfasm asm:       {best[0]:8.3f} {best[1]:8.3f} s")
        if not llvm_cmd:
            print("llvm-mc-19:         not installed (apt-get install llvm-19)")
            return 0
        ref = [min(t[0] for t in theirs), min(t[1] for t in theirs)]
        print(f"llvm-mc-19:         {ref[0]:8.3f} {ref[1]:8.3f} s")
        print(f"ratio (ours/llvm):  {best[0] / ref[0]:8.2f} {best[1] / ref[1]:8.2f}   (target <= 2.0)")
        paired = sorted(o[1] / t[1] for o, t in zip(ours, theirs))
        print(f"median paired cpu ratio: {paired[len(paired) // 2]:.2f}")
        print(f"load average:       {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
