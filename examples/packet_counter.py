"""packet_counter (bpf_code): packets per IP protocol number, printed every 2 s.

A hash map keyed by the protocol byte; an existing counter is incremented atomically, a
missing one inserted with BPF_NOEXIST (so two CPUs racing on the first packet cannot
overwrite each other).
"""

from __future__ import annotations

from examples import every, proto_name
from pybpfasm.dsl import XDP_PASS, If, Return, add, xdp
from pybpfasm.headers import ETH_P_IP, Ethernet, IPv4
from pybpfasm.layout import u8, u64
from pybpfasm.maps import HashMap

proto_count = HashMap(key=u8, value=u64, max_entries=256, name="proto_count")


@xdp
def packet_counter(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(eth.proto != ETH_P_IP):
        Return(XDP_PASS)
    add(proto_count, ip.protocol, create=True)    # lookup, atomic +1, or insert 1 (BPF_NOEXIST)
    return XDP_PASS


def userspace(prog, maps, stop):
    for _ in every(2, stop):
        print("\n--- protocol counts ---")
        for proto, count in sorted(proto_count.items()):
            print(f"  proto {proto:3d} ({proto_name(proto):<15}): {count} packets", flush=True)
