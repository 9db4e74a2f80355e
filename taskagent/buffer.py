"""A bounded on-disk queue of metric batches, one per destination, so nothing accepted is lost.

The original kept unsent metrics in memory only (task-server.md §4): a restart, or an outage
longer than its channel, lost them. Here every batch is written to disk before the first try,
and is removed only after its destination accepted it (``peek`` → send → ``ack``). Batches
leave in the order they came.

Layout of a buffer directory:

* ``<seq>.seg`` segment files (``seq`` a zero-padded counter), written append-only. A record is
  a 12-byte header (payload length, CRC-32 of the payload, number of metrics; big-endian
  unsigned 32-bit) and the payload (the batch as JSON). A new segment starts when the current
  one would pass ``segment_bytes``.
* ``head``: ``<seq> <offset>`` of the oldest unacknowledged record, replaced atomically
  (write, then rename) at each ``ack``. A crash between a send and its ``ack`` sends that batch
  again: delivery is at least once, never at most once.

Bounded: when the segments pass ``max_bytes``, whole oldest segments are deleted and their
batches and metrics counted in ``dropped_batches``/``dropped_metrics`` (the agent reports
``publish.dropped``). A record that does not verify (a torn write after a crash) ends the
segment it is in; the rest of that segment is counted as dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct(">III")
SUFFIX = ".seg"


class DiskBuffer:
    def __init__(
        self, directory: str | os.PathLike, max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int | None = None, fsync: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(1024 * 1024, max_bytes // 8))
        self.fsync = fsync
        self.dropped_batches = 0
        self.dropped_metrics = 0
        stems = [p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}")]
        self._segments = sorted(int(stem) for stem in stems if stem.isdigit())
        self._sizes = {seq: self._path(seq).stat().st_size for seq in self._segments}
        self._head_seq, self._head_offset = self._read_head()
        for seq in [s for s in self._segments if s < self._head_seq]:  # acknowledged, not yet deleted
            self._delete(seq)
        if self._segments and self._head_seq < self._segments[0]:
            self._head_seq, self._head_offset = self._segments[0], 0
        self._writer = None
        # Never append after a previous process's records: its last one may be torn.
        self._fresh_segment = True
        self.batches = sum(self._count_records(seq)[0] for seq in self._segments)

    # --- public --------------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return self.batches

    def append(self, payload: bytes, count: int) -> None:
        """Add one batch (``count`` metrics) at the tail."""
        record = HEADER.pack(len(payload), zlib.crc32(payload), count) + payload
        if len(record) > self.max_bytes:
            self.dropped_batches += 1
            self.dropped_metrics += count
            log.error("a batch of %d bytes is larger than the whole buffer (%d): dropped",
                      len(record), self.max_bytes)
            return
        seq = self._segments[-1] if self._segments else self._head_seq
        size = self._sizes.get(seq, 0)
        full = size > 0 and size + len(record) > self.segment_bytes
        if self._fresh_segment or not self._segments or full:
            seq = self._new_segment()
            self._fresh_segment = False
        writer = self._writer_for(seq)
        writer.write(record)
        writer.flush()
        if self.fsync:
            os.fsync(writer.fileno())
        self._sizes[seq] += len(record)
        self.batches += 1
        while self.bytes > self.max_bytes and len(self._segments) > 1:
            self._drop_oldest()

    def peek(self) -> tuple[tuple[int, int], bytes] | None:
        """(token, payload) of the oldest unacknowledged batch, or None when there is none."""
        while self._segments:
            seq = self._head_seq
            if seq not in self._sizes:  # the head segment is gone: move to the next one
                self._head_seq, self._head_offset = self._segments[0], 0
                continue
            record = self._read_record(seq, self._head_offset)
            if record is not None:
                return (seq, self._head_offset), record[0]
            if seq == self._segments[-1] and self._head_offset >= self._sizes[seq]:
                return None  # everything written so far is acknowledged
            self._finish_segment(seq)  # read to its end, or stopped at a damaged record
        return None

    def ack(self, token: tuple[int, int]) -> bool:
        """Remove the batch ``peek`` returned with ``token`` (its destination accepted it).

        Returns False, changing nothing, when that batch is no longer the oldest: the buffer
        was full and dropped its segment while the batch was being sent.
        """
        if token != (self._head_seq, self._head_offset):
            return False
        record = self._read_record(*token)
        if record is None:
            return False
        self._head_offset = record[1]
        self.batches -= 1
        if self._head_offset >= self._sizes[self._head_seq]:
            self._finish_segment(self._head_seq)
        else:
            self._write_head()
        return True

    def pending_metrics(self) -> int:
        return sum(self._count_records(seq)[1] for seq in self._segments)

    def close(self) -> None:
        if self._writer is not None:
            self._writer[1].close()
            self._writer = None

    # --- internals ----------------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    def _read_head(self) -> tuple[int, int]:
        try:
            seq, offset = (self.directory / "head").read_text().split()
            return int(seq), int(offset)
        except (OSError, ValueError):
            return (self._segments[0] if self._segments else 0), 0

    def _write_head(self) -> None:
        tmp = self.directory / "head.tmp"
        tmp.write_text(f"{self._head_seq} {self._head_offset}\n")
        os.replace(tmp, self.directory / "head")

    def _writer_for(self, seq: int):
        if self._writer is None or self._writer[0] != seq:
            self.close()
            self._writer = (seq, open(self._path(seq), "ab"))  # noqa: SIM115 - kept open across appends
        return self._writer[1]

    def _new_segment(self) -> int:
        seq = max([*self._segments, self._head_seq - 1]) + 1
        self._path(seq).touch(mode=0o600)
        self._segments.append(seq)
        self._sizes[seq] = 0
        if len(self._segments) == 1:
            self._head_seq, self._head_offset = seq, 0
            self._write_head()
        return seq

    def _read_record(self, seq: int, offset: int) -> tuple[bytes, int] | None:
        """(payload, offset of the next record) at ``offset``, or None at the end or a bad record."""
        if offset >= self._sizes.get(seq, 0):
            return None
        with open(self._path(seq), "rb") as f:
            f.seek(offset)
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                return None
            length, crc, _count = HEADER.unpack(header)
            payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.error("buffer %s: a damaged record in segment %d at %d", self.directory, seq, offset)
            return None
        return payload, offset + HEADER.size + length

    def _count_records(self, seq: int) -> tuple[int, int]:
        """(batches, metrics) not yet acknowledged in segment ``seq``."""
        offset = self._head_offset if seq == self._head_seq else 0
        batches = metrics = 0
        try:
            with open(self._path(seq), "rb") as f:
                f.seek(offset)
                while header := f.read(HEADER.size):
                    if len(header) < HEADER.size:
                        break
                    length, _crc, count = HEADER.unpack(header)
                    f.seek(length, os.SEEK_CUR)
                    batches += 1
                    metrics += count
        except OSError:
            pass
        return batches, metrics

    def _finish_segment(self, seq: int) -> None:
        """Segment ``seq`` is read to its end (or to a damaged record): delete it."""
        left, metrics = self._count_records(seq)
        if left:  # records after a damaged one (or the damaged one itself)
            self.batches -= left
            self.dropped_batches += left
            self.dropped_metrics += metrics
        self._delete(seq)
        if self._segments:
            self._head_seq, self._head_offset = self._segments[0], 0
        else:
            self._head_seq, self._head_offset = seq + 1, 0
        self._write_head()

    def _drop_oldest(self) -> None:
        seq = self._segments[0]
        batches, metrics = self._count_records(seq)
        self.batches -= batches
        self.dropped_batches += batches
        self.dropped_metrics += metrics
        log.warning("buffer %s is full: dropped %d batches (%d metrics)", self.directory, batches, metrics)
        self._delete(seq)
        if self._head_seq == seq:
            self._head_seq, self._head_offset = self._segments[0], 0
            self._write_head()

    def _delete(self, seq: int) -> None:
        if self._writer is not None and self._writer[0] == seq:
            self.close()
        self._segments.remove(seq)
        self._sizes.pop(seq, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(seq).unlink()

    def remove_all(self) -> None:
        """Delete every batch and the directory (the destination was removed)."""
        for seq in list(self._segments):
            self._delete(seq)
        for name in ("head", "head.tmp"):
            (self.directory / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
