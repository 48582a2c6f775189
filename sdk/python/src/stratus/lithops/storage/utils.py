"""What Lithops' `lithops.storage.utils` gives programs: `CloudObject`,
`StorageNoSuchKeyError`, and the partition of an object a function gets as
its `obj` parameter."""

from __future__ import annotations

import io
from typing import Any, Callable, Optional


class StorageNoSuchKeyError(Exception):
    """The object does not exist."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"no such key: {bucket}/{key}")
        self.bucket = bucket
        self.key = key


class CloudObject:
    """A reference to an object: its storage backend, bucket and key."""

    def __init__(self, backend: str, bucket: str, key: str) -> None:
        self.backend = backend
        self.bucket = bucket
        self.key = key

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, CloudObject) and (self.backend, self.bucket, self.key) == (
            other.backend,
            other.bucket,
            other.key,
        )

    def __hash__(self) -> int:
        return hash((self.backend, self.bucket, self.key))

    def __repr__(self) -> str:
        return f"<CloudObject {self.backend}://{self.bucket}/{self.key}>"


#: Read past a partition's end in steps of this size to finish its last line.
_LINE_STEP = 64 * 1024


def read_lines_of(read: Callable[[int, int], bytes], start: int, end: int, size: int) -> bytes:
    """The lines that start in `[start, end)` of an object of `size` bytes,
    read with `read(a, b)` (bytes `[a, b)`): a partition after the first
    drops the partial line its range starts in, and every partition but the
    last reads on to the end of its last line, so that partitions cut at any
    byte give every line once."""
    if start >= size:
        return b""
    begin = max(start - 1, 0)
    data = read(begin, min(end, size))
    if start > 0:
        # Byte start-1 is in the data: the partition's lines start after
        # the first newline at or after it.
        cut = data.find(b"\n")
        while cut < 0 and begin + len(data) < size:
            more = read(begin + len(data), min(begin + len(data) + _LINE_STEP, size))
            data += more
            cut = data.find(b"\n")
        if cut < 0:
            return b""
        data = data[cut + 1 :]
        begin = begin + cut + 1
        if begin >= end:
            return b""
    pos = begin + len(data)
    while pos < size and not data.endswith(b"\n"):
        more = read(pos, min(pos + _LINE_STEP, size))
        nl = more.find(b"\n")
        if nl >= 0:
            data += more[: nl + 1]
            break
        data += more
        pos += len(more)
    return data


class ObjectPartition:
    """The `obj` a function gets: one object, or one partition of it.
    `data_stream` reads its bytes (whole lines, when it is a partition)."""

    def __init__(self, backend: str, bucket: Optional[str], key: Optional[str], part: int = 0,
                 data_byte_range: Optional["tuple[int, int]"] = None, chunk_size: Optional[int] = None,
                 url: Optional[str] = None, size: Optional[int] = None,
                 fetch: Optional[Callable[[], bytes]] = None) -> None:
        self.backend = backend
        self.bucket = bucket
        self.key = key
        self.part = part
        self.data_byte_range = data_byte_range
        self.chunk_size = chunk_size
        self.url = url
        self.size = size
        self._fetch = fetch
        self._stream: Optional[io.BytesIO] = None

    @property
    def path(self) -> str:
        return self.url or f"{self.backend}://{self.bucket}/{self.key}"

    @property
    def data_stream(self) -> io.BytesIO:
        if self._stream is None:
            self._stream = io.BytesIO(self._fetch() if self._fetch else b"")
        return self._stream

    def __repr__(self) -> str:
        return f"<ObjectPartition {self.path} part {self.part} {self.data_byte_range}>"
