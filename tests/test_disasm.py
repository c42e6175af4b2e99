"""The disassembler: LLVM syntax equals llvm-objdump-19's text, kernel syntax follows
kernel/bpf/disasm.c exactly, and the CLI round-trips files."""

from __future__ import annotations

import os
import sys

import pytest

from pybpfasm import isa
from pybpfasm.asm import assemble_bytes
from pybpfasm.cli.main import main
from pybpfasm.disasm import disassemble
from pybpfasm.isa import SourceLoc
from pybpfasm.textfmt import KernelCallbacks, format_insn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors"))
from vectorfiles import hand_vectors, llvm_vectors  # noqa: E402


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_llvm_syntax_matches_objdump() -> None:
    """Our llvm syntax prints what llvm-objdump-19 -d --mcpu=v4 prints (its <.text+..> suffix removed)."""
    mismatches = []
    for v in llvm_vectors():
        (insn,) = isa.decode(v.code)
        if _norm(format_insn(insn, "llvm")) != _norm(v.objdump):
            mismatches.append((v.text, format_insn(insn, "llvm"), v.objdump))
    assert not mismatches, mismatches[:10]


def test_hand_checked_text() -> None:
    for v in hand_vectors():
        (insn,) = isa.decode(v.code)
        assert format_insn(insn, "kernel") == v.kernel
        assert format_insn(insn, "llvm") == v.llvm
        if v.ubpf != "-":
            assert format_insn(insn, "ubpf") == v.ubpf


@pytest.mark.parametrize("text, kernel", [
    # One case per print_bpf_insn branch (kernel/bpf/disasm.c).
    ("r6 = r1", "(bf) r6 = r1"),
    ("w6 = w1", "(bc) w6 = w1"),
    ("r0 = -1", "(b7) r0 = -1"),
    ("w3 += 0xffffffff", "(04) w3 += -1"),
    ("r1 s/= r2", "(3f) r1 s/= r2"),
    ("w1 s%= -7", "(94) w1 s%= -7"),
    ("r1 = (s8)r2", "(bf) r1 = (s8)r2"),
    ("w1 = (s16)w2", "(bc) w1 = (s16)w2"),
    ("r1 = -r1", "(87) r1 = -r1"),
    ("w1 = -w1", "(84) w1 = -w1"),
    ("r2 = be16 r2", "(dc) r2 = be16 r2"),
    ("r2 = le64 r2", "(d4) r2 = le64 r2"),
    ("r2 = bswap32 r2", "(d7) r2 = bswap32 r2"),
    ("r1 s>>= 63", "(c7) r1 s>>= 63"),
    ("*(u64 *)(r10 - 8) = r1", "(7b) *(u64 *)(r10 -8) = r1"),
    ("*(u16 *)(r10 - 2) = w1", "(6b) *(u16 *)(r10 -2) = r1"),
    ("*(u32 *)(r1 + 0) = -5", "(62) *(u32 *)(r1 +0) = -5"),
    ("w0 = *(u8 *)(r1 + 12)", "(71) r0 = *(u8 *)(r1 +12)"),
    ("r0 = *(s16 *)(r1 - 2)", "(89) r0 = *(s16 *)(r1 -2)"),
    ("lock *(u64 *)(r1 + 8) += r2", "(db) lock *(u64 *)(r1 +8) += r2"),
    ("lock *(u32 *)(r1 + 8) ^= w2", "(c3) lock *(u32 *)(r1 +8) ^= r2"),
    ("r2 = atomic_fetch_or((u64 *)(r1 + 0), r2)", "(db) r2 = atomic64_fetch_or((u64 *)(r1 +0), r2)"),
    ("w2 = atomic_fetch_and((u32 *)(r1 + 0), w2)", "(c3) r2 = atomic_fetch_and((u32 *)(r1 +0), r2)"),
    ("r2 = xchg_64(r1 + 4, r2)", "(db) r2 = atomic64_xchg((u64 *)(r1 +4), r2)"),
    ("w0 = cmpxchg32_32(r1 + 4, w0, w3)", "(c3) r0 = atomic_cmpxchg((u32 *)(r1 +4), r0, r3)"),
    ("r0 = *(u16 *)skb[12]", "(28) r0 = *(u16 *)skb[12]"),
    ("r0 = *(u8 *)skb[r7]", "(50) r0 = *(u8 *)skb[r7 + 0]"),
    ("r1 = 0xffffffffffffffff ll", "(18) r1 = 0xffffffffffffffff"),
    ("call 1", "(85) call bpf_map_lookup_elem#1"),
    ("call 100000", "(85) call unknown#100000"),
    ("goto -5", "(05) goto pc-5"),
    ("may_goto +7", "(e5) may_goto pc+7"),
    ("if r1 == -1 goto +3", "(15) if r1 == 0xffffffff goto pc+3"),
    ("if w1 s< w2 goto -1", "(ce) if w1 s< w2 goto pc-1"),
    ("if r1 & 0x10 goto +0", "(45) if r1 & 0x10 goto pc+0"),
    ("exit", "(95) exit"),
])
def test_kernel_syntax(text: str, kernel: str) -> None:
    (insn,) = isa.decode(assemble_bytes(text))
    assert format_insn(insn, "kernel") == kernel


def test_kernel_callbacks_like_bpftool() -> None:
    code = assemble_bytes("r1 = map_fd(5) ll\nr2 = map_value(5, 16) ll\ncall_kfunc 77, 0\ncall 1")
    names = {5: 12}  # fd -> map id, as the xlated dumper would know

    def imm(insn: isa.Instruction, full: int) -> str:
        if insn.src == isa.Pseudo.MAP_FD:
            return f"map[id:{names[full]}]"
        if insn.src == isa.Pseudo.MAP_VALUE:
            return f"map[id:{names[full & 0xFFFFFFFF]}][0]+{full >> 32}"
        return f"0x{full:x}"

    cbs = KernelCallbacks(imm=imm, call=lambda insn: "bpf_obj_new_impl" if insn.src == 2 else None)
    assert disassemble(code, callbacks=cbs) == (
        "   0: (18) r1 = map[id:12]\n"
        "   2: (18) r2 = map[id:12][0]+16\n"
        "   4: (85) call bpf_obj_new_impl#77\n"
        "   5: (85) call bpf_map_lookup_elem#1\n")
    hidden = disassemble(code, callbacks=KernelCallbacks(allow_ptr_leaks=False))
    assert "r1 = 0x0\n" in hidden and "r2 = 0x0\n" in hidden


def test_listing_indexes_and_annotation() -> None:
    insns = [isa.make("lddw", dst=1, imm=7, source=SourceLoc("p.py", 3, 0, "x = 7")),
             isa.make("mov64_k", dst=0, imm=0, source=SourceLoc("p.py", 4, 0, "return 0")),
             isa.make("exit", source=SourceLoc("p.py", 4, 0, "return 0"))]
    assert disassemble(insns, annotate=True) == (
        "; p.py:3  x = 7\n   0: (18) r1 = 0x7\n; p.py:4  return 0\n   2: (b7) r0 = 0\n   3: (95) exit\n")
    assert disassemble(insns, "ubpf", index=False) == "lddw %r1, 0x7\nmov %r0, 0\nexit\n"
    assert disassemble(insns, "llvm").splitlines()[0] == "   0: r1 = 0x7 ll"


def test_cli_asm_disasm_roundtrip(tmp_path, capsys) -> None:
    src = tmp_path / "p.s"
    src.write_text("r0 = 2\nexit\n")
    out = tmp_path / "p.bin"
    assert main(["asm", str(src), "-o", str(out)]) == 0
    assert out.read_bytes() == bytes.fromhex("b7000000020000009500000000000000")
    assert main(["disasm", str(out)]) == 0
    assert capsys.readouterr().out == "   0: (b7) r0 = 2\n   1: (95) exit\n"
    assert main(["disasm", "--syntax", "ubpf", "--no-index", str(out)]) == 0
    assert capsys.readouterr().out == "mov %r0, 2\nexit\n"
    ubpf = tmp_path / "u.s"
    ubpf.write_text("mov %r0, 2\nexit\n")
    assert main(["asm", "--syntax", "ubpf", str(ubpf), "-o", str(tmp_path / "u.bin")]) == 0
    assert (tmp_path / "u.bin").read_bytes() == out.read_bytes()


def test_cli_user_errors_are_one_line(tmp_path, capsys) -> None:
    src = tmp_path / "bad.s"
    src.write_text("r0 = 2\n  r0 = r12\n")
    assert main(["asm", str(src), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{src}:2:8: bad register" in err
    bin_ = tmp_path / "bad.bin"
    bin_.write_bytes(b"\xff" * 8)
    assert main(["disasm", str(bin_)]) == 2
    assert "slot 0" in capsys.readouterr().err


def test_cli_stdin_stdout() -> None:
    import subprocess

    run = [sys.executable, "-m", "pybpfasm.cli.main"]
    code = subprocess.run([*run, "asm", "-"], input=b"r0 = 1\nexit\n", capture_output=True, check=True).stdout
    assert code == bytes.fromhex("b7000000010000009500000000000000")
    text = subprocess.run([*run, "disasm", "-", "--syntax", "llvm"], input=code, capture_output=True,
                          check=True).stdout
    assert text == b"   0: r0 = 0x1\n   1: exit\n"
    bad = subprocess.run([*run, "asm", "-"], input=b"r0 = r12\n", capture_output=True)
    assert bad.returncode == 2 and bad.stderr.decode().count("\n") == 1 and b"<stdin>:1:6" in bad.stderr
