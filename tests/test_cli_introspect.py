"""bpftool-like CLI: prog / map / link / net / dump listings, JSON, edits, and one-line user errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pybpfasm import isa, netlab, xdp
from pybpfasm.cli.main import main as cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def one_line_error(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("pybpfasm: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def objects(kernel):
    from pybpfasm.builder import HelperRef, MapRef
    from pybpfasm.maps import ArrayMap, HashMap, PerCpuArray
    from pybpfasm.program import Program

    h = HashMap(key="I", value="Q", max_entries=8, name="cli_hash")
    pa = PerCpuArray(value="Q", max_entries=2, name="cli_percpu")
    wide = ArrayMap(value="32s", max_entries=2, name="cli_wide")
    h[1] = 5
    h[2] = 0x0102030405060708
    prog = Program.load([
        isa.make("stw", dst=10, off=-4, imm=1),
        isa.make("mov64_x", dst=2, src=10), isa.make("add64_k", dst=2, imm=-4),
        isa.make("lddw", dst=1, ref=MapRef(h)),
        isa.make("call", ref=HelperRef("map_lookup_elem")),
        isa.make("mov64_k", dst=0, imm=2), isa.make("exit"),
    ], name="cli_prog")
    yield {"prog": prog, "hash": h, "percpu": pa, "wide": wide}
    prog.close()
    for m in (h, pa, wide):
        m.close()


@pytest.fixture(scope="module")
def bpftool():
    path = shutil.which("bpftool")
    if path is None:
        pytest.skip("bpftool not installed (.ci/run installs it for this test)")
    return path


def bpftool_out(bpftool: str, *argv: str) -> str:
    proc = subprocess.run([bpftool, *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_prog_show_and_list(objects, capsys, bpftool):
    prog = objects["prog"]
    pid = prog.id
    text = ok(capsys, "prog", "show", "id", str(pid))
    assert text.startswith(f"{pid}: xdp  name cli_prog  tag {prog.tag}  gpl\n")
    assert "\tloaded_at " in text and "  map_ids " in text
    # the first and third lines are bpftool's (the memlock and time fields are the same facts)
    theirs = bpftool_out(bpftool, "prog", "show", "id", str(pid)).splitlines()
    assert text.splitlines()[0] == theirs[0] and text.splitlines()[2] == theirs[2]
    rec = json.loads(ok(capsys, "prog", "show", "id", str(pid), "--json"))
    ref = json.loads(bpftool_out(bpftool, "-j", "prog", "show", "id", str(pid)))
    for key in ("id", "type", "name", "tag", "gpl_compatible", "uid", "bytes_xlated", "jited", "bytes_jited",
                "bytes_memlock", "map_ids"):
        assert rec[key] == ref[key], key
    assert abs(rec["loaded_at"] - ref["loaded_at"]) <= 1
    listing = json.loads(ok(capsys, "prog", "list", "-j"))
    assert isinstance(listing, list) and pid in [r["id"] for r in listing]
    assert f"{pid}: xdp  name cli_prog" in ok(capsys, "prog", "list")
    assert json.loads(ok(capsys, "prog", "show", "name", "cli_prog", "-p"))["id"] == pid
    assert json.loads(ok(capsys, "prog", "show", "tag", prog.tag, "-j"))["tag"] == prog.tag


def test_prog_show_pinned_with_bpffs_walk(objects, capsys, unique_name):
    prog = objects["prog"]
    pin = f"/sys/fs/bpf/{unique_name}_prog"
    prog.pin(pin)
    try:
        rec = json.loads(ok(capsys, "prog", "show", "pinned", pin, "-j", "--bpffs"))
        assert rec["id"] == prog.id and rec["pinned"] == [pin]
        assert f"\tpinned {pin}" in ok(capsys, "prog", "show", "pinned", pin, "-f")
    finally:
        os.unlink(pin)


def test_map_listing_and_dump_match_bpftool(objects, capsys, bpftool):
    h = objects["hash"]
    mid = str(h.info().id)
    rec = json.loads(ok(capsys, "map", "show", "id", mid, "-j"))
    ref = json.loads(bpftool_out(bpftool, "-j", "map", "show", "id", mid))
    assert rec == {k: v for k, v in ref.items() if k in rec} and rec["type"] == "hash"
    assert ok(capsys, "map", "show", "id", mid) == bpftool_out(bpftool, "map", "show", "id", mid)
    assert any(r["name"] == "cli_hash" for r in json.loads(ok(capsys, "map", "list", "-j")))
    for m in ("hash", "percpu", "wide"):
        map_id = str(objects[m].info().id)
        assert ok(capsys, "map", "dump", "id", map_id) == bpftool_out(bpftool, "map", "dump", "id", map_id), m
        assert json.loads(ok(capsys, "map", "dump", "id", map_id, "-j")) == \
            json.loads(bpftool_out(bpftool, "-j", "map", "dump", "id", map_id)), m


def test_map_edit_commands(objects, capsys):
    h, pa = objects["hash"], objects["percpu"]
    mid = str(h.info().id)
    ok(capsys, "map", "update", "id", mid, "key", "3", "0", "0", "0", "value", "hex", "ff", "0", "0", "0", "0", "0",
       "0", "01", "noexist")
    assert h[3] == 0x01000000000000FF
    assert ok(capsys, "map", "lookup", "id", mid, "key", "0x03", "0", "0", "0") == \
        "key: 03 00 00 00  value: ff 00 00 00 00 00 00 01\n"
    entry = json.loads(ok(capsys, "map", "lookup", "name", "cli_hash", "key", "hex", "03", "00", "00", "00", "-j"))
    assert entry["key"] == ["0x03", "0x00", "0x00", "0x00"] and entry["value"][0] == "0xff"
    assert "next key:" in ok(capsys, "map", "getnext", "id", mid)
    ok(capsys, "map", "delete", "id", mid, "key", "3", "0", "0", "0")
    assert 3 not in h
    err = one_line_error(capsys, "map", "lookup", "id", mid, "key", "3", "0", "0", "0")
    assert "not found" in err
    one_line_error(capsys, "map", "update", "id", mid, "key", "1", "0", "0", "0", "value", "1", "2", "3", "4", "5",
                   "6", "7", "8", "noexist")  # key 1 exists
    pid = str(pa.info().id)
    ok(capsys, "map", "update", "id", pid, "key", "1", "0", "0", "0", "value", *[str(i) for i in range(1, 9)])
    values = json.loads(ok(capsys, "map", "lookup", "id", pid, "key", "1", "0", "0", "0", "-j"))["values"]
    assert len(values) == os.cpu_count() or len(values) >= 1
    assert all(v["value"] == [f"0x{i:02x}" for i in range(1, 9)] for v in values)


def test_link_and_net_listings(objects, capsys, unique_name):
    prog = objects["prog"]
    with netlab.Lab(unique_name) as lab:
        ns = lab.netns("n")
        pair = lab.veth("a", "b", peer_netns=ns)
        link = xdp.attach_xdp(pair.name, prog, mode="generic", method="link")
        try:
            recs = json.loads(ok(capsys, "link", "list", "-j"))
            mine = [r for r in recs if r["id"] == link.id]
            assert mine == [{"id": link.id, "type": "xdp", "prog_id": prog.id, "ifindex": pair.index,
                             "devname": pair.name}]
            assert f"{link.id}: xdp  prog {prog.id}" in ok(capsys, "link", "show", "id", str(link.id))
            text = ok(capsys, "net", "list", "dev", pair.name)
            assert text == f"xdp:\n{pair.name}({pair.index}) generic id {prog.id}\n"
            pin = f"/sys/fs/bpf/{unique_name}_link"
            ok(capsys, "link", "pin", "id", str(link.id), pin)
            try:
                assert json.loads(ok(capsys, "link", "show", "pinned", pin, "-j"))["id"] == link.id
                ok(capsys, "link", "detach", "pinned", pin)
                assert xdp.query_xdp(pair.name).prog_ids == {}
                assert "\tdetached" in ok(capsys, "link", "show", "id", str(link.id))
            finally:
                os.unlink(pin)
        finally:
            link.close()
        # net attach / detach through the CLI, inside the namespace
        ok(capsys, "net", "attach", "xdpdrv", "id", str(prog.id), "dev", pair.peer, "--netns", ns)
        assert xdp.query_xdp(pair.peer, ns).prog_id("native") == prog.id
        listing = json.loads(ok(capsys, "net", "list", "--netns", ns, "-j"))
        assert listing == [{"xdp": [{"devname": pair.peer, "ifindex": pair.peer_index, "mode": "driver",
                                     "id": prog.id}]}]
        if shutil.which("bpftool"):
            ref = json.loads(subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "bpftool", "-j", "net", "list"],
                                            capture_output=True, text=True, check=True).stdout)
            assert ref[0]["xdp"] == listing[0]["xdp"]
            ref_text = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "bpftool", "net", "list"],
                                      capture_output=True, text=True, check=True).stdout
            assert ref_text.startswith(ok(capsys, "net", "list", "--netns", ns))
        err = one_line_error(capsys, "net", "attach", "xdpdrv", "id", str(prog.id), "dev", pair.peer, "--netns", ns)
        assert "already attached" in err
        ok(capsys, "net", "attach", "xdpdrv", "id", str(prog.id), "dev", pair.peer, "overwrite", "--netns", ns)
        ok(capsys, "net", "detach", "xdpdrv", "dev", pair.peer, "--netns", ns)
        assert xdp.query_xdp(pair.peer, ns).prog_ids == {}


def test_user_errors_are_one_line(objects, capsys):
    mid = str(objects["hash"].info().id)
    for argv in (
        ["prog", "show", "id", "4000000000"],
        ["prog", "show", "name", "no_such_prog_x"],
        ["prog", "show", "bogus", "1"],
        ["map", "dump", "pinned", "/sys/fs/bpf/does_not_exist_pyb"],
        ["map", "dump", "pinned", "/tmp/not_bpffs_pyb"],
        ["map", "lookup", "id", mid, "key", "1"],
        ["map", "lookup", "id", mid, "key", "300", "0", "0", "0"],
        ["link", "show", "id", "4000000000"],
        ["dump", "--xlated", "id", "4000000000"],
        ["dump", "--jited", "name", "no_such_prog_x"],
        ["net", "list", "dev", "no_such_dev0"],
        ["net", "list", "--netns", "no-such-netns-pyb"],
    ):
        one_line_error(capsys, *argv)


def test_without_privileges_one_line(kernel, objects):
    """Real EPERM from the kernel: root without capabilities (setpriv drops them all)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    for argv in (["prog", "list"], ["map", "dump", "id", str(objects["hash"].info().id)],
                 ["dump", "--xlated", "id", str(objects["prog"].id)]):
        proc = subprocess.run(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--",
                               sys.executable, "-m", "pybpfasm.cli.main", *argv],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
        assert proc.returncode != 0 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "permission denied" in proc.stderr, proc.stderr
