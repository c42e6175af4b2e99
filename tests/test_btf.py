"""BTF writer/reader: encoding per include/uapi/linux/btf.h, BPF_BTF_LOAD on the real kernel
(with the BTF log on refusal), and the vmlinux reader (struct layouts, kfunc ids)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpfasm import btf
from pybpfasm.btf import BTFBuilder, BTFError, BTFSpec, Kind, Linkage, Member


def every_kind() -> tuple[BTFBuilder, dict[str, int]]:
    b = BTFBuilder()
    ids: dict[str, int] = {}
    ids["u32"] = b.int_("unsigned int", 4)
    ids["int"] = b.int_("int", 4, signed=True)
    ids["char"] = b.int_("char", 1, char=True)
    ids["bool"] = b.int_("_Bool", 1, bool_=True)
    ids["typedef"] = b.typedef("__u32", ids["u32"])
    ids["const"] = b.const(ids["typedef"])
    ids["volatile"] = b.volatile(ids["int"])
    ids["array"] = b.array(ids["char"], 6)
    ids["struct"] = b.struct("pair", 16, [("a", ids["typedef"], 0), ("mac", ids["array"], 32),
                                          Member("flag", ids["u32"], 80, 3), ("b", ids["volatile"], 96)])
    ids["union"] = b.union("either", 4, [("x", ids["u32"], 0), ("y", ids["int"], 0)])
    ids["ptr"] = b.ptr(ids["struct"])
    ids["enum"] = b.enum("action", {"ABORTED": 0, "DROP": 1, "PASS": 2})
    ids["enum64"] = b.enum("big", {"HUGE": 1 << 40})
    ids["proto"] = b.func_proto(ids["int"], [("p", ids["ptr"]), ("n", ids["u32"])])
    ids["func"] = b.func("handle", ids["proto"], "global")
    ids["static_func"] = b.func("helper", ids["proto"])
    ids["var"] = b.var("counter", ids["u32"])
    ids["datasec"] = b.datasec(".bss", 4, [(ids["var"], 0, 4)])
    ids["fwd"] = b.fwd("later")
    return b, ids


def test_header_and_layout():
    b = BTFBuilder()
    u32 = b.int_("unsigned int", 4)
    raw = b.encode()
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", raw)
    assert (magic, version, flags, hdr_len) == (0xEB9F, 1, 0, 24)
    assert (type_off, type_len, str_off) == (0, 16, 16) and u32 == 1
    name_off, info, size, extra = struct.unpack_from("<IIII", raw, 24)
    assert raw[24 + 16 + name_off:].startswith(b"unsigned int\0") and raw[24 + 16] == 0  # first string is ""
    assert info == Kind.INT << 24 and size == 4 and extra == 32
    assert len(raw) == 24 + type_len + str_len


def test_func_linkage_in_vlen_and_dedup():
    b = BTFBuilder()
    i = b.int_("int", 4, signed=True)
    assert b.int_("int", 4, signed=True) == i  # identical records are stored once
    proto = b.func_proto(i)
    g = b.func("g", proto, Linkage.GLOBAL)
    s = b.func("s", proto, "static")
    spec = b.spec()
    assert spec.type(g).linkage == Linkage.GLOBAL and spec.type(s).linkage == Linkage.STATIC
    assert spec.type(g).type == proto and len(spec) == 4
    with pytest.raises(ValueError, match="identifier"):
        b.func("fn:bad", proto)
    with pytest.raises(ValueError, match="at most one"):
        b.int_("char", 1, signed=True, char=True)


def test_roundtrip_every_kind():
    b, ids = every_kind()
    spec = b.spec()
    pair = spec.struct("pair")
    assert pair.size == 16 and [m.name for m in pair.members] == ["a", "mac", "flag", "b"]
    assert pair.member("flag").bitfield_size == 3 and pair.member("flag").offset == 80
    assert spec.member_offset("pair", "mac") == 4 and spec.member_offset("pair", "b") == 12
    assert spec.sizeof(ids["array"]) == 6 and spec.sizeof(ids["const"]) == 4 and spec.sizeof(ids["ptr"]) == 8
    assert spec.type(ids["enum"]).values == [("ABORTED", 0), ("DROP", 1), ("PASS", 2)]
    assert spec.type(ids["enum64"]).kind == Kind.ENUM64 and spec.type(ids["enum64"]).values == [("HUGE", 1 << 40)]
    assert spec.type(ids["proto"]).params == [("p", ids["ptr"]), ("n", ids["u32"])]
    assert spec.format(ids["proto"]) == "int (*)(struct pair * p, unsigned int n)"
    assert spec.type(ids["datasec"]).secinfo == [(ids["var"], 0, 4)]
    assert spec.func_id("handle") == ids["func"] and spec.func_id("nope") is None
    assert spec.ids_named("pair") == [ids["struct"]] and spec.resolve(ids["const"]).name == "unsigned int"
    assert len(list(btf.describe(b.encode()))) == len(spec)


def test_reader_rejects_non_btf():
    with pytest.raises(ValueError, match="magic"):
        BTFSpec(b"\0" * 32)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True), st.integers(0, 7)),
                min_size=1, max_size=12, unique_by=lambda t: t[0]))
def test_struct_roundtrip_property(fields):
    b = BTFBuilder()
    u64 = b.int_("unsigned long long", 8)
    members = [(name, u64, 64 * i + 8 * pad) for i, (name, pad) in enumerate(fields)]
    b.struct("s", 8 * len(fields) + 8, members)
    spec = b.spec()
    for name, _, bits in members:
        assert spec.member_offset("s", name) == bits // 8


def test_kernel_accepts_every_kind(kernel):
    b, _ = every_kind()
    fd = b.load()
    try:
        assert int(fd) > 0
    finally:
        fd.close()


def test_kernel_refusal_shows_btf_log(kernel):
    b = BTFBuilder()
    b.int_("int", 4, signed=True)
    b.ptr(99)  # no type 99
    with pytest.raises(BTFError) as info:
        b.load()
    assert "Invalid type_id" in info.value.reason and "[2] PTR" in info.value.reason
    assert "Invalid type_id" in str(info.value) and info.value.log


def test_vmlinux_xdp_md(kernel):
    spec = btf.vmlinux()
    xdp_md = spec.struct("xdp_md")
    assert xdp_md.size == 24
    assert [m.name for m in xdp_md.members][:3] == ["data", "data_end", "data_meta"]
    assert spec.member_offset("xdp_md", "ingress_ifindex") == 12
    assert spec.member_offset("iphdr", "daddr") == 16  # through the anonymous union of saddr/daddr
    assert btf.vmlinux() is spec  # parsed once per process


def test_vmlinux_kfunc_ids(kernel):
    spec = btf.vmlinux()
    kfuncs = spec.kfunc_ids()
    if not kfuncs:
        pytest.skip("this kernel's BTF has no bpf_kfunc decl tags (pahole < 1.26)")
    rx_hash = btf.kfunc_id("bpf_xdp_metadata_rx_hash")
    if rx_hash is None:
        pytest.skip("kernel has no bpf_xdp_metadata_rx_hash kfunc")
    f = spec.type(rx_hash)
    assert f.kind == Kind.FUNC and f.name == "bpf_xdp_metadata_rx_hash"
    assert spec.format(f.type).startswith("int (*)(const struct xdp_md * ctx")
    assert spec.kfunc_id("bpf_map_lookup_elem") is None  # a FUNC, but not a kfunc
