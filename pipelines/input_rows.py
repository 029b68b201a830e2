"""Reading one shard's rows: Parquet row groups, JSON Lines from a byte offset (gzip / zstd: decompressed
from the start), or elements of a JSON array.

A value that cannot be decoded (invalid UTF-8 in a Parquet string, a lone surrogate such as the JSON escape
``"\\ud800"``, a timestamp Python cannot hold, a line nested too deeply) makes its row an error row that names
the column, the file and the row; the rest of the shard is read as usual. A file that cannot be read at all (a
damaged Parquet page, a truncated compressed stream) raises ``InputReadError`` naming the file.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from workers.openai_protocol import unicode_problem

from .config import InputConfig
from .input_formats import (READ_SCHEMA, InputFile, InputReadError, Shard, iter_lines, open_stream, read_schema,
                            skip_bytes)
from .storage import Location, StorageError


def _id_of(value) -> str | None:
    if value is None:
        return None
    return str(value)


def _value_problem(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"is not valid UTF-8 (byte 0x{err.object[err.start]:02x} at byte {err.start})"
    return f"cannot be decoded ({type(err).__name__}: {err})"


def column_values(column: pa.ChunkedArray) -> tuple[list, list[str | None]]:
    """A column's Python values, and per row why its value cannot be decoded (None when it can). Fast path: the
    whole column at once; only a column holding a bad value is decoded value by value."""
    try:
        values = column.to_pylist()
        return values, [None] * len(values)
    except (UnicodeDecodeError, ValueError, OverflowError, pa.ArrowException):
        pass
    values, problems = [], []
    for chunk in column.chunks:
        for k in range(len(chunk)):
            try:
                values.append(chunk[k].as_py())
                problems.append(None)
            except (UnicodeDecodeError, ValueError, OverflowError, pa.ArrowException) as err:
                values.append(None)
                problems.append(_value_problem(err))
    return values, problems


def _rows_table(shard: Shard, rows: list[int], ids: list, texts: list, errors: list,
                extras: list | None = None) -> pa.Table:
    cols = {"__id": ids, "__text": texts, "__input_error": errors, "__shard": [shard.key] * len(rows), "__row": rows}
    if extras is None:
        return pa.table(cols, schema=READ_SCHEMA)
    return pa.table({**cols, "__extra": extras}, schema=read_schema(("extra",)))


def _extra_json(values: dict) -> tuple[str | None, str | None]:
    """The row's extra column values as JSON text, or an error naming a column whose value JSON cannot hold."""
    try:
        text = json.dumps(values, ensure_ascii=False, allow_nan=False)
        if unicode_problem(text) is None:
            return text, None
    except (TypeError, ValueError):
        pass
    for col, value in values.items():
        try:
            problem = unicode_problem(json.dumps(value, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError):
            return None, f"column {col!r} holds a {type(value).__name__} value, not text, a number or a list"
        if problem is not None:
            return None, f"column {col!r} {problem}"
    raise AssertionError("unreachable: some column failed to encode")


def _finish_row(shard: Shard, row: int, raw_id, has_id_col: bool, id_column: str | None,
                id_problem: str | None = None) -> tuple[str, str | None, bool]:
    """The row's id, an id-related error if any, and whether that error is an undecodable id."""
    fallback = f"{shard.file.name}:{row}"
    if not has_id_col:
        return fallback, None, False
    rid = _id_of(raw_id) if id_problem is None else None
    if id_problem is None and rid is not None:
        id_problem = unicode_problem(rid)
    if id_problem is not None:
        return fallback, f"id column {id_column!r} {id_problem} (it was given the id {fallback!r})", True
    if rid is None:
        return fallback, f"id column {id_column!r} is empty in this row (it was given the id {fallback!r})", False
    return rid, None, False


def _where(shard: Shard, row: int) -> str:
    return f" ({shard.file.name}, row {row})"


# ------------------------------------------------------------------------------------------------ Parquet

def _parquet_table(loc: Location, shard: Shard, cols: list[str]) -> pa.Table:
    """The shard's rows of ``cols``; a file or page that cannot be read raises ``InputReadError``."""
    groups: list[int] = []
    try:
        with loc.fs.open_input_file(shard.file.path) as f:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            first, seen = None, 0
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if seen + n > shard.start and seen < shard.end:
                    groups.append(g)
                    first = seen if first is None else first
                seen += n
            table = pf.read_row_groups(groups, columns=cols) if groups else pf.schema_arrow.empty_table().select(cols)
    except (OSError, pa.ArrowException) as err:
        where = f"row groups {groups[0]}-{groups[-1]}" if groups else "its footer"
        raise InputReadError(
            f"input.path: {loc.display(shard.file.path)} is damaged: cannot read {where} (rows {shard.start}-"
            f"{shard.end - 1}): {type(err).__name__}: {' '.join(str(err).split())}. Replace or remove the file, then "
            "run the same command again (rows finished so far are kept).") from None
    return table.slice(shard.start - (first or 0), shard.num_rows)


def _parquet_texts(table: pa.Table, cfg: InputConfig, read_text: bool) -> tuple[list, list[str | None]]:
    """The text column's values, and per row an error (a non-string column, an undecodable value)."""
    n = table.num_rows
    if not read_text:
        return [None] * n, [None] * n
    text_col = table.column(cfg.text_column)
    text_type = text_col.type.value_type if pa.types.is_dictionary(text_col.type) else text_col.type
    string_like = pa.types.is_string(text_type) or pa.types.is_large_string(text_type) or \
        pa.types.is_string_view(text_type) or pa.types.is_null(text_type)
    if not string_like:  # a non-string text column makes every non-null row an error (null rows: 'text is null')
        return [None] * n, [f"text column {cfg.text_column!r} holds {text_type}, not strings" if v else None
                            for v in text_col.is_valid().to_pylist()]
    texts, problems = column_values(text_col)
    return texts, [None if p is None else f"text column {cfg.text_column!r} {p}" for p in problems]


def read_parquet_shard(loc: Location, shard: Shard, cfg: InputConfig, skip: frozenset[int],
                       extra: tuple[str, ...] = (), read_text: bool = True) -> pa.Table:
    cols = ([cfg.text_column] if read_text else []) + ([cfg.id_column] if cfg.id_column else []) + list(extra)
    table = _parquet_table(loc, shard, list(dict.fromkeys(cols)))
    texts, text_errors = _parquet_texts(table, cfg, read_text)
    n = table.num_rows
    raw_ids, id_problems = column_values(table.column(cfg.id_column)) if cfg.id_column else ([None] * n, [None] * n)
    extra_values = {c: column_values(table.column(c)) for c in extra}
    rows, ids, out_texts, errors, extras = [], [], [], [], []
    for k in range(n):
        row = shard.start + k
        if row in skip:
            continue
        rid, id_error, bad_id = _finish_row(shard, row, raw_ids[k], cfg.id_column is not None, cfg.id_column,
                                            id_problems[k])
        bad_extra = next((f"column {c!r} {v[1][k]}" for c, v in extra_values.items() if v[1][k]), None)
        extra_json, extra_error = (None, bad_extra) if bad_extra else \
            _extra_json({c: v[0][k] for c, v in extra_values.items()}) if extra else (None, None)
        error = text_errors[k] or id_error or extra_error
        decode_error = text_errors[k] or bad_id or bad_extra
        rows.append(row)
        ids.append(rid)
        out_texts.append(None if text_errors[k] else texts[k])
        errors.append(error + _where(shard, row) if error and decode_error else error)
        extras.append(extra_json)
    return _rows_table(shard, rows, ids, out_texts, errors, extras if extra else None)


# ------------------------------------------------------------------------------------------------ JSON

def _decode_line(line: bytes):
    """``(object, error)`` of one JSON Lines line."""
    try:
        return json.loads(line), None
    except UnicodeDecodeError as err:
        return None, f"line {_value_problem(err)}"
    except RecursionError:
        return None, "line is nested too deeply to decode"
    except ValueError as err:
        return None, f"line is not valid JSON ({err})"


def json_row(obj, cfg: InputConfig, extra: tuple[str, ...], read_text: bool, what: str = "line"):
    """``(text, raw_id, error, extra_json, decode_error)`` of one decoded JSON record. ``decode_error``: the error
    is about a value that cannot be decoded (the message then gets the file and row)."""
    if not isinstance(obj, dict):
        return None, None, f"{what} is a JSON {type(obj).__name__}, not an object", None, False
    raw_id = obj.get(cfg.id_column) if cfg.id_column else None
    value = obj.get(cfg.text_column)
    missing = [c for c in ([cfg.text_column] if read_text else []) + list(extra) if c not in obj]
    if missing:
        return None, raw_id, f"row has no field {missing[0]!r}", None, False
    if read_text and value is not None and not isinstance(value, str):
        return None, raw_id, f"text field {cfg.text_column!r} holds a JSON {type(value).__name__}, not a string", \
            None, False
    if read_text and value is not None:
        problem = unicode_problem(value)
        if problem is not None:
            return None, raw_id, f"text field {cfg.text_column!r} {problem}", None, True
    extra_json, error = _extra_json({c: obj[c] for c in extra}) if extra else (None, None)
    return (value if read_text else None), raw_id, error, extra_json, error is not None


def _read_error(loc: Location, shard: Shard, err: OSError) -> InputReadError:
    return InputReadError(
        f"input.path: cannot decompress {loc.display(shard.file.path)} ({shard.file.compression}): {err}; the file "
        "is truncated or damaged. Replace or remove it, then run the same command again (rows finished so far are "
        "kept).")


def _json_rows(shard: Shard, cfg: InputConfig, skip: frozenset[int], records, extra: tuple[str, ...],
               read_text: bool) -> tuple[pa.Table, int]:
    """Rows of ``(row number, decoded object, line error)`` records; also the row after the last one seen."""
    rows, ids, texts, errors, extras = [], [], [], [], []
    row = shard.start
    what = "line" if shard.file.format == "jsonl" else "record"
    for this, obj, error in records:
        row = this + 1
        if this in skip:
            continue
        text, raw_id, extra_json, decode_error = None, None, None, error is not None
        if error is None:
            text, raw_id, error, extra_json, decode_error = json_row(obj, cfg, extra, read_text, what)
        rid, id_error, bad_id = _finish_row(shard, this, raw_id, cfg.id_column is not None, cfg.id_column)
        decode_error = decode_error if error else bad_id
        error = error or id_error
        rows.append(this)
        ids.append(rid)
        texts.append(text)
        errors.append(error + _where(shard, this) if error and decode_error else error)
        extras.append(extra_json)
    return _rows_table(shard, rows, ids, texts, errors, extras if extra else None), row


def _lines(stream, shard: Shard):
    row = shard.start
    for _, line in iter_lines(stream):
        if row >= shard.end:
            return
        if line.strip():
            yield row, *_decode_line(line)
            row += 1


def read_jsonl_shard(loc: Location, shard: Shard, cfg: InputConfig, skip: frozenset[int], offset: int,
                     extra: tuple[str, ...] = (), read_text: bool = True) -> pa.Table:
    if shard.file.compression:
        try:
            with open_stream(loc.fs, shard.file) as f:
                skip_bytes(f, offset)
                table, row = _json_rows(shard, cfg, skip, _lines(f, shard), extra, read_text)
        except OSError as err:
            raise _read_error(loc, shard, err) from None
    else:
        with loc.fs.open_input_file(shard.file.path) as f:
            f.seek(offset)
            table, row = _json_rows(shard, cfg, skip, _lines(f, shard), extra, read_text)
    if row < shard.end:
        raise StorageError(f"{loc.display(shard.file.path)} has fewer rows than when the job was planned "
                           f"(expected {shard.end}, found {row}); the input changed during the job")
    return table


def load_json_array(loc: Location, file: InputFile) -> list:
    """The records of a JSON file holding one array (read whole). Invalid UTF-8 inside a string reads as lone
    surrogates, so it makes that record an error row; a file that is not one JSON array raises
    ``InputReadError`` naming it and the place."""
    with open_stream(loc.fs, file) as f:
        text = f.read().decode("utf-8", errors="surrogateescape")
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputReadError(f"input.path: {loc.display(file.path)} is nested too deeply to decode") from None
    except ValueError as err:
        raise InputReadError(f"input.path: {loc.display(file.path)} is not valid JSON ({err}); a .json file holds "
                             "one array of objects (for one object per line name it .jsonl)") from None
    if not isinstance(value, list):
        raise InputReadError(f"input.path: {loc.display(file.path)} holds a JSON {type(value).__name__}, not an "
                             "array of objects")
    return value


def read_json_shard(loc: Location, shard: Shard, cfg: InputConfig, skip: frozenset[int],
                    extra: tuple[str, ...] = (), read_text: bool = True) -> pa.Table:
    """A shard of a JSON array file: records ``start..end`` (the file is parsed whole for each shard)."""
    try:
        records = load_json_array(loc, shard.file)
    except OSError as err:
        if shard.file.compression:
            raise _read_error(loc, shard, err) from None
        raise
    if len(records) < shard.end:
        raise StorageError(f"{loc.display(shard.file.path)} has fewer records than when the job was planned "
                           f"(expected {shard.end}, found {len(records)}); the input changed during the job")
    rows = ((r, records[r], None) for r in range(shard.start, shard.end))
    return _json_rows(shard, cfg, skip, rows, extra, read_text)[0]
