"""What the input readers share: the planned files and shards, the read schema, and opening a file's bytes.

``InputFile.format`` is ``parquet``, ``jsonl`` (JSON Lines) or ``json`` (one JSON array of objects);
``InputFile.compression`` is ``gzip``, ``zstd`` or None (JSON only; Parquet compresses inside the file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from workers.rows import EXTRA_FIELD, READ_SCHEMA  # the row contract: what the workers read

_CHUNK = 1 << 20
_PLAIN_EXT = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
_COMPRESSED_EXT = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


class InputReadError(Exception):
    """An input file cannot be read at all (a damaged Parquet page, a truncated compressed stream). It stops the
    job with one message naming the file; a single bad value never raises it (that is an error row)."""


def read_schema(extra: tuple[str, ...]) -> pa.Schema:
    """The read schema: ``READ_SCHEMA``, plus ``__extra`` when the task reads extra columns."""
    return READ_SCHEMA.append(EXTRA_FIELD) if extra else READ_SCHEMA


@dataclass(frozen=True)
class InputFile:
    """One input file. ``offsets`` (JSON Lines only) holds the byte offset of every ``rows_per_file``-th row
    (in the decompressed stream when the file is compressed)."""

    index: int
    path: str
    name: str
    format: str
    size: int
    num_rows: int
    offsets: tuple[int, ...] = field(default=())
    compression: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputFile":
        return cls(**{**data, "offsets": tuple(data.get("offsets", ()))})


@dataclass(frozen=True)
class Shard:
    key: str
    file: InputFile
    start: int
    end: int

    @property
    def num_rows(self) -> int:
        return self.end - self.start


def iter_lines(stream):
    """``(offset, line_bytes)`` for each line of a binary stream, without loading the file."""
    offset, rest = 0, b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        data = rest + chunk
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            yield offset + start, data[start:nl]
            start = nl + 1
        offset += start
        rest = data[start:]
    if rest:
        yield offset, rest


def format_of(name: str) -> tuple[str, str | None] | str:
    """``(format, compression)`` a file's name says it holds, or why it says nothing readable (a skip reason).
    ``.jsonl``/``.ndjson``: JSON Lines; ``.json``: a JSON array (or, when it does not start with ``[``, JSON Lines);
    ``.parquet``/``.pq``: Parquet; a ``.gz``/``.zst`` ending after a JSON one: that file, compressed."""
    lower = name.lower()
    stem, dot, ext = lower.rpartition(".")
    compression = _COMPRESSED_EXT.get(dot + ext) if dot else None
    if compression is not None:
        stem, dot, ext = stem.rpartition(".")
    fmt = _PLAIN_EXT.get(dot + ext) if dot else None
    if fmt is None:
        return "compressed, but the name does not say what it holds (name it .jsonl.gz)" if compression \
            else "unknown extension"
    if fmt == "parquet" and compression:
        return "compressed Parquet (Parquet compresses inside the file; decompress it)"
    return fmt, compression


def open_stream(fs: pafs.FileSystem, file: "InputFile"):
    """A binary stream of the file's bytes, decompressed when the file is compressed."""
    return fs.open_input_stream(file.path, compression=file.compression)


def skip_bytes(stream, n: int) -> None:
    """Read and drop ``n`` bytes (a compressed stream cannot seek)."""
    while n > 0:
        got = len(stream.read(min(n, _CHUNK)))
        if not got:
            return
        n -= got
