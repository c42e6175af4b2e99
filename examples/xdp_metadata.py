"""xdp_metadata (XDP tutorial): the 5-tuple of every IPv4 packet to a ring buffer.

Ports are 0 for protocols other than TCP and UDP; a TCP/UDP packet too short to hold its
ports produces no event.  TCP and UDP headers both start with the two ports, so one
``UDP`` view reads them for either.
"""

from __future__ import annotations

from examples import ip_str, proto_name, ring_records
from pybpfasm.dsl import XDP_PASS, Any, If, Return, reserve, xdp
from pybpfasm.headers import ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, UDP, Ethernet, IPv4
from pybpfasm.layout import Struct, be16, be32, u8
from pybpfasm.maps import RingBuf


class Metadata(Struct):
    src_ip = be32
    dst_ip = be32
    src_port = be16
    dst_port = be16
    protocol = u8


ringbuf = RingBuf(max_entries=1 << 24, name="ringbuf")


@xdp
def xdp_extract_metadata(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(eth.proto != ETH_P_IP):
        Return(XDP_PASS)
    ports = ip.at(ip.ihl * 4, UDP)                       # after the variable-length IPv4 header
    tcp_or_udp = Any(ip.protocol == IPPROTO_TCP, ip.protocol == IPPROTO_UDP)
    with If(tcp_or_udp & ~pkt.has(ports)):
        Return(XDP_PASS)
    with reserve(ringbuf, Metadata) as m:
        m.src_ip, m.dst_ip, m.protocol = ip.saddr, ip.daddr, ip.protocol
        m.src_port = m.dst_port = 0
        with If(tcp_or_udp & pkt.has(ports)):
            m.src_port, m.dst_port = ports.sport, ports.dport
    return XDP_PASS


def format_event(m) -> str:
    return (f"Packet: {ip_str(m.src_ip)}:{m.src_port} -> {ip_str(m.dst_ip)}:{m.dst_port}, "
            f"protocol: {proto_name(m.protocol) if m.protocol in (1, 6, 17) else 'UNKNOWN'}")


def userspace(prog, maps, stop):
    print("Listening for events...", flush=True)
    for raw in ring_records(ringbuf, stop):
        print(format_event(Metadata.unpack(raw)), flush=True)
