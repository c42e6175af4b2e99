"""Every example of examples/ run with BPF_PROG_TEST_RUN on scapy-built packets (real kernel).

Each test checks the verdict, the rewritten packet (checksums recomputed by scapy and
compared) and the map or ring-buffer contents the seed describes, and runs the example's
user-space part to check what it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

import examples
from examples import ip, mac

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)


# ----------------------------------------------------------------------------- fixtures and helpers


class Loaded:
    """A fresh example module and its loaded program."""

    def __init__(self, name: str, configure: dict | None = None):
        self.module = examples.load(name)
        if configure is not None:
            self.module.configure(argparse.Namespace(**configure))
        self.dsl = examples.program_of(self.module)
        self.prog = self.dsl.load()

    def run(self, frame: bytes | object) -> tuple[int, bytes]:
        res = self.prog.test_run(bytes(frame))  # type: ignore[arg-type]
        return res.retval, res.data

    def close(self) -> None:
        self.prog.close()
        examples.close(self.module)


@pytest.fixture
def load(kernel) -> Iterator[Callable[..., Loaded]]:
    made: list[Loaded] = []

    def make(name: str, **configure: object) -> Loaded:
        made.append(Loaded(name, configure or None))
        return made[-1]

    yield make
    for x in made:
        x.close()


class UserSpace:
    """An example's ``userspace()`` in a thread, its prints captured."""

    def __init__(self, ex: Loaded):
        self.ex, self.stop, self.buf, self.error = ex, threading.Event(), io.StringIO(), None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            with contextlib.redirect_stdout(self.buf):
                self.ex.module.userspace(self.ex.prog, examples.maps_of(self.ex.module), self.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            self.error = exc

    def __enter__(self) -> UserSpace:
        self.thread.start()
        return self

    def wait_for(self, *texts: str, timeout: float = 5.0, times: int = 1) -> str:
        """Wait until every text was printed (``times`` times each)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.buf.getvalue()
            if all(out.count(t) >= times for t in texts) or self.error:
                break
            time.sleep(0.02)
        out = self.buf.getvalue()
        if self.error:
            raise self.error
        missing = [t for t in texts if out.count(t) < times]
        assert not missing, f"{missing} not printed; got:\n{out}"
        return out

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def fast_ticks(monkeypatch: pytest.MonkeyPatch, ex: Loaded) -> None:
    """Make an example's every(N s) ticker tick every 20 ms."""
    real = examples.every
    monkeypatch.setattr(ex.module, "every", lambda seconds, stop: real(0.02, stop))


def checksums_ok(frame: bytes) -> bool:
    """True if scapy, recomputing the IP and TCP/UDP/ICMP checksums, gets the same values."""
    pkt = Ether(frame)
    again = pkt.copy()
    del again[IP].chksum
    layer = again[IP].payload
    if hasattr(layer, "chksum") and not (isinstance(layer, UDP) and pkt[UDP].chksum == 0):
        del layer.chksum
    again = Ether(bytes(again))
    l4 = pkt[IP].payload
    return pkt[IP].chksum == again[IP].chksum and getattr(l4, "chksum", None) == getattr(again[IP].payload,
                                                                                           "chksum", None)


MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def eth() -> Ether:
    return Ether(src=MAC_A, dst=MAC_B)


def rand_ip() -> str:
    b = uuid.uuid4().bytes
    return f"10.{b[0]}.{b[1]}.{max(b[2], 1)}"


# ----------------------------------------------------------------------------- tracefs (hello, packet_inspect)


@pytest.fixture(scope="module")
def tracefs(kernel) -> Iterator[None]:
    """bpf_printk output is read from tracefs: mount it for the test if it is not."""
    mounted = False
    if not os.path.exists(os.path.join(examples.TRACEFS, "trace_pipe")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", examples.TRACEFS], check=True)
        mounted = True
    try:
        yield
    finally:
        if mounted:
            subprocess.run(["umount", examples.TRACEFS], check=False)


def test_hello_prints_on_every_packet(load, tracefs):
    ex = load("hello")
    with UserSpace(ex) as us:
        time.sleep(0.1)  # trace_pipe opened
        for frame in (eth() / IP() / UDP(), b"\x01" * 20, b"\x00" * 14):
            assert ex.run(frame)[0] == XDP_PASS
        us.wait_for("bpf_trace_printk: hello world", times=3)


def test_packet_inspect_prints_addresses_and_protocol(load, tracefs):
    ex = load("packet_inspect")
    src, dst = rand_ip(), rand_ip()
    with UserSpace(ex) as us:
        time.sleep(0.1)
        frame = eth() / IP(src=src, dst=dst) / TCP()
        assert ex.run(frame) == (XDP_PASS, bytes(frame))
        assert ex.run(eth() / ARP(psrc=src))[0] == XDP_PASS
        assert ex.run(bytes(eth() / IP(src=src))[:30])[0] == XDP_PASS  # truncated IPv4 header
        out = us.wait_for(f"src: {src} dst: {dst} proto: 6")
    assert out.count(f"src: {src} ") == 1


# ----------------------------------------------------------------------------- counters


def test_packet_counter_counts_per_protocol(load, monkeypatch):
    ex = load("packet_counter")
    counts = ex.module.proto_count
    counts[47] = 100  # an existing entry is incremented, not overwritten by the NOEXIST insert
    frames = [eth() / IP() / UDP()] * 3 + [eth() / IP() / TCP()] * 2 + [eth() / IP() / ICMP(),
                                                                       eth() / IP(proto=47) / b"gre"]
    frames += [eth() / ARP(), b"\x00" * 20]
    for frame in frames:
        assert ex.run(frame)[0] == XDP_PASS
    assert dict(counts.items()) == {17: 3, 6: 2, 1: 1, 47: 101}
    fast_ticks(monkeypatch, ex)
    with UserSpace(ex) as us:
        us.wait_for("--- protocol counts ---", "proto  17 (UDP            ): 3 packets",
                    "proto  47 (GRE            ): 101 packets")


def test_connection_tracker_counts_packets_and_bytes_per_connection(load, monkeypatch):
    ex = load("connection_tracker")
    a = eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / (b"x" * 100)
    b = eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / (b"y" * 10)
    c = eth() / IP(src="10.0.0.2", dst="10.0.0.1", options=b"\x94\x04\x00\x00") / TCP()
    for frame in (a, a, b, c):
        assert ex.run(frame)[0] == XDP_PASS
    ex.run(eth() / ARP())
    m = ex.module
    table = {(k.src_ip, k.dst_ip, k.proto): (v.packets, v.bytes) for k, v in m.conn_table.items()}
    assert table == {(ip("10.0.0.1"), ip("10.0.0.2"), 6): (2, 2 * 140),
                     (ip("10.0.0.1"), ip("10.0.0.2"), 17): (1, 38),
                     (ip("10.0.0.2"), ip("10.0.0.1"), 6): (1, 44)}
    for raw in m.conn_table.keys_raw():  # the padding bytes are hashed too: they must be zero
        assert raw[9:] == b"\0\0\0"
    assert m.conn_table[m.ConnKey(src_ip=ip("10.0.0.1"), dst_ip=ip("10.0.0.2"), proto=17)].packets == 1
    fast_ticks(monkeypatch, ex)
    with UserSpace(ex) as us:
        us.wait_for("--- connection table ---", "  10.0.0.1        -> 10.0.0.2         TCP     pkts: 2  bytes: 280\n")


def test_xdp_stats_counts_sources_in_an_lru_hash(load, monkeypatch):
    ex = load("xdp_stats")
    stats = ex.module.xdp_stats_map
    for i in range(3):
        assert ex.run(eth() / IP(src="192.168.7.1") / ICMP(seq=i))[0] == XDP_PASS
    ex.run(eth() / IP(src="192.168.7.2") / UDP())
    ex.run(eth() / ARP(psrc="192.168.7.9"))
    assert dict(stats.items()) == {ip("192.168.7.1"): 3, ip("192.168.7.2"): 1}
    fast_ticks(monkeypatch, ex)
    with UserSpace(ex) as us:
        us.wait_for("Map contents:\n", "\t192.168.7.1 => 3\n", "\t192.168.7.2 => 1\n")
    for i in range(40):  # more sources than its 16 entries: the LRU evicts, never fails
        assert ex.run(eth() / IP(src=f"10.9.0.{i + 1}") / UDP())[0] == XDP_PASS
    assert 0 < len(list(stats.keys())) <= 16
    assert ip("10.9.0.40") in stats


# ----------------------------------------------------------------------------- filters


@pytest.mark.parametrize("frame, verdict", [
    (eth() / IP() / TCP(dport=8080), XDP_DROP),
    (eth() / IP(options=b"\x94\x04\x00\x00") / TCP(dport=8080), XDP_DROP),  # IHL 6
    (eth() / IP() / TCP(dport=80), XDP_PASS),
    (eth() / IP() / TCP(sport=8080, dport=80), XDP_PASS),
    (eth() / IP() / UDP(dport=8080), XDP_PASS),
    (bytes(eth() / IP() / TCP(dport=8080))[:40], XDP_PASS),  # truncated TCP header
    (eth() / ARP(), XDP_PASS),
])
def test_drop_port_8080(load, frame, verdict):
    ex = load("drop_port_8080")
    got, data = ex.run(frame)
    assert got == verdict
    assert data == bytes(frame)


# ----------------------------------------------------------------------------- ring buffers


def test_mytcpdump_streams_tcp_and_udp_events(load):
    ex = load("mytcpdump")
    m = ex.module
    frames = [
        eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80) / b"hello",
        eth() / IP(src="10.0.0.3", dst="10.0.0.4") / UDP(sport=53, dport=5353),
        eth() / IP(src="10.0.0.5", dst="10.0.0.6", options=b"\x94\x04\x00\x00") / TCP(sport=7, dport=8),
        eth() / IP(src="10.0.0.7", dst="10.0.0.8") / ICMP(),
        eth() / IP(src="10.0.0.9", dst="10.0.0.10", proto=6) / b"short",  # no room for a TCP header
    ]
    with UserSpace(ex) as us:
        time.sleep(0.1)
        for frame in frames:
            assert ex.run(frame) == (XDP_PASS, bytes(frame))
        assert ex.run(eth() / ARP())[0] == XDP_PASS
        out = us.wait_for("10.0.0.9", timeout=5)
    lines = out.splitlines()
    assert lines[0].split() == ["proto", "src", "->", "dst", "len"]
    assert [ln.split() for ln in lines[1:]] == [
        ["TCP", "10.0.0.1:1234", "->", "10.0.0.2:80", "45", "bytes"],
        ["UDP", "10.0.0.3:53", "->", "10.0.0.4:5353", "28", "bytes"],
        ["TCP", "10.0.0.5:7", "->", "10.0.0.6:8", "44", "bytes"],
        ["ICMP", "10.0.0.7", "->", "10.0.0.8", "28", "bytes"],
        ["TCP", "10.0.0.9:0", "->", "10.0.0.10:0", "25", "bytes"],
    ]
    assert m.PacketEvent.size == 16


def test_xdp_metadata_streams_five_tuples(load):
    ex = load("xdp_metadata")
    from pybpfasm.ringbuf import RingBuffer

    m = ex.module
    frames = [
        eth() / IP(src="192.168.1.1", dst="192.168.1.2") / UDP(sport=53, dport=46313),
        eth() / IP(src="192.168.1.3", dst="192.168.1.2") / TCP(sport=35668, dport=22),
        eth() / IP(src="192.168.1.4", dst="192.168.1.2") / ICMP(),
        eth() / IP(src="192.168.1.5", dst="192.168.1.2", proto=17) / b"abc",  # truncated UDP: no event
    ]
    with RingBuffer(m.ringbuf) as rb:
        for frame in frames:
            assert ex.run(frame) == (XDP_PASS, bytes(frame))
        events = [m.Metadata.unpack(r) for r in rb.drain()]
    assert [m.format_event(e) for e in events] == [
        "Packet: 192.168.1.1:53 -> 192.168.1.2:46313, protocol: UDP",
        "Packet: 192.168.1.3:35668 -> 192.168.1.2:22, protocol: TCP",
        "Packet: 192.168.1.4:0 -> 192.168.1.2:0, protocol: ICMP",
    ]
    with UserSpace(ex) as us:
        time.sleep(0.1)
        ex.run(frames[1])
        us.wait_for("Listening for events...", "Packet: 192.168.1.3:35668 -> 192.168.1.2:22, protocol: TCP")


# ----------------------------------------------------------------------------- rewriting: DNAT and the ICMP balancer

VIP, BACKEND = "10.96.0.10", "10.244.1.5"
SMAC, DMAC = "02:00:00:00:01:01", "02:00:00:00:01:02"


def dnat(load) -> Loaded:
    ex = load("xdp_dnat")
    m = ex.module
    for proto, vport, bport in ((17, 9999, 9999), (6, 80, 8080)):
        m.service_map[m.ServiceKey(vip=ip(VIP), port=vport, proto=proto)] = m.Backend(
            ip=ip(BACKEND), port=bport, ifindex=1, src_mac=mac(SMAC), dst_mac=mac(DMAC))
    return ex


@pytest.mark.parametrize("l4, bport", [(UDP(sport=40000, dport=9999) / b"payload", 9999),
                                       (TCP(sport=40000, dport=80, flags="S") / b"data", 8080)])
@pytest.mark.parametrize("options", [b"", b"\x94\x04\x00\x00"])
def test_xdp_dnat_rewrites_and_redirects(load, l4, bport, options):
    ex = dnat(load)
    frame = eth() / IP(src="10.0.0.1", dst=VIP, options=options) / l4
    verdict, data = ex.run(frame)
    assert verdict == XDP_REDIRECT
    out = Ether(data)
    assert (out.src, out.dst) == (SMAC, DMAC)
    assert (out[IP].src, out[IP].dst, out[IP].payload.sport, out[IP].payload.dport) == ("10.0.0.1", BACKEND,
                                                                                         40000, bport)
    assert bytes(out[IP].payload.payload) == bytes(l4.payload)
    assert checksums_ok(data)


@pytest.mark.parametrize("frame", [
    eth() / IP(dst=VIP) / UDP(dport=9998),                     # no such service port
    eth() / IP(dst=VIP) / TCP(dport=9999),                     # the UDP service is not a TCP one
    eth() / IP(dst="10.96.0.11") / UDP(dport=9999),            # another address
    eth() / IP(dst=VIP) / ICMP(),
    bytes(eth() / IP(dst=VIP) / TCP(dport=80))[:40],           # truncated TCP header
    eth() / ARP(pdst=VIP),
])
def test_xdp_dnat_passes_everything_else_untouched(load, frame):
    ex = dnat(load)
    assert ex.run(frame) == (XDP_PASS, bytes(frame))


def test_xdp_dnat_keeps_a_zero_udp_checksum(load):
    ex = dnat(load)
    frame = Ether(bytes(eth() / IP(dst=VIP) / UDP(dport=9999, chksum=0) / b"x"))
    verdict, data = ex.run(frame)
    assert verdict == XDP_REDIRECT and Ether(data)[UDP].chksum == 0 and Ether(data)[IP].dst == BACKEND
    assert checksums_ok(data)


@pytest.fixture(scope="module")
def dnat_module(kernel) -> Iterator[Loaded]:
    made: list[Loaded] = []
    ex = dnat(lambda name: made.append(Loaded(name)) or made[-1])
    yield ex
    ex.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(src=st.integers(1, 0xFFFFFFFE), sport=st.integers(1, 65535), ttl=st.integers(1, 255),
       payload=st.binary(max_size=64), tcp=st.booleans(), ip_id=st.integers(0, 65535))
def test_xdp_dnat_checksums_stay_valid(dnat_module, src, sport, ttl, payload, tcp, ip_id):
    l4 = TCP(sport=sport, dport=80, seq=src) if tcp else UDP(sport=sport, dport=9999)
    frame = eth() / IP(src=examples.ip_str(src), dst=VIP, ttl=ttl, id=ip_id) / l4 / payload
    verdict, data = dnat_module.run(frame)
    assert verdict == XDP_REDIRECT
    assert checksums_ok(data)
    assert Ether(data)[IP].dst == BACKEND


def test_xdp_dnat_configure_fills_the_service_map(load):
    ex = load("xdp_dnat", vip="10.96.0.1:53", proto="udp", backend="10.244.0.9:5353", out_dev="lo", dev="lo",
              backend_mac="02:00:00:00:00:99")
    m = ex.module
    (key, be), = m.service_map.items()
    assert (key.vip, key.port, key.proto) == (ip("10.96.0.1"), 53, 17)
    assert (be.ip, be.port, be.ifindex, be.dst_mac) == (ip("10.244.0.9"), 5353, 1, mac("02:00:00:00:00:99"))
    verdict, data = ex.run(eth() / IP(dst="10.96.0.1") / UDP(dport=53))
    assert verdict == XDP_REDIRECT and Ether(data)[UDP].dport == 5353
    with pytest.raises(examples.ExampleError):
        m.configure(argparse.Namespace(vip="10.96.0.1", proto="udp", backend="1.2.3.4:5", out_dev="lo", dev="lo",
                                       backend_mac="02:00:00:00:00:99"))


def echo(seq: int, dst: str = "192.168.1.2") -> Ether:
    return eth() / IP(src="192.168.1.100", dst=dst) / ICMP(id=7, seq=seq) / b"ping"


def test_icmp_lb_round_robin_between_the_seed_backends(load):
    ex = load("icmp_lb")
    seen = []
    for seq in range(4):
        verdict, data = ex.run(echo(seq))
        assert verdict == XDP_TX
        out = Ether(data)
        seen.append((out[IP].dst, out.dst))
        assert checksums_ok(data)
        assert (out.src, out[IP].src, bytes(out[ICMP].payload)) == (MAC_A, "192.168.1.100", b"ping")
    assert seen == [("192.168.1.3", "52:54:00:ff:ff:55"), ("192.168.1.4", "52:54:00:5d:6e:a1")] * 2
    assert ex.module.rr_map[0] == 0


@pytest.mark.parametrize("frame", [
    echo(1, dst="192.168.1.9"),                                             # not the balancer
    eth() / IP(dst="192.168.1.2") / UDP(),                                  # not ICMP
    eth() / IP(dst="192.168.1.2", options=b"\x94\x04\x00\x00") / ICMP(),    # IP options
    eth() / ARP(pdst="192.168.1.2"),
])
def test_icmp_lb_passes_other_traffic(load, frame):
    ex = load("icmp_lb")
    assert ex.run(frame) == (XDP_PASS, bytes(frame))
    assert ex.module.rr_map[0] == 0


def test_icmp_lb_configured_backends_and_address(load):
    ex = load("icmp_lb", lb_ip="10.1.0.1", backend=["10.1.0.11,02:00:00:00:00:11", "10.1.0.12,02:00:00:00:00:12"])
    assert ex.run(echo(1))[0] == XDP_PASS  # the seed's address is no longer balanced
    dsts = [Ether(ex.run(echo(i, dst="10.1.0.1"))[1])[IP].dst for i in range(3)]
    assert dsts == ["10.1.0.11", "10.1.0.12", "10.1.0.11"]
    with pytest.raises(examples.ExampleError):
        ex.module.configure(argparse.Namespace(lb_ip="10.1.0.1", backend=["10.1.0.11,02:00:00:00:00:11"]))


# ----------------------------------------------------------------------------- the convention itself


def test_every_example_follows_the_convention(load):
    for name in examples.NAMES:
        ex = load(name)
        assert ex.dsl.name and len(ex.dsl.instructions) < 400
        assert ex.prog.test_run(bytes(64)).retval == XDP_PASS  # a zero frame is not IPv4: passed
        assert callable(getattr(ex.module, "userspace", None)) or name in ("drop_port_8080", "xdp_dnat", "icmp_lb")
    with pytest.raises(examples.ExampleError, match="no example named"):
        examples.load("nosuch")
    with pytest.raises(examples.ExampleError, match="no such example file"):
        examples.load("/nonexistent/x.py")


def test_option_parsers_give_one_line_errors():
    assert examples.host_port("10.0.0.1:80") == (ip("10.0.0.1"), 80)
    assert examples.host_port("10.0.0.1", default_port=7) == (ip("10.0.0.1"), 7)
    assert mac("02-00-00-00-00-0A") == bytes.fromhex("02000000000a")
    assert examples.ip_str(ip("192.168.1.2")) == "192.168.1.2"
    for bad in (lambda: examples.host_port("10.0.0.1:0"), lambda: examples.host_port("10.0.0.1:http"),
                lambda: examples.host_port("10.0.0.1"), lambda: ip("10.0.0.256"), lambda: mac("02:00"),
                lambda: mac("zz:00:00:00:00:00")):
        with pytest.raises(examples.ExampleError):
            bad()
    assert examples.proto_name(17) == "UDP" and examples.proto_name(99) == "other"
