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


def allocate(items: list[Item], new_vreg: Callable[[], int], alloc_slot: Callable[[], int],
             loops: list[tuple[str, str]] | None = None) -> list[Item]:
    """Return ``items`` with every virtual register replaced by r0..r9 (spilling as needed).

    ``loops`` are (body label, exit label) pairs of the function's Range loops: a
    spilled value used but not changed inside a loop without calls is reloaded once
    before the loop instead of at every use in it (live-range splitting where it pays).
    """
    no_spill: set[int] = set()
    split_made: set[int] = set()
    for _round in range(50):
        items = eliminate_dead(items)
        colors, spills = _try_color(items, no_spill)
        if not spills:
            return _rewrite(items, colors)
        items = _spill(items, spills, new_vreg, alloc_slot, no_spill, loops or [], split_made)
    raise RuntimeError("register allocation did not converge")


def _loop_regions(items: list[Item], loops: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """Item index ranges [body label, exit label) of the loops, outermost first."""
    pos = {it.name: i for i, it in enumerate(items) if isinstance(it, Label)}
    out = [(pos[body], pos[exit_]) for body, exit_ in loops
           if body in pos and exit_ in pos and pos[body] < pos[exit_]]
    out.sort(key=lambda r: r[0] - r[1])  # largest first
    return out


def _live_after_calls(items: list[Item]) -> dict[int, set[int]]:
    """Item index of each call -> registers live right after it."""
    bl = Blocks(items)
    live_out = bl.liveness()
    index = {id(it): i for i, it in enumerate(items)}
    out: dict[int, set[int]] = {}
    for b, lo in zip(bl.blocks, live_out):
        live = set(lo)
        for op in reversed(b):
            if op.form.startswith("call"):
                out[index[id(op)]] = set(live)
            d, u = defs_uses(op)
            live.difference_update(d)
            live.update(u)
    return out


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

    def select(order: list[int]) -> tuple[dict[int, int], set[int]]:
        color: dict[int, int] = {r: r for r in range(K)}
        spills: set[int] = set()
        for n in order:
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
        return color, spills

    color, spills = select(stack[::-1])
    if spills:
        # Chaitin's optimistic order spilled something: also try priority order (Chow-Hennessy:
        # the most used per interference first) and keep whichever spills less weighted use.
        prio = sorted(nodes, key=lambda n: (n in no_spill, class_cost.get(n, 0) / (1 + len(adj[n]))), reverse=True)
        color2, spills2 = select(prio)

        def cost(sp: set[int]) -> int:
            return sum(class_cost.get(n, 0) for n in sp)

        if cost(spills2) < cost(spills):
            color, spills = color2, spills2
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
           no_spill: set[int], loops: list[tuple[str, str]], split_made: set[int]) -> list[Item]:
    class_slot: dict[int, int] = {}
    slots: dict[int, int] = {}
    for v, rep in spills.items():
        if rep not in class_slot:
            class_slot[rep] = alloc_slot()
        slots[v] = class_slot[rep]
    # Prefix splitting: before the first call the value must survive, it can live in a register
    # of its own (the code before that call is where the common fast paths usually are).
    live_after = _live_after_calls(items)
    cut: dict[int, int] = {}  # slot -> index of the first call with the class live after it
    for ci in sorted(live_after):
        for v in live_after[ci]:
            if v in slots:
                cut.setdefault(slots[v], ci)
    label_pos = {it.name: i for i, it in enumerate(items) if isinstance(it, Label)}
    back_edges = [(label_pos[it.ref.name], j) for j, it in enumerate(items)
                  if isinstance(it, Op) and isinstance(it.ref, Label) and it.ref.name in label_pos
                  and label_pos[it.ref.name] < j]
    prefix: dict[int, int] = {}  # slot -> new vreg used before the cut
    for slot in set(slots.values()):
        c = cut.get(slot, len(items))
        while True:  # a cut inside a loop moves to the loop's start
            spanning = [t for t, j in back_edges if t < c <= j]
            if not spanning:
                break
            c = min(spanning)
        cut[slot] = c
        members = [v for v, sl in slots.items() if sl == slot]
        if any(v in split_made for v in members):
            continue
        if any(isinstance(it, Op) and any(x in members for x in defs_uses(it)[0] + defs_uses(it)[1])
               for it in items[:c]):
            t = new_vreg()
            split_made.add(t)
            prefix[slot] = t
    # Loop splitting: (region, class) -> vreg holding the class's value throughout that loop.
    regions = _loop_regions(items, loops)
    region_of: dict[int, tuple[int, int]] = {}
    for a, b in regions:
        for i in range(a, b):
            region_of.setdefault(i, (a, b))
    defined_in: set[tuple[tuple[int, int], int]] = set()
    # a value live across a call inside the loop would need a callee-saved register there: not worth it
    for ci, live in _live_after_calls(items).items():
        if ci in region_of:
            for v in live:
                if v in slots:
                    defined_in.add((region_of[ci], slots[v]))
    for (a, b) in regions:  # before the cut the prefix register serves the loop already
        for slot in prefix:
            if a < cut.get(slot, len(items)):
                defined_in.add(((a, b), slot))
    used_in: set[tuple[tuple[int, int], int]] = set()
    for i, it in enumerate(items):
        if isinstance(it, Op) and i in region_of:
            d, u = defs_uses(it)
            for v in d:
                if v in slots:
                    defined_in.add((region_of[i], slots[v]))
            for v in u:
                if v in slots and v not in split_made:
                    used_in.add((region_of[i], slots[v]))
    split: dict[tuple[tuple[int, int], int], int] = {}
    for key in used_in - defined_in:
        t = new_vreg()
        split_made.add(t)
        split[key] = t
    preload: dict[int, list[tuple[int, int]]] = {}
    for (region, slot), t in split.items():
        preload.setdefault(region[0], []).append((t, slot))
    out: list[Item] = []
    for i, it in enumerate(items):
        for t, slot in preload.get(i, ()):
            out.append(Op("ldxdw", t, R10, slot, meta={"depth": 0}))
        if isinstance(it, Label):
            out.append(it)
            continue
        pre = {v: prefix[slots[v]] for v in set(defs_uses(it)[0]) | set(defs_uses(it)[1])
               if v in slots and slots[v] in prefix and i < cut.get(slots[v], len(items))}
        if pre:
            it = Op(it.form, pre.get(it.dst, it.dst), pre.get(it.src, it.src), it.off, it.imm, it.imm2,
                    it.ref, it.source, it.nargs, it.meta)
            stores = [(pre[v], slots[v]) for v in defs_uses(items[i])[0] if v in pre]  # type: ignore[arg-type]
            d, u = defs_uses(it)
            if not any(v in slots for v in set(d) | set(u)):
                out.append(it)
                out.extend(Op("stxdw", R10, t, sl, source=it.source, meta={"spill": True}) for t, sl in stores)
                continue
            # (an op mixing a prefix-split class with another spilled class: handled below, then stored)
            pending_stores = stores
        else:
            pending_stores = []
        if i in region_of:
            region = region_of[i]
            renamed = {v: split[(region, slots[v])] for v in defs_uses(it)[1]
                       if v in slots and (region, slots[v]) in split}
            if renamed:
                it = Op(it.form, renamed.get(it.dst, it.dst), renamed.get(it.src, it.src), it.off, it.imm, it.imm2,
                        it.ref, it.source, it.nargs, it.meta)
        d, u = defs_uses(it)
        touched = [v for v in set(d) | set(u) if v in slots]
        if is_move(it) and it.dst in slots and it.src in slots and slots[it.dst] == slots[it.src]:
            continue  # a copy within one spilled class
        if not touched:
            out.append(it)
            out.extend(Op("stxdw", R10, t, sl, source=it.source, meta={"spill": True}) for t, sl in pending_stores)
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
                out.append(Op("stxdw", R10, repl[v], slots[v], source=it.source, meta={"spill": True}))
        out.extend(Op("stxdw", R10, t, sl, source=it.source, meta={"spill": True}) for t, sl in pending_stores)
    return out
