"""Local and S3 paths behind one pyarrow filesystem interface, plus the few file operations the job needs.

``Location`` pairs a filesystem with a root path inside it; it pickles (Ray ships it to read tasks, workers and
compaction tasks). Writes are atomic: on S3 an object appears only when its upload completes; on local disks
a file is written under a hidden temporary name and renamed, so a killed job leaves whole files or none.
"""

from __future__ import annotations

import io
import os
import posixpath
import random
import re
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .config import StorageConfig

TMP_MARK = ".tmp-"


class StorageError(Exception):
    """A path cannot be listed, read or written; the message names the path and the cause."""


def glob_regex(pattern: str) -> re.Pattern:
    """Shell-style glob as a regex: ``*`` and ``?`` stay within a folder, ``**/`` spans any folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


# The AWS SDK classes a GetObject retried after a 5xx or a cut body as INTERNAL_FAILURE ("Failed to flush response
# stream") and does not retry it (Ray Data retries the same text for its own reads); only this is retried here
SDK_UNRETRIED = ("Failed to flush response stream",)


def retry_reads(fn, attempts: int):
    """``fn()``, run again (backoff with jitter, ``attempts`` runs at most) while it fails with an error the S3
    client leaves unretried (``SDK_UNRETRIED``); any other error is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - matched by text: the SDK's error reaches us in several wrappers
            if attempt == attempts or not any(m in str(err) for m in SDK_UNRETRIED):
                raise
            time.sleep(min(5.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def is_s3(path: str) -> bool:
    return path.startswith(("s3://", "s3a://"))


def make_filesystem(path: str, storage: StorageConfig | None) -> pafs.FileSystem:
    if not is_s3(path):
        return pafs.LocalFileSystem()
    storage = storage or StorageConfig()
    endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = storage.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # retries and timeouts are the AWS SDK's own (standard mode: backoff with jitter); delayed open makes a small
    # file one PutObject, which the SDK retries whole (a multipart upload's completion is not retried cleanly)
    kwargs: dict = {"region": region, "anonymous": storage.anonymous, "allow_delayed_open": True,
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=storage.max_attempts),
                    "connect_timeout": storage.connect_timeout_s, "request_timeout": storage.request_timeout_s}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:  # 'host:port' without a scheme
            scheme, host = "https", endpoint
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    if storage.access_key_id is not None and storage.secret_access_key is not None:
        kwargs.update(access_key=storage.access_key_id, secret_key=storage.secret_access_key.get_secret_value())
        if storage.session_token is not None:
            kwargs["session_token"] = storage.session_token.get_secret_value()
    return pafs.S3FileSystem(**kwargs)


def strip_scheme(path: str) -> str:
    if is_s3(path):
        return path.split("://", 1)[1].rstrip("/")
    return os.path.abspath(os.path.expanduser(path)).rstrip("/") or "/"


@dataclass(frozen=True)
class Location:
    """A root path on a filesystem. ``uri`` is what the user wrote (for messages)."""

    fs: pafs.FileSystem
    root: str
    uri: str
    storage: StorageConfig | None = None

    @classmethod
    def of(cls, uri: str, storage: StorageConfig | None) -> "Location":
        return cls(make_filesystem(uri, storage), strip_scheme(uri), uri.rstrip("/"), storage)

    def __reduce__(self):
        if is_s3(self.uri):  # rebuilt from the settings where it lands: a pickled S3FileSystem drops its retries
            return (Location.of, (self.uri, self.storage))
        return (Location, (self.fs, self.root, self.uri, self.storage))  # the root as resolved here

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def display(self, path: str) -> str:
        """A filesystem path as the user would write it."""
        if self.uri.startswith(("s3://", "s3a://")):
            return f"s3://{path}"
        return path

    # ----------------------------------------------------------------------------------------- queries
    def info(self, path: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(path)
        except OSError as err:
            raise StorageError(f"cannot access {self.display(path)}: {err}") from None

    def list_files(self, path: str, recursive: bool = True) -> list[pafs.FileInfo]:
        """Plain files under ``path`` (sorted by path); none when it does not exist."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        except OSError as err:
            raise StorageError(f"cannot list {self.display(path)}: {err}") from None
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def glob(self, pattern: str) -> list[pafs.FileInfo]:
        """Files matching a glob (``*``, ``?``, ``[...]``; ``**`` crosses folders)."""
        parts = pattern.split("/")
        fixed = []
        for part in parts:
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        base = "/".join(fixed) or "/"
        regex = glob_regex(pattern)
        return [i for i in self.list_files(base, recursive=True) if regex.fullmatch(i.path)]

    # ----------------------------------------------------------------------------------------- reads
    @property
    def attempts(self) -> int:
        """Runs of a read whose error the S3 client does not retry (``retry_reads``)."""
        return self.storage.max_attempts if self.storage is not None and is_s3(self.uri) else 1

    def read_bytes(self, path: str) -> bytes:
        def read():
            with self.fs.open_input_stream(path) as f:
                return f.read()

        try:
            return retry_reads(read, self.attempts)
        except OSError as err:
            raise StorageError(f"cannot read {self.display(path)}: {err}") from None

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        def read():
            with self.fs.open_input_file(path) as f:
                return pq.read_table(f, columns=columns)

        try:
            return retry_reads(read, self.attempts)
        except OSError as err:
            raise StorageError(f"cannot read {self.display(path)}: {err}") from None

    # ----------------------------------------------------------------------------------------- writes
    def _atomic(self, path: str, write) -> None:
        local = isinstance(self.fs, pafs.LocalFileSystem)
        target = path
        if local:
            target = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}{TMP_MARK}{uuid.uuid4().hex}")
        try:
            if local:
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
            with self.fs.open_output_stream(target) as out:
                write(out)
            if local:
                self.fs.move(target, path)
        except OSError as err:
            if local:
                try:
                    self.fs.delete_file(target)
                except OSError:
                    pass
            raise StorageError(f"cannot write {self.display(path)}: {err}") from None

    def write_bytes(self, path: str, data: bytes) -> None:
        self._atomic(path, lambda out: out.write(data))

    def write_parquet(self, path: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(path, buf.getvalue())

    def delete_file(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StorageError(f"cannot delete {self.display(path)}: {err}") from None

    def check_writable(self) -> None:
        """Prove the root can be written, leaving nothing behind: local, create and remove a probe file in the
        root or its nearest existing parent (folders are created by the job itself); S3, write and delete a small
        probe object under the root. Raises ``StorageError`` naming the path and the cause."""
        probe = f".redraft-write-probe-{uuid.uuid4().hex}"
        if isinstance(self.fs, pafs.LocalFileSystem):
            _check_local_writable(self.root, probe)
            return
        key = self.join(probe)
        try:
            with self.fs.open_output_stream(key) as out:
                out.write(b"redraft write probe\n")
            self.fs.delete_file(key)
        except OSError as err:
            raise StorageError(
                f"cannot write to {self.uri}: {err} (check that the bucket exists and that the credentials, from "
                "output.storage / input.storage or the standard AWS chain, allow writing and deleting there)") from None

    def delete_dir(self, path: str) -> None:
        try:
            if self.info(path).type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StorageError(f"cannot delete {self.display(path)}: {err}") from None


def _check_local_writable(root: str, probe: str) -> None:
    existing = root
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StorageError(f"cannot write to {root}: {existing} is a file, not a directory")
    path = os.path.join(existing, probe)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.remove(path)
    except OSError as err:
        where = root if existing == root else f"{root} (its nearest existing folder {existing})"
        raise StorageError(f"cannot write to {where}: {err.strerror or err}") from None
