"""Files on disk: finding FITS files to ingest, and storing uploads (never outside their folder)."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.bz2",
                 ".fit.bz2", ".fts.bz2")
#: What is wrong with a folder given where FITS files are wanted (:func:`expand_paths` keeps
#: one that holds none, for this to be said).
NO_FITS_IN_FOLDER = f"is a folder holding no FITS file (no name ending {', '.join(FITS_SUFFIXES)})"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def is_fits_name(path: str | Path) -> bool:
    """Whether a file name ends like a FITS file (``.fits``, ``.fz``, ``.fits.gz``…)."""
    return str(path).lower().endswith(FITS_SUFFIXES)


def expand_paths(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files named, FITS files inside folders (recursively), and glob matches, sorted, unique.

    A path that matches nothing, or a folder holding no FITS file, is kept, so that ingest
    reports it instead of dropping it. The other files found in folders (not FITS by name)
    are appended to ``skipped`` when given.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            inside = sorted(q for q in p.rglob("*") if q.is_file())
            fits_files = [q for q in inside if is_fits_name(q)]
            out.extend(fits_files or [p])
            if skipped is not None:
                skipped.extend(q for q in inside if not is_fits_name(q))
        elif p.exists():
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matches:
                out.append(p)
            out.extend(m for m in matches if m.is_file())
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def safe_filename(name: str, max_length: int = 120) -> str:
    """A display- and disk-safe version of a user-supplied file name.

    Directory parts, NUL and control characters, and anything outside ``[A-Za-z0-9._+-]`` are
    dropped or replaced; Unicode is folded to ASCII; the result is never empty, never starts with
    a dot and is at most ``max_length`` characters, keeping the suffix.
    """
    name = (name or "").replace("\x00", "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = _UNSAFE.sub("_", name).strip("._") or "upload"
    if len(name) > max_length:
        lower = name.lower()
        suffix = next((s for s in FITS_SUFFIXES[::-1] if lower.endswith(s)), "")
        if lower.endswith((".gz", ".bz2")):  # ".fits.gz", not ".gz"
            suffix = next((s for s in FITS_SUFFIXES if lower.endswith(s) and s.count(".") == 2),
                          suffix)
        name = name[: max_length - len(suffix)] + suffix
    return name


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_upload(name: str, data: bytes, uploads_dir: str | Path) -> Path:
    """Write uploaded bytes to ``uploads_dir/<sha256[:16]>_<safe name>`` atomically.

    The same bytes always land at the same path, so a repeated upload writes nothing new.
    """
    root = Path(uploads_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    target = (root / f"{digest[:16]}_{safe_filename(name)}").resolve()
    if target.parent != root:  # defence in depth; safe_filename already prevents this
        raise ValueError("upload name escapes the uploads folder")
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target
