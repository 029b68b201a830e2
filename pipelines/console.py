"""What a ``redraft`` command prints while it works: log levels, row progress, and Ray's noise kept out of it.

* Default: redraft's warnings and errors, one progress display that counts **rows** (a bar redrawn in place on
  a terminal; a plain line every ``REDRAFT_PROGRESS_SECONDS`` seconds, default 10, when stderr is a file or a
  pipe, as under cron or CI), and the summary. Ray Data's own progress bars and INFO lines are off (they count
  blocks, not rows), and the one benign error-level line Ray's core worker prints for every job is dropped.
* ``-v``: redraft's INFO lines (every staged batch, every output file written), Ray
  Data's own progress and logs, and every Ray line unfiltered.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import time

_state = {"verbose": False}

# Lines Ray prints at error level that are not errors. Ray Data passes its map function to the engine actors
# through the object store, so the core worker warns, once per actor, that a restart could fail if that object
# were lost; Ray Data holds the object for the whole job, so it never is.
BENIGN_RAY_LINES = (
    re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store "
               r"and max_restarts > 0"),
)


def verbose() -> bool:
    return _state["verbose"]


def configure(verbose_: bool, filter_stderr: bool = True) -> None:
    """Set up logging for one command (called once by the CLI; ``filter_stderr`` is off when the CLI is called
    in-process, e.g. by tests, so that file descriptor 2 is left alone)."""
    _state["verbose"] = verbose_
    logging.basicConfig(level=logging.INFO if verbose_ else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("redraft").setLevel(logging.INFO if verbose_ else logging.WARNING)
    if not verbose_:
        # ray.init's notice that token authentication is on (Ray's secure default; nothing to act on)
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        if filter_stderr:
            StderrFilter.install(BENIGN_RAY_LINES)


def announce(message: str) -> None:
    """One plain status line on stderr, with or without -v."""
    print(message, file=sys.stderr, flush=True)


def quiet_ray_data(ctx) -> None:
    """Ray Data's own progress and INFO logs only with ``-v`` (redraft shows row progress itself)."""
    ctx.enable_progress_bars = verbose()
    level = logging.INFO if verbose() else logging.ERROR
    logging.getLogger("ray.data").setLevel(level)


class StderrFilter:
    """Drops known-benign lines written to file descriptor 2 (Ray's C++ core worker writes there directly, so a
    Python logging filter cannot see them); everything else passes through unchanged.

    Whole lines are matched; a partial line that does not start like a Ray log line (``[`` ...), such as a
    progress bar redrawn with ``\\r``, passes at once. At exit every pending byte is written out before the
    process ends (a marker line tells the pump it has seen everything written so far)."""

    _installed: StderrFilter | None = None
    _MARK = b"\x00redraft-stderr-drained\x00\n"

    def __init__(self, patterns):
        self.patterns = patterns
        self.dropped = 0
        self._real = os.dup(2)
        self._drained = threading.Event()
        read_end, write_end = os.pipe()
        sys.stderr.flush()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), name="redraft-stderr", daemon=True)
        self._thread.start()
        atexit.register(self.drain)

    @classmethod
    def install(cls, patterns) -> StderrFilter | None:
        if cls._installed is None:
            try:
                cls._installed = cls(patterns)
            except OSError:  # no usable fd 2 (some embedded interpreters): print everything
                return None
        return cls._installed

    def drain(self, timeout: float = 5.0) -> None:
        """Write out everything pending and give fd 2 back to the real stderr."""
        try:
            sys.stderr.flush()
            os.write(2, self._MARK)
            self._drained.wait(timeout)
            os.dup2(self._real, 2)
        except OSError:
            pass

    def _pump(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._emit(line + b"\n")
                if pending and not pending.startswith(b"["):
                    os.write(self._real, pending)
                    pending = b""
            if pending:
                self._emit(pending)

    def _emit(self, line: bytes) -> None:
        if line.endswith(self._MARK):
            if len(line) > len(self._MARK):
                os.write(self._real, line[:-len(self._MARK)])
            self._drained.set()
            return
        if line.startswith(b"["):
            text = line.decode("utf-8", "replace")
            if any(p.search(text) for p in self.patterns):
                self.dropped += 1
                return
        os.write(self._real, line)


def _is_terminal(stream) -> bool:
    """Whether ``stream`` ends on a terminal; for stderr behind ``StderrFilter``'s pipe, whether the real stderr
    does."""
    f = StderrFilter._installed
    if f is not None and stream is sys.stderr:
        return os.isatty(f._real)
    return stream.isatty()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RowProgress:
    """Rows done out of rows to do, with ok/error counts, rate and time left.

    On a terminal the line is redrawn in place (at most 5 times a second); otherwise one plain line is printed
    every ``interval`` seconds and at the end, so a log file shows the job moving without a line per batch."""

    def __init__(self, total: int, label: str, stream=None, interval: float | None = None, tty: bool | None = None):
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_terminal(self.stream) if tty is None else tty
        if interval is None:
            interval = float(os.environ.get("REDRAFT_PROGRESS_SECONDS", "10"))
        self.interval = interval if not self.tty else 0.2
        self.done = self.ok = self.error = 0
        self.start = time.perf_counter()
        self._last = float("-inf")
        self._drawn_at = -1  # rows done when the last line was drawn
        self._closed = False

    def update(self, rows: int, ok: int = 0, error: int = 0) -> None:
        self.done += rows
        self.ok += ok
        self.error += error
        now = time.perf_counter()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._draw(final=False)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        pct = self.done / self.total if self.total else 1.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        parts = [f"{self.done:,}/{self.total:,} rows ({pct:.0%})", f"{self.ok:,} ok", f"{self.error:,} error",
                 f"{rate:.2f} rows/s", f"{_duration(elapsed)} elapsed"]
        if self.done < self.total:
            parts.append(f"about {_duration(left)} left" if left is not None else "starting")
        if self.tty:
            width = 24
            filled = int(width * pct)
            return f"{self.label} [{'#' * filled}{'.' * (width - filled)}] " + " | ".join(parts)
        return f"{self.label}: " + ", ".join(parts)

    def _draw(self, final: bool) -> None:
        self._drawn_at = self.done
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The last line (once): on a terminal it ends the redrawn line; in a log it is the final count."""
        if self._closed:
            return
        self._closed = True
        if self.tty or self._drawn_at != self.done:
            self._draw(final=True)
