#!/usr/bin/env python3
"""Regenerate pybpfasm/data/helpers.json from a kernel uapi header.

Usage: python tools/gen_helpers.py PATH/TO/include/uapi/linux/bpf.h [> pybpfasm/data/helpers.json]

Reads the helper ids from the ``___BPF_FUNC_MAPPER`` list (``FN(name, id, ...)``)
and each helper's C prototype from the doc comment above it.  Only facts
(names, ids, prototypes) are extracted; the header itself is not committed.
The committed table was generated from libbpf's copy of the uapi header
(libbpf/libbpf, CHECKPOINT-COMMIT 9a3a07d06e7d74f4aecc51396c771149336ac55d of torvalds/linux).
"""

from __future__ import annotations

import json
import re
import sys

_FN = re.compile(r"^\s*FN\((\w+),\s*(\d+),")
_PROTO = re.compile(r"^ \* (?P<ret>[\w ]+?[\s*]+)bpf_(?P<name>\w+)\((?P<args>.*)\)\s*$")


def _split_arg(text: str) -> tuple[str, str]:
    """'const void *key' -> ('const void *', 'key'); '...' -> ('...', '')."""
    text = text.strip()
    if text == "...":
        return "...", ""
    m = re.match(r"^(.*?[\s*])(\w+)$", text)
    if not m:
        return text, ""
    ctype = m.group(1).strip()
    ctype = re.sub(r"\s*\*", " *", ctype).replace("* *", "**")
    return ctype, m.group(2)


def parse(header: str) -> list[dict]:
    lines = header.splitlines()
    ids: dict[str, int] = {}
    for line in lines:
        m = _FN.match(line)
        if m:
            ids[m.group(1)] = int(m.group(2))
    protos: dict[str, dict] = {}
    for i, line in enumerate(lines[:-1]):
        m = _PROTO.match(line)
        if not m or "Description" not in lines[i + 1]:
            continue
        name = m.group("name")
        ret = re.sub(r"\s*\*", " *", m.group("ret").strip()).replace("* *", "**")
        args = [] if m.group("args").strip() in ("", "void") else [
            list(_split_arg(a)) for a in m.group("args").split(",")]
        protos.setdefault(name, {"return_type": ret, "args": args})
    out = []
    for name, hid in sorted(ids.items(), key=lambda kv: kv[1]):
        if name == "unspec":
            continue
        proto = protos.get(name, {"return_type": "long", "args": []})
        out.append({"id": hid, "name": name, **proto})
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        table = parse(f.read())
    json.dump(table, sys.stdout, indent=0)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
