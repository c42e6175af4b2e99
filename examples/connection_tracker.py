"""connection_tracker (bpf_code): packets and bytes per {source, destination, protocol}.

The key is a struct with explicit padding: the kernel hashes every byte of a key, so the
padding must be zero; ``local()`` builds keys on a zeroed stack slot.  Bytes are counted
from the IP total length, as the seed does.  (The seed's C never sets ``key.proto``;
here it is set, as its README describes.)
"""

from __future__ import annotations

from examples import every, ip_str, proto_name
from pybpfasm.dsl import XDP_PASS, If, Return, add, local, xdp
from pybpfasm.headers import ETH_P_IP, Ethernet, IPv4
from pybpfasm.layout import Struct, be32, pad, u8, u64
from pybpfasm.maps import HashMap


class ConnKey(Struct):
    src_ip = be32
    dst_ip = be32
    proto = u8
    _pad = pad(3)


class ConnStats(Struct):
    packets = u64
    bytes = u64


conn_table = HashMap(key=ConnKey, value=ConnStats, max_entries=1024, name="conn_table")


@xdp
def connection_tracker(pkt):
    eth, ip = pkt.headers(Ethernet, IPv4)
    with If(eth.proto != ETH_P_IP):
        Return(XDP_PASS)
    key = local(ConnKey, src_ip=ip.saddr, dst_ip=ip.daddr, proto=ip.protocol)
    add(conn_table, key, packets=1, bytes=ip.tot_len, create=True)   # atomic adds, or insert
    return XDP_PASS


def userspace(prog, maps, stop):
    for _ in every(3, stop):
        print("\n--- connection table ---")
        for k, v in conn_table.items():
            print(f"  {ip_str(k.src_ip):<15} -> {ip_str(k.dst_ip):<15}  {proto_name(k.proto):<6}  "
                  f"pkts: {v.packets}  bytes: {v.bytes}", flush=True)
