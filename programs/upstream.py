"""The upstream XDP program: per-group broadcast redirect of IPv4 multicast data.

``build(maps, pass_unknown=False, group_counters=True)`` returns the
instruction list to load (see ``programs.downstream`` about the DSL / interim
versions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pybpfasm import isa

from . import interim

MAPS = ("groups", "up_stats", "group_stats")
IMPLEMENTATION = "interim (pybpfasm.builder)"


def build(maps: Mapping[str, Any], *, pass_unknown: bool = False, group_counters: bool = True) -> list[isa.Instruction]:
    return interim.build_upstream(groups=maps["groups"], stats=maps["up_stats"],
                                  group_stats=maps["group_stats"] if group_counters else None,
                                  pass_unknown=pass_unknown)
