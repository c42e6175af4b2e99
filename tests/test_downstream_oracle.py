"""Test helpers (no tests here): IGMP frames and a reference (spec-level) parser of what the downstream program must do.

The oracle is written from the issue's rules, not from the BPF code, so the
fuzz test compares two independent readings of the same specification.
"""

from __future__ import annotations

import socket
import struct

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
MAX_IGMP_LEN = 1480
ROUTER_ALERT = b"\x94\x04\x00\x00"


def inet_csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fix_igmp_csum(igmp: bytes) -> bytes:
    if len(igmp) < 4:
        return igmp
    body = igmp[:2] + b"\0\0" + igmp[4:]
    return igmp[:2] + struct.pack("!H", inet_csum(body)) + igmp[4:]


def frame(igmp: bytes, *, src: str = "10.0.0.2", dst: str = "224.0.0.22", options: bytes = ROUTER_ALERT,
          proto: int = 2, tot_len: int | None = None, ihl: int | None = None, version: int = 4,
          trailer: bytes = b"") -> bytes:
    """Ethernet + IPv4 (+ options) + payload; lengths overridable to make malformed packets."""
    hlen = 20 + len(options)
    ihl_field = ihl if ihl is not None else hlen // 4
    total = tot_len if tot_len is not None else hlen + len(igmp)
    ip = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl_field & 0xF), 0xC0, total & 0xFFFF, 1, 0, 1, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst)) + options
    ip = ip[:10] + struct.pack("!H", inet_csum(ip)) + ip[12:]
    eth = b"\x01\x00\x5e\x00\x00\x16" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return eth + ip + igmp + trailer


def udp_frame(dst: str, *, src: str = "10.0.0.2", payload: bytes = b"x" * 32) -> bytes:
    udp = struct.pack("!HHHH", 4000, 5001, 8 + len(payload), 0) + payload
    return frame(udp, src=src, dst=dst, options=b"", proto=17)


# outcome reasons, matching programs.events.DownstreamStat names
def expected(data: bytes, ifindex: int = 1) -> tuple[int, str, list[tuple]]:
    """(XDP action, reason counter name, events) the downstream program must produce.

    Events are (ifindex, host, group, igmp_type, record_type, sources) like the
    controller decodes them.
    """
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return XDP_PASS, "PASSED", []
    if data[23] != 2:
        dst = data[30:34]
        if dst[0] >> 4 == 0xE and not (dst[0] == 224 and dst[1] == 0 and dst[2] == 0):
            return XDP_DROP, "MCAST_UNKNOWN", []
        return XDP_PASS, "PASSED", []
    if data[14] >> 4 != 4:
        return XDP_DROP, "BAD_IP_HEADER", []
    ihl = (data[14] & 0xF) * 4
    if ihl < 20:
        return XDP_DROP, "BAD_IP_HEADER", []
    tot = struct.unpack_from("!H", data, 16)[0]
    if 14 + tot > len(data) or tot < ihl:
        return XDP_DROP, "BAD_IP_HEADER", []
    n = tot - ihl
    if n < 8:
        return XDP_DROP, "TRUNCATED", []
    if n % 4 or n > MAX_IGMP_LEN:
        return XDP_DROP, "BAD_LENGTH", []
    igmp = data[14 + ihl:14 + tot]
    if inet_csum(igmp) != 0:
        return XDP_DROP, "BAD_CHECKSUM", []
    host = data[26:30]
    kind = igmp[0]
    if kind in (0x12, 0x16, 0x17):
        if igmp[4] >> 4 != 0xE:
            return XDP_DROP, "BAD_GROUP", []
        return XDP_DROP, "EVENTS", [(ifindex, host, igmp[4:8], kind, 0, ())]
    if kind == 0x11:
        return XDP_DROP, "EVENTS", [(ifindex, host, igmp[4:8], kind, 0, ())]
    if kind != 0x22:
        return XDP_DROP, "UNKNOWN_TYPE", []
    ngrec = struct.unpack_from("!H", igmp, 6)[0]
    if ngrec > (MAX_IGMP_LEN - 8) // 8:  # cannot fit, whatever the records say
        return XDP_DROP, "BAD_NGREC", []
    off = 8
    events = []
    for _ in range(ngrec):
        if off + 8 > n:
            return XDP_DROP, "BAD_NGREC", []
        rtype, aux, nsrcs = igmp[off], igmp[off + 1], struct.unpack_from("!H", igmp, off + 2)[0]
        group = igmp[off + 4:off + 8]
        if group[0] >> 4 != 0xE:
            return XDP_DROP, "BAD_GROUP", []
        end = off + 8 + 4 * nsrcs + 4 * aux
        if end > n:
            return XDP_DROP, "BAD_NSRCS", []
        if 1 <= rtype <= 6:
            srcs = tuple(igmp[off + 8 + 4 * i:off + 12 + 4 * i] for i in range(nsrcs))
            events.append((ifindex, host, group, 0x22, rtype, srcs))
        off = end
    if off != n:
        return XDP_DROP, "TRAILING", []
    return XDP_DROP, "EVENTS", events
