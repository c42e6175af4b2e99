"""Benchmark (not a test): the DSL's bytecode against clang -O2's on the forwarder's two jobs.

    .venv/bin/python bench/vs_clang.py [--runs 41] [--repeat 1000] [--variants] [--forwarder] [--cpu N]

Compiles ../shared/reference/{upstream,downstream}.bpf.c with clang-19 (benchmark
only), loads them with ``bpftool prog loadall`` (pinned under a unique bpffs
directory, removed at exit) and opens the pinned programs with pybpfasm.  Our
side is the same work in the DSL: upstream is the forwarder's own
programs/upstream.py built without per-group counters (exactly the C's job:
(*,G), global per-CPU counters); downstream is ``pybpfasm.dsl.reference``, the
C downstream job for job (emit() a global function as in the C; loops over 8
iterations verified with may_goto), because the forwarder's programs/downstream.py
does more than the C (checksum verification, record validation, container
multicast).  ``--forwarder`` adds the forwarder's two programs as they are
loaded (global counters) as an extra column.  For each
program it prints xlated instructions and verifier-processed instructions, then
ns/packet (minimum over runs of BPF_PROG_TEST_RUN with ``repeat``) on the
standard packets, ours / clang side by side with ratios.  The downstream ring
buffers are drained between runs so no run measures the ring-full path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scapy.layers.igmp import IGMP as SIGMP  # noqa: E402
from scapy.layers.igmp import IGMPv3_MR, IGMPv3_MR_Group  # noqa: E402
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.inet import UDP as SUDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from programs import upstream as forwarder_upstream  # noqa: E402
from programs.events import N_UPSTREAM_STATS, PacketCounter  # noqa: E402
from pybpfasm.dsl.reference import DN_NSTATS, downstream_program  # noqa: E402
from pybpfasm.layout import be32, u32, u64  # noqa: E402
from pybpfasm.maps import DevMapHash, HashOfMaps, Map, PerCpuArray, RingBuf  # noqa: E402
from pybpfasm.program import Program  # noqa: E402
from pybpfasm.ringbuf import RingBuffer  # noqa: E402

REFERENCE = Path(os.environ.get("PYBPFASM_REFERENCE", ROOT.parent / "shared" / "reference"))
RA = b"\x94\x04\x00\x00"
KNOWN_GROUP = "239.1.1.1"


def igmp_v3(records: list[Any]) -> bytes:
    return bytes(Ether(dst="01:00:5e:00:00:16") / IP(src="10.0.0.2", dst="224.0.0.22", options=RA, ttl=1) /
                 IGMPv3_MR(records=records))


DOWNSTREAM_PACKETS: list[tuple[str, bytes]] = [
    ("IGMPv2 report", bytes(Ether() / IP(src="10.0.0.2", dst="239.1.1.1", options=RA, ttl=1) /
                            SIGMP(type=0x16, gaddr="239.1.1.1"))),
    ("IGMPv3 join", igmp_v3([IGMPv3_MR_Group(rtype=4, maddr="239.1.1.1")])),
    ("IGMPv3 8 records", igmp_v3([IGMPv3_MR_Group(rtype=4, maddr=f"239.1.1.{i}") for i in range(1, 9)])),
    ("IGMPv3 4 sources", igmp_v3([IGMPv3_MR_Group(rtype=1, maddr="232.1.1.1",
                                                  srcaddrs=[f"10.9.0.{i}" for i in range(1, 5)])])),
    ("non-IGMP UDP", bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.3") / SUDP(sport=1, dport=2) / (b"x" * 18))),
]
UPSTREAM_PACKETS: list[tuple[str, bytes]] = [
    ("mcast known group", bytes(Ether(dst="01:00:5e:01:01:01") / IP(src="10.0.0.1", dst=KNOWN_GROUP) /
                                SUDP(sport=5000, dport=5001) / (b"x" * 64))),
    ("mcast unknown group", bytes(Ether(dst="01:00:5e:01:01:02") / IP(src="10.0.0.1", dst="239.1.1.2") /
                                  SUDP(sport=5000, dport=5001) / (b"x" * 64))),
    ("unicast", bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.9") / SUDP(sport=5000, dport=5001) / (b"x" * 64))),
]


def ip_key(addr: str) -> int:
    """A group address as a number; the maps' key layout is be32, so it is stored in network byte order."""
    return int.from_bytes(bytes(int(x) for x in addr.split(".")), "big")


class Side:
    """One implementation: its two programs and the maps to reset between runs."""

    def __init__(self, name: str, upstream: Program, downstream: Program, rings: list[Any]):
        self.name, self.upstream, self.downstream, self.rings = name, upstream, downstream, rings

    def drain(self) -> None:
        for ring in self.rings:
            with RingBuffer(ring) as rb:
                rb.consume(lambda _rec: None)


def loopback_ifindex() -> int:
    return 1


def fill_groups(groups: Any, inner_maps: list[Any]) -> None:
    inner = DevMapHash(max_entries=256, name="bench_ports")
    inner[loopback_ifindex()] = loopback_ifindex()
    inner_maps.append(inner)
    groups[ip_key(KNOWN_GROUP)] = inner


def build_clang(workdir: Path, pin_root: Path) -> tuple[Side, list[Any]]:
    clang = shutil.which("clang-19") or "clang-19"
    opened: list[Any] = []
    progs: dict[str, Program] = {}
    rings: list[Any] = []
    for job in ("upstream", "downstream"):
        obj = workdir / f"{job}.bpf.o"
        subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu",
                        "-c", str(REFERENCE / f"{job}.bpf.c"), "-o", str(obj)], check=True)
        subprocess.run(["bpftool", "prog", "loadall", str(obj), str(pin_root / job), "pinmaps",
                        str(pin_root / f"{job}_maps")], check=True)
        pinned = sorted((pin_root / job).iterdir())
        progs[job] = Program.from_pinned(pinned[0])
    groups = Map.from_pinned(pin_root / "upstream_maps" / "groups", key=be32, value=u32)
    opened.append(groups)
    fill_groups(groups, opened)
    events = Map.from_pinned(pin_root / "downstream_maps" / "events")
    opened.append(events)
    rings.append(events)
    return Side("clang -O2", progs["upstream"], progs["downstream"], rings), opened


def build_dsl(converge: bool | None, global_emit: bool) -> tuple[Side, list[Any]]:
    opened: list[Any] = []
    inner_tpl = DevMapHash(max_entries=256, name="bench_tpl")
    groups = HashOfMaps(inner=inner_tpl, key=be32, max_entries=65536, name="groups")
    up_stats = PerCpuArray(value=PacketCounter, max_entries=N_UPSTREAM_STATS, name="up_stats")
    events = RingBuf(max_entries=1 << 20, name="events")
    dn_stats = PerCpuArray(value=u64, max_entries=DN_NSTATS, name="dn_stats")
    opened += [inner_tpl, groups, up_stats, events, dn_stats]
    fill_groups(groups, opened)
    # the forwarder's upstream without per-group counters is the C's work: (*,G), global per-CPU counters
    up = forwarder_upstream.program(groups, up_stats, None).load()
    dn = downstream_program(events, dn_stats, converge=converge, global_emit=global_emit).load()
    label = "DSL" + ("" if converge is None else " may_goto" if converge else " plain loops") + \
        ("" if global_emit else " static emit")
    return Side(label, up, dn, [events]), opened


def build_forwarder() -> tuple[Side, list[Any]]:
    """The forwarder's own programs (programs/*.py) in their configuration closest to the C references:
    global per-CPU counters only (``group_counters=False``), (*,G) forwarding.  Its downstream does more
    than the C one (IGMP checksum verification, per-record validation before any event, container-to-
    container multicast), so its figures are "more work", not a like-for-like ratio."""
    from loader.instance import create_maps, load_programs
    from programs import downstream, upstream
    the_maps = create_maps()
    opened: list[Any] = list(the_maps.values())
    inner = DevMapHash(max_entries=256, name="bench_fwd_ports")
    inner[loopback_ifindex()] = loopback_ifindex()
    opened.append(inner)
    the_maps["groups"][bytes(int(x) for x in KNOWN_GROUP.split("."))] = inner
    progs = load_programs(the_maps, group_counters=False)
    kinds = {"DSL" if m.IMPLEMENTATION.startswith("DSL") else "interim" for m in (upstream, downstream)}
    label = "forwarder " + "/".join(sorted(kinds))
    return Side(label, progs["upstream"], progs["downstream"], [the_maps["events"]]), opened


def ns_per_packet(prog: Program, frame: bytes, repeat: int, runs: int, reset: Callable[[], None]) -> tuple[float, int]:
    best = float("inf")
    retval = -1
    for _ in range(runs):
        reset()
        res = prog.test_run(frame, repeat=repeat)
        best = min(best, res.duration_ns)
        retval = res.retval
    reset()
    return best, retval


def counts(prog: Program) -> tuple[int, int]:
    info = prog.info(arrays=False)
    return info.xlated_prog_len // 8, info.verified_insns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=41, help="interleaved runs per packet; the minimum is reported")
    ap.add_argument("--repeat", type=int, default=1000, help="BPF_PROG_TEST_RUN repeat (keep 8*repeat records "
                                                             "below the ring's capacity)")
    ap.add_argument("--cpu", type=int, default=-1, help="pin to this CPU (default: the last one; -2: no pinning)")
    ap.add_argument("--variants", action="store_true",
                    help="also measure the DSL with a static emit() and with plain (verifier-unrolled) loops")
    ap.add_argument("--forwarder", action="store_true",
                    help="also measure the forwarder's own programs (programs/*.py; more work than the C)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (bpf(), bpffs)", file=sys.stderr)
        return 1
    if args.cpu != -2 and hasattr(os, "sched_setaffinity"):  # one CPU: every side sees the same caches
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1] if args.cpu == -1 else args.cpu})
    pin_root = Path("/sys/fs/bpf") / f"pybpfasm_bench_{uuid.uuid4().hex[:8]}"
    pin_root.mkdir()
    opened: list[Any] = []
    sides: list[Side] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clang_side, o = build_clang(Path(tmp), pin_root)
            opened += o
        sides.append(clang_side)
        variants: list[tuple[bool | None, bool]] = [(None, True)]
        if args.variants:
            variants += [(None, False), (False, True)]
        for conv, glob in variants:
            try:
                side, o = build_dsl(conv, glob)
            except Exception as exc:  # a variant the verifier refuses is reported, not fatal
                print(f"DSL variant converge={conv} global_emit={glob} failed to load: {str(exc).splitlines()[0]}")
                continue
            opened += o
            sides.append(side)
        if args.forwarder:
            try:
                side, o = build_forwarder()
                opened += o
                sides.append(side)
            except Exception as exc:  # the forwarder is developed alongside: report, do not fail the bench
                print(f"forwarder programs failed to load: {str(exc).splitlines()[0]}")
        report(sides, args.repeat, args.runs)
    finally:
        for side in sides:
            side.upstream.close()
            side.downstream.close()
        for m in opened:
            m.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        if pin_root.exists():
            subprocess.run(["rm", "-rf", str(pin_root)], check=False)
    return 0


def report(sides: list[Side], repeat: int, runs: int) -> None:
    base = sides[0]
    names = [s.name for s in sides]
    print(f"{'':34}" + "".join(f"{n:>22}" for n in names) + "".join(f"{'ratio ' + str(i):>10}"
                                                                     for i in range(1, len(sides))))
    for job in ("upstream", "downstream"):
        rows = [counts(getattr(s, job)) for s in sides]
        for k, label in ((0, "xlated insns"), (1, "verifier processed")):
            vals = [r[k] for r in rows]
            print(f"{job + ' ' + label:34}" + "".join(f"{v:>22}" for v in vals)
                  + "".join(f"{v / vals[0]:>10.3f}" for v in vals[1:]))
    for job, packets in (("upstream", UPSTREAM_PACKETS), ("downstream", DOWNSTREAM_PACKETS)):
        for label, frame in packets:
            best = [float("inf")] * len(sides)
            rets = [-1] * len(sides)
            for run in range(runs):  # interleaved, so load from other processes hits every side alike;
                order = list(enumerate(sides))  # alternating order: neither side always runs right after
                for i, s in (order if run % 2 == 0 else order[::-1]):  # the other (warm caches, turbo)
                    ns, ret = ns_per_packet(getattr(s, job), frame, repeat, 1, s.drain)
                    best[i], rets[i] = min(best[i], ns), ret
            cells = list(zip(best, rets))
            flag = "" if len(set(rets)) == 1 else f"  (verdicts differ: {[r for _, r in cells]})"
            print(f"{job[:4] + ' ' + label + ' ns/pkt':34}" + "".join(f"{ns:>22}" for ns, _ in cells)
                  + "".join(f"{ns / max(cells[0][0], 1):>10.3f}" for ns, _ in cells[1:]) + flag)
    del base


if __name__ == "__main__":
    sys.exit(main())
