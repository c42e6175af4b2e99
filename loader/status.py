"""What ``pybpfasm mcast show`` prints: read everything back from the pinned state.

Works while a controller runs and after it exited with ``--keep``: it opens the
pins, never the controller.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from programs.events import DownstreamStat, UpstreamStat
from pybpfasm import maps

from .instance import MEMBER_KEY, Instance, read_percpu_sum
from .membership import INCLUDE


def _ip(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def gather(name: str) -> dict[str, Any]:
    inst = Instance.open(name)
    try:
        return _gather(inst)
    finally:
        inst.close()


def _gather(inst: Instance) -> dict[str, Any]:
    names = inst.port_names()
    m = inst.maps

    def port_name(ifindex: int) -> str:
        return names.get(ifindex, f"if{ifindex}")

    groups: dict[bytes, dict[str, Any]] = {}
    if "groups" in m:
        for key, inner_id in m["groups"].ids():
            group = bytes(key)
            with maps.Map.from_id(inner_id) as inner:
                ports = sorted(struct.unpack("<I", raw)[0] for raw in inner.keys_raw())
            packets = nbytes = 0
            if "group_stats" in m:
                packets, nbytes = read_percpu_sum(m["group_stats"], group, "<QQ")
            groups[group] = {"group": _ip(group), "ports": [port_name(p) for p in ports],
                             "packets": packets, "bytes": nbytes, "hosts": []}
    sources: dict[bytes, list[str]] = {}
    if "sources" in m:
        for raw in m["sources"].keys_raw():
            sources.setdefault(bytes(raw[:12]), []).append(_ip(bytes(raw[12:16])))
    if "members" in m:
        for raw, mode in m["members"].items():
            port, group, host = MEMBER_KEY.unpack(bytes(raw))
            entry = groups.setdefault(group, {"group": _ip(group), "ports": [], "packets": 0, "bytes": 0,
                                              "hosts": []})
            entry["hosts"].append({"port": port_name(port), "host": _ip(host),
                                   "mode": "include" if mode == INCLUDE else "exclude",
                                   "sources": sorted(sources.get(bytes(raw), []))})
    dn = {st.name.lower(): read_percpu_sum(m["dn_stats"], int(st), "<Q")[0] for st in DownstreamStat} \
        if "dn_stats" in m else {}
    up = {}
    if "up_stats" in m:
        for st in UpstreamStat:
            packets, nbytes = read_percpu_sum(m["up_stats"], int(st), "<QQ")
            up[st.name.lower()] = {"packets": packets, "bytes": nbytes}
    progs = {}
    for pname, prog in inst.progs.items():
        info = prog.info(arrays=False)
        progs[pname] = {"id": info.id, "name": info.name, "run_cnt": info.run_cnt, "run_time_ns": info.run_time_ns,
                        "verified_insns": info.verified_insns, "xlated_insns": info.xlated_prog_len // 8}
    modes = inst.modes()
    links = [{"ifname": ifname, "role": "upstream" if ifname == inst.upstream else "downstream",
              "mode": modes.get(ifname), "link_id": link.id, "attached": link.attached,
              "ifindex": link.ifindex} for ifname, link in sorted(inst.links.items())]
    return {
        "instance": inst.name,
        "pinned_at": inst.layout.base,
        "interfaces": links,
        "groups": sorted(groups.values(), key=lambda g: socket.inet_aton(g["group"])),
        "downstream_stats": dn,
        "upstream_stats": up,
        "programs": progs,
        "bpf_stats_enabled": _bpf_stats_enabled(),
    }


def _bpf_stats_enabled() -> bool:
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def render(status: dict[str, Any]) -> str:
    """A readable multi-table text view."""
    out: list[str] = [f"instance {status['instance']}  ({status['pinned_at']})", ""]
    out.append(f"{'interface':<16} {'role':<11} {'mode':<8} {'link':>6}")
    for link in status["interfaces"]:
        state = link["mode"] if link["attached"] else "DETACHED"
        out.append(f"{link['ifname']:<16} {link['role']:<11} {state:<8} {link['link_id']:>6}")
    out.append("")
    if status["groups"]:
        out.append(f"{'group':<16} {'packets':>10} {'bytes':>12}  ports / hosts")
        for g in status["groups"]:
            out.append(f"{g['group']:<16} {g['packets']:>10} {g['bytes']:>12}  {', '.join(g['ports']) or '-'}")
            for h in g["hosts"]:
                srcs = f" {{{', '.join(h['sources'])}}}" if h["sources"] else ""
                out.append(f"{'':<41}  {h['port']}: {h['host']} {h['mode']}{srcs}")
    else:
        out.append("no groups joined")
    out.append("")
    up = status["upstream_stats"]
    if up:
        out.append("upstream    " + "  ".join(f"{k} {v['packets']} pkts/{v['bytes']} B" for k, v in up.items()))
    dn = status["downstream_stats"]
    if dn:
        nonzero = {k: v for k, v in dn.items() if v}
        out.append("downstream  " + ("  ".join(f"{k} {v}" for k, v in nonzero.items()) or "no packets yet"))
    out.append("")
    for pname, p in status["programs"].items():
        run = (f"runs {p['run_cnt']}, {p['run_time_ns'] // max(p['run_cnt'], 1)} ns/run"
               if status["bpf_stats_enabled"] else "run stats off (sysctl kernel.bpf_stats_enabled=1)")
        out.append(f"program {pname:<10} id {p['id']:<6} {p['xlated_insns']} insns, "
                   f"{p['verified_insns']} verified; {run}")
    return "\n".join(out)


__all__ = ["gather", "render"]
