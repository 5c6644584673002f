"""Frame statistics: numbers that say how a sky looks, to compare simulated frames with real ones.

Peaks are local maxima of (image − median) / robust σ in 5 × 5 boxes; the PSF width comes from
the second moments of isolated, unsaturated bright stars.
"""

from __future__ import annotations

import numpy as np


def robust_sky(data: np.ndarray) -> tuple[float, float]:
    """Median and robust σ (1.4826 × MAD) of the finite pixels, image units."""
    v = data[np.isfinite(data)]
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


def frame_statistics(data: np.ndarray, saturation: float | None = None) -> dict[str, float]:
    """Statistics of a science region (no collateral pixels), shape (ny, nx).

    Returns
    -------
    dict with ``peaks_5`` / ``peaks_10`` / ``peaks_50`` (peaks above 5, 10, 50 σ per 10⁴ px),
    ``sky_median`` and ``sky_sigma`` (image units), ``psf_fwhm`` (pixels, median over bright
    isolated stars), ``brightest`` (the highest pixel, image units) and ``saturated_fraction``
    (pixels at or above ``saturation``, 0 when it is None).
    """
    from scipy import ndimage

    d = np.where(np.isfinite(data), data, np.nan).astype(np.float64)
    med, sig = robust_sky(d)
    z = np.nan_to_num((d - med) / (sig or 1.0), nan=0.0)
    peak = (z == ndimage.maximum_filter(z, size=5)) & (z > 0)
    area = np.isfinite(d).sum() / 1e4
    out = {f"peaks_{k}": float((peak & (z > k)).sum() / area) for k in (5, 10, 50)}
    out.update(sky_median=med, sky_sigma=sig, brightest=float(np.nanmax(d)),
               saturated_fraction=float((d >= saturation).mean()) if saturation else 0.0,
               psf_fwhm=_psf_fwhm(d - med, z, peak))
    return out


def _psf_fwhm(sub: np.ndarray, z: np.ndarray, peak: np.ndarray, half: int = 3) -> float:
    """Median FWHM (px) from second moments of stars 30–1000 σ with no other peak > 5 σ within
    6 px; NaN when there are none."""
    ys, xs = np.nonzero(peak & (z > 30) & (z < 1000))
    others_y, others_x = np.nonzero(peak & (z > 5))
    fwhm = []
    for y, x in zip(ys, xs, strict=True):
        if not (half <= y < sub.shape[0] - half and half <= x < sub.shape[1] - half):
            continue
        near = (np.abs(others_y - y) <= 6) & (np.abs(others_x - x) <= 6)
        if near.sum() > 1:
            continue
        stamp = np.clip(sub[y - half:y + half + 1, x - half:x + half + 1], 0, None)
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
        w = stamp.sum()
        cy, cx = (stamp * yy).sum() / w, (stamp * xx).sum() / w
        var = (stamp * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / w / 2
        fwhm.append(2.3548 * np.sqrt(var))
    return float(np.median(fwhm)) if fwhm else float("nan")
