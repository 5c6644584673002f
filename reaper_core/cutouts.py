"""Cutouts: fixed-size patches around positions, and display stretches.

Patches are always ``size × size``; near the frame's edge (or the science region's edge) the
window is shifted inwards, so patches hold only real pixels. Stretches come from
:mod:`astropy.visualization`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

STRETCHES = ("asinh", "sqrt", "linear", "log", "zscale")


def region_bounds(shape: tuple[int, int],
                  region: tuple[slice, slice] | None = None) -> tuple[int, int, int, int]:
    """First and past-the-end row and column of ``region`` (the whole frame when None):
    ``(r0, r1, c0, c1)``, pixels."""
    ny, nx = shape
    if region is None:
        return 0, ny, 0, nx
    return (region[0].start or 0, region[0].stop or ny, region[1].start or 0,
            region[1].stop or nx)


def extract_cutouts(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, size: int = 32,
    region: tuple[slice, slice] | None = None, background: np.ndarray | None = None,
) -> np.ndarray:
    """Cut ``size × size`` patches around (x, y).

    Near an edge the window is shifted inwards so that it stays inside the frame (or the
    science ``region``): the object is then off-centre, but every pixel is real. Only a frame
    smaller than ``size`` leaves NaN padding.

    With ``background`` (the frame's smooth sky, :func:`~reaper_core.sources.science_sky`)
    each patch is levelled: the sky's variation across its window is taken out, its value at
    the centre kept. A patch then shows what lies on the sky, not the slope scattered light
    puts under it (a sky rising 10σ per 100 px spans 5σ across a 32 px window), and keeps its
    level in the image's units.

    Parameters
    ----------
    data : ndarray, shape (ny, nx)
        Image.
    x, y : ndarray, shape (n,)
        0-based centres (column, row), pixels; rounded to the nearest pixel.
    size : int
        Patch side, pixels.
    region : tuple of slice, optional
        Only pixels inside this region are used.
    background : ndarray, optional
        The region's smooth sky, shape of the region, image units.

    Returns
    -------
    ndarray, shape (n, size, size), float32
    """
    r0, r1, c0, c1 = region_bounds(data.shape, region)
    ix, iy = cutout_origins(x, y, size, data.shape, region)
    patches = _windows(data[r0:r1, c0:c1], size)[iy - r0, ix - c0]
    if background is not None and len(patches):
        sky = _windows(background, size)[iy - r0, ix - c0]
        cy = np.clip(np.round(np.asarray(y, float) - r0).astype(np.int64), 0, r1 - r0 - 1)
        cx = np.clip(np.round(np.asarray(x, float) - c0).astype(np.int64), 0, c1 - c0 - 1)
        sky -= np.asarray(background, np.float32)[cy, cx][:, None, None]
        patches -= sky
    return patches


def _windows(image: np.ndarray, size: int) -> np.ndarray:
    """Every ``size × size`` window of ``image`` (float32; NaN-padded to ``size`` when
    smaller), as a view: indexing it copies the windows asked for (4x faster than indexing
    with (n, size, size) arrays of pixel positions)."""
    sub = np.asarray(image, dtype=np.float32)
    h, w = sub.shape
    if h < size or w < size:
        padded = np.full((max(h, size), max(w, size)), np.nan, dtype=np.float32)
        padded[:h, :w] = sub
        sub = padded
    return np.lib.stride_tricks.sliding_window_view(sub, (size, size))


def cutout_origins(
    x: np.ndarray, y: np.ndarray, size: int, shape: tuple[int, int],
    region: tuple[slice, slice] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """First column and row of each cutout window, in frame pixels; shapes (n,), (n,) of int.

    The window of :func:`extract_cutouts` for a centre (x, y) covers columns
    ``ix .. ix + size - 1`` and rows ``iy .. iy + size - 1``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    r0, r1, c0, c1 = region_bounds(shape, region)
    half = size // 2
    iy = np.clip(np.round(y - r0).astype(np.int64) - half, 0, max(r1 - r0 - size, 0))
    ix = np.clip(np.round(x - c0).astype(np.int64) - half, 0, max(c1 - c0 - size, 0))
    return ix + c0, iy + r0


#: A cutout whose window holds more than this fraction of non-finite pixels is not cut.
MAX_NAN_FRACTION = 0.05


def usable_positions(data: np.ndarray, x: np.ndarray, y: np.ndarray, size: int,
                     region: tuple[slice, slice] | None = None) -> np.ndarray:
    """Which positions may be cut, shape (n,) of bool: the centre pixel is finite and the window
    (as :func:`extract_cutouts` places it) holds at most :data:`MAX_NAN_FRACTION` non-finite
    pixels. The stated rule for NaN regions: what is left out is counted, never scored."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        return np.zeros(0, bool)
    bad = ~np.isfinite(data)
    iy = np.clip(np.round(y).astype(np.int64), 0, data.shape[0] - 1)
    ix = np.clip(np.round(x).astype(np.int64), 0, data.shape[1] - 1)
    ok = ~bad[iy, ix]
    if bad.any():
        # Non-finite pixels in each window from a summed-area table.
        sat = np.pad(bad.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        wx, wy = cutout_origins(x, y, size, data.shape, region)
        x1, y1 = np.minimum(wx + size, data.shape[1]), np.minimum(wy + size, data.shape[0])
        n_bad = sat[y1, x1] - sat[wy, x1] - sat[y1, wx] + sat[wy, wx]
        ok &= n_bad <= MAX_NAN_FRACTION * size * size
    return ok


def median_along(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """``np.median`` along ``axis`` by sorting, which NumPy vectorises (several times faster
    than the partition ``np.median`` uses, on many short rows)."""
    return median_of_sorted(np.sort(a, axis=axis), axis)


def median_of_sorted(srt: np.ndarray, axis: int = -1) -> np.ndarray:
    """The median along ``axis`` of an array already sorted along it (the mean of the two
    middle values for an even length), in its precision."""
    m = srt.shape[axis]
    lo = np.take(srt, (m - 1) // 2, axis=axis)
    hi = np.take(srt, m // 2, axis=axis)
    return (lo + hi) / 2 if m % 2 == 0 else lo


def ring_sky(patches: np.ndarray, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust σ (1.4826 × MAD) of each patch's outer ring, ``width`` px wide; patches
    (n, s, s) without NaN; shapes (n,), (n,), the patches' units."""
    from .patch_kernels import median_deviation_of_sorted

    n, s, _ = patches.shape
    ring = np.ones((s, s), bool)
    ring[width:s - width, width:s - width] = False
    srt = np.sort(patches.reshape(n, -1).take(np.flatnonzero(ring), axis=1), axis=1)
    med = median_of_sorted(srt)
    mad = median_deviation_of_sorted(srt, med) * 1.4826
    # Fall back to the whole patch's spread where the ring is flat (e.g. 8-bit sky at 0).
    floor = np.maximum(1e-3 * np.abs(med), 1e-6)
    flat = ~(mad > floor)
    if flat.any():
        whole = np.std(patches[flat].reshape(int(flat.sum()), -1), axis=1)
        mad[flat] = np.maximum(whole * 0.1, floor[flat])
    return med, mad


def fill_nan(patches: np.ndarray) -> np.ndarray:
    """Replace NaN in each patch by that patch's median (0 if all NaN); shape kept."""
    patches = np.asarray(patches, dtype=np.float32)
    bad = ~np.isfinite(patches)
    if not bad.any():
        return patches
    # The median of the patches with a finite pixel (so no warning: this runs on the patch
    # threads, where a warnings filter is not thread-safe).
    flat = patches.reshape(len(patches), -1)
    some = np.isfinite(flat).any(axis=1)
    med = np.zeros(len(patches), np.float32)
    if some.any():
        med[some] = np.nanmedian(flat[some], axis=1)
    out = patches.copy()
    out[bad] = np.broadcast_to(med[:, None, None], patches.shape)[bad]
    return out


def normalize(patch: np.ndarray, stretch: str = "asinh") -> np.ndarray:
    """Scale a patch to [0, 1] for display with an astropy stretch.

    Parameters
    ----------
    patch : ndarray, shape (h, w)
    stretch : {"asinh", "sqrt", "linear", "log", "zscale"}
        ``zscale`` uses IRAF's zscale interval with a linear stretch; the others use the
        99.5 % percentile interval.

    Returns
    -------
    ndarray, shape (h, w), float32 in [0, 1]; NaN pixels become 0.
    """
    if stretch not in STRETCHES:
        raise ValueError(f"stretch must be one of {STRETCHES}, not {stretch!r}")
    p = np.asarray(patch, dtype=np.float32)
    finite = np.isfinite(p)
    limits = display_limits(p, stretch)
    if limits is None:
        return np.zeros(p.shape, np.float32)
    norm = _normalizer(limits, stretch)
    out = np.asarray(norm(np.where(finite, p, limits[0])), dtype=np.float32)
    return np.nan_to_num(out, nan=0.0)


def _normalizer(limits: tuple[float, float], stretch: str):
    from astropy.visualization import (
        AsinhStretch,
        ImageNormalize,
        LinearStretch,
        LogStretch,
        SqrtStretch,
    )

    s = {"asinh": AsinhStretch(0.1), "sqrt": SqrtStretch(), "linear": LinearStretch(),
         "log": LogStretch(), "zscale": LinearStretch()}[stretch]
    return ImageNormalize(vmin=limits[0], vmax=limits[1], stretch=s, clip=True)


def stretch_positions(values: np.ndarray, limits: tuple[float, float],
                      stretch: str) -> np.ndarray:
    """Where pixel ``values`` fall, in [0, 1], on the display of :func:`normalize` with these
    ``limits`` (from :func:`display_limits`): the ticks of a colour bar in pixel units."""
    return np.asarray(_normalizer(limits, stretch)(np.asarray(values, float)), dtype=float)


def display_limits(patch: np.ndarray, stretch: str = "zscale") -> tuple[float, float] | None:
    """The pixel values shown as black and white under ``stretch`` (same units as ``patch``):
    DS9's zscale for "zscale", the 99.5 % interval otherwise, the full range when those are
    flat; None for a patch without two different finite values."""
    from astropy.visualization import MinMaxInterval, PercentileInterval, ZScaleInterval

    p = np.asarray(patch, dtype=np.float32)
    finite = p[np.isfinite(p)]
    if finite.size == 0:
        return None
    interval = ZScaleInterval() if stretch == "zscale" else PercentileInterval(99.5)
    vmin, vmax = interval.get_limits(finite)
    if not vmax > vmin:
        vmin, vmax = MinMaxInterval().get_limits(finite)
    return (float(vmin), float(vmax)) if vmax > vmin else None


def to_uint8(patch: np.ndarray, stretch: str = "asinh") -> np.ndarray:
    """Stretched 8-bit version of a patch, shape (h, w), dtype uint8."""
    return (normalize(patch, stretch) * 255.0 + 0.5).astype(np.uint8)


def to_png(patch: np.ndarray, stretch: str = "asinh", upscale: int = 1,
           cmap: str | None = None, origin: str = "lower") -> bytes:
    """PNG bytes of a stretched patch, optionally enlarged ``upscale`` times (nearest).

    ``cmap`` names a matplotlib colour map; None gives grey levels. With ``origin="lower"``
    (the FITS convention) row 0 is drawn at the bottom.
    """
    img8 = to_uint8(patch, stretch)
    if origin == "lower":
        img8 = img8[::-1]
    if cmap and cmap != "gray":
        from matplotlib import colormaps

        rgb = (colormaps[cmap](img8 / 255.0)[..., :3] * 255).astype(np.uint8)
        pil = Image.fromarray(rgb, mode="RGB")
    else:
        pil = Image.fromarray(img8, mode="L")
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
