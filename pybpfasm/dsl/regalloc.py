"""Register allocation for the DSL: liveness, coalescing, graph colouring, spilling.

Virtual registers are coloured with r0..r9 (Chaitin-Briggs: simplify, then
select with optimistic colouring).  Calls define r0..r5, so a value live
across a call interferes with them and can only get a callee-saved r6..r9,
exactly the BPF calling convention.  Copies are coalesced (the two registers
merge when they do not interfere), so the DSL can emit a copy for every
assignment and argument and pay for none.  A value that cannot be coloured is
spilled to an 8-byte stack slot (the verifier tracks spilled pointers there)
and allocation restarts.  Dead, side-effect-free ops are removed first.
"""

from __future__ import annotations

from collections.abc import Callable

from ..builder import Label
from .ir import FIRST_VREG, R10, Item, Op, defs_uses, ends_block, has_side_effect, is_cond_jump, is_jump, is_move

K = 10  # r0..r9
_ORDER = (1, 2, 3, 4, 5, 0, 6, 7, 8, 9)


class Blocks:
    """Basic blocks of an item list, with successors and per-op liveness."""

    def __init__(self, items: list[Item]):
        self.blocks: list[list[Op]] = []
        self.labels: dict[str, int] = {}
        cur: list[Op] = []
        starts: list[list[str]] = [[]]
        for item in items:
            if isinstance(item, Label):
                if cur:
                    self.blocks.append(cur)
                    cur = []
                    starts.append([])
                starts[-1].append(item.name)
            else:
                cur.append(item)
                if is_jump(item) or ends_block(item) or item.form == "may_goto":
                    self.blocks.append(cur)
                    cur = []
                    starts.append([])
        self.blocks.append(cur)
        for i, names in enumerate(starts[:len(self.blocks)]):
            for n in names:
                self.labels[n] = i
        self.succ: list[list[int]] = []
        n = len(self.blocks)
        for i, b in enumerate(self.blocks):
            s: list[int] = []
            last = b[-1] if b else None
            if last is not None and (is_jump(last) or last.form == "may_goto"):
                tgt = last.ref.name if isinstance(last.ref, Label) else None
                if tgt is not None and tgt in self.labels:
                    s.append(self.labels[tgt])
                if (is_cond_jump(last) or last.form == "may_goto") and i + 1 < n:
                    s.append(i + 1)
            elif last is not None and last.form == "exit":
                pass
            elif i + 1 < n:
                s.append(i + 1)
            self.succ.append(s)

    def liveness(self) -> list[set[int]]:
        """live-out set of each block."""
        n = len(self.blocks)
        gen: list[set[int]] = []
        kill: list[set[int]] = []
        for b in self.blocks:
            g: set[int] = set()
            k: set[int] = set()
            for op in b:
                d, u = defs_uses(op)
                g.update(x for x in u if x not in k)
                k.update(d)
            gen.append(g)
            kill.append(k)
        live_in = [set() for _ in range(n)]
        live_out = [set() for _ in range(n)]
        changed = True
        while changed:
            changed = False
            for i in range(n - 1, -1, -1):
                out: set[int] = set()
                for s in self.succ[i]:
                    out |= live_in[s]
                inn = gen[i] | (out - kill[i])
                if out != live_out[i] or inn != live_in[i]:
                    live_out[i], live_in[i] = out, inn
                    changed = True
        return live_out


def eliminate_dead(items: list[Item]) -> list[Item]:
    """Remove ops without side effects whose results are never read (to a fixpoint)."""
    while True:
        bl = Blocks(items)
        live_out = bl.liveness()
        dead: set[int] = set()
        for b, out in zip(bl.blocks, live_out):
            live = set(out)
            for op in reversed(b):
                d, u = defs_uses(op)
                if d and not has_side_effect(op) and not any(x in live for x in d):
                    dead.add(id(op))
                    continue
                live.difference_update(d)
                live.update(u)
        if not dead:
            return items
        items = [it for it in items if isinstance(it, Label) or id(it) not in dead]


class _UF:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent.get(x, x)
        if p == x:
            return x
        r = self.find(p)
        self.parent[x] = r
        return r


def allocate(items: list[Item], new_vreg: Callable[[], int], alloc_slot: Callable[[], int]) -> list[Item]:
    """Return ``items`` with every virtual register replaced by r0..r9 (spilling as needed)."""
    no_spill: set[int] = set()
    for _round in range(50):
        items = eliminate_dead(items)
        colors, spills = _try_color(items, no_spill)
        if not spills:
            return _rewrite(items, colors)
        items = _spill(items, spills, new_vreg, alloc_slot, no_spill)
    raise RuntimeError("register allocation did not converge")


def _try_color(items: list[Item], no_spill: set[int]) -> tuple[dict[int, int], dict[int, int]]:
    bl = Blocks(items)
    live_out = bl.liveness()
    adj: dict[int, set[int]] = {}
    moves: list[tuple[int, int]] = []
    uses_count: dict[int, int] = {}

    def edge(a: int, b: int) -> None:
        if a == b or a == R10 or b == R10:
            return
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)

    for b, out in zip(bl.blocks, live_out):
        live = set(out)
        for op in reversed(b):
            d, u = defs_uses(op)
            w = 10 ** min(op.meta.get("depth", 0), 4)
            for x in d + u:
                if x >= FIRST_VREG:
                    adj.setdefault(x, set())
                    uses_count[x] = uses_count.get(x, 0) + w
            if is_move(op):
                moves.append((op.dst, op.src))
                for y in live:
                    if y != op.src:
                        edge(op.dst, y)
            else:
                for x in d:
                    for y in live:
                        edge(x, y)
            live.difference_update(d)
            live.update(u)

    # Coalesce copies whose ends do not interfere.
    uf = _UF()
    changed = True
    while changed:
        changed = False
        for a, b in moves:
            ra, rb = uf.find(a), uf.find(b)
            if ra == rb or ra == R10 or rb == R10:
                continue
            if ra < FIRST_VREG and rb < FIRST_VREG:
                continue
            if rb in adj.get(ra, ()):
                continue
            if ra < FIRST_VREG:
                ra, rb = rb, ra  # keep the physical register as the representative
            if rb < FIRST_VREG and any(n < FIRST_VREG and n != rb for n in ()):
                continue
            # merge ra into rb
            uf.parent[ra] = rb
            na = adj.pop(ra, set())
            for n in na:
                adj.setdefault(n, set()).discard(ra)
                if n != rb:
                    edge(rb, n)
            changed = True

    nodes = [n for n in adj if n >= FIRST_VREG and uf.find(n) == n]
    class_cost: dict[int, int] = {}
    for x, c in uses_count.items():
        r = uf.find(x)
        class_cost[r] = class_cost.get(r, 0) + c
    # Simplify.
    removed: set[int] = set()
    stack: list[int] = []
    work = set(nodes)

    def degree(n: int) -> int:
        return sum(1 for m in adj[n] if m not in removed)

    while work:
        pick = None
        for n in work:
            if degree(n) < K:
                pick = n
                break
        if pick is None:  # optimistic: push the cheapest to spill
            cands = [n for n in work if n not in no_spill] or list(work)
            pick = max(cands, key=lambda n: degree(n) / (1 + class_cost.get(n, 0)))
        work.discard(pick)
        removed.add(pick)
        stack.append(pick)

    # Select.
    members: dict[int, list[int]] = {}
    for a, b in moves:
        members.setdefault(uf.find(a), []).append(uf.find(b))
        members.setdefault(uf.find(b), []).append(uf.find(a))
    color: dict[int, int] = {r: r for r in range(K)}
    spills: set[int] = set()
    while stack:
        n = stack.pop()
        taken = {color[m] for m in adj[n] if m in color}
        choice = None
        for partner in members.get(n, ()):
            c = color.get(partner)
            if c is not None and c not in taken:
                choice = c
                break
        if choice is None:
            for c in _ORDER:
                if c not in taken:
                    choice = c
                    break
        if choice is None:
            spills.add(n)
        else:
            color[n] = choice
    if spills:
        # spill every original vreg merged into an uncoloured representative (one slot per class)
        out: dict[int, int] = {}
        for x in uses_count:
            if uf.find(x) in spills:
                out[x] = uf.find(x)
        return {}, out  # type: ignore[return-value]
    final: dict[int, int] = {}
    for x in uses_count:
        final[x] = color[uf.find(x)]
    return final, {}


def _rewrite(items: list[Item], colors: dict[int, int]) -> list[Item]:
    out: list[Item] = []
    for it in items:
        if isinstance(it, Label):
            out.append(it)
            continue
        if it.dst >= FIRST_VREG or it.src >= FIRST_VREG:
            it = Op(it.form, colors.get(it.dst, it.dst) if it.dst >= FIRST_VREG else it.dst,
                    colors.get(it.src, it.src) if it.src >= FIRST_VREG else it.src,
                    it.off, it.imm, it.imm2, it.ref, it.source, it.nargs, it.meta)
        if is_move(it) and it.dst == it.src:
            continue
        out.append(it)
    return out


def _spill(items: list[Item], spills: dict[int, int], new_vreg: Callable[[], int], alloc_slot: Callable[[], int],
           no_spill: set[int]) -> list[Item]:
    class_slot: dict[int, int] = {}
    slots: dict[int, int] = {}
    for v, rep in spills.items():
        if rep not in class_slot:
            class_slot[rep] = alloc_slot()
        slots[v] = class_slot[rep]
    out: list[Item] = []
    for it in items:
        if isinstance(it, Label):
            out.append(it)
            continue
        d, u = defs_uses(it)
        touched = [v for v in set(d) | set(u) if v in slots]
        if is_move(it) and it.dst in slots and it.src in slots and slots[it.dst] == slots[it.src]:
            continue  # a copy within one spilled class
        if not touched:
            out.append(it)
            continue
        repl: dict[int, int] = {}
        for v in touched:
            t = new_vreg()
            no_spill.add(t)
            repl[v] = t
            if v in u:
                out.append(Op("ldxdw", t, R10, slots[v], source=it.source))
        new = Op(it.form, repl.get(it.dst, it.dst), repl.get(it.src, it.src), it.off, it.imm, it.imm2, it.ref,
                 it.source, it.nargs, it.meta)
        out.append(new)
        for v in touched:
            if v in d:
                out.append(Op("stxdw", R10, repl[v], slots[v], source=it.source))
    return out
