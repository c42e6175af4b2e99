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
from collections.abc import Iterator
from contextlib import contextmanager

from programs.events import MAX_PORTS
from pybpfasm import maps


def new_inner_map(name: str = "mcast_ports") -> maps.DevMapHash:
    return maps.DevMapHash(max_entries=MAX_PORTS, name=name)


class DevmapSync:
    """Writer of the groups hash-of-maps and its inner devmaps.

    Outer-map writes are expensive: the kernel waits for an RCU grace period
    (``synchronize_rcu``, ~10 ms here) after every update or delete of a
    map-in-map so that no program still uses a replaced inner map. Inside
    ``with sync.batch():`` group creations and removals are therefore queued
    and written with one BPF_MAP_UPDATE_BATCH and one BPF_MAP_DELETE_BATCH
    when the block ends (one grace period each, however many groups).
    Port additions and removals on existing groups are immediate (devmap
    writes do not wait), and a leaving port is taken out of its devmap
    immediately even when the group's removal is still queued.
    """

    def __init__(self, groups: maps.HashOfMaps, group_stats: maps.Map | None = None):
        self.groups = groups
        self.group_stats = group_stats
        self.inner: dict[bytes, maps.Map] = {}
        self.ports: dict[bytes, set[int]] = {}
        self._insert: dict[bytes, maps.Map] = {}  # filled inner maps not yet in the outer map
        self._delete: set[bytes] = set()  # empty groups still in the outer map
        self._depth = 0
        self.outer_writes = 0

    # ------------------------------------------------------------ adoption
    def adopt(self) -> dict[bytes, set[int]]:
        """Read the groups already in the kernel (controller restart)."""
        for key, inner_id in list(self.groups.ids()):
            group = bytes(key)
            inner = maps.Map.from_id(inner_id)
            self.inner[group] = inner
            self.ports[group] = {struct.unpack("<I", raw)[0] for raw in inner.keys_raw()}
        return {g: set(p) for g, p in self.ports.items()}

    # ------------------------------------------------------------ batching
    @contextmanager
    def batch(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.flush()

    def flush(self) -> None:
        """Write queued group creations and removals to the outer map."""
        if self._insert:
            pending, self._insert = self._insert, {}
            if self.group_stats is not None:
                zero = [b"\0" * 16] * self.group_stats.ncpus
                for group in pending:
                    self.group_stats.update(group, zero)
            self.groups.update_batch(list(pending.items()))
            self.outer_writes += 1
        if self._delete:
            gone, self._delete = self._delete, set()
            self.groups.delete_batch(list(gone))
            self.outer_writes += 1
            for group in gone:
                if self.group_stats is not None:
                    self.group_stats.delete(group)
                inner = self.inner.pop(group, None)
                if inner is not None:
                    inner.close()

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
        if group in self._delete:  # emptied earlier in this batch, still in the outer map: reuse it
            self._delete.discard(group)
            self.inner[group][port] = port
            self.ports[group] = {port}
            return
        inner = new_inner_map()
        try:
            inner[port] = port
        except BaseException:
            inner.close()
            raise
        self.inner[group] = inner
        self.ports[group] = {port}
        self._insert[group] = inner
        if self._depth == 0:
            self.flush()

    def remove_port(self, group: bytes, port: int) -> None:
        ports = self.ports.get(group)
        if ports is None or port not in ports:
            return
        if len(ports) > 1:
            self.inner[group].delete(port)
            ports.discard(port)
            return
        del self.ports[group]
        if group in self._insert:  # never became visible
            del self._insert[group]
            self.inner.pop(group).close()
            return
        self.inner[group].delete(port)  # stop forwarding now, drop the group at flush
        self._delete.add(group)
        if self._depth == 0:
            self.flush()

    def reconcile(self, wanted: dict[bytes, set[int]]) -> int:
        """Make the kernel equal to ``wanted`` (group -> ports); returns how many changes it took."""
        with self.batch():
            return self._reconcile(wanted)

    def _reconcile(self, wanted: dict[bytes, set[int]]) -> int:
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
        self.flush()
        for inner in self.inner.values():
            inner.close()
        self.inner.clear()
        self.ports.clear()
