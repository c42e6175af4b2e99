"""The mmap ring-buffer consumer against records produced by real BPF programs (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import struct
import threading
from typing import Any

import pytest

from pybpfasm import isa
from pybpfasm.builder import Label, MapRef, ProgramBuilder
from pybpfasm.helpers import HELPERS

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP = range(11)


class Asm:
    """Terse instruction emission on top of ``ProgramBuilder``."""

    def __init__(self) -> None:
        self.b = ProgramBuilder()
        self._n = 0

    def __call__(self, form: str, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, ref: Any = None) -> None:
        self.b.emit(isa.make(form, dst=dst, src=src, off=off, imm=imm, ref=ref))

    def label(self, name: str) -> None:
        self.b.label(name)

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def jmp(self, form: str, dst: int, operand: int, target: str) -> None:
        if form.endswith("_x"):
            self(form, dst=dst, src=operand, ref=Label(target))
        else:
            self(form, dst=dst, imm=operand, ref=Label(target))

    def goto(self, target: str) -> None:
        self("ja", ref=Label(target))

    def ld_map(self, reg: int, map_obj: Any) -> None:
        self("lddw_map_fd", dst=reg, imm=int(getattr(map_obj, "fd", 0)), ref=MapRef(map_obj))

    def ld_func(self, reg: int, target: str) -> None:
        self("lddw_func", dst=reg, ref=Label(target))

    def call(self, helper: str) -> None:
        self("call", imm=HELPERS[helper].id)

    def ret(self, value: int) -> None:
        self("mov64_k", dst=R0, imm=value)
        self("exit")

    def resolve(self) -> list[isa.Instruction]:
        return self.b.resolve()


PKT = bytes(64)
REC = struct.Struct("<QQ")


def _producer(events, counters, *, discard_every: int = 0, variable: bool = False):
    """XDP program: seq = counters[0].seq++; emit {seq, 3*seq}; a failed reserve counts counters[0].drops."""
    from pybpfasm.program import Program

    a = Asm()
    a("stw", dst=FP, off=-4, imm=0)
    a.ld_map(R1, counters)
    a("mov64_x", dst=R2, src=FP)
    a("add64_k", dst=R2, imm=-4)
    a.call("map_lookup_elem")
    a.jmp("jeq_k", R0, 0, "out")
    a("mov64_x", dst=R7, src=R0)
    a("mov64_k", dst=R8, imm=1)
    a("atomic_fetch_add64", dst=R7, src=R8, off=0)  # r8 = seq
    if variable:  # ringbuf_output of 8..32 bytes from the stack
        a("stxdw", dst=FP, src=R8, off=-40)
        a("mov64_x", dst=R1, src=R8)
        a("mul64_k", dst=R1, imm=3)
        a("stxdw", dst=FP, src=R1, off=-32)
        a("stxdw", dst=FP, src=R8, off=-24)
        a("stxdw", dst=FP, src=R8, off=-16)
        a("mov64_x", dst=R3, src=R8)
        a("and64_k", dst=R3, imm=3)
        a("lsh64_k", dst=R3, imm=3)
        a("add64_k", dst=R3, imm=8)
        a.ld_map(R1, events)
        a("mov64_x", dst=R2, src=FP)
        a("add64_k", dst=R2, imm=-40)
        a("mov64_k", dst=R4, imm=0)
        a.call("ringbuf_output")
        a.jmp("jne_k", R0, 0, "dropped")
        a.goto("out")
    else:
        a.ld_map(R1, events)
        a("mov64_k", dst=R2, imm=16)
        a("mov64_k", dst=R3, imm=0)
        a.call("ringbuf_reserve")
        a.jmp("jeq_k", R0, 0, "dropped")
        a("stxdw", dst=R0, src=R8, off=0)
        a("mov64_x", dst=R1, src=R8)
        a("mul64_k", dst=R1, imm=3)
        a("stxdw", dst=R0, src=R1, off=8)
        a("mov64_x", dst=R1, src=R0)
        a("mov64_k", dst=R2, imm=0)
        if discard_every:
            a("mod64_k", dst=R8, imm=discard_every)
            a.jmp("jne_k", R8, 0, "submit")
            a.call("ringbuf_discard")
            a.goto("out")
            a.label("submit")
        a.call("ringbuf_submit")
        a.goto("out")
    a.label("dropped")
    a("mov64_k", dst=R1, imm=1)
    a("atomic_add64", dst=R7, src=R1, off=8)
    a.label("out")
    a.ret(2)
    return Program.load(a.resolve(), prog_type="xdp", name="rb_producer")


@pytest.fixture
def ring(kernel):
    from pybpfasm import maps
    from pybpfasm.ringbuf import RingBuffer

    def make(size: int = 4096 * 4, **kw):
        events = maps.RingBuf(max_entries=size, name="rb_test")
        counters = maps.ArrayMap(value="<QQ", max_entries=1, name="rb_counters")
        prog = _producer(events, counters, **kw)
        rb = RingBuffer(events)
        made.append((events, counters, prog, rb))
        return events, counters, prog, rb

    made: list = []
    yield make
    for events, counters, prog, rb in made:
        rb.close()
        prog.close()
        events.close()
        counters.close()


def test_records_in_order(ring):
    _, counters, prog, rb = ring()
    assert not rb.wait(0)
    prog.test_run(PKT, repeat=100)
    assert rb.wait(0)
    records = [REC.unpack(r) for r in rb.drain()]
    assert records == [(i, 3 * i) for i in range(100)]
    assert rb.available() == 0
    assert counters[0] == (100, 0)


def test_burst_larger_than_ring_nothing_lost_unaccounted(ring):
    _, counters, prog, rb = ring(size=4096 * 4)
    capacity = 4096 * 4 // 24
    burst = 5 * capacity
    prog.test_run(PKT, repeat=burst)
    seen = [REC.unpack(r)[0] for r in rb.drain()]
    produced, lost = counters[0]
    assert produced == burst
    assert lost > 0 and len(seen) == capacity
    assert len(seen) + lost == burst  # events_lost equals what the consumer did not see
    assert seen == list(range(capacity))  # the first ones got in, the rest were refused
    # after draining, the ring accepts records again
    prog.test_run(PKT, repeat=10)
    assert [REC.unpack(r)[0] for r in rb.drain()] == list(range(burst, burst + 10))


def test_wrap_around_many_times(ring):
    _, counters, prog, rb = ring(size=4096, variable=True)
    seen: list[int] = []
    for _ in range(200):
        prog.test_run(PKT, repeat=37)
        for r in rb.drain():
            seq = struct.unpack_from("<Q", r)[0]
            assert len(r) == 8 + (seq & 3) * 8
            if len(r) >= 16:
                assert struct.unpack_from("<Q", r, 8)[0] == 3 * seq
            seen.append(seq)
    assert seen == list(range(200 * 37))
    assert counters[0][1] == 0
    assert rb.consumer_pos > 4 * 4096  # wrapped many times


def test_discarded_records_are_skipped(ring):
    _, _, prog, rb = ring(discard_every=5)
    prog.test_run(PKT, repeat=100)
    seqs = [REC.unpack(r)[0] for r in rb.drain()]
    assert seqs == [i for i in range(100) if i % 5]
    assert rb.discarded == 20


def test_batch_decode_matches_and_wraps(ring):
    _, counters, prog, rb = ring(size=4096)
    fmt = struct.Struct("<QQ")
    seen: list[tuple] = []
    for _ in range(50):
        prog.test_run(PKT, repeat=100)
        seen.extend(rb.decode(fmt))
    assert seen == [(i, 3 * i) for i in range(5000)]
    assert counters[0][1] == 0


def test_decode_other_sizes_go_to_callback(ring):
    _, _, prog, rb = ring(size=4096, variable=True)
    prog.test_run(PKT, repeat=40)
    others: list[bytes] = []
    fixed = rb.decode(struct.Struct("<QQ"), on_other=lambda r: others.append(bytes(r)))
    assert [t[0] for t in fixed] == [i for i in range(40) if i & 3 == 1]
    assert sorted(struct.unpack_from("<Q", r)[0] for r in others) == [i for i in range(40) if i & 3 != 1]


def test_epoll_wakes_a_waiting_consumer(ring):
    _, _, prog, rb = ring()
    got: list[int] = []

    def consume() -> None:
        while len(got) < 50:
            if rb.wait(5.0):
                got.extend(REC.unpack(r)[0] for r in rb.drain())

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(5):
        prog.test_run(PKT, repeat=10)
    thread.join(10)
    assert got == list(range(50))


def test_callback_gets_zero_copy_views(ring):
    _, _, prog, rb = ring()
    prog.test_run(PKT, repeat=3)
    kinds: list[type] = []
    assert rb.consume(lambda rec: kinds.append(type(rec))) == 3
    assert kinds == [memoryview] * 3


def test_rejects_non_power_of_two(kernel):
    from pybpfasm.ringbuf import RingBuffer, RingBufferError

    with pytest.raises(RingBufferError):
        RingBuffer(-1, max_entries=3000)


def test_lone_records_take_the_short_path_across_the_wrap(ring):
    """One record per wake-up (the usual join) decodes alone, also where it wraps past the ring's end."""
    _, _, prog, rb = ring(size=4096)
    fmt = struct.Struct("<QQ")
    seen: list[tuple] = []
    for _ in range(600):  # 24-byte strides: the records straddle the end of the 4096-byte ring
        prog.test_run(PKT)
        got = rb.decode(fmt)
        assert len(got) == 1
        seen.extend(got)
    assert seen == [(i, 3 * i) for i in range(600)]
    assert rb.available() == 0 and rb.records_seen == 600


def test_lone_discarded_or_odd_record_is_not_decoded_as_ours(ring):
    _, _, prog, rb = ring(size=4096, discard_every=2)
    fmt = struct.Struct("<QQ")
    out = [t for _ in range(20) for t in (prog.test_run(PKT), rb.decode(fmt))[1]]
    assert out == [(i, 3 * i) for i in range(20) if i % 2]
    assert rb.discarded == 10
