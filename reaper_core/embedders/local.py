"""Offline, weight-free embedders: photometric statistics and morphology, HOG, or both.

Each patch is measured against its own sky: the median and robust noise σ of the patch's outer
ring (3 px wide), so the same features work for TESS frames in e-/s and 8-bit images.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps
from skimage.feature import hog

from ..cutouts import fill_nan
from .base import Embedder, EmbedProgressFn, Feature

STATS_NAMES = [
    "peak_snr", "aperture_snr", "total_snr", "p01", "p05", "p25", "p75", "p95", "p99",
    "skew", "kurtosis", "area_3sigma", "area_10sigma", "gini", "m20", "concentration",
    "asymmetry", "ellipticity", "orientation_cos", "orientation_sin", "size_r2",
    "centroid_offset", "row_max", "row_min", "col_max", "col_min", "flat_top", "nan_fraction",
    "sky_level", "sky_noise", "n_peaks",
]
#: The statistics that describe the shape of the light rather than its amount.
_MORPHOLOGY = {"gini", "m20", "concentration", "asymmetry", "ellipticity", "orientation_cos",
               "orientation_sin", "size_r2", "centroid_offset", "row_max", "row_min", "col_max",
               "col_min", "flat_top", "n_peaks", "area_3sigma", "area_10sigma"}
#: What each statistic means when it is higher / lower than the model expects, in plain words.
_MEANINGS = {
    "peak_snr": ("a brighter peak than usual", "a fainter peak than usual"),
    "aperture_snr": ("a brighter centre than usual", "a fainter centre than usual"),
    "total_snr": ("more light in the patch than usual", "less light in the patch than usual"),
    "p01": ("no dark pixels", "unusually dark pixels"),
    "p05": ("no dark pixels", "unusually dark pixels"),
    "p25": ("a brighter background", "a darker background"),
    "p75": ("a brighter background", "a darker background"),
    "p95": ("many bright pixels", "few bright pixels"),
    "p99": ("many bright pixels", "few bright pixels"),
    "skew": ("light in a few very bright pixels", "light spread evenly"),
    "kurtosis": ("a few extreme pixels", "no extreme pixels"),
    "area_3sigma": ("more of the patch above its sky level than usual",
                    "less of the patch above its sky level than usual"),
    "area_10sigma": ("a large bright area", "a small bright area"),
    "gini": ("light concentrated in few pixels", "light spread over many pixels"),
    "m20": ("bright light away from the centre", "bright light packed at the centre"),
    "concentration": ("light concentrated at the centre", "light not concentrated"),
    "asymmetry": ("lopsided light", "unusually symmetric light"),
    "ellipticity": ("elongated light", "unusually round light"),
    "orientation_cos": ("light elongated in an unusual direction",) * 2,
    "orientation_sin": ("light elongated in an unusual direction",) * 2,
    "size_r2": ("extended light", "compact light"),
    "centroid_offset": ("light off the centre of the patch", "light at the centre"),
    "row_max": ("a bright row across the patch", "no bright row"),
    "row_min": ("no dark row", "a dark row across the patch"),
    "col_max": ("a bright column (a bleed trail or a streak)", "no bright column"),
    "col_min": ("no dark column", "a dark column (a bad column)"),
    "flat_top": ("a flat, saturated top", "no saturated top"),
    "nan_fraction": ("missing (NaN) pixels", "fewer missing pixels than usual"),
    "sky_level": ("a brighter sky", "a darker sky"),
    "sky_noise": ("a noisier sky", "a quieter sky"),
    "n_peaks": ("more objects in the patch than usual", "fewer objects in the patch than usual"),
}
STATS_FEATURES = [Feature(n, "morphology" if n in _MORPHOLOGY else "photometry",
                          high=_MEANINGS[n][0], low=_MEANINGS[n][1]) for n in STATS_NAMES]


def _sky(patches: np.ndarray, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust σ of each patch's outer ring; shapes (n,), (n,)."""
    n, s, _ = patches.shape
    ring = np.ones((s, s), bool)
    ring[width:s - width, width:s - width] = False
    vals = patches[:, ring]
    med = np.median(vals, axis=1)
    mad = np.median(np.abs(vals - med[:, None]), axis=1) * 1.4826
    # Fall back to the whole patch's spread where the ring is flat (e.g. 8-bit sky at 0).
    whole = np.std(patches.reshape(n, -1), axis=1)
    floor = np.maximum(1e-3 * np.abs(med), 1e-6)
    sigma = np.where(mad > floor, mad, np.maximum(whole * 0.1, floor))
    return med, sigma


def sky_units(patches: np.ndarray) -> np.ndarray:
    """Each patch minus its sky, in units of the sky's robust σ (see the module docstring).

    Parameters
    ----------
    patches : ndarray, shape (n, s, s); NaN pixels take the patch's median.

    Returns
    -------
    ndarray, shape (n, s, s), float64, dimensionless.
    """
    p = fill_nan(np.asarray(patches, dtype=np.float32)).astype(np.float64)
    sky, sig = _sky(p)
    return (p - sky[:, None, None]) / sig[:, None, None]


def stats_features(patches: np.ndarray) -> np.ndarray:
    """Photometric statistics and morphology of each patch, vectorised.

    Parameters
    ----------
    patches : ndarray, shape (n, s, s)

    Returns
    -------
    ndarray, shape (n, 31), float32; names in :data:`STATS_NAMES`.
    """
    raw = np.asarray(patches, dtype=np.float32)
    n, s, _ = raw.shape
    nan_frac = (~np.isfinite(raw)).reshape(n, -1).mean(axis=1)
    p = fill_nan(raw).astype(np.float64)
    sky, sig = _sky(p)
    z = (p - sky[:, None, None]) / sig[:, None, None]  # pixels in units of sky σ
    flat = z.reshape(n, -1)
    pos = np.clip(flat, 0, None)
    c = (s - 1) / 2.0
    yy, xx = np.mgrid[0:s, 0:s]
    r = np.hypot(xx - c, yy - c).ravel()

    def slog(v):
        return np.sign(v) * np.log1p(np.abs(v))

    peak = flat.max(axis=1)
    aperture = flat[:, r <= 3].sum(axis=1) / np.sqrt((r <= 3).sum())
    total = flat.sum(axis=1) / s
    pct = np.percentile(flat, [1, 5, 25, 75, 95, 99], axis=1).T
    skew = sps.skew(flat, axis=1)
    kurt = sps.kurtosis(flat, axis=1)
    area3 = (flat > 3).mean(axis=1)
    area10 = (flat > 10).mean(axis=1)

    # Gini of the positive flux.
    srt = np.sort(pos, axis=1)
    k = np.arange(1, srt.shape[1] + 1)
    tot = srt.sum(axis=1)
    safe = np.where(tot > 0, tot, 1)
    gini = np.where(tot > 0, ((2 * k - srt.shape[1] - 1) * srt).sum(axis=1)
                    / (safe * (srt.shape[1] - 1)), 0)

    # Second moments about the flux-weighted centroid.
    w = pos / safe[:, None]
    xf, yf = xx.ravel().astype(float), yy.ravel().astype(float)
    mx, my = w @ xf, w @ yf
    dx, dy = xf[None] - mx[:, None], yf[None] - my[:, None]
    mxx, myy, mxy = (w * dx * dx).sum(1), (w * dy * dy).sum(1), (w * dx * dy).sum(1)
    r2 = mxx + myy
    root = np.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1, lam2 = r2 / 2 + root, np.clip(r2 / 2 - root, 0, None)
    ellip = np.where(lam1 > 0, 1 - np.sqrt(lam2 / np.where(lam1 > 0, lam1, 1)), 0)
    theta = 0.5 * np.arctan2(2 * mxy, mxx - myy)
    offset = np.hypot(mx - c, my - c)

    # M20: moment of the brightest 20 % of the flux relative to the total moment.
    order = np.argsort(pos, axis=1)[:, ::-1]
    sorted_pos = np.take_along_axis(pos, order, axis=1)
    rr = (dx**2 + dy**2)
    sorted_rr = np.take_along_axis(rr, order, axis=1)
    cum = np.cumsum(sorted_pos, axis=1)
    bright = cum <= 0.2 * tot[:, None]
    mom_tot = (pos * rr).sum(1)
    mom20 = (sorted_pos * sorted_rr * bright).sum(1)
    m20 = np.log10(np.clip(mom20, 1e-12, None) / np.clip(mom_tot, 1e-12, None))

    # Concentration: radii (about the centre) holding 20 % and 80 % of the flux.
    rorder = np.argsort(r)
    rc = np.cumsum(pos[:, rorder], axis=1) / safe[:, None]
    r_sorted = r[rorder]
    r20 = r_sorted[np.clip((rc < 0.2).sum(1), 0, r.size - 1)]
    r80 = r_sorted[np.clip((rc < 0.8).sum(1), 0, r.size - 1)]
    conc = 5 * np.log10(np.clip(r80, 0.5, None) / np.clip(r20, 0.5, None))

    asym = np.abs(z - z[:, ::-1, ::-1]).reshape(n, -1).sum(1) / (
        np.abs(z).reshape(n, -1).sum(1) + 1e-9)

    rows = np.median(z, axis=2)  # (n, s): median along each row
    cols = np.median(z, axis=1)  # (n, s): median along each column
    top = flat.max(axis=1, keepdims=True)
    flat_top = ((flat >= top - 0.01 * np.abs(top)) & (top > 10)).sum(1) / s

    # Local maxima above 5σ: how many objects the patch holds.
    from scipy.ndimage import maximum_filter

    peaks = ((z == maximum_filter(z, size=(1, 3, 3))) & (z > 5)).reshape(n, -1).sum(1)

    feats = np.column_stack([
        slog(peak), slog(aperture), slog(total), *[slog(pct[:, i]) for i in range(6)],
        np.clip(skew, -50, 50), slog(kurt), area3, area10, gini, m20, conc, asym, ellip,
        np.cos(2 * theta), np.sin(2 * theta), slog(r2), offset,
        slog(rows.max(1)), slog(rows.min(1)), slog(cols.max(1)), slog(cols.min(1)),
        flat_top, nan_frac, slog(sky), slog(sig), np.log1p(peaks),
    ])
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


#: Stretches HOG can see the patch through, applied to pixels in units of the sky σ (z).
#: ``asinh`` (asinh(z / 3)) was chosen by ``benchmarks/quality.py --tune``.
HOG_STRETCHES = {
    "asinh": lambda z: np.arcsinh(z / 3),
    "linear": lambda z: z,
    "sqrt": lambda z: np.sign(z) * np.sqrt(np.abs(z)),
    "log": lambda z: np.sign(z) * np.log1p(np.abs(z)),
}


def hog_features(patches: np.ndarray, cell: int | None = None,
                 stretch: str = "asinh") -> np.ndarray:
    """Histogram of oriented gradients of each stretched patch (scikit-image).

    Parameters
    ----------
    patches : ndarray, shape (n, s, s)
    cell : int, optional
        HOG cell size in pixels; default ``s // 2`` (2 × 2 cells, one 2 × 2 block).
    stretch : str
        One of :data:`HOG_STRETCHES`, applied to the patch in sky-σ units.

    Returns
    -------
    ndarray, shape (n, 36), float32 for 2 × 2 cells (each normalised on its own),
    9 orientations (``hog_dim``).

    Coarse cells were chosen by ``benchmarks/quality.py``: with 4 × 4 cells (324 values) the
    shape features outnumber the 31 statistics ten to one and swamp the reconstruction error.
    """
    z = HOG_STRETCHES[stretch](sky_units(patches))
    s = z.shape[-1]
    cell = cell or max(s // 2, 4)
    # Coarse grids normalise each cell on its own, so a feature belongs to one quarter of the
    # patch (Feature.quadrant, see explain.error_by_quadrant); fine grids use 2 × 2 blocks.
    block = (1, 1) if s // cell == 2 else (2, 2)
    out = [hog(zi, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=block,
               block_norm="L2-Hys", feature_vector=True) for zi in z]
    if not out:
        return np.zeros((0, hog_dim(s, cell)), np.float32)
    return np.asarray(out, dtype=np.float32)


def hog_feature_list(size: int = 32, cell: int | None = None) -> list[Feature]:
    """What each value of :func:`hog_features` measures: for 2 × 2 cells, the patch quadrant
    (as displayed, origin lower) and gradient orientation, named e.g. ``hog upper-left 60°``;
    fine grids get cell indices and no quadrant."""
    cell = cell or max(size // 2, 4)
    if size // cell != 2:
        return [Feature(f"hog_{i}", "shape") for i in range(hog_dim(size, cell))]
    out = []
    for row in ("lower", "upper"):  # array row 0 is drawn at the bottom
        for col in ("left", "right"):
            out += [Feature(f"hog {row}-{col} {o * 20}°", "shape", f"{row}-{col}", o * 20.0,
                            high="sharp edges or lines in {where}",
                            low="smoother light than usual in {where}")
                    for o in range(9)]
    return out


def hog_dim(size: int, cell: int | None = None) -> int:
    """Length of :func:`hog_features` for ``size`` px patches."""
    cell = cell or max(size // 2, 4)
    nc = size // cell
    return 4 * 9 if nc == 2 else max(nc - 1, 0) ** 2 * 4 * 9


class StatsEmbedder(Embedder):
    """31 photometric and morphological statistics per patch."""

    name = "stats"

    @property
    def dim(self) -> int:
        return len(STATS_NAMES)

    @property
    def features(self) -> list[Feature]:
        return list(STATS_FEATURES)

    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None) -> np.ndarray:
        return _chunked(stats_features, patches, progress, self.dim)


class HOGEmbedder(Embedder):
    """Histogram of oriented gradients (shape only).

    ``cells`` per side: 2 (the default, 36 values at any patch size) or 4 (``hog-fine``,
    324 values, the conventional 8 px cells at 32 px).
    """

    name = "hog"

    def __init__(self, size: int = 32, cells: int = 2) -> None:
        self.size, self.cells = size, cells
        if cells != 2:
            self.name = "hog-fine"

    @property
    def dim(self) -> int:
        return hog_dim(self.size, self.size // self.cells)

    @property
    def features(self) -> list[Feature]:
        return hog_feature_list(self.size, self.size // self.cells)

    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None) -> np.ndarray:
        self.size = patches.shape[-1] if len(patches) else self.size
        cell = self.size // self.cells
        return _chunked(lambda p: hog_features(p, cell), patches, progress, self.dim)


class LocalEmbedder(Embedder):
    """The default embedder: statistics and moments (photometry) together with HOG (shape).

    Deterministic, offline and weight-free; about 1,000 patches/s on one core at 32 px.
    """

    name = "local"

    def __init__(self, size: int = 32, stretch: str = "asinh") -> None:
        if stretch not in HOG_STRETCHES:
            raise ValueError(
                f"unknown stretch {stretch!r}; choose one of {', '.join(HOG_STRETCHES)}")
        self.size, self.stretch = size, stretch
        if stretch != "asinh":  # other features, stored under another name
            self.name = f"local[{stretch}]"

    @property
    def dim(self) -> int:
        return len(STATS_NAMES) + hog_dim(self.size)

    @property
    def features(self) -> list[Feature]:
        return STATS_FEATURES + hog_feature_list(self.size)

    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None) -> np.ndarray:
        self.size = patches.shape[-1] if len(patches) else self.size

        def both(chunk: np.ndarray) -> np.ndarray:
            return np.hstack([stats_features(chunk), hog_features(chunk, stretch=self.stretch)])

        return _chunked(both, patches, progress, self.dim)


def _chunked(fn, patches: np.ndarray, progress: EmbedProgressFn | None, dim: int,
             chunk: int = 512) -> np.ndarray:
    n = len(patches)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    parts = []
    for start in range(0, n, chunk):
        parts.append(fn(patches[start:start + chunk]))
        if progress:
            progress(min(start + chunk, n), n)
    return np.vstack(parts).astype(np.float32)
