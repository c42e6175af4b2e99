"""xdp_stats (cilium/ebpf examples/xdp): packets per source IPv4 address, printed every second.

An LRU hash of 16 entries (the least recently seen sources are evicted); user space
iterates the map like ``formatMapContents`` in the Go example.
"""

from __future__ import annotations

from examples import every, ip_str
from pybpfasm.dsl import XDP_PASS, If, add, xdp
from pybpfasm.headers import ETH_P_IP, Ethernet, IPv4
from pybpfasm.layout import be32, u32
from pybpfasm.maps import LruHash

xdp_stats_map = LruHash(key=be32, value=u32, max_entries=16, name="xdp_stats_map")


@xdp
def xdp_prog_func(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(eth.proto == ETH_P_IP):
        add(xdp_stats_map, ip.saddr, create=True)       # first packet: insert 1
    return XDP_PASS


def userspace(prog, maps, stop):
    for _ in every(1, stop):
        lines = "".join(f"\t{ip_str(src)} => {count}\n" for src, count in xdp_stats_map.items())
        print(f"Map contents:\n{lines}", flush=True)
