"""Progress reporting: the stages of ingesting a file and how far along a file is overall."""

from __future__ import annotations

from collections.abc import Callable

#: progress(stage, fraction of that stage done in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]

#: The stages of ingesting one file, in order.
STAGES = ("read", "sources", "cutouts", "embed", "stars", "store")


def noop(stage: str, fraction: float, message: str) -> None:
    """A :data:`ProgressFn` that reports nothing."""
    return None


def overall_fraction(stage: str, fraction: float) -> float | None:
    """How far through a file's ingest ``fraction`` of ``stage`` is, in [0, 1]; None for a
    stage that is not one of :data:`STAGES` (e.g. ``fit``)."""
    if stage not in STAGES:
        return None
    return min(1.0, (STAGES.index(stage) + min(max(fraction, 0.0), 1.0)) / len(STAGES))
