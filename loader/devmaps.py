"""Keep the kernel's per-group devmaps exactly equal to the membership.

``groups`` is a HASH_OF_MAPS keyed by group address (4 bytes, network order);
each value is a DEVMAP_HASH of the subscribed ports (key = value = ifindex),
which the XDP programs hand to ``bpf_redirect_map(.., BPF_F_BROADCAST |
BPF_F_EXCLUDE_INGRESS)``. BPF programs cannot write devmaps, so this class
is their only writer.

A new group's inner map is filled *before* it is inserted in the outer map
(no packet ever sees an empty group); a group's last port is taken out of
its devmap at once, then the group is removed from the outer map, and the
inner map's fd is closed (the kernel frees it once no program uses it).

Why outer-map writes run on helper threads: after every update or delete of
a map-in-map, the kernel waits for an RCU grace period (``synchronize_rcu``,
~10-30 ms on this machine) before the syscall returns, so that no program
still uses a replaced inner map. The write itself is visible to programs
*before* that wait. Group *removals* are therefore handed to a writer thread
and the controller only waits until the change is visible (a cheap lookup),
never for the grace period. A *creation* is written by the controller itself
when no other outer write is in flight, or when the controller has been
quiet (no outer write) for ``QUIET_BEFORE_INLINE`` -- the fastest path for
the join at hand: measured, a hand-off to a writer thread and polling for
visibility cost 0.4 ms at p50 and up to 4 ms. The grace period then delays
only the events that follow it, and after a quiet spell there are rarely
any; a removal still in its grace period does not matter (its effect is
already visible; the same group re-created waits for its removal to land).
During a burst (outer writes in flight, recent activity) creations go to
the writer thread, so the burst is never serialised on grace periods.
Inside ``with sync.batch():`` creations and removals are queued and written
with one BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH.

A join that creates a group costs one syscall on the event's path: each
known port has a devmap holding just that port made ahead of time
(``replenish``, when idle), and the outer insert goes through ``ElemWriter``'s
prebuilt attr. Port additions and removals on existing groups are plain devmap writes,
which do not wait, and are made immediately.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from programs.events import MAX_PORTS
from pybpfasm import maps, syscall

_PORT = struct.Struct("<I")  # devmap key and value: the ifindex
VISIBLE_TIMEOUT = 5.0  # seconds: a write not visible by then is an error
QUIET_BEFORE_INLINE = 0.005  # seconds without outer writes after which a creation is written inline
SPIN_PAUSE = 20e-6  # seconds between visibility checks (releases the GIL to the writer thread)


MAX_PREFILLED_PORTS = 64  # ports that get a ready-made one-port devmap for their next new group


def new_inner_map(name: str = "mcast_ports") -> maps.DevMapHash:
    return maps.DevMapHash(max_entries=MAX_PORTS, name=name)


class ElemWriter:
    """BPF_MAP_UPDATE_ELEM with one preallocated attr, key/value buffers and syscall arguments.

    The join path's syscall without the generic map layer's per-call packing
    and buffer allocation (~15 us of Python each, measured; more on a cold
    cache after the controller slept): a write is two memmoves and the call.
    """

    _libc = ctypes.CDLL(None, use_errno=True)

    def __init__(self, size: int = 16):
        self._key = ctypes.create_string_buffer(size)
        self._value = ctypes.create_string_buffer(size)
        self._key_view = memoryview(self._key).cast("B")  # filled by slice assignment: no foreign call
        self._value_view = memoryview(self._value).cast("B")
        self._attr = syscall.MapElemAttr(key=ctypes.addressof(self._key), value=ctypes.addressof(self._value))
        self._args = (ctypes.c_long(syscall._NR_BPF), ctypes.c_int(int(syscall.Cmd.MAP_UPDATE_ELEM)),
                      ctypes.byref(self._attr), ctypes.c_uint(ctypes.sizeof(self._attr)))
        self._call = self._libc.syscall
        self._call.restype = ctypes.c_long

    def update(self, map_fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
        """Raises ValueError for a key or value longer than the buffers, BPFError from the kernel."""
        self._key_view[:len(key)] = key
        self._value_view[:len(value)] = value
        attr = self._attr
        attr.map_fd = map_fd
        attr.flags = flags
        if self._call(*self._args) < 0:
            raise syscall.bpf_error(syscall.Cmd.MAP_UPDATE_ELEM, ctypes.get_errno())


class DevmapSync:
    """Writer of the groups hash-of-maps and its inner devmaps."""

    def __init__(self, groups: maps.HashOfMaps, group_stats: maps.Map | None = None):
        self.groups = groups
        self.group_stats = group_stats
        self.inner: dict[bytes, maps.Map] = {}
        self.ports: dict[bytes, set[int]] = {}
        self._insert: dict[bytes, maps.Map] = {}  # filled inner maps not yet in the outer map
        self._delete: set[bytes] = set()  # empty groups still in the outer map
        self._pending: list[Future] = []
        self._last_flush = 0.0  # time.monotonic() of the last flush that wrote creations or removals
        self._removing: dict[bytes, Future] = {}  # outer deletes submitted, maybe not visible yet
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="outer-map-writer")
        self._depth = 0
        self.outer_writes = 0
        self.inline_inserts = True  # see the module docstring
        self._spares: list[maps.Map] = []  # empty inner maps made ahead of time (map creation is slow)
        self._prefilled: dict[int, maps.Map] = {}  # port -> a devmap holding just that port, made ahead of time
        self._writer = ElemWriter()
        self._groups_fd = int(groups.fd)
        self.trace: list[tuple[str, int]] | None = None  # (stage, CLOCK_MONOTONIC ns) when a benchmark traces

    def _mark(self, stage: str) -> None:
        if self.trace is not None:
            self.trace.append((stage, time.monotonic_ns()))

    # ------------------------------------------------------------ adoption
    def adopt(self) -> dict[bytes, set[int]]:
        """Read the groups already in the kernel (controller restart)."""
        for key, inner_id in list(self.groups.ids()):
            group = bytes(key)
            inner = maps.Map.from_id(inner_id)
            self.inner[group] = inner
            self.ports[group] = {struct.unpack("<I", raw)[0] for raw in inner.keys_raw()}
        return {g: set(p) for g, p in self.ports.items()}

    # ------------------------------------------------------------ batching and outer writes
    @contextmanager
    def batch(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.flush()

    def _present(self, group: bytes) -> bool:
        return self.groups.lookup_raw(group) is not None

    def _wait_visible(self, fut: Future, done: Callable[[], bool]) -> None:
        """Spin (lookups, no sleeping) until the writer's change shows, or it failed."""
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while not done():
            time.sleep(SPIN_PAUSE)  # let the writer thread have the GIL (else: a 5 ms switch interval)
            if fut.done():
                fut.result()  # raises the writer's error
                if done():
                    return
                raise RuntimeError("outer map write finished but is not visible")
            if time.monotonic() > deadline:
                raise TimeoutError("outer map write not visible after 5 s")

    def flush(self) -> None:
        """Write queued group creations, then removals; return once programs see both.

        Creations go first: a join waits for nobody's removal.
        """
        self._reap()
        if self._insert:
            pending, self._insert = list(self._insert.items()), {}
            self.outer_writes += 1
            now = time.monotonic()
            quiet = now - self._last_flush >= QUIET_BEFORE_INLINE
            self._last_flush = now
            if self.inline_inserts and (quiet or not self._pending):
                # nothing in flight: write here; the group is live when the update is done,
                # the grace period that follows only delays the next event
                self._mark("outer_start")
                if len(pending) == 1:  # the usual join: one prebuilt syscall
                    group, inner = pending[0]
                    self._writer.update(self._groups_fd, group, struct.pack("<I", int(inner.fd)))
                else:
                    self.groups.update_batch(pending)
                self._mark("outer_end")
            else:
                self._mark("outer_submit")
                fut = self._submit(self.groups.update_batch, pending)
                last = pending[-1][0]
                self._wait_visible(fut, lambda: self._present(last))
                self._mark("outer_visible")
            # counters after the group is live: off the join's critical path (the
            # upstream program counts a group only once its entry exists)
            if self.group_stats is not None:
                for group, _ in pending:
                    self.group_stats.update(group, {})  # zero on every CPU
        if self._delete:
            self._last_flush = time.monotonic()
            gone, self._delete = list(self._delete), set()
            closing = [self.inner.pop(g) for g in gone]
            if self.group_stats is not None:
                for group in gone:
                    self.group_stats.delete(group)
            fut = self._submit(self._remove_groups, gone, closing)
            self.outer_writes += 1
            for group in gone:
                self._removing[group] = fut
            self._wait_visible(fut, lambda: not self._present(gone[-1]))  # exact at return (not the grace period)

    def _submit(self, fn: Callable, *args: object) -> Future:
        """Run ``fn`` on a writer thread; return once that thread is about to make its syscall.

        Waiting on an Event hands the GIL over cleanly; spinning on lookups
        right away would keep the writer thread off the GIL for a whole
        switch interval (5 ms).
        """
        started = threading.Event()

        def run() -> object:
            started.set()
            return fn(*args)

        fut = self._pool.submit(run)
        self._pending.append(fut)
        started.wait(VISIBLE_TIMEOUT)
        return fut

    def replenish(self, ports: Iterable[int] = (), spares: int = 2) -> None:
        """Create inner maps ahead of the next joins (call when idle).

        Each known port gets a devmap already holding that port, so a join
        that creates a group costs one syscall (the outer insert) on the
        event's path; creating and filling a devmap costs ~25 + 15 us.
        """
        while len(self._spares) < spares:
            self._spares.append(new_inner_map())
        for port in ports:
            if port in self._prefilled:
                continue
            if len(self._prefilled) >= MAX_PREFILLED_PORTS:
                break
            inner = new_inner_map()
            try:
                inner[port] = port
            except BaseException:
                inner.close()
                raise
            self._prefilled[port] = inner

    def retain_prefilled(self, ports: Iterable[int]) -> None:
        """Drop the ready-made devmaps of ports that are gone (the port list changed)."""
        keep = set(ports)
        for port in [p for p in self._prefilled if p not in keep]:
            self._prefilled.pop(port).close()

    def _remove_groups(self, gone: list[bytes], inners: list[maps.Map]) -> None:
        try:
            self.groups.delete_batch(gone)
        finally:
            for inner in inners:
                inner.close()

    def _reap(self) -> None:
        """Forget finished writes; raise the first error of a failed one."""
        done = [f for f in self._pending if f.done()]
        if not done:
            return
        self._pending = [f for f in self._pending if not f.done()]
        self._removing = {g: f for g, f in self._removing.items() if not f.done()}
        for f in done:
            f.result()

    def settle(self) -> None:
        """Wait until every outer write, grace period included, has completed."""
        for f in list(self._pending):
            f.result()
        self._reap()

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
        removing = self._removing.get(group)
        if removing is not None and not removing.done():  # its removal is in flight: let it land first
            self._wait_visible(removing, lambda: not self._present(group))
        self._mark("add_new_group")
        inner = self._prefilled.pop(port, None)
        if inner is None:
            inner = self._spares.pop() if self._spares else new_inner_map()
            try:
                self._writer.update(int(inner.fd), _PORT.pack(port), _PORT.pack(port))
            except BaseException:
                inner.close()
                raise
        self._mark("inner_filled")
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
        self.inner[group].delete(port)  # stop forwarding now, drop the group from the outer map next
        self._delete.add(group)
        if self._depth == 0:
            self.flush()

    def reconcile(self, wanted: dict[bytes, set[int]]) -> int:
        """Make the kernel equal to ``wanted`` (group -> ports); returns how many changes it took."""
        changes = 0
        with self.batch():
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
        """What the kernel maps hold right now (read back, not our cache; writes settled first)."""
        self.settle()
        out: dict[bytes, set[int]] = {}
        for key, inner_id in self.groups.ids():
            with maps.Map.from_id(inner_id) as inner:
                out[bytes(key)] = {struct.unpack("<I", raw)[0] for raw in inner.keys_raw()}
        return out

    def close(self) -> None:
        self.flush()
        self.settle()
        self._pool.shutdown(wait=True)
        for inner in [*self.inner.values(), *self._spares, *self._prefilled.values()]:
            inner.close()
        self.inner.clear()
        self._spares.clear()
        self._prefilled.clear()
        self.ports.clear()
