"""The README's code must run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_a_complete_dsl_program():
    assert any("@xdp" in block for block in _python_blocks())


def test_readme_dsl_program_loads_and_runs(kernel):
    (block,) = [b for b in _python_blocks() if "@xdp" in b]
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), namespace)
    assert out.getvalue().strip() == "2"  # XDP_PASS for a zeroed (non-IPv4) frame
    namespace["prog"].close()
    namespace["proto_count"].close()


def test_readme_commands_exist():
    from pybpfasm.cli.main import build_parser

    text = README.read_text()
    commands = set(re.findall(r"^\s+pybpfasm (\w+)", text, re.M))
    known = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert commands <= known, commands - known
