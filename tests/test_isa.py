"""The ISA table: every form encodes to LLVM 19's bytes, decoding inverts encoding."""

from __future__ import annotations

import os
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpfasm import isa

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors"))
from randinsn import NOT_IN_LLVM, random_instruction  # noqa: E402
from vectorfiles import hand_vectors, llvm_vectors  # noqa: E402

LLVM = llvm_vectors()
HAND = hand_vectors()


def test_table_is_complete_and_unique() -> None:
    assert len(isa.FORMS) == len(isa.FORMS_BY_NAME) == 171
    opcodes = {f.opcode for f in isa.FORMS}
    # ALU/ALU64: 12 binary ops x K/X x 2 + 2 neg + 3 byte swaps = 53; JMP/JMP32: 11 conditions x K/X x 2
    # + ja, gotol, may_goto, call, exit = 49; LDX 7, ST 4, STX 4, atomic 2; ld_imm64 + 3 ABS + 3 IND = 7.
    assert len(opcodes) == 53 + 49 + 17 + 7
    for form in isa.FORMS:  # every form is reachable from its own encoding
        assert isa.form_of(isa.Instruction(form.opcode, **{k: v for k, v in form.fixed.items()})) is form


def test_every_form_has_a_vector() -> None:
    covered = {v.form for v in LLVM} | {v.form for v in HAND}
    assert covered == set(isa.FORMS_BY_NAME)
    assert {v.form for v in LLVM} == set(isa.FORMS_BY_NAME) - NOT_IN_LLVM


def test_llvm_bytes_decode_and_reencode() -> None:
    for v in LLVM:
        insns = isa.decode(v.code)
        assert len(insns) == 1, v
        assert insns[0].form.name == v.form, v
        assert isa.encode(insns[0]) == v.code, v


def test_hand_checked_bytes() -> None:
    for v in HAND:
        (insn,) = isa.decode(v.code)
        assert insn.form.name == v.form
        assert isa.encode(insn) == v.code


@pytest.mark.parametrize("form", isa.FORMS, ids=lambda f: f.name)
def test_random_roundtrip_per_form(form: isa.Form) -> None:
    rng = random.Random(form.name)
    for _ in range(50):
        insn = random_instruction(rng, form)
        code = isa.encode(insn)
        assert len(code) == 8 * insn.slots
        assert isa.decode(code) == [insn]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decode_encode_property(data: st.DataObject) -> None:
    form = data.draw(st.sampled_from(isa.FORMS))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    insn = random_instruction(rng, form)
    assert isa.decode(isa.encode(insn)) == [insn]


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=8, max_size=8))
def test_arbitrary_slots_decode_or_reject(raw: bytes) -> None:
    """Any 8 bytes either decode to an instruction that re-encodes identically, or raise DecodeError."""
    try:
        insns = isa.decode(raw + bytes(8) if raw[0] == 0x18 else raw)
    except isa.DecodeError:
        return
    assert isa.encode_program(insns)[: len(raw)] == raw


@pytest.mark.parametrize("bad", [
    bytes.fromhex("0f2100000000000000"[:16]) + b"\x00",  # not a multiple of 8
    bytes.fromhex("ff00000000000000"),  # no such opcode
    bytes.fromhex("0f21000001000000"),  # ALU register form with non-zero imm
    bytes.fromhex("bf1b000000000000"),  # r11
    bytes.fromhex("1801000001000000"),  # ld_imm64 without its second slot
    bytes.fromhex("3f21020000000000"),  # sdiv needs off=1; off=2 is nothing
])
def test_decode_rejects(bad: bytes) -> None:
    with pytest.raises(isa.DecodeError):
        isa.decode(bad)


def test_make_validates_ranges() -> None:
    with pytest.raises(isa.EncodingError):
        isa.make("add64_k", dst=1, imm=1 << 31)
    with pytest.raises(isa.EncodingError):
        isa.make("ldxw", dst=1, src=2, off=1 << 15)
    with pytest.raises(isa.EncodingError):
        isa.make("mov64_x", dst=11, src=1)
    assert isa.make("lddw", dst=1, imm=-1).imm == (1 << 64) - 1
