"""BPF maps as Python objects with a mapping-like API.

Keys and values are declared once as codecs: a ``pybpfasm.layout`` type or
Struct (anything with ``size``, ``pack(value) -> bytes`` and
``unpack(bytes) -> value``), a ``struct`` format string such as ``"<I"``, or an
int byte count (raw ``bytes`` in and out)::

    from pybpfasm.layout import u32, u64
    counters = PerCpuArray(key=u32, value=u64, max_entries=4, name="counters")
    counters[0]                      # [cpu0, cpu1, ...]
    flows = HashMap(key=Flow, value=u64, max_entries=1024, name="flows")
    flows[Flow(src=1, dst=2)] = 5
    for key, value in flows.items(): ...

Per-CPU maps take and return one value per possible CPU: a ``list`` of exactly
``possible_cpus()`` values sets each CPU, anything else is stored on every CPU.
Map-in-map outer maps take an inner-map template (``HashOfMaps(inner=DevMap(...))``)
and are assigned map objects or fds.  Every map owns its fd: ``close()`` it, use
``with``, or let the garbage collector close it as a last resort.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

from . import syscall
from .errors import UserError
from .syscall import BPFError, Fd, MapInfo, MapType, UpdateFlags

# --------------------------------------------------------------------------
# Codecs.
# --------------------------------------------------------------------------


@runtime_checkable
class Codec(Protocol):
    size: int

    def pack(self, value: Any) -> bytes: ...

    def unpack(self, data: bytes) -> Any: ...


class MapError(UserError):
    """A map used in a way its type does not allow (wrong size, unsupported operation)."""


class RawCodec:
    """``size`` raw bytes; an int is accepted too and packed little-endian."""

    def __init__(self, size: int):
        self.size = size

    def pack(self, value: Any) -> bytes:
        if isinstance(value, int):
            return value.to_bytes(self.size, "little")
        raw = bytes(value)
        if len(raw) != self.size:
            raise MapError(f"expected {self.size} bytes, got {len(raw)}")
        return raw

    def unpack(self, data: bytes) -> bytes:
        return bytes(data[:self.size])

    def __repr__(self) -> str:
        return f"RawCodec({self.size})"


class StructCodec:
    """A ``struct`` format: one field unpacks to a scalar, several to a tuple."""

    def __init__(self, fmt: str):
        self._struct = struct.Struct(fmt)
        self.size = self._struct.size
        self._single = len(self._struct.unpack(bytes(self.size))) == 1

    def pack(self, value: Any) -> bytes:
        if self._single:
            return self._struct.pack(value)
        return self._struct.pack(*value)

    def unpack(self, data: bytes) -> Any:
        values = self._struct.unpack(bytes(data[:self.size]))
        return values[0] if self._single else values

    def __repr__(self) -> str:
        return f"StructCodec({self._struct.format!r})"


def codec(spec: Any) -> Codec:
    """Turn a key/value declaration (layout, format string, byte count) into a codec."""
    if isinstance(spec, bool):
        raise MapError(f"not a key/value layout: {spec!r}")
    if isinstance(spec, int):
        return RawCodec(spec)
    if isinstance(spec, str):
        try:
            return StructCodec(spec)
        except struct.error as exc:
            raise MapError(f"bad struct format {spec!r}: {exc}") from None
    if all(hasattr(spec, attr) for attr in ("size", "pack", "unpack")):
        return spec
    raise MapError(f"not a key/value layout: {spec!r} (need a layout, a struct format or a byte count)")


_U32 = StructCodec("<I")


def _round8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------
# The base class.
# --------------------------------------------------------------------------


class Map:
    """A BPF map owning its fd.

    Create one through a subclass (``HashMap(key=..., value=..., max_entries=...)``),
    or open an existing one with ``Map.from_pinned(path)``, ``Map.from_id(id)`` or
    ``Map.from_fd(fd)``, which return the subclass matching the map's type.
    """

    map_type: ClassVar[MapType] = MapType.UNSPEC
    default_key: ClassVar[Any] = None
    default_value: ClassVar[Any] = None
    per_cpu: ClassVar[bool] = False
    is_array: ClassVar[bool] = False  # every index 0..max_entries-1 exists

    fd: Fd
    name: str
    max_entries: int
    flags: int
    key: Codec
    value: Codec
    key_size: int
    value_size: int

    def __init__(self, *, key: Any = None, value: Any = None, max_entries: int, name: str = "", flags: int = 0,
                 map_type: MapType | int | str | None = None, inner_map: Map | int | Fd | None = None,
                 numa_node: int | None = None, ifindex: int = 0, map_extra: int = 0):
        if map_type is not None:
            self.map_type = MapType.parse(map_type) if isinstance(map_type, str) else MapType(map_type)
        if self.map_type == MapType.UNSPEC:
            raise MapError("Map() needs map_type=, or use a subclass such as HashMap")
        key = key if key is not None else self.default_key
        value = value if value is not None else self.default_value
        if key is None or value is None:
            raise MapError(f"{type(self).__name__} needs key= and value= layouts")
        self.key, self.value = codec(key), codec(value)
        if numa_node is not None:
            flags |= syscall.MapFlags.NUMA_NODE
        inner_fd = inner_map.fd if isinstance(inner_map, Map) else inner_map
        self.fd = syscall.map_create(self.map_type, self.key.size, self.value.size, max_entries, flags=flags,
                                     inner_map_fd=inner_fd, numa_node=numa_node or 0, name=name,
                                     ifindex=ifindex, map_extra=map_extra)
        self.name, self.max_entries, self.flags = name, max_entries, int(flags)
        self.key_size, self.value_size = self.key.size, self.value.size
        self._init_extra()

    def _init_extra(self) -> None:
        self._ncpus = syscall.possible_cpus() if self.per_cpu else 1

    # ----- opening existing maps -------------------------------------------

    @classmethod
    def from_fd(cls, fd: Fd | int, *, key: Any = None, value: Any = None, inner: Map | None = None) -> Map:
        """Wrap an fd (taking ownership of an ``Fd``; an int is dup'ed) as the subclass of its type."""
        owned = fd if isinstance(fd, Fd) else Fd(os.dup(fd))
        info = syscall.map_get_info(owned)
        target = _CLASS_BY_TYPE.get(MapType(info.type), Map) if isinstance(info.type, MapType) else Map
        if cls is not Map and not issubclass(target, cls):
            owned.close()
            raise MapError(f"map {info.name or info.id} is a {MapType(info.type).name.lower()} map, "
                           f"not a {cls.__name__}")
        obj = target.__new__(target)
        obj._adopt(owned, info, key, value, inner)
        return obj

    @classmethod
    def from_pinned(cls, path: str | os.PathLike[str], *, key: Any = None, value: Any = None,
                    inner: Map | None = None, flags: int = 0) -> Map:
        """Open a map pinned on bpffs (``flags``: BPF_F_RDONLY / BPF_F_WRONLY)."""
        fd = syscall.obj_get(path, flags=flags)
        if syscall.obj_type_of_fd(fd) != "map":
            fd.close()
            raise MapError(f"{os.fspath(path)} is not a pinned map")
        return cls.from_fd(fd, key=key, value=value, inner=inner)

    @classmethod
    def from_id(cls, map_id: int, *, key: Any = None, value: Any = None, inner: Map | None = None) -> Map:
        return cls.from_fd(syscall.map_get_fd_by_id(map_id), key=key, value=value, inner=inner)

    def _adopt(self, fd: Fd, info: MapInfo, key: Any, value: Any, inner: Map | None) -> None:
        self.map_type = MapType(info.type) if isinstance(info.type, MapType) else info.type  # type: ignore[assignment]
        self.fd, self.name, self.max_entries, self.flags = fd, info.name, info.max_entries, info.map_flags
        key = key if key is not None else (self.default_key if _fits(self.default_key, info.key_size)
                                           else info.key_size)
        value = value if value is not None else (self.default_value if _fits(self.default_value, info.value_size)
                                                 else info.value_size)
        self.key, self.value = codec(key), codec(value)
        for what, cdc, size in (("key", self.key, info.key_size), ("value", self.value, info.value_size)):
            if cdc.size != size:
                fd.close()
                raise MapError(f"map {info.name or info.id}: {what} layout is {cdc.size} bytes, the map's is {size}")
        self.key_size, self.value_size = info.key_size, info.value_size
        if inner is not None:
            self.inner = inner
        self._init_extra()

    # ----- lifetime --------------------------------------------------------

    def close(self) -> None:
        self.fd.close()

    @property
    def closed(self) -> bool:
        return self.fd.closed

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.fd.closed else f"fd={int(self.fd)}"
        return f"<{type(self).__name__} {self.name!r} {state} max_entries={self.max_entries}>"

    # ----- pinning and info ------------------------------------------------

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin on bpffs so the map outlives this process (path components may not contain '.')."""
        syscall.obj_pin(self.fd, path)

    def info(self) -> MapInfo:
        return syscall.map_get_info(self.fd)

    @property
    def id(self) -> int:
        return self.info().id

    def freeze(self) -> None:
        """Make the map read-only for user space (programs may still write unless RDONLY_PROG)."""
        syscall.map_freeze(self.fd)

    # ----- encoding --------------------------------------------------------

    @property
    def ncpus(self) -> int:
        return self._ncpus

    @property
    def _value_bytes(self) -> int:
        """Size of one element's value as the syscall sees it (all CPUs for per-CPU maps)."""
        return _round8(self.value_size) * self._ncpus if self.per_cpu else self.value_size

    def _pack_key(self, key: Any) -> bytes:
        try:
            raw = self.key.pack(key)
        except (ValueError, TypeError, struct.error) as exc:
            raise MapError(f"{self.name or type(self).__name__}: cannot pack key {key!r} with {self.key!r}: "
                           f"{exc}") from None
        if len(raw) != self.key_size:
            raise MapError(f"{self.name or type(self).__name__}: key packs to {len(raw)} bytes, "
                           f"map key is {self.key_size}")
        return raw

    def _pack_value(self, value: Any) -> bytes:
        if not self.per_cpu:
            try:
                raw = self.value.pack(value)
            except (ValueError, TypeError, struct.error) as exc:
                raise MapError(f"{self.name or type(self).__name__}: cannot pack value {value!r} with "
                               f"{self.value!r}: {exc}") from None
            if len(raw) != self.value_size:
                raise MapError(f"{self.name or type(self).__name__}: value packs to {len(raw)} bytes, "
                               f"map value is {self.value_size}")
            return raw
        slot = _round8(self.value_size)
        if isinstance(value, list):
            if len(value) != self._ncpus:
                raise MapError(f"per-CPU value list has {len(value)} entries; this machine has "
                               f"{self._ncpus} possible CPUs")
            values = value
        else:
            values = [value] * self._ncpus
        return b"".join(self.value.pack(v).ljust(slot, b"\0") for v in values)

    def _unpack_value(self, raw: bytes) -> Any:
        if not self.per_cpu:
            return self.value.unpack(raw)
        slot = _round8(self.value_size)
        return [self.value.unpack(raw[i * slot:i * slot + self.value_size]) for i in range(self._ncpus)]

    # ----- element operations ------------------------------------------------

    def lookup_raw(self, key: bytes) -> bytes | None:
        try:
            return syscall.map_lookup_elem(self.fd, key, self._value_bytes)
        except BPFError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def __getitem__(self, key: Any) -> Any:
        raw = self.lookup_raw(self._pack_key(key))
        if raw is None:
            raise KeyError(key)
        return self._unpack_value(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        raw = self.lookup_raw(self._pack_key(key))
        return default if raw is None else self._unpack_value(raw)

    def __contains__(self, key: Any) -> bool:
        return self.lookup_raw(self._pack_key(key)) is not None

    def update(self, key: Any, value: Any, flags: int = UpdateFlags.ANY) -> None:
        """Store ``value``; ``flags`` is BPF_ANY, BPF_NOEXIST (insert only) or BPF_EXIST (replace only)."""
        syscall.map_update_elem(self.fd, self._pack_key(key), self._pack_value(value), int(flags))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        try:
            syscall.map_delete_elem(self.fd, self._pack_key(key))
        except BPFError as exc:
            if exc.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise

    def delete(self, key: Any) -> bool:
        """Delete ``key``; False if it was not there."""
        try:
            del self[key]
        except KeyError:
            return False
        return True

    def pop(self, key: Any, *default: Any) -> Any:
        """Atomically look up and delete (BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps)."""
        try:
            raw = syscall.map_lookup_and_delete_elem(self.fd, self._pack_key(key), self._value_bytes)
        except BPFError as exc:
            if exc.errno == errno.ENOENT:
                if default:
                    return default[0]
                raise KeyError(key) from None
            raise
        return self._unpack_value(raw)

    # ----- iteration ---------------------------------------------------------

    def keys_raw(self) -> Iterator[bytes]:
        key: bytes | None = None
        while (key := syscall.map_get_next_key(self.fd, key, self.key_size)) is not None:
            yield key

    def keys(self) -> Iterator[Any]:
        for raw in self.keys_raw():
            yield self.key.unpack(raw)

    __iter__ = keys

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs via GET_NEXT_KEY + LOOKUP; keys that vanish meanwhile are skipped."""
        for raw in self.keys_raw():
            value = self.lookup_raw(raw)
            if value is not None:
                yield self.key.unpack(raw), self._unpack_value(value)

    def values(self) -> Iterator[Any]:
        for _, value in self.items():
            yield value

    def __len__(self) -> int:
        """Number of present entries (a walk of the keys; max_entries for arrays)."""
        if self.is_array:
            return self.max_entries
        return sum(1 for _ in self.keys_raw())

    def __bool__(self) -> bool:
        return True  # a map object is truthy even when empty (don't walk the keys)

    # ----- batch operations ------------------------------------------------

    def dump_raw(self, batch_size: int = 256, *, delete: bool = False) -> list[tuple[bytes, bytes]]:
        """All entries as raw bytes, by BPF_MAP_LOOKUP_BATCH when the map supports it."""
        try:
            return self._dump_batched(batch_size, delete)
        except BPFError as exc:
            if exc.errno not in (errno.EINVAL, syscall.ENOTSUPP, errno.EOPNOTSUPP):
                raise
        out = []
        for raw in list(self.keys_raw()):
            if delete:
                try:
                    value = syscall.map_lookup_and_delete_elem(self.fd, raw, self._value_bytes)
                except BPFError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    continue
            else:
                value = self.lookup_raw(raw)
                if value is None:
                    continue
            out.append((raw, value))
        return out

    def _dump_batched(self, batch_size: int, delete: bool) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        token: bytes | None = None
        count = max(1, batch_size)
        while True:
            try:
                res = syscall.map_lookup_batch(self.fd, token, self.key_size, self._value_bytes, count,
                                               delete=delete)
            except BPFError as exc:
                if exc.errno == errno.ENOSPC:  # a hash bucket holds more than `count` entries
                    count *= 2
                    continue
                raise
            out.extend(zip(res.keys, res.values))
            if res.next_batch is None:
                return out
            token = res.next_batch

    def dump(self, batch_size: int = 256) -> list[tuple[Any, Any]]:
        """All (key, value) pairs, decoded; batched when the kernel supports it for this map."""
        return [(self.key.unpack(k), self._unpack_value(v)) for k, v in self.dump_raw(batch_size)]

    def pop_all(self, batch_size: int = 256) -> list[tuple[Any, Any]]:
        """Read and delete every entry (BPF_MAP_LOOKUP_AND_DELETE_BATCH or a fallback walk)."""
        return [(self.key.unpack(k), self._unpack_value(v)) for k, v in self.dump_raw(batch_size, delete=True)]

    def update_batch(self, items: Iterable[tuple[Any, Any]], flags: int = UpdateFlags.ANY) -> int:
        """Write many entries with one BPF_MAP_UPDATE_BATCH (falls back to single updates)."""
        pairs = [(self._pack_key(k), self._pack_value(v)) for k, v in items]
        if not pairs:
            return 0
        try:
            return syscall.map_update_batch(self.fd, [k for k, _ in pairs], [v for _, v in pairs],
                                            elem_flags=int(flags))
        except BPFError as exc:
            if exc.errno not in (errno.EINVAL, syscall.ENOTSUPP, errno.EOPNOTSUPP):
                raise
        for k, v in pairs:
            syscall.map_update_elem(self.fd, k, v, int(flags))
        return len(pairs)

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """Delete many keys with one BPF_MAP_DELETE_BATCH (falls back to single deletes)."""
        raw = [self._pack_key(k) for k in keys]
        if not raw:
            return 0
        try:
            return syscall.map_delete_batch(self.fd, raw)
        except BPFError as exc:
            if exc.errno not in (errno.EINVAL, syscall.ENOTSUPP, errno.EOPNOTSUPP):
                raise
        n = 0
        for k in raw:
            try:
                syscall.map_delete_elem(self.fd, k)
                n += 1
            except BPFError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return n

    def clear(self) -> None:
        """Delete every entry (hash-like maps)."""
        for raw in list(self.keys_raw()):
            try:
                syscall.map_delete_elem(self.fd, raw)
            except BPFError as exc:
                if exc.errno != errno.ENOENT:
                    raise


def _fits(spec: Any, size: int) -> bool:
    return spec is not None and codec(spec).size == size


# --------------------------------------------------------------------------
# Concrete map types.
# --------------------------------------------------------------------------


class _ArrayLike(Map):
    default_key = "<I"
    is_array = True

    def __init__(self, *, value: Any, max_entries: int, key: Any = None, name: str = "", flags: int = 0,
                 **kw: Any):
        super().__init__(key=key, value=value, max_entries=max_entries, name=name, flags=flags, **kw)

    def __delitem__(self, key: Any) -> None:
        raise MapError(f"{type(self).__name__}: array elements cannot be deleted (assign a zero value)")


class ArrayMap(_ArrayLike):
    map_type = MapType.ARRAY


class PerCpuArray(_ArrayLike):
    map_type = MapType.PERCPU_ARRAY
    per_cpu = True


class HashMap(Map):
    map_type = MapType.HASH


class PerCpuHash(Map):
    map_type = MapType.PERCPU_HASH
    per_cpu = True


class LruHash(Map):
    map_type = MapType.LRU_HASH


class LruPerCpuHash(Map):
    map_type = MapType.LRU_PERCPU_HASH
    per_cpu = True


class DevMap(Map):
    """Array of egress interfaces for ``bpf_redirect_map``: value = ifindex (u32).

    With ``with_prog=True`` the value is ``struct bpf_devmap_val`` as a tuple
    ``(ifindex, prog_fd)`` on write and ``(ifindex, prog_id)`` on read: an XDP
    program (expected attach type BPF_XDP_DEVMAP) run on the egress device.
    """

    map_type = MapType.DEVMAP
    default_key = "<I"
    default_value = "<I"
    is_array = False  # get_next_key walks every slot, but empty slots have no value

    def __init__(self, *, max_entries: int, name: str = "", flags: int = 0, with_prog: bool = False,
                 key: Any = None, value: Any = None, **kw: Any):
        if value is None and with_prog:
            value = "<Ii"
        super().__init__(key=key, value=value, max_entries=max_entries, name=name, flags=flags, **kw)

    def _adopt(self, fd: Fd, info: MapInfo, key: Any, value: Any, inner: Map | None) -> None:
        if value is None and info.value_size == 8:
            value = "<Ii"
        super()._adopt(fd, info, key, value, inner)

    def __len__(self) -> int:
        """Number of occupied slots (every slot has a key, only occupied ones a value)."""
        return sum(1 for _ in self.items())

    def update(self, key: Any, value: Any, flags: int = UpdateFlags.ANY) -> None:
        try:
            super().update(key, value, flags)
        except BPFError as exc:
            if exc.errno != errno.EINVAL:
                raise
            ifindex = value[0] if isinstance(value, tuple) else value
            raise syscall.bpf_error(exc.command, exc.errno, f"no interface with ifindex {ifindex} in this network "
                                    "namespace, or an invalid egress program") from None

    def _pack_value(self, value: Any) -> bytes:
        if isinstance(value, tuple) and len(value) == 2 and self.value_size == 8:
            ifindex, prog = value
            prog_fd = -1 if prog is None else int(getattr(prog, "fd", prog))
            return struct.pack("<Ii", int(ifindex), prog_fd)
        return super()._pack_value(value)


class DevMapHash(DevMap):
    """Hash of egress interfaces (keys are arbitrary u32, typically the ifindex)."""

    map_type = MapType.DEVMAP_HASH


class RingBuf(Map):
    """A BPF ring buffer; ``max_entries`` is its size in bytes (power of two, page multiple).

    Only creation, pinning and the fd live here; ``pybpfasm.ringbuf.RingBuffer(ringbuf_map)``
    consumes records through mmap.
    """

    map_type = MapType.RINGBUF

    def __init__(self, *, max_entries: int, name: str = "", flags: int = 0, **kw: Any):
        page = os.sysconf("SC_PAGE_SIZE")
        if max_entries < page or max_entries & (max_entries - 1):
            raise MapError(f"ring buffer size {max_entries} must be a power of two and at least a page ({page})")
        super().__init__(key=0, value=0, max_entries=max_entries, name=name, flags=flags, **kw)

    def _adopt(self, fd: Fd, info: MapInfo, key: Any, value: Any, inner: Map | None) -> None:
        super()._adopt(fd, info, 0, 0, None)

    def _unsupported(self, *args: Any, **kw: Any) -> Any:
        raise MapError("a ring buffer has no keys: read it with pybpfasm.ringbuf.RingBuffer")

    __getitem__ = __setitem__ = __delitem__ = get = update = keys_raw = _unsupported  # type: ignore[assignment]
    items = dump_raw = __contains__ = pop = _unsupported  # type: ignore[assignment]

    def __len__(self) -> int:
        raise MapError("a ring buffer has no length: read it with pybpfasm.ringbuf.RingBuffer")


class ProgArray(Map):
    """Tail-call table: assign programs (objects with ``.fd``) or fds; reads return program ids."""

    map_type = MapType.PROG_ARRAY
    default_key = "<I"
    default_value = "<I"

    def __init__(self, *, max_entries: int, name: str = "", flags: int = 0, key: Any = None, **kw: Any):
        super().__init__(key=key, value="<I", max_entries=max_entries, name=name, flags=flags, **kw)

    def _pack_value(self, value: Any) -> bytes:
        return struct.pack("<I", int(getattr(value, "fd", value)))


class _MapOfMaps(Map):
    """Outer map of a map-in-map: values are inner maps (fds on write, ids on read).

    ``inner`` is a template map with the inner maps' type, sizes and flags; it is
    only needed at creation (the kernel copies its attributes) and to open
    looked-up inner maps with the right key/value layouts.
    """

    default_key = "<I"
    inner: Map | None = None

    def __init__(self, *, inner: Map, max_entries: int, key: Any = None, name: str = "", flags: int = 0,
                 **kw: Any):
        self.inner = inner
        super().__init__(key=key, value="<I", max_entries=max_entries, name=name, flags=flags, inner_map=inner,
                         **kw)

    def _adopt(self, fd: Fd, info: MapInfo, key: Any, value: Any, inner: Map | None) -> None:
        super()._adopt(fd, info, key, "<I", inner)

    def _pack_value(self, value: Any) -> bytes:
        return struct.pack("<I", int(getattr(value, "fd", value)))

    def get_id(self, key: Any) -> int | None:
        """The id of the inner map stored under ``key`` (None if absent)."""
        raw = self.lookup_raw(self._pack_key(key))
        return None if raw is None else struct.unpack("<I", raw)[0]

    def _unpack_value(self, raw: bytes) -> Any:
        """Open the inner map by id (the caller owns the returned map object)."""
        inner_id = struct.unpack("<I", raw)[0]
        template = self.inner
        if template is not None:
            return Map.from_id(inner_id, key=template.key, value=template.value)
        return Map.from_id(inner_id)

    def ids(self) -> Iterator[tuple[Any, int]]:
        """(key, inner map id) pairs without opening the inner maps."""
        for raw in self.keys_raw():
            value = self.lookup_raw(raw)
            if value is not None:
                yield self.key.unpack(raw), struct.unpack("<I", value)[0]


class HashOfMaps(_MapOfMaps):
    map_type = MapType.HASH_OF_MAPS


class ArrayOfMaps(_MapOfMaps):
    map_type = MapType.ARRAY_OF_MAPS
    is_array = True

    def __delitem__(self, key: Any) -> None:  # clearing a slot is allowed for array-of-maps
        syscall.map_delete_elem(self.fd, self._pack_key(key))


_CLASS_BY_TYPE: dict[MapType, type[Map]] = {
    cls.map_type: cls
    for cls in (ArrayMap, PerCpuArray, HashMap, PerCpuHash, LruHash, LruPerCpuHash, DevMap, DevMapHash, RingBuf,
                ProgArray, HashOfMaps, ArrayOfMaps)
}

# Friendlier names matching the kernel's (BPF_MAP_TYPE_PERCPU_ARRAY -> PercpuArray).
Array = ArrayMap
Hash = HashMap
PercpuArray = PerCpuArray
PercpuHash = PerCpuHash
LruPercpuHash = LruPerCpuHash


def map_class(map_type: MapType | int | str) -> type[Map]:
    """The Map subclass for a map type (the base ``Map`` for types without one)."""
    mt = MapType.parse(map_type) if isinstance(map_type, str) else MapType(map_type)
    return _CLASS_BY_TYPE.get(mt, Map)
