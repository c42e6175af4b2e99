"""Programs with BTF: func_info for main and BPF-to-BPF subprograms (static vs global linkage),
line_info from each instruction's SourceLoc (shown by the verifier log and bpftool), on the real kernel."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pybpfasm import btfext
from pybpfasm.btfext import Func, subprog_entries
from pybpfasm.builder import HelperRef, Label, resolve
from pybpfasm.errors import UserError
from pybpfasm.isa import SourceLoc, make
from pybpfasm.program import Program, VerifierError
from pybpfasm.syscall import XdpAction

FILE = "demo_dsl.py"
FRAME = bytes(range(64))


def at(line: int, text: str) -> SourceLoc:
    return SourceLoc(FILE, line, 5, text)


def calling_program(call_sites: int, *, bad: bool = False) -> list:
    """main calls work(ctx->ingress_ifindex) ``call_sites`` times; work has 6 data-dependent branches,
    so verifying it at every call site costs far more than verifying it once."""
    items: list = [make("mov64_x", dst=6, src=1, source=at(1, "ctx = pkt")),
                   make("mov64_k", dst=7, imm=0, source=at(2, "acc = 0"))]
    for k in range(call_sites):
        src = at(10 + k, f"acc += work(ctx.ingress_ifindex)  # site {k}")
        items += [make("ldxw", dst=1, src=6, off=12, source=src),
                  make("call_local", ref=Label("fn:work"), source=src),
                  make("add64_x", dst=7, src=0, source=src)]
    items += [make("mov64_k", dst=0, imm=XdpAction.PASS, source=at(50, "return XDP_PASS")),
              make("exit", source=at(50, "return XDP_PASS")),
              Label("fn:work"), make("mov64_x", dst=0, src=1, source=at(60, "def work(x):"))]
    for j in range(6):
        src = at(61 + j, f"if x > {j}: x += {j}")
        items += [make("jgt_k", dst=1, imm=j, ref=Label(f"skip{j}"), source=src),
                  make("add64_k", dst=0, imm=j, source=src), Label(f"skip{j}")]
    if bad:
        items.append(make("ldxw", dst=0, src=1, off=0, source=at(70, "return x.deref  # x is a number")))
    items.append(make("exit", source=at(71, "return x")))
    return items


def verified(call_sites: int, linkage: str) -> int:
    with Program.load(calling_program(call_sites), name="pyb_btf_n",
                      funcs={"work": Func(linkage, ("u64",), arg_names=("x",))}) as prog:
        return prog.info(arrays=False).verified_insns


def callback_program() -> list:
    """n = bpf_loop(4, step, 0, 0); the kernel inlines bpf_loop, so xlated slots differ from ours."""
    src = at(90, "  n = loop(4, step)")
    return [
        make("mov64_k", dst=1, imm=4, source=src),
        make("lddw_func", dst=2, ref=Label("step"), source=src),
        make("mov64_k", dst=3, imm=0, source=src),
        make("mov64_k", dst=4, imm=0, source=at(91, "")),
        make("call", ref=HelperRef("bpf_loop"), source=src),
        make("exit", source=at(93, "return n")),
        Label("step"),
        make("mov64_k", dst=0, imm=0, source=at(94, "def step(i, ctx): return 0")),
        make("exit", source=at(94, "def step(i, ctx): return 0")),
    ]


# ----- without the kernel --------------------------------------------------------------------


def test_subprog_entries_from_calls_and_callbacks():
    insns = resolve([
        make("call_local", ref=Label("fn:a")),
        make("lddw_func", dst=2, ref=Label("cb")),
        make("call_local", ref=Label("fn:a")),
        make("exit"),
        Label("fn:a"), make("exit"),
        Label("cb"), make("exit"),
    ])
    assert subprog_entries(insns) == {5: "fn:a", 6: "cb"}  # slots: the ld_imm64 takes two


def test_names_from_labels_and_func_names():
    insns = resolve([make("call_local", ref=Label("fn:csum.v4")), make("call_local", imm=2), make("exit"),
                     Label("fn:csum.v4"), make("exit"), make("exit")])
    info = btfext.build(insns, name="my.prog", func_names={4: "tail"})
    assert [(f.insn_off, f.name, f.linkage) for f in info.functions] == [
        (0, "my_prog", "global"), (3, "csum_v4", "static"), (4, "tail", "static")]
    spec = info.btf.spec()
    main = spec.type(info.functions[0].type_id)
    assert spec.format(main.type) == "int (*)(struct xdp_md * ctx)"
    assert spec.struct("xdp_md").size == 24


def test_line_info_records_changes_and_function_starts():
    a, b = at(1, "x = 1"), at(2, "y = big")
    insns = resolve([make("mov64_k", dst=0, imm=1, source=a), make("mov64_k", dst=1, imm=2, source=a),
                     make("lddw", dst=2, imm=1 << 40, source=b), make("call_local", ref=Label("f"), source=b),
                     make("exit"), Label("f"), make("mov64_k", dst=0, imm=0), make("exit", source=a)])
    info = btfext.build(insns, name="p")
    assert [(off, loc.line) for off, loc in info.lines] == [(0, 1), (2, 2), (6, 1)]  # f's start borrows its line
    assert len(info.line_info) == 16 * 3 and len(info.func_info) == 8 * 2
    bare = resolve([make("call_local", ref=Label("f"), source=a), make("exit"), Label("f"), make("exit"),
                    Label("g"), make("exit", source=b), make("call_local", ref=Label("g"))])
    assert [(off, loc.line) for off, loc in btfext.build(bare).lines] == [(0, 1), (2, 0), (3, 2)]


def test_func_signature_checks():
    with pytest.raises(ValueError, match="linkage"):
        Func("extern")
    with pytest.raises(ValueError, match="argument kind"):
        Func("global", ("ptr",))
    assert Func.of(["pkt", "n"], "global") == Func("global", ("ctx", "u64"), "int", "", ("pkt", "n"))
    insns = resolve([make("exit")])
    with pytest.raises(ValueError, match="no subprogram"):
        btfext.build(insns, funcs={"missing": Func("global")})


# ----- on the kernel ---------------------------------------------------------------------------


def test_global_function_verified_once(kernel):
    static_1, static_8 = verified(1, "static"), verified(8, "static")
    global_1, global_8 = verified(1, "global"), verified(8, "global")
    # A global function costs its body once; each extra call site costs only the caller's 3 insns.
    assert global_8 - global_1 <= 7 * 4
    assert static_8 - static_1 >= 7 * 30  # a static one is re-verified at every call site
    assert global_8 * 4 < static_8


def test_bpftool_shows_source_lines_and_functions(kernel):
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed")
    with Program.load(calling_program(2), name="pyb_btf_src",
                      funcs={"work": Func("global", ("u64",), arg_names=("x",))}) as prog:
        assert prog.test_run(FRAME).retval == XdpAction.PASS
        info = prog.info(arrays=False)
        assert info.btf_id
        out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(info.id)], capture_output=True,
                             text=True, check=True).stdout
        assert "int pyb_btf_src(struct xdp_md * ctx):" in out
        assert "int work(unsigned long long x):" in out
        for line in ("; ctx = pkt", "; acc += work(ctx.ingress_ifindex)  # site 1", "; if x > 5: x += 5",
                     "; return x"):
            assert line in out
        funcs, lines = btfext.prog_debug_info(prog.fd)
        assert [name for _, name in funcs] == ["pyb_btf_src", "work"]
        assert lines[0].file == FILE and lines[0].line == 1 and lines[0].column == 5
        assert lines[0].text == "ctx = pkt"
        assert [f.name for f in prog.functions] == ["pyb_btf_src", "work"]


def bpftool_annotations(prog_id: int, *extra: str) -> dict[int, list[str]]:
    """The non-instruction lines bpftool prints, keyed by the slot of the instruction that follows."""
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id), *extra], capture_output=True,
                         text=True, check=True).stdout
    found: dict[int, list[str]] = {}
    pending: list[str] = []
    for line in out.splitlines():
        head = line.split(":", 1)[0].strip()
        if head.isdigit():
            if pending:
                found[int(head)] = pending
            pending = []
        elif line:
            pending.append(line)
    return found


@pytest.mark.parametrize("linum", [False, True])
def test_xlated_annotations_match_bpftool(kernel, linum):
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed")
    with Program.load(callback_program(), name="pyb_btf_ann", funcs={"step": Func(args=("u32", "ctx"))}) as prog:
        ours = btfext.xlated_annotations(prog.fd, linum=linum)
        assert ours == bpftool_annotations(prog.id, *(["linum"] if linum else []))
        assert ours[0][0] == "int pyb_btf_ann(struct xdp_md * ctx):"


def test_verifier_error_in_global_function_names_source(kernel):
    with pytest.raises(VerifierError) as info:
        Program.load(calling_program(2, bad=True), name="pyb_btf_bad",
                     funcs={"work": Func("global", ("u64",))})
    err = info.value
    assert "invalid mem access 'scalar'" in err.reason
    assert err.source is not None and err.source.line == 70
    assert err.log_source is not None and (err.log_source.file, err.log_source.line) == (FILE, 70)
    assert err.log_source.text == "return x.deref  # x is a number"
    assert "Validating work() func#1" in err.log


def test_global_function_with_ctx_reads_packet(kernel):
    src = at(80, "first_byte(pkt)")
    items = [
        make("call_local", ref=Label("fn:first_byte"), source=src),
        make("exit", source=src),
        Label("fn:first_byte"),
        make("ldxw", dst=2, src=1, off=0, source=at(81, "data = pkt.data")),
        make("ldxw", dst=3, src=1, off=4, source=at(82, "end = pkt.data_end")),
        make("mov64_x", dst=4, src=2, source=at(83, "if data + 1 > end")),
        make("add64_k", dst=4, imm=1, source=at(83, "if data + 1 > end")),
        make("mov64_k", dst=0, imm=XdpAction.ABORTED, source=at(84, "return ABORTED")),
        make("jgt_x", dst=4, src=3, ref=Label("out"), source=at(83, "if data + 1 > end")),
        make("ldxb", dst=0, src=2, off=0, source=at(85, "return data[0]")),
        Label("out"),
        make("exit", source=at(86, "return")),
    ]
    with Program.load(items, name="pyb_btf_ctx", funcs={"first_byte": Func("global", ("ctx",))}) as prog:
        assert prog.test_run(b"\x03" + FRAME[1:]).retval == 3
        assert prog.functions[1].linkage == "global"


def test_callback_subprogram_gets_func_info(kernel):
    """bpf_loop(4, cb, 0, 0): the callback (an ld_imm64 PSEUDO_FUNC target) is a subprogram too."""
    items = callback_program()
    with Program.load(items, name="pyb_btf_cb", btf=True) as prog:
        assert prog.test_run(FRAME).retval == 4
        assert [(f.name, f.insn_off) for f in prog.functions] == [("pyb_btf_cb", 0), ("step", 7)]


def test_btf_off_by_default_and_without_sources(kernel):
    items = [make("mov64_k", dst=0, imm=XdpAction.PASS), make("exit")]
    with Program.load(items, name="pyb_nobtf") as prog:
        assert prog.info(arrays=False).btf_id == 0 and prog.functions == []
    with Program.load(items, name="pyb_btf_nosrc", btf=True) as prog:  # func_info only: no SourceLoc anywhere
        assert prog.info(arrays=False).btf_id and [f.name for f in prog.functions] == ["pyb_btf_nosrc"]


def test_unknown_function_in_funcs_is_a_user_error(kernel):
    with pytest.raises(UserError, match="no subprogram"):
        Program.load([make("mov64_k", dst=0, imm=2), make("exit")], funcs={"nothere": Func("global")})


def test_verifier_error_takes_source_from_log_line_info():
    log = ("func#0 @0\n0: R1=ctx() R10=fp0\n; x = pkt.data[3] @ prog_dsl.py:12\n"
           "0: (61) r0 = *(u32 *)(r1 +64)\ninvalid bpf_context access off=64 size=4\n"
           "processed 1 insns (limit 1000000)\n")
    err = VerifierError("p", log, 13)  # no instructions: the source comes from the log
    assert err.insn_index == 0 and err.reason == "invalid bpf_context access off=64 size=4"
    assert (err.source.file, err.source.line, err.source.text) == ("prog_dsl.py", 12, "x = pkt.data[3]")
    assert "prog_dsl.py:12" in err.summary and "x = pkt.data[3]" in err.summary
