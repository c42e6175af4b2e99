"""XDP attach/replace/detach/query on veths in test namespaces: netlink and bpf_link, real kernel."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pybpfasm import isa, netlab, syscall, xdp
from pybpfasm.errors import is_user_error

XDP_DROP, XDP_PASS = 1, 2


def load_xdp(ret: int, name: str = "t") -> syscall.Fd:
    """A two-instruction XDP program returning ``ret``."""
    code = isa.encode_program([isa.make("mov64_k", dst=0, imm=ret), isa.make("exit")])
    return syscall.prog_load("xdp", code, name=name).fd


def prog_id(fd: syscall.Fd) -> int:
    return syscall.prog_get_info(fd, arrays=False).id


@pytest.fixture
def lab(kernel, unique_name):
    with netlab.Lab(unique_name) as lab:
        yield lab


@pytest.fixture
def progs(kernel):
    drop, pass_ = load_xdp(XDP_DROP, "drop"), load_xdp(XDP_PASS, "pass")
    yield drop, pass_
    drop.close()
    pass_.close()


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_netlink_attach_query_detach(lab, progs, mode):
    ns = lab.netns("n")
    pair = lab.veth("a", "b", peer_netns=ns)
    drop, _ = progs
    att = xdp.attach_xdp(pair.peer, drop, mode=mode, netns=ns)
    assert att.mode == mode and att.method == "netlink" and att.prog_id == prog_id(drop)
    status = xdp.query_xdp(pair.peer, netns=ns)
    assert status.attached == mode and status.prog_id(mode) == prog_id(drop) and status.prog_id() == prog_id(drop)
    assert [s.ifname for s in xdp.list_xdp(ns)] == [pair.peer]
    att.detach()
    assert xdp.query_xdp(pair.peer, netns=ns).prog_ids == {}
    att.detach()  # idempotent


def test_netlink_refuses_to_displace_and_replaces_atomically(lab, progs):
    pair = lab.veth("a", "b")
    drop, pass_ = progs
    with xdp.attach_xdp(pair.name, drop, mode="native") as att:
        with pytest.raises(xdp.XdpError, match="XDP program already attached") as info:
            xdp.attach_xdp(pair.name, pass_, mode="native")
        assert is_user_error(info.value) and "\n" not in str(info.value)
        with pytest.raises(xdp.XdpError, match="Native and generic XDP can't be active at the same time"):
            xdp.attach_xdp(pair.name, pass_, mode="generic")
        # compare-and-swap with the wrong expected program fails, the right one succeeds
        with pytest.raises(xdp.XdpError, match="does not match expected"):
            xdp.attach_xdp(pair.name, drop, mode="native", replace=pass_)
        att.replace(pass_)
        assert xdp.query_xdp(pair.name).prog_id("native") == prog_id(pass_) == att.prog_id
        forced = xdp.attach_xdp(pair.name, drop, mode="native", replace=True)
        assert xdp.query_xdp(pair.name).prog_id() == prog_id(drop)
        att.detach()  # expected program (pass_) no longer there: leaves drop alone
        assert xdp.query_xdp(pair.name).prog_id() == prog_id(drop)
        forced.detach()
    assert xdp.query_xdp(pair.name).prog_ids == {}


def test_auto_mode_prefers_native(lab, progs):
    pair = lab.veth("a", "b")
    for method in ("netlink", "link"):
        att = xdp.attach_xdp(pair.name, progs[0], mode="auto", method=method)
        assert att.mode == "native" and xdp.query_xdp(pair.name).attached == "native"
        att.detach()
        att.close()


def test_auto_mode_falls_back_to_generic(lab, progs):
    ns = lab.netns("n")  # loopback has no native XDP: the kernel says so and auto takes generic
    for method in ("netlink", "link"):
        att = xdp.attach_xdp("lo", progs[1], mode="auto", method=method, netns=ns)
        assert att.mode == "generic" and xdp.query_xdp("lo", ns).prog_id("generic") == prog_id(progs[1])
        att.detach()
        att.close()
    with pytest.raises(xdp.XdpError, match="native"):
        xdp.attach_xdp("lo", progs[1], mode="native", netns=ns)


def test_bpf_link_attach_update_detach(lab, progs):
    ns = lab.netns("n")
    pair = lab.veth("a", "b", peer_netns=ns)
    drop, pass_ = progs
    for mode in ("native", "generic"):
        link = xdp.attach_xdp(pair.peer, drop, mode=mode, method="link", netns=ns)
        assert isinstance(link, xdp.XdpLink) and link.id > 0 and link.mode == mode
        assert xdp.query_xdp(pair.peer, ns).prog_id(mode) == prog_id(drop)
        assert syscall.link_get_info(link.fd).ifindex == pair.peer_index
        with pytest.raises(xdp.XdpError, match="Can't replace active BPF XDP link"):
            xdp.attach_xdp(pair.peer, pass_, mode=mode, netns=ns, replace=True)
        with pytest.raises(xdp.XdpError, match="EBUSY"):
            xdp.attach_xdp(pair.peer, pass_, mode=mode, method="link", netns=ns)
        with pytest.raises(xdp.XdpError, match="EPERM"):
            link.update(drop, old_prog=pass_)  # pass_ is not the current program
        link.update(pass_)
        assert xdp.query_xdp(pair.peer, ns).prog_id(mode) == prog_id(pass_) == link.prog_id
        link.close()  # last fd of an unpinned link: the kernel detaches it
        assert xdp.query_xdp(pair.peer, ns).prog_ids == {}
    with xdp.attach_xdp(pair.peer, drop, mode="native", method="link", netns=ns) as link:
        link.detach()  # explicit detach keeps the (defunct) link object
        assert xdp.query_xdp(pair.peer, ns).prog_ids == {}
        assert syscall.link_get_info(link.fd).ifindex == 0


def test_pinned_link_outlives_its_process(lab, unique_name):
    ns = lab.netns("n")
    pair = lab.veth("a", "b", peer_netns=ns)
    pin = f"/sys/fs/bpf/{unique_name}_xdp_link"
    script = textwrap.dedent(f"""
        from pybpfasm import isa, syscall, xdp
        code = isa.encode_program([isa.make("mov64_k", dst=0, imm={XDP_DROP}), isa.make("exit")])
        prog = syscall.prog_load("xdp", code, name="pinned").fd
        link = xdp.attach_xdp({pair.peer!r}, prog, mode="native", method="link", netns={ns!r})
        link.pin({pin!r})
        print(link.prog_id)
    """)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.returncode == 0, out.stderr
        made_prog = int(out.stdout.strip())
        status = xdp.query_xdp(pair.peer, ns)
        assert status.prog_id("native") == made_prog  # the process is gone, the attachment is not
        elsewhere = xdp.XdpLink.from_pinned(pin)  # wrong namespace: the ifindex is not resolved to a wrong name
        assert elsewhere.mode == "unknown" and elsewhere.ifname == f"ifindex {pair.peer_index}"
        elsewhere.close()
        link = xdp.XdpLink.from_pinned(pin, netns=ns)
        assert link.prog_id == made_prog and link.mode == "native" and link.ifname == pair.peer
        link.detach()
        link.unpin()
        link.close()
        assert xdp.query_xdp(pair.peer, ns).prog_ids == {}
    finally:
        if os.path.exists(pin):
            os.unlink(pin)


def test_xdp_drop_really_drops(lab, progs):
    ns = lab.netns("n")
    pair = lab.veth("a", "b", peer_netns=ns)
    netlab.add_address(pair.name, "10.78.0.1/24")
    netlab.add_address(pair.peer, "10.78.0.2/24", netns=ns)

    def bound() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.78.0.2", 0))
        s.settimeout(0.3)
        return s

    def delivered(receiver: socket.socket, tries: int = 10) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(tries):
                sender.sendto(b"x", ("10.78.0.2", receiver.getsockname()[1]))
                try:
                    receiver.recvfrom(10)
                    return True
                except TimeoutError:
                    time.sleep(0.05)
        return False

    with netlab.run_in_netns(ns, bound) as receiver:
        assert delivered(receiver)
        with xdp.attach_xdp(pair.peer, progs[0], mode="native", netns=ns):
            while True:  # drain anything in flight
                try:
                    receiver.recvfrom(10)
                except TimeoutError:
                    break
            assert not delivered(receiver, tries=3)
        assert delivered(receiver)


def test_user_errors_are_one_line(lab, progs):
    pair = lab.veth("a", "b")
    cases = [
        lambda: xdp.attach_xdp(pair.name + "x", progs[0]),
        lambda: xdp.attach_xdp(pair.name, progs[0], mode="offload"),
        lambda: xdp.attach_xdp(pair.name, progs[0], mode="turbo"),
        lambda: xdp.attach_xdp(pair.name, progs[0], method="carrier-pigeon"),
        lambda: xdp.attach_xdp(pair.name, object()),
        lambda: xdp.XdpLink.from_pinned("/sys/fs/bpf/does_not_exist_pybpfasm"),
        lambda: xdp.query_xdp("lo", netns="no-such-ns-pybpfasm"),
    ]
    for case in cases:
        with pytest.raises(xdp.XdpError) as info:
            case()
        assert is_user_error(info.value) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(xdp.XdpError, match="no such interface"):
        xdp.query_xdp(pair.name + "x")


def test_detach_after_the_interface_went_away(lab, progs):
    ns = lab.netns("gone")
    pair = lab.veth("a", "b", peer_netns=ns)
    att = xdp.attach_xdp(pair.peer, progs[0], mode="generic", netns=ns)
    link = xdp.attach_xdp(pair.name, progs[0], mode="generic", method="link")
    netlab.delete_netns(ns)  # takes both veth ends with it
    att.detach()  # nothing left to detach: no error
    link.detach()
    link.close()
    assert not att.attached and not link.attached
