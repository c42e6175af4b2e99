"""``builder.resolve`` is idempotent: resolved instructions load as they are (no "undefined label")."""

from __future__ import annotations

import pytest

from pybpfasm.builder import AssemblyError, HelperRef, Label, ResolvedLabel, resolve
from pybpfasm.isa import make


def _items() -> list:
    return [
        make("mov64_k", dst=0, imm=2),
        make("jeq_k", dst=1, imm=0, ref=Label("out")),
        make("call_local", ref=Label("fn:work")),
        make("lddw_func", dst=2, ref=Label("fn:work")),
        make("call", ref=HelperRef("ktime_get_ns")),
        make("ja", ref=Label("out")),
        Label("out"),
        make("exit"),
        Label("fn:work"),
        make("mov64_k", dst=0, imm=0),
        make("exit"),
    ]


def test_resolve_twice_is_a_no_op():
    once = resolve(_items())
    twice = resolve(once)  # labels are gone: resolving again must not say "undefined label"
    assert twice == once
    assert [(i.off, i.imm) for i in twice] == [(i.off, i.imm) for i in once]


def test_resolved_refs_keep_label_names_for_btf():
    once = resolve(_items())
    refs = [i.ref for i in once if isinstance(i.ref, Label)]
    assert all(isinstance(r, ResolvedLabel) for r in refs)
    assert [r.name for r in refs] == ["out", "fn:work", "fn:work", "out"]
    from pybpfasm.btfext import subprog_entries
    assert set(subprog_entries(once).values()) == {"fn:work"}  # BTF still names the subprogram


def test_resolved_label_is_not_a_label_definition():
    with pytest.raises(AssemblyError, match="not a label definition"):
        resolve([ResolvedLabel("x"), make("exit")])


def test_undefined_label_still_reported():
    with pytest.raises(AssemblyError, match="undefined label 'nowhere'"):
        resolve([make("ja", ref=Label("nowhere")), make("exit")])


def test_dsl_instructions_load_directly(kernel):
    """``XdpProgram.instructions`` (already resolved) go to ``Program.load`` without any workaround."""
    from pybpfasm.dsl import XDP_DROP, XDP_PASS, If, Return, xdp
    from pybpfasm.headers import Ethernet
    from pybpfasm.program import Program

    @xdp
    def branchy(pkt):
        (eth,) = pkt.headers(Ethernet, otherwise=XDP_PASS)
        with If(eth.proto == 0x0800):
            Return(XDP_DROP)
        Return(XDP_PASS)

    insns = branchy.instructions
    assert any(isinstance(i.ref, Label) for i in insns)
    with Program.load(insns, prog_type="xdp", name="resolve_twice") as prog:
        ipv4 = bytes(12) + b"\x08\x00" + bytes(50)
        assert prog.test_run(ipv4).retval == XDP_DROP
        assert prog.test_run(bytes(12) + b"\x86\xdd" + bytes(50)).retval == XDP_PASS
