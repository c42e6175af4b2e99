"""The upstream XDP program through BPF_PROG_TEST_RUN: group lookup, redirect, counters."""

from __future__ import annotations

import socket

import pytest
from test_downstream_oracle import XDP_DROP, XDP_PASS, XDP_REDIRECT, frame, udp_frame


class Upstream:
    def __init__(self, pass_unknown: bool = False) -> None:
        from loader.devmaps import DevmapSync
        from loader.instance import create_maps
        from programs import upstream

        self.maps = create_maps(ring_size=4096)
        self.prog = upstream.load(self.maps, pass_unknown=pass_unknown, name="test_up")
        self.sync = DevmapSync(self.maps["groups"], self.maps["group_stats"])

    def up_stats(self) -> dict[str, tuple[int, int]]:
        from loader.instance import read_percpu_sum
        from programs.events import UpstreamStat

        return {s.name: read_percpu_sum(self.maps["up_stats"], int(s), "<QQ") for s in UpstreamStat}

    def group_stats(self, group: str) -> tuple[int, int]:
        from loader.instance import read_percpu_sum

        return read_percpu_sum(self.maps["group_stats"], socket.inet_aton(group), "<QQ")

    def close(self) -> None:
        self.sync.close()
        self.prog.close()
        for m in self.maps.values():
            m.close()


@pytest.fixture
def up(kernel):
    u = Upstream()
    yield u
    u.close()


def test_known_group_redirected_and_counted(up):
    group = socket.inet_aton("239.1.1.1")
    up.sync.add_port(group, 1)
    data = udp_frame("239.1.1.1")
    for _ in range(3):
        assert up.prog.test_run(data).retval == XDP_REDIRECT
    assert up.group_stats("239.1.1.1") == (3, 3 * len(data))
    assert up.up_stats()["FORWARDED"] == (3, 3 * len(data))


def test_unknown_group_dropped(up):
    data = udp_frame("239.9.9.9")
    assert up.prog.test_run(data).retval == XDP_DROP
    assert up.up_stats()["UNKNOWN_GROUP"] == (1, len(data))


def test_unknown_group_passed_when_configured(kernel):
    u = Upstream(pass_unknown=True)
    try:
        assert u.prog.test_run(udp_frame("239.9.9.9")).retval == XDP_PASS
        assert u.up_stats()["UNKNOWN_GROUP"][0] == 1
    finally:
        u.close()


def test_leave_removes_group(up):
    group = socket.inet_aton("239.1.1.2")
    up.sync.add_port(group, 1)
    up.sync.remove_port(group, 1)
    assert up.prog.test_run(udp_frame("239.1.1.2")).retval == XDP_DROP
    assert up.sync.kernel_view() == {}


@pytest.mark.parametrize("data", [
    udp_frame("224.0.0.251"),                      # link-local group
    udp_frame("10.1.2.3"),                         # unicast
    udp_frame("255.255.255.255"),                  # broadcast
    frame(bytes.fromhex("1600fa04ef010203"), dst="239.1.2.3"),  # IGMP to a (known) group
    b"\xff" * 12 + b"\x86\xdd" + bytes(60),       # IPv6
    b"\xff" * 12 + b"\x08\x00" + bytes(10),       # truncated IPv4
], ids=["link-local", "unicast", "broadcast", "igmp", "ipv6", "short"])
def test_everything_else_passes(up, data):
    up.sync.add_port(socket.inet_aton("239.1.2.3"), 1)
    assert up.prog.test_run(data).retval == XDP_PASS
    assert up.up_stats()["PASSED"][0] == 1


def test_forwarder_programs_load_with_btf_source_lines(kernel):
    """The instance loads both DSL programs with BTF func_info + line_info: dumps show the DSL lines."""
    import io
    from contextlib import redirect_stdout

    from loader.instance import create_maps, load_programs
    from pybpfasm.cli.main import main as cli_main

    the_maps = create_maps(ring_size=4096)
    progs = load_programs(the_maps)
    try:
        for name, prog in progs.items():
            info = prog.info()
            assert info.btf_id and info.func_info, name
            assert [f.name for f in prog.functions] == [prog.name]
            buf = io.StringIO()
            with redirect_stdout(buf):
                assert cli_main(["dump", "xlated", "id", str(prog.id)]) == 0
            dump = buf.getvalue()
            assert dump.startswith(f"int {prog.name}(struct xdp_md * ctx):"), name
            assert "; Return(redirect_map(ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS))" in dump, name
    finally:
        for obj in [*progs.values(), *the_maps.values()]:
            obj.close()


def test_build_instructions_still_load_without_btf(kernel):
    """``build`` (resolved instructions) loads as-is: no label re-resolution, no BTF."""
    from loader.instance import create_maps
    from programs import upstream
    from pybpfasm.program import Program

    the_maps = create_maps(ring_size=4096)
    try:
        with Program.load(upstream.build(the_maps), prog_type="xdp", name="test_up_bare") as prog:
            assert not prog.info().btf_id
            assert prog.test_run(udp_frame("239.9.9.9")).retval == XDP_DROP
    finally:
        for m in the_maps.values():
            m.close()
