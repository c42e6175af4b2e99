"""xdp_dnat (bpf_code): destination NAT of a VIP:port to a backend IP:port, then bpf_redirect.

A hash map {VIP, port, protocol} -> backend is the routing decision.  A hit rewrites the
destination address and port, fixes the IP checksum and the TCP/UDP checksum (which also
covers the addresses through the pseudo-header) incrementally (RFC 1624), rewrites the
MACs for the egress link and redirects the frame there.  Everything else passes.

The seed hard-codes the egress ifindex and MACs; here they are part of the backend entry,
filled by ``configure`` from ``--vip/--proto/--backend/--out-dev/--backend-mac``.
"""

from __future__ import annotations

import argparse

from examples import ExampleError, host_port, mac
from pybpfasm import netlab
from pybpfasm.dsl import XDP_PASS, If, Return, local, lookup, redirect, xdp
from pybpfasm.headers import ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, TCP, UDP, Ethernet, IPv4
from pybpfasm.layout import Bytes, Struct, be16, be32, pad, u8, u32
from pybpfasm.maps import HashMap


class ServiceKey(Struct):
    vip = be32
    port = be16
    proto = u8
    _pad = pad(1)


class Backend(Struct):
    ip = be32
    port = be16
    _pad = pad(2)
    ifindex = u32          # where the backend is
    src_mac = Bytes(6)     # our MAC on that link
    dst_mac = Bytes(6)     # the backend's MAC


service_map = HashMap(key=ServiceKey, value=Backend, max_entries=1024, name="service_map")


def csum_update(check, old_words, new_words):
    """RFC 1624 eqn. 3: a one's-complement checksum after 16-bit words change: ~(~HC + ~m + m')."""
    s = ~check & 0xFFFF
    for old, new in zip(old_words, new_words):
        s = s + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF


def halves(addr):
    return addr >> 16, addr & 0xFFFF


@xdp
def xdp_dnat(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(eth.proto != ETH_P_IP):
        Return(XDP_PASS)
    proto, ihl = ip.protocol, ip.ihl
    for L4, number in ((TCP, IPPROTO_TCP), (UDP, IPPROTO_UDP)):     # unrolled at build time
        l4 = ip.at(ihl * 4, L4)                                      # after the IPv4 header and options
        with If(proto == number):
            pkt.ensure(l4)
            be = lookup(service_map, local(ServiceKey, vip=ip.daddr, port=l4.dport, proto=number))
            with If(be):
                old = (*halves(ip.daddr.value()), l4.dport.value())
                new = (*halves(be.ip.value()), be.port.value())
                ip.check = csum_update(ip.check.value(), old[:2], new[:2])      # IP header: the address
                if L4 is UDP:                        # a zero UDP checksum means "none": keep it zero
                    with If(l4.check != 0):
                        l4.check = csum_update(l4.check.value(), old, new)    # pseudo-header + port
                else:
                    l4.check = csum_update(l4.check.value(), old, new)
                ip.daddr, l4.dport = be.ip, be.port
                eth.src, eth.dst = be.src_mac, be.dst_mac
                Return(redirect(be.ifindex))
    return XDP_PASS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vip", default="10.96.0.10:9999", help="service VIP:PORT (default: the seed's)")
    parser.add_argument("--proto", choices=("tcp", "udp"), default="udp")
    parser.add_argument("--backend", default="10.244.1.5:9999", help="backend IP:PORT")
    parser.add_argument("--out-dev", help="interface the backend is on (default: --dev)")
    parser.add_argument("--backend-mac", help="the backend's MAC address (required)")


def configure(args: argparse.Namespace) -> None:
    if not args.backend_mac:
        raise ExampleError("xdp_dnat needs --backend-mac (the MAC of the backend on --out-dev)")
    out, netns = args.out_dev or args.dev, getattr(args, "netns", None)
    vip, vport = host_port(args.vip)
    bip, bport = host_port(args.backend)
    proto = IPPROTO_TCP if args.proto == "tcp" else IPPROTO_UDP
    service_map[ServiceKey(vip=vip, port=vport, proto=proto)] = Backend(
        ip=bip, port=bport, ifindex=netlab.link_index(out, netns), src_mac=mac(netlab.link_mac(out, netns)),
        dst_mac=mac(args.backend_mac))
    print(f"service {args.vip}/{args.proto} -> {args.backend} via {out}", flush=True)
