"""The C reference downstream job written in the DSL (pybpfasm.dsl.reference): behaviour on the kernel.

(The upstream job is programs/upstream.py itself, tested in tests/test_upstream.py.)"""

from __future__ import annotations

import pytest
from scapy.layers.igmp import IGMP as SIGMP
from scapy.layers.igmp import IGMPv3_MR, IGMPv3_MR_Group
from scapy.layers.inet import IP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.l2 import Ether

from pybpfasm.dsl import XDP_DROP, XDP_PASS
from pybpfasm.dsl.reference import (
    DN_BAD_CSUM,
    DN_EVENTS,
    DN_MALFORMED,
    DN_NSTATS,
    DN_PASSED,
    Event,
    downstream_program,
)
from pybpfasm.layout import u64
from pybpfasm.maps import PerCpuArray, RingBuf
from pybpfasm.ringbuf import RingBuffer

pytestmark = pytest.mark.kernel
RA = b"\x94\x04\x00\x00"


def ip(a: str) -> int:
    return int.from_bytes(bytes(int(x) for x in a.split(".")), "big")


@pytest.fixture(scope="module", params=[False, True], ids=["static-emit", "global-emit"])
def downstream(request, kernel):
    events = RingBuf(max_entries=1 << 16, name="t_rev")
    stats = PerCpuArray(value=u64, max_entries=DN_NSTATS, name="t_rdn")
    prog = downstream_program(events, stats, global_emit=request.param).load()
    yield prog, events, stats
    prog.close()
    events.close()
    stats.close()


def run_events(downstream, frame: bytes):
    prog, events, stats = downstream
    before = [sum(stats[i]) for i in range(DN_NSTATS)]
    ret = prog.test_run(frame).retval
    with RingBuffer(events) as rb:
        evs = [Event.unpack(r) for r in rb.drain()]
    after = [sum(stats[i]) for i in range(DN_NSTATS)]
    return ret, evs, [a - b for a, b in zip(after, before)]


def test_igmpv2_report_event(downstream):
    frame = bytes(Ether() / IP(src="10.0.0.2", dst="239.1.1.1", options=RA) / SIGMP(type=0x16, gaddr="239.1.1.1"))
    ret, evs, delta = run_events(downstream, frame)
    assert ret == XDP_DROP and len(evs) == 1
    ev = evs[0]
    assert (ev.igmp_type, ev.host, ev.group, ev.nsrcs) == (0x16, ip("10.0.0.2"), ip("239.1.1.1"), 0)
    assert ev.ifindex == 1 and delta[DN_EVENTS] == 1


def test_igmpv3_records_at_true_stride(downstream):
    frame = bytes(Ether() / IP(src="10.0.0.7", dst="224.0.0.22", options=RA) / IGMPv3_MR(records=[
        IGMPv3_MR_Group(rtype=1, maddr="232.1.1.1", srcaddrs=["10.9.0.1", "10.9.0.2", "10.9.0.3"]),
        IGMPv3_MR_Group(rtype=4, maddr="239.2.2.2"),
        IGMPv3_MR_Group(rtype=2, maddr="239.3.3.3", srcaddrs=["10.9.0.9"]),
    ]))
    ret, evs, _ = run_events(downstream, frame)
    assert ret == XDP_DROP
    assert [(e.igmp_type, e.record_type, e.group, e.nsrcs) for e in evs] == [
        (0x22, 1, ip("232.1.1.1"), 3), (0x22, 4, ip("239.2.2.2"), 0), (0x22, 2, ip("239.3.3.3"), 1)]
    assert evs[0].sources[:3] == (ip("10.9.0.1"), ip("10.9.0.2"), ip("10.9.0.3"))
    assert evs[1].sources == (0, 0, 0, 0)


def test_bad_checksum_malformed_and_pass(downstream):
    good = bytearray(bytes(Ether() / IP(options=RA) / SIGMP(type=0x16, gaddr="239.1.1.1")))
    good[-1] ^= 0xFF
    ret, evs, delta = run_events(downstream, bytes(good))
    assert ret == XDP_DROP and not evs and delta[DN_BAD_CSUM] == 1
    short = bytes(Ether() / IP(options=RA) / SIGMP(type=0x16, gaddr="239.1.1.1"))[:-2]
    ret, evs, delta = run_events(downstream, short)
    assert ret == XDP_DROP and not evs and delta[DN_MALFORMED] == 1
    ret, evs, delta = run_events(downstream, bytes(Ether() / IP() / SUDP()))
    assert ret == XDP_PASS and delta[DN_PASSED] == 1


def test_downstream_verifies_cheaply(downstream):
    prog = downstream[0]
    assert prog.info(arrays=False).verified_insns < 100_000  # clang's C needs ~330,000
