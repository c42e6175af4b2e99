"""Control-flow clean-up after register allocation: what makes traced code as tight as a compiler's.

Tracing emits structured code with a label at every join and a jump at every
block end.  These passes run to a fixpoint:

* jump threading: a jump to a jump goes straight to the final target;
* a conditional jump over an unconditional one is inverted (one jump fewer);
* a jump to the next instruction is dropped;
* a jump to a short exit sequence (``r0 = K; exit``) is replaced by a copy of it
  (the verifier and the CPU both prefer a straight line to a shared tail);
* unreachable code and unused labels are removed.
"""

from __future__ import annotations

from ..builder import Label
from .ir import Item, Op, is_cond_jump, is_jump

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


def forward_stores(items: list[Item]) -> list[Item]:
    """``*(u64 *)(r10 + X) = rA`` then ``rB = *(u64 *)(r10 + X)``: the load becomes ``rB = rA`` (spill code)."""
    out: list[Item] = []
    for it in items:
        prev = out[-1] if out else None
        if (isinstance(it, Op) and it.form == "ldxdw" and it.src == 10 and isinstance(prev, Op)
                and prev.form == "stxdw" and prev.dst == 10 and prev.off == it.off):
            if it.dst != prev.src:
                out.append(Op("mov64_x", it.dst, prev.src, source=it.source, meta=it.meta))
            continue
        out.append(it)
    return out


def optimize(items: list[Item], max_tail: int = 3) -> list[Item]:
    items = forward_stores(items)
    for _ in range(100):
        new = _pass(items, max_tail)
        if new == items:
            return new
        items = new
    return items


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
