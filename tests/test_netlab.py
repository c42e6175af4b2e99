"""netlab: namespaces, veths, ethtool features and sysctls, and that cleanup is complete."""

from __future__ import annotations

import os
import socket
import time

import pytest

from pybpfasm import netlab


def _leftovers(prefix: str) -> list[str]:
    names = netlab.list_netns(prefix)
    with netlab.iproute() as ipr:
        names += [ln.get_attr("IFLA_IFNAME") for ln in ipr.get_links()
                  if ln.get_attr("IFLA_IFNAME").startswith(prefix)]
    return names


def test_lab_topology_and_traffic(kernel, unique_name):
    with netlab.Lab(unique_name) as lab:
        host = lab.netns("h")
        fwd = lab.netns("f")
        root_pair = lab.veth("a", "b", peer_netns=host)
        ns_pair = lab.veth("c", "d", netns=host, peer_netns=fwd)
        assert netlab.link_exists(root_pair.name)
        assert netlab.link_exists(root_pair.peer, host)
        assert netlab.link_exists(ns_pair.name, host) and netlab.link_exists(ns_pair.peer, fwd)
        assert not netlab.link_exists(ns_pair.peer)
        assert root_pair.peer_index > 0
        netlab.add_address(root_pair.name, "10.77.0.1/24")
        netlab.add_address(root_pair.peer, "10.77.0.2/24", netns=host)

        def bound() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("10.77.0.2", 0))
            s.settimeout(3)
            return s

        receiver = netlab.run_in_netns(host, bound)
        with receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            port = receiver.getsockname()[1]
            deadline = time.monotonic() + 3
            while True:  # DAD/neighbour setup may take a moment
                sender.sendto(b"hello", ("10.77.0.2", port))
                try:
                    data, peer = receiver.recvfrom(100)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
            assert data == b"hello" and peer[0] == "10.77.0.1"
    assert _leftovers(unique_name) == []


def test_cleanup_on_exception(kernel, unique_name):
    with pytest.raises(RuntimeError, match="boom"), netlab.Lab(unique_name) as lab:
        ns = lab.netns("x")
        lab.veth("a", "b", peer_netns=ns)
        raise RuntimeError("boom")
    assert _leftovers(unique_name) == []


def test_ethtool_features_and_sysctls(kernel, unique_name):
    with netlab.Lab(unique_name) as lab:
        ns = lab.netns("n")
        pair = lab.veth("a", "b", peer_netns=ns)
        netlab.disable_tx_checksum(pair.peer, ns)
        netlab.enable_gro(pair.peer, ns)
        assert netlab.ethtool_get(pair.peer, "tx", ns) is False
        assert netlab.ethtool_get(pair.peer, "gro", ns) is True
        out = netlab.run_cmd(ns, ["ethtool", "-k", pair.peer]).stdout
        assert "tx-checksumming: off" in out and "generic-receive-offload: on" in out
        netlab.set_igmp_version(2, pair.peer, ns)
        netlab.set_igmp_version(3, "all", ns)
        assert netlab.read_sysctl(f"net/ipv4/conf/{pair.peer}/force_igmp_version", ns) == "2"
        assert netlab.read_sysctl("net/ipv4/conf/all/force_igmp_version", ns) == "3"
        with pytest.raises(netlab.NetLabError):
            netlab.set_igmp_version(2, "nosuchif0", ns)


def test_run_in_netns_thread_and_fork(kernel, unique_name):
    with netlab.Lab(unique_name) as lab:
        ns = lab.netns("n")
        lab.veth("a", "b", peer_netns=ns)
        listing = netlab.run_in_netns(ns, os.listdir, "/proc/sys/net/ipv4/conf")
        assert f"{unique_name}b" in listing and f"{unique_name}a" not in listing
        forked = netlab.run_in_netns(ns, os.listdir, "/proc/sys/net/ipv4/conf", fork=True)
        assert sorted(forked) == sorted(listing)
        with pytest.raises(ZeroDivisionError):
            netlab.run_in_netns(ns, lambda: 1 // 0, fork=True)
        out = netlab.run_cmd(ns, ["ip", "-br", "link"]).stdout
        assert f"{unique_name}b" in out


def test_errors_are_user_errors(kernel, unique_name):
    from pybpfasm.errors import is_user_error

    with pytest.raises(netlab.NetLabError, match="no such network namespace") as info:
        netlab.link_index("lo", netns=unique_name + "-nope")
    assert is_user_error(info.value)
    with pytest.raises(netlab.NetLabError, match="no such interface"):
        netlab.link_index(unique_name + "zz")
    with pytest.raises(netlab.NetLabError, match="bad interface name"):
        netlab.add_veth("x" * 16, "y")


def test_sweep_removes_stale_objects(kernel, unique_name):
    lab = netlab.Lab(unique_name)
    ns = lab.netns("stale")
    lab.veth("a", "b", peer_netns=ns)
    lab.veth("c", "d")
    from pybpfasm import syscall

    with syscall.map_create("array", 4, 4, 1) as fd:  # a stale pin directory with a pinned map
        os.mkdir(f"/sys/fs/bpf/{unique_name}_dir")
        syscall.obj_pin(fd, f"/sys/fs/bpf/{unique_name}_dir/m")
    removed = netlab.sweep(unique_name)  # as if the creating process had died
    assert any(r.startswith("netns") for r in removed)
    assert f"pin /sys/fs/bpf/{unique_name}_dir/m" in removed
    assert _leftovers(unique_name) == []
    assert not os.path.exists(f"/sys/fs/bpf/{unique_name}_dir")
    lab.close()  # idempotent after a sweep
