"""Frame header codec and a sans-I/O frame reader.

Rules of the wire (theory of operation):

* A message is a list of frames. On a byte stream it is written as a header
  ``<u32 frame count><u64 length> * count`` (little-endian) followed by the frames.
* The reader checks the count, every length and their sum against ``FrameLimits``
  *before* allocating anything for them, so a peer cannot make us reserve memory
  by announcing a huge message.
* A length with ``SHARED_FLAG`` set (bit 63) announces a frame carried in shared memory
  beside the stream (``corral.comm.shm``); none of its bytes follow in the stream. Only a
  reader told ``shared = True`` (its comm has a side channel) accepts one; the message
  comes out as ``SharedFrames``, that frame as a ``SharedFrame`` placeholder for the comm
  to resolve.
* Small frames are parsed out of one reusable staging buffer (so many small messages
  cost one ``recv``); a large frame gets its own buffer and the socket reads straight
  into it (no copy after the kernel's).

``FrameReader`` does no I/O: an asyncio ``BufferedProtocol`` (or a test) asks it for
a buffer to fill, tells it how many bytes arrived, and collects complete messages.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from corral.comm import frame_memory
from corral.exceptions import FrameLimitError

_COUNT = struct.Struct("<I")
_ONE_FRAME = struct.Struct("<IQ")  # the header of the commonest message
_LENGTH_SIZE = 8
STAGING_SIZE = 64 * 1024
# Frames at least this large are read straight into their own buffer.
DIRECT_READ_THRESHOLD = 64 * 1024
# Frames at least this large get memory of their own, aligned on huge pages and reused.
HUGE_PAGE_THRESHOLD = 4 * 2**20

SHARED_FLAG = 1 << 63


class SharedFrame:
    """Placeholder for a frame that travels in shared memory; its comm resolves it."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


class SharedFrames(list):  # type: ignore[type-arg]
    """A message with at least one ``SharedFrame`` in it."""


Frame = bytes | bytearray | memoryview | SharedFrame


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 2**40


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Upper bounds a reader enforces before allocating memory for a message.

    The codec splits larger buffers into frames of at most ``max_frame_bytes``, so the
    defaults let a value as large as this machine's memory travel.
    """

    max_frames: int = 100_000
    max_frame_bytes: int = 2**30
    max_message_bytes: int = field(default_factory=_physical_memory)

    def check(self, lengths: list[int] | tuple[int, ...]) -> None:
        """Raise ``FrameLimitError`` if a message with these frame lengths is not allowed."""
        if not 1 <= len(lengths) <= self.max_frames:
            raise FrameLimitError(
                f"message announces {len(lengths)} frames; allowed 1 to {self.max_frames}"
            )
        total = 0
        for n in lengths:
            if n > self.max_frame_bytes:
                raise FrameLimitError(
                    f"frame of {n} bytes exceeds the limit of {self.max_frame_bytes}"
                )
            total += n
        if total > self.max_message_bytes:
            raise FrameLimitError(
                f"message of {total} bytes exceeds the limit of {self.max_message_bytes}"
            )


def frame_nbytes(frame: object) -> int:
    if isinstance(frame, bytes | bytearray):
        return len(frame)
    return memoryview(frame).nbytes  # type: ignore[arg-type]


def allocate_frame(length: int) -> bytearray | memoryview:
    """A writable buffer for one large incoming frame, to be filled before it is read.

    Touching a fresh 100 MiB ``bytearray`` costs ~25 000 page faults, which on a VM take
    longer than the transfer itself; large frames get memory aligned on huge pages
    instead, used again once their consumers are done with it (``frame_memory``).
    Consumers only rely on the buffer protocol, so either type will do.
    """
    if length < HUGE_PAGE_THRESHOLD:
        return bytearray(length)
    return frame_memory.frame(length)


def encode_header(lengths: list[int]) -> bytes:
    if len(lengths) == 1:
        return _ONE_FRAME.pack(1, lengths[0])
    return struct.pack(f"<I{len(lengths)}Q", len(lengths), *lengths)


class FrameReader:
    """Turns a byte stream into messages (lists of frames); see the module docstring."""

    def __init__(self, limits: FrameLimits) -> None:
        self.limits = limits
        self._buf = bytearray(STAGING_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0  # first unparsed byte in the staging buffer
        self._end = 0  # one past the last received byte
        self._lengths: tuple[int, ...] | None = None  # header of the message in progress
        self._frames: list[Frame] = []
        self._direct: memoryview | None = None  # unfilled tail of a large frame
        self._direct_frame: bytearray | memoryview | None = None
        self.shared = False  # whether lengths may carry SHARED_FLAG

    def get_buffer(self) -> memoryview:
        """The buffer the next bytes from the stream should be written into."""
        if self._direct is not None:
            return self._direct
        if self._end == len(self._buf):
            self._make_room(1)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> list[list[Frame]]:
        """Account for ``nbytes`` written into the last buffer; return completed messages.

        Raises ``FrameLimitError`` for a header over the limits and ``ProtocolError``
        for a malformed one; the stream cannot be trusted after either.
        """
        if self._direct is not None:
            self._direct = self._direct[nbytes:]
            if len(self._direct):
                return []
            assert self._direct_frame is not None
            self._frames.append(self._direct_frame)
            self._direct = self._direct_frame = None
        else:
            self._end += nbytes
        return self._parse()

    def _parse(self) -> list[list[Frame]]:
        messages: list[list[Frame]] = []
        while True:
            if self._lengths is None and self._take_small_message(messages):
                continue
            if self._lengths is None and not self._parse_header():
                break
            if not self._fill_frames():
                break
            messages.append(self._frames)
            self._lengths, self._frames = None, []
        if self._start == self._end:
            self._start = self._end = 0
        return messages

    def _take_small_message(self, messages: list[list[Frame]]) -> bool:
        """Fast path: a whole one-frame message in the staging buffer."""
        start = self._start
        if self._end - start < _ONE_FRAME.size:
            return False
        count, length = _ONE_FRAME.unpack_from(self._buf, start)
        end = start + _ONE_FRAME.size + length
        if count != 1 or end > self._end or length > self.limits.max_frame_bytes:
            return False
        if length > self.limits.max_message_bytes or length >= DIRECT_READ_THRESHOLD:
            return False
        messages.append([bytes(self._view[start + _ONE_FRAME.size : end])])
        self._start = end
        return True

    def _parse_header(self) -> bool:
        available = self._end - self._start
        if available < _COUNT.size:
            self._make_room(_COUNT.size)
            return False
        (count,) = _COUNT.unpack_from(self._buf, self._start)
        if not 1 <= count <= self.limits.max_frames:
            raise FrameLimitError(
                f"message announces {count} frames; allowed 1 to {self.limits.max_frames}"
            )
        header_size = _COUNT.size + _LENGTH_SIZE * count
        if available < header_size:
            self._make_room(header_size)
            return False
        lengths = struct.unpack_from(f"<{count}Q", self._buf, self._start + _COUNT.size)
        if max(lengths) >= SHARED_FLAG and self.shared:  # else over the limits, refused below
            self.limits.check([n & ~SHARED_FLAG for n in lengths])
            self._frames = SharedFrames()
        else:
            self.limits.check(lengths)
        self._start += header_size
        self._lengths = lengths
        return True

    def _fill_frames(self) -> bool:
        """Move complete frames out of the staging buffer; False if more bytes are needed."""
        assert self._lengths is not None
        while len(self._frames) < len(self._lengths):
            length = self._lengths[len(self._frames)]
            available = self._end - self._start
            if length >= SHARED_FLAG:
                self._frames.append(SharedFrame(length & ~SHARED_FLAG))
            elif available >= length:
                chunk = self._view[self._start : self._start + length]
                frame = bytes(chunk) if length < DIRECT_READ_THRESHOLD else bytearray(chunk)
                self._frames.append(frame)
                self._start += length
            elif length >= DIRECT_READ_THRESHOLD:
                # Give the large frame its own buffer; the socket fills the rest in place.
                target = allocate_frame(length)
                memoryview(target)[:available] = self._view[self._start : self._end]
                self._start = self._end = 0
                self._direct_frame = target
                self._direct = memoryview(target)[available:]
                return False
            else:
                self._make_room(length)
                return False
        return True

    def _make_room(self, needed: int) -> None:
        """Ensure ``needed`` bytes from ``_start`` fit, with free space after ``_end``."""
        if self._start + needed <= len(self._buf) and self._end < len(self._buf):
            return
        pending = self._end - self._start
        tail = bytes(self._view[self._start : self._end])
        if needed > len(self._buf):  # only headers of many frames get here; limits bound them
            self._buf = bytearray(needed)
            self._view = memoryview(self._buf)
        self._buf[:pending] = tail
        self._start, self._end = 0, pending
