"""Build-time errors: what the verifier would reject is refused while tracing, naming the DSL line."""

from __future__ import annotations

import inspect

import pytest

from pybpfasm.dsl import (
    XDP_DROP,
    XDP_PASS,
    Break,
    DslError,
    Elif,
    Else,
    If,
    Range,
    Return,
    Var,
    bpf,
    call,
    lookup,
    reserve,
    xdp,
)
from pybpfasm.headers import UDP, Ethernet, IPv4
from pybpfasm.layout import Struct, u32, u64


class FakeMap:
    """Stands in for a pybpfasm.maps object: building needs no kernel."""

    fd = 0
    map_type = 1  # HASH
    key = u32
    value = u64
    key_size = 4
    value_size = 8
    name = "fake"


class FakeRing(FakeMap):
    map_type = 27


class Ev(Struct):
    a = u32


def line_of(marker: str) -> int:
    src, start = inspect.getsourcelines(inspect.getmodule(line_of))
    for i, text in enumerate(src):
        if marker in text and "line_of(" not in text:
            return start + i if start else i + 1
    raise AssertionError(marker)


def build_error(prog) -> DslError:
    with pytest.raises(DslError) as info:
        prog.compile()
    return info.value


def test_null_deref_names_line():
    m = FakeMap()

    @xdp
    def prog(pkt):
        v = lookup(m, 1)
        Return(v.get())  # MARK-null

    err = build_error(prog)
    assert "null check" in str(err) and err.source.line == line_of("MARK-null")


def test_unchecked_packet_read():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        ip = eth.next(IPv4)
        Return(ip.ttl)  # MARK-unchecked

    err = build_error(prog)
    assert "bounds check" in str(err) and err.source.line == line_of("MARK-unchecked")


def test_check_in_branch_does_not_cover_after_join():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        udp = eth.next(UDP)
        with If(eth.proto == 0x800):
            pkt.ensure(udp, otherwise=XDP_DROP)
        Return(udp.dport)  # MARK-join

    assert build_error(prog).source.line == line_of("MARK-join")


def test_ringbuf_record_not_submitted_on_return():
    ring = FakeRing()

    @xdp
    def prog(pkt):
        with reserve(ring, Ev) as ev:
            ev.a = 1
            Return(XDP_DROP)  # MARK-ring
        Return(XDP_PASS)

    err = build_error(prog)
    assert "neither submitted nor discarded" in str(err) and err.source.line == line_of("MARK-ring")


def test_non_constant_loop_bound():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        for _ in Range(eth.proto):  # MARK-bound
            pass
        Return(XDP_PASS)

    err = build_error(prog)
    assert "constant" in str(err) and err.source.line == line_of("MARK-bound")


def test_helper_argument_kinds():
    @xdp
    def prog(pkt):
        bpf.map_lookup_elem(5, 6)  # MARK-kind
        Return(XDP_PASS)

    err = build_error(prog)
    assert "must be a map" in str(err) and err.source.line == line_of("MARK-kind")

    @xdp
    def prog2(pkt):
        call("xdp_load_bytes", pkt, 0, 7, 4)  # MARK-ptr
        Return(XDP_PASS)

    err = build_error(prog2)
    assert "pointer" in str(err) and err.source.line == line_of("MARK-ptr")

    @xdp
    def prog3(pkt):
        bpf.ktime_get_ns(1)  # MARK-count
        Return(XDP_PASS)

    assert build_error(prog3).source.line == line_of("MARK-count")

    @xdp
    def prog4(pkt):
        bpf.no_such_helper()  # MARK-unknown
        Return(XDP_PASS)

    assert "unknown helper" in str(build_error(prog4))


def test_variable_read_before_set_on_some_path():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        x = Var(u32)
        with If(eth.proto == 0x800):
            x.set(1)
        Return(x)  # MARK-unset

    err = build_error(prog)
    assert "read before it is set" in str(err) and err.source.line == line_of("MARK-unset")

    @xdp
    def ok(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        x = Var(u32)
        with If(eth.proto == 0x800):
            x.set(1)
        with Else():
            x.set(2)
        Return(x)

    ok.compile()


def test_value_used_outside_its_block():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        with If(eth.proto == 0x800):
            y = eth.proto + 1
        Return(y)  # MARK-scope

    err = build_error(prog)
    assert "block that has ended" in str(err) and err.source.line == line_of("MARK-scope")


def test_python_truth_value_is_refused():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        if eth.proto == 0x800:  # MARK-bool
            Return(XDP_DROP)
        Return(XDP_PASS)

    err = build_error(prog)
    assert "If(" in str(err) and err.source.line == line_of("MARK-bool")


def test_misplaced_elif_and_missing_return():
    @xdp
    def prog(pkt):
        with Elif(1):  # MARK-elif
            pass
        Return(XDP_PASS)

    assert build_error(prog).source.line == line_of("MARK-elif")

    @xdp
    def noret(pkt):
        pkt.header(Ethernet, otherwise=XDP_PASS)

    assert "without Return" in str(build_error(noret))


def test_python_break_in_range_loop():
    @xdp
    def prog(pkt):
        for _ in Range(4):  # MARK-pybreak
            break
        Return(XDP_PASS)

    err = build_error(prog)
    assert "Break()" in str(err) and err.source.line == line_of("MARK-pybreak")


def test_division_operator_and_break_outside_loop():
    @xdp
    def prog(pkt):
        eth = pkt.header(Ethernet, otherwise=XDP_PASS)
        Return(eth.proto / 2)  # MARK-div

    assert build_error(prog).source.line == line_of("MARK-div")

    @xdp
    def prog2(pkt):
        Break()  # MARK-break
        Return(XDP_PASS)

    assert build_error(prog2).source.line == line_of("MARK-break")
