"""A forwarder test/demo topology built with ``pybpfasm.netlab``.

::

    [src netns] --veth-- (root: <p>u, upstream XDP)
    [r0  netns] --veth-- (root: <p>d0, downstream XDP)
    [r1  netns] --veth-- (root: <p>d1, downstream XDP)  ...

The forwarder runs in the root namespace on the host-side veth ends; each
host namespace has one interface with an address in 10.<n>.0.0/16 and a
multicast route. Because a native-mode XDP redirect into a veth is dropped
unless the veth's *peer* runs XDP or has GRO on, GRO is switched on in every
host namespace; because a local socket leaves a partial checksum that the
XDP redirect path loses, TX checksum offload is switched off on every host
(sender) interface.

Hosts use real kernel sockets created inside their namespace (a socket keeps
its namespace for life, so the rest of the program can use it from any
thread): ``join`` is ``IP_ADD_MEMBERSHIP`` -- the host's own IGMP stack sends
the report, in the IGMP version forced for that host.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

from pybpfasm import netlab

PORT = 5001


@dataclass
class Host:
    name: str          # short name: "src", "r0", ...
    netns: str
    ifname: str        # interface inside the namespace
    port_if: str       # the root-side veth end (forwarder port)
    address: str
    igmp_version: int = 0
    sockets: dict[str, socket.socket] = field(default_factory=dict)  # group -> joined socket

    def _sock(self) -> socket.socket:
        with netlab.enter_netns(self.netns):
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)

    def join(self, group: str, port: int = PORT) -> socket.socket:
        """Open a UDP socket bound to ``group:port`` and join the group (the kernel sends the report)."""
        if group in self.sockets:
            return self.sockets[group]
        s = self._sock()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((group, port))
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(self.address))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        s.setblocking(False)
        self.sockets[group] = s
        return s

    def leave(self, group: str) -> None:
        """Drop membership (closing the socket makes the kernel send the leave / TO_IN{})."""
        s = self.sockets.pop(group, None)
        if s is not None:
            s.close()

    def sender(self, ttl: int = 4) -> socket.socket:
        s = self._sock()
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.address))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        return s

    def drain(self, group: str) -> int:
        """Datagrams waiting on the group's socket (read and discarded)."""
        s = self.sockets.get(group)
        n = 0
        if s is None:
            return 0
        while True:
            try:
                s.recv(65536)
            except BlockingIOError:
                return n
            n += 1

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()


class ForwarderLab:
    """Namespaces and veths for one upstream source and ``n`` downstream receivers."""

    def __init__(self, prefix: str, receivers: int, igmp_versions: list[int] | None = None):
        if receivers > 50:
            raise netlab.NetLabError("at most 50 receivers")
        self.lab = netlab.Lab(prefix)
        self.prefix = prefix
        self.hosts: dict[str, Host] = {}
        try:
            self.source = self._host("src", "u", "U", "10.0.0.1", 0)
            for i in range(receivers):
                version = igmp_versions[i % len(igmp_versions)] if igmp_versions else 0
                self._host(f"r{i}", f"d{i}", f"h{i}", f"10.0.{i + 1}.2", version)
        except BaseException:
            self.close()
            raise

    def _host(self, name: str, port_suffix: str, host_suffix: str, address: str, version: int) -> Host:
        ns = self.lab.netns(name)
        pair = self.lab.veth(port_suffix, host_suffix, peer_netns=ns)
        netlab.add_address(pair.peer, f"{address}/16", netns=ns)
        netlab.add_route("224.0.0.0/4", ifname=pair.peer, netns=ns)
        netlab.disable_tx_checksum(pair.peer, netns=ns)
        netlab.enable_gro(pair.peer, netns=ns)
        if version:
            netlab.set_igmp_version(version, pair.peer, netns=ns)
            netlab.set_igmp_version(version, "all", netns=ns)
        # answer queries quickly and send unsolicited reports promptly
        netlab.write_sysctl(f"net/ipv4/conf/{pair.peer}/igmpv3_unsolicited_report_interval", 100, netns=ns)
        netlab.write_sysctl(f"net/ipv4/conf/{pair.peer}/igmpv2_unsolicited_report_interval", 100, netns=ns)
        host = Host(name, ns, pair.peer, pair.name, address, version)
        self.hosts[name] = host
        return host

    @property
    def upstream(self) -> str:
        return self.source.port_if

    @property
    def receivers(self) -> list[Host]:
        return [h for n, h in self.hosts.items() if n != "src"]

    @property
    def downstreams(self) -> list[str]:
        return [h.port_if for h in self.receivers]

    def close(self) -> None:
        for h in self.hosts.values():
            h.close()
        self.lab.close()

    def __enter__(self) -> ForwarderLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(sock: socket.socket, group: str, payload: bytes = b"x" * 64, count: int = 1, port: int = PORT) -> None:
    for _ in range(count):
        sock.sendto(payload, (group, port))


def received(hosts: list[Host], group: str, settle: float = 0.05) -> dict[str, int]:
    """Give in-flight datagrams ``settle`` seconds, then count (and discard) what each host got on ``group``."""
    time.sleep(settle)
    return {h.name: h.drain(group) for h in hosts}
