"""bpf() through ctypes: attr layouts match the uapi, errors read well, fds close, ids/info/links/stats work."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys

import pytest

from pybpfasm import isa, syscall
from pybpfasm.syscall import AttachType, BPFError, Cmd, Fd, LinkType, MapType, ProgType

# Offsets from offsetof() on include/uapi/linux/bpf.h (libbpf mirror, 2026), checked with clang once.
UAPI_OFFSETS = {
    "MapCreateAttr": "map_type=0 key_size=4 value_size=8 max_entries=12 map_flags=16 inner_map_fd=20 numa_node=24 map_name=28 map_ifindex=44 btf_fd=48 btf_key_type_id=52 btf_value_type_id=56 btf_vmlinux_value_type_id=60 map_extra=64 value_type_btf_obj_fd=72 map_token_fd=76",
    "MapElemAttr": "map_fd=0 key=8 value=16 flags=24",
    "MapBatchAttr": "in_batch=0 out_batch=8 keys=16 values=24 count=32 map_fd=36 elem_flags=40 flags=48",
    "ProgLoadAttr": "prog_type=0 insn_cnt=4 insns=8 license=16 log_level=24 log_size=28 log_buf=32 kern_version=40 prog_flags=44 prog_name=48 prog_ifindex=64 expected_attach_type=68 prog_btf_fd=72 func_info_rec_size=76 func_info=80 func_info_cnt=88 line_info_rec_size=92 line_info=96 line_info_cnt=104 attach_btf_id=108 attach_prog_fd=112 core_relo_cnt=116 fd_array=120 core_relos=128 core_relo_rec_size=136 log_true_size=140",
    "ObjAttr": "pathname=0 bpf_fd=8 file_flags=12",
    "ProgAttachAttr": "target_fd=0 attach_bpf_fd=4 attach_type=8 attach_flags=12 replace_bpf_fd=16",
    "TestRunAttr": "prog_fd=0 retval=4 data_size_in=8 data_size_out=12 data_in=16 data_out=24 repeat=32 duration=36 ctx_size_in=40 ctx_size_out=44 ctx_in=48 ctx_out=56 flags=64 cpu=68 batch_size=72",
    "GetIdAttr": "start_id=0 next_id=4 open_flags=8",
    "InfoAttr": "bpf_fd=0 info_len=4 info=8",
    "LinkCreateAttr": "prog_fd=0 target_fd=4 attach_type=8 flags=12 target_btf_id=16",
    "LinkUpdateAttr": "link_fd=0 new_prog_fd=4 flags=8 old_prog_fd=12",
    "LinkDetachAttr": "link_fd=0",
    "EnableStatsAttr": "type=0",
    "ProgBindMapAttr": "prog_fd=0 map_fd=4 flags=8",
    "ProgInfoStruct": "type=0 id=4 tag=8 jited_prog_len=16 xlated_prog_len=20 jited_prog_insns=24 xlated_prog_insns=32 load_time=40 created_by_uid=48 nr_map_ids=52 map_ids=56 name=64 ifindex=80 netns_dev=88 netns_ino=96 nr_jited_ksyms=104 nr_jited_func_lens=108 jited_ksyms=112 jited_func_lens=120 btf_id=128 func_info_rec_size=132 func_info=136 nr_func_info=144 nr_line_info=148 line_info=152 jited_line_info=160 nr_jited_line_info=168 line_info_rec_size=172 jited_line_info_rec_size=176 nr_prog_tags=180 prog_tags=184 run_time_ns=192 run_cnt=200 recursion_misses=208 verified_insns=216 attach_btf_obj_id=220 attach_btf_id=224",
    "MapInfoStruct": "type=0 id=4 key_size=8 value_size=12 max_entries=16 map_flags=20 name=24 ifindex=40 btf_vmlinux_value_type_id=44 netns_dev=48 netns_ino=56 btf_id=64 btf_key_type_id=68 btf_value_type_id=72 btf_vmlinux_id=76 map_extra=80",
    "LinkInfoStruct": "type=0 id=4 prog_id=8",
}


@pytest.mark.parametrize("struct_name", sorted(UAPI_OFFSETS))
def test_attr_layout_matches_uapi(struct_name):
    struct = getattr(syscall, struct_name)
    for item in UAPI_OFFSETS[struct_name].split():
        field, offset = item.split("=")
        assert getattr(struct, field).offset == int(offset), f"{struct_name}.{field}"


def test_info_struct_sizes_and_union_offsets():
    assert ctypes.sizeof(syscall.ProgInfoStruct) == 232
    assert syscall.LinkInfoStruct.union.offset == 16  # xdp.ifindex / tcx.ifindex
    assert ctypes.sizeof(syscall.MapElemAttr) == 32
    assert ctypes.sizeof(syscall.TestRunAttr) == 80


def test_enum_values_and_parsing():
    assert AttachType.XDP == 37
    assert AttachType.XDP_DEVMAP == 33
    assert MapType.RINGBUF == 27 and MapType.DEVMAP_HASH == 25
    assert ProgType.XDP == 6
    assert MapType.parse("percpu_hash") is MapType.PERCPU_HASH
    assert MapType.parse("BPF_MAP_TYPE_LRU_HASH") is MapType.LRU_HASH
    assert ProgType.parse("XDP") is ProgType.XDP
    with pytest.raises(ValueError, match="unknown MapType 'nope'"):
        MapType.parse("nope")
    assert syscall.BPF_F_BROADCAST == 8 and syscall.BPF_F_EXCLUDE_INGRESS == 16
    assert syscall.BPF_F_TEST_XDP_LIVE_FRAMES == 2
    assert Cmd.LINK_DETACH == 34 and Cmd.ENABLE_STATS == 32


def test_error_message_is_one_clear_line():
    exc = syscall.bpf_error(Cmd.MAP_CREATE, errno.EPERM)
    assert str(exc) == ("BPF_MAP_CREATE failed: EPERM (operation not permitted): need root or CAP_BPF "
                        "(plus CAP_NET_ADMIN / CAP_PERFMON for most program types)")
    assert isinstance(exc, PermissionError) and isinstance(exc, BPFError) and exc.errno == errno.EPERM
    nf = syscall.bpf_error(Cmd.OBJ_GET, errno.ENOENT)
    assert isinstance(nf, FileNotFoundError)
    assert str(syscall.bpf_error(Cmd.PROG_TEST_RUN, syscall.ENOTSUPP)).startswith(
        "BPF_PROG_TEST_RUN failed: ENOTSUPP (operation not supported)")


def test_possible_cpus_counts_ranges():
    assert syscall.possible_cpus() >= 1


def test_fd_closes_deterministically():
    r, w = os.pipe()
    os.close(w)
    fd = Fd(r)
    assert int(fd) == r and fd == r and not fd.closed
    with fd:
        pass
    assert fd.closed
    with pytest.raises(ValueError, match="closed"):
        int(fd)
    with pytest.raises(OSError):
        os.fstat(r)


def _ret(value: int) -> bytes:
    return isa.encode_program([isa.make("mov64_k", dst=0, imm=value), isa.make("exit")])


def test_obj_get_missing_path_names_it(kernel, unique_name):
    path = f"/sys/fs/bpf/{unique_name}_missing"
    with pytest.raises(FileNotFoundError) as info:
        syscall.obj_get(path)
    assert str(info.value) == f"BPF_OBJ_GET failed: ENOENT (no such file or directory): no such pinned object: {path}"


_DROP_CAPS = """
import ctypes
from pybpfasm import syscall
libc = ctypes.CDLL(None, use_errno=True)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
data = (ctypes.c_uint32 * 6)()  # effective / permitted / inheritable, two words each: all zero
assert libc.capset(header, data) == 0, ctypes.get_errno()
try:
    syscall.map_create("hash", 4, 4, 1)
except OSError as e:
    print(e)
"""


def test_eperm_without_capabilities_is_explained(kernel):
    out = subprocess.run([sys.executable, "-c", _DROP_CAPS], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip().startswith(
        "BPF_MAP_CREATE failed: EPERM (operation not permitted): need root or CAP_BPF"), out.stderr


def test_map_elem_commands(kernel):
    with syscall.map_create(MapType.HASH, 4, 8, 4, name="pyb_elem") as fd:
        key, value = (1).to_bytes(4, "little"), b"abcdefgh"
        syscall.map_update_elem(fd, key, value, syscall.BPF_NOEXIST)
        with pytest.raises(FileExistsError, match="BPF_MAP_UPDATE_ELEM failed: EEXIST"):
            syscall.map_update_elem(fd, key, value, syscall.BPF_NOEXIST)
        assert syscall.map_lookup_elem(fd, key, 8) == value
        assert syscall.map_get_next_key(fd, None, 4) == key
        assert syscall.map_get_next_key(fd, key, 4) is None
        assert syscall.map_lookup_and_delete_elem(fd, key, 8) == value
        with pytest.raises(FileNotFoundError, match="no such key"):
            syscall.map_delete_elem(fd, key)
        syscall.map_update_batch(fd, [i.to_bytes(4, "little") for i in range(4)], [bytes([i]) * 8 for i in range(4)])
        with pytest.raises(BPFError, match="map is full"):
            syscall.map_update_elem(fd, (9).to_bytes(4, "little"), value)
        res = syscall.map_lookup_batch(fd, None, 4, 8, 16)
        assert sorted(res.keys) == [i.to_bytes(4, "little") for i in range(4)] and res.next_batch is None
        assert syscall.map_delete_batch(fd, res.keys[:2]) == 2
        syscall.map_freeze(fd)
        with pytest.raises(PermissionError, match="frozen"):
            syscall.map_update_elem(fd, res.keys[2], value)
        info = syscall.map_get_info(fd)
        assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == (
            MapType.HASH, 4, 8, 4, "pyb_elem")
        assert info.id in syscall.map_ids()
        with syscall.map_get_fd_by_id(info.id) as again:
            assert syscall.map_get_info(again).id == info.id


def test_prog_load_info_ids_and_stats(kernel):
    with syscall.enable_stats() as stats, syscall.prog_load(ProgType.XDP, _ret(2), name="pyb_info").fd as prog:
        assert not stats.closed
        run = syscall.prog_test_run(prog, bytes(64), repeat=5)
        assert run.retval == 2 and run.data == bytes(64)
        info = syscall.prog_get_info(prog)
        assert info.type is ProgType.XDP and info.name == "pyb_info"
        assert len(info.tag) == 8 and info.xlated == _ret(2) and info.jited
        assert info.verified_insns >= 2 and info.gpl_compatible
        assert info.run_cnt == 5
        assert info.id in syscall.prog_ids()
        with syscall.prog_get_fd_by_id(info.id) as again:
            assert syscall.prog_get_info(again, arrays=False).tag == info.tag
    with pytest.raises(FileNotFoundError, match=r"no program with this id \(4294967295\)"):
        syscall.prog_get_fd_by_id(0xFFFFFFFF)


def test_prog_load_log_on_success_and_failure(kernel):
    ok = syscall.prog_load(ProgType.XDP, _ret(1), log_level=2, log_size=1 << 16)
    with ok.fd:
        assert "processed 2 insns" in ok.log
    with pytest.raises(BPFError) as info:
        syscall.prog_load(ProgType.XDP, isa.encode_program([isa.make("exit")]), log_level=1, log_size=1 << 16)
    assert info.value.command is Cmd.PROG_LOAD and "R0 !read_ok" in info.value.log


def test_pin_and_get(kernel, unique_name):
    path = f"/sys/fs/bpf/{unique_name}"
    with syscall.map_create(MapType.ARRAY, 4, 4, 1) as fd:
        syscall.obj_pin(fd, path)
        try:
            with pytest.raises(FileExistsError, match="pin path already exists"):
                syscall.obj_pin(fd, path)
            with syscall.obj_get(path) as again:
                assert syscall.obj_type_of_fd(again) == "map"
                assert syscall.map_get_info(again).id == syscall.map_get_info(fd).id
        finally:
            os.unlink(path)


def test_link_create_update_detach_on_veth(kernel, unique_name):
    from pybpfasm import netlab

    lab = netlab.Lab(unique_name)
    try:
        ns = lab.netns("l")
        lab.veth("a", "b", netns=ns, peer_netns=ns)

        def body():
            ifindex = netlab.link_index(unique_name + "a")
            with syscall.prog_load(ProgType.XDP, _ret(2), name="pyb_l1",
                                   expected_attach_type=AttachType.XDP).fd as p1, \
                    syscall.prog_load(ProgType.XDP, _ret(1), name="pyb_l2",
                                      expected_attach_type=AttachType.XDP).fd as p2:
                with syscall.link_create(p1, ifindex, AttachType.XDP, flags=syscall.XdpFlags.SKB_MODE) as link:
                    info = syscall.link_get_info(link)
                    p1_id = syscall.prog_get_info(p1, arrays=False).id
                    p2_id = syscall.prog_get_info(p2, arrays=False).id
                    assert (info.type, info.ifindex, info.prog_id) == (LinkType.XDP, ifindex, p1_id)
                    assert info.id in syscall.link_ids()
                    with pytest.raises(BPFError, match="BPF_LINK_CREATE failed: EBUSY"):
                        syscall.link_create(p2, ifindex, AttachType.XDP, flags=syscall.XdpFlags.SKB_MODE)
                    with pytest.raises(PermissionError, match="BPF_LINK_UPDATE failed: EPERM"):
                        syscall.link_update(link, p2, old_prog_fd=p2)
                    syscall.link_update(link, p2, old_prog_fd=p1)
                    assert syscall.link_get_info(link).prog_id == p2_id
                    with syscall.link_get_fd_by_id(info.id) as again:
                        assert syscall.link_get_info(again).id == info.id
                    syscall.link_detach(link)
                    assert syscall.link_get_info(link).ifindex == 0

        netlab.run_in_netns(ns, body)
    finally:
        lab.close()


def test_errors_pickle_and_fds_do_not():
    import pickle

    err = pickle.loads(pickle.dumps(syscall.bpf_error(Cmd.OBJ_GET, errno.ENOENT, "x")))
    assert isinstance(err, FileNotFoundError) and str(err) == "BPF_OBJ_GET failed: ENOENT (no such file or directory): x"
    r, w = os.pipe()
    os.close(w)
    with Fd(r) as fd, pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(fd)
