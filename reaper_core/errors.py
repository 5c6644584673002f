"""Exception types raised by :mod:`reaper_core`.

Everything a user can cause (a bad file, a bad setting, an unreachable service) raises a
subclass of :class:`ReaperError` whose message is one sentence a person can act on.
"""

from __future__ import annotations


class ReaperError(Exception):
    """Base class for every error the project raises on purpose."""


class FITSReadError(ReaperError):
    """A file could not be read as a usable FITS image.

    Parameters
    ----------
    filename : str
        The file's display name (never a full server path).
    reason : str
        Why it was refused, in plain words.
    """

    def __init__(self, filename: str, reason: str) -> None:
        self.filename = filename
        self.reason = reason
        super().__init__(f"{filename}: {reason}")


class ConfigError(ReaperError):
    """A setting is missing or has a value that cannot be used."""


class EmbeddingError(ReaperError):
    """An embedder could not produce embeddings (service down, quota, bad reply)."""


class ModelError(ReaperError):
    """No usable detector model, or a saved model that cannot be loaded."""


class LabelError(ReaperError, ValueError):
    """A label that is not one of :data:`reaper_core.labels.LABELS`."""
