"""What the driver does when the cluster or the object store fails under a running job.

Two kinds of failure reach the driver after Ray's and the S3 client's own retries are spent:

* **lost capacity** (a worker node removed, a raylet killed, an actor unreachable, an object lost): nothing is
  wrong with the job, so ``run.run_job`` runs it again from its own staging, up to ``job.max_attempts`` times;
* **storage that keeps failing** (S3 errors that outlast the client's retries, or the output bucket deleted):
  the job stops with one message that names the path or bucket, what was lost, and how to resume.

Errors that are the user's (config, input, checkpoint) and Ctrl-C / SIGTERM are neither: they are raised as they
are and never retried. Every fatal problem reaches the user as one ``JobError``; ``run_attempts`` runs the job
again after lost capacity and ``raise_stopped`` sorts what stopped the Ray part of a job into the two kinds.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import Counter
from typing import TYPE_CHECKING, Callable

import pyarrow.fs as pafs

from .input_formats import InputReadError
from .storage import Location, StorageError

if TYPE_CHECKING:
    from .output import OutputLayout

logger = logging.getLogger("redraft")

# Ray's exceptions for capacity that went away (node, raylet, worker process, actor, object); matched by name
# because Ray Data re-raises remote failures with the original exception's traceback as text
LOST_CAPACITY = ("ActorUnavailableError", "ActorDiedError", "NodeDiedError", "WorkerCrashedError",
                 "LocalRayletDiedError", "RaySystemError", "ObjectLostError", "ObjectFetchTimedOutError",
                 "OwnerDiedError", "ObjectReconstructionFailedError",
                 "ObjectReconstructionFailedMaxAttemptsExceededError",
                 "ObjectReconstructionFailedLineageEvictedError", "ReferenceCountingAssertionError")
_LOST = re.compile(r"\b(?:ray\.exceptions\.)?(" + "|".join(LOST_CAPACITY) + r")\b")
# the job's own faults, even when Ray reports them as a dead actor (an engine actor whose constructor raised: a
# broken checkpoint is not lost capacity, and running again would fail the same way)
_JOB_FAULT = re.compile(r"\b(CheckpointError|InputError|NonFiniteError|ConfigError)\b"
                        r"|error raised in its creation task")
_STORAGE = re.compile(r"\b(StorageError|AWS Error|NoSuchBucket|NO_SUCH_BUCKET)\b")
RESUME_HINT = "Rows finished so far are kept; run the same command again to resume."


class JobError(Exception):
    """The job cannot start or cannot finish; the message says why and names the config field when one is
    at fault."""


class LostCapacity(Exception):
    """Ray lost a node, actor or object and gave up; the job can run again from its staging."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def lost_capacity(err: BaseException) -> bool:
    """True when a Ray system failure (not the job's own code or data) is what stopped the job."""
    import ray.exceptions as rex

    text = "".join(traceback.format_exception(err))
    if _JOB_FAULT.search(text):
        return False
    kinds = (rex.ActorUnavailableError, rex.ActorDiedError, rex.NodeDiedError, rex.WorkerCrashedError,
             rex.LocalRayletDiedError, rex.RaySystemError, rex.ObjectLostError, rex.ObjectFetchTimedOutError)
    if any(isinstance(e, kinds) for e in _chain(err)):
        return True
    if any(isinstance(e, (StorageError, OSError)) for e in _chain(err)):
        return False
    return _LOST.search(text) is not None and _STORAGE.search(text) is None


def storage_failed(err: BaseException) -> bool:
    """True when an object-store error (after the client's retries) is what stopped the job."""
    if any(isinstance(e, StorageError) for e in _chain(err)):
        return True
    return _STORAGE.search("".join(traceback.format_exception(err))) is not None


_STORAGE_LINE = re.compile(r"(?:^|\s)(?:[\w.]*\.)?StorageError: (.+)$")


def storage_cause(err: BaseException) -> str | None:
    """The message of the innermost ``StorageError`` (path and cause) in an exception chain, remote ones included."""
    text = "".join(traceback.format_exception(err))
    found = [m.group(1) for m in (_STORAGE_LINE.search(line.strip()) for line in text.splitlines()) if m]
    return found[-1] if found else None


def bucket_gone(loc: Location) -> str | None:
    """The output bucket's name when ``loc`` is on S3 and its bucket no longer exists, else None."""
    if not isinstance(loc.fs, pafs.S3FileSystem):
        return None
    bucket = loc.root.split("/", 1)[0]
    try:
        missing = loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError:  # cannot tell (the store is down): report the error itself
        return None
    return bucket if missing else None


def storage_stop_message(cause: str, out_loc: Location, rows_there: int, where: str = "") -> str:
    """The one message a job ends with when storage keeps failing. ``rows_there``: rows staged or written in
    ``out_loc`` by now (all lost when its bucket is gone)."""
    bucket = bucket_gone(out_loc)
    if bucket is not None:
        return (f"output.path: the bucket '{bucket}' of {out_loc.uri} no longer exists (deleted while the job ran); "
                f"the {rows_there:,} rows staged or written there were lost with it, and so was the job's resume "
                f"state. Create the bucket again and run the same command: the job generates every row again, "
                f"exactly once.")
    during = f" during {where}" if where else ""
    return f"the job stopped{during}: {cause}\n{RESUME_HINT}"


_ERROR_LINE = re.compile(r"^([\w.]*(?:Error|Exception|Interrupt)): (.+)$")


def root_cause(err: BaseException) -> str:
    """The innermost ``SomeError: message`` line of an exception chain (Ray nests remote tracebacks as text)."""
    text = "".join(traceback.format_exception(err))
    found = [m for m in (_ERROR_LINE.match(line.strip()) for line in text.splitlines()) if m]
    if not found:
        return f"{type(err).__name__}: {err}"
    name, message = found[-1].groups()
    return f"{name.rsplit('.', 1)[-1]}: {message}"


def input_read_error(err: BaseException) -> str | None:
    """The message of an ``InputReadError`` (an input file that cannot be read) anywhere in Ray's exception chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, InputReadError):
            return root_cause(err).removeprefix("InputReadError: ")
        err = err.__cause__ or err.__context__
    return None


def raise_stopped(err: BaseException, out_loc, rows_there: int, where: str = ""):
    """Turn what stopped the Ray part of the job into ``LostCapacity`` (to run again) or a ``JobError``."""
    unreadable = input_read_error(err)
    if unreadable is not None:
        raise JobError(unreadable) from err
    cause = storage_cause(err) or root_cause(err)
    if storage_failed(err):
        raise JobError(storage_stop_message(cause, out_loc, rows_there, where)) from err
    if lost_capacity(err):
        raise LostCapacity(cause) from err
    during = f" during {where}" if where else ""
    raise JobError(f"the job stopped{during}: {cause}\n{RESUME_HINT}") from err


def rows_staged(shards, done: set[str], staged: dict[str, set[int]]) -> int:
    """Rows of ``shards`` already generated: whole shards ``done`` and the rows ``staged`` of the others."""
    return sum(s.num_rows for s in shards if s.key in done) + sum(len(v) for v in staged.values())


def run_attempts(execute: Callable, layout: OutputLayout, shards, done, staged, counts: Counter,
                 most: int) -> int:
    """Run the pending shards with ``execute(pending, to_read, staged)``; when Ray loses a node, actor or object
    for good (``LostCapacity``), run again from the staging (only the rows not staged yet), up to ``most``
    (``job.max_attempts``) runs in all. Returns the number of runs."""
    out_loc = layout.loc
    for attempt in range(1, most + 1):
        pending = [s for s in shards if s.key not in done]
        to_read = [s for s in pending if len(staged.get(s.key, ())) < s.num_rows]
        try:
            execute(pending, to_read, staged)
            return attempt
        except LostCapacity as err:
            if attempt == most:
                raise JobError(f"the job stopped after {most} attempt{'s' if most > 1 else ''} "
                               f"(job.max_attempts): {err.cause}\n{RESUME_HINT}") from err
            try:
                done, staged = layout.scan({s.key for s in shards})
            except StorageError as scan_err:
                raise JobError(storage_stop_message(str(scan_err), out_loc, counts["rows"])) from None
            logger.warning("attempt %d/%d after %s; resuming from %d staged rows", attempt + 1, most, err.cause,
                           rows_staged(shards, done, staged))
    raise AssertionError("unreachable")
