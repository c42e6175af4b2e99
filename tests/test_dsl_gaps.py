"""Raw (memory-order) stores and checksums, pointers to header fields, zeroed record padding, and
DSL programs loaded with BTF (func_info + DSL line info) -- on the kernel."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from scapy.layers.inet import ICMP as SICMP
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from pybpfasm import btfext
from pybpfasm.dsl import (
    XDP_PASS,
    XDP_TX,
    Else,
    If,
    Range,
    Return,
    csum_diff,
    csum_fold,
    global_func,
    local,
    raw,
    reserve,
    subprog,
    trace_printk,
    xdp,
)
from pybpfasm.headers import Ethernet, IPv4
from pybpfasm.layout import Struct, be32, pad, u8, u16, u32, u64
from pybpfasm.maps import RingBuf

pytestmark = pytest.mark.kernel

ICMP_PKT = bytes(Ether() / IP(src="10.1.2.3", dst="10.0.0.1", ttl=64) / SICMP())


def run(prog, frame: bytes):
    with prog.load() as loaded:
        res = loaded.test_run(frame)
        return res.retval, res.data


def good_checksum(frame: bytes) -> bool:
    out = Ether(frame)
    chk = out[IP].chksum
    del out[IP].chksum
    return Ether(bytes(out))[IP].chksum == chk


def test_csum_fold_stores_a_full_checksum_without_swap(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        ip.daddr = 0x0A000063
        ip.check = 0
        ip.check = csum_fold(csum_diff(0, 0, ip, 20))
        Return(XDP_TX)

    ret, data = run(prog, ICMP_PKT)
    assert ret == XDP_TX and Ether(data)[IP].dst == "10.0.0.99" and good_checksum(data)


def test_incremental_checksum_with_a_big_endian_seed(kernel):
    """RFC 1624: new = ~(~old + ~m + m'); csum_diff's seed takes the be16 field's bits as they are."""
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        old = local(u32)
        old.set(raw(ip.daddr))
        ip.daddr = 0xC0A80104
        ip.check = csum_fold(csum_diff(old, 4, ip.field_view("daddr"), 4, ip.check ^ 0xFFFF))
        Return(XDP_TX)

    ret, data = run(prog, ICMP_PKT)
    assert ret == XDP_TX and Ether(data)[IP].dst == "192.168.1.4" and good_checksum(data)


def test_raw_and_set_raw_store_bits_as_they_are(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        ip.id = raw(0x3412)                  # constant: its little-endian bytes 12 34
        ip.set_raw("check", ip.id.value())   # register: 0x1234 stored little-endian -> 34 12
        ip.saddr = raw(ip.daddr)             # a be field's bits into another be field: a plain copy
        Return(XDP_TX)

    _, data = run(prog, ICMP_PKT)
    hdr = data[14:34]
    assert hdr[4:6] == b"\x12\x34" and hdr[10:12] == b"\x34\x12" and hdr[12:16] == hdr[16:20]


def test_trace_printk_takes_a_header_field_for_pI4(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        trace_printk("pybpfasm gaps %pI4 %pI4 %d\n", ip.field_view("saddr"), ip.field_addr("daddr"), ip.ttl)
        Return(XDP_PASS)

    assert run(prog, ICMP_PKT)[0] == XDP_PASS


class Dirty(Struct):
    words = u64[4]


class Padded(Struct):
    addr = be32
    proto = u8
    _pad = pad(3)
    count = u64
    port = u16       # 6 bytes of tail padding


def test_record_padding_is_always_zeroed(kernel):
    """Fill the ring with 0xFF records until it wraps, then reserve padded records over that memory:
    padding bytes must read zero (explicit pad, alignment gap, tail)."""
    assert (Padded.size, Dirty.size) == (24, 32)
    ring = RingBuf(max_entries=4096, name="t_gpad")
    try:
        @xdp
        def prog(pkt):
            with If(pkt.len == 14):
                with reserve(ring, Dirty) as d:
                    for i in range(4):
                        d.words[i] = -1
                with Else():
                    Return(XDP_PASS)
            with Else():
                with reserve(ring, Padded) as e:
                    e.addr = 1
                    e.proto = 2
                    e.count = 3
                    e.port = 4
                with Else():
                    Return(XDP_PASS)
            Return(XDP_PASS)

        from pybpfasm.ringbuf import RingBuffer
        with prog.load() as loaded, RingBuffer(ring) as rb:
            for _ in range(4096 // 40 + 3):       # more than one lap of the ring
                loaded.test_run(bytes(14))
                list(rb.drain())
            for _ in range(4096 // 32 + 3):
                loaded.test_run(bytes(60))
                recs = [bytes(r) for r in rb.drain()]
                assert len(recs) == 1 and len(recs[0]) == Padded.size
                assert recs[0][5:8] == b"\0\0\0" and recs[0][18:24] == bytes(6)
                assert Padded.unpack(recs[0]) == Padded(addr=1, proto=2, count=3, port=4)
    finally:
        ring.close()


def test_reserve_zero_true_zeroes_every_byte():
    ring = RingBuf(max_entries=4096, name="t_gz")
    try:
        @xdp
        def prog(pkt):
            with reserve(ring, Padded, zero=True) as e:
                e.proto = 2
            Return(XDP_PASS)

        stores = [i for i in prog.instructions if i.opcode in (0x62, 0x6A, 0x72, 0x7A)]
        assert sum({0x62: 4, 0x6A: 2, 0x72: 1, 0x7A: 8}[i.opcode] for i in stores) >= Padded.size
    finally:
        ring.close()


# --------------------------------------------------------------------------- BTF through Program.load


@subprog
def _twice(x):
    Return(x * 2)


@global_func
def _plus_one(pkt, x):
    Return(x + 1)


@xdp
def _calls(pkt):
    Return(_plus_one(pkt, _twice(pkt.len)))


def test_dsl_load_carries_btf_func_and_line_info(kernel):
    c = _calls.compile()
    assert {f.linkage for f in c.funcs.values()} == {"static", "global"}
    with _calls.load() as prog:
        assert prog.test_run(bytes(20)).retval == 41
        assert sorted((f.name, f.linkage) for f in prog.functions) == [
            ("_calls", "global"), ("_plus_one", "global"), ("_twice", "static")]
        funcs, lines = btfext.prog_debug_info(int(prog.fd))
        assert len(funcs) == 3
        first = {r.insn_off: r for r in lines}
        for off, name in funcs:
            # every function's first instruction is attributed to its own def line
            assert first[off].text.startswith(f"def {name}(")
            assert first[off].file.endswith("test_dsl_gaps.py")
    with _twice_only.load(btf=False) as prog:   # bare bytecode still possible without global functions
        assert prog.test_run(bytes(20)).retval == 40


@xdp
def _twice_only(pkt):
    Return(_twice(pkt.len))


def test_dsl_program_dump_matches_bpftool(kernel):
    """``pybpfasm dump xlated`` of a DSL program (BTF signatures and DSL source lines) == bpftool."""
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.skip("bpftool not installed")
    import io
    from contextlib import redirect_stdout

    from pybpfasm.cli.main import main as cli_main
    with _calls.load() as prog:
        pid = str(prog.id)
        theirs = subprocess.run([bpftool, "prog", "dump", "xlated", "id", pid], capture_output=True, text=True,
                                timeout=60, check=True).stdout
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert cli_main(["dump", "xlated", "id", pid]) == 0
    assert "; Return(_plus_one(pkt, _twice(pkt.len)))" in theirs
    assert "; def _twice(x):" in theirs
    assert buf.getvalue() == theirs


# --------------------------------------------------------------------------- Range(unroll=k)


@pytest.mark.parametrize("unroll", [1, 2, 3, 4])
@pytest.mark.parametrize("converge", [False, True])
def test_range_unroll_keeps_loop_semantics(kernel, unroll, converge):
    """Continue/Break in every copy, a trip count (10) not a multiple of the copies, a bound from the packet."""
    from pybpfasm.dsl import Break, Continue, Var

    @xdp
    def prog(pkt):
        n = pkt.len - 14
        acc = Var(u64, 0)
        for i in Range(0, 20, 2, converge=converge, unroll=unroll):
            with If(i >= n):
                Break()
            with If(i == 6):
                Continue()
            acc.set(acc * 3 + i + 1)
        Return(acc.get() & 0x7FFFFFFF)

    def want(n: int) -> int:
        acc = 0
        for i in range(0, 20, 2):
            if i >= n:
                break
            if i == 6:
                continue
            acc = acc * 3 + i + 1
        return acc & 0x7FFFFFFF

    with prog.load() as loaded:
        for n in (0, 1, 5, 7, 12, 19, 20, 40):
            assert loaded.test_run(bytes(14 + n)).retval == want(n), n


# --------------------------------------------------------------------------- code sinking and block layout


def test_condition_operands_sink_and_early_returns_move_last(kernel):
    """``Any(a, b, c)`` loads b's field only after a's test, and the early-return blocks sit at the end,
    so the path that goes on falls through (what clang does); behaviour unchanged."""
    from pybpfasm.dsl import XDP_DROP
    from pybpfasm.dsl import Any as AnyOf

    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        with If(AnyOf(eth.proto != 0x0800, ip.daddr & 0xF0000000 != 0xE0000000, ip.protocol == 2)):
            Return(XDP_PASS)
        Return(XDP_DROP)

    insns = prog.instructions
    loads = [k for k, i in enumerate(insns) if i.opcode in (0x61, 0x69, 0x71) and i.src != 1]
    jumps = [k for k, i in enumerate(insns) if (i.opcode & 7) in (5, 6) and i.opcode not in (0x05, 0x85, 0x95)]
    assert loads[1] > jumps[1] and loads[2] > jumps[2]  # ip.daddr after the proto test, protocol after the mask
    assert all(insns[k].off > 0 for k in jumps)        # every test jumps forward to a block at the end
    first_exit = next(k for k, i in enumerate(insns) if i.opcode == 0x95)
    assert (insns[first_exit - 1].opcode, insns[first_exit - 1].imm) == (0xB7, XDP_DROP)  # the path going on
    mk = lambda **kw: bytes(Ether() / IP(**kw) / SICMP())  # noqa: E731
    with prog.load() as loaded:
        assert loaded.test_run(mk(dst="239.1.1.1")).retval == XDP_DROP
        assert loaded.test_run(mk(dst="10.0.0.1")).retval == XDP_PASS
        assert loaded.test_run(mk(dst="239.1.1.1", proto=2)).retval == XDP_PASS
        assert loaded.test_run(bytes(Ether(type=0x86DD)) + bytes(40)).retval == XDP_PASS
        assert loaded.test_run(bytes(20)).retval == XDP_PASS


def test_spill_stores_sink_past_early_exits():
    """Values spilled because they live across later helper calls (ctx, data_end...) are stored only on
    the path that reaches those calls: the early exits (non-IGMP traffic) execute no spill store."""
    from pybpfasm.dsl.reference import DN_NSTATS, downstream_program
    ring = RingBuf(max_entries=4096, name="t_gsp")
    from pybpfasm.maps import PerCpuArray
    stats = PerCpuArray(value=u64, max_entries=DN_NSTATS, name="t_gsps")
    try:
        insns = downstream_program(ring, stats).instructions
        first_spill = next(k for k, i in enumerate(insns) if i.opcode == 0x7B and i.dst == 10)
        early_exits = [k for k, i in enumerate(insns[:first_spill]) if (i.opcode & 7) in (5, 6) and i.off > 0]
        assert len(early_exits) >= 8  # bounds, ethertype, protocol, IHL, lengths... all before any spill
    finally:
        ring.close()
        stats.close()
