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


class StackError(ReaperError):
    """Frames that cannot form a time series (too few, different sizes or CCDs, all flagged)."""


class LabelError(ReaperError, ValueError):
    """A label that is not one of :data:`reaper_core.labels.LABELS`."""


def describe_failure(exc: BaseException, database: str = "") -> str:
    """One sentence for an error the project did not raise on purpose (a database that cannot
    be reached or is full, a disk that is full), with what to do; ``database`` is the masked
    URL to name. Never a traceback, never a password."""
    import errno

    if isinstance(exc, ReaperError):
        return str(exc)
    where = f" ({database})" if database else ""
    try:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError
    except ImportError:  # pragma: no cover
        DBAPIError = SQLAlchemyError = ()
    if isinstance(exc, DBAPIError):
        detail = str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
        low = detail.lower()
        if "full" in low:
            return (f"the database{where} cannot be written: its disk is full ({detail}); "
                    "free some space or move the database (setting db_url)")
        if "locked" in low or "busy" in low:
            return (f"the database{where} is busy with another writer ({detail}); "
                    "try again in a moment")
        if isinstance(exc.orig, Exception) and any(
                w in low for w in ("connect", "refused", "resolve", "timeout", "password",
                                   "authentication", "unable to open", "no such host")):
            return (f"the database{where} cannot be reached ({detail}); check the setting "
                    "db_url (and db_password_file) and that the server is running")
        return f"the database{where} refused the operation ({detail})"
    if isinstance(exc, SQLAlchemyError):
        return f"the database{where} cannot be used ({type(exc).__name__})"
    if isinstance(exc, OSError):
        name = f" {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on the disk writing{name}; free some space and try again"
        return f"cannot use{name}: {exc.strerror or exc}"
    if isinstance(exc, MemoryError):
        return "out of memory; try fewer or smaller files at a time"
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
