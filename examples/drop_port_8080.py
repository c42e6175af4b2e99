"""drop_port_8080 (XDP tutorial): drop TCP segments to port 8080, pass everything else.

The TCP header is found after a variable-length IPv4 header (IHL).
"""

from __future__ import annotations

from pybpfasm.dsl import XDP_DROP, XDP_PASS, Any, If, Return, trace_printk, xdp
from pybpfasm.headers import ETH_P_IP, IPPROTO_TCP, TCP, Ethernet, IPv4


@xdp
def drop_port_8080(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(Any(eth.proto != ETH_P_IP, ip.protocol != IPPROTO_TCP)):
        Return(XDP_PASS)
    tcp = ip.at(ip.ihl * 4, TCP)                        # after the variable-length IPv4 header
    pkt.ensure(tcp)                                     # truncated TCP header: XDP_PASS
    with If(tcp.dport == 8080):
        trace_printk("Dropping XDP egress packet port 8080\n")
        Return(XDP_DROP)
    return XDP_PASS
