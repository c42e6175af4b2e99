"""Code sinking: move a pure computation below the early exits that do not need it.

A DSL condition is built by evaluating Python expressions, so
``Any(eth.proto != ETH_P_IP, ip.daddr & MASK != NET, ip.protocol == IGMP)``
emits every load and mask *before* the first short-circuit jump; a C compiler
would compute each operand only on the paths that test it.  This pass, run on
the virtual-register IR before register allocation, moves such an op down
past conditional jumps whose targets do not need its result, to just before
its first use.  The packet-dropping fast paths then execute only what they test.

Only straight-line stretches (no label in between) are considered, and only
ops without side effects that define one virtual register from virtual
registers (or the frame pointer).  An op never moves past a call, a store, an
exit or ``may_goto``; a load never moves past anything that writes memory.
"""

from __future__ import annotations

from ..builder import Label
from .ir import FIRST_VREG, R10, Item, Op, defs_uses, has_side_effect, is_cond_jump, is_jump
from .regalloc import Blocks


def _live_in_at_labels(items: list[Item]) -> dict[str, set[int]]:
    bl = Blocks(items)
    live_out = bl.liveness()
    live_in: list[set[int]] = []
    for b, out in zip(bl.blocks, live_out):
        live = set(out)
        for op in reversed(b):
            d, u = defs_uses(op)
            live.difference_update(d)
            live.update(u)
        live_in.append(live)
    return {name: live_in[i] for name, i in bl.labels.items() if i < len(live_in)}


def _candidate(op: Op) -> int | None:
    """The vreg a movable op defines (None if it may not move)."""
    if has_side_effect(op) or op.form.startswith("lddw"):
        return None
    d, u = defs_uses(op)
    if len(d) != 1 or d[0] < FIRST_VREG:
        return None
    if any(x < FIRST_VREG and x != R10 for x in u):
        return None
    return d[0]


def _barrier(op: Op) -> bool:
    """Nothing moves past these."""
    f = op.form
    return f.startswith(("call", "st", "atomic", "exit", "may_goto", "gotol")) or f == "ja"


def sink(items: list[Item]) -> list[Item]:
    """``items`` with pure ops moved below conditional jumps whose targets do not read them."""
    live_in = _live_in_at_labels(items)
    out = list(items)
    moved = False
    i = len(out) - 1
    while i >= 0:
        op = out[i]
        v = _candidate(op) if isinstance(op, Op) else None
        if v is None:
            i -= 1
            continue
        _, uses = defs_uses(op)  # type: ignore[arg-type]
        dest, passed, q = None, False, i + 1
        while q < len(out):
            nxt = out[q]
            if isinstance(nxt, Label):
                break
            nd, nu = defs_uses(nxt)
            if v in nu or v in nd or any(x in nd for x in uses):
                dest = q
                break
            if _barrier(nxt):
                break
            if is_cond_jump(nxt):
                target = nxt.ref.name if isinstance(nxt.ref, Label) else None
                if target is None or v in live_in.get(target, {v}):
                    break
                passed = True
            elif is_jump(nxt):
                break
            q += 1
        if dest is not None and passed:
            out.insert(dest - 1, out.pop(i))
            moved = True
        i -= 1
    return out if moved else items
