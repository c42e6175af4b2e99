"""The controller: ring buffer -> membership -> devmaps, in one thread, woken by epoll.

Every batch is drained in order (header-only records through the ring
buffer's batch decoder, records with sources through the same list, so
order is kept), each event is applied to the membership model, and a
port-level change is written to the kernel's devmaps immediately. A join
therefore takes effect before the next data packet once its event has been
consumed.

Latency of a join (measured with ``bench/forwarder.py --ftrace``): the ring
buffer wakes the controller ~10 us after the downstream program runs; what
used to dominate was the wait for a CPU after that wake-up (up to a 4 ms
tick), hence the short scheduler slice ``run()`` asks for; the Python path
from the wake-up to the outer-map insert is kept short (a lone record is
decoded without batch machinery, the group's devmap is made ahead of time
with the port in it, the insert is one prebuilt syscall).

On start the controller re-adopts the pinned state: host filter states from
the ``members``/``sources`` maps, the groups' devmaps from the kernel, and
reconciles the two (the membership is authoritative).
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import struct
import time
from collections.abc import Callable

from programs.events import RECORD, Reassembler
from pybpfasm.ringbuf import RingBuffer

from .devmaps import DevmapSync
from .instance import Instance
from .membership import Membership, PortChange

Logger = Callable[[str], None]

WAKEUP_SLICE_US = 100  # the controller thread's scheduler slice (EEVDF custom slice), see request_short_slice
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_ATTR = struct.Struct("=IIQiIQQQII")  # struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes)


def request_short_slice(slice_us: int = WAKEUP_SLICE_US) -> bool:
    """Ask the scheduler to run the calling thread soon after its wake-ups; True if the kernel took it.

    Measured here: the ring buffer wakes the controller ~10 us after the
    report, but with the default slice a woken thread often waits for the
    running task's slice or the next tick before getting a CPU -- up to 4 ms
    (HZ=250) on a busy machine, the whole p99 of join-to-forward. Since Linux
    6.12 a fair-class task may ask for a shorter slice (``sched_attr.sched_runtime``,
    0.1-100 ms); a shorter slice gives an earlier virtual deadline, so the
    woken controller preempts at once. Unlike SCHED_FIFO this cannot starve
    the machine during an IGMP flood: the thread keeps its fair share only.
    Best effort: older kernels ignore or refuse it (False), nothing else changes.
    """
    nr = _SCHED_SETATTR.get(platform.machine())
    if nr is None or os.sched_getscheduler(0) not in (os.SCHED_OTHER, getattr(os, "SCHED_BATCH", 3)):
        return False  # unknown syscall number, or the user chose a real-time policy: leave it alone
    policy = os.sched_getscheduler(0)
    nice = os.getpriority(os.PRIO_PROCESS, 0)  # sched_setattr also sets nice: keep the current one
    attr = ctypes.create_string_buffer(_SCHED_ATTR.pack(_SCHED_ATTR.size, policy, 0, nice, 0,
                                                        slice_us * 1000, 0, 0, 0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(ctypes.c_long(nr), ctypes.c_int(0), attr, ctypes.c_uint(0)) == 0


class Controller:
    def __init__(self, instance: Instance, *, log: Logger | None = None, any_port: bool = False,
                 wakeup_slice_us: int | None = WAKEUP_SLICE_US):
        self.instance = instance
        self.wakeup_slice_us = wakeup_slice_us  # None: leave the scheduler alone
        self.short_slice = False  # whether run() got the short slice
        self.log = log
        self.ring = RingBuffer(instance.maps["events"])
        self.sync = DevmapSync(instance.maps["groups"], instance.maps.get("group_stats"))
        self._host_changes: list[tuple] = []  # persisted after the devmaps are updated (off the join path)
        self.membership = Membership(on_host_change=lambda *change: self._host_changes.append(change))
        self.ports = instance.downstream_ports()
        self.any_port = any_port  # accept events from any ifindex (benchmarks through BPF_PROG_TEST_RUN)
        self.events = 0
        self.changes = 0
        self.ignored = 0
        self.adopted_groups = self.sync.adopt()
        self.adopted_hosts = instance.load_membership(self.membership)
        self.sync.reconcile(self.membership.groups())
        self._batch: list[tuple] = []
        self.reassembler = Reassembler()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ring.watch(self._wake_r)
        self.trace: list[tuple[str, int]] | None = None  # (stage, CLOCK_MONOTONIC ns) when a benchmark traces

    # ------------------------------------------------------------ event handling
    def _odd_record(self, record: memoryview) -> None:
        self.ignored += 1  # not an IgmpEvent (another program sharing the ring?): skip

    def process(self) -> int:
        """Drain the ring buffer and apply every event; returns the number of records."""
        batch = self._batch
        batch.clear()
        self.ring.decode(RECORD, batch, on_other=self._odd_record)
        if not batch:
            return 0
        if self.trace is not None:
            self.trace.append(("decoded", time.monotonic_ns()))
        if len(batch) == 1:  # a lone event (the usual join): straight to the kernel, no batch bookkeeping
            self._apply_all(batch)
        else:
            with self.sync.batch():  # group creations/removals: one outer-map write each way per batch
                self._apply_all(batch)
        if self._host_changes:
            persist = self.instance.persist_host
            for change in self._host_changes:
                persist(*change)
            self._host_changes.clear()
        if self.trace is not None:
            self.trace.append(("applied", time.monotonic_ns()))
        n = len(batch)
        self.events += n
        return n

    def _apply_all(self, batch: list[tuple]) -> None:
        apply, ports, any_port, feed = self.membership.apply, self.ports, self.any_port, self.reassembler.feed
        for t in batch:
            port = t[0]
            if not any_port and port not in ports:
                self.ignored += 1
                continue
            if t[7] or t[5]:  # carries sources (maybe one chunk of a longer record)
                whole = feed(t)
                if whole is None:
                    continue
                change = apply(*whole)
            else:
                change = apply(port, t[1], t[2], t[3], t[4])
            if change is not None:
                self._change(change, t[1])

    def _change(self, change: PortChange, host: bytes) -> None:
        port, group, joined = change
        self.sync.set_port(group, port, joined)
        self.changes += 1
        if self.log is not None:
            name = self.ports.get(port, f"if{port}")
            self.log(f"{'join' if joined else 'leave'} {socket.inet_ntoa(group)} on {name} "
                     f"(host {socket.inet_ntoa(host)})")

    # ------------------------------------------------------------ loop
    def run(self, after_batch: Callable[[], object] | None = None) -> None:
        """Process events until ``stop()``; epoll wakes us for records or for the stop, never a timer.

        ``after_batch`` (if given) runs after every wake-up, e.g. to ship trace stamps.
        The calling thread asks for a short scheduler slice (see ``request_short_slice``).
        """
        if self.wakeup_slice_us is not None:
            self.short_slice = request_short_slice(self.wakeup_slice_us)
        while not self._stopping:
            self.sync.replenish(self.ports)  # idle time: make the next new groups' devmaps now
            self.ring.wait(None)
            if self.trace is not None:
                self.trace.append(("wake", time.monotonic_ns()))
            self.process()
            if after_batch is not None:
                after_batch()

    def stop(self) -> None:
        """Make ``run`` return (thread-safe, async-signal-safe enough for a Python signal handler)."""
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def refresh_ports(self) -> None:
        self.ports = self.instance.downstream_ports()
        self.sync.retain_prefilled(self.ports)

    def verify(self) -> bool:
        """True if the kernel's devmaps hold exactly the membership's ports."""
        return self.sync.kernel_view() == self.membership.groups()

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.ring.close()
        self.sync.close()
