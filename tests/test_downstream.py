"""The downstream XDP program through BPF_PROG_TEST_RUN, with scapy's IGMP layers and malformed frames."""

from __future__ import annotations

import os
import random
import socket
import struct
import warnings

import pytest
from test_downstream_oracle import (
    XDP_ABORTED,
    XDP_DROP,
    XDP_PASS,
    XDP_REDIRECT,
    expected,
    fix_igmp_csum,
    frame,
    udp_frame,
)

scapy_all = pytest.importorskip("scapy.all")
with warnings.catch_warnings():  # scapy 2.6+ marks contrib.igmpv3 deprecated; its classes are what we want
    warnings.simplefilter("ignore", DeprecationWarning)
    from scapy.contrib.igmpv3 import IGMPv3gr, IGMPv3mq, IGMPv3mr
from scapy.layers.igmp import IGMP  # noqa: E402


def ip(s: str) -> bytes:
    return socket.inet_aton(s)


class Downstream:
    """The program with fresh maps, run frame by frame; events decoded from the ring buffer."""

    def __init__(self) -> None:
        from loader.instance import create_maps
        from programs import downstream
        from pybpfasm.ringbuf import RingBuffer

        self.maps = create_maps(ring_size=1 << 20)
        self.prog = downstream.load(self.maps, name="test_down")
        self.ring = RingBuffer(self.maps["events"])

    def stats(self) -> dict[str, int]:
        from loader.instance import read_percpu_sum
        from programs.events import DownstreamStat

        return {s.name: read_percpu_sum(self.maps["dn_stats"], int(s), "<Q")[0] for s in DownstreamStat}

    def events(self) -> list[tuple]:
        """Records of the last run, chunks checked and joined back into whole group records."""
        from programs.events import MAX_EVENT_SOURCES, RECORD, Reassembler

        joiner = Reassembler()
        out = []
        for t in self.ring.decode(RECORD):
            nsrcs, first, count = t[5], t[6], t[7]
            assert count == min(MAX_EVENT_SOURCES, nsrcs - first) and first % MAX_EVENT_SOURCES == 0, t[:8]
            whole = joiner.feed(t)
            if whole is not None:
                out.append(whole)
        assert joiner.dropped == 0 and not joiner._partial
        return out

    def run(self, data: bytes) -> tuple[int, list[tuple], dict[str, int]]:
        before = self.stats()
        retval = self.prog.test_run(data).retval
        after = self.stats()
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        return retval, self.events(), delta

    def close(self) -> None:
        self.ring.close()
        self.prog.close()
        for m in self.maps.values():
            m.close()


@pytest.fixture(scope="module")
def dn(kernel):
    d = Downstream()
    yield d
    d.close()


def igmp_frame(layer, **kw) -> bytes:
    return frame(bytes(layer), **kw)


def check(dn: Downstream, data: bytes, action: int, reason: str, events: list[tuple] | None = None) -> None:
    retval, got, delta = dn.run(data)
    assert retval == action
    assert got == (events or [])
    want = expected(data)
    assert (retval, got) == (want[0], want[2]), "oracle disagrees"
    if reason == "EVENTS":
        chunks = sum(max(1, -(-len(e[5]) // 8)) for e in got)  # a record is split every 8 sources
        assert delta.get("EVENTS", 0) == chunks
    else:
        assert delta.get(reason) == 1, delta
    assert want[1] == reason


# ---------------------------------------------------------------- well-formed messages

H = ip("10.0.0.2")


@pytest.mark.parametrize("kind", [0x12, 0x16, 0x17])
def test_v1_v2_reports_and_leave(dn, kind):
    data = igmp_frame(IGMP(type=kind, gaddr="239.1.2.3"))
    check(dn, data, XDP_DROP, "EVENTS", [(1, H, ip("239.1.2.3"), kind, 0, ())])


def test_without_router_alert(dn):
    data = igmp_frame(IGMP(type=0x16, gaddr="239.1.2.3"), options=b"")
    check(dn, data, XDP_DROP, "EVENTS", [(1, H, ip("239.1.2.3"), 0x16, 0, ())])


def test_v2_general_and_specific_query(dn):
    check(dn, igmp_frame(IGMP(type=0x11, gaddr="0.0.0.0", mrcode=100), dst="224.0.0.1"), XDP_DROP, "EVENTS",
          [(1, H, bytes(4), 0x11, 0, ())])
    check(dn, igmp_frame(IGMP(type=0x11, gaddr="239.9.9.9"), dst="239.9.9.9"), XDP_DROP, "EVENTS",
          [(1, H, ip("239.9.9.9"), 0x11, 0, ())])


def test_v3_query(dn):
    q = IGMPv3mq(gaddr="239.1.1.1", srcaddrs=["192.0.2.1", "192.0.2.2"])
    data = igmp_frame(q, dst="239.1.1.1")
    check(dn, data, XDP_DROP, "EVENTS", [(1, H, ip("239.1.1.1"), 0x11, 0, ())])


def test_v3_multi_record_report_with_sources(dn):
    records = [IGMPv3gr(rtype=rtype, maddr=f"239.0.0.{rtype}", srcaddrs=[f"192.0.2.{i}" for i in range(rtype)])
               for rtype in range(1, 7)]
    data = igmp_frame(IGMPv3mr(records=records))
    want = [(1, H, ip(f"239.0.0.{t}"), 0x22, t, tuple(ip(f"192.0.2.{i}") for i in range(t))) for t in range(1, 7)]
    check(dn, data, XDP_DROP, "EVENTS", want)


def test_v3_join_and_leave_like_linux(dn):
    join = igmp_frame(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr="239.5.5.5")]))
    leave = igmp_frame(IGMPv3mr(records=[IGMPv3gr(rtype=3, maddr="239.5.5.5")]))
    check(dn, join, XDP_DROP, "EVENTS", [(1, H, ip("239.5.5.5"), 0x22, 4, ())])
    check(dn, leave, XDP_DROP, "EVENTS", [(1, H, ip("239.5.5.5"), 0x22, 3, ())])


def test_v3_every_source_reaches_user_space(dn):
    sources = [f"198.51.{i // 256}.{i % 256}" for i in range(300)]
    data = igmp_frame(IGMPv3mr(records=[IGMPv3gr(rtype=1, maddr="239.7.7.7", srcaddrs=sources),
                                        IGMPv3gr(rtype=5, maddr="239.7.7.8", srcaddrs=sources[:50])]))
    want = [(1, H, ip("239.7.7.7"), 0x22, 1, tuple(ip(s) for s in sources)),
            (1, H, ip("239.7.7.8"), 0x22, 5, tuple(ip(s) for s in sources[:50]))]
    check(dn, data, XDP_DROP, "EVENTS", want)


def test_v3_true_stride_with_aux_data(dn):
    recs = [IGMPv3gr(rtype=2, auxdlen=2, maddr="239.1.1.1", srcaddrs=["192.0.2.9"]),
            IGMPv3gr(rtype=4, maddr="239.1.1.2")]
    raw = bytearray(bytes(IGMPv3mr(records=recs)))
    # scapy writes auxdlen but no aux words: insert 8 bytes of aux data after record 1's source
    raw[8 + 12:8 + 12] = b"AUXDATA!"
    data = frame(fix_igmp_csum(bytes(raw)))
    want = [(1, H, ip("239.1.1.1"), 0x22, 2, (ip("192.0.2.9"),)), (1, H, ip("239.1.1.2"), 0x22, 4, ())]
    check(dn, data, XDP_DROP, "EVENTS", want)


def test_v3_many_records(dn):
    recs = [IGMPv3gr(rtype=4, maddr=f"239.2.{i // 256}.{i % 256}") for i in range(180)]
    data = igmp_frame(IGMPv3mr(records=recs))
    want = [(1, H, ip(f"239.2.{i // 256}.{i % 256}"), 0x22, 4, ()) for i in range(180)]
    check(dn, data, XDP_DROP, "EVENTS", want)


def test_v3_unknown_record_type_ignored(dn):
    data = igmp_frame(IGMPv3mr(records=[IGMPv3gr(rtype=9, maddr="239.1.1.1"), IGMPv3gr(rtype=4, maddr="239.1.1.2")]))
    check(dn, data, XDP_DROP, "EVENTS", [(1, H, ip("239.1.1.2"), 0x22, 4, ())])


def test_v3_no_records(dn):
    check(dn, igmp_frame(IGMPv3mr(records=[])), XDP_DROP, "EVENTS", [])


# ---------------------------------------------------------------- not IGMP

def test_unicast_udp_passes(dn):
    check(dn, udp_frame("10.0.0.9"), XDP_PASS, "PASSED")


def test_link_local_multicast_passes(dn):
    check(dn, udp_frame("224.0.0.251"), XDP_PASS, "PASSED")


def test_arp_and_short_frames_pass(dn):
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    assert dn.run(arp)[:2] == (XDP_PASS, [])
    assert dn.run(frame(b"", options=b"")[:30])[:2] == (XDP_PASS, [])


def test_downstream_multicast_unknown_group_dropped(dn):
    check(dn, udp_frame("239.44.44.44"), XDP_DROP, "MCAST_UNKNOWN")


def test_downstream_multicast_known_group_redirected(dn):
    from loader.devmaps import DevmapSync

    sync = DevmapSync(dn.maps["groups"])
    sync.add_port(ip("239.45.45.45"), 1)
    try:
        retval, events, delta = dn.run(udp_frame("239.45.45.45"))
        assert (retval, events, delta.get("MCAST_FORWARDED")) == (XDP_REDIRECT, [], 1)
    finally:
        sync.remove_port(ip("239.45.45.45"), 1)
        sync.close()


# ---------------------------------------------------------------- malformed: counted by reason, dropped, no event

V2 = bytes(IGMP(type=0x16, gaddr="239.1.2.3"))
V3 = bytes(IGMPv3mr(records=[IGMPv3gr(rtype=2, maddr="239.3.3.3", srcaddrs=["192.0.2.1", "192.0.2.2"]),
                             IGMPv3gr(rtype=4, maddr="239.3.3.4")]))


def _set(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return fix_igmp_csum(bytes(b))


MALFORMED = {
    "ihl_below_5": (frame(V2, ihl=4), "BAD_IP_HEADER"),
    "ip_version_6": (frame(V2, version=6), "BAD_IP_HEADER"),
    "total_length_beyond_frame": (frame(V2, tot_len=24 + 8 + 40), "BAD_IP_HEADER"),
    "total_length_below_ihl": (frame(V2, tot_len=20), "BAD_IP_HEADER"),
    "igmp_truncated": (frame(V2[:4]), "TRUNCATED"),
    "igmp_length_not_multiple_of_4": (frame(fix_igmp_csum(V2 + b"\0\0")), "BAD_LENGTH"),
    "igmp_too_long": (frame(fix_igmp_csum(V2 + bytes(1480))), "BAD_LENGTH"),
    "bad_checksum_v2": (frame(V2[:2] + bytes([V2[2] ^ 1]) + V2[3:]), "BAD_CHECKSUM"),
    "bad_checksum_v3": (frame(V3[:-1] + bytes([V3[-1] ^ 0x40])), "BAD_CHECKSUM"),
    "v2_report_unicast_group": (frame(bytes(IGMP(type=0x16, gaddr="10.1.1.1"))), "BAD_GROUP"),
    "v2_leave_zero_group": (frame(bytes(IGMP(type=0x17, gaddr="0.0.0.0"))), "BAD_GROUP"),
    "v3_record_unicast_group": (frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr="10.0.0.1")]))),
                                "BAD_GROUP"),
    "ngrec_too_many": (frame(_set(V3, 6, "!H", 3)), "BAD_NGREC"),
    "ngrec_huge": (frame(_set(V3, 6, "!H", 0xFFFF)), "BAD_NGREC"),
    "ngrec_too_few": (frame(_set(V3, 6, "!H", 1)), "TRAILING"),
    "nsrcs_too_many": (frame(_set(V3, 8 + 2, "!H", 3 + 3)), "BAD_NSRCS"),
    "nsrcs_huge": (frame(_set(V3, 8 + 2, "!H", 0xFFFF)), "BAD_NSRCS"),
    "nsrcs_too_few": (frame(_set(V3, 8 + 2, "!H", 1)), "BAD_GROUP"),  # next header read from a source
    "auxlen_lies": (frame(_set(V3, 8 + 1, "!B", 5)), "BAD_NSRCS"),
    "last_record_header_cut": (frame(fix_igmp_csum(V3[:-4])), "BAD_NGREC"),
    "trailing_bytes": (frame(fix_igmp_csum(V3 + b"\0" * 4)), "TRAILING"),
    "unknown_type": (frame(fix_igmp_csum(b"\x1e" + V2[1:])), "UNKNOWN_TYPE"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(dn, name):
    data, reason = MALFORMED[name]
    check(dn, data, XDP_DROP, reason)


def test_frame_padding_after_ip_total_length_is_fine(dn):
    data = frame(V2, trailer=bytes(18))  # Ethernet minimum-size padding
    check(dn, data, XDP_DROP, "EVENTS", [(1, H, ip("239.1.2.3"), 0x16, 0, ())])


# ---------------------------------------------------------------- fuzz

def _corpus() -> list[bytes]:
    recs = [IGMPv3gr(rtype=t, auxdlen=0, maddr=f"239.9.{t}.1", srcaddrs=[f"192.0.2.{i}" for i in range(t % 4)])
            for t in range(1, 8)]
    return [
        frame(V2), frame(V3), frame(bytes(IGMP(type=0x17, gaddr="239.1.1.1"))),
        frame(bytes(IGMP(type=0x12, gaddr="224.0.1.1")), options=b""),
        frame(bytes(IGMP(type=0x11, gaddr="0.0.0.0"))),
        frame(bytes(IGMPv3mq(gaddr="239.1.1.1", srcaddrs=["192.0.2.1"]))),
        frame(bytes(IGMPv3mr(records=recs))),
        frame(bytes(IGMPv3mr(records=recs[:2] * 20))),
        udp_frame("239.1.1.1"), udp_frame("10.0.0.1"),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.random()
        if op < 0.35 and b:  # flip bits in one byte
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op < 0.55 and b:  # overwrite a byte (lengths and counts live in single bytes or pairs)
            b[rng.randrange(len(b))] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op < 0.7:  # truncate
            del b[rng.randrange(14, max(15, len(b))):]
        elif op < 0.8:  # extend
            b += bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 4, 8, 12))))
        elif op < 0.9 and len(b) >= 18:  # IP total length
            struct.pack_into("!H", b, 16, rng.randrange(0, len(b) + 16))
        elif len(b) > 14:  # IHL
            b[14] = (b[14] & 0xF0) | rng.randrange(16)
    if rng.random() < 0.7 and len(b) >= 15:  # mostly keep the checksum right so parsing goes deeper
        ihl = (b[14] & 0xF) * 4
        tot = struct.unpack_from("!H", b, 16)[0] if len(b) >= 18 else 0
        start, end = 14 + ihl, 14 + tot
        if 20 <= ihl and start + 4 <= end <= len(b):
            b[start:end] = fix_igmp_csum(bytes(b[start:end]))
    return bytes(b)


FUZZ_FRAMES = int(os.environ.get("PYBPFASM_FUZZ_FRAMES", "100000"))
FUZZ_BATCH = 1000


def test_fuzz_mutated_igmp(dn):
    """Mutated IGMP frames in batches (hypothesis picks the seeds): never XDP_ABORTED, events == spec."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    corpus = _corpus()
    batches = max(1, FUZZ_FRAMES // FUZZ_BATCH)
    done = {"frames": 0, "events": 0}

    @hypothesis.settings(max_examples=batches, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.integers(min_value=0, max_value=2**64 - 1))
    def run_batch(seed: int) -> None:
        rng = random.Random(seed)
        test_run = dn.prog.test_run
        drain = dn.events
        for _ in range(FUZZ_BATCH):
            data = mutate(rng, rng.choice(corpus))
            retval = test_run(data).retval
            got = drain()
            assert retval != XDP_ABORTED, data.hex()
            action, _, events = expected(data)
            assert (retval, got) == (action, events), data.hex()
            done["frames"] += 1
            done["events"] += len(got)

    run_batch()
    assert done["frames"] >= batches * FUZZ_BATCH
    assert done["events"] > 0


def test_event_constants_come_from_headers():
    """IGMP message / record type numbers have one definition (pybpfasm.headers); the enums name them."""
    from programs.events import IgmpType, RecordType
    from pybpfasm import headers

    assert {r.name: int(r) for r in RecordType} == {n: getattr(headers, n) for n in (
        "MODE_IS_INCLUDE", "MODE_IS_EXCLUDE", "CHANGE_TO_INCLUDE", "CHANGE_TO_EXCLUDE",
        "ALLOW_NEW_SOURCES", "BLOCK_OLD_SOURCES")}
    assert [int(t) for t in IgmpType] == [headers.IGMP_QUERY, headers.IGMPV1_REPORT, headers.IGMPV2_REPORT,
                                         headers.IGMP_LEAVE, headers.IGMPV3_REPORT]
