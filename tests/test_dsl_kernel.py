"""Every DSL construct compiled, loaded and run on the kernel through BPF_PROG_TEST_RUN."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP as SICMP
from scapy.layers.inet import IP
from scapy.layers.inet import TCP as STCP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.l2 import Dot1Q, Ether

from pybpfasm.dsl import (
    BPF_NOEXIST,
    XDP_ABORTED,
    XDP_DROP,
    XDP_PASS,
    XDP_TX,
    All,
    Any,
    Break,
    Continue,
    Elif,
    Else,
    If,
    Not,
    Range,
    Return,
    Var,
    add,
    bpf,
    copy,
    csum_diff,
    delete,
    discard,
    local,
    lookup,
    reserve,
    submit,
    subprog,
    trace_printk,
    update,
    xdp,
)
from pybpfasm.headers import ETH_P_8021Q, ETH_P_IP, ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP, UDP, Ethernet, IPv4, Vlan
from pybpfasm.layout import Struct, be32, u8, u16, u32, u64
from pybpfasm.maps import ArrayMap, HashMap, LruHash, PerCpuArray, RingBuf

pytestmark = pytest.mark.kernel


def run(prog, pkt, repeat: int = 1):
    loaded = prog.load()
    try:
        res = loaded.test_run(bytes(pkt), repeat=repeat)
        return res.retval, res.data
    finally:
        loaded.close()


def ring_records(ring) -> list[bytes]:
    from pybpfasm.ringbuf import RingBuffer
    out: list[bytes] = []
    with RingBuffer(ring) as rb:
        for rec in rb.drain():
            out.append(bytes(rec))
    return out


@pytest.fixture
def maps():
    opened = []

    def make(cls, **kw):
        m = cls(**kw)
        opened.append(m)
        return m

    yield make
    for m in opened:
        m.close()


UDP_PKT = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / SUDP(sport=1000, dport=53) / (b"x" * 8)
TCP_PKT = Ether() / IP(src="10.0.0.3", dst="10.0.0.4") / STCP(sport=2000, dport=8080)


def test_headers_if_elif_else(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        with If(eth.proto != ETH_P_IP):
            Return(XDP_PASS)
        with If(ip.protocol == IPPROTO_UDP):
            Return(XDP_DROP)
        with Elif(ip.protocol == IPPROTO_TCP):
            Return(XDP_TX)
        with Else():
            Return(XDP_ABORTED)

    assert run(prog, UDP_PKT)[0] == XDP_DROP
    assert run(prog, TCP_PKT)[0] == XDP_TX
    assert run(prog, Ether() / IP() / SICMP())[0] == XDP_ABORTED
    assert run(prog, Ether(type=0x86DD) / (b"\0" * 40))[0] == XDP_PASS
    assert run(prog, bytes(UDP_PKT)[:20])[0] == XDP_PASS  # short: the coalesced check fails


def test_variable_ihl_and_l4_ports(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        udp = ip.next(UDP, skip=(ip.ihl - 5) * 4)
        with If(All(ip.protocol == IPPROTO_UDP, pkt.has(udp))):
            with If(udp.dport == 53):
                Return(XDP_DROP)
        Return(XDP_PASS)

    assert run(prog, UDP_PKT)[0] == XDP_DROP
    opts = Ether() / IP(options=b"\x94\x04\x00\x00" * 3) / SUDP(dport=53)
    assert run(prog, opts)[0] == XDP_DROP
    assert run(prog, Ether() / IP(options=b"\x94\x04\x00\x00") / SUDP(dport=54))[0] == XDP_PASS
    assert run(prog, bytes(opts)[:40])[0] == XDP_PASS  # UDP header cut off


def test_vlan_and_nested_branches_with_vars(kernel):
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_DROP)
        proto = Var(u32, name="proto")
        off = Var(u32, 14)
        with If(eth.proto == ETH_P_8021Q):
            vlan = pkt.header(Vlan, after=eth, otherwise=XDP_DROP)
            proto.set(vlan.proto.value())
            off.set(18)
            with If(vlan.vid == 7):
                Return(XDP_TX)
        with Else():
            proto.set(eth.proto.value())
        with If(proto == ETH_P_IP):
            ip = pkt.view(IPv4, at=off)
            pkt.ensure(ip, otherwise=XDP_DROP)
            Return(ip.ttl)
        Return(XDP_PASS)

    assert run(prog, Ether() / Dot1Q(vlan=7) / IP())[0] == XDP_TX
    assert run(prog, Ether() / Dot1Q(vlan=8) / IP(ttl=3))[0] == 3
    assert run(prog, Ether() / IP(ttl=4))[0] == 4
    assert run(prog, Ether() / Dot1Q(vlan=8) / IP(ttl=3))[0] == 3
    assert run(prog, bytes(Ether() / Dot1Q(vlan=8) / IP())[:30])[0] == XDP_DROP


def test_and_or_not_short_circuit(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        ttl = ip.ttl
        with If(Any(ttl == 1, All(ttl > 10, Not(ttl >= 20)))):
            Return(1)
        with If((ttl == 2) | ~(ttl < 100)):
            Return(2)
        with If(ttl == 60):
            Return((ttl > 50) + 10)  # a condition used as a value is 0/1
        Return(3)

    for ttl, want in [(1, 1), (15, 1), (10, 3), (20, 3), (2, 2), (100, 2), (200, 2), (50, 3), (60, 11)]:
        assert run(prog, Ether() / IP(ttl=ttl))[0] == want, ttl


def test_loops_break_continue(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        total = Var(u32, 0)
        for i in Range(20):
            with If(i == ip.ttl):
                Break()
            with If((i & 1) == 1):
                Continue()
            total += i
        for _ in range(2):  # Python loops unroll at build time
            total += 1
        Return(total)

    for ttl in (0, 1, 5, 10, 30):
        assert run(prog, Ether() / IP(ttl=ttl))[0] == sum(i for i in range(min(ttl, 20)) if i % 2 == 0) + 2


def test_converging_loop_walks_variable_stride(kernel):
    """A TLV walk at a variable stride with may_goto: the verifier stops re-checking the body."""
    class Tlv(Struct):
        _packed_ = True
        type = u8
        length = u8

    @xdp
    def prog(pkt):
        pkt.header(Ethernet, otherwise=XDP_PASS)
        off = Var(u32, 14)
        count = Var(u32, 0)
        for _ in Range(64, converge=True):
            tlv = pkt.view(Tlv, at=off)
            with If(Not(pkt.has(tlv))):
                Break()
            with If(tlv.type == 0):
                Break()
            count += tlv.type
            off.set(off + 2 + tlv.length)
        Return(count)

    # 1 (len 0) -> 2 (len 3) -> 3 (len 1) -> 0 terminates: 1+2+3
    assert run(prog, bytes(14) + bytes([1, 0, 2, 3, 9, 9, 9, 3, 1, 9, 0, 0]))[0] == 6
    assert run(prog, bytes(14) + bytes([5, 200]))[0] == 5  # walks off the end


def test_maps_counters_struct_keys(kernel, maps):
    class Flow(Struct):
        src = be32
        dst = be32
        proto = u8

    class Stats(Struct):
        packets = u64
        bytes = u64

    counts = maps(PerCpuArray, value=u64, max_entries=256, name="t_counts")
    flows = maps(HashMap, key=Flow, value=Stats, max_entries=64, name="t_flows")
    shared = maps(ArrayMap, value=u64, max_entries=4, name="t_shared")
    lru = maps(LruHash, key=u32, value=u64, max_entries=16, name="t_lru")

    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        add(counts, ip.protocol)
        add(flows, Flow(src=ip.saddr, dst=ip.daddr, proto=ip.protocol), create=True, packets=1, bytes=pkt.len)
        add(shared, 1, 5)
        add(lru, ip.saddr.value(), create=True)
        ref = lookup(shared, 2)
        with If(ref.is_null()):
            Return(XDP_ABORTED)
        ref.set(ref.get() + 100)
        key = local(u32, 3)
        update(shared, key, ip.ttl, 0)
        delete(lru, 0x01020304)
        Return(XDP_PASS)

    loaded = prog.load()
    try:
        for pk in (UDP_PKT, UDP_PKT, TCP_PKT):
            assert loaded.test_run(bytes(pk)).retval == XDP_PASS
    finally:
        loaded.close()
    assert sum(counts[17]) == 2 and sum(counts[6]) == 1
    got = flows[Flow(src=0x0A000001, dst=0x0A000002, proto=17)]
    assert got.packets == 2 and got.bytes == 2 * len(UDP_PKT)
    assert shared[1] == 15 and shared[2] == 300 and shared[3] == 64
    assert lru[0x0A000001] == 2 and lru[0x0A000003] == 1


def test_null_check_by_early_return_and_noexist(kernel, maps):
    m = maps(HashMap, key=u32, value=u64, max_entries=8, name="t_ne")

    @xdp
    def prog(pkt):
        v = lookup(m, 1)
        with If(Not(v)):
            update(m, 1, 7, BPF_NOEXIST)
            Return(1)
        Return(v.get())

    loaded = prog.load()
    try:
        assert loaded.test_run(bytes(UDP_PKT)).retval == 1
        assert loaded.test_run(bytes(UDP_PKT)).retval == 7
    finally:
        loaded.close()


def test_ringbuf_reserve_submit_discard(kernel, maps):
    class Ev(Struct):
        ifindex = u32
        src = be32
        sport = u16
        dport = u16
        proto = u8

    ring = maps(RingBuf, max_entries=1 << 14, name="t_ring")

    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        udp = ip.next(UDP)
        pkt.ensure(udp, otherwise=XDP_PASS)
        with reserve(ring, Ev) as ev:
            ev.ifindex = pkt.ifindex
            ev.src = ip.saddr
            ev.sport = udp.sport.value()
            ev.dport = udp.dport.value()
            ev.proto = ip.protocol
            with If(udp.dport == 9):
                discard(ev)
            with Else():
                submit(ev)
        with Else():
            Return(XDP_ABORTED)
        Return(XDP_PASS)

    loaded = prog.load()
    try:
        assert loaded.test_run(bytes(UDP_PKT)).retval == XDP_PASS
        assert loaded.test_run(bytes(Ether() / IP() / SUDP(dport=9))).retval == XDP_PASS
    finally:
        loaded.close()
    recs = ring_records(ring)
    assert len(recs) == 1
    ev = Ev.unpack(recs[0])
    assert (ev.src, ev.sport, ev.dport, ev.proto) == (0x0A000001, 1000, 53, 17)


def test_packet_rewrite_copy_and_checksum(kernel):
    """MAC swap with copy(), a TTL decrement, the IP checksum recomputed with bpf_csum_diff, XDP_TX."""
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        tmp = local(Ethernet)
        copy(tmp, eth)
        copy(eth.dst, tmp.src)
        copy(eth.src, tmp.dst)
        ip.ttl = ip.ttl - 1
        ip.check = 0
        s = csum_diff(0, 0, ip, 20, 0)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        ip.check = (~s & 0xFFFF).raw_be(2)  # csum_diff sums memory order: store the bits as they are
        Return(XDP_TX)

    pk = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(ttl=64, src="1.2.3.4") / SUDP()
    ret, data = run(prog, pk)
    assert ret == XDP_TX
    out = Ether(data)
    assert out.src == "02:00:00:00:00:02" and out.dst == "02:00:00:00:00:01"
    assert out[IP].ttl == 63
    chk = out[IP].chksum
    del out[IP].chksum
    assert Ether(bytes(out))[IP].chksum == chk


def test_subprogram_and_helpers(kernel):
    @subprog
    def scale(x, y: u32):
        Return(x * 3 + y)

    @subprog
    def proto_of(pkt):
        ip = pkt.view(IPv4, at=14)
        pkt.ensure(ip, otherwise=0)
        Return(ip.protocol)

    @xdp
    def prog(pkt):
        t = bpf.ktime_get_ns()
        with If(t == 0):
            Return(XDP_ABORTED)
        trace_printk("pybpfasm dsl test %d\n", 1)
        Return(scale(proto_of(pkt), 1))

    assert run(prog, UDP_PKT)[0] == 17 * 3 + 1
    assert run(prog, TCP_PKT)[0] == 6 * 3 + 1
    assert run(prog, bytes(20))[0] == 1


def test_signed_and_width_semantics(kernel):
    class Io(Struct):
        _packed_ = True
        a = u64
        b = u64
        out = u64[6]

    @xdp
    def prog(pkt):
        io = pkt.header(Io, otherwise=XDP_ABORTED)
        a32 = io.a.cast(u32).s32()
        b32 = io.b.cast(u32).s32()
        io.out[0] = (a32 // b32).s64()
        io.out[1] = (a32 % b32).s64()
        io.out[2] = (a32 >> 1).s64()
        io.out[3] = io.a // io.b
        io.out[4] = io.a.s64() // io.b.s64()
        io.out[5] = (io.a.cast(u32) + 0xFFFFFFFF).u64()
        Return(XDP_PASS)

    def case(a: int, b: int):
        ret, data = run(prog, struct.pack("<QQ", a & (2**64 - 1), b & (2**64 - 1)) + bytes(48))
        return struct.unpack("<6q", data[16:64])

    m64 = 2**64
    assert case(-7, 2) == (-3, -1, -4, (m64 - 7) // 2, -3, (2**32 - 7 + 0xFFFFFFFF) % 2**32)
    assert case(5, 0)[:2] == (0, 5)  # division by zero per the ISA: x/0 = 0, x%0 = x
    assert case(5, 0)[3] == 0 and case(5, 0)[4] == 0
    assert case(-2**31, -1)[:2] == (-2**31, 0)  # INT_MIN / -1 in 32 bits
    assert case(-2**63, -1)[4] == -2**63  # and in 64 bits


def test_raw_escape_hatch(kernel):
    from pybpfasm.dsl import emit
    from pybpfasm.isa import make

    @xdp
    def prog(pkt):
        emit(make("mov64_k", dst=0, imm=3), make("exit"))
        Return(XDP_PASS)

    assert run(prog, UDP_PKT)[0] == 3


def test_source_locations_on_every_instruction():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        with If(eth.proto == ETH_P_IP):
            Return(XDP_DROP)
        Return(XDP_PASS)

    insns = prog.instructions
    assert all(i.source is not None for i in insns)
    assert any("eth.proto == ETH_P_IP" in (i.source.text or "") for i in insns)
    assert all(i.source.file.endswith("test_dsl_kernel.py") for i in insns)


def test_icmp_tcp_header_views(kernel):
    @xdp
    def prog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        l4 = ip.next(ICMP)
        with If(ip.protocol == 1):
            pkt.ensure(l4, otherwise=XDP_DROP)
            Return(l4.type + 100)
        tcp = ip.next(TCP)
        with If(ip.protocol == 6):
            pkt.ensure(tcp, otherwise=XDP_DROP)
            with If(tcp.syn == 1):
                Return(tcp.doff)
        Return(XDP_PASS)

    assert run(prog, Ether() / IP() / SICMP(type=8))[0] == 108
    assert run(prog, Ether() / IP() / STCP(flags="S"))[0] == 5
    assert run(prog, Ether() / IP() / STCP(flags="A"))[0] == XDP_PASS


def test_module_docstring_example_runs(kernel):
    """The complete example in pybpfasm.dsl's docstring compiles, loads and behaves as described."""
    import textwrap

    import pybpfasm.dsl as dsl

    doc = dsl.__doc__
    code = textwrap.dedent(doc[doc.index("::") + 2:doc.index("Reference:")])
    ns: dict = {}
    exec(compile(code, "dsl_docstring_example.py", "exec"), ns)  # noqa: S102 - our own docstring
    prog, counts = ns["prog"], ns["counts"]
    try:
        assert prog.test_run(bytes(TCP_PKT)).retval == XDP_DROP
        assert prog.test_run(bytes(UDP_PKT)).retval == XDP_PASS
        assert sum(counts[6]) == 1 and sum(counts[17]) == 1
    finally:
        prog.close()
        counts.close()


def test_verifier_rejection_names_the_dsl_line(kernel):
    """What the DSL cannot see (here a raw instruction reading an unset register) is reported by the
    verifier at the DSL line that emitted the instruction."""
    from pybpfasm.dsl import emit
    from pybpfasm.isa import make
    from pybpfasm.program import VerifierError

    @xdp
    def prog(pkt):
        emit(make("ldxw", dst=0, src=5, off=0))  # MARK-verifier
        Return(XDP_PASS)

    with pytest.raises(VerifierError) as info:
        prog.load()
    assert info.value.source is not None and "MARK-verifier" in info.value.source.text


def test_register_pressure_spills_across_calls(kernel):
    """More values live across helper calls (and through a loop) than r6-r9 can hold: the allocator
    spills, splits around the loop, and every value still arrives intact."""
    class Io(Struct):
        _packed_ = True
        x = u32[12]
        out = u64

    @xdp
    def prog(pkt):
        io = pkt.header(Io, otherwise=XDP_ABORTED)
        xs = [io.x[i] for i in range(12)]
        acc = Var(u64, 0)
        for i in Range(3):
            bpf.ktime_get_ns()
            for k, x in enumerate(xs):
                acc += x * (k + 1)
            acc += i
        t = bpf.ktime_get_ns()
        with If(t == 0):
            Return(XDP_ABORTED)
        total = acc.get()
        for k, x in enumerate(xs):
            total = total + (x << k)
        io.out = total
        Return(XDP_PASS)

    vals = [(i * 2654435761) & 0xFFFFFFFF for i in range(1, 13)]
    ret, data = run(prog, struct.pack("<12I", *vals) + bytes(8))
    m32 = 0xFFFFFFFF  # u32 * int and u32 << int stay 32-bit (C rules); the u64 accumulator does not wrap
    want = 3 * sum(v * (k + 1) & m32 for k, v in enumerate(vals)) + 3 + sum(v << k & m32 for k, v in enumerate(vals))
    assert ret == XDP_PASS and struct.unpack_from("<Q", data, 48)[0] == want % 2**64
    assert any(i.dst == 10 and i.opcode == 0x7B for i in prog.instructions)  # it did spill
