"""Export: the cutout table of the export contract (see DESIGN.md) as CSV, FITS or VOTable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine

from . import store
from .errors import ReaperError
from .models import CurrentModel

if TYPE_CHECKING:
    import pandas as pd

#: Columns of an export, in order; tools outside the project rely on these names.
EXPORT_COLUMNS = ["cutout_id", "file", "sector", "camera", "ccd", "x", "y", "ra", "dec", "time",
                  "segment", "score", "is_anomaly", "label", "note", "rerank_score", "group"]
#: Export formats by name, and the file suffixes that choose them.
FORMATS = {"csv": ("csv",), "fits": ("fits", "fit"), "votable": ("votable", "vot", "xml")}


def export_columns(engine: Engine, model: CurrentModel | None,
                   rerank: dict[int, float] | None = None,
                   groups: dict[int, int] | None = None,
                   columns: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The export as NumPy columns (:data:`EXPORT_COLUMNS`, one row per cutout, by
    ``cutout_id``); ``score`` and ``is_anomaly`` under ``model`` (NaN and False without one);
    ``rerank_score`` from ``rerank`` ({cutout id: score in [0, 1]}, NaN where missing) and
    ``group`` from ``groups`` (NaN where missing). ``columns``: the store's
    :func:`~reaper_core.store.cutout_columns` under ``model`` when already read (not changed).
    Needs no pandas."""
    cols = dict(columns) if columns is not None else store.cutout_columns(
        engine, model.id if model else None)
    ids = cols["cutout_id"].tolist()
    cols["rerank_score"] = np.array([(rerank or {}).get(i, np.nan) for i in ids], float)
    cols["group"] = np.array([(groups or {}).get(i, np.nan) for i in ids], float)
    cols["is_anomaly"] = (model.flags(cols["score"]) if model
                          else np.zeros(len(cols["cutout_id"]), bool))
    for name in ("label", "note"):
        cols[name] = np.array(["" if v is None else v for v in cols[name]], dtype=object)
    return {name: cols[name] for name in EXPORT_COLUMNS}


def export_table(engine: Engine, model: CurrentModel | None) -> pd.DataFrame:
    """:func:`export_columns` as a DataFrame (sector, camera, ccd and segment as ``Int64``)."""
    return store.as_frame(export_columns(engine, model))


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The export format named by ``fmt``, else by the file's suffix (CSV when it has none)."""
    name = (fmt or Path(path).suffix.lstrip(".") or "csv").lower()
    for key, aliases in FORMATS.items():
        if name in aliases:
            return key
    raise ReaperError(f"unknown export format {name!r} for {Path(path).name}; "
                      f"use csv, fits or votable")


#: Export columns that hold text, and those that hold whole numbers (cutouts' and events').
_TEXT = ("file", "label", "note", "stack", "kind")
_WHOLE = {"cutout_id", "id", "n_detections", "binned", "sign", *store.WHOLE_COLUMNS}


def _column(name: str, values) -> np.ndarray:
    """One export column (a sequence, array or pandas Series) as a plain NumPy array: strings
    as an object array of str, whole numbers and floats as float64 with NaN for missing."""
    if name in _TEXT:
        return np.array(["" if v is None or v != v else str(v) for v in values], dtype=object)
    if name == "is_anomaly":
        return np.asarray(values, dtype=bool)
    if hasattr(values, "to_numpy"):  # pandas, nullable integers included
        return values.to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(values, dtype=float)


def _cells(name: str, col: np.ndarray) -> list[str]:
    """A column's CSV cells: empty where missing, whole numbers without a decimal point,
    floats by ``repr`` (so they read back exactly)."""
    if col.dtype == object:
        return col.tolist()
    if col.dtype == bool:
        return ["True" if v else "False" for v in col]
    whole = name in _WHOLE
    return ["" if v != v else str(int(v)) if whole else repr(v) for v in col.tolist()]


def _write_csv(cols: dict[str, np.ndarray], path: str) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(list(cols))
        w.writerows(zip(*(_cells(n, c) for n, c in cols.items()), strict=True))


def _as_table(cols: dict[str, np.ndarray]):
    from astropy.table import Table

    out = {}
    for name, col in cols.items():
        if name in _WHOLE:
            out[name] = np.nan_to_num(col, nan=-1).astype(np.int64)
        elif col.dtype == object:
            out[name] = np.asarray(col.tolist(), dtype=str)
        else:
            out[name] = col
    return Table(out)


def write_export(table, path: str | Path, fmt: str | None = None) -> Path:
    """Write an export table (a DataFrame or a mapping of columns, each of shape (n,)) as CSV,
    FITS or VOTable (by ``fmt`` or the file's suffix).

    The file is written beside its target and renamed into place, so a failure (a full disk)
    leaves no partial file.
    """
    path = Path(path)
    kind = format_for(path, fmt)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        cols = {name: _column(name, values) for name, values in table.items()}
        if kind == "csv":
            _write_csv(cols, tmp)
        else:
            _as_table(cols).write(tmp, format="fits" if kind == "fits" else "votable",
                                overwrite=True)
        os.replace(tmp, path)
    except OSError as exc:
        raise ReaperError(f"cannot write the export {path}: {exc.strerror or exc}; nothing "
                          "was written") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return path
