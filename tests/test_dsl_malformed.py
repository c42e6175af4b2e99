"""Truncated and malformed packets of every header type: a DSL parser returns a defined action, never ABORTED.

The verifier proves the programs never read out of bounds; these tests prove the
bounds checks the DSL inserted lead to the intended action on every short or
lying frame.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.igmp import IGMP as SIGMP
from scapy.layers.igmp import IGMPv3_MQ, IGMPv3_MR, IGMPv3_MR_Group
from scapy.layers.inet import ICMP as SICMP
from scapy.layers.inet import IP
from scapy.layers.inet import TCP as STCP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.inet6 import IPv6 as SIPv6
from scapy.layers.l2 import Dot1Q, Ether

from pybpfasm.dsl import XDP_DROP, XDP_PASS, XDP_TX, Any, Break, Else, If, Range, Return, Var, add, xdp
from pybpfasm.dsl.reference import DN_NSTATS, downstream_program
from pybpfasm.headers import (
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    ICMP,
    IGMP,
    IPPROTO_ICMP,
    IPPROTO_IGMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP,
    UDP,
    Ethernet,
    IGMPv3GroupRecord,
    IGMPv3Query,
    IGMPv3Report,
    IPv4,
    IPv6,
    Vlan,
)
from pybpfasm.layout import u32, u64
from pybpfasm.maps import PerCpuArray, RingBuf

pytestmark = pytest.mark.kernel
DEFINED = {XDP_DROP, XDP_PASS, XDP_TX}


def parser_program(stats):
    @xdp
    def parse(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_DROP)
        l3 = Var(u32, 14)
        proto = Var(u32, eth.proto.value())
        with If(eth.proto == ETH_P_8021Q):
            vlan = pkt.header(Vlan, after=eth, otherwise=XDP_DROP)
            proto.set(vlan.proto.value())
            l3.set(18)
        with If(proto == ETH_P_IPV6):
            v6 = pkt.view(IPv6, at=l3)
            pkt.ensure(v6, otherwise=XDP_DROP)
            add(stats, 1)
            Return(XDP_PASS)
        with If(proto != ETH_P_IP):
            Return(XDP_PASS)
        ip = pkt.view(IPv4, at=l3)
        pkt.ensure(ip, otherwise=XDP_DROP)
        with If(Any(ip.ihl < 5, ip.version != 4)):
            Return(XDP_DROP)
        l4 = ip.at(ip.ihl * 4, UDP)
        with If(ip.protocol == IPPROTO_UDP):
            pkt.ensure(l4, otherwise=XDP_DROP)
            add(stats, 2)
            Return(XDP_TX)
        tcp = ip.at(ip.ihl * 4, TCP)
        with If(ip.protocol == IPPROTO_TCP):
            pkt.ensure(tcp, otherwise=XDP_DROP)
            with If(tcp.doff < 5):
                Return(XDP_DROP)
            Return(XDP_PASS)
        icmp = ip.at(ip.ihl * 4, ICMP)
        with If(ip.protocol == IPPROTO_ICMP):
            pkt.ensure(icmp, otherwise=XDP_DROP)
            Return(XDP_PASS)
        with If(ip.protocol == IPPROTO_IGMP):
            igmp = ip.at(ip.ihl * 4, IGMP)
            pkt.ensure(igmp, otherwise=XDP_DROP)
            with If(igmp.type == 0x11):
                q = igmp.at(0, IGMPv3Query)
                with If(pkt.has(q)):
                    add(stats, 3)
                Return(XDP_DROP)
            with If(igmp.type == 0x22):
                rep = igmp.at(0, IGMPv3Report)
                pkt.ensure(rep, otherwise=XDP_DROP)
                off = Var(u32, 8)
                for r in Range(16, converge=True):
                    with If(r >= rep.ngrec.value()):
                        Break()
                    rec = igmp.at(off, IGMPv3GroupRecord)
                    with If(Any(off > 2000, ~pkt.has(rec))):
                        Return(XDP_DROP)
                    add(stats, 4)
                    off.set(off + 8 + rec.nsrcs.value() * 4 + rec.auxlen * 4)
                Return(XDP_DROP)
            with Else():
                Return(XDP_DROP)
        Return(XDP_PASS)

    return parse


SAMPLES = [
    Ether() / IP() / SUDP(dport=53) / b"payload",
    Ether() / Dot1Q(vlan=3) / IP(options=b"\x94\x04\x00\x00") / STCP(),
    Ether() / IP() / SICMP(type=8) / b"ping",
    Ether() / SIPv6() / SUDP(),
    Ether() / IP(options=b"\x94\x04\x00\x00") / SIGMP(type=0x16, gaddr="239.1.1.1"),
    Ether() / IP(options=b"\x94\x04\x00\x00") / IGMPv3_MR(records=[
        IGMPv3_MR_Group(rtype=4, maddr="239.0.0.1"),
        IGMPv3_MR_Group(rtype=1, maddr="239.0.0.2", srcaddrs=["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    ]),
    Ether() / IP() / IGMPv3_MQ(gaddr="239.0.0.9", srcaddrs=["1.2.3.4"]),
]


@pytest.fixture(scope="module")
def loaded_programs(kernel):
    stats = PerCpuArray(value=u64, max_entries=DN_NSTATS, name="t_mstats")
    events = RingBuf(max_entries=1 << 16, name="t_mring")
    progs = [parser_program(stats).load(), downstream_program(events, stats, converge=True).load()]
    yield progs
    for p in progs:
        p.close()
    stats.close()
    events.close()


def test_every_truncation_is_defined(loaded_programs):
    for prog in loaded_programs:
        for pk in SAMPLES:
            raw = bytes(pk)
            for n in range(14, len(raw) + 1):  # BPF_PROG_TEST_RUN needs an Ethernet header's worth
                assert prog.test_run(raw[:n]).retval in DEFINED, (pk.summary(), n)


def test_full_samples_reach_their_parsers(loaded_programs):
    parse = loaded_programs[0]
    assert parse.test_run(bytes(SAMPLES[0])).retval == XDP_TX
    assert parse.test_run(bytes(SAMPLES[1])).retval == XDP_PASS
    assert parse.test_run(bytes(SAMPLES[5])).retval == XDP_DROP


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sample=st.sampled_from(SAMPLES), data=st.data())
def test_mutated_frames_never_abort(loaded_programs, sample, data):
    raw = bytearray(bytes(sample))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(14, len(raw)))
    for prog in loaded_programs:
        assert prog.test_run(bytes(raw[:cut])).retval in DEFINED
