"""Views: the tables and numbers the dashboard shows, computed without Streamlit.

Everything here is vectorised over the cutout table (one row per cutout, no pixels), so moving
the threshold or a filter over 100,000 cutouts costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from . import store


def data_version(engine: Engine) -> tuple:
    """A cheap fingerprint that changes whenever cutouts, models, scores or labels change.

    The threshold is not part of it: moving the threshold never reloads the cutout table.
    """
    with Session(engine) as s:
        n_cut = s.exec(select(func.max(store.Cutout.id))).one()
        n_mod = s.exec(select(func.max(store.DetectorModel.id))).one()
        n_lab, last_lab = s.exec(select(func.count(), func.max(store.Label.updated_at))).one()
        n_score = s.exec(select(func.count()).select_from(store.Score)).one()
    return (n_cut, n_mod, n_lab, str(last_lab), n_score)


def slider_spec(mode: str, train_scores: np.ndarray) -> dict:
    """Range and step of the threshold slider for a mode: dict(min, max, step, unit)."""
    if mode == "sigma":
        return {"min": 0.0, "max": 10.0, "step": 0.1, "unit": "k (mean + k·σ)"}
    if mode == "percentile":
        return {"min": 50.0, "max": 99.9, "step": 0.1, "unit": "percentile of scores"}
    hi = float(np.max(train_scores)) if len(train_scores) else 1.0
    return {"min": 0.0, "max": round(hi * 1.2, 4) or 1.0, "step": round(hi / 200, 6) or 0.001,
            "unit": "score"}


def flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean anomaly flags, shape (n,); unscored (NaN) cutouts are never flagged."""
    s = np.asarray(scores, dtype=float)
    return np.greater(s, threshold, where=np.isfinite(s), out=np.zeros(s.shape, bool))


@dataclass
class Filters:
    """Gallery filters; None or empty means 'any'."""

    score_min: float | None = None
    score_max: float | None = None
    sectors: tuple[int, ...] = ()
    cameras: tuple[int, ...] = ()
    ccds: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    file_contains: str = ""
    anomalies_only: bool = False


def apply_filters(table: pd.DataFrame, flagged: np.ndarray, f: Filters,
                  sort_by_score: bool = True) -> pd.DataFrame:
    """Rows of ``table`` that pass ``f``, highest score first; adds an ``is_anomaly`` column."""
    m = np.ones(len(table), bool)
    score = table["score"].to_numpy(dtype=float)
    if f.score_min is not None:
        m &= score >= f.score_min
    if f.score_max is not None:
        m &= score <= f.score_max
    for col, wanted in (("sector", f.sectors), ("camera", f.cameras), ("ccd", f.ccds)):
        if wanted:
            m &= table[col].isin(list(wanted)).to_numpy(dtype=bool, na_value=False)
    if f.labels:
        lab = table["label"].fillna("unlabelled")
        m &= lab.isin(list(f.labels)).to_numpy()
    if f.file_contains:
        m &= table["file"].str.contains(f.file_contains, case=False, regex=False).to_numpy()
    if f.anomalies_only:
        m &= flagged
    idx = np.flatnonzero(m)
    if sort_by_score:
        order = np.argsort(-np.nan_to_num(score[idx], nan=-np.inf), kind="stable")
        idx = idx[order]
    out = table.iloc[idx].copy()
    out["is_anomaly"] = flagged[idx]
    return out


def one_per_object(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per object: the first row of each group of cutouts of one detected object.

    Cutouts of one file with the same ``segment`` (the cells of one big galaxy, the pieces of a
    bleed trail or a streak; see :class:`reaper_core.sources.Sources`) form a group; a cutout
    without one (0 or missing) stands alone. Only the rows given are grouped.

    Parameters
    ----------
    rows : DataFrame with columns file_id and segment; the first row of each group is kept,
        so sort by score first to keep each object's highest-scoring cutout.

    Returns
    -------
    DataFrame, the kept rows in their order, with a column ``n_cutouts``: the object's cutouts
    among ``rows``.
    """
    n = len(rows)
    seg = rows["segment"].to_numpy(dtype=float, na_value=0.0)
    _, file_index = np.unique(rows["file_id"].to_numpy(), return_inverse=True)
    alone = ~(seg > 0)
    span = int(seg[~alone].max(initial=0)) + 1
    # One integer per (file, segment); each cutout without a segment gets a key of its own.
    key = np.where(alone, -1 - np.arange(n), file_index * span + seg)
    _, first, group = np.unique(key.astype(np.int64), return_index=True, return_inverse=True)
    keep = np.sort(first)
    return rows.iloc[keep].assign(n_cutouts=np.bincount(group, minlength=1)[group[keep]])


def object_members(table: pd.DataFrame, cutout_id: int) -> pd.DataFrame:
    """The other cutouts of ``cutout_id``'s object (same file and segment), highest score
    first; empty when it has no segment."""
    row = table.loc[table["cutout_id"] == cutout_id]
    if row.empty or not (row["segment"].fillna(0).iloc[0] > 0):
        return table.iloc[:0]
    same = ((table["file_id"] == row["file_id"].iloc[0])
            & (table["segment"] == row["segment"].iloc[0]).fillna(False)
            & (table["cutout_id"] != cutout_id))
    return table.loc[same.to_numpy(dtype=bool)].sort_values("score", ascending=False)


def summary(table: pd.DataFrame, flagged: np.ndarray) -> pd.DataFrame:
    """Files, cutouts and anomalies by sector, camera and CCD."""
    if table.empty:
        return pd.DataFrame(columns=["sector", "camera", "ccd", "files", "cutouts", "anomalies"])
    t = table[["sector", "camera", "ccd", "file_id"]].copy()
    t["anomalies"] = flagged
    key = [t[c].astype("string").fillna("—") for c in ("sector", "camera", "ccd")]
    g = t.groupby(key, dropna=False)
    return pd.DataFrame({
        "files": g["file_id"].nunique(), "cutouts": g.size(), "anomalies": g["anomalies"].sum(),
    }).reset_index()


def n_pages(n_rows: int, size: int) -> int:
    """Pages of ``size`` rows needed for ``n_rows`` rows (at least one)."""
    return max(1, int(np.ceil(n_rows / size)))


def page(df: pd.DataFrame, number: int, size: int) -> pd.DataFrame:
    """Rows of page ``number`` (0-based, clipped to the pages there are)."""
    number = int(np.clip(number, 0, n_pages(len(df), size) - 1))
    return df.iloc[number * size:(number + 1) * size]


def pca_coordinates(engine: Engine, model_row: store.DetectorModel, detector,
                    n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(cutout ids, shape (m,); first ``n`` principal-component coordinates, shape (m, n))."""
    with Session(engine) as s:
        ids, X = store.load_embeddings(s, model_row.embedder)
    if len(ids) == 0:
        return ids, np.zeros((0, n))
    pcs = detector.transform(X)
    return ids, pcs[:, :n]
