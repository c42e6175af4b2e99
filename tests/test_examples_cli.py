"""``pybpfasm run``: options, one-line user errors, --duration, SIGTERM, clean detach (real kernel)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pybpfasm import netlab, xdp
from pybpfasm.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



@pytest.fixture
def veth(kernel, unique_name):
    """A veth in this namespace, its peer in a test namespace."""
    with netlab.Lab(unique_name) as lab:
        ns = lab.netns("p")
        pair = lab.veth("a", "b", peer_netns=ns)
        yield pair


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["run", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, message", [
    (["nosuch", "--dev", "lo"], "no example named 'nosuch'"),
    (["/nonexistent/x.py", "--dev", "lo"], "no such example file"),
    (["xdp_stats"], "run needs --dev IFACE"),
    (["xdp_stats", "--dev", "nosuchdev0"], "no such interface 'nosuchdev0'"),
    (["xdp_dnat", "--dev", "lo"], "xdp_dnat needs --backend-mac"),
    (["xdp_dnat", "--dev", "lo", "--backend-mac", "02:00:00:00:00:01", "--vip", "10.0.0.1"], "expected ADDRESS:PORT"),
    (["icmp_lb", "--dev", "lo", "--backend", "10.0.0.1,zz", "--backend", "10.0.0.2,02:00:00:00:00:01"],
     "bad MAC address"),
])
def test_user_errors_are_one_line(kernel, capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert err.startswith("pybpfasm: error: ") and message in err and err.count("\n") == 1


def test_example_help_lists_its_options(kernel, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "examples/xdp_dnat.py", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--backend-mac" in out and "--dev" in out and "--duration" in out


def test_run_for_a_duration_prints_every_second_and_detaches(veth, capsys):
    rc, out, err = run(capsys, "examples/xdp_stats.py", "--dev", veth.name, "--method", "netlink",
                       "--duration", "2.5")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("xdp_prog_func: ") and f"attached to {veth.name} (" in lines[0]
    assert "netlink)" in lines[0]
    assert out.count("Map contents:") == 2
    assert lines[-1] == f"detached from {veth.name}"
    assert xdp.query_xdp(veth.name).prog_ids == {}


def test_sigterm_stops_and_detaches(veth):
    proc = subprocess.Popen([sys.executable, "-m", "pybpfasm.cli.main", "run", "packet_counter", "--dev", veth.name,
                             "--mode", "generic"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "attached to" in first and "(generic, link)" in first
        assert xdp.query_xdp(veth.name).prog_ids
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.rstrip().endswith(f"detached from {veth.name}")
    assert xdp.query_xdp(veth.name).prog_ids == {}
