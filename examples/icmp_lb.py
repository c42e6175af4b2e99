"""icmp_lb (XDP tutorial): round-robin ICMP load balancer between two backends, XDP_TX.

Echo requests to the balancer's address go to the backends in turn: the destination IP
and MAC are rewritten, the IP checksum recomputed with ``bpf_csum_diff`` and folded, and
the frame bounced back out of the interface it came in on (the backends share its link).
The backends come from an array map (the seed's two by default, ``--backend IP,MAC`` twice
to change them), the balancer's address is a build-time constant (``--lb-ip``), as in
the seed.  Frames with IP options pass (the checksum covers the 20-byte header, as in the seed).
"""

from __future__ import annotations

import argparse

from examples import ExampleError, ip, ip_str, mac
from pybpfasm.dsl import XDP_PASS, XDP_TX, Any, If, Return, csum_diff, csum_fold, lookup, xdp
from pybpfasm.headers import ETH_P_IP, IPPROTO_ICMP, Ethernet, IPv4
from pybpfasm.layout import Bytes, Struct, be32, u32
from pybpfasm.maps import ArrayMap

LB_IP = ip("192.168.1.2")


class Backend(Struct):
    ip = be32
    mac = Bytes(6)


rr_map = ArrayMap(value=u32, max_entries=1, name="rr_map")
backend_map = ArrayMap(value=Backend, max_entries=2, name="backend_map")
backend_map[0] = Backend(ip=ip("192.168.1.3"), mac=mac("52:54:00:ff:ff:55"))
backend_map[1] = Backend(ip=ip("192.168.1.4"), mac=mac("52:54:00:5d:6e:a1"))


@xdp
def icmp_lb(pkt):
    eth, iph = pkt.headers(Ethernet, IPv4)
    with If(Any(eth.proto != ETH_P_IP, iph.daddr != LB_IP, iph.protocol != IPPROTO_ICMP, iph.ver_ihl != 0x45)):
        Return(XDP_PASS)
    rr = lookup(rr_map, 0)
    with If(rr.is_null()):
        Return(XDP_PASS)
    index = rr.get()
    rr.set((index + 1) % 2)
    be = lookup(backend_map, index)
    with If(be.is_null()):
        Return(XDP_PASS)
    iph.daddr = be.ip
    iph.check = 0
    iph.check = csum_fold(csum_diff(0, 0, iph, IPv4.size))   # folded sum, stored as is (memory order)
    eth.dst = be.mac
    return XDP_TX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lb-ip", default="192.168.1.2", help="the balancer's address (default: the seed's)")
    parser.add_argument("--backend", action="append", metavar="IP,MAC",
                        help="a backend; give it twice (default: the seed's two)")


def configure(args: argparse.Namespace) -> None:
    global LB_IP
    LB_IP = ip(args.lb_ip)
    if args.backend:
        if len(args.backend) != 2:
            raise ExampleError("icmp_lb balances between exactly two backends: give --backend IP,MAC twice")
        for i, text in enumerate(args.backend):
            addr, _, hw = text.partition(",")
            backend_map[i] = Backend(ip=ip(addr), mac=mac(hw))
    for i, b in backend_map.items():
        print(f"backend {i}: {ip_str(b.ip)} {b.mac.hex(':')}", flush=True)
