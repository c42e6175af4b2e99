"""The controller: ring buffer -> membership -> devmaps, in one thread, woken by epoll.

Every batch is drained in order (header-only records through the ring
buffer's batch decoder, records with sources through the same list, so
order is kept), each event is applied to the membership model, and a
port-level change is written to the kernel's devmaps immediately. A join
therefore takes effect before the next data packet once its event has been
consumed.

On start the controller re-adopts the pinned state: host filter states from
the ``members``/``sources`` maps, the groups' devmaps from the kernel, and
reconciles the two (the membership is authoritative).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from programs.events import RECORD, Reassembler
from pybpfasm.ringbuf import RingBuffer

from .devmaps import DevmapSync
from .instance import Instance
from .membership import Membership, PortChange

Logger = Callable[[str], None]


class Controller:
    def __init__(self, instance: Instance, *, log: Logger | None = None, any_port: bool = False):
        self.instance = instance
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
        apply, ports, any_port, feed = self.membership.apply, self.ports, self.any_port, self.reassembler.feed
        with self.sync.batch():  # group creations/removals: one outer-map write each way per batch
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
        """
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

    def verify(self) -> bool:
        """True if the kernel's devmaps hold exactly the membership's ports."""
        return self.sync.kernel_view() == self.membership.groups()

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.ring.close()
        self.sync.close()
