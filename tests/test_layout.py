"""Struct layouts: C alignment, byte order, codecs (pure Python, no kernel)."""

from __future__ import annotations

import ctypes

import pytest

from pybpfasm.layout import (
    Bytes,
    Layout,
    LayoutError,
    Struct,
    be16,
    be32,
    codec,
    pad,
    s8,
    s32,
    u8,
    u16,
    u32,
    u64,
)


class Flow(Struct):
    src = be32
    dst = be32
    proto = u8


class Event(Struct):
    ifindex = u32
    host = be32
    group = be32
    igmp_type = u8
    record_type = u8
    nsrcs = u16
    sources = be32[4]


def test_c_alignment_matches_ctypes():
    class Mixed(Struct):
        a = u8
        b = u64
        c = u16
        d = u32[3]
        e = s8

    class C(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_uint64), ("c", ctypes.c_uint16),
                    ("d", ctypes.c_uint32 * 3), ("e", ctypes.c_int8)]

    assert Mixed.size == ctypes.sizeof(C)
    for name in "abcde":
        assert Mixed.offset_of(name) == getattr(C, name).offset


def test_flow_size_and_padding_zero():
    assert Flow.size == 12
    raw = Flow.pack(src=0x0A000001, dst=0x0A000002, proto=6)
    assert raw == bytes.fromhex("0a000001" "0a000002" "06000000")
    assert Flow.unpack(raw) == Flow(src=0x0A000001, dst=0x0A000002, proto=6)


def test_explicit_pad_and_layout_function():
    F = Layout("F", [("a", u8), ("_p", pad(3)), ("b", u32)])
    assert F.size == 8 and F.offset_of("b") == 4
    assert F.pack({"a": 1, "b": 2}) == b"\x01\0\0\0\x02\0\0\0"
    assert F.unpack(F.pack(a=1, b=2))._fields == ("a", "b")


def test_mixed_byte_order_event_roundtrip():
    assert Event.size == 32
    ev = Event(ifindex=7, host=0xC0A80001, group=0xE0000001, igmp_type=0x22, record_type=4, nsrcs=2,
               sources=(0x01020304, 5))
    raw = Event.pack(ev)
    assert raw[:4] == (7).to_bytes(4, "little")
    assert raw[4:8] == bytes([192, 168, 0, 1])
    assert raw[16:20] == bytes([1, 2, 3, 4])
    assert Event.unpack(raw) == ev._replace(sources=(0x01020304, 5, 0, 0))
    assert Event.unpack_from(b"xx" + raw, 2).ifindex == 7


def test_nested_struct_and_bytes():
    class Outer(Struct):
        a = u8
        f = Flow
        mac = Bytes(6)
        x = u64

    assert Outer.offset_of("f") == 4 and Outer.offset_of("f.proto") == 12
    assert Outer.offset_of("x") == 24 and Outer.size == 32
    v = Outer.unpack(Outer.pack(a=1, f={"src": 5}, mac=b"\x01\x02"))
    assert v.f.src == 5 and v.mac == b"\x01\x02\0\0\0\0"


def test_signed_and_errors():
    S = Layout("S", [("a", s32), ("b", u8)])
    assert S.unpack(S.pack(a=-5, b=255)) == S(a=-5, b=255)
    with pytest.raises(LayoutError):
        S.pack(b=256)
    with pytest.raises(LayoutError):
        S.pack(c=1)
    with pytest.raises(LayoutError):
        S.unpack(b"\0")
    assert S.pack(b=-1)[4] == 0xFF  # all-ones shorthand for unsigned


def test_scalar_codecs():
    assert u32.pack(5) == b"\x05\0\0\0" and u32.unpack(b"\x05\0\0\0") == 5
    assert be16.pack(0x0800) == b"\x08\x00" and be16.unpack(b"\x08\x00") == 0x0800
    assert u32[2].pack([1]) == b"\x01\0\0\0\0\0\0\0" and u32[2].unpack(bytes(8)) == (0, 0)
    assert codec(u64) is u64 and codec(Flow) is Flow and codec(4).size == 4
    assert Flow.zero() == bytes(12)
