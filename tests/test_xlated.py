"""`pybpfasm dump --xlated` must print exactly what `bpftool prog dump xlated` prints.

Unit part (no kernel): kallsyms resolution as bpftool does it, and agreement of the
TEXT helper's kernel-syntax templates with the older disasm.c that bpftool carries.
Kernel part: programs with map references (hash, array, per-CPU array, prog array,
direct map value), helper calls (inlined and not), BPF-to-BPF calls, atomics and the
newer instructions, loaded and dumped by both tools; plain, opcodes and JSON.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
from contextlib import redirect_stdout

import pytest

from pybpfasm import isa, xlated
from pybpfasm.builder import HelperRef, Label, MapRef
from pybpfasm.cli.main import main as cli_main

M = isa.make

# --------------------------------------------------------------------------
# kallsyms
# --------------------------------------------------------------------------

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 T alias_b
ffffffff81001000 T alias_a
ffffffff81001000 t alias_c
ffffffff81002000 T __bpf_call_base
ffffffff81003000 T bpf_map_lookup_elem
ffffffffc0001000 t bpf_prog_0123456789abcdef_F	[bpf]
0000000000000000 A fixed_percpu_data
"""


def test_kallsyms_lookup_like_bpftool():
    syms = xlated.KernelSymbols.parse(KALLSYMS)
    assert syms.call_base == 0xFFFFFFFF81002000
    assert syms.search(0xFFFFFFFF81003000) == "bpf_map_lookup_elem"
    assert syms.search(0xFFFFFFFFC0001000) == "bpf_prog_0123456789abcdef_F"
    assert syms.search(0xFFFFFFFF81003001) is None
    assert syms.search(0) is None  # zero addresses are never entered
    # bsearch over [_stext, b, a, c, base, lookup, prog]: probes index 3 first -> alias_c
    assert syms.search(0xFFFFFFFF81001000) == "alias_c"
    namer = xlated.XlatedNamer(syms, [0xFFFFFFFFC0001000])
    helper = xlated.RawInsn(0x85, 0, 0, 0, 0x1000)
    assert namer.call_name(helper) == "bpf_map_lookup_elem"
    assert namer.call_name(xlated.RawInsn(0x85, 0, 0, 0, 0x5000)) == "0xffffffff81007000"
    assert namer.call_name(xlated.RawInsn(0x85, 0, 1, 7, 0)) == "+7#bpf_prog_0123456789abcdef_F"
    assert xlated.XlatedNamer(syms, []).call_name(xlated.RawInsn(0x85, 0, 1, -3, 0)) == "-3"


def test_kallsyms_hidden_addresses_resolve_nothing():
    hidden = KALLSYMS.replace("ffffffff81002000 T __bpf_call_base", "0000000000000000 T __bpf_call_base")
    syms = xlated.KernelSymbols.parse(hidden)
    assert syms.addresses == [] and syms.call_base == 0


def test_inconsistent_comparator_uses_merge_sort():
    # addresses more than 2^31 apart: bpftool's (int)(a - b) comparator misorders them; we follow it
    text = "0000000000001000 A percpu_a\nffffffff81000000 T text_a\n0000000000002000 A percpu_b\n" \
           "ffffffff81002000 T __bpf_call_base\nffffffff90000000 T far\n"
    syms = xlated.KernelSymbols.parse(text)
    assert sorted(syms.names) == sorted(["percpu_a", "text_a", "percpu_b", "__bpf_call_base", "far"])
    assert syms.search(0xFFFFFFFF81000000) == "text_a"


# --------------------------------------------------------------------------
# textfmt (today's disasm.c) vs the bpftool 7.1 disasm.c, form by form
# --------------------------------------------------------------------------

_ROLE_VALUES = {
    "reg": lambda r: r.randrange(11),
    "zero": lambda r: 0,
    "mem": lambda r: r.choice([0, 4, -8, 32767, -32768, r.randrange(-500, 500)]),
    "jump16": lambda r: r.choice([0, 1, -1, 300, -32768]),
    "imm": lambda r: r.choice([0, 1, -1, 0x7FFFFFFF, -0x80000000, r.randrange(-(1 << 31), 1 << 31)]),
    "jump32": lambda r: r.choice([0, 5, -5]),
    "helper": lambda r: r.choice([1, 5, 12, 130, 0x12345]),
    "btf": lambda r: r.randrange(1, 1000),
    "btf_fd": lambda r: 0,
    "imm64": lambda r: r.choice([0, 1, (1 << 64) - 1, 0x1122334455667788, r.randrange(1 << 64)]),
}


def _samples(form: isa.Form, rnd: random.Random, n: int = 6) -> list[isa.Instruction]:
    out = []
    for _ in range(n * 4):
        fields = {}
        for name in ("dst", "src", "off", "imm"):
            role = getattr(form, name)
            if name in form.fixed or not isinstance(role, str):
                continue
            maker = _ROLE_VALUES.get(role)
            if maker:
                fields[name] = maker(rnd)
        if form.src in (isa.Pseudo.MAP_VALUE, isa.Pseudo.MAP_IDX_VALUE):
            fields["imm"] = rnd.randrange(1, 5000)
            fields["imm2"] = rnd.randrange(0, 4096)
        elif form.wide and form.src != isa.Pseudo.IMM:
            fields["imm"] = rnd.randrange(1, 5000)
        try:
            out.append(M(form.name, **fields))
        except (isa.EncodingError, ValueError):
            continue
        if len(out) >= n:
            break
    return out


def test_textfmt_kernel_syntax_agrees_with_bpftool_disasm():
    """Every form outside LEGACY_DIVERGENT_FORMS renders the same through textfmt and the 6.1 rules."""
    syms = xlated.KernelSymbols.parse(KALLSYMS)
    namer = xlated.XlatedNamer(syms, [0xFFFFFFFFC0001000])
    rnd = random.Random(1234)
    checked = 0
    mismatches = []
    for form in isa.FORMS:
        if form.name in xlated.LEGACY_DIVERGENT_FORMS:
            continue
        for insn in _samples(form, rnd):
            data = isa.encode(insn)
            modern = xlated.insn_text(data, 0, namer)
            legacy = xlated.legacy_insn_text(xlated.RawInsn.at(data, 0), namer)
            checked += 1
            if modern != legacy:
                mismatches.append(f"{form.name}: textfmt {modern!r} vs disasm.c {legacy!r}")
    assert checked > 300
    assert not mismatches, "\n".join(mismatches[:20])


def test_legacy_spellings_of_newer_instructions():
    namer = xlated.XlatedNamer(xlated.KernelSymbols(), [])

    def text(insn: isa.Instruction) -> str:
        return xlated.insn_text(isa.encode(insn), 0, namer, legacy=True)

    def modern(insn: isa.Instruction) -> str:
        return xlated.insn_text(isa.encode(insn), 0, namer)

    # by default, today's disasm.c spellings
    assert modern(M("sdiv64_k", dst=1, imm=3)) == "(37) r1 s/= 3"
    assert modern(M("bswap16", dst=1)) == "(d7) r1 = bswap16 r1"

    assert text(M("sdiv64_k", dst=1, imm=3)) == "(37) r1 /= 3"
    assert text(M("smod32_x", dst=1, src=2)) == "(9c) w1 %= w2"
    assert text(M("movsx64_8", dst=1, src=2)) == "(bf) r1 = r2"
    assert text(M("bswap64", dst=2)) == "BUG_alu64_d7"
    assert text(M("ldxsb", dst=3, src=10, off=-8)) == "BUG_ldx_91"
    assert text(M("gotol", imm=4)) == "(06) if w0 jmp 0x4 goto pc+0"
    assert text(M("may_goto", off=3)) == "(e5) if r0 (null) 0x0 goto pc+3"
    # kernel-internal encodings isa refuses: percpu mov, nospec
    assert xlated.legacy_insn_text(xlated.RawInsn(0xBF, 0, 0, -1, 0), namer) == "(bf) r0 = r0"
    assert xlated.legacy_insn_text(xlated.RawInsn(0xC2, 0, 0, 0, 0), namer) == "(c2) nospec"


# --------------------------------------------------------------------------
# Real programs, real bpftool
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpftool():
    path = shutil.which("bpftool")
    if path is None:
        pytest.skip("bpftool not installed (.ci/run installs it for this test)")
    return path


def _big_program(h, a, pa, jt, d) -> list:
    L = Label
    return [
        M("mov64_x", dst=6, src=1),
        M("stw", dst=10, off=-4, imm=0),
        M("mov64_x", dst=2, src=10), M("add64_k", dst=2, imm=-4),
        M("lddw", dst=1, ref=MapRef(h)),
        M("call", ref=HelperRef("map_lookup_elem")),
        M("jeq_k", dst=0, imm=0, ref=L("skip")),
        M("mov64_k", dst=1, imm=1),
        M("atomic_add64", dst=0, src=1, off=0),
        M("atomic_fetch_add32", dst=0, src=1, off=4),
        L("skip"),
        M("mov64_x", dst=2, src=10), M("add64_k", dst=2, imm=-4),
        M("lddw", dst=1, ref=MapRef(a)),
        M("call", ref=HelperRef("map_lookup_elem")),
        M("jeq_k", dst=0, imm=0, ref=L("skip2")),
        M("ldxdw", dst=3, src=0, off=0),
        L("skip2"),
        M("mov64_x", dst=2, src=10), M("add64_k", dst=2, imm=-4),
        M("lddw", dst=1, ref=MapRef(pa)),
        M("call", ref=HelperRef("map_lookup_elem")),
        M("lddw", dst=7, ref=MapRef(d, value_offset=8)),
        M("ldxw", dst=3, src=7, off=0),
        M("lddw", dst=4, imm=0x1122334455667788),
        M("lddw", dst=4, imm=(1 << 64) - 5),
        M("call", ref=HelperRef("ktime_get_ns")),
        M("call", ref=HelperRef("get_smp_processor_id")),
        M("call", ref=HelperRef("get_prandom_u32")),
        M("mov64_x", dst=1, src=6),
        M("call_local", ref=L("sub")),
        M("mov64_x", dst=1, src=6),
        M("lddw", dst=2, ref=MapRef(jt)),
        M("mov64_k", dst=3, imm=0),
        M("call", ref=HelperRef("tail_call")),
        M("ldxw", dst=2, src=6, off=0), M("ldxw", dst=3, src=6, off=4),
        M("jgt_x", dst=2, src=3, ref=L("out")),
        M("jset32_k", dst=2, imm=-16, ref=L("out")),
        M("jslt_k", dst=2, imm=-3, ref=L("out")),
        M("be16", dst=2), M("le32", dst=2), M("neg32", dst=2), M("neg64", dst=2),
        M("arsh32_k", dst=2, imm=3), M("mod64_k", dst=2, imm=7), M("mov64_k", dst=3, imm=9),
        M("xor32_x", dst=2, src=3),
        M("stxdw", dst=10, src=2, off=-16), M("sth", dst=10, off=-18, imm=-2),
        M("atomic_xchg64", dst=10, src=2, off=-16), M("mov64_k", dst=0, imm=0),
        M("atomic_cmpxchg64", dst=10, src=2, off=-16),
        M("atomic_fetch_xor64", dst=10, src=2, off=-16), M("atomic_or32", dst=10, src=2, off=-16),
        L("out"),
        M("mov64_k", dst=0, imm=2),
        M("exit"),
        L("sub"),
        M("mov64_k", dst=0, imm=0),
        M("call_local", ref=L("sub2")),
        M("exit"),
        L("sub2"),
        M("mov64_k", dst=0, imm=1),
        M("exit"),
    ]


def _newer_insns() -> list:
    return [
        M("stdw", dst=10, off=-8, imm=0), M("mov64_k", dst=1, imm=100), M("mov64_k", dst=2, imm=7),
        M("sdiv64_k", dst=1, imm=3), M("smod32_x", dst=1, src=2), M("movsx64_8", dst=1, src=2),
        M("movsx32_16", dst=3, src=2), M("bswap16", dst=2), M("bswap64", dst=2),
        M("ldxsb", dst=3, src=10, off=-8), M("gotol", imm=0),
        M("mov64_k", dst=0, imm=2), M("exit"),
    ]


def _packet_parser() -> list:
    """Bounds-checked packet access, the kind of code the forwarder runs."""
    L = Label
    return [
        M("ldxw", dst=2, src=1, off=0), M("ldxw", dst=3, src=1, off=4),
        M("mov64_x", dst=4, src=2), M("add64_k", dst=4, imm=14),
        M("jgt_x", dst=4, src=3, ref=L("pass")),
        M("ldxh", dst=5, src=2, off=12),
        M("jne_k", dst=5, imm=0x0008, ref=L("pass")),
        M("ldxb", dst=5, src=2, off=0), M("and32_k", dst=5, imm=1),
        M("jeq_k", dst=5, imm=0, ref=L("pass")),
        M("mov64_k", dst=0, imm=1), M("exit"),
        L("pass"), M("mov64_k", dst=0, imm=2), M("exit"),
    ]


@pytest.fixture(scope="module")
def loaded(kernel):
    from pybpfasm.maps import ArrayMap, HashMap, PerCpuArray, ProgArray
    from pybpfasm.program import Program

    maps = (HashMap(key="I", value="Q", max_entries=4, name="xl_h"),
            ArrayMap(value="QQ", max_entries=4, name="xl_a"),
            PerCpuArray(value="Q", max_entries=4, name="xl_pa"),
            ProgArray(max_entries=4, name="xl_jt"),
            ArrayMap(value="QQ", max_entries=1, name="xl_d"))
    progs = [Program.load(_big_program(*maps), name="xl_big"),
             Program.load(_newer_insns(), name="xl_newer"),
             Program.load(_packet_parser(), name="xl_parse")]
    yield progs
    for p in progs:
        p.close()
    for m in maps:
        m.close()


def _installed_bpftool_is_legacy() -> bool:
    """bpftool built from kernel sources before 6.6 lacks the v4 instructions' spellings."""
    path = shutil.which("bpftool")
    if not path:
        return False
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"\+(\d+)\.(\d+)", out) or re.search(r"v(\d+)\.(\d+)", out)
    if not match:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return (major, minor) < (6, 6) if "+" in out else (major, minor) < (7, 3)


def _ours(*argv: str) -> str:
    """Our dump, spelled like the installed bpftool (legacy spellings for a 6.1-based one)."""
    if argv and argv[0] == "dump" and _installed_bpftool_is_legacy():
        argv = (*argv, "--legacy-bpftool")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(list(argv)) == 0
    return buf.getvalue()


def _theirs(bpftool: str, *argv: str) -> str:
    proc = subprocess.run([bpftool, *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("opcodes", [False, True])
def test_dump_xlated_identical_to_bpftool(loaded, bpftool, opcodes):
    for prog in loaded:
        pid = str(prog.id)
        extra = ["opcodes"] if opcodes else []
        ours = _ours("dump", "--xlated", "id", pid, *(["--opcodes"] if opcodes else []))
        theirs = _theirs(bpftool, "prog", "dump", "xlated", "id", pid, *extra)
        assert ours.splitlines() == theirs.splitlines(), prog.name
        assert ours == theirs


def test_dump_xlated_by_name_pinned_and_json(loaded, bpftool, unique_name):
    big = loaded[0]
    text = _ours("dump", "--xlated", "name", "xl_big")
    assert text == _theirs(bpftool, "prog", "dump", "xlated", "name", "xl_big")
    assert "call pc+" in text and "#bpf_prog_" in text  # BPF-to-BPF call named through the JIT ksyms
    assert "map[id:" in text and "][0]+8" in text and "call bpf_tail_call#12" in text
    pin = f"/sys/fs/bpf/{unique_name}_prog"
    big.pin(pin)
    try:
        assert _ours("dump", "xlated", "pinned", pin) == _theirs(bpftool, "prog", "dump", "xlated", "pinned", pin)
    finally:
        import os

        os.unlink(pin)
    for opcodes in ([], ["opcodes"]):
        ours = json.loads(_ours("dump", "--xlated", "--json", "id", str(big.id), *opcodes))
        theirs = json.loads(_theirs(bpftool, "-j", "prog", "dump", "xlated", "id", str(big.id), *opcodes))
        assert ours == theirs


def test_dump_several_matches_like_bpftool(kernel, bpftool, unique_name):
    from pybpfasm.program import Program

    name = unique_name[:15]
    progs = [Program.load([M("mov64_k", dst=0, imm=i), M("exit")], name=name) for i in (1, 2)]
    try:
        assert _ours("dump", "--xlated", "name", name) == _theirs(bpftool, "prog", "dump", "xlated", "name", name)
        assert json.loads(_ours("dump", "--xlated", "name", name, "--json")) == \
            json.loads(_theirs(bpftool, "-j", "prog", "dump", "xlated", "name", name))
    finally:
        for p in progs:
            p.close()


def test_dump_jited_prints_the_image(loaded):
    big = loaded[0]
    info = big.info()
    text = _ours("dump", "--jited", "id", str(big.id))
    assert text.count("bpf_prog_") == len(info.jited_func_lens) == 3
    hex_bytes = "".join(line.split("\t", 1)[1] for line in text.splitlines() if "\t" in line).replace(" ", "")
    assert bytes.fromhex(hex_bytes) == info.jited


def test_dump_forwarder_programs_identical(kernel, bpftool):
    """The multicast forwarder's programs (DSL-built, hundreds of instructions) dump identically."""
    try:
        from loader.instance import create_maps, load_programs
    except ImportError as exc:  # pragma: no cover - the forwarder is part of this repository
        pytest.skip(f"forwarder not importable: {exc}")
    the_maps = create_maps()
    progs = load_programs(the_maps)
    try:
        for name, prog in progs.items():
            for extra in ([], ["opcodes"]):
                ours = _ours("dump", "xlated", "id", str(prog.id), *extra)
                assert ours == _theirs(bpftool, "prog", "dump", "xlated", "id", str(prog.id), *extra), name
    finally:
        for obj in [*progs.values(), *the_maps.values()]:
            obj.close()


def test_dump_xlated_with_btf_source_lines_like_bpftool(kernel, bpftool, unique_name):
    """A program loaded with BTF line info: bpftool's signature and '; source' lines too."""
    from pybpfasm.isa import SourceLoc
    from pybpfasm.program import Program

    def at(line: int, text: str) -> SourceLoc:
        return SourceLoc("prog.py", line, 1, text)

    insns = [
        M("mov64_k", dst=0, imm=2, source=at(3, "action = XDP_PASS")),
        M("ldxw", dst=1, src=1, off=4, source=at(4, "end = ctx.data_end")),
        M("jeq_k", dst=1, imm=0, off=1, source=at(5, "if end == 0:")),
        M("mov64_k", dst=0, imm=1, source=at(6, "    action = XDP_DROP")),
        M("exit", source=at(7, "return action")),
    ]
    with Program.load(insns, name=unique_name, btf=True) as prog:
        for extra in ([], ["opcodes"], ["linum"]):
            ours = _ours("dump", "xlated", "id", str(prog.id), *extra)
            assert "; end = ctx.data_end" in ours
            assert ours == _theirs(bpftool, "prog", "dump", "xlated", "id", str(prog.id), *extra)
