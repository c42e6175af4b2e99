"""The downstream XDP program (IGMP snooping + container-to-container multicast), in the DSL.

Per packet:

* not IPv4 -> pass. IPv4 but not IGMP: multicast data to a routable group
  (224/4 minus 224.0.0.0/24) sent by a downstream host is redirected to the
  group's other subscribed ports (``redirect_map`` BROADCAST|EXCLUDE_INGRESS),
  an unknown group is dropped (or passed); everything else passes.
* IGMP: IP version 4, IHL >= 5 (Router Alert makes it 6), total length >= IHL
  and within the frame, IGMP length >= 8, a multiple of 4 and <= 1480; the
  checksum over the whole message is verified (a converging word loop).
* v1/v2 report, v2 leave, query: one event. v3 report: every group record is
  first *validated* at its true stride ``8 + 4*nsrcs + 4*auxlen`` (header and
  sources inside the message, multicast group, no trailing bytes), then
  emitted: one fixed-size event per record and per 8 sources, so every source
  reaches user space (records with more sources are split; ``first``/``count``
  say which part). A malformed message produces no event at all.
* the IGMP frame is dropped; every outcome has a counter (``DownstreamStat``),
  including a failed ring-buffer reserve.

``load(maps, pass_unknown=False)`` loads it (with BTF source lines); ``build`` returns the instructions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pybpfasm import isa
from pybpfasm.dsl import (
    BPF_F_BROADCAST,
    BPF_F_EXCLUDE_INGRESS,
    XDP_DROP,
    XDP_PASS,
    All,
    Break,
    Continue,
    Else,
    If,
    Not,
    Range,
    Return,
    Var,
    add,
    bpf,
    lookup,
    redirect_map,
    reserve,
    u32,
    u64,
    xdp,
)
from pybpfasm.dsl import Any as AnyOf
from pybpfasm.headers import (
    ETH_P_IP,
    IGMP,
    IGMP_LEAVE,
    IGMP_QUERY,
    IGMPV1_REPORT,
    IGMPV2_REPORT,
    IGMPV3_REPORT,
    IPPROTO_IGMP,
    Ethernet,
    IGMPv3GroupRecord,
    IGMPv3Report,
    IPv4,
)
from pybpfasm.layout import Struct
from pybpfasm.program import Program

from .events import MAX_EVENT_SOURCES, MAX_IGMP_LEN, DownstreamStat, IgmpEvent

MAPS = ("events", "dn_stats", "groups", "scratch")
IMPLEMENTATION = "DSL (pybpfasm.dsl)"
MAX_RECORDS = (MAX_IGMP_LEN - 8) // 8  # 184: a group record is at least 8 bytes
MAX_SOURCES = (MAX_IGMP_LEN - 16) // 4  # 366 sources fit one record of one message
MAX_CHUNKS = (MAX_SOURCES + MAX_EVENT_SOURCES - 1) // MAX_EVENT_SOURCES
S = DownstreamStat


class WalkState(Struct):
    """Value of the per-CPU ``scratch`` map: where the record walk is."""

    off = u32    # offset of the current group record in the IGMP message
    first = u32  # index of the next source to emit in that record
    done = u32   # records finished


def program(events: Any, stats: Any, groups: Any, scratch: Any, *, pass_unknown: bool = False) -> Any:
    """The DSL program object (``.instructions``, ``.load()``)."""

    def counted(stat: int, action: int = XDP_DROP) -> Any:
        def otherwise() -> int:
            add(stats, stat)
            return action
        return otherwise

    passed = counted(S.PASSED, XDP_PASS)

    @xdp(name="mcast_down")
    def downstream(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=passed)
        with If(eth.proto != ETH_P_IP):
            Return(passed())
        with If(ip.protocol != IPPROTO_IGMP):
            dst = ip.daddr
            with If(AnyOf(dst & 0xF0000000 != 0xE0000000, dst & 0xFFFFFF00 == 0xE0000000)):
                Return(passed())
            ports = lookup(groups, dst)  # raw 4-byte key: the address bytes as on the wire
            with If(ports.is_null()):
                Return(counted(S.MCAST_UNKNOWN, XDP_PASS if pass_unknown else XDP_DROP)())
            add(stats, S.MCAST_FORWARDED)
            Return(redirect_map(ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS))

        add(stats, S.IGMP)
        ihl = ip.ihl * 4
        tot = ip.tot_len.value()
        with If(AnyOf(ip.version != 4, ihl < 20, tot < ihl)):
            Return(counted(S.BAD_IP_HEADER)())
        pkt.ensure(ip.extent(tot), otherwise=counted(S.BAD_IP_HEADER))
        length = tot - ihl
        with If(length < 8):
            Return(counted(S.TRUNCATED)())
        with If(AnyOf(length & 3 != 0, length > MAX_IGMP_LEN)):
            Return(counted(S.BAD_LENGTH)())
        igmp = ip.at(ihl, u32[2])
        pkt.ensure(igmp, otherwise=counted(S.TRUNCATED))

        # one's-complement sum of the message in 32-bit words, folded to 16 bits
        total = Var(u64, 0)
        for off in Range(0, MAX_IGMP_LEN, 4, converge=True):
            with If(off >= length):
                Break()
            word = igmp.at(off, u32)
            pkt.ensure(word, otherwise=counted(S.TRUNCATED))
            total.set(total + word.get())
        s = (total & 0xFFFFFFFF) + (total >> 32)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        with If(s != 0xFFFF):
            Return(counted(S.BAD_CHECKSUM)())

        msg = igmp.at(0, IGMP)
        kind = msg.type
        with If(AnyOf(kind == IGMPV1_REPORT, kind == IGMPV2_REPORT, kind == IGMP_LEAVE)):
            with If(msg.group & 0xF0000000 != 0xE0000000):
                Return(counted(S.BAD_GROUP)())
        with If(AnyOf(kind == IGMP_QUERY, kind == IGMPV1_REPORT, kind == IGMPV2_REPORT, kind == IGMP_LEAVE)):
            with reserve(events, IgmpEvent) as e:
                e.ifindex = pkt.ifindex
                e.host = ip.saddr
                e.group = msg.group
                e.igmp_type = kind
                e.record_type = 0
                e.nsrcs = 0
                e.first = 0
                e.count = 0
                add(stats, S.EVENTS)
            with Else():
                add(stats, S.EVENTS_LOST)
            Return(XDP_DROP)
        with If(kind != IGMPV3_REPORT):
            Return(counted(S.UNKNOWN_TYPE)())

        # IGMPv3 report, pass 1: every record inside the message, at its true stride
        ngrec = igmp.at(0, IGMPv3Report).ngrec.value()
        with If(ngrec > MAX_RECORDS):
            Return(counted(S.BAD_NGREC)())
        rec_off = Var(u32, 8)
        for r in Range(MAX_RECORDS, converge=True):
            with If(r >= ngrec):
                Break()
            with If(AnyOf(rec_off > MAX_IGMP_LEN, rec_off + 8 > length)):
                Return(counted(S.BAD_NGREC)())
            rec = igmp.at(rec_off, IGMPv3GroupRecord)
            pkt.ensure(rec, otherwise=counted(S.BAD_NGREC))
            with If(rec.group & 0xF0000000 != 0xE0000000):
                Return(counted(S.BAD_GROUP)())
            rec_off.set(rec_off + 8 + rec.nsrcs.value() * 4 + rec.auxlen * 4)
            with If(rec_off > length):
                Return(counted(S.BAD_NSRCS)())
        with If(rec_off != length):
            Return(counted(S.TRAILING)())

        # pass 2: events, MAX_EVENT_SOURCES sources each, in one flat loop: an
        # iteration emits one chunk of the current record, then moves to its
        # next chunk or to the next record. The walk position lives in a per-CPU
        # map value: reloaded each iteration it is a fresh bounded scalar for
        # the verifier, so the loop state converges instead of being verified
        # once per possible offset.
        host = ip.saddr
        walk = lookup(scratch, 0)
        with If(walk.is_null()):
            Return(XDP_DROP)
        walk.off = 8
        walk.first = 0
        walk.done = 0
        for _ in Range(MAX_RECORDS + MAX_CHUNKS, converge=True):
            cur = walk.off
            first = walk.first
            with If(AnyOf(walk.done >= ngrec, cur > MAX_IGMP_LEN, first > MAX_SOURCES)):
                Break()
            rec = igmp.at(cur, IGMPv3GroupRecord)
            pkt.ensure(rec, otherwise=XDP_DROP)
            nsrcs = rec.nsrcs.value()
            rtype = rec.rtype
            known = All(rtype >= 1, rtype <= 6)  # unknown record types are ignored (RFC 3376 4.2.12)
            with If(All(known, first + MAX_EVENT_SOURCES < nsrcs)):
                walk.first = first + MAX_EVENT_SOURCES
            with Else():
                walk.off = cur + 8 + nsrcs * 4 + rec.auxlen * 4
                walk.first = 0
                walk.done = walk.done + 1
            with If(Not(known)):
                Continue()
            n = Var(u32, nsrcs - first)
            with If(n > MAX_EVENT_SOURCES):
                n.set(MAX_EVENT_SOURCES)
            with reserve(events, IgmpEvent) as e:
                e.ifindex = pkt.ifindex
                e.host = host
                e.group = rec.group
                e.igmp_type = IGMPV3_REPORT
                e.record_type = rtype
                e.nsrcs = nsrcs
                e.first = first
                e.count = n
                with If(n != 0):
                    bpf.xdp_load_bytes(pkt, rec.offset + 8 + first * 4, e.sources, n * 4)
                add(stats, S.EVENTS)
            with Else():
                add(stats, S.EVENTS_LOST)
        Return(XDP_DROP)

    return downstream


def build(maps: Mapping[str, Any], *, pass_unknown: bool = False) -> list[isa.Instruction]:
    """The resolved instructions (no BTF: prefer ``load``, which attaches the DSL source lines)."""
    return program(maps["events"], maps["dn_stats"], maps["groups"], maps["scratch"],
                   pass_unknown=pass_unknown).instructions


def load(maps: Mapping[str, Any], *, pass_unknown: bool = False, **kw: Any) -> Program:
    """Load with BTF func_info + line_info, so verifier logs and xlated dumps show the DSL lines.

    Keywords go to ``Program.load`` (``name`` defaults to "mcast_down").
    """
    return program(maps["events"], maps["dn_stats"], maps["groups"], maps["scratch"],
                   pass_unknown=pass_unknown).load(**kw)
