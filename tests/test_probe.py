"""Feature probes tell "the kernel lacks it" (False) from "you may not" (raised)."""

from __future__ import annotations

import pytest

from pybpfasm import probe
from pybpfasm.syscall import MapType, ProgType

XDP_MAP_TYPES = ["array", "percpu_array", "hash", "percpu_hash", "lru_hash", "lru_percpu_hash", "devmap",
                 "devmap_hash", "ringbuf", "hash_of_maps", "array_of_maps", "prog_array"]


def test_kernel_is_usable(kernel):
    assert probe.unavailable_reason() is None


@pytest.mark.parametrize("map_type", XDP_MAP_TYPES)
def test_have_map_type_for_xdp_maps(kernel, map_type):
    assert probe.have_map_type(map_type) is True


def test_unknown_map_and_prog_types_are_missing(kernel):
    assert probe.have_map_type(250) is False
    assert probe.have_prog_type(250) is False


def test_have_prog_type(kernel):
    assert probe.have_prog_type(ProgType.XDP) is True
    assert probe.have_prog_type("sched_cls") is True
    assert probe.have_prog_type("syscall") is True  # needs BPF_F_SLEEPABLE, which the probe sets


def test_have_helper_tells_unknown_and_forbidden_from_bad_arguments(kernel):
    assert probe.have_helper("xdp", 51) is True  # redirect_map (zero arguments are rejected, not unknown)
    assert probe.have_helper("xdp", 131) is True  # ringbuf_reserve
    assert probe.have_helper("xdp", 9) is False  # skb_store_bytes is not for XDP
    assert probe.have_helper("xdp", 100000) is False  # no such helper


def test_link_live_frames_and_batch_probes(kernel):
    assert probe.have_bpf_link_xdp() is True
    assert probe.have_test_run_live_frames() is True
    assert probe.have_batch_ops() is True
    assert probe.kernel_version() >= (5, 9, 0)


def test_btf_only_map_types_say_so(kernel):
    with pytest.raises(ValueError, match="needs BTF"):
        probe.have_map_type(MapType.SK_STORAGE)
