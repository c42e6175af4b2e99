"""Forwarder benchmarks (run as root; not a test):

1. our XDP programs vs the clang-compiled references (../shared/reference/*.bpf.c),
   side by side through BPF_PROG_TEST_RUN on the standard packets: ns/packet and ratio;
2. join-to-forward latency in a namespace lab: from the IGMP report leaving the
   receiver (= arriving at the downstream port, kernel timestamp on a packet socket)
   to the first data packet delivered to the joining socket (kernel timestamp), p50/p99;
3. controller event throughput: events drained from the ring buffer and applied.

    .venv/bin/python bench/forwarder.py [--skip-latency] [--samples 100] [--reference-dir DIR]

The references need clang-19, bpftool and libbpf headers (benchmark machines only).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pybpfasm import maps  # noqa: E402
from pybpfasm.program import Program  # noqa: E402
from pybpfasm.ringbuf import RingBuffer  # noqa: E402

REFERENCE_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "reference"))
SO_TIMESTAMPNS = 35
PACE = 50e-6  # seconds between data packets of the latency stream


# ---------------------------------------------------------------------- packets

def _packets() -> dict[str, bytes]:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    import warnings

    from test_downstream_oracle import frame, udp_frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from scapy.contrib.igmpv3 import IGMPv3gr, IGMPv3mr
    from scapy.layers.igmp import IGMP

    return {
        "up: known group": udp_frame("239.1.1.1"),
        "up: unknown group": udp_frame("239.9.9.9"),
        "up: unicast": udp_frame("10.1.1.1"),
        "down: IGMPv2 report": frame(bytes(IGMP(type=0x16, gaddr="239.1.1.1"))),
        "down: IGMPv3 1-record join": frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr="239.1.1.1")]))),
        "down: IGMPv3 8 records": frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr=f"239.1.1.{i}")
                                                                 for i in range(1, 9)]))),
        "down: 1 record, 4 sources": frame(bytes(IGMPv3mr(records=[IGMPv3gr(
            rtype=1, maddr="239.1.1.1", srcaddrs=["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"])]))),
        "down: non-IGMP UDP": udp_frame("10.1.1.1"),
    }


# ---------------------------------------------------------------------- side by side

class Side:
    """One implementation: upstream + downstream programs, their groups map and event ring."""

    def __init__(self, name: str, up: Program, down: Program, groups: maps.Map, events: maps.Map):
        self.name, self.up, self.down, self.groups = name, up, down, groups
        self.ring = RingBuffer(events)
        self.inner = maps.DevMapHash(max_entries=256, name="bench_ports")
        self.inner[1] = 1
        self.groups.update(socket.inet_aton("239.1.1.1"), self.inner)

    def ns_per_packet(self, prog: Program, data: bytes, repeat: int, rounds: int) -> float:
        best = float("inf")
        for _ in range(rounds):
            self.ring.consume()  # drain: measure the real path, not "ring full"
            best = min(best, prog.test_run(data, repeat=repeat).duration_ns)
        self.ring.consume()
        return best

    def close(self) -> None:
        self.ring.close()
        self.inner.close()


def ours(group_counters: bool) -> tuple[Side, dict]:
    from loader.instance import create_maps
    from programs import downstream, upstream

    m = create_maps()
    up = Program.load(upstream.build(m, group_counters=group_counters), prog_type="xdp", name="bench_up")
    down = Program.load(downstream.build(m), prog_type="xdp", name="bench_down")
    return Side("pybpfasm" + ("" if not group_counters else " +grp ctr"), up, down, m["groups"], m["events"]), m


def reference(ref_dir: str, workdir: str, pin_root: str) -> Side:
    objs = {}
    for name in ("upstream", "downstream"):
        obj = os.path.join(workdir, f"{name}.bpf.o")
        subprocess.run(["clang-19", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu",
                        "-c", os.path.join(ref_dir, f"{name}.bpf.c"), "-o", obj], check=True)
        subprocess.run(["bpftool", "prog", "loadall", obj, f"{pin_root}/{name}", "pinmaps",
                        f"{pin_root}/{name}_maps"], check=True)
        objs[name] = obj
    up = Program.from_pinned(f"{pin_root}/upstream/xdp_upstream")
    down = Program.from_pinned(f"{pin_root}/downstream/xdp_downstream")
    groups = maps.Map.from_pinned(f"{pin_root}/upstream_maps/groups", key=4)
    events = maps.Map.from_pinned(f"{pin_root}/downstream_maps/events")
    return Side("clang -O2", up, down, groups, events)


def bench_programs(ref_dir: str, repeat: int, rounds: int) -> None:
    packets = _packets()
    if not shutil.which("clang-19") or not shutil.which("bpftool"):
        print("clang-19/bpftool missing: reference side skipped")
        return
    pin_root = f"/sys/fs/bpf/pybbench{os.getpid()}"
    os.makedirs(pin_root)
    workdir = tempfile.mkdtemp(prefix="pybbench")
    sides: list[Side] = []
    our_maps: list[dict] = []
    try:
        sides.append(reference(ref_dir, workdir, pin_root))
        for counters in (False, True):
            side, m = ours(counters)
            sides.append(side)
            our_maps.append(m)
        print(f"\n== XDP programs through BPF_PROG_TEST_RUN (ns/packet, min of {rounds} runs of {repeat}) ==")
        print(f"{'packet':<30}" + "".join(f"{s.name:>18}" for s in sides) + f"{'ratio':>8}")
        for label, data in packets.items():
            which = "up" if label.startswith("up") else "down"
            active = sides[:2] if which == "down" else sides  # the +grp variant differs upstream only
            best = [float("inf")] * len(active)
            for _ in range(rounds):  # interleaved, so machine noise hits every side alike
                for i, s in enumerate(active):
                    best[i] = min(best[i], s.ns_per_packet(getattr(s, which), data, repeat, 1))
            cols = best + [float("nan")] * (len(sides) - len(active))
            ratio = cols[1] / cols[0] if cols[0] else float("nan")
            print(f"{label:<30}" + "".join(f"{c:>18.0f}" for c in cols) + f"{ratio:>8.2f}")
        print("ratio = pybpfasm (same work as the reference: global counters only) / clang")
        for s in sides:
            for kind in ("up", "down"):
                info = getattr(s, kind).info(arrays=False)
                print(f"  {s.name:<18} {kind:<5} {info.xlated_prog_len // 8:>5} xlated insns, "
                      f"{info.verified_insns:>7} verified")
    finally:
        for s in sides:
            s.close()
            s.up.close()
            s.down.close()
            s.groups.close()
        for m in our_maps:
            for x in m.values():
                x.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------- controller throughput

def bench_controller(rounds: int) -> None:
    from loader.controller import Controller
    from loader.instance import create_maps
    from programs import downstream

    packets = _packets()
    m = create_maps()
    prog = Program.load(downstream.build(m), prog_type="xdp", name="bench_down")

    class FakeInstance:  # the controller only needs maps and a port list here
        def __init__(self) -> None:
            self.maps = m

        def downstream_ports(self) -> dict[int, str]:
            return {1: "lo"}

        def persist_host(self, *a) -> None:
            pass

        def load_membership(self, membership) -> int:
            return 0

    ctl = Controller(FakeInstance(), any_port=True)  # type: ignore[arg-type]
    print("\n== controller: ring buffer drained, decoded and applied ==")
    # a 1 MiB ring holds 16384 events (52 bytes + 8 header -> 64): stay below
    cases = [("IGMPv2 reports (steady state)", packets["down: IGMPv2 report"], 1, 15000),
             ("IGMPv3 8-record reports", packets["down: IGMPv3 8 records"], 8, 1800)]
    try:
        for label, data, per, repeat in cases:
            total_events = 0
            total_time = 0.0
            for _ in range(rounds):
                prog.test_run(data, repeat=repeat)
                t0 = time.perf_counter()
                n = ctl.process()
                total_time += time.perf_counter() - t0
                total_events += n
                assert n == per * repeat, (n, per * repeat)
            print(f"  {label:<34} {total_events / total_time:>12,.0f} events/s")
        # every event a membership change: a join then a leave of 8 groups per report pair
        from scapy.layers.igmp import IGMP  # noqa: F401 - packets built in _packets

        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
        import warnings

        from test_downstream_oracle import frame
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from scapy.contrib.igmpv3 import IGMPv3gr, IGMPv3mr
        join = frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=4, maddr=f"239.2.0.{i}") for i in range(1, 9)])))
        leave = frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=3, maddr=f"239.2.0.{i}") for i in range(1, 9)])))
        events = 0
        spent = 0.0
        for _ in range(200):
            for data in (join, leave):
                prog.test_run(data)
                t0 = time.perf_counter()
                events += ctl.process()
                spent += time.perf_counter() - t0
        print(f"  {'every event changes a devmap':<34} {events / spent:>12,.0f} events/s "
              f"(group create/delete: map syscalls)")
        from programs.events import RECORD as fmt
        prog.test_run(packets["down: IGMPv2 report"], repeat=15000)
        t0 = time.perf_counter()
        got = ctl.ring.decode(fmt)
        dt = time.perf_counter() - t0
        print(f"  {'ring buffer decode only':<34} {len(got) / dt:>12,.0f} records/s")
    finally:
        ctl.close()
        prog.close()
        for x in m.values():
            x.close()


# ---------------------------------------------------------------------- join-to-forward latency

def _blast(ns: str, group: str, stop_at: float) -> None:
    """Stream to ``group`` (own process: no GIL contention with the controller)."""
    from pybpfasm import netlab

    with netlab.enter_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 4)
    payload = b"x" * 32
    dest = (group, 5001)
    while time.time() < stop_at:  # ~10-15k packets/s: the first packet after a join comes within ~100 us
        try:
            s.sendto(payload, dest)
        except OSError:
            pass
        time.sleep(PACE)


def _ts(ancdata: list) -> float | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec * 1e-9
    return None


def _is_join_report(frame: bytes, group: bytes) -> bool:
    """An Ethernet frame carrying an IGMPv3 report whose first record is a join (IS_EX/TO_EX) of ``group``."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 2:
        return False
    igmp = frame[14 + (frame[14] & 0xF) * 4:]
    return len(igmp) >= 16 and igmp[0] == 0x22 and igmp[8] in (2, 4) and igmp[12:16] == group


def bench_latency(samples: int, mode: str) -> None:
    from loader.controller import Controller
    from loader.instance import Instance
    from loader.lab import ForwarderLab
    from pybpfasm import netlab

    prefix = "pyblat" + os.urandom(1).hex()
    group = "239.77.0.1"
    lab = ForwarderLab(prefix, 1, [3])
    inst = ctl = None
    blaster = None
    thread = None
    try:
        inst = Instance.create(prefix, lab.upstream, lab.downstreams, mode=mode)
        ctl = Controller(inst)
        thread = threading.Thread(target=ctl.run, daemon=True)
        thread.start()
        host = lab.receivers[0]
        port = netlab.link_index(host.port_if)
        gkey = socket.inet_aton(group)
        with netlab.enter_netns(host.netns):  # ETH_P_ALL: only those taps see outgoing frames
            cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            cap.bind((host.ifname, 0x0003))
        cap.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        cap.settimeout(2.0)
        blaster = multiprocessing.get_context("fork").Process(
            target=_blast, args=(lab.source.netns, group, time.time() + 3600), daemon=True)
        blaster.start()
        lat: list[float] = []
        for i in range(samples):
            cap.setblocking(False)
            for _ in range(100000):  # forget captured packets from before
                try:
                    cap.recv(65536)
                except BlockingIOError:
                    break
            else:
                raise RuntimeError(f"sample {i}: traffic still flowing to the receiver after its leave: "
                                   f"{ctl.sync.kernel_view()} {ctl.membership.groups()}")
            sock = host.join(group)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            cap.settimeout(2.0)
            t_report = None
            while t_report is None:  # the report leaving the host = arriving at the downstream port
                data, anc, _, _ = cap.recvmsg(2048, 256)
                if _is_join_report(data, gkey):
                    t_report = _ts(anc)
            sock.setblocking(True)
            sock.settimeout(2.0)
            _, anc, _, _ = sock.recvmsg(2048, 256)
            t_data = _ts(anc)
            if t_report is not None and t_data is not None:
                lat.append((t_data - t_report) * 1e6)
            host.leave(group)
            end = time.monotonic() + 2
            while ctl.membership.is_member(port, gkey) and time.monotonic() < end:
                time.sleep(0.001)
            time.sleep(0.01)
        cap.close()
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        print(f"\n== join-to-forward latency ({mode}, {len(lat)} joins, IGMPv3 host) ==")
        print(f"  report at the port -> first data packet delivered: p50 {p50:.0f} us, p99 {p99:.0f} us, "
              f"max {lat[-1]:.0f} us (target p99 < 2000 us)")
    finally:
        if blaster is not None:
            blaster.kill()
            blaster.join()
        if ctl is not None:
            ctl.stop()
            thread.join(5)
            ctl.close()
        if inst is not None:
            inst.remove()
        lab.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", default=REFERENCE_DIR)
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--mode", default="native", choices=("native", "generic"))
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-programs", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    if not args.skip_programs:
        bench_programs(args.reference_dir, args.repeat, args.rounds)
    bench_controller(5)
    if not args.skip_latency:
        bench_latency(args.samples, args.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
