"""packet_inspect (bpf_code): parse Ethernet and IPv4, print source, destination and protocol.

One bounds check covers both headers; the addresses print as dotted quads (``%pI4``).
The user-space part prints the trace pipe.
"""

from __future__ import annotations

from examples import follow_trace
from pybpfasm.dsl import XDP_PASS, If, Return, trace_printk, xdp
from pybpfasm.headers import ETH_P_IP, Ethernet, IPv4


@xdp
def packet_inspect(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)              # short frame: XDP_PASS
    with If(eth.proto != ETH_P_IP):
        Return(XDP_PASS)
    saddr, daddr = ip.field_view("saddr"), ip.field_view("daddr")   # %pI4 takes pointers: pass the fields
    trace_printk("src: %pI4 dst: %pI4 proto: %d\n", saddr, daddr, ip.protocol)
    return XDP_PASS


def userspace(prog, maps, stop):
    for line in follow_trace(stop):
        print(line, flush=True)
