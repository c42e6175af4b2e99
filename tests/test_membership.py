"""Membership model: v1/v2/v3 events -> per-(port, group) subscriptions (pure Python)."""

from __future__ import annotations

import socket

from loader.membership import EXCLUDE, INCLUDE, Membership, is_snoopable
from programs.events import IgmpType as T
from programs.events import RecordType as R


def ip(s: str) -> bytes:
    return socket.inet_aton(s)


G, G2 = ip("239.1.1.1"), ip("239.2.2.2")
H1, H2 = ip("10.0.0.1"), ip("10.0.0.2")
S1, S2 = ip("192.0.2.1"), ip("192.0.2.2")


def test_v2_join_leave():
    m = Membership()
    assert m.apply(5, H1, G, T.V2_REPORT) == (5, G, True)
    assert m.apply(5, H1, G, T.V2_REPORT) is None  # repeated report
    assert m.groups() == {G: {5}}
    assert m.apply(5, H1, G, T.V2_LEAVE) == (5, G, False)
    assert m.groups() == {}
    assert m.apply(5, H1, G, T.V2_LEAVE) is None


def test_v1_report_joins():
    m = Membership()
    assert m.apply(3, H1, G, T.V1_REPORT) == (3, G, True)


def test_two_hosts_behind_one_port():
    m = Membership()
    m.apply(5, H1, G, T.V2_REPORT)
    assert m.apply(5, H2, G, T.V2_REPORT) is None  # port already subscribed
    assert m.apply(5, H1, G, T.V2_LEAVE) is None  # H2 still wants it
    assert m.apply(5, H2, G, T.V2_LEAVE) == (5, G, False)


def test_v3_asm_join_and_leave():
    m = Membership()
    assert m.apply(7, H1, G, T.V3_REPORT, R.CHANGE_TO_EXCLUDE) == (7, G, True)
    assert m.apply(7, H1, G, T.V3_REPORT, R.MODE_IS_EXCLUDE) is None
    assert m.apply(7, H1, G, T.V3_REPORT, R.CHANGE_TO_INCLUDE) == (7, G, False)
    assert m.apply(7, H1, G, T.V3_REPORT, R.MODE_IS_EXCLUDE) == (7, G, True)
    assert m.apply(7, H1, G, T.V3_REPORT, R.MODE_IS_INCLUDE) == (7, G, False)


def test_v3_source_specific():
    m = Membership()
    assert m.apply(7, H1, G, T.V3_REPORT, R.ALLOW_NEW_SOURCES, [S1]) == (7, G, True)
    assert m.hosts(7, G)[H1].mode == INCLUDE
    assert m.apply(7, H1, G, T.V3_REPORT, R.ALLOW_NEW_SOURCES, [S2]) is None
    assert m.hosts(7, G)[H1].sources == {S1, S2}
    assert m.apply(7, H1, G, T.V3_REPORT, R.BLOCK_OLD_SOURCES, [S1]) is None
    assert m.apply(7, H1, G, T.V3_REPORT, R.BLOCK_OLD_SOURCES, [S2]) == (7, G, False)
    assert m.apply(7, H1, G, T.V3_REPORT, R.BLOCK_OLD_SOURCES, [S2]) is None
    assert m.apply(7, H1, G, T.V3_REPORT, R.CHANGE_TO_INCLUDE, [S1]) == (7, G, True)
    assert m.apply(7, H1, G, T.V3_REPORT, R.CHANGE_TO_EXCLUDE, [S2]) is None
    state = m.hosts(7, G)[H1]
    assert (state.mode, state.sources) == (EXCLUDE, {S2})
    m.apply(7, H1, G, T.V3_REPORT, R.ALLOW_NEW_SOURCES, [S2])
    assert m.hosts(7, G)[H1].sources == set()
    m.apply(7, H1, G, T.V3_REPORT, R.BLOCK_OLD_SOURCES, [S1])
    assert m.hosts(7, G)[H1].sources == {S1} and m.is_member(7, G)


def test_queries_and_link_local_ignored():
    m = Membership()
    assert m.apply(1, H1, bytes(4), T.QUERY) is None
    assert m.queries_seen == 1
    assert m.apply(1, H1, ip("224.0.0.251"), T.V2_REPORT) is None
    assert m.apply(1, H1, ip("10.1.1.1"), T.V2_REPORT) is None
    assert m.groups() == {}
    assert is_snoopable(ip("224.0.1.1")) and not is_snoopable(ip("224.0.0.1"))


def test_host_change_callback_and_restore():
    seen = []
    m = Membership(on_host_change=lambda *a: seen.append(a))
    m.apply(2, H1, G, T.V3_REPORT, R.CHANGE_TO_EXCLUDE)
    m.apply(2, H1, G2, T.V2_REPORT)
    m.apply(2, H1, G2, T.V2_LEAVE)
    assert [(s[1], s[3] is None) for s in seen] == [(G, False), (G2, False), (G2, True)]
    fresh = Membership()
    for port, group, host, state in m.items():
        fresh.restore(port, group, host, state)
    assert fresh.groups() == m.groups() == {G: {2}}


def test_drop_port():
    m = Membership()
    m.apply(2, H1, G, T.V2_REPORT)
    m.apply(3, H1, G, T.V2_REPORT)
    assert m.drop_port(2) == [(2, G, False)]
    assert m.groups() == {G: {3}}


def test_reassembler_joins_chunks_and_drops_broken_records():
    from programs.events import Reassembler

    def chunk(first: int, count: int, nsrcs: int, group: bytes = G) -> tuple:
        raw = b"".join(ip(f"192.0.2.{first + i}") for i in range(count)).ljust(32, b"\0")
        return (4, H1, group, 0x22, 1, nsrcs, first, count, raw)

    r = Reassembler()
    assert r.feed(chunk(0, 3, 3)) == (4, H1, G, 0x22, 1, tuple(ip(f"192.0.2.{i}") for i in range(3)))
    assert r.feed(chunk(0, 8, 20)) is None
    assert r.feed(chunk(8, 8, 20)) is None
    whole = r.feed(chunk(16, 4, 20))
    assert whole is not None and whole[5] == tuple(ip(f"192.0.2.{i}") for i in range(20))
    assert r.feed(chunk(0, 8, 20)) is None
    assert r.feed(chunk(16, 4, 20)) is None  # chunk 8..15 was lost: the record is dropped, not applied short
    assert r.dropped == 1
    assert r.feed((4, H1, G, 0x16, 0, 0, 0, 0, bytes(32))) == (4, H1, G, 0x16, 0, ())
