"""Input planning and reading: list the input files, count their rows, cut them into shards, and read shards
as a Ray Data datasource. Each file's format (Parquet, JSON Lines, a JSON array) and compression (gzip, zstd;
JSON only) come from its name (``input_formats.format_of``) unless ``input.format`` names one.

A shard is ``rows_per_file`` consecutive rows of one input file; it becomes exactly one output file, named
from the file's number in the sorted listing and the shard's first row (``part-00003-000020000``). Shards are
fixed by the input alone, so a rerun cuts the same shards and finds its own earlier output.

Every row read gets a string id (the id column's value, or ``<file relative to the input root>:<row>``), its
text (a string or null), and ``__input_error`` when the row cannot be used as it stands (not valid JSON, text
not a string, no id); the worker turns those into error rows, so bad rows never stop the read. Tasks that read
more columns (infill's prefix and suffix, edit's spans) get them as one JSON object per row in ``__extra``, with
their values as read (the task checks their types, so a wrong type is an error row naming the column).
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .config import InputConfig
from .input_formats import (READ_SCHEMA, InputFile, InputReadError, Shard, format_of, iter_lines, open_stream,
                            read_schema)
from .input_rows import load_json_array, read_json_shard, read_jsonl_shard, read_parquet_shard
from .storage import Location, retry_reads

__all__ = ["READ_SCHEMA", "InputFile", "InputPlanError", "InputReadError", "Shard", "iter_lines", "make_datasource",
           "make_shards", "plan_inputs", "read_schema", "read_shard"]

class InputPlanError(Exception):
    """The input cannot be planned (nothing matches, unreadable, a configured column absent)."""


def shard_key(file_index: int, start: int) -> str:
    return f"part-{file_index:05d}-{start:09d}"


def make_shards(files: list[InputFile], rows_per_file: int) -> list[Shard]:
    shards = []
    for f in files:
        for start in range(0, f.num_rows, rows_per_file):
            shards.append(Shard(shard_key(f.index, start), f, start, min(start + rows_per_file, f.num_rows)))
    return shards


def shard_offset(shard: Shard, rows_per_file: int) -> int:
    """Byte offset of a JSON Lines shard's first row (recorded when the file was counted)."""
    return shard.file.offsets[shard.start // rows_per_file] if shard.file.offsets else 0


# ------------------------------------------------------------------------------------------------ listing

def _compression_of(name: str) -> str | None:
    lower = name.lower()
    return "gzip" if lower.endswith((".gz", ".gzip")) else "zstd" if lower.endswith((".zst", ".zstd")) else None


def _format_of(name: str, fmt: str) -> tuple[str, str | None] | str:
    """``(format, compression)`` of a file read with ``input.format: fmt`` (an explicit format applies whatever
    the name says; the compression still comes from a .gz / .zst ending), or the reason it cannot be read."""
    if fmt == "auto":
        return format_of(name)
    return fmt, (_compression_of(name) if fmt != "parquet" else None)


def _reads(fmt: str, named: str) -> bool:
    """Whether a folder read with ``input.format: fmt`` reads a file whose name says ``named``. An explicit
    ``jsonl`` still reads ``.json`` files (as JSON Lines, as it always did)."""
    return fmt in ("auto", named) or (fmt == "jsonl" and named == "json")


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/"))


Listed = tuple[pafs.FileInfo, str, str, "str | None"]


def _one_file(loc: Location, info: pafs.FileInfo, fmt: str) -> list[Listed]:
    got = _format_of(loc.root, fmt)
    if isinstance(got, str):
        raise InputPlanError(f"input.format: cannot tell the format of {loc.uri} from its name ({got}); set "
                             "input.format to parquet, jsonl or json")
    return [(info, posixpath.basename(loc.root), *got)]


def list_inputs(loc: Location, fmt: str, skipped: list[str] | None = None) -> list[Listed]:
    """``(info, name, format, compression)`` for every input file, sorted by path. ``name`` is relative to the
    input root. ``skipped``, if given, receives ``"name (reason)"`` for each visible file of a folder that is not
    read (hidden files, ``.*`` and ``_*``, are ignored silently)."""
    root = loc.root
    is_glob = any(c in root for c in "*?[")
    if is_glob:
        base = root.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        infos, rel_base = loc.glob(root), base
        if not infos:
            raise InputPlanError(f"input.path: no files match {loc.uri}")
    else:
        info = loc.info(root)
        if info.type == pafs.FileType.NotFound:
            raise InputPlanError(f"input.path: {loc.uri} does not exist")
        if info.type == pafs.FileType.File:
            return _one_file(loc, info, fmt)
        infos, rel_base = loc.list_files(root), root
    out = []
    for info in infos:
        rel = posixpath.relpath(info.path, rel_base) if rel_base else info.path
        if _hidden(rel):
            continue
        # a glob picks its files, so an explicit format applies to all; in a folder the name decides
        got = _format_of(info.path, fmt if is_glob else "auto")
        if isinstance(got, tuple) and not is_glob and not _reads(fmt, got[0]):
            got = f"input.format is {fmt}"
        if isinstance(got, str):
            if skipped is not None:
                skipped.append(f"{rel} ({got})")
            continue
        fmt_one = "jsonl" if fmt == "jsonl" else got[0]
        out.append((info, rel, fmt_one, got[1]))
    if not out:
        kinds = {"parquet": "Parquet", "jsonl": "JSON Lines", "json": "JSON",
                 "auto": "Parquet, JSON Lines or JSON"}[fmt]
        raise InputPlanError(f"input.path: no {kinds} files under {loc.uri}")
    return out


# ------------------------------------------------------------------------------------------------ counting

def _needed(cfg: InputConfig, columns: dict[str, str], read_text: bool) -> list[tuple[str, str]]:
    """``(config field, column)`` for every column a file must have."""
    need = [("input.text_column", cfg.text_column)] if read_text else []
    need += [("input.id_column", cfg.id_column)] if cfg.id_column is not None else []
    return need + list(columns.items())


def _count_parquet(loc: Location, path: str, cfg: InputConfig, need: list[tuple[str, str]]) -> int:
    try:
        with loc.fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            num_rows = pf.metadata.num_rows
    except (OSError, pa.ArrowInvalid) as err:
        hint = ""
        try:
            with loc.fs.open_input_stream(path) as f:
                if f.read(64).lstrip()[:1] in (b"{", b"["):
                    hint = " (it holds JSON; set input.format: jsonl or name it .jsonl)"
        except OSError:
            pass
        raise InputPlanError(f"input.path: cannot read Parquet file {loc.display(path)}: {err}{hint}") from None
    for key, col in need:
        if col not in names:
            raise InputPlanError(f"{key}: column {col!r} is not in {loc.display(path)} (columns: {', '.join(names)})")
    return num_rows


_MAGIC = {b"PAR1": ("Parquet data", "rename it .parquet or set input.format: parquet"),
          b"\x1f\x8b": ("gzip-compressed data", "name it with a .gz ending (e.g. .jsonl.gz) or decompress it"),
          b"\x28\xb5\x2f\xfd": ("zstd-compressed data",
                               "name it with a .zst ending (e.g. .jsonl.zst) or decompress it")}


def _sniff(loc: Location, f: InputFile, head: bytes) -> None:
    """Refuse a file read as JSON whose content is something else (one clear error, not a row per line)."""
    what_read = "JSON Lines" if f.format == "jsonl" else "a JSON array"
    for magic, (what, fix) in _MAGIC.items():
        if head.startswith(magic):
            raise InputPlanError(f"input.format: {loc.display(f.path)} holds {what} (it starts with {magic!r}"
                                 f"{', after decompressing' if f.compression else ''}), but it is read as "
                                 f"{what_read}; {fix}")
    if b"\x00" in head:
        raise InputPlanError(f"input.format: {loc.display(f.path)} holds binary data (NUL bytes), not {what_read}")
    if f.format == "json" and head.strip() and not head.lstrip().startswith(b"["):
        raise InputPlanError(f"input.format: {loc.display(f.path)} does not hold a JSON array (it does not start "
                             "with '['); for one object per line set input.format: jsonl or name it .jsonl")
    lines = [line for line in head.split(b"\n")[:-1] if line.strip()] if b"\n" in head else [head]
    first_line = lines[0] if lines and head.strip() else None
    if f.format == "jsonl" and first_line is not None and first_line.lstrip().startswith(b"["):
        try:
            value = json.loads(first_line)
        except (ValueError, RecursionError):
            value = None
        if value is None or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            raise InputPlanError(f"input.format: {loc.display(f.path)} holds a JSON array, not JSON Lines (one "
                                 "object per line); name it .json or set input.format: json")


def _unreadable(loc: Location, f: InputFile, err: OSError) -> InputPlanError:
    if f.compression:
        return InputPlanError(f"input.path: cannot decompress {loc.display(f.path)} ({f.compression}): {err}; the "
                              "file is truncated or damaged. Replace or remove it, then run the same command again")
    return InputPlanError(f"input.path: cannot read {loc.display(f.path)}: {err}")


def _head(loc: Location, f: InputFile) -> bytes:
    try:
        with open_stream(loc.fs, f) as stream:
            return stream.read(4096)
    except OSError as err:
        raise _unreadable(loc, f, err) from None


def _count_json(loc: Location, f: InputFile, rows_per_file: int, inferred: bool) -> InputFile:
    """Count a JSON file's rows: lines (JSON Lines, with every ``rows_per_file``-th row's offset) or records.
    ``inferred``: the format comes from the name (a ``.json`` file of one object per line is read as JSON Lines,
    as it always was)."""
    head = _head(loc, f)
    if inferred and f.format == "json" and head.strip() and not head.lstrip().startswith(b"["):
        f = replace(f, format="jsonl")
    _sniff(loc, f, head)
    try:
        if f.format == "json":
            return replace(f, num_rows=len(load_json_array(loc, f)))
        rows, offsets = 0, []
        with open_stream(loc.fs, f) as stream:
            for off, line in iter_lines(stream):
                if not line.strip():
                    continue
                if rows % rows_per_file == 0:
                    offsets.append(off)
                rows += 1
    except OSError as err:
        raise _unreadable(loc, f, err) from None
    except InputReadError as err:
        raise InputPlanError(str(err)) from None
    return replace(f, num_rows=rows, offsets=tuple(offsets))


def _sample_records(loc: Location, f: InputFile, sample: int):
    if f.format == "json":
        yield from load_json_array(loc, f)[:sample]
        return
    with open_stream(loc.fs, f) as stream:
        n = 0
        for _, line in iter_lines(stream):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except (ValueError, RecursionError):
                yield None
            n += 1
            if n >= sample:
                return


def _check_json_columns(loc: Location, f: InputFile, need: list[tuple[str, str]], sample: int = 100) -> None:
    """Fail fast when no row among the first ``sample`` has the configured columns (a misspelt column)."""
    seen: set[str] = set()
    for obj in _sample_records(loc, f, sample):
        if isinstance(obj, dict):
            seen.update(obj)
    if not seen:
        return
    for key, col in need:
        if col not in seen:
            raise InputPlanError(f"{key}: no field {col!r} in the first rows of {loc.display(f.path)} "
                                 f"(fields: {', '.join(sorted(seen))})")


def plan_inputs(loc: Location, cfg: InputConfig, rows_per_file: int, previous: list[dict] | None = None,
                columns: dict[str, str] | None = None, read_text: bool = True,
                skipped: list[str] | None = None) -> list[InputFile]:
    """List and count the input files. Files unchanged (same path and size) since ``previous`` (a manifest's
    file list) reuse its counts, so resuming does not rescan JSON input. ``columns``: the task's extra columns by
    the config field naming each; ``read_text=False``: the task does not read the text column; ``skipped``:
    receives the folder's files that are not read (``list_inputs``)."""
    listed = list_inputs(loc, cfg.format, skipped)
    need = _needed(cfg, columns or {}, read_text)
    known = {(p["path"], p["size"]): p for p in (previous or [])}

    def count(item):
        i, (info, name, fmt, compression) = item
        prev = known.get((info.path, info.size))
        if prev is not None and (prev["format"] == fmt or {prev["format"], fmt} == {"json", "jsonl"}) \
                and prev.get("compression") == compression:
            return InputFile.from_dict({**prev, "index": i, "name": name})
        if fmt == "parquet":
            return InputFile(i, info.path, name, fmt, info.size, _count_parquet(loc, info.path, cfg, need))
        return _count_json(loc, InputFile(i, info.path, name, fmt, info.size, 0, (), compression), rows_per_file,
                           cfg.format == "auto")

    with ThreadPoolExecutor(max_workers=16) as pool:
        files = list(pool.map(count, enumerate(listed)))
    first_json = next((f for f in files if f.format != "parquet" and f.num_rows), None)
    if first_json is not None and not previous:
        try:
            _check_json_columns(loc, first_json, need)
        except OSError as err:
            raise _unreadable(loc, first_json, err) from None
    return files


# ------------------------------------------------------------------------------------------------ reading

def read_shard(loc: Location, shard: Shard, cfg: InputConfig, skip: frozenset[int], rows_per_file: int,
               extra: tuple[str, ...] = (), read_text: bool = True) -> pa.Table:
    """One shard's rows (``READ_SCHEMA``; with ``extra`` columns, ``read_schema(extra)``)."""
    if shard.file.format == "parquet":
        return read_parquet_shard(loc, shard, cfg, skip, extra, read_text)
    if shard.file.format == "json":
        return read_json_shard(loc, shard, cfg, skip, extra, read_text)
    return read_jsonl_shard(loc, shard, cfg, skip, shard_offset(shard, rows_per_file), extra, read_text)


def make_datasource(loc: Location, shards: list[Shard], cfg: InputConfig, done_rows: dict[str, set[int]],
                    rows_per_file: int, extra: tuple[str, ...] = (), read_text: bool = True):
    """A Ray Data datasource with one read task per shard, skipping rows already done. ``extra``, ``read_text``:
    the task's extra columns and whether it reads the text column (``Task.extra_columns``, ``Task.reads_text``)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ShardDatasource(Datasource):
        def get_name(self) -> str:
            return "ReadCorpus"

        def estimate_inmemory_data_size(self):
            return sum(s.file.size * s.num_rows // max(s.file.num_rows, 1) for s in shards) or None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for s in shards:
                skip = frozenset(done_rows.get(s.key, ()))
                size = s.file.size * s.num_rows // max(s.file.num_rows, 1)
                meta = BlockMetadata(num_rows=s.num_rows - len(skip), size_bytes=int(size), exec_stats=None,
                                     input_files=[loc.display(s.file.path)])

                def read(s=s, skip=skip):
                    return [retry_reads(lambda: read_shard(loc, s, cfg, skip, rows_per_file, extra, read_text),
                                        loc.attempts)]

                tasks.append(ReadTask(read, meta, schema=read_schema(extra), per_task_row_limit=per_task_row_limit))
            return tasks

    return ShardDatasource()
