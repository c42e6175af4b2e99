"""Control-flow clean-up after register allocation: what makes traced code as tight as a compiler's.

Tracing emits structured code with a label at every join and a jump at every
block end.  These passes run to a fixpoint:

* jump threading: a jump to a jump goes straight to the final target;
* a conditional jump over an unconditional one is inverted (one jump fewer);
* a jump to the next instruction is dropped;
* a jump to a short exit sequence (``r0 = K; exit``) is replaced by a copy of it
  (the verifier and the CPU both prefer a straight line to a shared tail);
* unreachable code and unused labels are removed;
* spill stores sink past early exits that never reload them (``sink_spills``);
* block layout: early-return blocks move to the end of the function, so the
  path that continues falls through (``exits_last``).
"""

from __future__ import annotations

from typing import Any

from ..builder import Label
from .ir import Item, Op, defs_uses, is_cond_jump, is_jump

INVERSE = {"jeq": "jne", "jne": "jeq", "jgt": "jle", "jle": "jgt", "jge": "jlt", "jlt": "jge",
           "jsgt": "jsle", "jsle": "jsgt", "jsge": "jslt", "jslt": "jsge"}


def invert(op: Op) -> Op | None:
    """The same test with the opposite outcome (None for jset)."""
    base, _, rest = op.form.partition("_")
    width = "32" if base.endswith("32") else ""
    name = base[:-2] if width else base
    if name not in INVERSE:
        return None
    return Op(f"{INVERSE[name]}{width}_{rest}", op.dst, op.src, op.off, op.imm, op.imm2, op.ref, op.source,
              op.nargs, op.meta)


def _target(op: Op) -> str | None:
    return op.ref.name if isinstance(op.ref, Label) else None


def _retarget(op: Op, name: str) -> Op:
    return Op(op.form, op.dst, op.src, op.off, op.imm, op.imm2, Label(name), op.source, op.nargs, op.meta)


def _writes(op: Op) -> tuple[int, ...]:
    from .ir import defs_uses
    return defs_uses(op)[0]


def forward_stores(items: list[Item]) -> list[Item]:
    """Clean spill code inside basic blocks (no labels or jumps in between):

    * a reload of a stack slot whose value is still in a register becomes a copy (or nothing);
    * a store to a slot overwritten before any read in the same block is dropped.
    """
    out: list[Item] = []
    # slot offset -> register known to hold the same 8 bytes
    known: dict[int, int] = {}
    for it in items:
        if isinstance(it, Label) or (isinstance(it, Op) and (is_jump(it) or it.form in ("exit", "may_goto"))):
            known.clear()
            out.append(it)
            continue
        op = it
        if op.form == "ldxdw" and op.src == 10 and op.off in known:
            reg = known[op.off]
            if reg != op.dst:
                new = Op("mov64_x", op.dst, reg, source=op.source, meta=op.meta)
                out.append(new)
                for k in [k for k, r in known.items() if r == op.dst]:
                    del known[k]
            continue
        written = _writes(op)
        if op.form.startswith(("call", "atomic")):
            written = tuple(set(written) | {0, 1, 2, 3, 4, 5})
        if op.meta.get("keep") and op.form.startswith(("st", "atomic")):
            known.clear()  # a raw store may go through any pointer, the stack included
        if op.form.startswith("atomic") and op.dst == 10:
            for k in [k for k in known if k < op.off + 8 and op.off < k + 8]:
                del known[k]
        # a store into the stack invalidates what we knew about the bytes it covers
        if op.form.startswith("st") and op.dst == 10:
            suffix = op.form[3:] if op.form.startswith("stx") else op.form[2:]
            size = {"b": 1, "h": 2, "w": 4, "dw": 8}[suffix]
            for k in [k for k in known if k < op.off + size and op.off < k + 8]:
                del known[k]
        for k in [k for k, r in known.items() if r in written]:
            del known[k]
        if op.form.startswith("call"):
            known.clear()  # helpers may write the stack through pointers
        if op.form == "stxdw" and op.dst == 10:
            known[op.off] = op.src
        elif op.form == "ldxdw" and op.src == 10:
            known[op.off] = op.dst
        out.append(op)
    return _dead_spill_stores(out)


def _dead_spill_stores(items: list[Item]) -> list[Item]:
    """Drop ``*(u64 *)(r10 + X) = r`` when the same block stores to X again before anything reads memory."""
    drop: set[int] = set()
    pending: dict[int, int] = {}  # slot -> index of the last store not yet read
    for i, it in enumerate(items):
        if isinstance(it, Label) or (isinstance(it, Op) and (is_jump(it) or it.form in ("exit", "may_goto"))) or \
                (isinstance(it, Op) and (it.form.startswith(("call", "atomic")) or
                                         (it.form.startswith("ldx") and it.src != 10))):
            pending.clear()
            continue
        op = it
        if op.form.startswith("ldx") and op.src == 10:
            for k in [k for k in pending if k < op.off + 8 and op.off < k + 8]:
                del pending[k]
            continue
        if op.form == "stxdw" and op.dst == 10 and op.meta.get("spill"):
            if op.off in pending:
                drop.add(pending[op.off])
            pending[op.off] = i
        elif op.form.startswith("st") and op.dst == 10:
            for k in [k for k in pending if k < op.off + 8 and op.off < k + 8]:
                del pending[k]
    return [it for i, it in enumerate(items) if i not in drop]


def _key(op: Op, where: dict[str, int] | None = None) -> tuple:
    ref = op.ref
    if isinstance(ref, Label) and where is not None and ref.name in where:
        ref = ("at", where[ref.name])  # two labels at one place are the same target
    return (op.form, op.dst, op.src, op.off, op.imm, op.imm2, ref)


def cross_jump(items: list[Item], min_len: int = 4) -> list[Item]:
    """Tail merging: when two exit paths end with the same ``min_len``+ instructions, the later
    one jumps into the earlier one (clang does the same; fewer instructions to load and verify).
    Labels inside the replaced tail move to the matching instruction of the kept one."""
    counter = 0
    for _ in range(200):
        tails: list[list[int]] = []  # op indices (ascending) of the straight run ending in each exit
        for e, it in enumerate(items):
            if isinstance(it, Op) and it.form == "exit":
                run = [e]
                i = e - 1
                while i >= 0:
                    x = items[i]
                    if isinstance(x, Op):
                        if x.form in ("ja", "gotol", "exit", "may_goto"):
                            break  # conditional jumps fall through: they may be part of a shared tail
                        run.append(i)
                    i -= 1
                tails.append(run[::-1])
        where: dict[str, int] = {}
        for i, it in enumerate(items):
            if isinstance(it, Label):
                j = i
                while j < len(items) and isinstance(items[j], Label):
                    j += 1
                where[it.name] = j
        keys = [_key(it, where) if isinstance(it, Op) else None for it in items]

        def tail_keys(t: list[int], keys: list[Any] = keys) -> list[Any]:
            """Keys of a tail's ops, with jumps into the tail itself written relative to its end."""
            from_end = {idx: len(t) - 1 - n for n, idx in enumerate(t)}
            out = []
            for idx in t:
                k = keys[idx]
                ref = k[-1] if k else None
                if isinstance(ref, tuple) and ref and ref[0] == "at" and ref[1] in from_end:
                    k = k[:-1] + (("rel", from_end[ref[1]]),)
                out.append(k)
            return out

        tkeys = [tail_keys(t) for t in tails]
        best: tuple[int, list[int], list[int]] | None = None
        for bi, b in enumerate(tails):
            kb = tkeys[bi]
            for ai, a in enumerate(tails[:bi]):
                ka = tkeys[ai]
                k = 0
                while k < len(a) and k < len(b) and ka[-1 - k] == kb[-1 - k]:
                    k += 1
                # a relative jump must land inside the merged part
                while k and any(isinstance(x[-1], tuple) and x[-1] and x[-1][0] == "rel" and x[-1][1] >= k
                                for x in kb[len(kb) - k:]):
                    k -= 1
                if k >= min_len and (best is None or k > best[0]):
                    best = (k, a[-k:], b[-k:])
        if best is None:
            return items
        k, a_ops, b_ops = best
        counter += 1
        name = f"xj{counter}.{id(items) & 0xffff}"
        moved: dict[int, list[Label]] = {0: [Label(name)]}
        t = -1
        for j in range(b_ops[0], b_ops[-1] + 1):
            x = items[j]
            if isinstance(x, Op):
                t += 1
            elif j > b_ops[0]:
                moved.setdefault(t + 1, []).append(x)
        a_pos = {idx: n for n, idx in enumerate(a_ops)}
        first_b = items[b_ops[0]]
        out: list[Item] = []
        j = 0
        while j < len(items):
            if j == b_ops[0]:
                out.append(Op("ja", ref=Label(name), source=first_b.source))  # type: ignore[union-attr]
                j = b_ops[-1] + 1
                continue
            if j in a_pos:
                out.extend(moved.get(a_pos[j], []))
            out.append(items[j])
            j += 1
        items = out
    return items


def optimize(items: list[Item], max_tail: int = 3, loops: list[tuple[str, str]] | None = None) -> list[Item]:
    items = forward_stores(items)
    items = _fixpoint(items, max_tail)
    items = _fixpoint(exits_last(cross_jump(items), loops=loops or []), max_tail)
    return _fixpoint(sink_spills(items), max_tail)


def _fixpoint(items: list[Item], max_tail: int) -> list[Item]:
    for _ in range(100):
        new = _pass(items, max_tail)
        if new == items:
            break
        items = new
    return items


def _slot_read_from(items: list[Item], start: int, off: int, pos: dict[str, int]) -> bool:
    """May spill slot ``off`` be read on some path from ``items[start]`` before it is stored again?"""
    seen: set[int] = set()
    todo = [start]
    while todo:
        k = todo.pop()
        while k < len(items) and k not in seen:
            seen.add(k)
            it = items[k]
            if isinstance(it, Op):
                if it.form.startswith("ldx") and it.src == 10 and it.off < off + 8 and off < it.off + 8:
                    return True
                if it.form == "stxdw" and it.dst == 10 and it.off == off:
                    break  # overwritten: the old value is dead on this path
                if it.form == "exit":
                    break
                if (is_jump(it) or it.form == "may_goto") and _target(it) in pos:
                    todo.append(pos[_target(it)])  # type: ignore[index]
                    if it.form in ("ja", "gotol"):
                        break
            k += 1
    return False


def sink_spills(items: list[Item]) -> list[Item]:
    """Move a spill store (``*(u64 *)(r10 - X) = r``, placed where the value is defined) down past
    conditional jumps to paths that never reload it, up to the first label, call, or write of its
    register: a value spilled because it lives across calls further on then costs nothing on the
    early exits (a downstream program's non-IGMP path: ctx and data_end spills at entry)."""
    pos = _label_positions(items)
    out = list(items)
    moved = False
    i = len(out) - 1
    while i >= 0:
        st = out[i]
        if not (isinstance(st, Op) and st.form == "stxdw" and st.dst == 10 and st.meta.get("spill")):
            i -= 1
            continue
        dest, passed, q = None, False, i + 1
        while q < len(out):
            nxt = out[q]
            if isinstance(nxt, Label):
                dest = q
                break
            d, _ = defs_uses(nxt)
            if st.src in d or nxt.form.startswith(("call", "atomic", "exit", "may_goto", "gotol")) or \
                    nxt.form == "ja" or (nxt.form.startswith(("ldx", "st")) and 10 in (nxt.src, nxt.dst) and
                                         nxt.off < st.off + 8 and st.off < nxt.off + 8):
                dest = q
                break
            if is_cond_jump(nxt):
                if _target(nxt) not in pos or _slot_read_from(out, pos[_target(nxt)], st.off, pos):  # type: ignore[index]
                    dest = q
                    break
                passed = True
            q += 1
        if dest is not None and passed:
            out.insert(dest - 1, out.pop(i))
            moved = True
        i -= 1
    return out if moved else items


def exits_last(items: list[Item], max_block: int = 64, loops: list[tuple[str, str]] | None = None) -> list[Item]:
    """Block layout: ``if c goto L; <block ending in exit>; L:`` becomes ``if !c goto B; L: ...``
    with ``B: <block>`` moved to the end of the function.

    A DSL early return (``with If(bad): Return(...)``, ``otherwise=``) is emitted inline, so the
    path that goes on -- the packet's fast path -- jumps over it.  Moving these exiting blocks
    to the end makes the path that continues fall through, as clang lays out its code.
    A moved block keeps its labels (other jumps into it still reach it); it never falls
    through, so execution paths stay the same.  Jumps inside ``loops`` (body, exit label
    pairs) are left alone: there the verifier would walk the iterations before the exits
    and verification got dearer (a record walk: +15% processed instructions).
    """
    pos = _label_positions(items)
    in_loop = [False] * len(items)
    for body, exit_ in loops or []:
        if body in pos:
            for k in range(pos[body], pos.get(exit_, len(items))):
                in_loop[k] = True
    out: list[Item] = []
    tail: list[Item] = []
    i, n, moved = 0, len(items), 0
    while i < n:
        it = items[i]
        if isinstance(it, Op) and is_cond_jump(it) and _target(it) in pos and not in_loop[i]:
            end = pos[_target(it)]  # type: ignore[index]
            inv = invert(it)
            block = items[i + 1:end]
            last = block[-1] if block else None
            if inv is not None and i < end <= i + 1 + max_block and isinstance(last, Op) and \
                    last.form in ("exit", "ja") and any(isinstance(x, Op) and x.form == "exit" for x in block):
                moved += 1
                cold = Label(f"{_target(it)}.exit{moved}")
                out.append(_retarget(inv, cold.name))
                tail += [cold, *block]
                i = end
                continue
        out.append(it)
        i += 1
    return out + tail if moved else items


def _label_positions(items: list[Item]) -> dict[str, int]:
    return {it.name: i for i, it in enumerate(items) if isinstance(it, Label)}


def _first_op_after(items: list[Item], pos: int) -> tuple[int, Op | None]:
    i = pos
    while i < len(items) and isinstance(items[i], Label):
        i += 1
    return i, (items[i] if i < len(items) else None)  # type: ignore[return-value]


def _pass(items: list[Item], max_tail: int) -> list[Item]:
    pos = _label_positions(items)

    def final_target(name: str) -> str:
        seen = set()
        while name not in seen:
            seen.add(name)
            _, op = _first_op_after(items, pos[name])
            if op is not None and op.form == "ja" and _target(op):
                name = _target(op)  # type: ignore[assignment]
            else:
                break
        return name

    out: list[Item] = []
    i = 0
    n = len(items)
    while i < n:
        it = items[i]
        if isinstance(it, Label):
            out.append(it)
            i += 1
            continue
        op = it
        tgt = _target(op) if (is_jump(op) or op.form == "may_goto") else None
        if tgt is not None and tgt in pos:
            ft = final_target(tgt)
            if ft != tgt:
                op = _retarget(op, ft)
                tgt = ft
            # jump to the next instruction
            j, _ = _first_op_after(items, i + 1)
            between = {x.name for x in items[i + 1:j] if isinstance(x, Label)}
            if tgt in between and op.form != "may_goto":
                i += 1
                continue
            # conditional jump over an unconditional one: if c goto L1; ja L2; L1:
            if is_cond_jump(op) and i + 1 < n and isinstance(items[i + 1], Op) and items[i + 1].form == "ja":
                nxt = items[i + 1]
                k, _ = _first_op_after(items, i + 2)
                after = {x.name for x in items[i + 2:k] if isinstance(x, Label)}
                inv = invert(op)
                if tgt in after and inv is not None and _target(nxt):
                    out.append(_retarget(inv, _target(nxt)))  # type: ignore[arg-type]
                    i += 2
                    continue
            # ja to a short exit tail: copy it
            if op.form == "ja":
                start, _ = _first_op_after(items, pos[tgt])
                tail: list[Op] = []
                k = start
                while k < n and len(tail) <= max_tail:
                    x = items[k]
                    if isinstance(x, Label):
                        k += 1
                        continue
                    tail.append(x)
                    if x.form == "exit" or is_jump(x):
                        break
                    k += 1
                if tail and tail[-1].form == "exit" and len(tail) <= max_tail and \
                        all(not is_jump(x) for x in tail):
                    out.extend(Op(x.form, x.dst, x.src, x.off, x.imm, x.imm2, x.ref, x.source, x.nargs, x.meta)
                               for x in tail)
                    i += 1
                    i = _skip_dead(items, i, out)
                    continue
        out.append(op)
        i += 1
        if op.form in ("ja", "exit"):
            i = _skip_dead(items, i, out)
    # drop labels nobody references
    used = {_target(x) for x in out if isinstance(x, Op) and _target(x)}
    used |= {x.ref.name for x in out if isinstance(x, Op) and x.form in ("call_local", "lddw_func")
             and isinstance(x.ref, Label)}
    return [x for x in out if not isinstance(x, Label) or x.name in used or x.name.startswith("fn:")]


def _skip_dead(items: list[Item], i: int, out: list[Item]) -> int:
    """After an unconditional transfer, skip ops until the next label."""
    while i < len(items) and not isinstance(items[i], Label):
        i += 1
    return i
