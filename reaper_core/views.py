"""Views: filters, paging and grouping of the cutouts, pure functions (no database).

Everything here is vectorised over the cutouts (one row per cutout, no pixels), so moving the
threshold or a filter over 1,000,000 cutouts costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RankIndex:
    """Every cutout's id, file, object segment and score, in rank order (:func:`rank_order`):
    what the gallery filters and pages, without pixels or text (32 bytes a cutout).

    Attributes
    ----------
    cutout_id, file_id : int64 arrays of shape (n,).
    segment : float array of shape (n,); 0 or NaN where a cutout has no object segment.
    score : float array of shape (n,); NaN where unscored.
    """

    cutout_id: np.ndarray
    file_id: np.ndarray
    segment: np.ndarray
    score: np.ndarray
    #: Rank positions sorted by cutout id (for looking cutouts up by id).
    by_id: np.ndarray

    @classmethod
    def from_columns(cls, cutout_id: np.ndarray, file_id: np.ndarray, segment: np.ndarray,
                     score: np.ndarray) -> RankIndex:
        """The index of these cutouts (arrays of shape (n,), any order)."""
        order = rank_order(score, cutout_id)
        ids = np.asarray(cutout_id, np.int64)[order]
        return cls(ids, np.asarray(file_id, np.int64)[order], np.asarray(segment, float)[order],
                   np.asarray(score, float)[order], np.argsort(ids, kind="stable"))

    def __len__(self) -> int:
        return len(self.cutout_id)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Rank positions of the cutouts ``ids`` that are in the index (others dropped)."""
        ids = np.asarray(ids, np.int64)
        sorted_ids = self.cutout_id[self.by_id]
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(self) - 1, 0))
        found = (sorted_ids[at] == ids) if len(self) else np.zeros(len(ids), bool)
        return self.by_id[at[found]]


def select(index: RankIndex, flagged: np.ndarray, f: Filters, *, files: dict[str, np.ndarray],
           labelled: tuple[np.ndarray, np.ndarray], cutout_ids: np.ndarray | None = None
           ) -> np.ndarray:
    """Rank positions (ascending: best first) of the cutouts of ``index`` that pass ``f``:
    score range, sector/camera/CCD and file name (through ``files``), label ("unlabelled"
    for none), anomalies only; vectorised, milliseconds at a million cutouts.

    Parameters
    ----------
    flagged : bool array of shape (n,), in the index's order.
    files : columns ``id``, ``name``, ``sector``, ``camera``, ``ccd`` of every file (shape (F,)).
    labelled : (cutout ids, labels) of every labelled cutout.
    cutout_ids : when given, only these cutouts pass.
    """
    m = np.ones(len(index), bool)
    if f.score_min is not None:
        m &= index.score >= f.score_min
    if f.score_max is not None:
        m &= index.score <= f.score_max
    ok = np.ones(len(files["id"]), bool)
    for col, wanted in (("sector", f.sectors), ("camera", f.cameras), ("ccd", f.ccds)):
        if wanted:
            ok &= np.isin(np.asarray(files[col], float), np.asarray(wanted, float))
    if f.file_contains:
        q = f.file_contains.casefold()
        ok &= np.array([q in str(n).casefold() for n in files["name"]], bool)
    if not ok.all():
        m &= np.isin(index.file_id, np.asarray(files["id"], np.int64)[ok])
    if f.labels:
        ids, labs = labelled
        named = np.isin(np.asarray(labs, object), [lab for lab in f.labels
                                                   if lab != "unlabelled"])
        lab_mask = np.zeros(len(index), bool)
        lab_mask[index.positions(np.asarray(ids)[named])] = True
        if "unlabelled" in f.labels:
            unl = np.ones(len(index), bool)
            unl[index.positions(ids)] = False
            lab_mask |= unl
        m &= lab_mask
    if cutout_ids is not None:
        keep = np.zeros(len(index), bool)
        keep[index.positions(cutout_ids)] = True
        m &= keep
    if f.anomalies_only:
        m &= flagged
    return np.flatnonzero(m)


def rank_order(score: np.ndarray, cutout_id: np.ndarray) -> np.ndarray:
    """Indices that rank cutouts: highest score first, ties by the lower cutout id, cutouts
    without a score last. The one ranking rule of every list, page and export.

    Parameters
    ----------
    score, cutout_id : arrays of shape (n,).

    Returns
    -------
    int array of shape (n,).
    """
    score = np.nan_to_num(np.asarray(score, float), nan=-np.inf)
    return np.lexsort((np.asarray(cutout_id), -score))


def object_keys(file_id: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """One integer per detected object for cutouts with these ``file_id`` and ``segment``
    (shape (n,)): cutouts of one file with the same segment > 0 share it; a cutout without a
    segment (0 or NaN) gets a key of its own."""
    seg = np.nan_to_num(np.asarray(segment, float), nan=0.0)
    _, file_index = np.unique(np.asarray(file_id), return_inverse=True)
    alone = ~(seg > 0)
    span = int(seg[~alone].max(initial=0)) + 1
    return np.where(alone, -1 - np.arange(len(seg)), file_index * span + seg).astype(np.int64)


def first_per_object(file_id: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept indices in their order, cutouts of each kept one's object): the first of each
    object's cutouts (see :func:`object_keys`) among arrays given in ranked order."""
    _, first, group = np.unique(object_keys(file_id, segment), return_index=True,
                                return_inverse=True)
    keep = np.sort(first)
    return keep, np.bincount(group, minlength=1)[group[keep]]


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
    keep, n = first_per_object(rows["file_id"].to_numpy(),
                               rows["segment"].to_numpy(dtype=float, na_value=np.nan))
    return rows.iloc[keep].assign(n_cutouts=n)


def _apart_by_file(file_id: np.ndarray, x: np.ndarray, y: np.ndarray, ref_file: np.ndarray,
                   ref_x: np.ndarray, ref_y: np.ndarray, reach: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, 2) and reference positions (m, 2) with each file moved far along x, so
    that positions of different files never come within ``reach`` px of one another."""
    span = 10.0 * (max(np.nanmax(x), np.nanmax(ref_x)) + reach + 1)
    return (np.c_[np.asarray(x, float) + span * np.asarray(file_id), y],
            np.c_[np.asarray(ref_x, float) + span * np.asarray(ref_file), ref_y])


def away_from(file_id: np.ndarray, x: np.ndarray, y: np.ndarray, ref_file: np.ndarray,
              ref_x: np.ndarray, ref_y: np.ndarray, distance: float) -> np.ndarray:
    """Which of n positions (each array shape (n,); pixels) lie farther than ``distance`` px
    from every one of m reference positions in the same file (shape (m,)): bool, shape (n,)."""
    if len(ref_file) == 0 or len(file_id) == 0:
        return np.ones(len(file_id), bool)
    from scipy.spatial import cKDTree

    points, refs = _apart_by_file(file_id, x, y, ref_file, ref_x, ref_y, distance)
    d, _ = cKDTree(refs).query(points, distance_upper_bound=distance)
    return ~np.isfinite(d)


def window_overlap(file_id: np.ndarray, x: np.ndarray, y: np.ndarray, ref_file: np.ndarray,
                   ref_x: np.ndarray, ref_y: np.ndarray, size: float) -> np.ndarray:
    """The largest share of each of n windows (``size`` × ``size`` px centred on a position;
    arrays shape (n,)) that one of m reference windows of the same file covers (shape (m,)):
    float in [0, 1], shape (n,); 0 where none overlaps."""
    out = np.zeros(len(file_id))
    if len(ref_file) == 0 or len(file_id) == 0:
        return out
    from scipy.spatial import cKDTree

    points, refs = _apart_by_file(file_id, x, y, ref_file, ref_x, ref_y, size)
    # Windows overlap when both offsets are under a side: a ball in the maximum norm.
    near_each = cKDTree(points).query_ball_point(refs, size, p=np.inf)
    for (rx, ry), near in zip(refs, near_each, strict=True):
        if near:
            near = np.asarray(near)
            share = ((size - np.abs(points[near, 0] - rx))
                     * (size - np.abs(points[near, 1] - ry)) / size**2)
            out[near] = np.maximum(out[near], np.clip(share, 0, 1))
    return out


def spread(order: np.ndarray, file_id: np.ndarray, x: np.ndarray, y: np.ndarray, n: int,
           distance: float) -> list[int]:
    """The first ``n`` indices of ``order`` keeping each at least ``distance`` px from those
    kept before it in the same file (so a page never shows one place twice)."""
    kept: list[int] = []
    for i in order:
        if len(kept) == n:
            break
        k = np.asarray(kept, int)
        if k.size and not away_from(file_id[[i]], x[[i]], y[[i]], file_id[k], x[k], y[k],
                                    distance)[0]:
            continue
        kept.append(int(i))
    return kept


def object_members(table: pd.DataFrame, cutout_id: int) -> pd.DataFrame:
    """The other cutouts of ``cutout_id``'s object (same file and segment), highest score
    first; empty when it has no segment."""
    ids = table["cutout_id"].to_numpy()
    me = ids == cutout_id
    if not me.any():
        return table.iloc[:0]
    keys = object_keys(table["file_id"].to_numpy(),
                       table["segment"].to_numpy(dtype=float, na_value=np.nan))
    same = (keys == keys[me][0]) & ~me  # a cutout without a segment has a key of its own
    return table.loc[same].sort_values("score", ascending=False)


#: How a table shows a value that is missing (no sector, no label).
MISSING = "—"


def dash_missing(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """A copy of ``df`` whose ``columns`` are text, with :data:`MISSING` where a value is
    missing (tables then never show "None" or "<NA>")."""
    import pandas as pd

    out = df.copy()
    for c in columns:
        if c in out:
            col = out[c]
            if pd.api.types.is_float_dtype(col) and (col.dropna() % 1 == 0).all():
                col = col.astype("Int64")  # whole numbers with gaps: "7", not "7.0"
            out[c] = col.astype("string").fillna(MISSING)
    return out


def summary(table: pd.DataFrame, flagged: np.ndarray) -> pd.DataFrame:
    """Files, cutouts and anomalies by sector, camera and CCD."""
    import pandas as pd

    if table.empty:
        return pd.DataFrame(columns=["sector", "camera", "ccd", "files", "cutouts", "anomalies"])
    t = dash_missing(table[["sector", "camera", "ccd", "file_id"]], ("sector", "camera", "ccd"))
    t["anomalies"] = flagged
    g = t.groupby(["sector", "camera", "ccd"], dropna=False)
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
