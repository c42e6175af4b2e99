"""End to end: ``pybpfasm run EXAMPLE`` on veths in test namespaces, with real socket traffic.

Each test builds a small topology with ``pybpfasm.netlab``, starts the CLI as a separate
process (``pybpfasm run ... --netns NS --mode native``), sends traffic from sockets inside
the namespaces, checks what arrives and what the example printed, then stops the CLI with
SIGINT and checks that it detached.

Facts the topologies respect: a native XDP_TX / redirect into a veth is dropped unless the
peer of the egress veth runs XDP or has GRO on (``netlab.enable_gro``); a local socket
sending over a veth leaves a partial checksum that the XDP redirect path loses, so the
sender's TX checksum offload is turned off (``netlab.disable_tx_checksum``).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from pybpfasm import dsl, netlab, xdp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Cli:
    """``pybpfasm run ...`` in a child process; stdout collected line by line."""

    def __init__(self, *argv: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "pybpfasm.cli.main", "run", *argv], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, *texts: str, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not all(any(t in ln for ln in self.out) for t in texts):
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                pytest.fail(f"{texts} not printed by pybpfasm run; got:\n" + "\n".join(self.out) + f"\n{err}")
            try:
                self.out.append(self.lines.get(timeout=min(left, 0.2)))
            except queue.Empty:
                pass
        return self.out

    def stop(self) -> list[str]:
        """SIGINT (Ctrl-C), then everything it printed."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(15)
        self.wait_for("detached from")
        assert self.proc.returncode == 0, self.proc.stderr.read() if self.proc.stderr else ""
        return self.out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def lab(kernel, unique_name) -> Iterator[netlab.Lab]:
    with netlab.Lab(unique_name) as lab:
        yield lab


@pytest.fixture
def cli() -> Iterator[type[Cli]]:
    started: list[Cli] = []

    class Tracked(Cli):
        def __init__(self, *argv: str):
            super().__init__(*argv)
            started.append(self)

    yield Tracked
    for c in started:
        c.kill()


def sock_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside a namespace (it stays there)."""
    with netlab.enter_netns(netns):
        return socket.socket(family, kind, proto)


def assert_detached(ifname: str, netns: str) -> None:
    assert xdp.query_xdp(ifname, netns=netns).prog_ids == {}


# ----------------------------------------------------------------------------- mytcpdump


def test_mytcpdump_prints_real_udp_and_tcp_traffic(lab, cli):
    na, nb = lab.netns("a"), lab.netns("b")
    pair = lab.veth("a", "b", netns=na, peer_netns=nb)
    netlab.add_address(pair.name, "10.55.0.1/24", na)
    netlab.add_address(pair.peer, "10.55.0.2/24", nb)
    run = cli("examples/mytcpdump.py", "--dev", pair.peer, "--netns", nb, "--mode", "native")
    run.wait_for("attached to")

    with sock_in(na, socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            sock_in(nb, socket.AF_INET, socket.SOCK_STREAM) as listener, \
            sock_in(na, socket.AF_INET, socket.SOCK_STREAM) as client:
        udp.bind(("10.55.0.1", 40001))
        udp.sendto(b"x" * 20, ("10.55.0.2", 5353))
        listener.bind(("10.55.0.2", 8080))
        listener.listen()
        client.bind(("10.55.0.1", 40002))
        client.settimeout(5)
        client.connect(("10.55.0.2", 8080))
        conn, _ = listener.accept()
        client.sendall(b"hello")
        assert conn.recv(16) == b"hello"
        conn.close()
        out = run.wait_for("10.55.0.1:40001", "10.55.0.1:40002")
    lines = [ln.split() for ln in run.stop()]
    assert ["UDP", "10.55.0.1:40001", "->", "10.55.0.2:5353", "48", "bytes"] in lines
    tcp = [ln for ln in lines if ln[:4] == ["TCP", "10.55.0.1:40002", "->", "10.55.0.2:8080"]]
    assert len(tcp) >= 3  # SYN, ACK, data
    lengths = {int(ln[4]) for ln in tcp}
    assert any(n + 5 in lengths for n in lengths)  # the data segment: a bare ACK's length + b"hello"
    assert out[0].startswith("mytcpdump: ")
    assert_detached(pair.peer, nb)


# ----------------------------------------------------------------------------- xdp_dnat


BACKEND_MAC = "02:00:00:00:05:05"


def dnat_lab(lab: netlab.Lab) -> dict[str, str]:
    """client (10.60.0.1) -- l0 [xdp_dnat] balancer [forwarding] l1 -- backend 10.244.1.5."""
    nc, nl, nb = lab.netns("c"), lab.netns("l"), lab.netns("b")
    front = lab.veth("c", "l0", netns=nc, peer_netns=nl)
    back = lab.veth("l1", "b", netns=nl, peer_netns=nb, peer_mac=BACKEND_MAC)
    netlab.add_address(front.name, "10.60.0.1/24", nc)
    netlab.add_address(front.peer, "10.60.0.2/24", nl)
    netlab.add_address(back.name, "10.244.1.1/24", nl)
    netlab.add_address(back.peer, "10.244.1.5/24", nb)
    netlab.add_route("10.96.0.0/16", gateway="10.60.0.2", netns=nc)
    netlab.add_route("default", gateway="10.244.1.1", netns=nb)
    netlab.write_sysctl("net.ipv4.ip_forward", 1, nl)
    netlab.disable_tx_checksum(front.name, nc)   # the client's segments carry full checksums
    netlab.enable_gro(back.peer, nb)             # native redirect into l1 needs its peer's NAPI
    return {"nc": nc, "nl": nl, "nb": nb, "dev": front.peer, "out": back.name, "backend_dev": back.peer}


def start_dnat(cli: type[Cli], t: dict[str, str], vip: str, proto: str, backend: str) -> Cli:
    run = cli("examples/xdp_dnat.py", "--dev", t["dev"], "--netns", t["nl"], "--mode", "native",
              "--vip", vip, "--proto", proto, "--backend", backend, "--out-dev", t["out"],
              "--backend-mac", BACKEND_MAC)
    run.wait_for("attached to")
    return run


def test_xdp_dnat_udp_service_reaches_the_backend(lab, cli):
    t = dnat_lab(lab)
    run = start_dnat(cli, t, "10.96.0.10:9999", "udp", "10.244.1.5:9999")
    with sock_in(t["nb"], socket.AF_INET, socket.SOCK_DGRAM) as server, \
            sock_in(t["nc"], socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("0.0.0.0", 9999))
        server.settimeout(5)
        client.settimeout(5)
        client.bind(("10.60.0.1", 41000))
        for i in range(3):
            client.sendto(b"request %d" % i, ("10.96.0.10", 9999))
            data, peer = server.recvfrom(100)   # arrived, so the UDP checksum was right
            assert (data, peer) == (b"request %d" % i, ("10.60.0.1", 41000))
            server.sendto(b"reply %d" % i, peer)   # routed back, no reverse NAT (as in the seed)
            assert client.recvfrom(100) == (b"reply %d" % i, ("10.244.1.5", 9999))
    out = run.stop()
    assert any("service 10.96.0.10:9999/udp -> 10.244.1.5:9999" in ln for ln in out)
    assert_detached(t["dev"], t["nl"])


def test_xdp_dnat_tcp_syn_reaches_the_backend_which_answers(lab, cli):
    t = dnat_lab(lab)
    run = start_dnat(cli, t, "10.96.0.10:80", "tcp", "10.244.1.5:8080")
    seen: list[bytes] = []
    with sock_in(t["nb"], socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as capture, \
            sock_in(t["nb"], socket.AF_INET, socket.SOCK_STREAM) as listener, \
            sock_in(t["nc"], socket.AF_INET, socket.SOCK_STREAM) as client:
        capture.bind((t["backend_dev"], 0))
        capture.settimeout(0.2)
        listener.bind(("0.0.0.0", 8080))
        listener.listen()
        client.setblocking(False)
        client.bind(("10.60.0.1", 42000))
        client.connect_ex(("10.96.0.10", 80))   # the SYN goes to the VIP
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(Ether(f).haslayer(TCP) and Ether(f)[TCP].flags == "SA"
                                                      for f in seen):
            try:
                seen.append(capture.recv(2048))
            except TimeoutError:
                pass
    run.stop()
    frames = [Ether(f) for f in seen if Ether(f).haslayer(TCP)]
    syn = next(f for f in frames if f[TCP].flags == "S")
    assert (syn.dst, syn[IP].src, syn[IP].dst, syn[TCP].sport, syn[TCP].dport) == (
        BACKEND_MAC, "10.60.0.1", "10.244.1.5", 42000, 8080)
    again = Ether(bytes(syn))
    del again[IP].chksum, again[TCP].chksum
    again = Ether(bytes(again))
    assert (again[IP].chksum, again[TCP].chksum) == (syn[IP].chksum, syn[TCP].chksum)
    # the backend's TCP accepted the SYN (checksums verified by the kernel) and answered it
    synack = next(f for f in frames if f[TCP].flags == "SA")
    assert (synack[IP].src, synack[TCP].sport, synack[IP].dst, synack[TCP].dport) == ("10.244.1.5", 8080,
                                                                                      "10.60.0.1", 42000)
    assert_detached(t["dev"], t["nl"])


# ----------------------------------------------------------------------------- icmp_lb


@dsl.xdp
def xdp_pass(pkt):
    return dsl.XDP_PASS


def test_icmp_lb_alternates_real_pings_between_two_backends(lab, cli):
    """One L2 segment (a bridge): client .1, balancer .2 (XDP_TX), backends .3 and .4."""
    ns_switch, nc, nl = lab.netns("s"), lab.netns("c"), lab.netns("l")
    netlab.run_cmd(ns_switch, ["ip", "link", "add", "br0", "type", "bridge"])
    netlab.set_up("br0", ns_switch)
    hosts = {"c": ("192.168.77.1", nc, None), "l": ("192.168.77.2", nl, None),
             "b3": ("192.168.77.3", lab.netns("b3"), "02:00:00:00:77:03"),
             "b4": ("192.168.77.4", lab.netns("b4"), "02:00:00:00:77:04")}
    ports = {}
    for name, (addr, ns, hw) in hosts.items():
        pair = lab.veth(name, "s" + name, netns=ns, peer_netns=ns_switch, mac=hw)
        netlab.run_cmd(ns_switch, ["ip", "link", "set", pair.peer, "master", "br0"])
        netlab.add_address(pair.name, addr + "/24", ns)
        ports[name] = pair
    # the balancer sends frames with the client's source MAC back into the switch: the switch
    # must not learn the client on the balancer's port (a one-armed balancer's usual setting)
    netlab.run_cmd(ns_switch, ["ip", "link", "set", ports["l"].peer, "type", "bridge_slave", "learning", "off"])
    # native XDP_TX needs the peer to take XDP frames: GRO on that bridge port was not enough
    # (frames counted as xdp_tx, never seen on the port); an XDP_PASS program there is
    passer = xdp_pass.load()
    peer_xdp = xdp.attach_xdp(ports["l"].peer, passer, mode="native", netns=ns_switch)
    run = cli("examples/icmp_lb.py", "--dev", ports["l"].name, "--netns", nl, "--mode", "native",
              "--lb-ip", "192.168.77.2", "--backend", "192.168.77.3,02:00:00:00:77:03",
              "--backend", "192.168.77.4,02:00:00:00:77:04")
    run.wait_for("attached to")
    replies = []
    with sock_in(nc, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as ping:
        ping.settimeout(3)
        for seq in range(1, 7):
            ping.sendto(bytes(ICMP(type=8, id=0x77, seq=seq) / b"pybpfasm"), ("192.168.77.2", 0))
            while True:  # the raw socket sees every ICMP message: wait for our reply
                data, (src, _) = ping.recvfrom(2048)
                reply = IP(data)
                if reply[ICMP].type == 0 and reply[ICMP].id == 0x77 and reply[ICMP].seq == seq:
                    replies.append(src)
                    break
    out = run.stop()
    peer_xdp.detach()
    passer.close()
    assert replies == ["192.168.77.3", "192.168.77.4"] * 3
    assert any("backend 1: 192.168.77.4 02:00:00:00:77:04" in ln for ln in out)
    assert_detached(ports["l"].name, nl)
