"""BPF ring buffer consumer, read straight from ``mmap`` (no libbpf).

Memory layout of a ``BPF_MAP_TYPE_RINGBUF`` map of ``size`` bytes (a power of
two, multiple of the page size), as the kernel exposes it to ``mmap``:

* page 0 (offset 0): the consumer position, a u64. The only part user space
  may write, so it is mapped read-write on its own.
* page 1 (offset ``page_size``): the producer position, a u64, read-only.
* from offset ``2 * page_size``: the data area, ``size`` bytes, which the
  kernel maps *twice* back to back. Mapping ``page_size + 2 * size`` bytes at
  offset ``page_size`` therefore gives one read-only view in which a record
  that wraps past the end of the ring is still contiguous.

Each record starts with an 8-byte header ``{u32 len; u32 pg_off}`` at
``pos & (size - 1)``; ``len`` carries ``BUSY`` (bit 31: reserved, not yet
committed) and ``DISCARD`` (bit 30: committed but thrown away). Records are
8-byte aligned: the next header is at ``pos + round_up(8 + len, 8)``.

Ordering. The kernel publishes a record in two steps: at reserve it writes the
header (``len | BUSY``) and then stores the producer position with release
semantics; at commit it writes the data and then clears BUSY with an atomic
exchange. The consumer must therefore (1) read the producer position with
acquire semantics, (2) read each header with acquire semantics before reading
its data, and (3) store the consumer position with release semantics after it
is done with the data, so the producer never reuses space still being read.
libbpf's ``ringbuf_process_ring`` and cilium/ebpf's ``ringbuf`` reader follow
exactly that protocol (smp_load_acquire / smp_store_release, or atomics).

Python has no fences, so this module relies on the hardware: on x86-64 (TSO)
every aligned load already has acquire semantics and every aligned store
release semantics, and the compiler cannot reorder our accesses because each
one is a separate opaque call through the interpreter. The positions are read
and written as whole aligned u64 through a ``memoryview`` cast to ``Q`` (one
``mov``: no tearing); header words through a view cast to ``I``. On a weakly
ordered CPU (arm64) this would not be enough, so the constructor refuses to
run elsewhere than x86-64 unless ``allow_weak_ordering=True``.

Wake-ups: epoll on the map fd reports EPOLLIN while data is available (the
kernel's poll checks ``producer - consumer`` after queueing the waiter, so
draining everything and then sleeping cannot lose a wake-up). No sleeps.
"""

from __future__ import annotations

import mmap
import platform
import select
import struct
from collections.abc import Callable, Iterator
from typing import Any

from .errors import UserError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
_FLAGS = BUSY_BIT | DISCARD_BIT
_LEN_MASK = ~_FLAGS & 0xFFFFFFFF


class RingBufferError(UserError):
    """The map cannot be used as a ring buffer (wrong type, size, closed)."""


def _round8(n: int) -> int:
    return (n + 7) & ~7


def _map_fd_and_size(map_or_fd: Any, max_entries: int | None) -> tuple[int, int]:
    if isinstance(map_or_fd, int):
        fd = map_or_fd
    else:
        fd = map_or_fd.fd
        if max_entries is None:
            max_entries = getattr(map_or_fd, "max_entries", None)
    if max_entries is None:
        from . import syscall  # the kernel-interface module: map info by fd

        max_entries = syscall.map_get_info(fd).max_entries
    return int(fd), int(max_entries)


class RingBuffer:
    """Consumer side of one BPF ring buffer map.

    ``poll(timeout)`` waits (epoll) until records are available; ``consume()``
    / ``drain()`` / ``decode()`` process whatever is there without waiting.
    Records handed to a callback are zero-copy memoryviews, valid only during
    the callback (the producer reuses the space once the consumer position
    moves on); ``drain()`` and ``decode()`` return copies.
    """

    def __init__(self, map_or_fd: Any, max_entries: int | None = None, *, allow_weak_ordering: bool = False):
        if not allow_weak_ordering and platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
            raise RingBufferError(
                f"ring buffer consumer relies on x86 (TSO) ordering; {platform.machine()} is weakly ordered")
        self.fd, self.size = _map_fd_and_size(map_or_fd, max_entries)
        if self.size <= 0 or self.size & (self.size - 1):
            raise RingBufferError(f"ring buffer size {self.size} is not a power of two")
        page = mmap.PAGESIZE
        self.mask = self.size - 1
        try:
            self._cons_map = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod_map = mmap.mmap(self.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ,
                                       offset=page)
        except OSError as exc:
            raise RingBufferError(f"cannot mmap ring buffer fd {self.fd}: {exc.strerror}") from exc
        self._cons_view = memoryview(self._cons_map).cast("Q")
        self._prod_view = memoryview(self._prod_map)
        self._prod_pos = self._prod_view.cast("Q")
        # data area: the doubly mapped ring, starting one page into the mapping
        self._data = self._prod_view[page:]
        self._words = self._data.cast("I")
        self._epoll = select.epoll()
        self._epoll.register(self.fd, select.EPOLLIN)
        self.records_seen = 0
        self.discarded = 0

    # -- positions -------------------------------------------------------
    @property
    def consumer_pos(self) -> int:
        return self._cons_view[0]

    @property
    def producer_pos(self) -> int:
        return self._prod_pos[0]

    def available(self) -> int:
        """Bytes between consumer and producer (headers included)."""
        return self._prod_pos[0] - self._cons_view[0]

    def fileno(self) -> int:
        """An epoll fd that becomes readable when records are available (nest it in your own loop)."""
        return self._epoll.fileno()

    # -- waiting ---------------------------------------------------------
    def watch(self, fd: int) -> None:
        """Also wake ``wait()`` when ``fd`` is readable (a stop pipe, a signal wakeup fd)."""
        self._epoll.register(fd, select.EPOLLIN)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until records are available or ``timeout`` seconds pass (None: forever)."""
        if self._prod_pos[0] != self._cons_view[0]:
            return True
        return bool(self._epoll.poll(-1 if timeout is None else timeout, 1))

    def poll(self, timeout: float | None = None, callback: Callable[[memoryview], Any] | None = None) -> int:
        """Wait up to ``timeout`` then consume everything; returns the number of records handled.

        Without a callback the records are only counted (and skipped).
        """
        if not self.wait(timeout):
            return 0
        return self.consume(callback)

    # -- consuming -------------------------------------------------------
    def consume(self, callback: Callable[[memoryview], Any] | None = None) -> int:
        """Hand every committed record to ``callback(memoryview)``; skip discarded ones.

        Stops at the first record still BUSY (committed out of order by
        another CPU); the next call picks up from there.
        """
        cons_view, prod_pos, words, data, mask = self._cons_view, self._prod_pos, self._words, self._data, self.mask
        handled = 0
        cons = cons_view[0]
        while True:
            prod = prod_pos[0]  # acquire (x86: plain aligned load)
            if cons >= prod:
                break
            while cons < prod:
                off = cons & mask
                word = words[off >> 2]  # acquire: header before data
                if word & BUSY_BIT:
                    cons_view[0] = cons
                    self.records_seen += handled
                    return handled
                length = word & _LEN_MASK
                if word & DISCARD_BIT:
                    self.discarded += 1
                elif callback is not None:
                    callback(data[off + 8: off + 8 + length])
                handled += 1
                cons += (length + 15) & ~7
            cons_view[0] = cons  # release: the producer may reuse up to here
        self.records_seen += handled
        return handled

    def drain(self) -> list[bytes]:
        """Copies of every available committed record (discarded ones skipped)."""
        out: list[bytes] = []
        append = out.append
        self.consume(lambda rec: append(bytes(rec)))
        return out

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.drain())

    def decode(self, fmt: struct.Struct, out: list[tuple] | None = None,
               on_other: Callable[[memoryview], Any] | None = None) -> list[tuple]:
        """Batch-decode fixed-size records with a precompiled ``struct.Struct``.

        The fast path unpacks header and payload in one ``iter_unpack`` over
        the contiguous (doubly mapped) span, so the per-record cost is one
        tuple. Records of another size go to ``on_other(memoryview)`` (or are
        skipped); discarded records are skipped; a BUSY record ends the batch.
        """
        if out is None:
            out = []
        size = fmt.size
        stride = (HEADER_SIZE + size + 7) & ~7
        cons_view, prod_pos, mask, data = self._cons_view, self._prod_pos, self.mask, self._data
        cons = cons_view[0]
        if prod_pos[0] - cons == stride:  # a lone record, the usual wake-up: the shortest path
            off = cons & mask
            if self._words[off >> 2] == size:  # committed, not discarded, of our size
                out.append(fmt.unpack_from(data, off + HEADER_SIZE))
                cons_view[0] = cons + stride  # release
                self.records_seen += 1
                return out
        rec = _record_struct(fmt, stride)
        append = out.append
        handled = 0
        while True:
            prod = prod_pos[0]
            if cons >= prod:
                break
            while cons < prod:
                off = cons & mask
                span = prod - cons
                nfit = span // stride
                if nfit:
                    for t in rec.iter_unpack(data[off: off + nfit * stride]):
                        if t[0] != size:
                            break
                        append(t[1:])
                        cons += stride
                        handled += 1
                    else:
                        continue
                # slow path: one record of another size / flags
                off = cons & mask
                word = self._words[off >> 2]
                if word & BUSY_BIT:
                    cons_view[0] = cons
                    self.records_seen += handled
                    return out
                length = word & _LEN_MASK
                if word & DISCARD_BIT:
                    self.discarded += 1
                elif length == size:
                    append(fmt.unpack_from(data, off + 8))
                elif on_other is not None:
                    on_other(data[off + 8: off + 8 + length])
                handled += 1
                cons += (length + 15) & ~7
            cons_view[0] = cons
        self.records_seen += handled
        return out

    # -- lifetime --------------------------------------------------------
    def close(self) -> None:
        if self._epoll is None:
            return
        self._epoll.close()
        self._epoll = None  # type: ignore[assignment]
        for view in (self._words, self._data, self._prod_pos, self._prod_view, self._cons_view):
            view.release()
        self._prod_map.close()
        self._cons_map.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_RECORD_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


def _record_struct(fmt: struct.Struct, stride: int) -> struct.Struct:
    """``fmt`` preceded by the header (len word, pg_off skipped) and padded to ``stride``."""
    key = (fmt.format, stride)
    rec = _RECORD_STRUCTS.get(key)
    if rec is None:
        body = fmt.format
        order = body[0] if body[:1] in ("<", ">", "=", "!", "@") else "@"
        if order == "@":
            raise RingBufferError("decode() needs a struct format with explicit byte order ('<', '=', ...)")
        body = body[1:] if body[:1] in ("<", ">", "=", "!") else body
        rec = struct.Struct(f"{order}I4x{body}{stride - HEADER_SIZE - fmt.size}x")
        if order in (">", "!"):
            raise RingBufferError("ring buffer headers are host order: use '<' or '=' for decode()")
        _RECORD_STRUCTS[key] = rec
    return rec
