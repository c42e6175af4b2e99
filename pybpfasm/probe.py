"""Kernel feature probes: "this kernel lacks X" versus "you may not" / "bad argument".

Each probe makes the smallest valid request for the feature (as cilium/ebpf's
``features`` package does) and reads the errno: EINVAL / E2BIG / ENOTSUPP /
EOPNOTSUPP on a minimal, otherwise valid request mean the kernel does not know
the feature and the probe answers False; EPERM cannot tell anything and is
raised (as ``BPFError``); success answers True.  Results are cached per process.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any

from . import isa
from .syscall import (
    ENOTSUPP,
    AttachType,
    BPFError,
    MapFlags,
    MapType,
    ProgFlags,
    ProgType,
    TestRunFlags,
    link_create,
    map_create,
    map_lookup_batch,
    prog_load,
    prog_test_run,
)

_MISSING = {errno.EINVAL, errno.E2BIG, ENOTSUPP, errno.EOPNOTSUPP}

BPFFS = "/sys/fs/bpf"


def unavailable_reason() -> str | None:
    """None when bpf() works for us (privileged) and bpffs is mounted; else why not."""
    try:
        with map_create(MapType.ARRAY, 4, 4, 1, name="pybpfasm_probe"):
            pass
    except BPFError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return "bpf() not permitted: need root or CAP_BPF"
        return f"bpf() unusable: {exc}"
    except OSError as exc:  # ENOSYS from an unknown architecture
        return f"bpf() unavailable: {exc}"
    if not os.path.ismount(BPFFS):
        return f"bpffs is not mounted at {BPFFS} (mount -t bpf bpf {BPFFS})"
    return None


def _maybe(enum: Any, value: int) -> Any:
    """The enum member, or the bare int for values newer than our tables (still probed)."""
    try:
        return enum(value)
    except ValueError:
        return int(value)


def _answer(exc: BPFError) -> bool:
    if exc.errno in _MISSING:
        return False
    raise exc


# Minimal valid creation attributes per map type: (key_size, value_size, max_entries, flags).
_MAP_ATTRS: dict[MapType, tuple[int, int, int, int]] = {
    MapType.RINGBUF: (0, 0, os.sysconf("SC_PAGE_SIZE"), 0),
    MapType.USER_RINGBUF: (0, 0, os.sysconf("SC_PAGE_SIZE"), 0),
    MapType.LPM_TRIE: (8, 4, 1, MapFlags.NO_PREALLOC),
    MapType.STACK_TRACE: (4, 8, 1, 0),
    MapType.QUEUE: (0, 4, 1, 0),
    MapType.STACK: (0, 4, 1, 0),
    MapType.BLOOM_FILTER: (0, 4, 1, 0),
    MapType.CGROUP_STORAGE: (16, 4, 0, 0),
    MapType.PERCPU_CGROUP_STORAGE: (16, 4, 0, 0),
    MapType.DEVMAP: (4, 4, 1, 0),
    MapType.DEVMAP_HASH: (4, 4, 1, 0),
    MapType.CPUMAP: (4, 4, 1, 0),
    MapType.XSKMAP: (4, 4, 1, 0),
    MapType.PROG_ARRAY: (4, 4, 1, 0),
    MapType.PERF_EVENT_ARRAY: (4, 4, 1, 0),
    MapType.CGROUP_ARRAY: (4, 4, 1, 0),
    MapType.SOCKMAP: (4, 4, 1, 0),
    MapType.SOCKHASH: (4, 4, 1, 0),
    MapType.REUSEPORT_SOCKARRAY: (4, 4, 1, 0),
    MapType.ARENA: (0, 0, 1, MapFlags.MMAPABLE),
}
_NEEDS_BTF = {MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE,
              MapType.STRUCT_OPS}


@functools.cache
def have_map_type(map_type: MapType | int | str) -> bool:
    """Can this kernel create maps of ``map_type``?"""
    mt = MapType.parse(map_type) if isinstance(map_type, str) else _maybe(MapType, map_type)
    if mt in _NEEDS_BTF:
        raise ValueError(f"probing {mt.name.lower()} needs BTF, which this probe does not build")
    key, value, entries, flags = _MAP_ATTRS.get(mt, (4, 4, 1, 0))
    inner = None
    try:
        if mt in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            inner = map_create(MapType.ARRAY, 4, 4, 1)
        with map_create(mt, key, value, entries, flags=flags, inner_map_fd=inner):
            return True
    except BPFError as exc:
        return _answer(exc)
    finally:
        if inner is not None:
            inner.close()


_RETURN_0 = isa.encode_program([isa.make("mov64_k", dst=0, imm=0), isa.make("exit")])

_EXPECTED_ATTACH = {
    ProgType.CGROUP_SOCKOPT: AttachType.CGROUP_GETSOCKOPT,
    ProgType.SK_LOOKUP: AttachType.SK_LOOKUP,
    ProgType.CGROUP_SOCK_ADDR: AttachType.CGROUP_INET4_CONNECT,
    ProgType.NETFILTER: AttachType.NETFILTER,
}
_PROG_FLAGS = {ProgType.SYSCALL: ProgFlags.SLEEPABLE}


@functools.cache
def have_prog_type(prog_type: ProgType | int | str) -> bool:
    """Can this kernel load programs of ``prog_type`` (a trivial ``return 0``)?"""
    pt = ProgType.parse(prog_type) if isinstance(prog_type, str) else _maybe(ProgType, prog_type)
    if pt in (ProgType.TRACING, ProgType.EXT, ProgType.LSM, ProgType.STRUCT_OPS):
        raise ValueError(f"probing {pt.name.lower()} needs an attach BTF id, which this probe does not pick")
    try:
        with prog_load(pt, _RETURN_0, "GPL", expected_attach_type=_EXPECTED_ATTACH.get(pt),
                       prog_flags=_PROG_FLAGS.get(pt, 0)).fd:
            return True
    except BPFError as exc:
        return _answer(exc)


_UNKNOWN_HELPER = ("invalid func ", "unknown func ", "program of this type cannot use helper")


@functools.cache
def have_helper(prog_type: ProgType | int | str, helper_id: int) -> bool:
    """May a ``prog_type`` program call helper ``helper_id``?

    The probe calls the helper with zero arguments: the verifier rejects the
    arguments of a known helper but names an unknown or forbidden one.
    """
    pt = ProgType.parse(prog_type) if isinstance(prog_type, str) else _maybe(ProgType, prog_type)
    code = isa.encode_program([
        isa.make("mov64_k", dst=1, imm=0), isa.make("mov64_k", dst=2, imm=0), isa.make("mov64_k", dst=3, imm=0),
        isa.make("mov64_k", dst=4, imm=0), isa.make("mov64_k", dst=5, imm=0),
        isa.make("call", imm=helper_id), isa.make("mov64_k", dst=0, imm=0), isa.make("exit"),
    ])
    try:
        with prog_load(pt, code, "GPL", log_level=1, log_size=1 << 16,
                       expected_attach_type=_EXPECTED_ATTACH.get(pt), prog_flags=_PROG_FLAGS.get(pt, 0)).fd:
            return True
    except BPFError as exc:
        if exc.errno in (errno.EPERM,):
            raise
        if any(marker in exc.log for marker in _UNKNOWN_HELPER):
            return False
        if exc.errno in (errno.EACCES, errno.EINVAL):
            return True
        return _answer(exc)


def kernel_version() -> tuple[int, int, int]:
    """The running kernel's (major, minor, patch) from uname."""
    nums = []
    for part in os.uname().release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits or 0))
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


@functools.cache
def have_bpf_link_xdp() -> bool:
    """Does BPF_LINK_CREATE support XDP (kernel >= 5.9)?

    A missing interface and a kernel without XDP links both answer EINVAL, and
    probing a real interface would attach to it, so: the command must exist
    (a bad prog fd gives EBADF) and the kernel must be 5.9 or newer.
    """
    try:
        link_create(0xFFFFFFFF, 0, AttachType.XDP).close()
    except BPFError as exc:
        if exc.errno != errno.EBADF:
            return _answer(exc)
    return kernel_version() >= (5, 9, 0)


@functools.cache
def have_test_run_live_frames() -> bool:
    """Does BPF_PROG_TEST_RUN accept BPF_F_TEST_XDP_LIVE_FRAMES (kernel >= 5.18)?"""
    drop = isa.encode_program([isa.make("mov64_k", dst=0, imm=1), isa.make("exit")])  # XDP_DROP
    try:
        prog = prog_load(ProgType.XDP, drop, "GPL").fd
    except BPFError as exc:
        return _answer(exc)
    with prog:
        try:
            prog_test_run(prog, bytes(64), flags=TestRunFlags.XDP_LIVE_FRAMES)
            return True
        except BPFError as exc:
            return _answer(exc)


@functools.cache
def have_batch_ops() -> bool:
    """Do hash maps support BPF_MAP_LOOKUP_BATCH (kernel >= 5.6)?"""
    try:
        with map_create(MapType.HASH, 4, 4, 1) as fd:
            map_lookup_batch(fd, None, 4, 4, 1)
            return True
    except BPFError as exc:
        return _answer(exc)
