"""Export: the cutout table of the export contract (see DESIGN.md) as CSV, FITS or VOTable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from . import store
from .errors import ReaperError
from .models import CurrentModel

#: Columns of an export, in order; tools outside the project rely on these names.
EXPORT_COLUMNS = ["cutout_id", "file", "sector", "camera", "ccd", "x", "y", "ra", "dec", "time",
                  "segment", "score", "is_anomaly", "label", "note"]
#: Export formats by name, and the file suffixes that choose them.
FORMATS = {"csv": ("csv",), "fits": ("fits", "fit"), "votable": ("votable", "vot", "xml")}


def export_table(engine: Engine, model: CurrentModel | None) -> pd.DataFrame:
    """One row per cutout with :data:`EXPORT_COLUMNS`, ranked by ``cutout_id``; ``score`` and
    ``is_anomaly`` under ``model`` (empty and False without one)."""
    df = store.cutout_table(engine, model.id if model else None)
    df["is_anomaly"] = model.flags(df["score"].to_numpy(float)) if model else False
    df["label"] = df["label"].fillna("")
    df["note"] = df["note"].fillna("")
    return df[EXPORT_COLUMNS]


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The export format named by ``fmt``, else by the file's suffix (CSV when it has none)."""
    name = (fmt or Path(path).suffix.lstrip(".") or "csv").lower()
    for key, aliases in FORMATS.items():
        if name in aliases:
            return key
    raise ReaperError(f"unknown export format {name!r} for {Path(path).name}; "
                      f"use csv, fits or votable")


def _as_table(df: pd.DataFrame):
    from astropy.table import Table

    cols = {}
    for name in df.columns:
        col = df[name]
        if name in ("sector", "camera", "ccd", "segment"):
            cols[name] = col.fillna(-1).astype(int).to_numpy()
        elif name in ("file", "label", "note"):
            cols[name] = np.asarray(col.fillna("").astype(str).tolist(), dtype=str)
        elif name == "is_anomaly":
            cols[name] = col.astype(bool).to_numpy()
        else:
            cols[name] = col.astype(float).to_numpy()
    return Table(cols)


def write_export(df: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write an export table as CSV, FITS or VOTable (by ``fmt`` or the file's suffix).

    The file is written beside its target and renamed into place, so a failure (a full disk)
    leaves no partial file.
    """
    path = Path(path)
    kind = format_for(path, fmt)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        if kind == "csv":
            df.to_csv(tmp, index=False)
        else:
            _as_table(df).write(tmp, format="fits" if kind == "fits" else "votable",
                                overwrite=True)
        os.replace(tmp, path)
    except OSError as exc:
        raise ReaperError(f"cannot write the export {path}: {exc.strerror or exc}; nothing "
                          "was written") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return path
