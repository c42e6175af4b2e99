"""Packet header layouts (wire format: packed, network byte order), shared by DSL and Python.

Each header is a :class:`pybpfasm.layout.Struct` declared ``_packed_`` with big-endian
field types, so the DSL knows every field's offset, width and byte order, and Python
code can ``IPv4.unpack(frame[14:34])`` or ``IPv4.pack(...)`` the same bytes.

Sub-byte fields (IPv4 version/IHL, TCP data offset, IPv6 version) are declared as
``_bits_`` views of the byte that holds them: ``IPv4.bitfield("ihl")`` for the DSL,
``IPv4.get_bits(ip, "ihl")`` from Python.

Variable-length parts are not part of a layout: IPv4 options follow the 20-byte
header (``ihl * 4`` bytes in all), IGMPv3 group records follow the report header
and each record is ``8 + 4 * nsrcs + 4 * auxlen`` bytes.
"""

from __future__ import annotations

from .layout import Bytes, Struct, be16, be32, u8

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

IPPROTO_ICMP = 1
IPPROTO_IGMP = 2
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

IPOPT_ROUTER_ALERT = 0x94  # RFC 2113: copied flag | option 20

IGMP_QUERY = 0x11
IGMPV1_REPORT = 0x12
IGMPV2_REPORT = 0x16
IGMP_LEAVE = 0x17
IGMPV3_REPORT = 0x22

# IGMPv3 group record types (RFC 3376 4.2.12)
MODE_IS_INCLUDE = 1
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4
ALLOW_NEW_SOURCES = 5
BLOCK_OLD_SOURCES = 6

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8


class Ethernet(Struct):
    _packed_ = True
    dst = Bytes(6)
    src = Bytes(6)
    proto = be16


class Vlan(Struct):
    """The 4 bytes after an 802.1Q/802.1ad ethertype: tag control, then the inner ethertype."""

    _packed_ = True
    tci = be16
    proto = be16
    _bits_ = {"vid": ("tci", 0, 12), "pcp": ("tci", 13, 3)}


class IPv4(Struct):
    """The fixed 20 bytes; options (IHL > 5) follow."""

    _packed_ = True
    ver_ihl = u8
    tos = u8
    tot_len = be16
    id = be16
    frag_off = be16
    ttl = u8
    protocol = u8
    check = be16
    saddr = be32
    daddr = be32
    _bits_ = {"ihl": ("ver_ihl", 0, 4), "version": ("ver_ihl", 4, 4),
              "frag_offset": ("frag_off", 0, 13), "mf": ("frag_off", 13, 1), "df": ("frag_off", 14, 1)}


class RouterAlert(Struct):
    """IPv4 Router Alert option (RFC 2113): type 0x94, length 4, value 0."""

    _packed_ = True
    type = u8
    length = u8
    value = be16


class IPv6(Struct):
    _packed_ = True
    ver_tc_flow = be32
    payload_len = be16
    nexthdr = u8
    hop_limit = u8
    saddr = Bytes(16)
    daddr = Bytes(16)
    _bits_ = {"version": ("ver_tc_flow", 28, 4), "flow_label": ("ver_tc_flow", 0, 20)}


class UDP(Struct):
    _packed_ = True
    sport = be16
    dport = be16
    len = be16
    check = be16


class TCP(Struct):
    """The fixed 20 bytes; options (doff > 5) follow."""

    _packed_ = True
    sport = be16
    dport = be16
    seq = be32
    ack_seq = be32
    doff_flags = be16
    window = be16
    check = be16
    urg_ptr = be16
    _bits_ = {"doff": ("doff_flags", 12, 4), "fin": ("doff_flags", 0, 1), "syn": ("doff_flags", 1, 1),
              "rst": ("doff_flags", 2, 1), "psh": ("doff_flags", 3, 1), "ack": ("doff_flags", 4, 1),
              "urg": ("doff_flags", 5, 1)}


class ICMP(Struct):
    """ICMP header; ``id``/``seq`` are meaningful for echo request/reply."""

    _packed_ = True
    type = u8
    code = u8
    checksum = be16
    id = be16
    seq = be16


class IGMP(Struct):
    """IGMPv1/v2 message (and the first 8 bytes of an IGMPv3 query)."""

    _packed_ = True
    type = u8
    max_resp = u8
    csum = be16
    group = be32


class IGMPv3Report(Struct):
    """IGMPv3 membership report header (type 0x22); ``ngrec`` group records follow."""

    _packed_ = True
    type = u8
    reserved1 = u8
    csum = be16
    reserved2 = be16
    ngrec = be16


class IGMPv3GroupRecord(Struct):
    """One group record: ``nsrcs`` be32 sources then ``auxlen`` 32-bit words follow."""

    _packed_ = True
    rtype = u8
    auxlen = u8
    nsrcs = be16
    group = be32


class IGMPv3Query(Struct):
    """IGMPv3 query (type 0x11, 12 bytes or more); ``nsrcs`` be32 sources follow."""

    _packed_ = True
    type = u8
    max_resp = u8
    csum = be16
    group = be32
    resv_s_qrv = u8
    qqic = u8
    nsrcs = be16
    _bits_ = {"qrv": ("resv_s_qrv", 0, 3), "s": ("resv_s_qrv", 3, 1)}


def record_size(nsrcs: int, auxlen: int) -> int:
    """Bytes taken by an IGMPv3 group record (its true stride)."""
    return 8 + 4 * nsrcs + 4 * auxlen


def inet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum (for building test packets and checking them)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


__all__ = [
    "Ethernet", "Vlan", "IPv4", "RouterAlert", "IPv6", "UDP", "TCP", "ICMP", "IGMP",
    "IGMPv3Report", "IGMPv3GroupRecord", "IGMPv3Query", "record_size", "inet_checksum",
    "ETH_P_IP", "ETH_P_IPV6", "ETH_P_ARP", "ETH_P_8021Q", "ETH_P_8021AD",
    "IPPROTO_ICMP", "IPPROTO_IGMP", "IPPROTO_TCP", "IPPROTO_UDP", "IPPROTO_ICMPV6", "IPOPT_ROUTER_ALERT",
    "IGMP_QUERY", "IGMPV1_REPORT", "IGMPV2_REPORT", "IGMP_LEAVE", "IGMPV3_REPORT",
    "MODE_IS_INCLUDE", "MODE_IS_EXCLUDE", "CHANGE_TO_INCLUDE", "CHANGE_TO_EXCLUDE",
    "ALLOW_NEW_SOURCES", "BLOCK_OLD_SOURCES", "ICMP_ECHO_REPLY", "ICMP_ECHO_REQUEST",
]
