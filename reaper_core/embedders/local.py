"""Offline, weight-free embedders: photometric statistics and morphology, HOG, or both.

Each patch is measured against its own sky: the median and robust noise σ of the patch's outer
ring (3 px wide), so the same features work for TESS frames in e-/s and 8-bit images, and a
frame's features do not change with its units, its exposure or its sky level (the same frame in
ADU, in e⁻/s or with its sky subtracted is embedded alike, to float32 rounding).
"""

from __future__ import annotations

import numpy as np

from ..cutouts import fill_nan, median_along, ring_sky
from ..parallel import map_chunks
from .base import Embedder, EmbedProgressFn, Feature

STATS_NAMES = [
    "peak_snr", "aperture_snr", "total_snr", "p01", "p05", "p25", "p75", "p95", "p99",
    "skew", "kurtosis", "area_3sigma", "area_10sigma", "gini", "m20", "concentration",
    "asymmetry", "ellipticity", "orientation_cos", "orientation_sin", "size_r2",
    "centroid_offset", "row_max", "row_min", "col_max", "col_min", "flat_top", "nan_fraction",
    "n_peaks",
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
    "nan_fraction": ("missing (NaN) pixels near the centre", "fewer missing pixels than usual"),
    "n_peaks": ("more objects in the patch than usual", "fewer objects in the patch than usual"),
}
STATS_FEATURES = [Feature(n, "morphology" if n in _MORPHOLOGY else "photometry",
                          high=_MEANINGS[n][0], low=_MEANINGS[n][1]) for n in STATS_NAMES]

#: The statistics measured again on the core: all but the brightness ones, which the whole
#: patch already measures (said twice, brightness would dominate the model's main axes, and a
#: star made brighter is then reconstructed better).
CORE_STATS = [n for n in STATS_NAMES if n not in ("peak_snr", "aperture_snr", "total_snr")]
_CORE_INDEX = np.array([STATS_NAMES.index(n) for n in CORE_STATS])


def core_side(size: int) -> int:
    """Side (pixels) of a ``size`` px patch's *core*, the central square whose statistics the
    default embedder adds to the whole patch's (``local+core``): half the patch (16 px of 32;
    8 px at least, the whole of a smaller patch). A 32 px patch of a crowded frame holds
    several objects, its core mostly the one it is centred on. Chosen by measurement (README,
    stop 45) against 12 and 20 px of 32."""
    return max(size // 2, min(size, 8))


#: How much each core statistic counts (:attr:`Feature.weight`): fully (0.5 and 0.7 were
#: measured, README stop 45).
CORE_WEIGHT = 1.0


def core_feature_list() -> list[Feature]:
    """What each value of :func:`core_stats_features` measures: a statistic of
    :data:`CORE_STATS`, named ``core <name>``, of the patch's central half."""
    def there(text: str) -> str:  # "a bright row across the patch's central half"
        core = "the patch's central half"
        return text.replace("the patch", core) if "the patch" in text else f"{text} in {core}"

    return [Feature(f"core {f.name}", f.kind, high=there(f.high), low=there(f.low),
                    weight=CORE_WEIGHT)
            for f in STATS_FEATURES if f.name in CORE_STATS]


def core_stats_features(patches: np.ndarray) -> np.ndarray:
    """:func:`stats_features` of each patch's core (its central :func:`core_side` pixels,
    measured against the core's own outer ring), :data:`CORE_STATS` only.

    Parameters
    ----------
    patches : ndarray, shape (n, s, s)

    Returns
    -------
    ndarray, shape (n, len(CORE_STATS)), float32.
    """
    s = patches.shape[-1]
    core = core_side(s)
    lo = (s - core) // 2
    centre = np.ascontiguousarray(patches[:, lo:lo + core, lo:lo + core])
    return stats_features(centre)[:, _CORE_INDEX]


def sky_units(patches: np.ndarray) -> np.ndarray:
    """Each patch minus its sky, in units of the sky's robust σ (see the module docstring).

    Parameters
    ----------
    patches : ndarray, shape (n, s, s); NaN pixels take the patch's median.

    Returns
    -------
    ndarray, shape (n, s, s), float32, dimensionless.
    """
    p = fill_nan(np.asarray(patches, dtype=np.float32))
    sky, sig = ring_sky(p)
    return (p - sky[:, None, None].astype(np.float32)) / sig[:, None, None].astype(np.float32)


def stats_features(patches: np.ndarray) -> np.ndarray:
    """Photometric statistics and morphology of each patch, vectorised.

    Parameters
    ----------
    patches : ndarray, shape (n, s, s)

    Returns
    -------
    ndarray, shape (n, 29), float32; names in :data:`STATS_NAMES`.
    """
    raw = np.asarray(patches, dtype=np.float32)
    return _stats_from_sky_units(sky_units(raw), missing_fraction(raw))


def missing_fraction(patches: np.ndarray) -> np.ndarray:
    """Share of missing (non-finite) pixels in the central half (s/2 × s/2) of each patch,
    shape (n,), for patches of shape (n, s, s): a hole beside the centre counts, one at the
    window's edge — shared by every window within half a patch of it — does not."""
    s = patches.shape[-1]
    a, b = s // 4, s - s // 4
    return (~np.isfinite(patches[:, a:b, a:b])).reshape(len(patches), -1).mean(axis=1)


def _stats_from_sky_units(z: np.ndarray, nan_frac: np.ndarray) -> np.ndarray:
    """:func:`stats_features` of patches already in sky units (:func:`sky_units`)."""
    from ..patch_kernels import SUMS, patch_sums

    n, s, _ = z.shape
    npx = s * s
    flat = z.reshape(n, -1)
    c = (s - 1) / 2.0
    radii, radius_index, aperture = _PATCH_GEOMETRY.get(s) or _PATCH_GEOMETRY.setdefault(
        s, _patch_geometry(s))

    def slog(v):
        return np.sign(v) * np.log1p(np.abs(v))

    srt = np.sort(flat, axis=1)  # one sort serves the percentiles, the Gini and M20
    sums = patch_sums(z, srt, radius_index, radii.size, aperture)
    S = dict(zip(SUMS, sums.T, strict=True))
    peak = srt[:, -1].astype(np.float64)
    pct = _percentiles_of_sorted(srt, (1, 5, 25, 75, 95, 99))
    # Skewness and excess kurtosis of the pixel values, as scipy.stats.
    m2, m3, m4 = S["m2"], S["m3"], S["m4"]
    with np.errstate(all="ignore"):
        skew = np.where(m2 > 0, m3 / m2**1.5, 0.0)
        kurt = np.where(m2 > 0, m4 / m2**2 - 3.0, 0.0)  # 0 for a flat patch

    # Gini of the positive flux.
    tot = S["w"]
    safe = np.where(tot > 0, tot, 1)
    gini = np.where(tot > 0, S["gini"] / (safe * (npx - 1)), 0)

    # Second moments about the flux-weighted centroid, from the raw moments.
    mx, my = S["wx"] / safe, S["wy"] / safe
    mxx = np.clip(S["wxx"] / safe - mx * mx, 0, None)
    myy = np.clip(S["wyy"] / safe - my * my, 0, None)
    mxy = S["wxy"] / safe - mx * my
    empty = tot <= 0
    mxx[empty] = myy[empty] = mxy[empty] = 0.0
    r2 = mxx + myy
    root = np.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1, lam2 = r2 / 2 + root, np.clip(r2 / 2 - root, 0, None)
    ellip = np.where(lam1 > 0, 1 - np.sqrt(lam2 / np.where(lam1 > 0, lam1, 1)), 0)
    theta = 0.5 * np.arctan2(2 * mxy, mxx - myy)
    offset = np.hypot(mx - c, my - c)

    # M20: second moment (about the centroid) of the brightest pixels holding 20 % of the
    # flux, relative to that of all the flux.
    def moment(w, wx, wy, wrr):  # Σw((x − mx)² + (y − my)²) from the raw sums
        return wrr - 2 * (mx * wx + my * wy) + (mx * mx + my * my) * w

    m20 = np.log10(
        np.clip(moment(S["bright_w"], S["bright_wx"], S["bright_wy"], S["bright_wrr"]),
                1e-12, None)
        / np.clip(moment(tot, S["wx"], S["wy"], S["wxx"] + S["wyy"]), 1e-12, None))

    # Concentration: radii (about the centre) holding 20 % and 80 % of the flux.
    r20 = radii[np.clip(S["n_r20"].astype(int), 0, radii.size - 1)]
    r80 = radii[np.clip(S["n_r80"].astype(int), 0, radii.size - 1)]
    conc = 5 * np.log10(np.clip(r80, 0.5, None) / np.clip(r20, 0.5, None))
    asym = S["asymmetry"] / (S["abs_total"] + 1e-9)

    rows = median_along(z, axis=2)  # (n, s): median along each row
    cols = median_along(z, axis=1)  # (n, s): median along each column

    feats = np.column_stack([
        slog(peak), slog(S["aperture"] / np.sqrt(aperture.sum())), slog(S["total"] / s),
        *[slog(pct[:, i]) for i in range(6)],
        np.clip(skew, -50, 50), slog(kurt), S["area3"] / npx, S["area10"] / npx, gini, m20,
        conc, asym, ellip, np.cos(2 * theta), np.sin(2 * theta), slog(r2), offset,
        slog(rows.max(1)), slog(rows.min(1)), slog(cols.max(1)), slog(cols.min(1)),
        S["flat_top"] / s, nan_frac, np.log1p(S["n_peaks"]),
    ])
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _patch_geometry(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each distinct distance from the centre of an ``s`` px patch (ascending), each pixel's
    index into them, shape (s, s), and the central aperture (within 3 px), shape (s, s)."""
    c = (s - 1) / 2.0
    yy, xx = np.mgrid[0:s, 0:s]
    r = np.hypot(xx - c, yy - c)
    radii, inverse = np.unique(np.round(r, 9).ravel(), return_inverse=True)
    return radii, inverse.reshape(s, s), r <= 3


_PATCH_GEOMETRY: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _percentiles_of_sorted(srt: np.ndarray, q) -> np.ndarray:
    """``np.percentile(..., axis=1)`` (linear interpolation) of rows already sorted; (n, len(q))."""
    m = srt.shape[1]
    pos = np.asarray(q, float) / 100 * (m - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, m - 1)
    frac = pos - lo
    a, b = srt[:, lo].astype(np.float64), srt[:, hi].astype(np.float64)
    return a + (b - a) * frac


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
    """Histogram of oriented gradients of each stretched patch.

    scikit-image's ``hog`` (9 orientations, L2-Hys), computed for all the patches at once
    in float32 (it agrees with ``skimage.feature.hog`` to float32 rounding; a test checks).

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
    shape features outnumber the statistics ten to one and swamp the reconstruction error.
    """
    return _hog_of(HOG_STRETCHES[stretch](sky_units(patches)), cell)


def _hog_of(z: np.ndarray, cell: int | None = None, orientations: int = 9) -> np.ndarray:
    """:func:`hog_features` of stretched patches ``z`` (n, s, s)."""
    from ..patch_kernels import orientation_histograms

    n, s = len(z), z.shape[-1]
    cell = cell or max(s // 2, 4)
    nc = s // cell
    if n == 0 or nc == 0:
        return np.zeros((n, hog_dim(s, cell)), np.float32)
    z = np.asarray(z, np.float32)[:, :nc * cell, :nc * cell]
    # Central differences, zero on the border rows/columns (skimage's _hog_channel_gradient).
    g_row = np.zeros_like(z)
    g_col = np.zeros_like(z)
    np.subtract(z[:, 2:, :], z[:, :-2, :], out=g_row[:, 1:-1, :])
    np.subtract(z[:, :, 2:], z[:, :, :-2], out=g_col[:, :, 1:-1])
    magnitude = np.sqrt(g_row * g_row + g_col * g_col)
    angle = np.arctan2(g_row, g_col)  # (-π, π]; orientation is angle mod π
    hist = orientation_histograms(angle, magnitude, cell, orientations) / (cell * cell)
    # Blocks: each cell alone for 2 × 2 cells, else 2 × 2 cells sliding by one (skimage order).
    b = 1 if nc == 2 else 2
    blocks = np.stack([hist[:, r:r + b, c:c + b, :]
                       for r in range(nc - b + 1) for c in range(nc - b + 1)], axis=1)
    eps = 1e-5  # L2-Hys: normalise, clip at 0.2, normalise again
    out = blocks / np.sqrt((blocks**2).sum(axis=(2, 3, 4), keepdims=True) + eps**2)
    out = np.minimum(out, 0.2)
    out /= np.sqrt((out**2).sum(axis=(2, 3, 4), keepdims=True) + eps**2)
    return out.reshape(n, -1).astype(np.float32)


#: How much each HOG value counts (:attr:`Feature.weight`), in the detector's error and where
#: neighbours are found: beside the 29 statistics, HOG's 36 correlated values (4 cells × 9
#: orientations) would otherwise outweigh them. Chosen by measurement (README, stop 38): in the
#: detector, ``benchmarks/quality.py`` (the tuned kinds unchanged on the real TESS frame, the
#: held-out kinds better on every seed; 0.3 alike); among neighbours, ``benchmarks/discovery.py``
#: (the loop's best of 0.3, 0.5, 0.7 and 1 with the detector weighing fully, seeds 1–7).
HOG_WEIGHT = 0.5


def hog_feature_list(size: int = 32, cell: int | None = None) -> list[Feature]:
    """What each value of :func:`hog_features` measures: for 2 × 2 cells, the patch quadrant
    (as displayed, origin lower) and gradient orientation, named e.g. ``hog upper-left 60°``;
    fine grids get cell indices and no quadrant."""
    cell = cell or max(size // 2, 4)
    if size // cell != 2:
        return [Feature(f"hog_{i}", "shape", weight=HOG_WEIGHT)
                for i in range(hog_dim(size, cell))]
    out = []
    for row in ("lower", "upper"):  # array row 0 is drawn at the bottom
        for col in ("left", "right"):
            out += [Feature(f"hog {row}-{col} {o * 20}°", "shape", f"{row}-{col}", o * 20.0,
                            high="sharp edges or lines in {where}",
                            low="smoother light than usual in {where}",
                            weight=HOG_WEIGHT)
                    for o in range(9)]
    return out


def hog_dim(size: int, cell: int | None = None) -> int:
    """Length of :func:`hog_features` for ``size`` px patches."""
    cell = cell or max(size // 2, 4)
    nc = size // cell
    return 4 * 9 if nc == 2 else max(nc - 1, 0) ** 2 * 4 * 9


class StatsEmbedder(Embedder):
    """29 photometric and morphological statistics per patch."""

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
    """Statistics and moments (photometry) together with HOG (shape); with ``core``, the
    statistics of the patch's central half as well (:func:`core_stats_features`; the default
    embedder, ``local+core``).

    Deterministic, offline and weight-free; about 60,000 patches/s on 2 cores at 32 px
    (`benchmarks/ingest.py`).
    """

    name = "local"

    def __init__(self, size: int = 32, stretch: str = "asinh", core: bool = False) -> None:
        if stretch not in HOG_STRETCHES:
            raise ValueError(
                f"unknown stretch {stretch!r}; choose one of {', '.join(HOG_STRETCHES)}")
        self.size, self.stretch, self.core = size, stretch, bool(core)
        if stretch != "asinh":  # other features, stored under another name
            self.name = f"local[{stretch}]"
        if self.core:
            self.name += "+core"

    @property
    def dim(self) -> int:
        return len(STATS_NAMES) + hog_dim(self.size) + (len(CORE_STATS) if self.core else 0)

    @property
    def features(self) -> list[Feature]:
        core = core_feature_list() if self.core else []
        return STATS_FEATURES + hog_feature_list(self.size) + core

    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None) -> np.ndarray:
        self.size = patches.shape[-1] if len(patches) else self.size

        stretch = HOG_STRETCHES[self.stretch]

        def both(chunk: np.ndarray) -> np.ndarray:
            raw = np.asarray(chunk, dtype=np.float32)
            z = sky_units(raw)
            parts = [_stats_from_sky_units(z, missing_fraction(raw)),
                     _hog_of(stretch(z))]
            if self.core:
                parts.append(core_stats_features(raw))
            return np.hstack(parts)

        return _chunked(both, patches, progress, self.dim)


def _chunked(fn, patches: np.ndarray, progress: EmbedProgressFn | None, dim: int,
             chunk: int = 512) -> np.ndarray:
    """``fn`` over chunks of ``patches`` on every core (:func:`~reaper_core.parallel.map_chunks`);
    shape (n, dim), float32."""
    if len(patches) == 0:
        return np.zeros((0, dim), np.float32)
    return np.vstack(map_chunks(fn, patches, chunk, progress)).astype(np.float32)
