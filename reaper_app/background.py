"""Work the dashboard does in a background thread while its pages stay usable: loading the demo
data set on a first start. One job per database, shared by every browser session."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from reaper_core.progress import overall_fraction
from reaper_core.service import Reaper

#: Share of the progress bar for the files; fitting the model (and the stacks) takes the rest,
#: so the bar never steps back from a finished last file to the fit.
FILES_SHARE = 0.99


@dataclass(frozen=True)
class JobState:
    """A snapshot of a background job: how far (0–1), what it is doing, and how it ended."""

    fraction: float
    text: str
    done: bool
    error: str | None = None
    summary: str | None = None


class DemoLoad:
    """Loads the demo data set in a daemon thread, with truthful per-file progress.

    Resumable: files already stored are found by their SHA-256 and skipped, so a server stopped
    half-way carries on from the next file when it starts again.
    """

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._lock = threading.Lock()
        self._state = JobState(0.0, "starting", False)
        self._file = (0, 1, "")
        self._thread = threading.Thread(target=self._run, name="demo-load", daemon=True)

    def start(self) -> DemoLoad:
        """Start the thread (once)."""
        with self._lock:
            if not self._thread.is_alive() and not self._state.done:
                self._thread.start()
        return self

    def state(self) -> JobState:
        """The current snapshot."""
        with self._lock:
            return self._state

    def _set(self, **changes) -> None:
        with self._lock:
            self._state = JobState(**{**self._state.__dict__, **changes})

    def _on_file(self, i: int, n: int, name: str) -> None:
        self._file = (i, n, name)
        self._set(fraction=FILES_SHARE * i / n, text=f"file {i + 1} of {n}: {name}")

    def _progress(self, stage: str, fraction: float, message: str) -> None:
        i, n, name = self._file
        within = overall_fraction(stage, fraction)
        if stage == "write":
            self._set(text=message)
        elif stage == "fit":
            self._set(fraction=FILES_SHARE, text=f"fitting the model: {message}")
        elif within is not None:
            self._set(fraction=FILES_SHARE * (i + within) / n,
                      text=f"file {i + 1} of {n}, {name}: {message}")

    def _run(self) -> None:
        try:
            report = self._reaper.load_demo(progress=self._progress, on_file=self._on_file)
        except Exception as exc:  # shown as one sentence on the page
            from reaper_core.config import mask_url
            from reaper_core.errors import describe_failure

            where = mask_url(self._reaper.settings.db_url)
            self._set(done=True, error=describe_failure(exc, where))
        else:
            self._set(done=True, fraction=1.0, text="done", summary=report.summary())
