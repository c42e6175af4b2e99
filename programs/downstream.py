"""The downstream XDP program (IGMP snooping + container-to-container multicast).

``build(maps, pass_unknown=False)`` returns the instruction list to load. The
DSL version is used when ``pybpfasm.dsl`` can express it; until then the
hand-written builder version in ``programs.interim`` (same behaviour) is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pybpfasm import isa

from . import interim

# maps the program uses, by the names the instance pins them under
MAPS = ("events", "dn_stats", "scratch", "groups")
IMPLEMENTATION = "interim (pybpfasm.builder)"


def build(maps: Mapping[str, Any], *, pass_unknown: bool = False) -> list[isa.Instruction]:
    return interim.build_downstream(events=maps["events"], stats=maps["dn_stats"], scratch=maps["scratch"],
                                    groups=maps["groups"], pass_unknown=pass_unknown)
