"""The helper table extracted from the kernel uapi header."""

from __future__ import annotations

from pybpfasm import builder, isa
from pybpfasm.helpers import HELPERS, by_id, helper_ids, lookup


def test_well_known_ids() -> None:
    # Stable uapi numbers (include/uapi/linux/bpf.h ___BPF_FUNC_MAPPER).
    expected = {"map_lookup_elem": 1, "map_update_elem": 2, "map_delete_elem": 3, "ktime_get_ns": 5,
                "trace_printk": 6, "redirect": 23, "xdp_adjust_head": 44, "redirect_map": 51,
                "ringbuf_output": 130, "ringbuf_reserve": 131, "ringbuf_submit": 132, "ringbuf_discard": 133,
                "cgrp_storage_delete": 211}
    for name, hid in expected.items():
        assert HELPERS[name].id == hid
        assert by_id[hid].name == name


def test_ids_dense_and_unique() -> None:
    assert sorted(by_id) == list(range(1, len(HELPERS) + 1))


def test_lookup_both_spellings() -> None:
    assert lookup("bpf_map_lookup_elem") is lookup("map_lookup_elem") is HELPERS["map_lookup_elem"]
    assert lookup("no_such_helper") is None
    assert helper_ids()["bpf_redirect_map"] == 51


def test_prototypes_and_kinds() -> None:
    h = HELPERS["map_lookup_elem"]
    assert h.returns_pointer and h.return_type == "void *"
    assert [(a.ctype, a.name, a.kind) for a in h.args] == [("struct bpf_map *", "map", "map"),
                                                           ("const void *", "key", "ptr")]
    assert [a.kind for a in HELPERS["xdp_adjust_head"].args] == ["ctx", "scalar"]
    assert [a.kind for a in HELPERS["ringbuf_reserve"].args] == ["map", "scalar", "scalar"]
    assert HELPERS["ktime_get_ns"].args == () and not HELPERS["ktime_get_ns"].returns_pointer
    assert HELPERS["trace_printk"].args[-1].kind == "varargs"
    assert HELPERS["map_lookup_elem"].prototype == "void *bpf_map_lookup_elem(struct bpf_map *map, const void *key)"


def test_every_helper_has_a_prototype() -> None:
    for h in HELPERS.values():
        assert h.return_type, h.name
        assert len(h.args) <= 5 or h.args[-1].kind == "varargs", h.name


def test_builder_resolves_both_spellings() -> None:
    insns = builder.resolve([isa.make("call", ref=builder.HelperRef("bpf_redirect_map")),
                             isa.make("call", ref=builder.HelperRef("map_lookup_elem"))])
    assert [i.imm for i in insns] == [51, 1]
