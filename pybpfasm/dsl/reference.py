"""The C reference downstream program (``shared/reference/downstream.bpf.c``) in the DSL, job for job.

It exists so the DSL can be measured against clang -O2 on exactly the C's work
(``bench/vs_clang.py``): the forwarder's own downstream (programs/downstream.py)
does more (checksum over the whole message, validation of every record before
any event, container multicast), so it cannot be the like-for-like anchor.
The upstream job needs no twin: programs/upstream.py built without per-group
counters is the C's work and the benchmark uses it.

``downstream_program(events, stats)`` takes ``pybpfasm.maps`` objects and
returns an ``XdpProgram``.
"""

from __future__ import annotations

from typing import Any

from ..headers import ETH_P_IP, IGMP, IPPROTO_IGMP, Ethernet, IGMPv3GroupRecord, IGMPv3Report, IPv4
from ..layout import Struct, be32, u8, u16, u32, u64
from . import (
    XDP_DROP,
    XDP_PASS,
    All,
    Break,
    Else,
    If,
    Range,
    Return,
    Var,
    add,
    bpf,
    global_func,
    reserve,
    subprog,
    xdp,
)
from . import (
    Any as AnyOf,
)

MAX_GREC = 32
MAX_SRCS = 4
MAX_IGMP_WORDS = 256

DN_EVENTS, DN_EVENTS_LOST, DN_MALFORMED, DN_BAD_CSUM, DN_PASSED, DN_NSTATS = range(6)


class Event(Struct):
    """``struct event`` of downstream.bpf.c."""

    ifindex = u32
    host = be32
    group = be32
    igmp_type = u8
    record_type = u8
    nsrcs = u16
    sources = be32[MAX_SRCS]


def downstream_program(events: Any, stats: Any, max_grec: int = MAX_GREC, max_words: int = MAX_IGMP_WORDS,
                       converge: bool | None = None, global_emit: bool = True,
                       record_converge: bool | None = None) -> Any:
    """IGMP validation + one ring-buffer event per message / group record (downstream.bpf.c).

    ``emit`` is a global function as in the C (verified once); the checksum loop
    converges with may_goto, the record loop is left to the verifier to unroll
    (cheap, since each iteration only calls the already-verified ``emit``) unless
    ``record_converge`` says otherwise or ``emit`` is static.
    """
    if record_converge is None:
        record_converge = False if global_emit else converge

    def emit(pkt, host: be32, group: be32, kind: u32, srcs_off: u32):
        nsrcs = kind & 0xFFFF
        with reserve(events, Event) as e:
            e.ifindex = pkt.ifindex
            e.host = host
            e.group = group
            e.igmp_type = kind >> 24
            e.record_type = kind >> 16
            e.nsrcs = nsrcs
            e.sources = (0, 0, 0, 0)
            with If(nsrcs != 0):
                bpf.xdp_load_bytes(pkt, srcs_off, e.sources, 16)
            add(stats, DN_EVENTS)
        with Else():
            add(stats, DN_EVENTS_LOST)
            Return(0)
        Return(1)

    emit = (global_func if global_emit else subprog)(emit)

    @xdp(name="xdp_downstream")
    def downstream(pkt):
        def passed() -> int:
            add(stats, DN_PASSED)
            return XDP_PASS

        def malformed() -> int:
            add(stats, DN_MALFORMED)
            return XDP_DROP

        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=passed)
        with If(AnyOf(eth.proto != ETH_P_IP, ip.protocol != IPPROTO_IGMP)):
            Return(passed())
        ihl = ip.ihl * 4
        tot = ip.tot_len.value()
        with If(AnyOf(ihl < 20, tot < ihl + 8)):
            Return(malformed())
        pkt.ensure(ip.extent(tot), otherwise=malformed)
        length = tot - ihl
        with If(AnyOf(length & 3 != 0, length > max_words * 4)):
            Return(malformed())
        igmp = ip.at(ihl, u32[2])
        pkt.ensure(igmp, otherwise=malformed)
        # one's-complement sum of 32-bit words, folded at the end (same result as 16-bit words)
        total = Var(u64, 0)
        for off in Range(0, max_words * 4, 4, converge=converge, unroll=2):
            with If(off >= length):
                Break()
            w = igmp.at(off, u32)
            pkt.ensure(w, otherwise=malformed)
            total.set(total + w.get())
        s = (total & 0xFFFFFFFF) + (total >> 32)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        with If(s != 0xFFFF):
            add(stats, DN_BAD_CSUM)
            Return(XDP_DROP)
        hdr = igmp.at(0, IGMPv3Report)
        kind = hdr.type
        with If(AnyOf(kind == 0x11, kind == 0x12, kind == 0x16, kind == 0x17)):
            emit(pkt, ip.saddr, igmp.at(0, IGMP).group, kind << 24, 0)
            Return(XDP_DROP)
        with If(kind != 0x22):
            Return(XDP_DROP)
        ngrec = hdr.ngrec.value()
        saddr = ip.saddr
        rec_off = Var(u32, 8)
        for r in Range(max_grec, converge=record_converge):
            with If(r >= ngrec):
                Break()
            with If(rec_off > length - 8):
                Return(malformed())
            rec = igmp.at(rec_off, IGMPv3GroupRecord)
            pkt.ensure(rec, otherwise=malformed)
            nsrcs = rec.nsrcs.value()
            emit(pkt, saddr, rec.group, (0x22 << 24) | (rec.rtype << 16) | nsrcs, rec.offset + 8)
            rec_off.set(rec_off + 8 + nsrcs * 4 + rec.auxlen * 4)
        with If(ngrec > max_grec):
            add(stats, DN_MALFORMED)
        Return(XDP_DROP)

    return downstream


_ = All
