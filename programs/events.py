"""What the downstream program tells the controller, and the counters both programs keep.

One ring-buffer record per IGMP message (v1/v2 report, v2 leave, query) or per
IGMPv3 group record. Records are variable-sized: a 16-byte header followed by
*all* the record's sources (``nsrcs`` be32 addresses), so no source is ever cut.
Addresses stay in network byte order as 4-byte strings: they are the map keys
as-is and print with ``socket.inet_ntoa``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

from pybpfasm import headers
from pybpfasm.layout import Bytes, Struct, be32, u8, u16, u32, u64

MAX_EVENT_SOURCES = 8  # sources carried by one event; longer records are split


class EventHeader(Struct):
    """``struct igmp_event`` as the downstream program writes it."""

    ifindex = u32       # downstream port the IGMP message arrived on
    host = Bytes(4)     # reporter (IP source), network order
    group = Bytes(4)    # group address, network order (0.0.0.0 in a general query)
    igmp_type = u8      # IgmpType
    record_type = u8    # RecordType for IGMPv3 records, 0 otherwise
    nsrcs = u16         # sources in the whole group record
    first = u16         # index (in the record) of this event's first source
    count = u16         # sources carried by this event


class IgmpEvent(Struct):
    """One ring-buffer record: the header and up to MAX_EVENT_SOURCES sources.

    Addresses are declared be32 for the DSL program that writes them; the
    controller reads the same bytes raw (``RECORD``) to use them as map keys.
    """

    ifindex = u32
    host = be32
    group = be32
    igmp_type = u8
    record_type = u8
    nsrcs = u16
    first = u16
    count = u16
    sources = be32[MAX_EVENT_SOURCES]


RECORD = struct.Struct("=I4s4sBBHHH32s")  # IgmpEvent, for batch decoding
HEADER = RECORD  # fixed-size records: the controller decodes them in one pass
assert RECORD.size == IgmpEvent.size == 52 and EventHeader.size == 20


class IgmpType(IntEnum):
    """IGMP message types (values from ``pybpfasm.headers``)."""

    QUERY = headers.IGMP_QUERY
    V1_REPORT = headers.IGMPV1_REPORT
    V2_REPORT = headers.IGMPV2_REPORT
    V2_LEAVE = headers.IGMP_LEAVE
    V3_REPORT = headers.IGMPV3_REPORT


class RecordType(IntEnum):
    """RFC 3376 group record types (values from ``pybpfasm.headers``)."""

    MODE_IS_INCLUDE = headers.MODE_IS_INCLUDE
    MODE_IS_EXCLUDE = headers.MODE_IS_EXCLUDE
    CHANGE_TO_INCLUDE = headers.CHANGE_TO_INCLUDE
    CHANGE_TO_EXCLUDE = headers.CHANGE_TO_EXCLUDE
    ALLOW_NEW_SOURCES = headers.ALLOW_NEW_SOURCES
    BLOCK_OLD_SOURCES = headers.BLOCK_OLD_SOURCES


@dataclass(frozen=True)
class Event:
    ifindex: int
    host: bytes
    group: bytes
    igmp_type: int
    record_type: int
    sources: tuple[bytes, ...] = ()

    def __str__(self) -> str:
        kind = IgmpType(self.igmp_type).name if self.igmp_type in IgmpType._value2member_map_ else hex(self.igmp_type)
        rec = f" {RecordType(self.record_type).name}" if self.record_type in RecordType._value2member_map_ else ""
        srcs = ",".join(socket.inet_ntoa(s) for s in self.sources)
        return (f"if{self.ifindex} {socket.inet_ntoa(self.host)} {kind}{rec} {socket.inet_ntoa(self.group)}"
                + (f" {{{srcs}}}" if srcs else ""))


def decode_event(record: bytes | memoryview | tuple) -> Event:
    """One ring-buffer record (or its RECORD tuple) -> Event with this chunk's sources."""
    t = record if isinstance(record, tuple) else RECORD.unpack_from(record, 0)
    ifindex, host, group, igmp_type, record_type, nsrcs, first, count, raw = t
    count = min(count, MAX_EVENT_SOURCES)
    sources = tuple(raw[i:i + 4] for i in range(0, 4 * count, 4))
    return Event(ifindex, host, group, igmp_type, record_type, sources)


class Reassembler:
    """Joins the events of a record split over several records (nsrcs > MAX_EVENT_SOURCES).

    ``feed`` returns the whole record's Event when its last chunk arrives, the
    event itself when it was not split, None while a record is incomplete. A
    chunk out of sequence (one was lost: ring full) drops the partial record.
    """

    def __init__(self) -> None:
        self._partial: dict[tuple, list[bytes]] = {}
        self.dropped = 0

    def feed(self, t: tuple) -> tuple | None:
        """``t`` a RECORD tuple; returns (ifindex, host, group, igmp_type, record_type, sources) or None."""
        ifindex, host, group, igmp_type, record_type, nsrcs, first, count, raw = t
        count = min(count, MAX_EVENT_SOURCES)
        if first == 0 and count == nsrcs:
            return ifindex, host, group, igmp_type, record_type, _split(raw, count)
        key = (ifindex, host, group, igmp_type, record_type, nsrcs)
        got = self._partial.get(key)
        if first == 0:
            got = self._partial[key] = []
        elif got is None or len(got) != first:
            if got is not None:
                del self._partial[key]
            self.dropped += 1
            return None
        got.extend(_split(raw, count))
        if len(got) < nsrcs:
            return None
        del self._partial[key]
        return ifindex, host, group, igmp_type, record_type, tuple(got)


def _split(raw: bytes, count: int) -> tuple[bytes, ...]:
    return tuple(raw[i:i + 4] for i in range(0, 4 * count, 4))


class DownstreamStat(IntEnum):
    """Per-CPU u64 counters of the downstream program (index in ``dn_stats``)."""

    PASSED = 0              # not IGMP, not redirected multicast: to the stack
    IGMP = 1                # IGMP messages seen
    EVENTS = 2              # records written to the ring buffer
    EVENTS_LOST = 3         # ring buffer full: record dropped
    BAD_IP_HEADER = 4       # IHL < 5, version != 4, total length beyond the frame
    TRUNCATED = 5           # IGMP shorter than 8 bytes
    BAD_LENGTH = 6          # IGMP length not a multiple of 4, or larger than a frame
    BAD_CHECKSUM = 7
    BAD_NGREC = 8           # a group record header runs past the message
    BAD_NSRCS = 9           # a group record's sources/aux data run past the message
    TRAILING = 10           # bytes after the last group record
    BAD_GROUP = 11          # report/record for a non-multicast address
    UNKNOWN_TYPE = 12       # IGMP type we do not handle (dropped, not malformed)
    MCAST_FORWARDED = 13    # multicast data from a downstream host, redirected
    MCAST_UNKNOWN = 14      # multicast data from a downstream host, no subscriber


MALFORMED = (DownstreamStat.BAD_IP_HEADER, DownstreamStat.TRUNCATED, DownstreamStat.BAD_LENGTH,
             DownstreamStat.BAD_CHECKSUM, DownstreamStat.BAD_NGREC, DownstreamStat.BAD_NSRCS,
             DownstreamStat.TRAILING, DownstreamStat.BAD_GROUP)
N_DOWNSTREAM_STATS = len(DownstreamStat)


class UpstreamStat(IntEnum):
    """Per-CPU {packets, bytes} counters of the upstream program (index in ``up_stats``)."""

    FORWARDED = 0
    UNKNOWN_GROUP = 1
    PASSED = 2


N_UPSTREAM_STATS = len(UpstreamStat)


class PacketCounter(Struct):
    """Value of ``up_stats`` and ``group_stats`` (one per CPU)."""

    packets = u64
    bytes = u64


# Limits shared by the programs and the controller.
MAX_IGMP_LEN = 1480          # IGMP message bytes the downstream program accepts
MAX_PORTS = 256              # ports per group (inner devmap size)
MAX_GROUPS = 4096            # groups (outer hash-of-maps size)
RING_SIZE = 1 << 20          # ring buffer bytes
