"""The upstream XDP program, in the DSL: per-group broadcast redirect of IPv4 multicast data.

IPv4 to 224.0.0.0/4 that is not IGMP and not link-local (224.0.0.0/24) is
looked up by group in the hash of per-group devmaps and sent with
``bpf_redirect_map(ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS)`` to
every subscribed port; an unknown group is dropped (or passed, if so built).
Everything else passes. Global {packets, bytes} counters per outcome
(``UpstreamStat``) and, optionally, per-group counters (``group_stats``,
entries created by the controller with the group).

``load(maps, pass_unknown=False, group_counters=True)`` loads it with BTF source lines; ``build`` returns
the instructions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pybpfasm import isa
from pybpfasm.dsl import (
    BPF_F_BROADCAST,
    BPF_F_EXCLUDE_INGRESS,
    XDP_DROP,
    XDP_PASS,
    All,
    Else,
    If,
    Return,
    Var,
    add,
    lookup,
    redirect_map,
    xdp,
)
from pybpfasm.headers import ETH_P_IP, IPPROTO_IGMP, Ethernet, IPv4
from pybpfasm.layout import u32
from pybpfasm.program import Program

from .events import UpstreamStat

MAPS = ("groups", "up_stats", "group_stats")
IMPLEMENTATION = "DSL (pybpfasm.dsl)"
U = UpstreamStat


def program(groups: Any, stats: Any, group_stats: Any | None = None, *, pass_unknown: bool = False) -> Any:
    @xdp(name="mcast_up")
    def upstream(pkt):
        length = pkt.len
        # Passed and unknown-group packets share one counting tail (outcome and action in
        # registers), as clang does for the C reference: fewer instructions than a tail each.
        outcome = Var(u32, U.PASSED)
        action = Var(u32, XDP_PASS)
        eth = pkt.view(Ethernet)
        ip = eth.next(IPv4)
        with If(pkt.has(eth, ip)):
            group = ip.daddr
            with If(All(eth.proto == ETH_P_IP, group & 0xF0000000 == 0xE0000000,
                        ip.protocol != IPPROTO_IGMP, group & 0xFFFFFF00 != 0xE0000000)):
                ports = lookup(groups, group)  # raw 4-byte key: the address bytes as on the wire
                with If(ports.is_null()):
                    outcome.set(U.UNKNOWN_GROUP)
                    action.set(XDP_PASS if pass_unknown else XDP_DROP)
                with Else():
                    if group_stats is not None:
                        add(group_stats, group, packets=1, bytes=length)
                    add(stats, U.FORWARDED, packets=1, bytes=length)
                    Return(redirect_map(ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS))
        add(stats, outcome, packets=1, bytes=length)
        Return(action)

    return upstream


def build(maps: Mapping[str, Any], *, pass_unknown: bool = False, group_counters: bool = True) -> list[isa.Instruction]:
    """The resolved instructions (no BTF: prefer ``load``, which attaches the DSL source lines)."""
    return _program(maps, pass_unknown, group_counters).instructions


def load(maps: Mapping[str, Any], *, pass_unknown: bool = False, group_counters: bool = True, **kw: Any) -> Program:
    """Load with BTF func_info + line_info (``name`` defaults to "mcast_up"; keywords go to ``Program.load``)."""
    return _program(maps, pass_unknown, group_counters).load(**kw)


def _program(maps: Mapping[str, Any], pass_unknown: bool, group_counters: bool) -> Any:
    return program(maps["groups"], maps["up_stats"], maps["group_stats"] if group_counters else None,
                   pass_unknown=pass_unknown)
