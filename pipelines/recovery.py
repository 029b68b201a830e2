"""What the driver does when the cluster or the object store fails under a running job.

Two kinds of failure reach the driver after Ray's and the S3 client's own retries are spent:

* **lost capacity** (a worker node removed, a raylet killed, an actor unreachable, an object lost): nothing is
  wrong with the job, so ``run.run_job`` runs it again from its own staging, up to ``job.max_attempts`` times;
* **storage that keeps failing** (S3 errors that outlast the client's retries, or the output bucket deleted):
  the job stops with one message that names the path or bucket, what was lost, and how to resume.

Errors that are the user's (config, input, checkpoint) and Ctrl-C / SIGTERM are neither: they are raised as they
are and never retried.
"""

from __future__ import annotations

import re
import traceback

import pyarrow.fs as pafs

from .storage import Location, StorageError

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
