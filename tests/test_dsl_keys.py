"""Big-endian DSL values as map keys: raw-bytes keys keep the wire bytes, host-order integer keys refuse them.

A group address read from the packet (``ip.daddr``, be32) used as the key of a
map declared ``key=4`` must land in memory exactly as on the wire, so that the
controller's ``groups[socket.inet_aton("239.1.2.3")]`` is the entry the program
finds; a byte-swapped key would silently never match.
"""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pybpfasm.dsl import XDP_DROP, XDP_PASS, DslError, If, Return, add, delete, lookup, update, xdp
from pybpfasm.headers import Ethernet, IPv4
from pybpfasm.layout import be32, u32
from pybpfasm.maps import HashMap

GROUP = "239.1.2.3"
PKT = bytes(Ether() / IP(src="10.0.0.1", dst=GROUP) / UDP(dport=5000) / (b"x" * 8))


class _FakeMap:
    """Just enough of a map for compiling (no kernel): fd, type, key/value codecs."""

    map_type, fd, name = 1, 3, "fake"

    def __init__(self, key, value="<I"):
        from pybpfasm.maps import codec
        self.key, self.value = codec(key), codec(value)
        self.key_size, self.value_size = self.key.size, self.value.size


def _swaps(prog) -> int:
    return sum(i.form.name.startswith(("be", "le", "bswap")) for i in prog.instructions)


def _counting(m, use):
    @xdp(name="keyprog")
    def keyprog(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
        use(m, ip.daddr)
        Return(XDP_PASS)
    return keyprog


def test_raw_key_stores_be_value_unswapped():
    for use in (lambda m, k: add(m, k), lambda m, k: update(m, k, 1), lambda m, k: delete(m, k),
                lambda m, k: lookup(m, k)):
        assert _swaps(_counting(_FakeMap(4), use)) == 0


def test_host_order_u32_key_refuses_a_be32_value_naming_the_line():
    for key in (u32, "<I"):
        prog = _counting(_FakeMap(key), lambda m, k: add(m, k))
        with pytest.raises(DslError, match=r"host-order u32.*big-endian.*value\(\)") as info:
            prog.compile()
        assert "test_dsl_keys.py" in str(info.value)  # the user's line, not the DSL's


def test_host_order_key_takes_the_explicit_number():
    prog = _counting(_FakeMap(u32), lambda m, k: add(m, k.value()))
    assert _swaps(prog) == 1  # ntohl, as asked


def test_raw_key_size_mismatch_is_an_error():
    with pytest.raises(DslError, match="8 raw bytes.*4-byte big-endian"):
        _counting(_FakeMap(8), lambda m, k: add(m, k)).compile()


@pytest.mark.parametrize("key, stored", [
    (4, socket.inet_aton(GROUP)),                      # raw bytes: the wire bytes
    (be32, int.from_bytes(socket.inet_aton(GROUP), "big")),  # be32: the address as a number
])
def test_key_matches_user_space_entry(kernel, unique_name, key, stored):
    with HashMap(key=key, value="<I", max_entries=4, name="dslkeys") as groups, \
            HashMap(key=key, value="<I", max_entries=4, name="dslseen") as seen:
        groups[stored] = 7

        @xdp(name="keyrun")
        def keyrun(pkt):
            eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)
            update(seen, ip.daddr, 1)
            hit = lookup(groups, ip.daddr)
            with If(hit.is_null()):
                Return(XDP_PASS)
            Return(XDP_DROP)

        with keyrun.load() as prog:
            assert prog.test_run(PKT).retval == XDP_DROP  # found the controller's entry
        assert list(seen.keys()) == [stored]


def test_big_endian_struct_format_key_is_be32():
    """``key=">I"`` packs the number big-endian in user space: a be32 packet field goes in as is."""
    assert _swaps(_counting(_FakeMap(">I"), lambda m, k: add(m, k))) == 0
    assert _swaps(_counting(_FakeMap("<I"), lambda m, k: add(m, k.value()))) == 1
