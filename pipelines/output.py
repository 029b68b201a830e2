"""The output directory and how it makes a job resumable, exactly once.

Layout::

    OUT/part-FFFFF-RRRRRRRRR.parquet   one per shard (input file F, rows from R), written whole, once
    OUT/summary.json                   the job report
    OUT/_redraft/manifest.json         the job's fingerprint and input plan (what a resume must match)
    OUT/_redraft/staging/<shard>/rows-<first>-<last>-<hash>.parquet   finished rows not yet in a part file

Workers' rows are staged batch by batch (atomically, named by the rows they hold, so a retried batch rewrites
the same file). When every row of a shard is staged, the shard is compacted: staged rows deduplicated by row
number, checked to be exactly the shard's rows, sorted, written as the shard's part file (atomically), and the
staging folder removed. On a rerun, shards with a part file are skipped, and staged rows are not read again.
A run killed at any point therefore leaves whole files only, and no row is generated twice once staged.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from workers.batch import OUTPUT_SCHEMA, STAGED_SCHEMA

from .storage import TMP_MARK, Location, StorageError

STATE_DIR = "_redraft"
MANIFEST = f"{STATE_DIR}/manifest.json"
STAGING = f"{STATE_DIR}/staging"
SUMMARY = "summary.json"
RECEIPT_SCHEMA = pa.schema([
    ("shard", pa.string()), ("rows", pa.int64()), ("ok", pa.int64()), ("error", pa.int64()),
    ("output_tokens", pa.int64()), ("passes", pa.int64()), ("engine_seconds", pa.float64()),
])


PART_FILE = re.compile(r"part-\d{5}-\d{9}\.parquet")


def part_name(key: str) -> str:
    return f"{key}.parquet"


class OutputLayout:
    def __init__(self, loc: Location):
        self.loc = loc

    def part_path(self, key: str) -> str:
        return self.loc.join(part_name(key))

    def staging_dir(self, key: str) -> str:
        return self.loc.join(STAGING, key)

    # ------------------------------------------------------------------------------------------- manifest
    def read_manifest(self) -> dict | None:
        path = self.loc.join(MANIFEST)
        if self.loc.info(path).type != pafs.FileType.File:
            return None
        try:
            return json.loads(self.loc.read_bytes(path))
        except ValueError as err:
            raise StorageError(f"{self.loc.display(path)} is not valid JSON ({err}); "
                               "set job.resume=false to start this output over") from None

    def write_manifest(self, manifest: dict) -> None:
        self.loc.write_bytes(self.loc.join(MANIFEST), json.dumps(manifest, indent=1).encode())

    def write_summary(self, summary: dict) -> None:
        self.loc.write_bytes(self.loc.join(SUMMARY), json.dumps(summary, indent=2).encode())

    def part_files(self) -> list[str]:
        """Paths of the part files (redraft's naming only) directly in the output directory."""
        return [i.path for i in self.loc.list_files(self.loc.root, recursive=False)
                if PART_FILE.fullmatch(posixpath.basename(i.path))]

    def clear(self) -> int:
        """Delete redraft's own files (part files, summary, state); return how many part files went. Other
        files in the directory are left alone."""
        parts = self.part_files()
        for path in parts:
            self.loc.delete_file(path)
        self.loc.delete_file(self.loc.join(SUMMARY))
        self.loc.delete_dir(self.loc.join(STATE_DIR))
        return len(parts)

    def clean_temporaries(self) -> None:
        """Remove half-written temporary files a killed run left behind (local disks only)."""
        if not isinstance(self.loc.fs, pafs.LocalFileSystem):
            return
        for info in self.loc.list_files(self.loc.root, recursive=True):
            if TMP_MARK in posixpath.basename(info.path):
                self.loc.delete_file(info.path)

    # ------------------------------------------------------------------------------------------- state
    def scan(self, keys: set[str]) -> tuple[set[str], dict[str, set[int]]]:
        """``(done_shards, staged_rows)``: shards with a part file, and rows staged for the others."""
        done = {posixpath.basename(p)[: -len(".parquet")] for p in self.part_files()} & keys
        staged_files: dict[str, list[str]] = {}
        for info in self.loc.list_files(self.loc.join(STAGING), recursive=True):
            key = posixpath.basename(posixpath.dirname(info.path))
            if info.path.endswith(".parquet") and TMP_MARK not in info.path:
                staged_files.setdefault(key, []).append(info.path)
        for key in set(staged_files) & done:  # compacted, but killed before its staging was removed
            self.loc.delete_dir(self.staging_dir(key))
        pending = [(k, p) for k, paths in staged_files.items() if k in keys and k not in done for p in paths]

        def rows_of(item):
            key, path = item
            return key, self.loc.read_parquet(path, columns=["__row"]).column("__row").to_pylist()

        staged: dict[str, set[int]] = {}
        with ThreadPoolExecutor(max_workers=16) as pool:
            for key, rows in pool.map(rows_of, pending):
                staged.setdefault(key, set()).update(rows)
        return done, staged


# ----------------------------------------------------------------------------------------------- staging

def stage_batch(batch: pa.Table, loc: Location) -> pa.Table:
    """Ray Data stage after the worker: write each shard's rows of this batch to staging; return receipts."""
    layout = OutputLayout(loc)
    receipts = []
    busy = batch.column("__engine_seconds") if "__engine_seconds" in batch.column_names else None
    if busy is not None:  # the worker's engine time per row: summed into the receipts, not staged
        batch = batch.drop_columns(["__engine_seconds"])
    table = batch.cast(STAGED_SCHEMA) if batch.schema != STAGED_SCHEMA else batch
    shards = table.column("__shard")
    for key in pc.unique(shards).to_pylist():
        in_shard = pc.equal(shards, key)
        part = table.filter(in_shard)
        rows = part.column("__row").to_numpy()
        digest = hashlib.sha1(rows.tobytes()).hexdigest()[:10]
        name = f"rows-{int(rows.min()):09d}-{int(rows.max()):09d}-{digest}.parquet"
        loc.write_parquet(posixpath.join(layout.staging_dir(key), name), part)
        ok = pc.sum(pc.equal(part.column("status"), "ok")).as_py() or 0
        receipts.append({
            "shard": key, "rows": part.num_rows, "ok": ok, "error": part.num_rows - ok,
            "output_tokens": pc.sum(part.column("num_output_tokens")).as_py() or 0,
            "passes": pc.sum(part.column("num_passes")).as_py() or 0,
            "engine_seconds": (pc.sum(busy.filter(in_shard)).as_py() or 0.0) if busy is not None else 0.0,
        })
    return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)


def _with_new_columns(table: pa.Table) -> pa.Table:
    """Rows staged before ``num_self_corrections`` was an output column (a resume across an upgrade) get 0."""
    if "num_self_corrections" in table.column_names:
        return table
    at = table.column_names.index("tokens_per_pass") + 1
    return table.add_column(at, "num_self_corrections", pa.array([0] * table.num_rows, pa.int64()))


def compact_shard(loc: Location, key: str, start: int, end: int) -> dict:
    """Turn a shard's staged rows into its part file. Returns ``{"key", "rows", "missing"}``; when rows are
    missing nothing is written (the next run generates them)."""
    layout = OutputLayout(loc)
    files = [i.path for i in loc.list_files(layout.staging_dir(key), recursive=True)
             if i.path.endswith(".parquet") and TMP_MARK not in i.path]
    tables = [_with_new_columns(loc.read_parquet(p)).cast(STAGED_SCHEMA) for p in files]
    table = pa.concat_tables(tables) if tables else STAGED_SCHEMA.empty_table()
    # a batch retried with a different split stages some rows twice: keep one copy of each row
    table = table.sort_by([("__row", "ascending")])
    rows = table.column("__row").to_numpy()
    if len(rows):
        keep = pa.array([True] + list(rows[1:] != rows[:-1]))
        table = table.filter(keep)
        rows = table.column("__row").to_numpy()
    expected = end - start
    if len(rows) != expected or (len(rows) and (rows[0] != start or rows[-1] != end - 1)):
        return {"key": key, "rows": len(rows), "missing": expected - len(rows)}
    layout.loc.write_parquet(layout.part_path(key), table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA))
    loc.delete_dir(layout.staging_dir(key))
    return {"key": key, "rows": len(rows), "missing": 0}


def read_results(loc: Location, keys: list[str]) -> pa.Table:
    """The figures the summary needs, from every part file (not the text)."""
    layout = OutputLayout(loc)
    cols = ["status", "error", "num_output_tokens", "num_passes", "tokens_per_pass", "seconds"]
    with ThreadPoolExecutor(max_workers=16) as pool:
        tables = list(pool.map(lambda k: loc.read_parquet(layout.part_path(k), columns=cols), keys))
    if not tables:
        return OUTPUT_SCHEMA.empty_table().select(cols)
    return pa.concat_tables(tables)
