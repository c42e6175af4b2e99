"""mytcpdump (bpf_code): one ring-buffer event per IPv4 packet, printed like tcpdump.

The event carries addresses, TCP/UDP ports (0 for other protocols or a truncated
header), the IP length and the protocol.  The record is reserved in the ring, filled in
place and submitted at the end of the ``with`` block (a full ring: no event).
"""

from __future__ import annotations

from examples import ip_str, proto_name, ring_records
from pybpfasm.dsl import XDP_PASS, Elif, If, Return, reserve, xdp
from pybpfasm.headers import ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, TCP, UDP, Ethernet, IPv4
from pybpfasm.layout import Struct, be16, be32, u8, u16
from pybpfasm.maps import RingBuf


class PacketEvent(Struct):
    src_ip = be32
    dst_ip = be32
    src_port = be16
    dst_port = be16
    pkt_len = u16
    proto = u8
    _pad = u8        # padding: the DSL zeroes it in every reserved record


events = RingBuf(max_entries=1 << 16, name="events")


@xdp
def mytcpdump(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(eth.proto != ETH_P_IP):
        Return(XDP_PASS)
    proto, l4 = ip.protocol, ip.ihl * 4                  # l4: where TCP/UDP starts (variable IHL)
    tcp, udp = ip.at(l4, TCP), ip.at(l4, UDP)
    with reserve(events, PacketEvent) as e:
        e.src_ip, e.dst_ip, e.pkt_len, e.proto = ip.saddr, ip.daddr, ip.tot_len, proto
        e.src_port = e.dst_port = 0
        with If((proto == IPPROTO_TCP) & pkt.has(tcp)):
            e.src_port, e.dst_port = tcp.sport, tcp.dport
        with Elif((proto == IPPROTO_UDP) & pkt.has(udp)):
            e.src_port, e.dst_port = udp.sport, udp.dport
    return XDP_PASS


def format_event(e) -> str:
    src, dst = ip_str(e.src_ip), ip_str(e.dst_ip)
    if e.proto not in (IPPROTO_TCP, IPPROTO_UDP):        # no ports
        return f"{proto_name(e.proto):<8}  {src:<21}  ->  {dst:<21}  {e.pkt_len:5d} bytes"
    return (f"{proto_name(e.proto):<8}  {src + ':' + str(e.src_port):<21}  ->  "
            f"{dst + ':' + str(e.dst_port):<21}  {e.pkt_len:5d} bytes")


def userspace(prog, maps, stop):
    print(f"{'proto':<8}  {'src':<21}  ->  {'dst':<21}  len", flush=True)
    for raw in ring_records(events, stop):
        print(format_event(PacketEvent.unpack(raw)), flush=True)
