"""Pinning on bpffs with errors that say what is wrong with the path.

The kernel's answers to a bad pin path are terse (EPERM for "not on bpffs",
ENOENT for a missing directory); these helpers check first and explain, and
create the directories a pin path needs (bpffs directories are plain mkdir).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from . import syscall
from .errors import UserError
from .syscall import Fd

BPFFS = "/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11

_libc = ctypes.CDLL(None, use_errno=True)


class PinError(UserError):
    """A pin path that cannot work (not on bpffs, contains '.', missing, taken)."""


def fs_magic(path: str | os.PathLike[str]) -> int:
    """statfs(2) f_type of the filesystem holding ``path``."""
    buf = (ctypes.c_long * 32)()  # struct statfs; f_type is the first member
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(path))
    return buf[0] & 0xFFFFFFFF


def is_bpffs(path: str | os.PathLike[str]) -> bool:
    try:
        return fs_magic(path) == BPF_FS_MAGIC
    except OSError:
        return False


def check_pin_path(path: str | os.PathLike[str], *, create_dirs: bool = True) -> str:
    """Validate (and prepare) a pin path; returns it as a string."""
    text = os.fspath(path)
    name = os.path.basename(text)
    if not name or "." in name:
        raise PinError(f"bad pin name {name!r} in {text}: bpffs names may not contain '.'")
    parent = os.path.dirname(os.path.abspath(text))
    if create_dirs and not os.path.isdir(parent):
        root = parent
        while not os.path.isdir(root):
            root = os.path.dirname(root)
        if not is_bpffs(root):
            raise PinError(f"cannot pin {text}: {root} is not on a bpffs mount (mount -t bpf bpf {BPFFS})")
        os.makedirs(parent, exist_ok=True)
    if not is_bpffs(parent):
        raise PinError(f"cannot pin {text}: {parent} is not on a bpffs mount (mount -t bpf bpf {BPFFS})")
    return text


def pin(obj: Any, path: str | os.PathLike[str], *, replace: bool = False, create_dirs: bool = True) -> str:
    """Pin a map, program or link (anything with ``.fd``, or an fd) at ``path``.

    ``replace=True`` removes an existing pin first (the old object lives on while
    something else holds it).
    """
    text = check_pin_path(path, create_dirs=create_dirs)
    if replace and os.path.lexists(text):
        os.unlink(text)
    fd = obj if isinstance(obj, (int, Fd)) else obj.fd
    syscall.obj_pin(fd, text)
    return text


def unpin(path: str | os.PathLike[str], *, missing_ok: bool = True) -> bool:
    """Remove a pin; returns whether something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        if missing_ok:
            return False
        raise
    return True


def open_pinned(path: str | os.PathLike[str], *, flags: int = 0) -> Fd:
    """The raw fd of a pinned object (see Map.from_pinned / Program.from_pinned for typed objects)."""
    return syscall.obj_get(path, flags=flags)


def pinned_kind(path: str | os.PathLike[str]) -> str:
    """'map', 'prog' or 'link' for a pinned object."""
    with open_pinned(path) as fd:
        return syscall.obj_type_of_fd(fd)
