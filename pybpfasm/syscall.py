"""The bpf(2) system call through ctypes: typed attribute layouts, constants, errors.

Each command's anonymous struct inside ``union bpf_attr`` (include/uapi/linux/bpf.h)
is one ``ctypes.Structure`` below, laid out field for field like the uapi.  We pass
exactly ``sizeof(our struct)`` to the kernel: it accepts a shorter attr (it zero-fills
what we do not know) and a longer one as long as the bytes it does not know are zero,
which is how an old kernel reports a feature it lacks (E2BIG).

Thin typed wrappers (``map_create``, ``prog_load``, ``prog_test_run``, ...) turn
Python values into attrs and errno into ``BPFError``, an ``OSError`` whose message
names the command, the errno and a likely cause.  Every fd comes back as an
``Fd`` that closes deterministically (``close()`` / ``with``), so tests and
long-running controllers do not leak kernel objects.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, TypeVar

# --------------------------------------------------------------------------
# Constants (facts from include/uapi/linux/bpf.h and if_link.h).
# --------------------------------------------------------------------------


class Cmd(IntEnum):
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_ATTACH = 8
    PROG_DETACH = 9
    PROG_TEST_RUN = 10
    PROG_GET_NEXT_ID = 11
    MAP_GET_NEXT_ID = 12
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15
    PROG_QUERY = 16
    RAW_TRACEPOINT_OPEN = 17
    BTF_LOAD = 18
    BTF_GET_FD_BY_ID = 19
    TASK_FD_QUERY = 20
    MAP_LOOKUP_AND_DELETE_ELEM = 21
    MAP_FREEZE = 22
    BTF_GET_NEXT_ID = 23
    MAP_LOOKUP_BATCH = 24
    MAP_LOOKUP_AND_DELETE_BATCH = 25
    MAP_UPDATE_BATCH = 26
    MAP_DELETE_BATCH = 27
    LINK_CREATE = 28
    LINK_UPDATE = 29
    LINK_GET_FD_BY_ID = 30
    LINK_GET_NEXT_ID = 31
    ENABLE_STATS = 32
    ITER_CREATE = 33
    LINK_DETACH = 34
    PROG_BIND_MAP = 35
    TOKEN_CREATE = 36


_E = TypeVar("_E", bound=IntEnum)


class _Parsable(IntEnum):
    """IntEnum accepting ints, members, and case-insensitive names ("percpu_hash")."""

    @classmethod
    def parse(cls: type[_E], value: int | str) -> _E:
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            prefix = _ENUM_PREFIXES.get(cls.__name__, "")
            if prefix and key.startswith(prefix):
                key = key[len(prefix):]
            try:
                return cls[key]
            except KeyError:
                names = ", ".join(m.name.lower() for m in cls)
                raise ValueError(f"unknown {cls.__name__} {value!r}; known: {names}") from None
        return cls(value)


_ENUM_PREFIXES = {"MapType": "BPF_MAP_TYPE_", "ProgType": "BPF_PROG_TYPE_", "AttachType": "BPF_", "LinkType": "BPF_LINK_TYPE_", "XdpAction": "XDP_"}


class MapType(_Parsable):
    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


class ProgType(_Parsable):
    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class AttachType(_Parsable):
    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44
    NETFILTER = 45
    TCX_INGRESS = 46
    TCX_EGRESS = 47
    TRACE_UPROBE_MULTI = 48
    CGROUP_UNIX_CONNECT = 49
    CGROUP_UNIX_SENDMSG = 50
    CGROUP_UNIX_RECVMSG = 51
    CGROUP_UNIX_GETPEERNAME = 52
    CGROUP_UNIX_GETSOCKNAME = 53
    NETKIT_PRIMARY = 54
    NETKIT_PEER = 55
    TRACE_KPROBE_SESSION = 56
    TRACE_UPROBE_SESSION = 57


class LinkType(_Parsable):
    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13
    SOCKMAP = 14


class XdpAction(_Parsable):
    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class StatsType(IntEnum):
    RUN_TIME = 0  # BPF_STATS_RUN_TIME: fills run_time_ns / run_cnt in prog info


class MapFlags(IntFlag):
    """BPF_MAP_CREATE map_flags."""

    NONE = 0
    NO_PREALLOC = 1 << 0
    NO_COMMON_LRU = 1 << 1
    NUMA_NODE = 1 << 2
    RDONLY = 1 << 3
    WRONLY = 1 << 4
    STACK_BUILD_ID = 1 << 5
    ZERO_SEED = 1 << 6
    RDONLY_PROG = 1 << 7
    WRONLY_PROG = 1 << 8
    CLONE = 1 << 9
    MMAPABLE = 1 << 10
    PRESERVE_ELEMS = 1 << 11
    INNER_MAP = 1 << 12
    LINK = 1 << 13
    PATH_FD = 1 << 14
    VTYPE_BTF_OBJ_FD = 1 << 15
    TOKEN_FD = 1 << 16
    SEGV_ON_FAULT = 1 << 17
    NO_USER_CONV = 1 << 18


class UpdateFlags(IntFlag):
    """BPF_MAP_UPDATE_ELEM flags (BPF_ANY / BPF_NOEXIST / BPF_EXIST / BPF_F_LOCK)."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    LOCK = 4


BPF_ANY = UpdateFlags.ANY
BPF_NOEXIST = UpdateFlags.NOEXIST
BPF_EXIST = UpdateFlags.EXIST
BPF_F_LOCK = UpdateFlags.LOCK

BPF_F_NO_PREALLOC = MapFlags.NO_PREALLOC
BPF_F_NO_COMMON_LRU = MapFlags.NO_COMMON_LRU
BPF_F_RDONLY = MapFlags.RDONLY
BPF_F_WRONLY = MapFlags.WRONLY
BPF_F_RDONLY_PROG = MapFlags.RDONLY_PROG
BPF_F_WRONLY_PROG = MapFlags.WRONLY_PROG
BPF_F_MMAPABLE = MapFlags.MMAPABLE
BPF_F_INNER_MAP = MapFlags.INNER_MAP


class ProgFlags(IntFlag):
    """BPF_PROG_LOAD prog_flags."""

    NONE = 0
    STRICT_ALIGNMENT = 1 << 0
    ANY_ALIGNMENT = 1 << 1
    TEST_RND_HI32 = 1 << 2
    TEST_STATE_FREQ = 1 << 3
    SLEEPABLE = 1 << 4
    XDP_HAS_FRAGS = 1 << 5
    XDP_DEV_BOUND_ONLY = 1 << 6
    TEST_REG_INVARIANTS = 1 << 7


class TestRunFlags(IntFlag):
    """BPF_PROG_TEST_RUN flags."""

    __test__ = False  # not a pytest test class
    NONE = 0
    RUN_ON_CPU = 1 << 0
    XDP_LIVE_FRAMES = 1 << 1
    SKB_CHECKSUM_COMPLETE = 1 << 2


BPF_F_TEST_RUN_ON_CPU = TestRunFlags.RUN_ON_CPU
BPF_F_TEST_XDP_LIVE_FRAMES = TestRunFlags.XDP_LIVE_FRAMES


class RedirectFlags(IntFlag):
    """Flags of bpf_redirect_map() in XDP (BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS)."""

    NONE = 0
    INGRESS = 1 << 0
    BROADCAST = 1 << 3
    EXCLUDE_INGRESS = 1 << 4


BPF_F_BROADCAST = RedirectFlags.BROADCAST
BPF_F_EXCLUDE_INGRESS = RedirectFlags.EXCLUDE_INGRESS


class AttachFlags(IntFlag):
    """BPF_PROG_ATTACH / BPF_LINK_UPDATE flags."""

    NONE = 0
    ALLOW_OVERRIDE = 1 << 0
    ALLOW_MULTI = 1 << 1
    REPLACE = 1 << 2


BPF_F_REPLACE = AttachFlags.REPLACE


class XdpFlags(IntFlag):
    """XDP_FLAGS_* (if_link.h): attach mode for netlink and for BPF_LINK_CREATE flags."""

    NONE = 0
    UPDATE_IF_NOEXIST = 1 << 0
    SKB_MODE = 1 << 1
    DRV_MODE = 1 << 2
    HW_MODE = 1 << 3
    REPLACE = 1 << 4


BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8
ENOTSUPP = 524  # kernel-internal errno that leaks to user space for "not supported here"

# --------------------------------------------------------------------------
# Attribute layouts, one per command (union bpf_attr members).
# --------------------------------------------------------------------------

u8, u16, u32, s32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64


class MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("inner_map_fd", u32),
        ("numa_node", u32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("map_ifindex", u32),
        ("btf_fd", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("map_extra", u64),
        ("value_type_btf_obj_fd", s32),
        ("map_token_fd", s32),
    ]


class MapElemAttr(ctypes.Structure):
    """MAP_LOOKUP/UPDATE/DELETE_ELEM, GET_NEXT_KEY, LOOKUP_AND_DELETE_ELEM, FREEZE."""

    _fields_ = [
        ("map_fd", u32),
        ("key", u64),
        ("value", u64),  # union with next_key
        ("flags", u64),
    ]

    @property
    def next_key(self) -> int:
        return self.value

    @next_key.setter
    def next_key(self, v: int) -> None:
        self.value = v


class MapBatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", u64),
        ("out_batch", u64),
        ("keys", u64),
        ("values", u64),
        ("count", u32),
        ("map_fd", u32),
        ("elem_flags", u64),
        ("flags", u64),
    ]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", u32),
        ("insn_cnt", u32),
        ("insns", u64),
        ("license", u64),
        ("log_level", u32),
        ("log_size", u32),
        ("log_buf", u64),
        ("kern_version", u32),
        ("prog_flags", u32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", u32),
        ("expected_attach_type", u32),
        ("prog_btf_fd", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("func_info_cnt", u32),
        ("line_info_rec_size", u32),
        ("line_info", u64),
        ("line_info_cnt", u32),
        ("attach_btf_id", u32),
        ("attach_prog_fd", u32),  # union with attach_btf_obj_fd
        ("core_relo_cnt", u32),
        ("fd_array", u64),
        ("core_relos", u64),
        ("core_relo_rec_size", u32),
        ("log_true_size", u32),
    ]


class ObjAttr(ctypes.Structure):
    """OBJ_PIN / OBJ_GET."""

    _fields_ = [
        ("pathname", u64),
        ("bpf_fd", u32),
        ("file_flags", u32),
    ]


class ProgAttachAttr(ctypes.Structure):
    """PROG_ATTACH / PROG_DETACH (legacy attach: cgroups, sockmaps, flow dissector)."""

    _fields_ = [
        ("target_fd", u32),
        ("attach_bpf_fd", u32),
        ("attach_type", u32),
        ("attach_flags", u32),
        ("replace_bpf_fd", u32),
    ]


class TestRunAttr(ctypes.Structure):
    __test__ = False
    _fields_ = [
        ("prog_fd", u32),
        ("retval", u32),
        ("data_size_in", u32),
        ("data_size_out", u32),
        ("data_in", u64),
        ("data_out", u64),
        ("repeat", u32),
        ("duration", u32),
        ("ctx_size_in", u32),
        ("ctx_size_out", u32),
        ("ctx_in", u64),
        ("ctx_out", u64),
        ("flags", u32),
        ("cpu", u32),
        ("batch_size", u32),
    ]


class GetIdAttr(ctypes.Structure):
    """*_GET_NEXT_ID and *_GET_FD_BY_ID: start_id is a union with prog_id/map_id/link_id."""

    _fields_ = [
        ("start_id", u32),
        ("next_id", u32),
        ("open_flags", u32),
    ]


class InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", u32),
        ("info_len", u32),
        ("info", u64),
    ]


class LinkCreateAttr(ctypes.Structure):
    """LINK_CREATE: target_fd is a union with target_ifindex; the per-type union follows."""

    _fields_ = [
        ("prog_fd", u32),
        ("target_fd", u32),
        ("attach_type", u32),
        ("flags", u32),
        ("target_btf_id", u32),  # first member of the per-attach-type union
        ("_pad", u32),
        ("extra", u64 * 4),  # rest of the union (kprobe_multi, tcx, ...), zero for XDP
    ]

    @property
    def target_ifindex(self) -> int:
        return self.target_fd

    @target_ifindex.setter
    def target_ifindex(self, v: int) -> None:
        self.target_fd = v


class LinkUpdateAttr(ctypes.Structure):
    _fields_ = [
        ("link_fd", u32),
        ("new_prog_fd", u32),
        ("flags", u32),
        ("old_prog_fd", u32),
    ]


class LinkDetachAttr(ctypes.Structure):
    _fields_ = [("link_fd", u32)]


class EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", u32)]


class ProgBindMapAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("map_fd", u32), ("flags", u32)]


class BtfLoadAttr(ctypes.Structure):
    """The BPF_BTF_LOAD member of union bpf_attr (log_true_size since 6.4, flags/token since 6.9)."""

    _fields_ = [
        ("btf", u64),
        ("btf_log_buf", u64),
        ("btf_size", u32),
        ("btf_log_size", u32),
        ("btf_log_level", u32),
        ("btf_log_true_size", u32),
    ]


class BtfGetFdAttr(ctypes.Structure):
    """BPF_BTF_GET_FD_BY_ID: btf_id, next_id, open_flags."""

    _fields_ = [("btf_id", u32), ("next_id", u32), ("open_flags", u32)]


# --------------------------------------------------------------------------
# Info structs (OBJ_GET_INFO_BY_FD).
# --------------------------------------------------------------------------


class ProgInfoStruct(ctypes.Structure):
    """struct bpf_prog_info."""

    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("tag", u8 * BPF_TAG_SIZE),
        ("jited_prog_len", u32),
        ("xlated_prog_len", u32),
        ("jited_prog_insns", u64),
        ("xlated_prog_insns", u64),
        ("load_time", u64),
        ("created_by_uid", u32),
        ("nr_map_ids", u32),
        ("map_ids", u64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", u32),
        ("gpl_compatible", u32, 1),
        ("_pad0", u32, 31),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("nr_jited_ksyms", u32),
        ("nr_jited_func_lens", u32),
        ("jited_ksyms", u64),
        ("jited_func_lens", u64),
        ("btf_id", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("nr_func_info", u32),
        ("nr_line_info", u32),
        ("line_info", u64),
        ("jited_line_info", u64),
        ("nr_jited_line_info", u32),
        ("line_info_rec_size", u32),
        ("jited_line_info_rec_size", u32),
        ("nr_prog_tags", u32),
        ("prog_tags", u64),
        ("run_time_ns", u64),
        ("run_cnt", u64),
        ("recursion_misses", u64),
        ("verified_insns", u32),
        ("attach_btf_obj_id", u32),
        ("attach_btf_id", u32),
        ("_pad1", u32),
    ]


class MapInfoStruct(ctypes.Structure):
    """struct bpf_map_info."""

    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("btf_id", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_id", u32),
        ("map_extra", u64),
    ]


class BtfInfoStruct(ctypes.Structure):
    """struct bpf_btf_info."""

    _fields_ = [
        ("btf", u64),
        ("btf_size", u32),
        ("id", u32),
        ("name", u64),
        ("name_len", u32),
        ("kernel_btf", u32),
    ]


class LinkInfoStruct(ctypes.Structure):
    """struct bpf_link_info; the per-type union is kept as raw 64-bit words.

    Offsets into ``union`` (byte offset 16 of the struct): xdp.ifindex at 0,
    tcx/netkit {ifindex, attach_type} at 0/4, netns {netns_ino, attach_type},
    cgroup {cgroup_id u64, attach_type u32 at 8}, tracing {attach_type, ...}.
    """

    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("prog_id", u32),
        ("_pad", u32),
        ("union", u64 * 8),
    ]

    def union_u32(self, index: int) -> int:
        raw = bytes(self.union)
        return int.from_bytes(raw[4 * index:4 * index + 4], "little")


# --------------------------------------------------------------------------
# The system call.
# --------------------------------------------------------------------------

_SYSCALL_NUMBERS = {
    "x86_64": 321, "amd64": 321,
    "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "i386": 357, "i686": 357, "x86": 357,
    "armv7l": 386, "armv6l": 386, "arm": 386,
    "ppc64le": 361, "ppc64": 361,
    "s390x": 351,
    "mips64": 5315,
}


def _syscall_number() -> int:
    machine = platform.machine().lower()
    try:
        return _SYSCALL_NUMBERS[machine]
    except KeyError:
        raise OSError(errno_mod.ENOSYS, f"bpf(): unknown syscall number for machine {machine!r}") from None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR_BPF = _syscall_number()


_HINTS: dict[tuple[Cmd | None, int], str] = {
    (None, errno_mod.EPERM): "need root or CAP_BPF (plus CAP_NET_ADMIN / CAP_PERFMON for most program types)",
    (None, errno_mod.EACCES): "permission denied",
    (None, errno_mod.EBADF): "not a valid BPF object fd",
    (None, errno_mod.EFAULT): "bad pointer in the attributes (pybpfasm bug)",
    (None, errno_mod.E2BIG): "this kernel does not know an attribute that was set (kernel too old?)",
    (None, errno_mod.EINVAL): "invalid argument",
    (None, ENOTSUPP): "operation not supported for this object type",
    (None, errno_mod.EOPNOTSUPP): "operation not supported for this object type",
    (None, errno_mod.ENOMEM): "out of memory (map too large or memory cgroup limit)",
    (Cmd.MAP_CREATE, errno_mod.EINVAL): "invalid map attributes, or a map type/flag this kernel does not support",
    (Cmd.MAP_LOOKUP_ELEM, errno_mod.ENOENT): "no such key",
    (Cmd.MAP_LOOKUP_AND_DELETE_ELEM, errno_mod.ENOENT): "no such key",
    (Cmd.MAP_DELETE_ELEM, errno_mod.ENOENT): "no such key",
    (Cmd.MAP_GET_NEXT_KEY, errno_mod.ENOENT): "no more keys",
    (Cmd.MAP_UPDATE_ELEM, errno_mod.EEXIST): "key already exists (BPF_NOEXIST)",
    (Cmd.MAP_UPDATE_ELEM, errno_mod.ENOENT): "no such key (BPF_EXIST)",
    (Cmd.MAP_UPDATE_ELEM, errno_mod.E2BIG): "map is full (max_entries reached) or index out of range",
    (Cmd.MAP_UPDATE_ELEM, errno_mod.EINVAL): "invalid key, value or flags for this map type",
    (Cmd.MAP_UPDATE_ELEM, errno_mod.EPERM): "map is frozen or read-only, or need root / CAP_BPF",
    (Cmd.MAP_UPDATE_BATCH, errno_mod.E2BIG): "map is full (max_entries reached)",
    (Cmd.MAP_LOOKUP_BATCH, errno_mod.ENOENT): "no more entries",
    (Cmd.MAP_LOOKUP_BATCH, errno_mod.ENOSPC): "batch buffer too small for one bucket",
    (Cmd.MAP_LOOKUP_AND_DELETE_BATCH, errno_mod.ENOENT): "no more entries",
    (Cmd.MAP_FREEZE, errno_mod.EBUSY): "map is already frozen or writably mmapped",
    (Cmd.PROG_LOAD, errno_mod.EACCES): "the verifier rejected the program",
    (Cmd.PROG_LOAD, errno_mod.EINVAL): "the verifier rejected the program or its attributes",
    (Cmd.PROG_LOAD, errno_mod.ENOSPC): "verifier log buffer too small",
    (Cmd.PROG_LOAD, errno_mod.EFAULT): "the verifier gave up on the program (see its log)",
    (Cmd.PROG_LOAD, errno_mod.E2BIG): "program too large, or an attribute this kernel does not know",
    (Cmd.OBJ_PIN, errno_mod.EEXIST): "pin path already exists",
    (Cmd.OBJ_PIN, errno_mod.ENOENT): "pin directory does not exist (is bpffs mounted at /sys/fs/bpf?)",
    (Cmd.OBJ_PIN, errno_mod.EPERM): "pin path is not on a bpffs mount, or need root",
    (Cmd.OBJ_GET, errno_mod.ENOENT): "no such pinned object",
    (Cmd.OBJ_GET, errno_mod.EPERM): "path is not a pinned BPF object on bpffs, or need root",
    (Cmd.OBJ_GET, errno_mod.EINVAL): "path is not a pinned BPF object",
    (Cmd.PROG_TEST_RUN, errno_mod.ENOSPC): "output buffer too small",
    (Cmd.PROG_TEST_RUN, errno_mod.EINVAL): "invalid test input (packet too short/long, ctx or flags invalid)",
    (Cmd.PROG_TEST_RUN, ENOTSUPP): "BPF_PROG_TEST_RUN is not supported for this program type",
    (Cmd.BTF_LOAD, errno_mod.EINVAL): "the kernel rejected the BTF blob (see its log)",
    (Cmd.BTF_LOAD, errno_mod.ENOSPC): "BTF log buffer too small",
    (Cmd.BTF_LOAD, errno_mod.E2BIG): "BTF blob too large",
    (Cmd.BTF_GET_FD_BY_ID, errno_mod.ENOENT): "no BTF object with this id",
    (Cmd.PROG_GET_NEXT_ID, errno_mod.ENOENT): "no more ids",
    (Cmd.MAP_GET_NEXT_ID, errno_mod.ENOENT): "no more ids",
    (Cmd.LINK_GET_NEXT_ID, errno_mod.ENOENT): "no more ids",
    (Cmd.PROG_GET_FD_BY_ID, errno_mod.ENOENT): "no program with this id",
    (Cmd.MAP_GET_FD_BY_ID, errno_mod.ENOENT): "no map with this id",
    (Cmd.LINK_GET_FD_BY_ID, errno_mod.ENOENT): "no link with this id",
    (Cmd.LINK_CREATE, errno_mod.EBUSY): "the hook already has a program attached (detach it or use replace)",
    (Cmd.LINK_CREATE, errno_mod.EEXIST): "the hook already has a program attached (detach it or use replace)",
    (Cmd.LINK_CREATE, errno_mod.EINVAL): "invalid target, attach type or flags for this program",
    (Cmd.LINK_CREATE, errno_mod.ENODEV): "no such interface",
    (Cmd.LINK_UPDATE, errno_mod.EPERM): "the link's current program is not old_prog_fd, or need root",
    (Cmd.LINK_UPDATE, errno_mod.ENOLINK): "the link is detached",
    (Cmd.LINK_DETACH, errno_mod.ENOLINK): "the link is already detached",
    (Cmd.LINK_DETACH, errno_mod.EOPNOTSUPP): "this link type cannot be detached",
}


def errno_name(err: int) -> str:
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return errno_mod.errorcode.get(err, f"errno {err}")


class BPFError(OSError):
    """A failed bpf() command: ``command``, ``errno``, ``errno_name`` and a hint.

    Subclasses mix in the matching builtin (``FileNotFoundError`` for ENOENT,
    ``PermissionError`` for EPERM/EACCES, ``FileExistsError`` for EEXIST) so
    callers can catch either.
    """

    command: Cmd | None
    hint: str
    log: str

    def __init__(self, command: Cmd | None, err: int, hint: str | None = None, *, log: str = ""):
        strerror = os.strerror(err) if err != ENOTSUPP else "Operation not supported"
        super().__init__(err, strerror)
        self.command = command
        self.errno_name = errno_name(err)
        self.hint = hint if hint is not None else _HINTS.get((command, err), _HINTS.get((None, err), ""))
        self.log = log

    def __str__(self) -> str:
        cmd = f"BPF_{self.command.name}" if self.command is not None else "bpf()"
        text = f"{cmd} failed: {self.errno_name} ({self.strerror.lower()})"
        return f"{text}: {self.hint}" if self.hint else text

    def __reduce__(self):  # keep pickling (multiprocessing) working
        return (_rebuild_error, (self.command, self.errno, self.hint, self.log))


def _rebuild_error(command: Cmd | None, err: int, hint: str, log: str) -> BPFError:
    return bpf_error(command, err, hint, log=log)


_ERROR_CLASSES: dict[int, type[BPFError]] = {}
_BUILTIN_BY_ERRNO: dict[int, type[OSError]] = {
    errno_mod.ENOENT: FileNotFoundError,
    errno_mod.EPERM: PermissionError,
    errno_mod.EACCES: PermissionError,
    errno_mod.EEXIST: FileExistsError,
}


def bpf_error(command: Cmd | None, err: int, hint: str | None = None, *, log: str = "") -> BPFError:
    """Build the BPFError (subclass) for ``err``."""
    builtin = _BUILTIN_BY_ERRNO.get(err)
    if builtin is None:
        return BPFError(command, err, hint, log=log)
    cls = _ERROR_CLASSES.get(err)
    if cls is None:
        cls = type(f"BPFError_{errno_name(err)}", (BPFError, builtin), {"__module__": __name__})
        _ERROR_CLASSES[err] = cls
    return cls(command, err, hint, log=log)


def bpf(cmd: Cmd | int, attr: ctypes.Structure) -> int:
    """Raw bpf(cmd, &attr, sizeof(attr)); returns the result or raises BPFError."""
    command = Cmd(cmd)
    ret = _libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_int(command), ctypes.byref(attr),
                        ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        raise bpf_error(command, ctypes.get_errno())
    return ret


# --------------------------------------------------------------------------
# File descriptors.
# --------------------------------------------------------------------------


class Fd:
    """An owned file descriptor of a BPF object.

    Int-like (``int(fd)``, ``operator.index``) so it can go anywhere an fd
    number goes; ``close()`` or ``with`` releases it, and the garbage collector
    closes a forgotten one as a last resort.  Using a closed Fd raises instead
    of silently reaching whatever object reused the number.
    """

    __slots__ = ("_fd", "__weakref__")

    def __init__(self, fd: int):
        if fd < 0:
            raise ValueError(f"invalid fd {fd}")
        self._fd: int | None = fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("operation on a closed BPF fd")
        return self._fd

    __int__ = fileno
    __index__ = fileno

    def close(self, _os_close: Any = os.close) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _os_close(fd)
            except OSError:
                pass

    def detach(self) -> int:
        """Give up ownership: return the number, never close it."""
        fd = self.fileno()
        self._fd = None
        return fd

    def __reduce__(self) -> Any:
        raise TypeError("a BPF fd cannot be pickled: pin the object or pass its id instead")

    def dup(self) -> Fd:
        return Fd(os.dup(self.fileno()))

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Fd):
            return self._fd is not None and self._fd == other._fd
        if isinstance(other, int):
            return self._fd == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._fd)

    def __repr__(self) -> str:
        return f"Fd({self._fd})" if self._fd is not None else "Fd(closed)"


def _fd_number(fd: int | Fd | None) -> int:
    if fd is None:
        return 0
    return int(fd)


# --------------------------------------------------------------------------
# Buffer helpers.
# --------------------------------------------------------------------------


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _in_buffer(data: bytes | bytearray | memoryview) -> ctypes.Array:
    """A C buffer holding ``data`` (kept alive by the caller while the syscall runs)."""
    n = len(data)
    buf = (ctypes.c_char * max(n, 1))()
    if n:
        ctypes.memmove(buf, bytes(data), n)
    return buf


def _name_bytes(name: str) -> bytes:
    raw = name.encode()
    if len(raw) >= BPF_OBJ_NAME_LEN:
        raw = raw[:BPF_OBJ_NAME_LEN - 1]
    return raw


# --------------------------------------------------------------------------
# Maps.
# --------------------------------------------------------------------------


def map_create(map_type: MapType | int | str, key_size: int, value_size: int, max_entries: int, *,
               flags: int = 0, inner_map_fd: int | Fd | None = None, numa_node: int = 0, name: str = "",
               ifindex: int = 0, btf_fd: int = 0, btf_key_type_id: int = 0, btf_value_type_id: int = 0,
               btf_vmlinux_value_type_id: int = 0, map_extra: int = 0) -> Fd:
    attr = MapCreateAttr(
        map_type=MapType.parse(map_type) if isinstance(map_type, str) else int(map_type),
        key_size=key_size, value_size=value_size, max_entries=max_entries, map_flags=int(flags),
        inner_map_fd=_fd_number(inner_map_fd), numa_node=numa_node, map_name=_name_bytes(name),
        map_ifindex=ifindex, btf_fd=btf_fd, btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id, btf_vmlinux_value_type_id=btf_vmlinux_value_type_id,
        map_extra=map_extra,
    )
    return Fd(bpf(Cmd.MAP_CREATE, attr))


def map_lookup_elem(map_fd: int | Fd, key: bytes, value_size: int, flags: int = 0) -> bytes:
    """The value stored under ``key`` (raises BPFError/FileNotFoundError when absent)."""
    kbuf, vbuf = _in_buffer(key), (ctypes.c_char * max(value_size, 1))()
    bpf(Cmd.MAP_LOOKUP_ELEM, MapElemAttr(map_fd=int(map_fd), key=_addr(kbuf), value=_addr(vbuf), flags=flags))
    return vbuf.raw[:value_size]


def map_lookup_and_delete_elem(map_fd: int | Fd, key: bytes | None, value_size: int, flags: int = 0) -> bytes:
    """Pop: for hash maps the value under ``key``; for queue/stack maps ``key`` is None."""
    kbuf = _in_buffer(key) if key is not None else None
    vbuf = (ctypes.c_char * max(value_size, 1))()
    bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM,
        MapElemAttr(map_fd=int(map_fd), key=_addr(kbuf), value=_addr(vbuf), flags=flags))
    return vbuf.raw[:value_size]


def map_update_elem(map_fd: int | Fd, key: bytes | None, value: bytes, flags: int = 0) -> None:
    kbuf = _in_buffer(key) if key is not None else None
    vbuf = _in_buffer(value)
    bpf(Cmd.MAP_UPDATE_ELEM, MapElemAttr(map_fd=int(map_fd), key=_addr(kbuf), value=_addr(vbuf), flags=flags))


def map_delete_elem(map_fd: int | Fd, key: bytes) -> None:
    kbuf = _in_buffer(key)
    bpf(Cmd.MAP_DELETE_ELEM, MapElemAttr(map_fd=int(map_fd), key=_addr(kbuf)))


def map_get_next_key(map_fd: int | Fd, key: bytes | None, key_size: int) -> bytes | None:
    """The key after ``key`` (the first key when ``key`` is None); None at the end."""
    kbuf = _in_buffer(key) if key is not None else None
    nbuf = (ctypes.c_char * max(key_size, 1))()
    try:
        bpf(Cmd.MAP_GET_NEXT_KEY, MapElemAttr(map_fd=int(map_fd), key=_addr(kbuf), value=_addr(nbuf)))
    except BPFError as exc:
        if exc.errno == errno_mod.ENOENT:
            return None
        raise
    return nbuf.raw[:key_size]


def map_freeze(map_fd: int | Fd) -> None:
    bpf(Cmd.MAP_FREEZE, MapElemAttr(map_fd=int(map_fd)))


@dataclass
class BatchResult:
    """One MAP_LOOKUP[_AND_DELETE]_BATCH step: ``keys``/``values`` as raw bytes each.

    ``next_batch`` is the opaque token to pass as ``in_batch`` for the next step,
    or None when the map has been walked to the end.
    """

    keys: list[bytes]
    values: list[bytes]
    next_batch: bytes | None


def batch_token_size(key_size: int) -> int:
    """Size of the in/out batch token: a u32 bucket for hash maps, a key for arrays."""
    return max(key_size, 8)


def map_lookup_batch(map_fd: int | Fd, in_batch: bytes | None, key_size: int, value_size: int, count: int, *,
                     delete: bool = False, elem_flags: int = 0) -> BatchResult:
    """Read up to ``count`` entries starting at ``in_batch`` (None = from the start).

    ``value_size`` is the per-element value size as user space sees it (for per-CPU
    maps: round_up(value_size, 8) * possible CPUs).
    """
    tsize = batch_token_size(key_size)
    inbuf = _in_buffer(in_batch.ljust(tsize, b"\0")) if in_batch is not None else None
    outbuf = (ctypes.c_char * tsize)()
    keys = (ctypes.c_char * (key_size * count))()
    values = (ctypes.c_char * max(value_size * count, 1))()
    attr = MapBatchAttr(in_batch=_addr(inbuf), out_batch=_addr(outbuf), keys=_addr(keys), values=_addr(values),
                        count=count, map_fd=int(map_fd), elem_flags=elem_flags)
    cmd = Cmd.MAP_LOOKUP_AND_DELETE_BATCH if delete else Cmd.MAP_LOOKUP_BATCH
    done = False
    try:
        bpf(cmd, attr)
    except BPFError as exc:
        if exc.errno != errno_mod.ENOENT:
            raise
        done = True
    n = attr.count
    kraw, vraw = keys.raw, values.raw
    return BatchResult(
        [kraw[i * key_size:(i + 1) * key_size] for i in range(n)],
        [vraw[i * value_size:(i + 1) * value_size] for i in range(n)],
        None if done else outbuf.raw,
    )


def map_update_batch(map_fd: int | Fd, keys: Iterable[bytes], values: Iterable[bytes], *,
                     elem_flags: int = 0) -> int:
    """Write many entries in one call; returns how many the kernel wrote."""
    klist, vlist = list(keys), list(values)
    if len(klist) != len(vlist):
        raise ValueError("map_update_batch: keys and values differ in length")
    kbuf, vbuf = _in_buffer(b"".join(klist)), _in_buffer(b"".join(vlist))
    attr = MapBatchAttr(keys=_addr(kbuf), values=_addr(vbuf), count=len(klist), map_fd=int(map_fd),
                        elem_flags=elem_flags)
    bpf(Cmd.MAP_UPDATE_BATCH, attr)
    return attr.count


def map_delete_batch(map_fd: int | Fd, keys: Iterable[bytes], *, elem_flags: int = 0) -> int:
    klist = list(keys)
    kbuf = _in_buffer(b"".join(klist))
    attr = MapBatchAttr(keys=_addr(kbuf), count=len(klist), map_fd=int(map_fd), elem_flags=elem_flags)
    bpf(Cmd.MAP_DELETE_BATCH, attr)
    return attr.count


# --------------------------------------------------------------------------
# Pinning.
# --------------------------------------------------------------------------


def obj_pin(fd: int | Fd, path: str | os.PathLike[str]) -> None:
    pbuf = _in_buffer(os.fsencode(path) + b"\0")
    bpf(Cmd.OBJ_PIN, ObjAttr(pathname=_addr(pbuf), bpf_fd=int(fd)))


def obj_get(path: str | os.PathLike[str], *, flags: int = 0) -> Fd:
    """Open a pinned object; ``flags`` may be BPF_F_RDONLY / BPF_F_WRONLY."""
    pbuf = _in_buffer(os.fsencode(path) + b"\0")
    try:
        return Fd(bpf(Cmd.OBJ_GET, ObjAttr(pathname=_addr(pbuf), file_flags=flags)))
    except BPFError as exc:
        raise bpf_error(exc.command, exc.errno, f"{exc.hint}: {os.fspath(path)}" if exc.hint else None) from None


# --------------------------------------------------------------------------
# Programs.
# --------------------------------------------------------------------------


@dataclass
class LoadResult:
    fd: Fd
    log: str


def prog_load(prog_type: ProgType | int | str, insns: bytes, license: str = "GPL", *, name: str = "",
              log_level: int = 0, log_size: int = 0, prog_flags: int = 0, kern_version: int = 0,
              ifindex: int = 0, expected_attach_type: AttachType | int | None = None, prog_btf_fd: int = 0,
              attach_btf_id: int = 0, attach_prog_fd: int = 0,
              func_info: bytes = b"", func_info_rec_size: int = 8,
              line_info: bytes = b"", line_info_rec_size: int = 16,
              fd_array: Iterable[int] | None = None) -> LoadResult:
    """BPF_PROG_LOAD of raw bytecode. With ``log_size`` the verifier log is returned
    (on success) or attached to the BPFError as ``.log`` (on failure), with
    ``.log_true_size`` telling how big a buffer the whole log needs."""
    if len(insns) % 8:
        raise ValueError("instruction bytes must be a multiple of 8")
    ibuf = _in_buffer(insns)
    lic = _in_buffer(license.encode() + b"\0")
    logbuf = (ctypes.c_char * log_size)() if log_size else None
    fi = _in_buffer(func_info) if func_info else None
    li = _in_buffer(line_info) if line_info else None
    fds = list(fd_array or ())
    fdarr = (ctypes.c_int32 * len(fds))(*fds) if fds else None
    attr = ProgLoadAttr(
        prog_type=ProgType.parse(prog_type) if isinstance(prog_type, str) else int(prog_type),
        insn_cnt=len(insns) // 8, insns=_addr(ibuf), license=_addr(lic),
        log_level=log_level if log_size else 0, log_size=log_size, log_buf=_addr(logbuf),
        kern_version=kern_version, prog_flags=int(prog_flags), prog_name=_name_bytes(name),
        prog_ifindex=ifindex, expected_attach_type=int(expected_attach_type or 0), prog_btf_fd=prog_btf_fd,
        func_info_rec_size=func_info_rec_size if fi else 0, func_info=_addr(fi),
        func_info_cnt=len(func_info) // func_info_rec_size if fi else 0,
        line_info_rec_size=line_info_rec_size if li else 0, line_info=_addr(li),
        line_info_cnt=len(line_info) // line_info_rec_size if li else 0,
        attach_btf_id=attach_btf_id, attach_prog_fd=attach_prog_fd, fd_array=_addr(fdarr),
    )
    try:
        fd = bpf(Cmd.PROG_LOAD, attr)
    except BPFError as exc:
        exc.log = _log_text(logbuf)
        exc.log_true_size = attr.log_true_size  # type: ignore[attr-defined]
        raise
    return LoadResult(Fd(fd), _log_text(logbuf))


def btf_load(data: bytes, *, log_level: int = 0, log_size: int = 0) -> LoadResult:
    """BPF_BTF_LOAD of a raw BTF blob. With ``log_size`` the BTF verifier's log is
    returned (on success) or attached to the BPFError as ``.log`` (on failure),
    with ``.log_true_size`` telling how big a buffer the whole log needs."""
    buf = _in_buffer(data)
    logbuf = (ctypes.c_char * log_size)() if log_size else None
    attr = BtfLoadAttr(btf=_addr(buf), btf_size=len(data), btf_log_buf=_addr(logbuf), btf_log_size=log_size,
                       btf_log_level=log_level if log_size else 0)
    try:
        fd = bpf(Cmd.BTF_LOAD, attr)
    except BPFError as exc:
        exc.log = _log_text(logbuf)
        exc.log_true_size = attr.btf_log_true_size  # type: ignore[attr-defined]
        raise
    return LoadResult(Fd(fd), _log_text(logbuf))


def btf_get_fd_by_id(btf_id: int) -> Fd:
    return Fd(bpf(Cmd.BTF_GET_FD_BY_ID, BtfGetFdAttr(btf_id=btf_id)))


def btf_get_info(fd: int | Fd, *, data: bool = True) -> tuple[BtfInfoStruct, bytes, str]:
    """bpf_btf_info of a BTF object: (info, raw BTF blob if ``data``, name)."""
    first = obj_get_info_by_fd(fd, BtfInfoStruct())
    second = BtfInfoStruct()
    blob = (ctypes.c_char * max(first.btf_size, 1))() if data else None
    name = (ctypes.c_char * max(first.name_len + 1, 1))()
    second.btf, second.btf_size = _addr(blob), first.btf_size if data else 0
    second.name, second.name_len = _addr(name), first.name_len + 1
    obj_get_info_by_fd(fd, second)
    raw = blob.raw[:second.btf_size] if blob is not None else b""
    return second, raw, name.value.decode(errors="replace")


def _log_text(buf: ctypes.Array | None) -> str:
    if buf is None:
        return ""
    return buf.raw.split(b"\0", 1)[0].decode(errors="replace")


@dataclass
class TestRunResult:
    __test__ = False
    retval: int
    data: bytes
    ctx: bytes
    duration_ns: int

    @property
    def ctx_out(self) -> bytes:
        return self.ctx


def prog_test_run(prog_fd: int | Fd, data: bytes | None = None, *, data_size_out: int | None = None,
                  ctx: bytes | None = None, ctx_size_out: int = 0, repeat: int = 1, flags: int = 0,
                  cpu: int = 0, batch_size: int = 0) -> TestRunResult:
    """BPF_PROG_TEST_RUN (a.k.a. BPF_PROG_RUN).

    ``data_size_out`` defaults to room for the input plus 512 bytes, and at least a
    page (XDP programs may grow the packet with bpf_xdp_adjust_head/tail; a too
    small buffer makes the kernel fail with ENOSPC after running the program).
    With XDP live frames (flags=XDP_LIVE_FRAMES) no output buffer is passed.
    """
    live = bool(flags & TestRunFlags.XDP_LIVE_FRAMES)
    din = _in_buffer(data) if data is not None else None
    if data_size_out is None:
        data_size_out = 0 if live or data is None else max(len(data) + 512, 4096)
    dout = (ctypes.c_char * data_size_out)() if data_size_out else None
    cin = _in_buffer(ctx) if ctx is not None else None
    if ctx is not None and not ctx_size_out and not live:
        ctx_size_out = len(ctx)
    cout = (ctypes.c_char * ctx_size_out)() if ctx_size_out else None
    attr = TestRunAttr(
        prog_fd=int(prog_fd), data_size_in=len(data) if data is not None else 0, data_size_out=data_size_out,
        data_in=_addr(din), data_out=_addr(dout), repeat=repeat, ctx_size_in=len(ctx) if ctx is not None else 0,
        ctx_size_out=ctx_size_out, ctx_in=_addr(cin), ctx_out=_addr(cout), flags=int(flags), cpu=cpu,
        batch_size=batch_size,
    )
    bpf(Cmd.PROG_TEST_RUN, attr)
    out = dout.raw[:attr.data_size_out] if dout is not None else b""
    cout_b = cout.raw[:attr.ctx_size_out] if cout is not None else b""
    return TestRunResult(attr.retval, out, cout_b, attr.duration)


def prog_attach(prog_fd: int | Fd, target_fd: int | Fd, attach_type: AttachType | int, *, flags: int = 0,
                replace_prog_fd: int | Fd | None = None) -> None:
    bpf(Cmd.PROG_ATTACH, ProgAttachAttr(target_fd=int(target_fd), attach_bpf_fd=int(prog_fd),
                                        attach_type=int(attach_type), attach_flags=flags,
                                        replace_bpf_fd=_fd_number(replace_prog_fd)))


def prog_detach(target_fd: int | Fd, attach_type: AttachType | int, prog_fd: int | Fd | None = None) -> None:
    bpf(Cmd.PROG_DETACH, ProgAttachAttr(target_fd=int(target_fd), attach_bpf_fd=_fd_number(prog_fd),
                                        attach_type=int(attach_type)))


def prog_bind_map(prog_fd: int | Fd, map_fd: int | Fd) -> None:
    """Keep ``map`` alive as long as the program, without the program referencing it."""
    bpf(Cmd.PROG_BIND_MAP, ProgBindMapAttr(prog_fd=int(prog_fd), map_fd=int(map_fd)))


# --------------------------------------------------------------------------
# Ids and fds by id.
# --------------------------------------------------------------------------


def _next_id(cmd: Cmd, start: int) -> int | None:
    attr = GetIdAttr(start_id=start)
    try:
        bpf(cmd, attr)
    except BPFError as exc:
        if exc.errno == errno_mod.ENOENT:
            return None
        raise
    return attr.next_id


def prog_get_next_id(start: int = 0) -> int | None:
    return _next_id(Cmd.PROG_GET_NEXT_ID, start)


def map_get_next_id(start: int = 0) -> int | None:
    return _next_id(Cmd.MAP_GET_NEXT_ID, start)


def link_get_next_id(start: int = 0) -> int | None:
    return _next_id(Cmd.LINK_GET_NEXT_ID, start)


def _iter_ids(cmd: Cmd) -> list[int]:
    ids, cur = [], 0
    while (nxt := _next_id(cmd, cur)) is not None:
        ids.append(nxt)
        cur = nxt
    return ids


def prog_ids() -> list[int]:
    """Ids of all loaded programs (PROG_GET_NEXT_ID walk)."""
    return _iter_ids(Cmd.PROG_GET_NEXT_ID)


def map_ids() -> list[int]:
    return _iter_ids(Cmd.MAP_GET_NEXT_ID)


def link_ids() -> list[int]:
    return _iter_ids(Cmd.LINK_GET_NEXT_ID)


def _fd_by_id(cmd: Cmd, obj_id: int, open_flags: int = 0) -> Fd:
    try:
        return Fd(bpf(cmd, GetIdAttr(start_id=obj_id, open_flags=open_flags)))
    except BPFError as exc:
        if exc.errno == errno_mod.ENOENT:
            raise bpf_error(cmd, exc.errno, f"{exc.hint} ({obj_id})") from None
        raise


def prog_get_fd_by_id(prog_id: int) -> Fd:
    return _fd_by_id(Cmd.PROG_GET_FD_BY_ID, prog_id)


def map_get_fd_by_id(map_id: int, open_flags: int = 0) -> Fd:
    return _fd_by_id(Cmd.MAP_GET_FD_BY_ID, map_id, open_flags)


def link_get_fd_by_id(link_id: int) -> Fd:
    return _fd_by_id(Cmd.LINK_GET_FD_BY_ID, link_id)


# --------------------------------------------------------------------------
# Object info.
# --------------------------------------------------------------------------

_S = TypeVar("_S", bound=ctypes.Structure)


def obj_get_info_by_fd(fd: int | Fd, info: _S) -> _S:
    """Fill ``info`` (a ProgInfoStruct / MapInfoStruct / LinkInfoStruct) in place."""
    attr = InfoAttr(bpf_fd=int(fd), info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    return info


@dataclass
class ProgInfo:
    """bpf_prog_info with its variable arrays fetched (as bpftool does, in a second call)."""

    type: ProgType | int
    id: int
    tag: bytes
    name: str
    load_time: int  # ns since boot
    created_by_uid: int
    gpl_compatible: bool
    ifindex: int
    netns_dev: int
    netns_ino: int
    btf_id: int
    run_time_ns: int
    run_cnt: int
    recursion_misses: int
    verified_insns: int
    attach_btf_obj_id: int
    attach_btf_id: int
    jited_prog_len: int
    xlated_prog_len: int
    map_ids: list[int] = field(default_factory=list)
    xlated: bytes = b""
    jited: bytes = b""
    jited_ksyms: list[int] = field(default_factory=list)
    jited_func_lens: list[int] = field(default_factory=list)
    prog_tags: list[bytes] = field(default_factory=list)
    func_info: list[tuple[int, int]] = field(default_factory=list)  # (insn_off, btf type_id)

    @property
    def tag_hex(self) -> str:
        return self.tag.hex()


def _enum_or_int(enum: type[_E], value: int) -> _E | int:
    try:
        return enum(value)
    except ValueError:
        return value


def prog_get_info(fd: int | Fd, *, arrays: bool = True) -> ProgInfo:
    """Program info; with ``arrays`` also xlated/jited images, map ids, ksyms, tags, func info."""
    first = obj_get_info_by_fd(fd, ProgInfoStruct())
    info = ProgInfo(
        type=_enum_or_int(ProgType, first.type), id=first.id, tag=bytes(first.tag),
        name=first.name.decode(errors="replace"), load_time=first.load_time, created_by_uid=first.created_by_uid,
        gpl_compatible=bool(first.gpl_compatible), ifindex=first.ifindex, netns_dev=first.netns_dev,
        netns_ino=first.netns_ino, btf_id=first.btf_id, run_time_ns=first.run_time_ns, run_cnt=first.run_cnt,
        recursion_misses=first.recursion_misses, verified_insns=first.verified_insns,
        attach_btf_obj_id=first.attach_btf_obj_id, attach_btf_id=first.attach_btf_id,
        jited_prog_len=first.jited_prog_len, xlated_prog_len=first.xlated_prog_len,
    )
    if not arrays:
        return info
    second = ProgInfoStruct()
    bufs: dict[str, ctypes.Array] = {}

    def want(ptr_field: str, len_field: str, n: int, ctype: type) -> None:
        if n <= 0:
            return
        buf = (ctype * n)()
        bufs[ptr_field] = buf
        setattr(second, ptr_field, ctypes.addressof(buf))
        setattr(second, len_field, n)

    want("xlated_prog_insns", "xlated_prog_len", first.xlated_prog_len, ctypes.c_char)
    want("jited_prog_insns", "jited_prog_len", first.jited_prog_len, ctypes.c_char)
    want("map_ids", "nr_map_ids", first.nr_map_ids, u32)
    want("jited_ksyms", "nr_jited_ksyms", first.nr_jited_ksyms, u64)
    want("jited_func_lens", "nr_jited_func_lens", first.nr_jited_func_lens, u32)
    want("prog_tags", "nr_prog_tags", first.nr_prog_tags, u8 * BPF_TAG_SIZE)
    if first.nr_func_info and first.func_info_rec_size:
        want("func_info", "nr_func_info", first.nr_func_info, u32 * (first.func_info_rec_size // 4))
        second.func_info_rec_size = first.func_info_rec_size
    if bufs:
        obj_get_info_by_fd(fd, second)
    if "xlated_prog_insns" in bufs:
        info.xlated = bufs["xlated_prog_insns"].raw[:second.xlated_prog_len]
    if "jited_prog_insns" in bufs:
        info.jited = bufs["jited_prog_insns"].raw[:second.jited_prog_len]
    if "map_ids" in bufs:
        info.map_ids = list(bufs["map_ids"])[:second.nr_map_ids]
    if "jited_ksyms" in bufs:
        info.jited_ksyms = list(bufs["jited_ksyms"])[:second.nr_jited_ksyms]
    if "jited_func_lens" in bufs:
        info.jited_func_lens = list(bufs["jited_func_lens"])[:second.nr_jited_func_lens]
    if "prog_tags" in bufs:
        info.prog_tags = [bytes(t) for t in bufs["prog_tags"]][:second.nr_prog_tags]
    if "func_info" in bufs:
        info.func_info = [(rec[0], rec[1]) for rec in bufs["func_info"]][:second.nr_func_info]
    return info


@dataclass
class MapInfo:
    type: MapType | int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str
    ifindex: int
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    btf_vmlinux_value_type_id: int
    netns_dev: int
    netns_ino: int
    map_extra: int


def map_get_info(fd: int | Fd) -> MapInfo:
    s = obj_get_info_by_fd(fd, MapInfoStruct())
    return MapInfo(
        type=_enum_or_int(MapType, s.type), id=s.id, key_size=s.key_size, value_size=s.value_size,
        max_entries=s.max_entries, map_flags=s.map_flags, name=s.name.decode(errors="replace"),
        ifindex=s.ifindex, btf_id=s.btf_id, btf_key_type_id=s.btf_key_type_id,
        btf_value_type_id=s.btf_value_type_id, btf_vmlinux_value_type_id=s.btf_vmlinux_value_type_id,
        netns_dev=s.netns_dev, netns_ino=s.netns_ino, map_extra=s.map_extra,
    )


@dataclass
class LinkInfo:
    """bpf_link_info: ``ifindex`` for XDP / TCX / netkit links, ``attach_type`` where the kernel reports one."""

    type: LinkType | int
    id: int
    prog_id: int
    ifindex: int | None = None
    attach_type: AttachType | int | None = None
    raw: bytes = b""  # the per-type union, for link types not decoded here


def link_get_info(fd: int | Fd) -> LinkInfo:
    s = obj_get_info_by_fd(fd, LinkInfoStruct())
    info = LinkInfo(type=_enum_or_int(LinkType, s.type), id=s.id, prog_id=s.prog_id, raw=bytes(s.union))
    if s.type == LinkType.XDP:
        info.ifindex = s.union_u32(0)
        info.attach_type = AttachType.XDP
    elif s.type in (LinkType.TCX, LinkType.NETKIT):
        info.ifindex = s.union_u32(0)
        info.attach_type = _enum_or_int(AttachType, s.union_u32(1))
    elif s.type == LinkType.NETNS:
        info.attach_type = _enum_or_int(AttachType, s.union_u32(1))
    elif s.type == LinkType.CGROUP:
        info.attach_type = _enum_or_int(AttachType, s.union_u32(2))
    elif s.type == LinkType.TRACING:
        info.attach_type = _enum_or_int(AttachType, s.union_u32(0))
    return info


def obj_type_of_fd(fd: int | Fd) -> str:
    """'prog', 'map' or 'link': what a BPF fd (e.g. from obj_get) refers to, per /proc/self/fdinfo."""
    try:
        target = os.readlink(f"/proc/self/fd/{int(fd)}")
    except OSError:
        target = ""
    for kind in ("prog", "map", "link"):
        if target == f"anon_inode:bpf-{kind}":
            return kind
    return "unknown"


# --------------------------------------------------------------------------
# Links and stats.
# --------------------------------------------------------------------------


def link_create(prog_fd: int | Fd, target: int | Fd, attach_type: AttachType | int | str, *, flags: int = 0,
                target_btf_id: int = 0) -> Fd:
    """BPF_LINK_CREATE. For XDP, ``target`` is the ifindex and ``flags`` the XDP mode
    (XdpFlags.SKB_MODE / DRV_MODE / HW_MODE, 0 = let the kernel choose)."""
    at = AttachType.parse(attach_type) if isinstance(attach_type, str) else int(attach_type)
    attr = LinkCreateAttr(prog_fd=int(prog_fd), target_fd=int(target), attach_type=at, flags=int(flags),
                          target_btf_id=target_btf_id)
    return Fd(bpf(Cmd.LINK_CREATE, attr))


def link_update(link_fd: int | Fd, new_prog_fd: int | Fd, *, old_prog_fd: int | Fd | None = None,
                flags: int = 0) -> None:
    """Atomically swap the link's program; with ``old_prog_fd`` only if it is still the current one."""
    if old_prog_fd is not None:
        flags |= AttachFlags.REPLACE
    bpf(Cmd.LINK_UPDATE, LinkUpdateAttr(link_fd=int(link_fd), new_prog_fd=int(new_prog_fd), flags=int(flags),
                                        old_prog_fd=_fd_number(old_prog_fd)))


def link_detach(link_fd: int | Fd) -> None:
    """Detach the program from its hook; the link object stays (defunct) until its last fd/pin goes."""
    bpf(Cmd.LINK_DETACH, LinkDetachAttr(link_fd=int(link_fd)))


def enable_stats(stats_type: StatsType | int = StatsType.RUN_TIME) -> Fd:
    """Turn on run_time_ns / run_cnt accounting for as long as the returned fd is open."""
    return Fd(bpf(Cmd.ENABLE_STATS, EnableStatsAttr(type=int(stats_type))))


# --------------------------------------------------------------------------
# Misc.
# --------------------------------------------------------------------------


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU map values have one slot each), from sysfs."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


# Short aliases (read like bpftool's "prog show" / "map show").
prog_info = prog_get_info
map_info = map_get_info
link_info = link_get_info
