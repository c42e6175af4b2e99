"""Group membership per (downstream port, group), from IGMP v1/v2/v3 events.

A router only needs to know whether *anybody* behind a port wants a group;
we keep a little more -- each reporting host's filter state, as IGMPv3
explicit tracking does -- so that one host leaving does not cut off another
host behind the same port, and so that INCLUDE-mode (source-specific) joins
and their BLOCK/ALLOW updates come out right:

* v1/v2 report: the host is in EXCLUDE{} (wants all sources).
* v2 leave, or v3 TO_IN{} / IS_IN{}: the host leaves.
* v3 IS_EX(S) / TO_EX(S): EXCLUDE(S); IS_IN(S) / TO_IN(S), S non-empty: INCLUDE(S).
* v3 ALLOW(S): INCLUDE adds S, EXCLUDE removes S from its exclusions.
* v3 BLOCK(S): INCLUDE removes S (empty INCLUDE = leave), EXCLUDE adds S.

A port is subscribed to a group while at least one host behind it is a member
(forwarding is (*,G): source filters are tracked, not enforced, in this issue).
Link-local groups (224.0.0.0/24) are ignored: they are never snooped.

``apply`` returns the port-level changes so the devmap sync can act on exactly
those, and ``on_host_change`` lets the instance persist host state for a
restarted controller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from programs.events import IgmpType, RecordType

INCLUDE = 1
EXCLUDE = 2

# (port, group, joined: bool)
PortChange = tuple[int, bytes, bool]
_ASM_JOINS = frozenset((IgmpType.V1_REPORT, IgmpType.V2_REPORT))
_EXCLUDE_RECORDS = frozenset((RecordType.MODE_IS_EXCLUDE, RecordType.CHANGE_TO_EXCLUDE))


def is_snoopable(group: bytes) -> bool:
    """224.0.0.0/4 but not the link-local 224.0.0.0/24."""
    return len(group) == 4 and (group[0] & 0xF0) == 0xE0 and group[:3] != b"\xe0\x00\x00"


@dataclass
class HostState:
    mode: int
    sources: set[bytes] = field(default_factory=set)


class Membership:
    """Host filter states grouped by (port, group)."""

    def __init__(self, on_host_change: Callable[[int, bytes, bytes, HostState | None], None] | None = None):
        self._hosts: dict[tuple[int, bytes], dict[bytes, HostState]] = {}
        self.on_host_change = on_host_change
        self.queries_seen = 0
        self.events_applied = 0

    # ------------------------------------------------------------ queries
    def ports(self, group: bytes) -> set[int]:
        return {port for (port, g), hosts in self._hosts.items() if g == group and hosts}

    def groups(self) -> dict[bytes, set[int]]:
        """group -> subscribed ports (only non-empty groups)."""
        out: dict[bytes, set[int]] = {}
        for (port, group), hosts in self._hosts.items():
            if hosts:
                out.setdefault(group, set()).add(port)
        return out

    def hosts(self, port: int, group: bytes) -> dict[bytes, HostState]:
        return dict(self._hosts.get((port, group), {}))

    def items(self) -> Iterator[tuple[int, bytes, bytes, HostState]]:
        for (port, group), hosts in self._hosts.items():
            for host, state in hosts.items():
                yield port, group, host, state

    def is_member(self, port: int, group: bytes) -> bool:
        return bool(self._hosts.get((port, group)))

    # ------------------------------------------------------------ updates
    def _set(self, port: int, group: bytes, host: bytes, state: HostState | None) -> PortChange | None:
        key = (port, group)
        hosts = self._hosts.get(key)
        before = bool(hosts)
        if state is None:
            if not hosts or host not in hosts:
                return None
            del hosts[host]
            if not hosts:
                del self._hosts[key]
        else:
            if hosts is None:
                hosts = self._hosts[key] = {}
            hosts[host] = state
        if self.on_host_change is not None:
            self.on_host_change(port, group, host, state)
        after = bool(self._hosts.get(key))
        return (port, group, after) if after != before else None

    def restore(self, port: int, group: bytes, host: bytes, state: HostState) -> None:
        """Load persisted state without callbacks (controller restart)."""
        self._hosts.setdefault((port, group), {})[host] = state

    def apply(self, port: int, host: bytes, group: bytes, igmp_type: int, record_type: int = 0,
              sources: Iterable[bytes] = ()) -> PortChange | None:
        """Apply one event; returns the port-level change it caused, if any."""
        self.events_applied += 1
        if igmp_type == IgmpType.QUERY:
            self.queries_seen += 1
            return None
        if not is_snoopable(group):
            return None
        if igmp_type in _ASM_JOINS or (not sources and igmp_type == IgmpType.V3_REPORT
                                       and record_type in _EXCLUDE_RECORDS):
            hosts = self._hosts.get((port, group))
            current = hosts.get(host) if hosts else None
            if current is not None and current.mode == EXCLUDE and not current.sources:
                return None  # the common case: a repeated report (v1/v2, or v3 IS_EX{})
            if igmp_type in _ASM_JOINS:
                return self._set(port, group, host, HostState(EXCLUDE))
        if igmp_type == IgmpType.V2_LEAVE:
            return self._set(port, group, host, None)
        if igmp_type != IgmpType.V3_REPORT:
            return None
        srcs = set(sources)
        current = self._hosts.get((port, group), {}).get(host)
        if record_type in (RecordType.MODE_IS_EXCLUDE, RecordType.CHANGE_TO_EXCLUDE):
            if current is not None and current.mode == EXCLUDE and current.sources == srcs:
                return None
            return self._set(port, group, host, HostState(EXCLUDE, srcs))
        if record_type in (RecordType.MODE_IS_INCLUDE, RecordType.CHANGE_TO_INCLUDE):
            if not srcs:
                return self._set(port, group, host, None)
            return self._set(port, group, host, HostState(INCLUDE, srcs))
        if record_type == RecordType.ALLOW_NEW_SOURCES:
            if current is None:
                return self._set(port, group, host, HostState(INCLUDE, srcs)) if srcs else None
            if current.mode == INCLUDE:
                return self._set(port, group, host, HostState(INCLUDE, current.sources | srcs))
            return self._set(port, group, host, HostState(EXCLUDE, current.sources - srcs))
        if record_type == RecordType.BLOCK_OLD_SOURCES:
            if current is None:
                return None
            if current.mode == INCLUDE:
                left = current.sources - srcs
                return self._set(port, group, host, HostState(INCLUDE, left) if left else None)
            return self._set(port, group, host, HostState(EXCLUDE, current.sources | srcs))
        return None

    def drop_port(self, port: int) -> list[PortChange]:
        """Forget everything behind a port (it went away)."""
        changes = []
        for (p, group), hosts in list(self._hosts.items()):
            if p == port:
                for host in list(hosts):
                    change = self._set(p, group, host, None)
                    if change:
                        changes.append(change)
        return changes
