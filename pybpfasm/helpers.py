"""The kernel's BPF helper functions: ids, names and C prototypes.

The table is data (``pybpfasm/data/helpers.json``) extracted from the kernel
uapi header by ``tools/gen_helpers.py``: ids from ``___BPF_FUNC_MAPPER``,
prototypes from each helper's doc comment.  Names are the kernel's without the
``bpf_`` prefix (``map_lookup_elem``); ``lookup`` accepts both spellings.
Each argument gets a coarse ``kind`` so the DSL can check calls the way the
verifier would think of them (map pointer, context, other pointer, scalar).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

# Types (after normalising "T*" to "T *") that are a program's context pointer.
_CTX_TYPES = frozenset({
    "struct sk_buff *", "struct __sk_buff *", "struct xdp_buff *", "struct xdp_md *",
    "struct sk_msg_buff *", "struct sk_msg_md *", "struct bpf_sock_ops *", "struct bpf_sock_addr *",
    "struct sk_reuseport_md *", "struct pt_regs *", "struct bpf_sysctl *", "struct bpf_sockopt *",
    "struct bpf_perf_event_data *",
})
_CTX_NAMES = frozenset({"ctx", "skb"})
# Map arguments the uapi doc spells "void *" (ringbuf helpers, get_local_storage): ARG_CONST_MAP_PTR in the kernel.
_MAP_NAMES = frozenset({"map", "ringbuf"})


@dataclass(frozen=True)
class HelperArg:
    ctype: str  # C type as written in the uapi doc, e.g. "const void *"
    name: str

    @property
    def kind(self) -> str:
        """"map", "ctx", "ptr", "scalar" or "varargs"."""
        if self.ctype == "...":
            return "varargs"
        if self.ctype == "struct bpf_map *" or self.name in _MAP_NAMES:
            return "map"
        if self.ctype in _CTX_TYPES or (self.name in _CTX_NAMES and self.ctype.endswith("*")):
            return "ctx"
        if self.ctype.endswith("*"):
            return "ptr"
        return "scalar"


@dataclass(frozen=True)
class Helper:
    id: int
    name: str  # without the "bpf_" prefix
    return_type: str
    args: tuple[HelperArg, ...]

    @property
    def returns_pointer(self) -> bool:
        return self.return_type.endswith("*")

    @property
    def kernel_name(self) -> str:
        """The name the kernel (and bpftool) prints: ``bpf_map_lookup_elem``."""
        return "bpf_" + self.name

    @property
    def prototype(self) -> str:
        ret = self.return_type if self.returns_pointer else self.return_type + " "
        args = ", ".join(f"{a.ctype}{'' if a.ctype.endswith('*') else ' '}{a.name}".strip() for a in self.args)
        return f"{ret}{self.kernel_name}({args or 'void'})"


def _load() -> dict[str, Helper]:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "helpers.json")
    with open(path, encoding="utf-8") as f:  # not importlib.resources: it costs ~10 ms of start-up
        text = f.read()
    table: dict[str, Helper] = {}
    for row in json.loads(text):
        args = tuple(HelperArg(ctype, name) for ctype, name in row["args"])
        table[row["name"]] = Helper(row["id"], row["name"], row["return_type"], args)
    return table


HELPERS: dict[str, Helper] = _load()
by_id: dict[int, Helper] = {h.id: h for h in HELPERS.values()}


def lookup(name: str) -> Helper | None:
    """The helper named ``name`` (``map_lookup_elem`` or ``bpf_map_lookup_elem``), or None."""
    helper = HELPERS.get(name)
    if helper is None and name.startswith("bpf_"):
        helper = HELPERS.get(name[4:])
    return helper


def helper_ids() -> dict[str, int]:
    """Name -> id for both spellings (what ``builder.resolve`` needs)."""
    ids = {name: h.id for name, h in HELPERS.items()}
    ids.update({h.kernel_name: h.id for h in HELPERS.values()})
    return ids
