"""Every map type XDP work uses, against the real kernel: create, update, lookup, iterate,
batch, delete, pin and reopen; codecs; per-CPU values; map-in-map; clear errors."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpfasm import syscall
from pybpfasm.layout import Struct, be32, u8, u32, u64
from pybpfasm.maps import (
    ArrayMap,
    ArrayOfMaps,
    DevMap,
    DevMapHash,
    HashMap,
    HashOfMaps,
    LruHash,
    LruPerCpuHash,
    Map,
    MapError,
    PerCpuArray,
    PerCpuHash,
    ProgArray,
    RawCodec,
    RingBuf,
    StructCodec,
    codec,
)
from pybpfasm.syscall import MapType


class Flow(Struct):
    src = be32
    dst = be32
    proto = u8


@pytest.fixture
def pin_path(unique_name):
    paths: list[str] = []

    def make(suffix: str = "") -> str:
        path = f"/sys/fs/bpf/{unique_name}{suffix}"
        paths.append(path)
        return path

    yield make
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


def test_codecs_without_kernel():
    assert codec(4).pack(7) == b"\x07\0\0\0" and codec(4).unpack(b"abcd") == b"abcd"
    assert isinstance(codec(4), RawCodec) and isinstance(codec("<I"), StructCodec)
    assert codec("<IH").unpack(codec("<IH").pack((1, 2))) == (1, 2)
    assert codec(u32) is u32 and codec(Flow) is Flow
    with pytest.raises(MapError, match="expected 4 bytes"):
        codec(4).pack(b"abc")
    with pytest.raises(MapError, match="not a key/value layout"):
        codec(object())


def _check_pin_reopen(m: Map, path: str, key, expected):
    m.pin(path)
    with Map.from_pinned(path, key=m.key, value=m.value) as again:
        assert type(again) is type(m)
        assert again.name == m.name and again.max_entries == m.max_entries
        assert again[key] == expected
        assert again.id == m.id


HASH_LIKE = [HashMap, LruHash]


@pytest.mark.parametrize("cls", HASH_LIKE)
def test_hash_like(kernel, cls, pin_path):
    with cls(key=Flow, value=u64, max_entries=64, name="pyb_flows") as m:
        f1, f2 = Flow(src=0x0A000001, dst=0x0A000002, proto=6), Flow(src=3, dst=4, proto=17)
        m[f1] = 5
        m.update(f2, 7, syscall.BPF_NOEXIST)
        with pytest.raises(FileExistsError):
            m.update(f2, 8, syscall.BPF_NOEXIST)
        assert m[f1] == 5 and m.get(Flow(src=9)) is None and m.get(Flow(src=9), 0) == 0
        assert f1 in m and Flow(src=9) not in m
        assert sorted(m.items()) == sorted([(f1, 5), (f2, 7)]) and len(m) == 2
        assert sorted(m.keys()) == sorted([f1, f2])
        assert sorted(m.dump(batch_size=1)) == sorted([(f1, 5), (f2, 7)])
        _check_pin_reopen(m, pin_path(), f1, 5)
        del m[f1]
        with pytest.raises(KeyError):
            m[f1]
        with pytest.raises(KeyError):
            del m[f1]
        assert m.pop(f2) == 7 and len(m) == 0
        assert m.update_batch((Flow(src=i), i) for i in range(20)) == 20
        assert m.delete_batch(Flow(src=i) for i in range(10)) == 10
        assert sorted(v for _, v in m.pop_all(batch_size=4)) == list(range(10, 20)) and len(m) == 0


@pytest.mark.parametrize("cls", [PerCpuHash, LruPerCpuHash])
def test_percpu_hash(kernel, cls, pin_path):
    n = syscall.possible_cpus()
    with cls(key=u32, value=u32, max_entries=16, name="pyb_pch") as m:
        assert m.ncpus == n
        m[1] = list(range(n))  # one value per CPU; u32 is padded to 8 per CPU by the kernel
        m[2] = 9  # same value on every CPU
        assert m[1] == list(range(n)) and m[2] == [9] * n
        with pytest.raises(MapError, match="possible CPUs"):
            m[3] = [1] * (n + 1)
        assert sorted(m.items()) == [(1, list(range(n))), (2, [9] * n)]
        assert sorted(m.dump()) == [(1, list(range(n))), (2, [9] * n)]
        _check_pin_reopen(m, pin_path(), 2, [9] * n)
        m.update_batch([(3, 3), (4, 4)])
        assert m.delete_batch([1, 2]) == 2
        assert sorted(m.keys()) == [3, 4]
        del m[3]
        assert list(m.keys()) == [4]


def test_array(kernel, pin_path):
    with ArrayMap(value=u64, max_entries=8, name="pyb_arr") as m:
        assert len(m) == 8 and m[7] == 0
        m[3] = 42
        assert m[3] == 42 and list(m.keys()) == list(range(8))
        assert dict(m.items())[3] == 42 and dict(m.dump(batch_size=3))[3] == 42
        with pytest.raises(BPFErrorOrMapError):
            m[8] = 1
        with pytest.raises(MapError, match="cannot be deleted"):
            del m[3]
        m.update_batch([(0, 10), (1, 11)])
        assert [m[0], m[1]] == [10, 11]
        _check_pin_reopen(m, pin_path(), 3, 42)
        m.freeze()
        with pytest.raises(PermissionError, match="frozen"):
            m[0] = 1


BPFErrorOrMapError = (syscall.BPFError, MapError)


def test_percpu_array(kernel, pin_path):
    n = syscall.possible_cpus()
    with PerCpuArray(key=u32, value=u64, max_entries=4, name="pyb_pca") as m:
        m[1] = [i + 1 for i in range(n)]
        assert m[1] == [i + 1 for i in range(n)] and m[0] == [0] * n
        assert dict(m.dump())[1] == [i + 1 for i in range(n)]
        assert len(list(m.items())) == 4
        _check_pin_reopen(m, pin_path(), 1, [i + 1 for i in range(n)])


@pytest.mark.parametrize("cls", [DevMap, DevMapHash])
def test_devmaps(kernel, cls, pin_path):
    with cls(max_entries=8, name="pyb_dev") as m:
        m[2] = 1  # ifindex 1 (lo) as a redirect target
        assert m[2] == 1 and list(m.items()) == [(2, 1)] and len(m) == 1
        assert m.dump() == [(2, 1)]
        _check_pin_reopen(m, pin_path(), 2, 1)
        del m[2]
        assert len(m) == 0 and m.get(2) is None
        with pytest.raises(syscall.BPFError, match="BPF_MAP_UPDATE_ELEM failed: EINVAL .*no interface with ifindex 2147483632"):
            m[1] = 0x7FFFFFF0  # no such interface


def test_devmap_with_egress_program(kernel):
    from pybpfasm import isa
    from pybpfasm.program import Program

    prog = Program.load([isa.make("mov64_k", dst=0, imm=2), isa.make("exit")], name="pyb_egress",
                        expected_attach_type="xdp_devmap")
    with prog, DevMap(max_entries=4, with_prog=True) as m:
        m[0] = (1, prog)
        ifindex, prog_id = m[0]
        assert ifindex == 1 and prog_id == prog.id


def test_ringbuf(kernel, pin_path):
    with RingBuf(max_entries=1 << 14, name="pyb_rb") as rb:
        assert rb.info().type is MapType.RINGBUF and rb.max_entries == 1 << 14
        with pytest.raises(MapError, match="no keys"):
            rb[0]
        path = pin_path()
        rb.pin(path)
        with Map.from_pinned(path) as again:
            assert isinstance(again, RingBuf) and again.max_entries == 1 << 14
    with pytest.raises(MapError, match="power of two"):
        RingBuf(max_entries=5000)


@pytest.mark.parametrize("outer_cls", [HashOfMaps, ArrayOfMaps])
def test_map_in_map(kernel, outer_cls, pin_path):
    with DevMapHash(max_entries=8, name="pyb_tmpl") as template, \
            outer_cls(inner=template, max_entries=4, name="pyb_outer") as outer, \
            DevMapHash(max_entries=8, name="pyb_in1") as in1:
        in1[5] = 1
        outer[1] = in1  # a map object (its fd)
        assert outer.get_id(1) == in1.id and list(outer.ids()) == [(1, in1.id)]
        with outer[1] as opened:  # lookups open the inner map by id, with the template's layouts
            assert isinstance(opened, DevMapHash) and opened[5] == 1
        with ArrayMap(value=u32, max_entries=1) as wrong, pytest.raises(syscall.BPFError, match="EINVAL"):
            outer[2] = wrong  # inner maps must match the template
        path = pin_path()
        outer.pin(path)
        with Map.from_pinned(path, inner=template) as again:
            assert isinstance(again, outer_cls) and again.get_id(1) == in1.id
        del outer[1]
        assert outer.get_id(1) is None


def test_prog_array(kernel, pin_path):
    from pybpfasm import isa
    from pybpfasm.program import Program

    with Program.load([isa.make("mov64_k", dst=0, imm=2), isa.make("exit")], name="pyb_tail") as prog, \
            ProgArray(max_entries=4, name="pyb_jmp") as table:
        table[1] = prog
        assert table[1] == prog.id and list(table.items()) == [(1, prog.id)]
        path = pin_path()
        table.pin(path)
        with Map.from_pinned(path) as again:
            assert isinstance(again, ProgArray) and again[1] == prog.id
        del table[1]
        assert table.get(1) is None


def test_open_by_id_checks_type_and_layout(kernel):
    with HashMap(key=u32, value=u64, max_entries=4, name="pyb_byid") as m:
        m[1] = 2
        with Map.from_id(m.id) as raw:  # no layouts given: raw bytes
            assert raw[b"\1\0\0\0"] == (2).to_bytes(8, "little")
        with pytest.raises(MapError, match="is a hash map, not a ArrayMap"):
            ArrayMap.from_id(m.id)
        with pytest.raises(MapError, match="value layout is 4 bytes, the map's is 8"):
            Map.from_id(m.id, key=u32, value=u32)
        with pytest.raises(MapError, match="cannot pack key"):
            m[b"\1\0"] = 1


def test_from_pinned_missing_and_not_a_map(kernel, pin_path):
    path = pin_path("_missing")
    with pytest.raises(FileNotFoundError, match=f"no such pinned object: {path}"):
        Map.from_pinned(path)


def test_maps_close_deterministically(kernel):
    m = HashMap(key=u32, value=u32, max_entries=1)
    map_id = m.id
    with m:
        pass
    assert m.closed
    with pytest.raises(ValueError, match="closed"):
        m[1] = 1
    with pytest.raises(FileNotFoundError):  # the kernel freed it: no fd, no pin, no program held it
        syscall.map_get_fd_by_id(map_id)


def test_generic_map_for_other_types(kernel):
    with Map(map_type="lpm_trie", key=8, value=4, max_entries=4, flags=syscall.BPF_F_NO_PREALLOC) as m:
        m[bytes([24, 0, 0, 0, 10, 0, 0, 0])] = b"\1\0\0\0"
        assert len(m) == 1


@settings(max_examples=20, deadline=None)
@given(st.dictionaries(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), max_size=40))
def test_hash_roundtrip_property(kernel, entries):
    with HashMap(key=u32, value=u64, max_entries=64) as m:
        m.update_batch(entries.items())
        assert dict(m.dump(batch_size=7)) == entries == dict(m.items())
        assert len(m) == len(entries)
        m.delete_batch(list(entries)[::2])
        assert dict(m.items()) == {k: v for i, (k, v) in enumerate(entries.items()) if i % 2}
