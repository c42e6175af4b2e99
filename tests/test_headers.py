"""Header layouts agree with scapy's encoders."""

from __future__ import annotations

from scapy.layers.igmp import IGMP as SIGMP
from scapy.layers.igmp import IGMPv3_MQ, IGMPv3_MR, IGMPv3_MR_Group
from scapy.layers.inet import ICMP as SICMP
from scapy.layers.inet import IP
from scapy.layers.inet import TCP as STCP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.inet6 import IPv6 as SIPv6
from scapy.layers.l2 import Dot1Q, Ether

from pybpfasm import headers as h


def test_ethernet_vlan_ipv4():
    raw = bytes(Ether(dst="01:00:5e:00:00:01", src="02:00:00:00:00:01") / Dot1Q(vlan=5, prio=3) /
                IP(src="10.0.0.1", dst="224.0.0.1", options=b"\x94\x04\x00\x00") / SUDP(sport=1, dport=2))
    eth = h.Ethernet.unpack(raw)
    assert eth.dst == bytes.fromhex("01005e000001") and eth.proto == h.ETH_P_8021Q
    vlan = h.Vlan.unpack(raw[14:])
    assert h.Vlan.get_bits(vlan, "vid") == 5 and h.Vlan.get_bits(vlan, "pcp") == 3 and vlan.proto == h.ETH_P_IP
    ip = h.IPv4.unpack(raw[18:])
    assert h.IPv4.get_bits(ip, "ihl") == 6 and h.IPv4.get_bits(ip, "version") == 4
    assert ip.saddr == 0x0A000001 and ip.daddr == 0xE0000001 and ip.protocol == h.IPPROTO_UDP
    assert h.inet_checksum(raw[18:42]) == 0
    ra = h.RouterAlert.unpack(raw[38:])
    assert ra.type == h.IPOPT_ROUTER_ALERT and ra.length == 4
    assert h.UDP.unpack(raw[42:]).dport == 2


def test_tcp_icmp_ipv6():
    t = h.TCP.unpack(bytes(STCP(sport=80, dport=8080, flags="SA", seq=7)))
    assert (t.sport, t.dport, t.seq) == (80, 8080, 7)
    assert h.TCP.get_bits(t, "doff") == 5 and h.TCP.get_bits(t, "syn") == 1 and h.TCP.get_bits(t, "ack") == 1
    i = h.ICMP.unpack(bytes(SICMP(type=8, id=3, seq=4)))
    assert (i.type, i.id, i.seq) == (8, 3, 4)
    v6 = h.IPv6.unpack(bytes(SIPv6(src="::1", dst="ff02::1", nh=17, fl=5)))
    assert h.IPv6.get_bits(v6, "version") == 6 and v6.nexthdr == 17 and v6.daddr[0] == 0xFF
    assert h.IPv6.size == 40


def test_igmp_v2_and_v3():
    g = h.IGMP.unpack(bytes(SIGMP(type=0x16, gaddr="239.1.2.3")))
    assert g.type == h.IGMPV2_REPORT and g.group == 0xEF010203
    rep = bytes(IGMPv3_MR(records=[
        IGMPv3_MR_Group(rtype=4, maddr="239.0.0.1"),
        IGMPv3_MR_Group(rtype=1, maddr="239.0.0.2", srcaddrs=["10.0.0.1", "10.0.0.2"]),
    ]))
    hdr = h.IGMPv3Report.unpack(rep)
    assert hdr.type == h.IGMPV3_REPORT and hdr.ngrec == 2 and h.inet_checksum(rep) == 0
    r1 = h.IGMPv3GroupRecord.unpack(rep[8:])
    assert (r1.rtype, r1.nsrcs, r1.group) == (4, 0, 0xEF000001)
    off = 8 + h.record_size(r1.nsrcs, r1.auxlen)
    r2 = h.IGMPv3GroupRecord.unpack(rep[off:])
    assert (r2.rtype, r2.nsrcs, r2.group) == (1, 2, 0xEF000002)
    q = h.IGMPv3Query.unpack(bytes(IGMPv3_MQ(gaddr="239.0.0.9", qrv=2, srcaddrs=["1.2.3.4"])))
    assert q.group == 0xEF000009 and q.nsrcs == 1 and h.IGMPv3Query.get_bits(q, "qrv") == 2
