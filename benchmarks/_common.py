"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def real_fits_files() -> list[Path]:
    """Every FITS file in ../shared/data/ (empty when none are there)."""
    if not SHARED_DATA.is_dir():
        return []
    from reaper_core.files import is_fits_name

    return sorted(p for p in SHARED_DATA.rglob("*") if p.is_file() and is_fits_name(p))


def original_design(settings):
    """``settings`` (a :class:`~reaper_core.config.Settings`) as the original design had them,
    the baseline of every benchmark: HOG (``hog-fine``) → scaler → PCA of 2 components → a
    cutout flagged above mean + 2σ of the scores, residuals not normalised."""
    from dataclasses import replace

    return replace(settings, embedder="hog-fine", n_components=2, threshold_mode="sigma",
                   threshold_value=2.0, normalize_residuals=0)


def table(rows: list[dict], title: str) -> str:
    """A Markdown table of dict rows (same keys)."""
    if not rows:
        return f"### {title}\n\n(no rows)\n"
    cols = list(rows[0])

    def fmt(v):
        if isinstance(v, float | np.floating):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import os

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}")


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS")),
                    float("nan"))


def child_result(p, q) -> dict:
    """The child ``p``'s one result from queue ``q``; an error naming its exit code if it dies
    first (rather than waiting for ever)."""
    import queue

    while True:
        try:
            out = q.get(timeout=5)
            p.join()
            return out
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"the benchmark's child process ended with code {p.exitcode} "
                                   "before reporting") from None
