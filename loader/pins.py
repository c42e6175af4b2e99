"""Where an instance lives in bpffs, and how names are made legal there.

Layout (documented contract, read by ``pybpfasm mcast show`` and by a restarted
controller)::

    /sys/fs/bpf/pybpfasm/<instance>/
        progs/upstream  progs/downstream
        maps/<name>                 events, groups, group_stats, up_stats, dn_stats,
                                    scratch, members, sources
        links/<ifname>              one bpf_link per attached interface

bpffs refuses names containing '.', interface names may contain it (``eth0.100``):
link pin names escape ``%`` as ``%25`` and ``.`` as ``%2E``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pybpfasm.errors import UserError

BPFFS = "/sys/fs/bpf"
ROOT = os.path.join(BPFFS, "pybpfasm")
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PinError(UserError):
    """bpffs missing, bad instance name, or an instance in an unexpected state."""


def escape_ifname(ifname: str) -> str:
    return ifname.replace("%", "%25").replace(".", "%2E")


def unescape_ifname(pin_name: str) -> str:
    return pin_name.replace("%2E", ".").replace("%2e", ".").replace("%25", "%")


def bpffs_mounted(path: str = BPFFS) -> bool:
    """True if ``path`` is (on) a bpf filesystem mount."""
    try:
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == path and line.split()[2] == "bpf" for line in mounts)
    except OSError:
        return False


def check_instance_name(name: str) -> str:
    if not _INSTANCE_RE.match(name):
        raise PinError(f"bad instance name {name!r}: use 1-64 letters, digits, '-' or '_'")
    return name


@dataclass(frozen=True)
class PinLayout:
    instance: str
    root: str = ROOT

    def __post_init__(self) -> None:
        check_instance_name(self.instance)

    @property
    def base(self) -> str:
        return os.path.join(self.root, self.instance)

    @property
    def progs_dir(self) -> str:
        return os.path.join(self.base, "progs")

    @property
    def maps_dir(self) -> str:
        return os.path.join(self.base, "maps")

    @property
    def links_dir(self) -> str:
        return os.path.join(self.base, "links")

    def prog(self, name: str) -> str:
        return os.path.join(self.progs_dir, name)

    def map(self, name: str) -> str:
        return os.path.join(self.maps_dir, name)

    def link(self, ifname: str) -> str:
        return os.path.join(self.links_dir, escape_ifname(ifname))

    def exists(self) -> bool:
        return os.path.isdir(self.base)

    def make_dirs(self) -> None:
        if not bpffs_mounted(BPFFS) and self.root.startswith(BPFFS):
            raise PinError(f"no bpf filesystem at {BPFFS} (mount -t bpf bpf {BPFFS})")
        for d in (self.progs_dir, self.maps_dir, self.links_dir):
            os.makedirs(d, exist_ok=True)

    def linked_ifnames(self) -> list[str]:
        try:
            return sorted(unescape_ifname(n) for n in os.listdir(self.links_dir))
        except FileNotFoundError:
            return []

    def remove(self) -> None:
        """Unpin everything of the instance (objects die with their last reference)."""
        for d in (self.links_dir, self.progs_dir, self.maps_dir):
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                try:
                    os.unlink(os.path.join(d, n))
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.base)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(self.root)  # only when no other instance is left
        except OSError:
            pass


def list_instances(root: str = ROOT) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return []
