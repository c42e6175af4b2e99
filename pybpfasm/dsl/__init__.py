"""The pybpfasm DSL: XDP programs written as Python functions, compiled to tight BPF.

A program is a Python function decorated with ``@xdp``.  It runs ONCE at build
time with symbolic values: every DSL operation emits code, Python ints fold,
Python ``for x in range(4)`` unrolls.  Control flow on run-time values uses
context managers (a DSL value refuses ``bool()``, so a Python ``if`` on one is
a build error rather than a silent mistake).

Complete example (a per-protocol counter that drops TCP port 8080)::

    from pybpfasm.dsl import xdp, If, Elif, Else, Return, Var, Range, Break, add, XDP_PASS, XDP_DROP
    from pybpfasm.headers import Ethernet, IPv4, TCP, ETH_P_IP, IPPROTO_TCP
    from pybpfasm.layout import u32, u64
    from pybpfasm.maps import PerCpuArray

    counts = PerCpuArray(value=u64, max_entries=256, name="proto_counts")

    @xdp
    def firewall(pkt):
        eth, ip = pkt.headers(Ethernet, IPv4, otherwise=XDP_PASS)   # ONE bounds check for both
        with If(eth.proto != ETH_P_IP):                            # compares raw: no byte swap at run time
            Return(XDP_PASS)
        add(counts, ip.protocol)                                  # lookup + null check + increment
        tcp = ip.next(TCP, skip=(ip.ihl - 5) * 4)                  # variable IHL: variable-offset view
        with If(ip.protocol == IPPROTO_TCP):
            pkt.ensure(tcp, otherwise=XDP_DROP)                   # bounds the offset, checks the end
            with If(tcp.dport == 8080):
                Return(XDP_DROP)
        Return(XDP_PASS)

    prog = firewall.load()             # pybpfasm.program.Program
    firewall.instructions              # list[isa.Instruction], each with .source = DSL file:line

Reference:

* values: header/map/record fields, ``pkt.len``, ``pkt.ifindex``, helper results, ``cond.value()``.
  Operators ``+ - * // % & | ^ << >> ~ -`` (BPF semantics: division truncates, x//0 == 0,
  x%0 == x); comparisons give conditions.  32-bit values use 32-bit instructions.
  ``x.cast(u64)`` / ``x.u64()`` / ``x.s32()`` convert like C, ``cast(5, u64)``.
  Big-endian fields stay raw until their numeric value is needed (``x.value()``).
  ``raw(x)`` marks a value already in memory (network) order: ``ip.check = raw(x)`` (or
  ``ip.set_raw("check", x)``) stores its bits without a byte swap (``x.raw_be(2)`` is the older spelling).
* checksums: ``ip.check = 0; ip.check = csum_fold(csum_diff(0, 0, ip, 20))`` -- ``csum_fold`` folds
  and complements the 32-bit sum and returns it ``raw`` (checksums are sums in memory order);
  incremental (RFC 1624): ``ip.check = csum_fold(csum_diff(old, 4, new, 4, ip.check ^ 0xFFFF))`` with
  ``old``/``new`` views of the replaced bytes -- a big-endian ``seed`` is passed as its bits.
* conditions: comparisons, ``All(a, b)`` / ``a & b``, ``Any(a, b)`` / ``a | b``,
  ``Not(a)`` / ``~a`` (short-circuit), ``pkt.has(view...)``, a map reference (non-null).
* ``with If(c): ...``, ``with Elif(c): ...``, ``with Else(): ...`` (an Elif/Else must directly follow
  its If block: the DSL reads the source to know); ``Return(action_or_value)``.
* ``for i in Range(N): ... Break() ... Continue()`` / ``Range(start, stop, step)`` with constant
  bounds.  ``converge=True`` verifies the loop with ``may_goto`` (the verifier widens the loop state
  instead of walking every iteration); the default converges loops of more than 8 iterations.
  ``Range(..., unroll=k)`` traces the body k times per trip (one may_goto and back edge per k iterations).
* ``v = Var(u32, 0)``; ``v.set(x)``; ``v += 1``; reading a Var not set on every path is an error.
  Values computed inside a block cannot be used after it (use a Var).
* packet: ``pkt.header(L, otherwise=A)``, ``pkt.headers(L1, L2, ..., otherwise=A)``,
  ``pkt.view(L, at=off)``, ``view.next(L, skip=n)``, ``view.at(off, L)``,
  ``pkt.has(*views)``, ``pkt.ensure(*views, otherwise=A)``; ``otherwise`` is an action or
  a callable (run, e.g. to count, before returning what it returns).  ``view.field``
  reads, ``view.field = x`` writes, ``view.addr`` / ``view.offset`` for helpers,
  ``view.field_view("saddr")`` / ``view.field_addr("saddr")`` for one field (``%pI4`` in trace_printk),
  ``copy(dst_view, src_view)``, ``pkt.has(ip.extent(tot_len))`` for "tot_len bytes from ip".
  Bit fields: ``ip.ihl``, ``ip.version``, ``tcp.doff``, ``tcp.syn``.  ``pkt.ifindex``,
  ``pkt.rx_queue``, ``pkt.len``.  A variable offset is bounded (<= 16383) before pointer
  arithmetic unless its range is known statically.
* stack: ``local(Layout, field=..., ...)`` zero-initialised; ``local(u32, x)``.
* maps (``pybpfasm.maps`` objects): ``ref = lookup(m, key)`` then ``with If(ref):`` (or
  ``with If(ref.is_null()): Return(...)``) before ``ref.field`` / ``ref.get()`` /
  ``ref.add(n[, field])``; ``update(m, key, value, flags)``, ``delete(m, key)``;
  ``add(m, key[, n][, field=inc ...][, create=True])`` one-line counters (per-CPU: plain,
  shared: atomic); ``redirect_map(m_or_inner_ref, key, flags)``; map-of-maps lookups
  return an inner-map reference usable as a map argument once null-checked.  A scalar key
  is laid out as the map declares it: a big-endian value (``ip.daddr``) keeps its wire bytes
  in a raw-bytes key (``key=4``, what ``socket.inet_aton`` gives user space) or a be32 key;
  a host-order ``u32`` key refuses it (pass ``ip.daddr.value()`` for the number).
* ring buffer: ``with reserve(events, Event) as ev: ev.x = ...`` (submitted at the end of the
  block; ``with Else():`` for ring-full; padding bytes are always zeroed, ``reserve(..., zero=True)``
  zeroes the whole record); ``submit(ev)`` / ``discard(ev)``;
  ``ringbuf_output(events, view)``.
* helpers: ``call("name", ...)`` or ``bpf.name(...)`` with build-time argument-kind checks,
  ``trace_printk("fmt %d %pI4\\n", x, ip.field_view("saddr"))`` (a view argument passes a pointer to it),
  ``redirect(ifindex)``, ``csum_diff(...)``, ``csum_fold(sum)``.
* ``@subprog`` functions (BPF-to-BPF calls; a parameter named ``pkt`` receives the packet; an annotation
  such as ``host: be32`` passes a network-order value through unchanged); ``@global_func`` for a global
  function, verified once instead of at every call site.
* loading: ``prog.load(**kw)`` is ``Program.load(prog.items, btf=True, funcs=..., **kw)``: BTF func_info
  declares the subprograms (``@global_func`` as global) and line_info carries each instruction's DSL
  line (shown by the verifier log, ``pybpfasm dump --xlated`` and bpftool).  To load the items yourself:
  ``Program.load(c.items, **c.load_options())`` with ``c = prog.compile()``.
* ``emit(isa.make(...))`` appends raw instructions (escape hatch).

Every instruction carries the ``SourceLoc`` of the DSL line that produced it;
build errors (``DslError``) name that line.
"""

from __future__ import annotations

from ..layout import s32, s64, u8, u16, u32, u64
from .calls import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_BROADCAST,
    BPF_F_EXCLUDE_INGRESS,
    BPF_NOEXIST,
    InnerMap,
    MapValue,
    add,
    bpf,
    call,
    csum_diff,
    csum_fold,
    delete,
    discard,
    global_func,
    lookup,
    redirect,
    redirect_map,
    reserve,
    ringbuf_output,
    submit,
    subprog,
    trace_printk,
    update,
)
from .core import (
    All,
    AnyOf,
    Break,
    Cond,
    Continue,
    DslError,
    Elif,
    Else,
    If,
    Not,
    Range,
    Raw,
    Return,
    Scalar,
    Var,
    cast,
    emit,
    raw,
)
from .memory import View, copy, local
from .packet import XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, Packet
from .program import Compiled, XdpProgram, xdp

Any = AnyOf  # noqa: A001 - reads as the DSL's "any of these conditions"

__all__ = [
    "xdp", "XdpProgram", "Compiled", "subprog", "global_func", "Packet", "View", "Scalar", "Cond", "DslError",
    "If", "Elif", "Else", "Return", "Range", "Break", "Continue", "Var", "All", "Any", "AnyOf", "Not",
    "cast", "emit", "local", "copy",
    "lookup", "update", "delete", "add", "redirect_map", "redirect", "reserve", "submit", "discard",
    "ringbuf_output", "trace_printk", "csum_diff", "csum_fold", "raw", "Raw", "call", "bpf", "InnerMap", "MapValue",
    "XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT",
    "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST", "BPF_F_BROADCAST", "BPF_F_EXCLUDE_INGRESS",
    "u8", "u16", "u32", "u64", "s32", "s64",
]
