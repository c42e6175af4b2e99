"""``pybpfasm demo``: the multicast forwarder live, in a lab of network namespaces.

Builds a source host behind the upstream veth and N receiver hosts behind
downstream veths (alternately forced to IGMPv2 and IGMPv3), loads and
attaches the forwarder, streams multicast to several groups, makes receivers
join and leave over time with real kernel sockets, and shows a live table
(receiver x group: packets received and rate). Everything it created is
removed on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pybpfasm.errors import UserError

GROUP_BASE = "239.1.1."


@dataclass
class Cell:
    total: int = 0
    last_total: int = 0
    rate: float = 0.0
    joined: bool = False
    joined_since: float = 0.0
    left_at: float = -1e9


@dataclass
class Plan:
    """Who joins/leaves what and when: seeded, so a run is reproducible."""

    steps: list[tuple[float, int, int, bool]] = field(default_factory=list)  # (t, receiver, group, join)

    @classmethod
    def make(cls, receivers: int, groups: int, duration: float, seed: int) -> Plan:
        rng = random.Random(seed)
        steps: list[tuple[float, int, int, bool]] = []
        joined: set[tuple[int, int]] = set()
        for r in range(receivers):  # everybody starts with one group, some with two
            for g in rng.sample(range(groups), min(groups, 1 + (r % 2))):
                steps.append((0.5 + 0.2 * r, r, g, True))
                joined.add((r, g))
        t = 3.0
        while t < duration - 2.0:
            r, g = rng.randrange(receivers), rng.randrange(groups)
            join = (r, g) not in joined
            (joined.add if join else joined.discard)((r, g))
            steps.append((t, r, g, join))
            t += rng.uniform(0.8, 2.0)
        return cls(sorted(steps))


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.groups = [f"{GROUP_BASE}{i + 1}" for i in range(args.groups)]
        self.prefix = "pybdemo" + os.urandom(1).hex()
        self.lab = None
        self.inst = None
        self.ctl = None
        self.ctl_thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.sent = [0] * args.groups
        self.log: deque[str] = deque(maxlen=6)
        self.cells: dict[tuple[int, int], Cell] = {}

    # ---------------------------------------------------------------- setup / teardown
    def setup(self) -> None:
        from loader.controller import Controller
        from loader.instance import Instance
        from loader.lab import ForwarderLab

        print(f"building lab {self.prefix}: 1 source, {self.args.receivers} receivers ...", flush=True)
        self.lab = ForwarderLab(self.prefix, self.args.receivers, [2, 3])
        self.inst = Instance.create(self.prefix, self.lab.upstream, self.lab.downstreams, mode=self.args.mode)
        self.ctl = Controller(self.inst, log=lambda line: self.log.append(f"{time.strftime('%H:%M:%S')} {line}"))
        self.ctl_thread = threading.Thread(target=self.ctl.run, name="controller", daemon=True)
        self.ctl_thread.start()
        for r in range(self.args.receivers):
            for g in range(len(self.groups)):
                self.cells[(r, g)] = Cell()

    def teardown(self) -> None:
        self.stop.set()
        if self.ctl is not None:
            self.ctl.stop()
            if self.ctl_thread is not None:
                self.ctl_thread.join(5)
            self.ctl.close()
        if self.inst is not None:
            self.inst.remove()
        if self.lab is not None:
            self.lab.close()

    # ---------------------------------------------------------------- traffic
    def sender(self) -> None:
        assert self.lab is not None
        sock = self.lab.source.sender()
        interval = 1.0 / self.args.rate
        payload = b"pybpfasm demo " + bytes(50)
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                for i, group in enumerate(self.groups):
                    sock.sendto(payload, (group, 5001))
                    self.sent[i] += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                else:
                    next_at = time.monotonic()
        finally:
            sock.close()

    def apply(self, receiver: int, group: int, join: bool, now: float) -> None:
        assert self.lab is not None
        host = self.lab.receivers[receiver]
        cell = self.cells[(receiver, group)]
        if join:
            host.join(self.groups[group])
            cell.joined, cell.joined_since = True, now
        else:
            host.leave(self.groups[group])
            cell.joined, cell.left_at = False, now

    def receive(self, timeout: float, now: float) -> None:
        assert self.lab is not None
        socks: dict[socket.socket, tuple[int, int]] = {}
        for r, host in enumerate(self.lab.receivers):
            for g, group in enumerate(self.groups):
                s = host.sockets.get(group)
                if s is not None:
                    socks[s] = (r, g)
        if not socks:
            self.stop.wait(timeout)
            return
        ready, _, _ = select.select(list(socks), [], [], timeout)
        for s in ready:
            r, g = socks[s]
            n = self.lab.receivers[r].drain(self.groups[g])
            self.cells[(r, g)].total += n

    # ---------------------------------------------------------------- display
    def table(self, elapsed: float) -> str:
        assert self.lab is not None and self.inst is not None and self.ctl is not None
        mode = next(iter(self.inst.modes().values()), "?")
        lines = [f"pybpfasm demo: XDP multicast forwarder ({mode} mode)  "
                 f"{elapsed:5.1f}/{self.args.duration:.0f} s   Ctrl-C to stop", ""]
        head = f"{'receiver':<9}{'igmp':<6}" + "".join(f"{g:>20}" for g in self.groups)
        lines.append(head)
        for r, host in enumerate(self.lab.receivers):
            row = f"{host.name:<9}{'v' + str(host.igmp_version):<6}"
            for g in range(len(self.groups)):
                c = self.cells[(r, g)]
                mark = "*" if c.joined else " "
                row += f"{mark}{c.total:>9} {c.rate:>6.0f}/s  "
            lines.append(row)
        sent = "  ".join(f"{g}: {n}" for g, n in zip(self.groups, self.sent))
        lines += ["", f"sent      {sent}",
                  f"controller: {self.ctl.events} IGMP events, {self.ctl.changes} membership changes;  "
                  f"* = joined", "", "recent membership changes:"]
        lines += [f"  {line}" for line in self.log] or ["  (none yet)"]
        return "\n".join(lines)

    def refresh_rates(self, dt: float) -> None:
        for c in self.cells.values():
            c.rate = (c.total - c.last_total) / dt if dt > 0 else 0.0
            c.last_total = c.total

    # ---------------------------------------------------------------- run
    def run(self) -> int:
        self.setup()
        plan = Plan.make(self.args.receivers, len(self.groups), self.args.duration, self.args.seed)
        sender = threading.Thread(target=self.sender, name="sender", daemon=True)
        sender.start()
        tty = sys.stdout.isatty()
        start = time.monotonic()
        last_draw = start
        step = 0
        draw_every = 0.5 if tty else 5.0
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= self.args.duration:
                break
            while step < len(plan.steps) and plan.steps[step][0] <= elapsed:
                _, r, g, join = plan.steps[step]
                self.apply(r, g, join, now)
                step += 1
            self.receive(min(0.1, max(0.0, last_draw + draw_every - now)), now)
            if time.monotonic() - last_draw >= draw_every:
                self.refresh_rates(time.monotonic() - last_draw)
                last_draw = time.monotonic()
                text = self.table(elapsed)
                print(("\x1b[H\x1b[J" + text) if tty else (text + "\n"), flush=True)
        self.stop.set()
        sender.join(2)
        self.refresh_rates(time.monotonic() - last_draw)
        print(("\x1b[H\x1b[J" if tty else "") + self.table(self.args.duration), flush=True)
        return 0


def _run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UserError("the demo needs root (network namespaces, XDP)")
    if args.receivers < 1 or args.receivers > 20:
        raise UserError("--receivers must be 1..20")
    if args.groups < 1 or args.groups > 8:
        raise UserError("--groups must be 1..8")
    demo = Demo(args)
    main_pid = os.getpid()

    def on_term(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:  # a forked helper (pyroute2 netns) inherited us: just go
            os._exit(128 + signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    finally:
        print(f"cleaning up lab {demo.prefix} ...", flush=True)
        demo.teardown()
        signal.signal(signal.SIGTERM, previous)
        print("done: namespaces, veths, programs and pins removed", flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="live multicast forwarding demo in network namespaces")
    p.add_argument("--receivers", type=int, default=4, help="receiver hosts (default 4; alternately IGMPv2/v3)")
    p.add_argument("--groups", type=int, default=3, help="multicast groups streamed (default 3)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    p.add_argument("--rate", type=float, default=50.0, help="packets per second per group (default 50)")
    p.add_argument("--mode", choices=("auto", "native", "generic"), default="auto", help="XDP mode")
    p.add_argument("--seed", type=int, default=1, help="seed of the join/leave schedule")
    p.set_defaults(func=_run)
