"""The text assemblers: LLVM syntax checked against LLVM 19's bytes, ubpf syntax, kernel
spelling, labels, and errors that name line:column."""

from __future__ import annotations

import os
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpfasm import isa
from pybpfasm.asm import AssemblyError, assemble, assemble_bytes
from pybpfasm.builder import MapRef
from pybpfasm.disasm import disassemble
from pybpfasm.textfmt import format_insn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors"))
from randinsn import llvm_forms, random_instruction  # noqa: E402
from vectorfiles import hand_vectors, llvm_vectors  # noqa: E402

LLVM = llvm_vectors()


def test_llvm_vectors_assemble_to_llvm_bytes() -> None:
    """Every committed LLVM vector (4000+ lines, every form, boundary values) in one input."""
    code = assemble_bytes("".join(f"\t{v.text}\n" for v in LLVM))
    if code != b"".join(v.code for v in LLVM):
        pos = 0
        for v in LLVM:
            assert code[pos:pos + len(v.code)] == v.code, v
            pos += len(v.code)


def test_hand_vectors_assemble() -> None:
    for v in hand_vectors():
        if v.form != "call_local":  # objdump's "call 0x5" reads back as a helper call, in LLVM too
            assert assemble_bytes(v.llvm) == v.code, v
        if v.ubpf != "-":
            assert assemble_bytes(v.ubpf, "ubpf") == v.code, v


def test_labels_helpers_and_local_calls() -> None:
    text = """
    ; a comment line
    entry:                      // label on its own line
        r6 = r1                 # trailing comment
        call bpf_ktime_get_ns
        call ktime_get_ns
        if r0 == 0 goto out
        call func
        goto entry
    out: exit
    func:
        r0 = 0
        exit
    """
    insns = assemble(text, filename="prog.s")
    assert [format_insn(i, "kernel") for i in insns] == [
        "(bf) r6 = r1",
        "(85) call bpf_ktime_get_ns#5",
        "(85) call bpf_ktime_get_ns#5",
        "(15) if r0 == 0x0 goto pc+2",
        "(85) call pc+2",
        "(05) goto pc-6",
        "(95) exit",
        "(b7) r0 = 0",
        "(95) exit",
    ]
    assert all(i.ref is None for i in insns)  # resolved: nothing left for a loader
    assert insns[0].source is not None and (insns[0].source.file, insns[0].source.line) == ("prog.s", 4)
    assert insns[0].source.text.startswith("r6 = r1")


def test_clang_style_listing_with_directives_and_map_references() -> None:
    text = """
        .text
        .globl  xdp_prog
        .p2align 3
    xdp_prog:
        r1 = counters ll
    .LBB0_1:
        r2 = 0x1 ll
        if r1 == 0 goto .LBB0_1
        exit
    """
    insns = assemble(text)
    assert [i.form.name for i in insns] == ["lddw", "lddw", "jeq_k", "exit"]
    assert insns[0].ref == MapRef("counters") and insns[0].imm == 0
    assert insns[2].ref is None and insns[2].off == -3
    with pytest.raises(AssemblyError, match="map reference 'counters' needs a loader"):
        assemble_bytes(text)


def test_ld_imm64_counts_two_slots_for_labels() -> None:
    code = assemble_bytes("r1 = 0x1122334455667788 ll\ngoto end\nr1 = 1 ll\nend: exit")
    insns = isa.decode(code)
    assert insns[1].off == 2  # skips the 2-slot ld_imm64


def test_local_call_spellings() -> None:
    assert isa.decode(assemble_bytes("call +5"))[0].form.name == "call_local"  # our extension
    assert isa.decode(assemble_bytes("call 5"))[0].form.name == "call"  # as llvm-mc reads it


def test_gotol_and_may_goto_with_labels() -> None:
    insns = isa.decode(assemble_bytes("top: may_goto top\ngotol top\n"))
    assert insns[0].off == -1 and insns[1].imm == -2


def test_kernel_and_bpftool_spelling_accepted() -> None:
    listing = """\
   0: (bf) r6 = r1
   1: (18) r1 = 0x1234
   3: (b7) r2 = 0x10
   4: (61) r0 = *(u32 *)(r6 +4)
   5: (c3) r2 = atomic_fetch_add((u32 *)(r10 -8), r2)
   6: (db) r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r3)
   7: (56) if w0 != 0x2 goto pc+1
   8: (85) call bpf_map_lookup_elem#1
   9: (05) goto pc-2
  10: (95) exit
"""
    insns = isa.decode(assemble_bytes(listing))
    assert disassemble(insns) == listing.replace("0x10\n", "16\n")  # ALU immediates print in decimal


def test_ubpf_syntax() -> None:
    text = """
        mov %r0, 1
        mov32 %r1, -1
        ldxw %r0, [%r1+4]
        ldxdw %r2, [%r10-8]
        stb [%r10-1], 7
        stxh [%r1], %r2
        lddw %r0, 0x123456789
        jeq %r1, 0, +3
        jsgt32 %r1, %r2, done
        lock fetch add32 [%r10-4], %r1
        lock cmpxchg [%r10-8], %r3
        be16 %r0
        bswap64 %r0
        movsx1632 %r3, %r4
        sdiv %r0, -4
        call 1
        call local done
    done:
        exit
    """
    insns = assemble(text, "ubpf")
    expected = [
        "r0 = 1", "w1 = -1", "r0 = *(u32 *)(r1 +4)", "r2 = *(u64 *)(r10 -8)", "*(u8 *)(r10 -1) = 7",
        "*(u16 *)(r1 +0) = r2", "r0 = 0x123456789", "if r1 == 0x0 goto pc+3", "if w1 s> w2 goto pc+8",
        "r1 = atomic_fetch_add((u32 *)(r10 -4), r1)", "r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r3)",
        "r0 = be16 r0", "r0 = bswap64 r0", "w3 = (s16)w4", "r0 s/= -4", "call bpf_map_lookup_elem#1",
        "call pc+0", "exit",
    ]
    assert [format_insn(i, "kernel", opcode_prefix=False) for i in insns] == expected


def test_ubpf_conformance_conventions() -> None:
    """bpf_conformance spellings: "swap16" for bswap16, "call helper N", and the label "exit"
    standing for the first exit instruction."""
    insns = assemble("jne %r0, 1, exit\nswap16 %r0\ncall helper 5\nexit\nmov %r0, 0\nexit\n", "ubpf")
    assert [format_insn(i, "kernel", opcode_prefix=False) for i in insns][:4] == [
        "if r0 != 0x1 goto pc+2", "r0 = bswap16 r0", "call bpf_ktime_get_ns#5", "exit"]


@pytest.mark.parametrize("text, message, line, column", [
    ("r0 = 1\n  bogus r1, r2", "unknown instruction", 2, 3),
    ("r0 = r11", "bad register", 1, 6),
    ("w1 = *(u32 *)(r12 + 0)", "bad register", 1, 15),
    ("r0 += 0x100000000", "out of range", 1, 7),
    ("r0 = *(u64 *)(r1 + 32768)", "out of range", 1, 18),
    ("if r0 > 1 goto +40000", "out of range", 1, 16),
    ("goto nowhere", "undefined label 'nowhere'", 1, 6),
    ("a: exit\n  a: exit", "duplicate label 'a'", 2, 3),
    ("call no_such_helper", "unknown helper", 1, 6),
    ("r1 = le16 r2", "operands do not fit", 1, 1),
    ("r0 = 1 ll ll", "unknown instruction", 1, 1),
])
def test_errors_name_line_and_column(text: str, message: str, line: int, column: int) -> None:
    with pytest.raises(AssemblyError) as info:
        assemble_bytes(text, filename="x.s")
    assert message in str(info.value)
    assert info.value.source is not None
    assert (info.value.source.file, info.value.source.line, info.value.source.column) == ("x.s", line, column)
    assert str(info.value).startswith(f"x.s:{line}:{column}: ")


def test_jump_out_of_range_names_gotol() -> None:
    text = "start: r0 = 0\n" + "r0 += 1\n" * 40000 + "goto start\n"
    with pytest.raises(AssemblyError, match="use gotol") as info:
        assemble_bytes(text)
    assert info.value.source is not None and info.value.source.line == 40002


def test_empty_and_comment_only_input() -> None:
    assert assemble_bytes("") == b""
    assert assemble_bytes("# nothing\n// here\n; either\n") == b""


def test_unknown_syntax() -> None:
    with pytest.raises(ValueError):
        assemble_bytes("exit", "gas")


def _roundtrip_forms(syntax: str) -> list[isa.Form]:
    forms = list(isa.FORMS) if syntax != "llvm" else llvm_forms() + [isa.FORMS_BY_NAME["gotol"]]
    if syntax == "kernel":  # the kernel prints no pseudo source for ld_imm64 and no BTF fd for kfunc calls
        forms = [f for f in forms if not (f.wide and f.src) and f.name != "call_kfunc"]
    if syntax == "ubpf":
        forms = [f for f in forms if f.name != "call_kfunc"]
    return forms


@pytest.mark.parametrize("syntax", ["llvm", "kernel", "ubpf"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_asm_of_disasm_is_identity(syntax: str, seed: int) -> None:
    """asm(disasm(b)) == b for random valid programs, in each syntax (where it can spell the form)."""
    rng = random.Random(seed)
    forms = _roundtrip_forms(syntax)
    insns = [random_instruction(rng, rng.choice(forms), llvm=syntax == "llvm") for _ in range(60)]
    if syntax == "kernel":  # the kernel prints helper names; unknown ids print as "unknown#N"
        from pybpfasm.helpers import by_id
        insns = [i.with_(imm=rng.choice(list(by_id))) if i.form.name == "call" else i for i in insns]
    if syntax == "llvm":  # objdump's "call 0x5" for a local call reads back as a helper call
        insns = [i for i in insns if i.form.name != "call_local"]
    code = isa.encode_program(insns)
    text = disassemble(code, syntax)
    assert assemble_bytes(text, "ubpf" if syntax == "ubpf" else "llvm") == code, text


_ALPHABET = st.sampled_from(list("rw0123456789 +-*=()[]<>&|^%s/:,#;.xabcdefgilmnopqtuwkvlLhj\t\n") +
                            ["r1", "w2", "goto", "call", "ll", "lock", "*(u32 *)", "if", "exit", "0x", "%r1"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join), st.sampled_from(["llvm", "ubpf"]))
def test_garbage_input_raises_only_assembly_errors(text: str, syntax: str) -> None:
    try:
        code = assemble_bytes(text, syntax)
    except AssemblyError as exc:
        assert exc.source is not None and exc.source.line >= 1 and exc.source.column >= 1
        return
    assert len(code) % 8 == 0
    isa.decode(code)  # whatever was accepted is valid bytecode
