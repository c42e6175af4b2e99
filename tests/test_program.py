"""Program loading against the real kernel: map references, verifier errors mapped to source
lines, BPF_PROG_TEST_RUN (packet rewrite, ctx, live frames into a veth), pinning and info."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from pybpfasm import builder, syscall
from pybpfasm.builder import HelperRef, Label, MapRef
from pybpfasm.isa import SourceLoc, make
from pybpfasm.layout import u32, u64
from pybpfasm.maps import ArrayMap, HashMap
from pybpfasm.program import Program, VerifierError
from pybpfasm.syscall import ProgType, XdpAction

FRAME = bytes(range(64))


def loc(line: int, text: str = "") -> SourceLoc:
    return SourceLoc("prog.py", line, 0, text)


def ret(action: int) -> list:
    return [make("mov64_k", dst=0, imm=action), make("exit")]


def rewrite_program() -> list:
    """Check 16 bytes are there, copy 4 bytes of the source MAC over the destination MAC, set ethertype's first byte, XDP_TX."""
    return [
        make("ldxw", dst=2, src=1, off=0),  # r2 = ctx->data
        make("ldxw", dst=3, src=1, off=4),  # r3 = ctx->data_end
        make("mov64_x", dst=4, src=2),
        make("add64_k", dst=4, imm=16),
        make("jgt_x", dst=4, src=3, ref=Label("drop")),
        make("ldxw", dst=5, src=2, off=6),
        make("stxw", dst=2, src=5, off=0),
        make("stb", dst=2, off=12, imm=0x86),
        make("mov64_k", dst=0, imm=XdpAction.TX),
        make("exit"),
        Label("drop"),
        *ret(XdpAction.DROP),
    ]


def test_test_run_rewrites_packet(kernel):
    with Program.load(rewrite_program(), name="pyb_rewrite") as prog:
        res = prog.test_run(FRAME)
        assert res.retval == XdpAction.TX
        assert res.data == FRAME[6:10] + FRAME[4:12] + b"\x86" + FRAME[13:]
        assert prog.test_run(FRAME[:14]).retval == XdpAction.DROP  # shorter than the 16 bytes it checks
        timed = prog.test_run(FRAME, repeat=1000)
        assert timed.duration_ns >= 0 and timed.data == res.data


def test_test_run_with_ctx(kernel):
    # return ctx->ingress_ifindex (struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...)
    with Program.load([make("ldxw", dst=0, src=1, off=12), make("exit")], name="pyb_ctx") as prog:
        ctx = struct.pack("<6I", 0, len(FRAME), 0, 1, 0, 0)
        res = prog.test_run(FRAME, ctx=ctx)
        assert res.retval == 1 and len(res.ctx_out) == 24


def counter_program() -> list:
    """map[0] += 1 via bpf_map_lookup_elem, with labels and a helper name (resolved at load)."""
    return [
        make("mov64_k", dst=2, imm=0),
        make("stxw", dst=10, src=2, off=-4),
        make("mov64_x", dst=2, src=10),
        make("add64_k", dst=2, imm=-4),
        make("lddw_map_fd", dst=1, ref=MapRef("counters")),
        make("call", ref=HelperRef("map_lookup_elem")),
        make("jeq_k", dst=0, imm=0, ref=Label("out")),
        make("mov64_k", dst=1, imm=1),
        make("atomic_add64", dst=0, src=1, off=0),
        Label("out"),
        *ret(XdpAction.PASS),
    ]


def test_map_reference_by_name_and_helper_name(kernel):
    with ArrayMap(value=u64, max_entries=1, name="pyb_cnt") as counters, \
            Program.load(counter_program(), name="pyb_count", maps={"counters": counters}) as prog:
        assert prog.test_run(FRAME, repeat=7).retval == XdpAction.PASS
        assert counters[0] == 7
        assert prog.info().map_ids == [counters.id]


def test_map_reference_by_object_and_direct_value(kernel):
    with ArrayMap(value="<QQ", max_entries=1, name="pyb_glob") as glob:
        insns = [
            make("lddw_map_value", dst=1, ref=MapRef(glob, value_offset=8)),
            make("stdw", dst=1, off=0, imm=99),
            *ret(XdpAction.PASS),
        ]
        with Program.load(insns, name="pyb_direct") as prog:
            assert prog.test_run(FRAME).retval == XdpAction.PASS
        assert glob[0] == (0, 99)


def test_unknown_map_name_is_a_clear_error(kernel):
    insns = [make("lddw_map_fd", dst=1, ref=MapRef("nope"), source=loc(3)), *ret(2)]
    with HashMap(key=u32, value=u32, max_entries=1) as m:
        with pytest.raises(builder.AssemblyError, match=r"prog.py:3: program uses map 'nope', but no such map "
                                                        r"was passed \(maps: flows\)"):
            Program.load(insns, maps={"flows": m})


def test_out_of_bounds_packet_read_names_source_line(kernel):
    insns = [
        make("ldxw", dst=2, src=1, off=0, source=loc(41, "data = ctx.data")),
        make("ldxw", dst=0, src=2, off=0, source=loc(42, "r0 = *(u32 *)(r2 +0)")),
        make("exit", source=loc(43, "exit")),
    ]
    with pytest.raises(VerifierError) as info:
        Program.load(insns, name="pyb_oob")
    err = info.value
    assert err.insn_index == 1 and err.source == insns[1].source and err.instruction == insns[1]
    first = str(err).splitlines()[0]
    assert first.startswith("verifier rejected program 'pyb_oob': invalid access to packet")
    assert first.endswith("at insn 1 (prog.py:42: `r0 = *(u32 *)(r2 +0)`)")
    assert "verifier log (last lines):" in str(err) and "processed 2 insns" in err.log
    assert len(str(err).splitlines()) <= 2 + 20


def test_missing_null_check_names_source_line(kernel):
    insns = [
        make("mov64_k", dst=2, imm=0, source=loc(10)),
        make("stxw", dst=10, src=2, off=-4, source=loc(11)),
        make("mov64_x", dst=2, src=10, source=loc(12)),
        make("add64_k", dst=2, imm=-4, source=loc(13)),
        make("lddw_map_fd", dst=1, ref=MapRef("m"), source=loc(14)),
        make("call", imm=1, source=loc(15)),
        make("ldxdw", dst=0, src=0, off=0, source=loc(16)),  # no text: the verifier's rendering is shown
        make("exit", source=loc(17)),
    ]
    with HashMap(key=u32, value=u64, max_entries=4, name="m") as m:
        with pytest.raises(VerifierError) as info:
            Program.load(insns, name="pyb_null", maps={"m": m})
    err = info.value
    assert err.insn_index == 7 and err.source.line == 16  # ld_imm64 takes two slots
    assert err.summary == ("verifier rejected program 'pyb_null': R0 invalid mem access 'map_value_or_null' "
                           "at insn 7 (prog.py:16: `r0 = *(u64 *)(r0 +0)`)")
    assert err.errno == 13


def test_error_without_instruction_line(kernel):
    with pytest.raises(VerifierError) as info:
        Program.load([make("mov64_k", dst=0, imm=0, source=loc(1))], name="pyb_fall")
    assert "last insn is not an exit or jmp" in str(info.value)


def test_log_buffer_grows_on_enospc(kernel):
    with Program.load(counter_program(), name="pyb_log", log_level=2, log_size=64,
                      maps={"counters": ArrayMap(value=u64, max_entries=1)}) as prog:
        assert "processed" in prog.log and len(prog.log) > 64


def test_builder_and_bytes_inputs(kernel):
    b = builder.ProgramBuilder().emit(*ret(XdpAction.PASS))
    with Program.load(b) as p1, Program.load(b"".join(i.encode() for i in ret(XdpAction.DROP))) as p2:
        assert p1.test_run(FRAME).retval == XdpAction.PASS
        assert p2.test_run(FRAME).retval == XdpAction.DROP


def test_socket_filter_type_and_prog_type_errors(kernel):
    with Program.load(ret(0), prog_type="socket_filter") as prog:
        assert prog.info().type is ProgType.SOCKET_FILTER
    with pytest.raises(ValueError, match="unknown ProgType"):
        Program.load(ret(0), prog_type="nonsense")


def test_pin_reopen_and_info(kernel, unique_name):
    path = f"/sys/fs/bpf/{unique_name}"
    with syscall.enable_stats(), Program.load(rewrite_program(), name="pyb_pinned") as prog:
        prog.test_run(FRAME, repeat=3)
        prog.pin(path)
        try:
            with Program.from_pinned(path) as again:
                info = again.info()
                assert info.name == "pyb_pinned" and info.id == prog.id and info.tag.hex() == prog.tag
                assert info.run_cnt == 3 and info.verified_insns > 0
                assert len(info.xlated) >= 8 * len(prog.insns) - 8 and info.jited
                assert again.test_run(FRAME).retval == XdpAction.TX
            with Program.from_id(prog.id) as by_id:
                assert by_id.name == "pyb_pinned"
            with HashMap(key=u32, value=u32, max_entries=1) as m:
                m.pin(path + "m")
                try:
                    with pytest.raises(Exception, match="is not a pinned program"):
                        Program.from_pinned(path + "m")
                finally:
                    os.unlink(path + "m")
        finally:
            os.unlink(path)
    with pytest.raises(FileNotFoundError, match="no such pinned object"):
        Program.from_pinned(path)


ETH_P_EXPERIMENTAL = 0x88B5  # IEEE local experimental ethertype: nothing else on the veth uses it


def test_live_frames_xdp_tx_reaches_veth_peer(kernel, unique_name):
    from pybpfasm import netlab

    lab = netlab.Lab(unique_name)
    try:
        ns = lab.netns("live")
        pair = lab.veth("a", "b", netns=ns, peer_netns=ns)
        for ifname in (pair.name, pair.peer):
            netlab.set_up(ifname, ns)
        netlab.enable_gro(pair.peer, ns)  # a veth peer takes XDP frames only with GRO or its own XDP program
        peer_mac = bytes.fromhex(netlab.link_mac(pair.peer, ns).replace(":", ""))
        frame = peer_mac + bytes.fromhex("020000000001") + ETH_P_EXPERIMENTAL.to_bytes(2, "big") + bytes(50)

        def run() -> tuple[int, list[bytes]]:
            ifindex = netlab.link_index(pair.name)
            ctx = struct.pack("<6I", 0, len(frame), 0, ifindex, 0, 0)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_EXPERIMENTAL)) as sock, \
                    Program.load(ret(XdpAction.TX), name="pyb_live") as prog:
                sock.bind((pair.peer, ETH_P_EXPERIMENTAL))
                res = prog.test_run(frame, ctx=ctx, repeat=10, flags=syscall.TestRunFlags.XDP_LIVE_FRAMES)
                got: list[bytes] = []
                sock.settimeout(2)
                deadline = time.monotonic() + 5
                while len(got) < 10 and time.monotonic() < deadline:
                    try:
                        got.append(sock.recv(2048))
                    except TimeoutError:
                        break
                return res.retval, got

        retval, got = netlab.run_in_netns(ns, run)
        assert retval == 0  # live mode reports no per-packet verdict
        assert got == [frame] * 10  # XDP_TX on veth a delivered every frame, unchanged, to its peer
    finally:
        lab.close()


def test_huge_failure_log_is_captured_whole(kernel):
    """A loop the verifier gives up on writes >1 MiB of log: the buffer grows until it fits."""
    insns = [
        make("call", imm=7, source=loc(1)),  # bpf_get_prandom_u32
        make("mov64_x", dst=1, src=0, source=loc(2)),
        Label("loop"),
        make("jeq_k", dst=1, imm=0, ref=Label("end"), source=loc(3, "while r1 != 0:")),
        make("sub64_k", dst=1, imm=1, source=loc(4)),
        make("ja", ref=Label("loop"), source=loc(5)),
        Label("end"),
        *ret(XdpAction.PASS),
    ]
    with pytest.raises(VerifierError) as info:
        Program.load(insns, name="pyb_loop")
    err = info.value
    assert len(err.log) > 1 << 20
    assert "too complex" in err.reason and err.source == insns[3].source
    assert "prog.py:3: `while r1 != 0:`" in err.summary


def test_verifier_error_pickles(kernel):
    import pickle

    insns = [make("ldxw", dst=0, src=1, off=0, source=loc(7, "r0 = ctx.data")), make("ldxw", dst=0, src=0, off=0),
             make("exit")]
    with pytest.raises(VerifierError) as info:
        Program.load(insns, name="pyb_pickle")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.insn_index == 1 and again.log == info.value.log
