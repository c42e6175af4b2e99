"""INTERIM: the forwarder's two XDP programs written with ``pybpfasm.builder`` / ``isa.make``.

This module exists because the DSL (``pybpfasm.dsl``) was not usable when the
forwarder had to run end to end. ``programs/downstream.py`` and
``programs/upstream.py`` are the real entry points; they use the DSL versions
when available and fall back to these. Behaviour is identical by contract and
the same tests run against whichever is built.

Design (both versions):

downstream, per packet:
  * not IPv4, or not IGMP -> if multicast data to a non link-local group, redirect
    to the group's other subscribed ports (``redirect_map`` BROADCAST|EXCLUDE_INGRESS),
    unknown group dropped (or passed); everything else passes.
  * IGMP: IP version 4, IHL >= 5, total length >= IHL and within the frame,
    IGMP length >= 8, a multiple of 4 and <= 1480, then the whole IGMP message
    is copied (``xdp_load_bytes``) into a per-CPU scratch map value, where the
    checksum is verified with ``csum_diff`` (3 chunks of <= 512 bytes) and
    records are walked without packet-pointer bookkeeping.
  * v1/v2 report, leave, query: one 16-byte event.
  * v3 report: two ``bpf_loop`` passes over ``ngrec`` records at their true
    stride ``8 + 4*nsrcs + 4*auxlen``: the first validates every record
    (header and sources inside the message, multicast group, no trailing
    bytes), the second emits one variable-sized event per record with *all*
    its sources (``ringbuf_output`` straight from the scratch copy: the event
    header is written over the 8 bytes before the record and the record
    header itself, which are no longer needed). Loop state lives in the
    scratch map, so the verifier checks each callback once.
  * the IGMP frame is always dropped; every drop reason has a counter.

upstream, per packet: IPv4 to 224.0.0.0/4, not IGMP, not 224.0.0.0/24 -> look
the group up in the hash of devmaps, count, ``redirect_map(inner, 0,
BROADCAST|EXCLUDE_INGRESS)``; unknown groups dropped (or passed); else pass.
"""

from __future__ import annotations

from typing import Any

from pybpfasm import isa
from pybpfasm.builder import Label, MapRef, ProgramBuilder
from pybpfasm.helpers import HELPERS

from .events import MAX_IGMP_LEN, DownstreamStat, UpstreamStat

XDP_DROP, XDP_PASS = 1, 2
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP = range(11)

# scratch map value layout (per CPU, SCRATCH_SIZE bytes)
SCRATCH_SIZE = 4096
OFF, LEN, NGREC, HOST, IFINDEX = 3072, 3076, 3080, 3084, 3088
SIMPLE_EVENT = 3104
OFFSET_MASK = 0x7FF  # record offsets are < MAX_IGMP_LEN; the mask tells the verifier
MAX_EVENT = 1500
MAX_RECORDS = (MAX_IGMP_LEN - 8) // 8  # 184: a record is at least 8 bytes


class Asm:
    """Terse instruction emission on top of ``ProgramBuilder``."""

    def __init__(self) -> None:
        self.b = ProgramBuilder()
        self._n = 0

    def __call__(self, form: str, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, ref: Any = None) -> None:
        self.b.emit(isa.make(form, dst=dst, src=src, off=off, imm=imm, ref=ref))

    def label(self, name: str) -> None:
        self.b.label(name)

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def jmp(self, form: str, dst: int, operand: int, target: str) -> None:
        if form.endswith("_x"):
            self(form, dst=dst, src=operand, ref=Label(target))
        else:
            self(form, dst=dst, imm=operand, ref=Label(target))

    def goto(self, target: str) -> None:
        self("ja", ref=Label(target))

    def ld_map(self, reg: int, map_obj: Any) -> None:
        self("lddw_map_fd", dst=reg, imm=int(getattr(map_obj, "fd", 0)), ref=MapRef(map_obj))

    def ld_func(self, reg: int, target: str) -> None:
        self("lddw_func", dst=reg, ref=Label(target))

    def call(self, helper: str) -> None:
        self("call", imm=HELPERS[helper].id)

    def ret(self, value: int) -> None:
        self("mov64_k", dst=R0, imm=value)
        self("exit")

    def resolve(self) -> list[isa.Instruction]:
        # resolved jumps keep their Label ref; drop it so a loader does not resolve twice
        return [i.with_(ref=None) if isinstance(i.ref, Label) else i for i in self.b.resolve()]


def _count_u64(a: Asm, stats: Any, index: int | None, key_reg: int | None = None) -> None:
    """``stats[index] += 1`` on a per-CPU u64 array (clobbers r0-r5, uses fp-8)."""
    skip = a.fresh("count_skip")
    if key_reg is None:
        a("stw", dst=FP, off=-8, imm=index)
    else:
        a("stxw", dst=FP, src=key_reg, off=-8)
    a.ld_map(R1, stats)
    a("mov64_x", dst=R2, src=FP)
    a("add64_k", dst=R2, imm=-8)
    a.call("map_lookup_elem")
    a.jmp("jeq_k", R0, 0, skip)
    a("ldxdw", dst=R1, src=R0)
    a("add64_k", dst=R1, imm=1)
    a("stxdw", dst=R0, src=R1)
    a.label(skip)


def _count_pkt(a: Asm, stats: Any, index: int, len_reg: int) -> None:
    """``stats[index].packets += 1; .bytes += len_reg`` (len_reg must be r6-r9)."""
    skip = a.fresh("count_skip")
    a("stw", dst=FP, off=-8, imm=index)
    a.ld_map(R1, stats)
    a("mov64_x", dst=R2, src=FP)
    a("add64_k", dst=R2, imm=-8)
    a.call("map_lookup_elem")
    a.jmp("jeq_k", R0, 0, skip)
    a("ldxdw", dst=R1, src=R0)
    a("add64_k", dst=R1, imm=1)
    a("stxdw", dst=R0, src=R1)
    a("ldxdw", dst=R1, src=R0, off=8)
    a("add64_x", dst=R1, src=len_reg)
    a("stxdw", dst=R0, src=R1, off=8)
    a.label(skip)


def _lookup_scratch(a: Asm, scratch: Any, dst: int, fail: str) -> None:
    a("stw", dst=FP, off=-4, imm=0)
    a.ld_map(R1, scratch)
    a("mov64_x", dst=R2, src=FP)
    a("add64_k", dst=R2, imm=-4)
    a.call("map_lookup_elem")
    a.jmp("jeq_k", R0, 0, fail)
    a("mov64_x", dst=dst, src=R0)


def _redirect_multicast(a: Asm, groups: Any, dst_reg: int, found: str, unknown: str) -> None:
    """Look up the group in ``dst_reg`` (raw network order u32); r0 = inner devmap or jump to unknown."""
    a("stxw", dst=FP, src=dst_reg, off=-16)
    a.ld_map(R1, groups)
    a("mov64_x", dst=R2, src=FP)
    a("add64_k", dst=R2, imm=-16)
    a.call("map_lookup_elem")
    a.jmp("jeq_k", R0, 0, unknown)
    a.goto(found)


def _is_routable_multicast(a: Asm, reg: int, tmp: int, not_mcast: str) -> None:
    """Jump to ``not_mcast`` unless the raw (network order) u32 in ``reg`` is in 224/4 minus 224.0.0.0/24."""
    a("mov64_x", dst=tmp, src=reg)
    a("and64_k", dst=tmp, imm=0xF0)
    a.jmp("jne_k", tmp, 0xE0, not_mcast)
    a("mov64_x", dst=tmp, src=reg)
    a("and64_k", dst=tmp, imm=0xFFFFFF)
    a.jmp("jeq_k", tmp, 0xE0, not_mcast)


def build_downstream(*, events: Any, stats: Any, scratch: Any, groups: Any,
                     pass_unknown: bool = False) -> list[isa.Instruction]:
    """The downstream program; map arguments are map objects (with ``fd``) or names."""
    S = DownstreamStat
    a = Asm()
    a("mov64_x", dst=R6, src=R1)
    a("ldxw", dst=R2, src=R6, off=0)
    a("ldxw", dst=R3, src=R6, off=4)
    a("mov64_x", dst=R4, src=R2)
    a("add64_k", dst=R4, imm=34)
    a.jmp("jgt_x", R4, R3, "pass")
    a("ldxh", dst=R4, src=R2, off=12)
    a.jmp("jne_k", R4, 0x0008, "pass")  # h_proto 0x0800 read little-endian
    a("ldxb", dst=R4, src=R2, off=23)
    a.jmp("jeq_k", R4, 2, "igmp")
    # multicast data sent by a downstream host: to the group's other ports
    a("ldxw", dst=R8, src=R2, off=30)
    _is_routable_multicast(a, R8, R5, "pass")
    _redirect_multicast(a, groups, R8, "mcast_found", "mcast_unknown")
    a.label("mcast_found")
    a("mov64_x", dst=R7, src=R0)
    _count_u64(a, stats, S.MCAST_FORWARDED)
    a("mov64_x", dst=R1, src=R7)
    a("mov64_k", dst=R2, imm=0)
    a("mov64_k", dst=R3, imm=BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS)
    a.call("redirect_map")
    a("exit")
    a.label("mcast_unknown")
    _count_u64(a, stats, S.MCAST_UNKNOWN)
    a.ret(XDP_PASS if pass_unknown else XDP_DROP)
    a.label("pass")
    _count_u64(a, stats, S.PASSED)
    a.ret(XDP_PASS)

    # ---------------- IGMP
    a.label("igmp")
    _count_u64(a, stats, S.IGMP)
    a("ldxw", dst=R2, src=R6, off=0)
    a("ldxw", dst=R3, src=R6, off=4)
    a("mov64_x", dst=R4, src=R2)
    a("add64_k", dst=R4, imm=34)
    a.jmp("jgt_x", R4, R3, "bad_ip")
    a("ldxb", dst=R4, src=R2, off=14)
    a("mov64_x", dst=R5, src=R4)
    a("rsh64_k", dst=R5, imm=4)
    a.jmp("jne_k", R5, 4, "bad_ip")
    a("and64_k", dst=R4, imm=0xF)
    a("lsh64_k", dst=R4, imm=2)  # r4 = IHL in bytes
    a.jmp("jlt_k", R4, 20, "bad_ip")
    a("ldxh", dst=R5, src=R2, off=16)
    a("be16", dst=R5)
    a("and64_k", dst=R5, imm=0xFFFF)  # r5 = total length
    a("mov64_x", dst=R9, src=R2)
    a("add64_x", dst=R9, src=R5)
    a("add64_k", dst=R9, imm=14)
    a.jmp("jgt_x", R9, R3, "bad_ip")  # IP total length beyond the frame
    a.jmp("jlt_x", R5, R4, "bad_ip")  # total length shorter than the IP header
    a("sub64_x", dst=R5, src=R4)  # r5 = IGMP length
    a.jmp("jlt_k", R5, 8, "truncated")
    a("mov64_x", dst=R9, src=R5)
    a("and64_k", dst=R9, imm=3)
    a.jmp("jne_k", R9, 0, "bad_length")
    a.jmp("jgt_k", R5, MAX_IGMP_LEN, "bad_length")
    a("ldxw", dst=R8, src=R2, off=26)  # IP source (reporter)
    a("mov64_x", dst=R9, src=R5)  # r9 = IGMP length, r8 = host, r4 -> stack
    a("stxdw", dst=FP, src=R4, off=-24)
    _lookup_scratch(a, scratch, R7, "drop")
    a("stxw", dst=R7, src=R9, off=LEN)
    a("stxw", dst=R7, src=R8, off=HOST)
    a("ldxw", dst=R1, src=R6, off=12)  # ctx->ingress_ifindex
    a("stxw", dst=R7, src=R1, off=IFINDEX)
    a("ldxdw", dst=R2, src=FP, off=-24)
    a("add64_k", dst=R2, imm=14)
    a("mov64_x", dst=R1, src=R6)
    a("mov64_x", dst=R3, src=R7)
    a("mov64_x", dst=R4, src=R9)
    a.call("xdp_load_bytes")
    a.jmp("jne_k", R0, 0, "truncated")

    # checksum over the copy: csum_diff takes at most 512 bytes a call
    a("mov64_x", dst=R4, src=R9)
    a.jmp("jle_k", R4, 512, "csum1")
    a("mov64_k", dst=R4, imm=512)
    a.label("csum1")
    a("mov64_k", dst=R1, imm=0)
    a("mov64_k", dst=R2, imm=0)
    a("mov64_x", dst=R3, src=R7)
    a("mov64_k", dst=R5, imm=0)
    a.call("csum_diff")
    a("mov64_x", dst=R8, src=R0)
    for base in (512, 1024):
        a.jmp("jle_k", R9, base, "fold")
        a("mov64_x", dst=R4, src=R9)
        a("add64_k", dst=R4, imm=-base)
        nxt = a.fresh("csum")
        a.jmp("jle_k", R4, 512, nxt)
        a("mov64_k", dst=R4, imm=512)
        a.label(nxt)
        a("mov64_k", dst=R1, imm=0)
        a("mov64_k", dst=R2, imm=0)
        a("mov64_x", dst=R3, src=R7)
        a("add64_k", dst=R3, imm=base)
        a("mov32_x", dst=R5, src=R8)
        a.call("csum_diff")
        a("mov64_x", dst=R8, src=R0)
    a.label("fold")
    a("mov32_x", dst=R8, src=R8)
    for _ in range(2):
        a("mov64_x", dst=R1, src=R8)
        a("rsh64_k", dst=R1, imm=16)
        a("and64_k", dst=R8, imm=0xFFFF)
        a("add64_x", dst=R8, src=R1)
    a.jmp("jne_k", R8, 0xFFFF, "bad_checksum")

    a("ldxb", dst=R1, src=R7, off=0)
    a.jmp("jeq_k", R1, 0x22, "v3")
    a.jmp("jeq_k", R1, 0x11, "simple")
    a.jmp("jeq_k", R1, 0x12, "simple_report")
    a.jmp("jeq_k", R1, 0x16, "simple_report")
    a.jmp("jeq_k", R1, 0x17, "simple_report")
    a.goto("unknown_type")

    a.label("simple_report")
    a("ldxb", dst=R2, src=R7, off=4)
    a("and64_k", dst=R2, imm=0xF0)
    a.jmp("jne_k", R2, 0xE0, "bad_group")
    a.label("simple")
    a("ldxw", dst=R2, src=R7, off=IFINDEX)
    a("stxw", dst=R7, src=R2, off=SIMPLE_EVENT)
    a("ldxw", dst=R2, src=R7, off=HOST)
    a("stxw", dst=R7, src=R2, off=SIMPLE_EVENT + 4)
    a("ldxw", dst=R2, src=R7, off=4)
    a("stxw", dst=R7, src=R2, off=SIMPLE_EVENT + 8)
    a("stxb", dst=R7, src=R1, off=SIMPLE_EVENT + 12)
    a("stb", dst=R7, off=SIMPLE_EVENT + 13, imm=0)
    a("sth", dst=R7, off=SIMPLE_EVENT + 14, imm=0)
    a.ld_map(R1, events)
    a("mov64_x", dst=R2, src=R7)
    a("add64_k", dst=R2, imm=SIMPLE_EVENT)
    a("mov64_k", dst=R3, imm=16)
    a("mov64_k", dst=R4, imm=0)
    a.call("ringbuf_output")
    a.jmp("jne_k", R0, 0, "lost")
    _count_u64(a, stats, S.EVENTS)
    a.ret(XDP_DROP)
    a.label("lost")
    _count_u64(a, stats, S.EVENTS_LOST)
    a.ret(XDP_DROP)

    # ---------------- IGMPv3 report: validate every record, then emit
    # Open-coded loops bounded by MAX_RECORDS (the verifier walks each
    # iteration once: the loop state lives in the scratch map, so the only
    # register that differs between iterations is the counter r9).
    a.label("v3")
    a("ldxh", dst=R8, src=R7, off=6)
    a("be16", dst=R8)
    a.jmp("jgt_k", R8, MAX_RECORDS, "bad_ngrec")  # cannot fit: every record is >= 8 bytes
    a("stxw", dst=R7, src=R8, off=NGREC)
    a("stw", dst=R7, off=OFF, imm=8)
    a("mov64_k", dst=R9, imm=0)
    a.label("vloop")
    a.jmp("jge_k", R9, MAX_RECORDS, "vdone")
    a("ldxw", dst=R1, src=R7, off=NGREC)
    a.jmp("jge_x", R9, R1, "vdone")
    a("add64_k", dst=R9, imm=1)
    a("ldxw", dst=R1, src=R7, off=OFF)
    a("ldxw", dst=R2, src=R7, off=LEN)
    a("mov64_x", dst=R3, src=R1)
    a("add64_k", dst=R3, imm=8)
    a.jmp("jgt_x", R3, R2, "bad_ngrec")  # record header past the end: ngrec lies
    a("and64_k", dst=R1, imm=OFFSET_MASK)
    a("mov64_x", dst=R3, src=R7)
    a("add64_x", dst=R3, src=R1)
    a("ldxb", dst=R4, src=R3, off=1)  # aux words
    a("ldxh", dst=R5, src=R3, off=2)
    a("be16", dst=R5)  # nsrcs
    a("ldxb", dst=R0, src=R3, off=4)
    a("and64_k", dst=R0, imm=0xF0)
    a.jmp("jne_k", R0, 0xE0, "bad_group")
    a("add64_x", dst=R5, src=R4)
    a("lsh64_k", dst=R5, imm=2)
    a("add64_k", dst=R5, imm=8)
    a("ldxw", dst=R1, src=R7, off=OFF)
    a("add64_x", dst=R1, src=R5)
    a("stxw", dst=R7, src=R1, off=OFF)
    a.jmp("jgt_x", R1, R2, "bad_nsrcs")  # sources/aux past the end: nsrcs lies
    a.goto("vloop")
    a.label("vdone")
    a("ldxw", dst=R1, src=R7, off=OFF)
    a("ldxw", dst=R2, src=R7, off=LEN)
    a.jmp("jne_x", R1, R2, "trailing")
    a("stw", dst=R7, off=OFF, imm=8)
    a("mov64_k", dst=R9, imm=0)
    a.label("eloop")
    a.jmp("jge_k", R9, MAX_RECORDS, "drop")
    a("ldxw", dst=R1, src=R7, off=NGREC)
    a.jmp("jge_x", R9, R1, "drop")
    a("add64_k", dst=R9, imm=1)
    a("ldxw", dst=R8, src=R7, off=OFF)
    a("mov64_x", dst=R1, src=R8)
    a("and64_k", dst=R1, imm=OFFSET_MASK)
    a("mov64_x", dst=R6, src=R7)
    a("add64_x", dst=R6, src=R1)  # r6 = record
    a("ldxb", dst=R2, src=R6, off=0)  # record type
    a("ldxb", dst=R3, src=R6, off=1)  # aux words
    a("ldxh", dst=R4, src=R6, off=2)
    a("be16", dst=R4)  # nsrcs
    a("ldxw", dst=R5, src=R6, off=4)  # group
    a("mov64_x", dst=R0, src=R4)
    a("add64_x", dst=R0, src=R3)
    a("lsh64_k", dst=R0, imm=2)
    a("add64_k", dst=R0, imm=8)
    a("add64_x", dst=R0, src=R8)
    a("stxw", dst=R7, src=R0, off=OFF)
    a("mov64_x", dst=R0, src=R2)
    a("add64_k", dst=R0, imm=-1)
    a.jmp("jgt_k", R0, 5, "eloop")  # unknown record type: ignored (RFC 3376 4.2.12)
    a("add64_k", dst=R8, imm=-8)
    a("and64_k", dst=R8, imm=OFFSET_MASK)
    a("mov64_x", dst=R6, src=R7)
    a("add64_x", dst=R6, src=R8)  # event header: the 8 bytes before the record + its header
    a("ldxw", dst=R0, src=R7, off=IFINDEX)
    a("stxw", dst=R6, src=R0, off=0)
    a("ldxw", dst=R0, src=R7, off=HOST)
    a("stxw", dst=R6, src=R0, off=4)
    a("stxw", dst=R6, src=R5, off=8)
    a("stb", dst=R6, off=12, imm=0x22)
    a("stxb", dst=R6, src=R2, off=13)
    a("stxh", dst=R6, src=R4, off=14)
    a("mov64_x", dst=R3, src=R4)
    a("lsh64_k", dst=R3, imm=2)
    a("add64_k", dst=R3, imm=16)
    a.jmp("jgt_k", R3, MAX_EVENT, "drop")
    a.ld_map(R1, events)
    a("mov64_x", dst=R2, src=R6)
    a("mov64_k", dst=R4, imm=0)
    a.call("ringbuf_output")
    a.jmp("jne_k", R0, 0, "emit_lost")
    _count_u64(a, stats, S.EVENTS)
    a.goto("eloop")
    a.label("emit_lost")
    _count_u64(a, stats, S.EVENTS_LOST)
    a.goto("eloop")

    for name, stat in (("bad_ip", S.BAD_IP_HEADER), ("truncated", S.TRUNCATED), ("bad_length", S.BAD_LENGTH),
                       ("bad_checksum", S.BAD_CHECKSUM), ("trailing", S.TRAILING), ("bad_group", S.BAD_GROUP),
                       ("unknown_type", S.UNKNOWN_TYPE), ("bad_ngrec", S.BAD_NGREC), ("bad_nsrcs", S.BAD_NSRCS)):
        a.label(name)
        _count_u64(a, stats, stat)
        a.ret(XDP_DROP)
    a.label("drop")
    a.ret(XDP_DROP)
    return a.resolve()


def build_upstream(*, groups: Any, stats: Any, group_stats: Any | None = None,
                   pass_unknown: bool = False) -> list[isa.Instruction]:
    """The upstream program; ``group_stats`` (per-CPU hash group -> PacketCounter) is optional."""
    U = UpstreamStat
    a = Asm()
    a("mov64_x", dst=R6, src=R1)
    a("ldxw", dst=R2, src=R6, off=0)
    a("ldxw", dst=R3, src=R6, off=4)
    a("mov64_x", dst=R9, src=R3)
    a("sub64_x", dst=R9, src=R2)  # frame length (pointer difference: scalar for CAP_PERFMON)
    a("mov64_x", dst=R4, src=R2)
    a("add64_k", dst=R4, imm=34)
    a.jmp("jgt_x", R4, R3, "pass")
    a("ldxh", dst=R4, src=R2, off=12)
    a.jmp("jne_k", R4, 0x0008, "pass")
    a("ldxw", dst=R8, src=R2, off=30)
    a("mov64_x", dst=R5, src=R8)
    a("and64_k", dst=R5, imm=0xF0)
    a.jmp("jne_k", R5, 0xE0, "pass")
    a("ldxb", dst=R4, src=R2, off=23)
    a.jmp("jeq_k", R4, 2, "pass")
    a("mov64_x", dst=R5, src=R8)
    a("and64_k", dst=R5, imm=0xFFFFFF)
    a.jmp("jeq_k", R5, 0xE0, "pass")
    _redirect_multicast(a, groups, R8, "found", "unknown")
    a.label("found")
    a("mov64_x", dst=R7, src=R0)
    if group_stats is not None:
        a.ld_map(R1, group_stats)
        a("mov64_x", dst=R2, src=FP)
        a("add64_k", dst=R2, imm=-16)
        a.call("map_lookup_elem")
        a.jmp("jeq_k", R0, 0, "no_group_stats")
        a("ldxdw", dst=R1, src=R0)
        a("add64_k", dst=R1, imm=1)
        a("stxdw", dst=R0, src=R1)
        a("ldxdw", dst=R1, src=R0, off=8)
        a("add64_x", dst=R1, src=R9)
        a("stxdw", dst=R0, src=R1, off=8)
        a.label("no_group_stats")
    _count_pkt(a, stats, U.FORWARDED, R9)
    a("mov64_x", dst=R1, src=R7)
    a("mov64_k", dst=R2, imm=0)
    a("mov64_k", dst=R3, imm=BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS)
    a.call("redirect_map")
    a("exit")
    a.label("unknown")
    _count_pkt(a, stats, U.UNKNOWN_GROUP, R9)
    a.ret(XDP_PASS if pass_unknown else XDP_DROP)
    a.label("pass")
    _count_pkt(a, stats, U.PASSED, R9)
    a.ret(XDP_PASS)
    return a.resolve()
