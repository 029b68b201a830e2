"""The one window driver: long documents (``rewrite``) and edit jobs (``infill``, ``edit``) run window by window.

A *run* is one row's progress through its windows. Each round every unfinished run offers its next window, one
``call`` answers all of them (the engine, batched), and each run takes its answer and moves on. A run's next
window may depend on what its previous windows produced (a rewrite's context is the text rewritten so far), so
rounds run one after the other; rows stay batched within a round.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol, Sequence


class WindowRun(Protocol):
    def next_window(self) -> Any | None:
        """The next window to run, or ``None`` when the row is done."""

    def accept(self, window: Any, result: Any, round_start: float) -> None:
        """Take the engine's answer for ``window``; ``round_start``: seconds from the driver's start to this
        round's engine call (a row's ``seconds`` runs to the end of its last window)."""


def drive_windows(runs: Sequence[WindowRun], call: Callable[[list], list]) -> None:
    """Run every run's windows to the end: ``call(windows) -> results`` (one per window, in order) each round."""
    started = time.perf_counter()
    while True:
        offers = [(run, window) for run in runs if (window := run.next_window()) is not None]
        if not offers:
            return
        round_start = time.perf_counter() - started
        results = call([window for _, window in offers])
        for (run, window), result in zip(offers, results, strict=True):
            run.accept(window, result, round_start)
