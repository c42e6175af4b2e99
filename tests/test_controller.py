"""``python -m pybpfasm.load`` as users run it: --keep and kill -9, re-adoption, show, unload, clean errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_forwarder import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G = "239.10.10.10"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def start_loader(lab, instance: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(_cmd("pybpfasm.load", "--upstream", lab.upstream, "--downstream", ",".join(lab.downstreams),
                                 "--instance", instance, *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines = []
    while True:  # wait for "controller running"
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("loader exited early:\n" + "".join(lines))
        lines.append(line)
        if "controller running" in line:
            return proc


def show(instance: str) -> dict:
    out = subprocess.run(_cmd("pybpfasm.cli.main", "mcast", "show", "--instance", instance, "--json"),
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def xdp_attached(ifname: str) -> bool:
    from pybpfasm import xdp

    return bool(xdp.query_xdp(ifname).attached)


@pytest.fixture
def lab(kernel, unique_name):
    from loader.lab import ForwarderLab
    from loader.pins import PinLayout

    with ForwarderLab(unique_name, 2, [3, 2]) as the_lab:
        yield the_lab
        layout = PinLayout(unique_name)
        if layout.exists():  # a failed test must not leave forwarding behind
            from loader.instance import remove_instance

            remove_instance(unique_name)


def delivered(lab, group: str = G, count: int = 10) -> dict[str, int]:
    from loader.lab import received, send

    s = lab.source.sender()
    try:
        send(s, group, count=count)
    finally:
        s.close()
    return received(lab.receivers, group, 0.15)


def test_kill_9_with_keep_then_readopt(lab, unique_name):
    from loader.pins import PinLayout

    r0, r1 = lab.receivers
    first = start_loader(lab, unique_name, "--keep")
    try:
        r0.join(G)
        assert wait_until(lambda: "239.10.10.10" in [g["group"] for g in show(unique_name)["groups"]])
        assert delivered(lab) == {"r0": 10, "r1": 0}
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # nobody consumes events now, but forwarding continues with the pinned state
    assert delivered(lab) == {"r0": 10, "r1": 0}
    status = show(unique_name)
    assert [(g["group"], g["ports"]) for g in status["groups"]] == [(G, [r0.port_if])]
    r1.join(G)  # its report waits in the ring buffer for the next controller
    time.sleep(0.3)
    assert delivered(lab) == {"r0": 10, "r1": 0}

    second = start_loader(lab, unique_name)
    try:
        assert wait_until(lambda: delivered(lab, count=1)["r1"] == 1, 5)
        assert delivered(lab) == {"r0": 10, "r1": 10}
        hosts = {h["host"] for g in show(unique_name)["groups"] for h in g["hosts"]}
        assert hosts == {r0.address, r1.address}
    finally:
        second.send_signal(signal.SIGTERM)
        out = second.communicate(timeout=10)[0]
    assert second.returncode == 0, out
    assert "detached and unpinned" in out
    assert not PinLayout(unique_name).exists()
    assert not any(xdp_attached(i) for i in [lab.upstream, *lab.downstreams])


def test_show_after_keep_exit_and_unload(lab, unique_name):
    from loader.pins import PinLayout

    r0, _ = lab.receivers
    proc = start_loader(lab, unique_name, "--keep")
    r0.join(G)
    assert wait_until(lambda: bool(show(unique_name)["groups"]))
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0 and "kept" in out
    assert delivered(lab)["r0"] == 10
    status = show(unique_name)
    assert status["groups"][0]["packets"] >= 10
    assert {i["role"] for i in status["interfaces"]} == {"upstream", "downstream"}
    assert status["downstream_stats"]["events"] >= 1
    text = subprocess.run(_cmd("pybpfasm.cli.main", "mcast", "show", "--instance", unique_name),
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert G in text and lab.upstream in text
    done = subprocess.run(_cmd("pybpfasm.cli.main", "mcast", "unload", "--instance", unique_name),
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert not PinLayout(unique_name).exists()
    assert not xdp_attached(lab.upstream)
    assert delivered(lab)["r0"] == 0


def _load_error(*args: str, prefix: list[str] | None = None) -> str:
    out = subprocess.run([*(prefix or []), *_cmd("pybpfasm.load", *args)], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # one clear line, no traceback
    return lines[0]


def test_bad_interface_name(lab, unique_name):
    line = _load_error("--upstream", lab.upstream, "--downstream", f"{lab.downstreams[0]},nosuchif0",
                       "--instance", unique_name)
    assert "nosuchif0" in line
    from loader.pins import PinLayout

    assert not PinLayout(unique_name).exists()
    assert not any(xdp_attached(i) for i in [lab.upstream, *lab.downstreams])


def test_interface_already_carrying_xdp(lab, unique_name):
    from test_ringbuf import Asm

    from loader.pins import PinLayout
    from pybpfasm import xdp
    from pybpfasm.program import Program

    a = Asm()
    a.ret(2)
    other = Program.load(a.resolve(), prog_type="xdp", name="someone_else")
    busy = lab.downstreams[1]
    attachment = xdp.attach_xdp(busy, other, mode="generic")
    try:
        line = _load_error("--upstream", lab.upstream, "--downstream", ",".join(lab.downstreams),
                           "--instance", unique_name)
        assert busy in line and "XDP" in line
        assert not PinLayout(unique_name).exists()
        assert not xdp_attached(lab.upstream) and not xdp_attached(lab.downstreams[0])
        assert xdp.query_xdp(busy).prog_id() == other.id  # theirs untouched
    finally:
        attachment.detach()
        other.close()


def test_missing_bpffs_and_privileges(lab, unique_name):
    args = ["--upstream", lab.upstream, "--downstream", lab.downstreams[0], "--instance", unique_name]
    # a private mount namespace without bpffs: nothing else on the machine notices
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"]).returncode == 0:
        script = f"umount /sys/fs/bpf && exec {sys.executable} -m pybpfasm.load " + " ".join(args)
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 2 and "bpf filesystem" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                          sys.executable, "-m", "pybpfasm.load", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "root" in out.stderr, out.stderr
    assert not any(xdp_attached(i) for i in [lab.upstream, *lab.downstreams])


def test_interface_names_with_dots_are_escaped(kernel, unique_name):
    from loader.instance import Instance
    from loader.pins import escape_ifname, unescape_ifname
    from pybpfasm import netlab

    assert escape_ifname("eth0.100") == "eth0%2E100" and unescape_ifname("eth0%2E100") == "eth0.100"
    assert unescape_ifname(escape_ifname("a%2E.b")) == "a%2E.b"
    with netlab.Lab(unique_name) as lab:
        up = lab.veth(".u", ".v")
        down = lab.veth(".d", ".e")
        inst = Instance.create(unique_name, up.name, [down.name], mode="generic")
        try:
            assert sorted(os.listdir(inst.layout.links_dir)) == sorted([escape_ifname(up.name),
                                                                       escape_ifname(down.name)])
            again = Instance.open(unique_name)
            assert again.upstream == up.name and again.downstreams == [down.name]
            again.close()
        finally:
            inst.remove()


def test_controller_applies_split_records_through_the_real_program(kernel):
    """A v3 record with 300 sources crosses the ring as 38 events and reaches the membership whole."""
    import socket as so
    import warnings

    from test_downstream_oracle import frame

    from loader.controller import Controller
    from loader.instance import create_maps
    from programs import downstream
    from pybpfasm.program import Program

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from scapy.contrib.igmpv3 import IGMPv3gr, IGMPv3mr

    m = create_maps()

    class Stub:  # what the controller needs of an Instance
        maps = m

        def downstream_ports(self) -> dict[int, str]:
            return {1: "lo"}

        def persist_host(self, *change) -> None:
            pass

        def load_membership(self, membership) -> int:
            return 0

    prog = Program.load(downstream.build(m), prog_type="xdp", name="ctl_test")
    ctl = Controller(Stub())  # type: ignore[arg-type]
    try:
        sources = [f"198.51.100.{i % 250}" if i < 250 else f"198.51.101.{i - 250}" for i in range(300)]
        data = frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=1, maddr="239.8.8.8", srcaddrs=sources)])))
        prog.test_run(data)
        assert ctl.process() == 38
        state = ctl.membership.hosts(1, so.inet_aton("239.8.8.8"))[so.inet_aton("10.0.0.2")]
        assert state.sources == {so.inet_aton(s) for s in sources}
        assert ctl.sync.kernel_view() == {so.inet_aton("239.8.8.8"): {1}}
        leave = frame(bytes(IGMPv3mr(records=[IGMPv3gr(rtype=3, maddr="239.8.8.8")])))
        prog.test_run(leave)
        assert ctl.process() == 1
        assert ctl.sync.kernel_view() == {}
    finally:
        ctl.close()
        prog.close()
        for x in m.values():
            x.close()


def test_new_group_uses_a_prefilled_devmap(kernel):
    """The join path: the port's devmap is made ahead of time, the outer insert is the only syscall."""
    import socket as so

    from loader.devmaps import DevmapSync
    from loader.instance import create_maps

    m = create_maps()
    sync = DevmapSync(m["groups"], m.get("group_stats"))
    lo = so.if_nametoindex("lo")
    group = so.inet_aton("239.8.8.9")
    try:
        sync.replenish([lo])
        prefilled = sync._prefilled[lo]
        assert {int.from_bytes(k, "little") for k in prefilled.keys_raw()} == {lo}
        sync.add_port(group, lo)
        assert sync.inner[group] is prefilled
        assert sync.kernel_view() == {group: {lo}}
        sync.remove_port(group, lo)  # removal on a writer thread, still in its grace period...
        sync.add_port(group, lo)  # ...when the group is joined again: not prefilled now, spare filled inline
        assert sync.kernel_view() == {group: {lo}}
        sync.replenish([lo])
        sync.retain_prefilled([])  # the port went away: its ready-made devmap goes too
        assert not sync._prefilled
    finally:
        sync.close()
        for x in m.values():
            x.close()


def test_elem_writer_reports_kernel_errors(kernel):
    from loader.devmaps import ElemWriter, new_inner_map
    from pybpfasm.syscall import BPFError

    inner = new_inner_map("writer_test")
    try:
        writer = ElemWriter()
        writer.update(int(inner.fd), (1).to_bytes(4, "little"), (1).to_bytes(4, "little"))
        assert [int.from_bytes(k, "little") for k in inner.keys_raw()] == [1]
        with pytest.raises(BPFError):
            writer.update(int(inner.fd), (0x7FFFFFF0).to_bytes(4, "little"), (0x7FFFFFF0).to_bytes(4, "little"))
    finally:
        inner.close()


def test_short_slice_is_per_thread_and_best_effort(kernel):
    import threading

    from loader.controller import request_short_slice

    result: list[tuple[bool, str]] = []

    def run() -> None:
        ok = request_short_slice(100)
        path = f"/proc/self/task/{threading.get_native_id()}/sched"
        text = open(path).read() if os.path.exists(path) else ""
        result.append((ok, text))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    ok, text = result[0]
    assert isinstance(ok, bool)
    if ok and "se.slice" in text:
        assert int(text.split("se.slice")[1].split(":")[1].split()[0]) == 100_000
