"""The XDP packet and its context: header views and coalesced bounds checks.

``pkt.header(Ethernet, otherwise=XDP_PASS)`` is a view of the first 14 bytes
after a bounds check that returns ``XDP_PASS`` when the frame is shorter;
``pkt.headers(Ethernet, IPv4, otherwise=...)`` checks both with ONE
comparison.  ``pkt.has(*views)`` is the check as a condition (``with
If(pkt.has(udp)):``) and ``pkt.ensure(*views, otherwise=...)`` the guard form.
A check already implied on the current path emits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..builder import Label
from .core import U32, U64, Cond, ConstCond, Facts, If, Return, Scalar, as_operand, convert, current, error, host
from .ir import R1
from .memory import VAR_OFFSET_LIMIT, PacketBase, View

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

# struct xdp_md
_CTX_DATA, _CTX_DATA_END, _CTX_DATA_META, _CTX_INGRESS_IFINDEX, _CTX_RX_QUEUE, _CTX_EGRESS_IFINDEX = \
    0, 4, 8, 12, 16, 20

# helpers after which packet pointers must be reloaded (the kernel's bpf_helper_changes_pkt_data list, XDP part)
CHANGES_PKT_DATA = frozenset({"xdp_adjust_head", "xdp_adjust_tail", "xdp_adjust_meta"})


class Ctx:
    """The program's context pointer (``struct xdp_md *``), to pass to helpers taking ``ctx``."""

    def __init__(self, vreg: int):
        self.vreg = vreg


class Packet:
    """The frame being processed, plus ``struct xdp_md`` fields."""

    def __init__(self, ctx_vreg: int):
        b = current()
        self.ctx = Ctx(ctx_vreg)
        self.root = PacketBase(self)
        self._load_pointers(b)

    def _load_pointers(self, b: Any) -> None:
        self.data = b.vreg()
        self.data_end = b.vreg()
        b.emit("ldxw", self.data, self.ctx.vreg, _CTX_DATA)
        b.emit("ldxw", self.data_end, self.ctx.vreg, _CTX_DATA_END)
        b.facts = b.facts.copy()
        b.facts.checked = {self.root.id: (0, self.data)}

    def invalidate(self) -> None:
        """After a helper that moves packet data: every check is void, pointers reloaded."""
        self._load_pointers(current())

    # -- context fields
    def _ctx_u32(self, off: int) -> Scalar:
        b = current()
        t = b.vreg()
        b.emit("ldxw", t, self.ctx.vreg, off)
        return Scalar(t, U32, 0xFFFFFFFF)

    @property
    def ifindex(self) -> Scalar:
        """Ingress interface index."""
        return self._ctx_u32(_CTX_INGRESS_IFINDEX)

    @property
    def rx_queue(self) -> Scalar:
        return self._ctx_u32(_CTX_RX_QUEUE)

    @property
    def len(self) -> Scalar:
        """Frame length (data_end - data) as u64."""
        b = current()
        t = b.vreg()
        b.emit("mov64_x", t, self.data_end)
        b.emit("sub64_x", t, self.data)
        return Scalar(t, U64, 0xFFFF)

    # -- views
    def view(self, layout: Any, at: Any = 0) -> View:
        """An unchecked view of ``layout`` at byte ``at`` (constant or DSL value)."""
        return View(self.root, 0, layout).at(at, layout) if not isinstance(at, int) else View(self.root, at, layout)

    def has(self, *views: View) -> Cond:
        """Condition: every view lies within the frame (one comparison per distinct base)."""
        return PacketHas(self, views)

    def ensure(self, *views: View, otherwise: Any = XDP_PASS) -> None:
        """Return ``otherwise`` (an action, or a callable run before returning what it returns) unless the views fit."""
        cond = PacketHas(self, views)
        if cond.covered():
            return
        with If(~cond):
            act = otherwise() if callable(otherwise) else otherwise
            Return(XDP_PASS if act is None else act)

    def header(self, layout: Any, at: Any = 0, *, after: View | None = None, otherwise: Any = XDP_PASS) -> View:
        """A checked view (``after=view`` places it right after another header)."""
        v = after.next(layout) if after is not None else self.view(layout, at)
        self.ensure(v, otherwise=otherwise)
        return v

    def headers(self, *layouts: Any, at: Any = 0, otherwise: Any = XDP_PASS) -> tuple[View, ...]:
        """Consecutive headers checked with one comparison: ``eth, ip = pkt.headers(Ethernet, IPv4, ...)``."""
        views: list[View] = []
        for lay in layouts:
            views.append(views[-1].next(lay) if views else self.view(lay, at))
        self.ensure(*views, otherwise=otherwise)
        return tuple(views)


class PacketHas(Cond):
    """``data + end <= data_end`` for each base the views use (bounding variable offsets first)."""

    def __init__(self, packet: Packet, views: tuple[View, ...]):
        self.packet = packet
        ends: dict[int, tuple[PacketBase, int]] = {}
        for v in views:
            if not isinstance(v, View) or not isinstance(v._region, PacketBase):
                raise error("pkt.has() takes packet views")
            base = v._region
            end = v._off + v.size
            if base.id in ends:
                end = max(end, ends[base.id][1])
            ends[base.id] = (base, end)
        self.needs = list(ends.values())
        self.ptrs: dict[int, int] = {}

    def covered(self) -> bool:
        f = current().facts
        return all(base.id in f.checked and f.checked[base.id][0] >= end for base, end in self.needs)

    def _pending(self) -> list[tuple[PacketBase, int]]:
        f = current().facts
        return [(base, end) for base, end in self.needs
                if not (base.id in f.checked and f.checked[base.id][0] >= end)]

    def jump_if(self, truth: bool, target: Label) -> None:
        pending = self._pending()
        if not pending:
            ConstCond(True).jump_if(truth, target)
            return
        b = current()
        if truth:
            skip = b.fn.label("short")
            for i, (base, end) in enumerate(pending):
                last = i == len(pending) - 1
                self._check(base, end, skip, target if last else None)
            b.place(skip)
        else:
            for base, end in pending:
                self._check(base, end, target, None)

    def _check(self, base: PacketBase, end: int, fail: Label, success: Label | None) -> None:
        """Emit the check of one base: jump to ``fail`` if short (or to ``success`` if it fits)."""
        b = current()
        ptr = self._materialize(base, fail)
        t = ptr
        if end:
            t = b.vreg()
            b.emit("mov64_x", t, ptr)
            b.emit("add64_k", t, imm=end)
        if success is not None:
            b.emit("jle_x", t, self.packet.data_end, ref=success)
        else:
            b.emit("jgt_x", t, self.packet.data_end, ref=fail)
        self.ptrs[base.id] = ptr

    def _materialize(self, base: PacketBase, fail: Label) -> int:
        b = current()
        got = b.facts.checked.get(base.id)
        if got is not None:
            return got[1]
        parent = base.parent
        if parent is None:  # pragma: no cover - the root is always materialised
            raise error("packet pointers were invalidated")
        pgot = b.facts.checked.get(parent.id) or (self.ptrs.get(parent.id) and (0, self.ptrs[parent.id]))
        if not pgot:
            raise error("check the enclosing header before a header at a variable offset in it")
        var = as_operand(base.var)
        if isinstance(var, int):  # pragma: no cover
            raise error("internal: constant var offset")
        var = convert(host(var), U64)
        if var.ty.signed:
            raise error("a packet offset must be unsigned")
        if var.umax is None or var.umax > VAR_OFFSET_LIMIT:
            b.emit("jgt_k", var.vreg, imm=VAR_OFFSET_LIMIT, ref=fail)
        p = b.vreg()
        b.emit("mov64_x", p, pgot[1])
        if base.const:
            b.emit("add64_k", p, imm=base.const)
        b.emit("add64_x", p, var.vreg)
        return p

    def facts_true(self, f: Facts) -> Facts:
        f = f.copy()
        for base, end in self.needs:
            got = f.checked.get(base.id)
            if got is not None and got[0] >= end:
                continue
            ptr = got[1] if got is not None else self.ptrs.get(base.id)
            if ptr is None:
                continue
            f.checked[base.id] = (end, ptr)
        return f


OtherwiseT = int | Callable[[], Any]
_ = R1
