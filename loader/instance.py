"""One forwarder instance: its maps, two programs, XDP links, all pinned under one directory.

``Instance.create`` builds everything and pins it (all or nothing: on any
failure what was attached is detached and what was pinned is unpinned);
``Instance.open`` re-adopts a pinned instance (after ``--keep`` or a crash);
``remove`` detaches and unpins. Attachments are bpf_links pinned in
``links/<ifname>``, so forwarding survives the controller.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from programs import downstream, upstream
from programs.downstream import WalkState
from programs.events import MAX_GROUPS, MAX_PORTS, N_DOWNSTREAM_STATS, N_UPSTREAM_STATS, RING_SIZE, PacketCounter
from pybpfasm import maps, syscall, xdp
from pybpfasm.errors import UserError
from pybpfasm.program import Program

from .membership import EXCLUDE, HostState, Membership
from .pins import PinError, PinLayout

MAX_MEMBERS = 65536
MAX_SOURCES = 65536
MEMBER_KEY = struct.Struct("<I4s4s")  # port, group, host
SOURCE_KEY = struct.Struct("<I4s4s4s")  # port, group, host, source


class InstanceError(UserError):
    """Cannot create, open or remove a forwarder instance."""


def create_maps(ring_size: int = RING_SIZE) -> dict[str, maps.Map]:
    made: dict[str, maps.Map] = {}
    try:
        made["events"] = maps.RingBuf(max_entries=ring_size, name="events")
        made["dn_stats"] = maps.PerCpuArray(value="<Q", max_entries=N_DOWNSTREAM_STATS, name="dn_stats")
        made["up_stats"] = maps.PerCpuArray(value=PacketCounter, max_entries=N_UPSTREAM_STATS, name="up_stats")
        made["scratch"] = maps.PerCpuArray(value=WalkState, max_entries=1, name="scratch")
        with maps.DevMapHash(max_entries=MAX_PORTS, name="ports_tmpl") as template:
            made["groups"] = maps.HashOfMaps(inner=template, key=4, max_entries=MAX_GROUPS, name="groups")
        made["group_stats"] = maps.PerCpuHash(key=4, value=PacketCounter, max_entries=MAX_GROUPS,
                                              name="group_stats")
        made["members"] = maps.HashMap(key=MEMBER_KEY.size, value="<I", max_entries=MAX_MEMBERS, name="members")
        made["sources"] = maps.HashMap(key=SOURCE_KEY.size, value="<I", max_entries=MAX_SOURCES, name="sources")
    except BaseException:
        for m in made.values():
            m.close()
        raise
    return made


MAP_NAMES = ("events", "dn_stats", "up_stats", "scratch", "groups", "group_stats", "members", "sources")
# key/value codecs to re-open pinned maps with (None: the map class default)
MAP_CODECS: dict[str, tuple[Any, Any]] = {
    "events": (None, None), "dn_stats": (None, "<Q"), "up_stats": (None, PacketCounter), "scratch": (None, WalkState),
    "groups": (4, None), "group_stats": (4, PacketCounter), "members": (MEMBER_KEY.size, "<I"),
    "sources": (SOURCE_KEY.size, "<I"),
}


def load_programs(the_maps: dict[str, maps.Map], *, pass_unknown: bool = False,
                  group_counters: bool = True) -> dict[str, Program]:
    progs: dict[str, Program] = {}
    try:
        # with BTF func_info + line_info: verifier logs, `pybpfasm dump --xlated` and bpftool show DSL lines
        progs["downstream"] = downstream.load(the_maps, pass_unknown=pass_unknown, name="mcast_down")
        progs["upstream"] = upstream.load(the_maps, pass_unknown=pass_unknown, group_counters=group_counters,
                                          name="mcast_up")
    except BaseException:
        for p in progs.values():
            p.close()
        raise
    return progs


def _check_privileges() -> None:
    if os.geteuid() != 0:
        raise InstanceError("needs root (CAP_BPF, CAP_NET_ADMIN) to load and attach XDP programs")


@dataclass
class Instance:
    name: str
    layout: PinLayout
    maps: dict[str, maps.Map]
    progs: dict[str, Program]
    links: dict[str, xdp.XdpLink] = field(default_factory=dict)
    upstream: str | None = None
    downstreams: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, name: str, upstream_if: str, downstream_ifs: list[str], *, mode: str = "auto",
               pass_unknown: bool = False, ring_size: int = RING_SIZE) -> Instance:
        _check_privileges()
        layout = PinLayout(name)
        if layout.exists():
            raise InstanceError(f"instance {name!r} is already loaded (pybpfasm mcast unload --instance {name})")
        names = [upstream_if, *downstream_ifs]
        if len(set(names)) != len(names):
            raise InstanceError("an interface is given twice (upstream and downstreams must all differ)")
        if not downstream_ifs:
            raise InstanceError("at least one downstream interface is needed")
        for ifname in names:
            status = xdp.query_xdp(ifname)  # raises a one-line error for a missing interface
            if status.attached:
                ids = ", ".join(f"{m} id {p}" for m, p in status.prog_ids.items())
                raise InstanceError(f"{ifname} already carries an XDP program ({ids}); detach it first")
        layout.make_dirs()  # fails early, and clearly, without bpffs
        inst: Instance | None = None
        try:
            the_maps = create_maps(ring_size)
            inst = cls(name, layout, the_maps, {}, upstream=upstream_if, downstreams=list(downstream_ifs))
            inst.progs = load_programs(the_maps, pass_unknown=pass_unknown)
            for mname, m in the_maps.items():
                m.pin(layout.map(mname))
            for pname, p in inst.progs.items():
                p.pin(layout.prog(pname))
            for ifname in names:
                prog = inst.progs["upstream" if ifname == upstream_if else "downstream"]
                link = xdp.attach_xdp(ifname, prog, mode=mode, method="link")
                inst.links[ifname] = link  # type: ignore[assignment]
                link.pin(layout.link(ifname))
        except BaseException:
            if inst is not None:
                inst.remove()
            else:
                layout.remove()
            raise
        return inst

    @classmethod
    def open(cls, name: str) -> Instance:
        """Re-adopt a pinned instance."""
        _check_privileges()
        layout = PinLayout(name)
        if not layout.exists():
            raise InstanceError(f"no instance {name!r} (nothing pinned at {layout.base})")
        the_maps: dict[str, maps.Map] = {}
        progs: dict[str, Program] = {}
        try:
            for mname in MAP_NAMES:
                path = layout.map(mname)
                if os.path.exists(path):
                    key, value = MAP_CODECS[mname]
                    the_maps[mname] = maps.Map.from_pinned(path, key=key, value=value)
            for pname in ("upstream", "downstream"):
                path = layout.prog(pname)
                if os.path.exists(path):
                    progs[pname] = Program.from_pinned(path)
        except OSError as exc:
            for o in [*the_maps.values(), *progs.values()]:
                o.close()
            raise InstanceError(f"instance {name!r}: cannot open pinned objects: {exc}") from exc
        inst = cls(name, layout, the_maps, progs)
        up_id = progs["upstream"].id if "upstream" in progs else None
        for ifname in layout.linked_ifnames():
            try:
                link = xdp.XdpLink.from_pinned(layout.link(ifname))
            except UserError:
                continue
            inst.links[ifname] = link
            if up_id is not None and link.prog_id == up_id:
                inst.upstream = ifname
            else:
                inst.downstreams.append(ifname)
        return inst

    # ------------------------------------------------------------ queries
    def port_names(self) -> dict[int, str]:
        """ifindex -> name of the attached interfaces."""
        return {link.ifindex: ifname for ifname, link in self.links.items() if link.attached}

    def downstream_ports(self) -> dict[int, str]:
        return {link.ifindex: ifname for ifname, link in self.links.items()
                if ifname != self.upstream and link.attached}

    def modes(self) -> dict[str, str]:
        return {ifname: link.mode for ifname, link in self.links.items()}

    # ------------------------------------------------------------ host state persistence
    def persist_host(self, port: int, group: bytes, host: bytes, state: HostState | None) -> None:
        """Mirror one host's filter state into the pinned ``members`` / ``sources`` maps."""
        members, sources = self.maps.get("members"), self.maps.get("sources")
        if members is None or sources is None:
            return
        key = MEMBER_KEY.pack(port, group, host)
        old = self._stored_sources.pop(key, set())
        new = set(state.sources) if state is not None else set()
        for src in old - new:
            sources.delete(key + src)
        for src in new - old:
            sources[key + src] = 1
        if new:
            self._stored_sources[key] = new
        if state is None:
            members.delete(key)
        else:
            members[key] = state.mode

    def load_membership(self, membership: Membership) -> int:
        members, sources = self.maps.get("members"), self.maps.get("sources")
        if members is None:
            return 0
        by_key: dict[bytes, set[bytes]] = {}
        if sources is not None:
            for raw in sources.keys_raw():
                by_key.setdefault(bytes(raw[:12]), set()).add(bytes(raw[12:16]))
        n = 0
        for raw, mode in members.items():
            port, group, host = MEMBER_KEY.unpack(bytes(raw))
            srcs = by_key.get(bytes(raw), set())
            if srcs:
                self._stored_sources[bytes(raw)] = set(srcs)
            membership.restore(port, group, host, HostState(mode or EXCLUDE, srcs))
            n += 1
        return n

    def __post_init__(self) -> None:
        self._stored_sources: dict[bytes, set[bytes]] = {}

    # ------------------------------------------------------------ teardown
    def close(self) -> None:
        """Drop this process's fds; pinned objects (and forwarding) stay."""
        for link in self.links.values():
            link.close()
        for p in self.progs.values():
            p.close()
        for m in self.maps.values():
            m.close()

    def remove(self) -> None:
        """Detach every link and unpin everything, then close."""
        errors: list[str] = []
        for ifname, link in self.links.items():
            try:
                link.detach()
            except (OSError, UserError) as exc:
                if getattr(exc, "errno", None) not in (errno.ENOLINK, errno.ENODEV):
                    errors.append(f"{ifname}: {exc}")
        self.layout.remove()
        self.close()
        if errors:
            raise InstanceError("while removing: " + "; ".join(errors))


def remove_instance(name: str) -> None:
    """``pybpfasm mcast unload``: detach and unpin a pinned instance."""
    layout = PinLayout(name)
    if not layout.exists():
        raise PinError(f"no instance {name!r} (nothing pinned at {layout.base})")
    Instance.open(name).remove()


def read_percpu_sum(m: maps.Map, key: Any, fmt: str) -> tuple[int, ...]:
    """Sum a per-CPU value (struct ``fmt`` per CPU) over CPUs."""
    st = struct.Struct(fmt)
    raw = m.lookup_raw(m._pack_key(key))
    if raw is None:
        return tuple(0 for _ in st.unpack(bytes(st.size)))
    slot = (st.size + 7) & ~7
    totals = [0] * len(st.unpack(bytes(st.size)))
    for cpu in range(m.ncpus):
        for i, v in enumerate(st.unpack_from(raw, cpu * slot)):
            totals[i] += v
    return tuple(totals)


def kernel_error_hint(exc: BaseException) -> str:
    if isinstance(exc, syscall.BPFError) and exc.errno == errno.EPERM:
        return " (needs root / CAP_BPF)"
    return ""
