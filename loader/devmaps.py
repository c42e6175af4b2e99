"""Keep the kernel's per-group devmaps exactly equal to the membership.

``groups`` is a HASH_OF_MAPS keyed by group address (4 bytes, network order);
each value is a DEVMAP_HASH of the subscribed ports (key = value = ifindex),
which the XDP programs hand to ``bpf_redirect_map(.., BPF_F_BROADCAST |
BPF_F_EXCLUDE_INGRESS)``. BPF programs cannot write devmaps, so this class
is their only writer. Every operation is a synchronous bpf() syscall, so a
change is visible to the very next packet once the call returns.

A new group's inner map is filled *before* it is inserted in the outer map
(no packet ever sees an empty group); the last port's removal deletes the
group from the outer map first, then the inner map is closed (the kernel
frees it after in-flight programs are done with it).
"""

from __future__ import annotations

import struct

from programs.events import MAX_PORTS
from pybpfasm import maps


def new_inner_map(name: str = "mcast_ports") -> maps.DevMapHash:
    return maps.DevMapHash(max_entries=MAX_PORTS, name=name)


class DevmapSync:
    def __init__(self, groups: maps.HashOfMaps, group_stats: maps.Map | None = None):
        self.groups = groups
        self.group_stats = group_stats
        self.inner: dict[bytes, maps.Map] = {}
        self.ports: dict[bytes, set[int]] = {}
        self._zero_counter = bytes(16)

    # ------------------------------------------------------------ adoption
    def adopt(self) -> dict[bytes, set[int]]:
        """Read the groups already in the kernel (controller restart)."""
        for key, inner_id in list(self.groups.ids()):
            group = bytes(key) if not isinstance(key, bytes) else key
            inner = maps.Map.from_id(inner_id)
            self.inner[group] = inner
            self.ports[group] = {struct.unpack("<I", raw)[0] for raw in inner.keys_raw()}
        return {g: set(p) for g, p in self.ports.items()}

    # ------------------------------------------------------------ changes
    def set_port(self, group: bytes, port: int, member: bool) -> None:
        if member:
            self.add_port(group, port)
        else:
            self.remove_port(group, port)

    def add_port(self, group: bytes, port: int) -> None:
        ports = self.ports.get(group)
        if ports is not None:
            if port not in ports:
                self.inner[group][port] = port
                ports.add(port)
            return
        inner = new_inner_map()
        try:
            inner[port] = port
            if self.group_stats is not None:
                self.group_stats.update(group, [b"\0" * 16] * self.group_stats.ncpus)
            self.groups[group] = inner
        except BaseException:
            inner.close()
            raise
        self.inner[group] = inner
        self.ports[group] = {port}

    def remove_port(self, group: bytes, port: int) -> None:
        ports = self.ports.get(group)
        if ports is None or port not in ports:
            return
        if len(ports) == 1:
            self.groups.delete(group)
            if self.group_stats is not None:
                self.group_stats.delete(group)
            self.inner.pop(group).close()
            del self.ports[group]
            return
        self.inner[group].delete(port)
        ports.discard(port)

    def reconcile(self, wanted: dict[bytes, set[int]]) -> int:
        """Make the kernel equal to ``wanted`` (group -> ports); returns how many changes it took."""
        changes = 0
        for group in list(self.ports):
            for port in list(self.ports.get(group, ())):
                if port not in wanted.get(group, ()):
                    self.remove_port(group, port)
                    changes += 1
        for group, ports in wanted.items():
            for port in ports:
                if port not in self.ports.get(group, ()):
                    self.add_port(group, port)
                    changes += 1
        return changes

    def kernel_view(self) -> dict[bytes, set[int]]:
        """What the kernel maps hold right now (read back, not our cache)."""
        out: dict[bytes, set[int]] = {}
        for key, inner_id in self.groups.ids():
            with maps.Map.from_id(inner_id) as inner:
                out[bytes(key)] = {struct.unpack("<I", raw)[0] for raw in inner.keys_raw()}
        return out

    def close(self) -> None:
        for inner in self.inner.values():
            inner.close()
        self.inner.clear()
        self.ports.clear()
