"""End to end: real namespaces, real IGMP from the hosts' kernels, real multicast traffic, both XDP modes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

G1, G2, G3, G_UNKNOWN, G5 = "239.1.1.1", "239.2.2.2", "239.3.3.3", "239.4.4.4", "239.5.5.5"


def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class Forwarder:
    def __init__(self, prefix: str, mode: str, versions: list[int]):
        from loader.controller import Controller
        from loader.instance import Instance
        from loader.lab import ForwarderLab

        self.lab = ForwarderLab(prefix, len(versions), versions)
        self.inst = None
        self.ctl = None
        try:
            self.inst = Instance.create(prefix, self.lab.upstream, self.lab.downstreams, mode=mode)
            assert set(self.inst.modes().values()) == {mode}
            self.ctl = Controller(self.inst)
            self.thread = threading.Thread(target=self.ctl.run, daemon=True)
            self.thread.start()
        except BaseException:
            self.close()
            raise

    def port(self, host) -> int:
        from pybpfasm import netlab

        return netlab.link_index(host.port_if)

    def subscribed(self, host, group: str) -> bool:
        return self.ctl.membership.is_member(self.port(host), socket.inet_aton(group))

    def wait_member(self, host, group: str, present: bool = True) -> None:
        assert wait_until(lambda: self.subscribed(host, group) == present), (host.name, group, present)

    def send(self, group: str, count: int = 20, sender=None) -> None:
        from loader.lab import send

        s = (sender or self.lab.source).sender()
        try:
            send(s, group, count=count)
        finally:
            s.close()

    def up_stat(self, name: str) -> int:
        from loader.instance import read_percpu_sum
        from programs.events import UpstreamStat

        return read_percpu_sum(self.inst.maps["up_stats"], int(UpstreamStat[name]), "<QQ")[0]

    def close(self) -> None:
        if self.ctl is not None:
            self.ctl.stop()
            self.thread.join(5)
            self.ctl.close()
        if self.inst is not None:
            self.inst.remove()
        self.lab.close()


@pytest.fixture(params=["native", "generic"])
def fwd(request, kernel, unique_name):
    f = Forwarder(unique_name, request.param, [2, 3, 3, 2])
    yield f
    f.close()


def counts(fwd: Forwarder, group: str, settle: float = 0.1) -> dict[str, int]:
    from loader.lab import received

    return received(fwd.lab.receivers, group, settle)


def test_v2_and_v3_receivers_get_exactly_their_groups(fwd):
    r0, r1, r2, r3 = fwd.lab.receivers
    assert (r0.igmp_version, r1.igmp_version) == (2, 3)
    r0.join(G1)
    r1.join(G1)
    r1.join(G2)
    r2.join(G3)
    for host, group in ((r0, G1), (r1, G1), (r1, G2), (r2, G3)):
        fwd.wait_member(host, group)
    assert fwd.ctl.verify()
    for g in (G1, G2, G3, G_UNKNOWN):
        fwd.send(g)
    assert counts(fwd, G1) == {"r0": 20, "r1": 20, "r2": 0, "r3": 0}
    assert counts(fwd, G2, 0) == {"r0": 0, "r1": 20, "r2": 0, "r3": 0}
    assert counts(fwd, G3, 0) == {"r0": 0, "r1": 0, "r2": 20, "r3": 0}
    assert fwd.up_stat("UNKNOWN_GROUP") == 20  # the unknown group was dropped, not delivered


def test_leave_stops_delivery_and_removes_the_group(fwd):
    r0, r1, r2, _ = fwd.lab.receivers
    r0.join(G1)
    r1.join(G1)
    r1.join(G2)
    for host, group in ((r0, G1), (r1, G1), (r1, G2)):
        fwd.wait_member(host, group)
    r0.leave(G1)  # IGMPv2 leave
    fwd.wait_member(r0, G1, present=False)
    fwd.send(G1)
    assert counts(fwd, G1)["r1"] == 20
    r1.leave(G1)  # IGMPv3 TO_IN{}
    fwd.wait_member(r1, G1, present=False)
    r0.join(G1)
    fwd.wait_member(r0, G1)
    r0.leave(G1)
    fwd.wait_member(r0, G1, present=False)
    assert socket.inet_aton(G1) not in fwd.ctl.sync.kernel_view()  # empty group's devmap removed
    r0.join(G2)  # rejoin a different group: is the socket for G1 really gone?
    fwd.wait_member(r0, G2)
    fwd.send(G1)
    fwd.send(G2)
    assert counts(fwd, G1) == {"r0": 0, "r1": 0, "r2": 0, "r3": 0}
    assert counts(fwd, G2, 0) == {"r0": 20, "r1": 20, "r2": 0, "r3": 0}
    assert fwd.ctl.verify()


def test_link_local_multicast_still_reaches_the_stack(fwd):
    from pybpfasm import netlab

    # the stack behind the upstream port (root namespace): give the test's port an address and listen
    netlab.add_address(fwd.lab.upstream, "10.0.255.254/16")
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("224.0.0.251", 5001))
        mreq = socket.inet_aton("224.0.0.251") + socket.inet_aton("10.0.255.254")
        listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        listener.setblocking(False)
        fwd.send("224.0.0.251", count=5)
        got = [0]

        def all_arrived() -> bool:
            got[0] += _readable(listener)
            return got[0] >= 5

        assert wait_until(all_arrived, 2.0), got
    finally:
        listener.close()
    assert fwd.up_stat("PASSED") >= 5


def _readable(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return n
        n += 1


def test_downstream_sender_reaches_other_subscribers_not_itself(fwd):
    r0, r1, r2, r3 = fwd.lab.receivers
    for host in (r0, r1, r3):
        host.join(G5)
    for host in (r0, r1, r3):
        fwd.wait_member(host, G5)
    fwd.send(G5, sender=r1)  # r1 sends with IP_MULTICAST_LOOP off: it can only hear a reflection
    assert counts(fwd, G5) == {"r0": 20, "r1": 0, "r2": 0, "r3": 20}
