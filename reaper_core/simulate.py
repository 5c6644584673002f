"""TESS-like simulated full-frame images and injected anomalies.

The simulator gives tests, the demo and the benchmarks TESS-specific pixels without a download,
calibrated on a real SPOC FFI (sector 1, camera 1, CCD 4; ``benchmarks/realism.py`` prints real
and simulated statistics side by side): 21 arcsec pixels with a TAN WCS; stars from Tmag 6 to 19,
N(<T) ∝ 10^(0.26 T), 83 per 10⁴ px brighter than Tmag 13.4 at ``density`` 1 (×4 or more near
the Galactic plane), so that a 32-pixel patch holds several; an undersampled PSF whose width and
elongation change across the field (FWHM 2.0 px near the boresight corner, 2.6 px and elongated
far from it), integrated over each pixel as a detector does; zodiacal sky of ~150 e⁻/s with
a weak scattered-light gradient; a 30-minute FFI's shot and read noise; saturated stars whose
charge bleeds up and down their column; the SPOC layout's collateral pixels and keywords and
SPOC- or TICA-style headers and file names.

:func:`inject_anomalies` adds eight kinds of anomaly at random positions and returns where each
one is, so detection quality can be measured (``benchmarks/quality.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from .cutouts import region_bounds

#: Kinds of anomaly :func:`inject_anomalies` can add.
ANOMALY_KINDS = (
    "streak", "cosmic_ray", "bleed_column", "diffuse_blob", "ring_ghost",
    "bad_column", "flare", "close_blend",
)
PIXEL_SCALE_ARCSEC = 21.0
#: Effective exposure of a 30-minute FFI (sectors 1–26: 900 2-s frames, 0.8 duty cycle), s.
EXPOSURE_S = 1425.6
#: Read noise of one co-added FFI, electrons (≈ 10 e⁻ per 2-s frame × √900).
READ_NOISE_E = 300.0
#: Flux of a Tmag = 10 star, electrons per second (TESS instrument handbook, rounded).
ZERO_POINT_E_PER_S = 15_000.0
#: A pixel saturates at this mean rate in a co-added FFI, e⁻/s.
SATURATION_E_PER_S = 1.3e5
#: Stars brighter than Tmag 13.4 per pixel at density 1, and the slope of log N(<Tmag).
STAR_DENSITY = 0.0083
STAR_SLOPE = 0.26
#: PSF FWHM near the boresight and far from it, pixels.
PSF_FWHM = (2.0, 2.6)
SCIENCE = 2048
COLLATERAL = (30, 44, 44)  # smear rows on top, virtual columns left and right


@dataclass
class Anomaly:
    """One injected anomaly: its kind, centre (0-based x, y) and bounding box (x0, y0, x1, y1)."""

    kind: str
    x: float
    y: float
    box: tuple[float, float, float, float]


@dataclass
class SimulatedFFI:
    """A simulated frame: ``image`` (e-/s, float32, full array) and what is in it."""

    image: np.ndarray
    wcs: WCS
    stars: Table
    sector: int
    camera: int
    ccd: int
    tstart: float
    science: tuple[slice, slice]
    anomalies: list[Anomaly] = field(default_factory=list)
    #: Artefacts the simulator makes by itself (saturated stars and their bleed columns).
    artefacts: list[Anomaly] = field(default_factory=list)


def _psf_stamps(x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: float, half: int):
    """Pixel indices and values of Gaussian PSF stamps, (n, k, k) each."""
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    off = np.arange(-half, half + 1)
    gx = ix[:, None, None] + off[None, None, :]
    gy = iy[:, None, None] + off[None, :, None]
    dx = gx - x[:, None, None]
    dy = gy - y[:, None, None]
    psf = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    gy, gx = np.broadcast_arrays(gy, gx)
    return gy, gx, psf * flux[:, None, None]


def add_sources(img: np.ndarray, x, y, flux, sigma: float = 1.0, half: int = 6,
                psf: np.ndarray | None = None) -> None:
    """Add point sources (``flux`` in image units, summed over the PSF) in place: Gaussians of
    ``sigma`` px, or drawn with ``psf`` (an empirical PSF, :func:`~.starfit.frame_psf`)."""
    x, y, flux = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, flux))
    if psf is not None:
        from .starfit import render_psf

        img += render_psf(img.shape, x, y, flux, psf).astype(img.dtype)
        return
    gy, gx, val = _psf_stamps(x, y, flux, sigma, half)
    ok = (gy >= 0) & (gy < img.shape[0]) & (gx >= 0) & (gx < img.shape[1])
    np.add.at(img, (gy[ok], gx[ok]), val[ok])


def stars_per_pixel(density: float, faintest: float) -> float:
    """Stars brighter than Tmag ``faintest`` per pixel, at ``density`` × the sector-1 field."""
    return STAR_DENSITY * density * 10 ** (STAR_SLOPE * (faintest - 13.4))


def draw_tmag(rng: np.random.Generator, n: int, brightest: float, faintest: float
              ) -> np.ndarray:
    """``n`` TESS magnitudes with N(<T) ∝ 10^(STAR_SLOPE T) between the two, shape (n,)."""
    a, b = 10 ** (STAR_SLOPE * brightest), 10 ** (STAR_SLOPE * faintest)
    return np.log10(a + rng.random(n) * (b - a)) / STAR_SLOPE


def tmag_flux(tmag: np.ndarray) -> np.ndarray:
    """Flux of stars of TESS magnitude ``tmag``, e⁻/s."""
    return ZERO_POINT_E_PER_S * 10 ** (-0.4 * (tmag - 10))


def _tan_wcs(ra: float, dec: float, ny: int, nx: int, rotation_deg: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    scale = PIXEL_SCALE_ARCSEC / 3600.0
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    w.wcs.cd = scale * np.array([[-c, s], [s, c]])
    return w


def _render_stars(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                  fwhm: tuple[float, float], far: np.ndarray) -> np.ndarray:
    """Stars (``flux`` in e⁻/s at 0-based positions ``x``, ``y``) as the detector samples them:
    a PSF that widens and elongates with ``far`` (0 at the boresight, 1 at the far corner of
    the CCD; shape ``shape``, read at each star) — a core Gaussian of FWHM ``fwhm[0]`` and a
    wider one, ``fwhm[1]`` along the columns and 0.85 of it along the rows, weighted 1 − far
    and far — integrated over each pixel; an image of shape ``shape``.

    Integrated, not sampled: an undersampled star's pixels then change with its sub-pixel
    position as a real one's do. (Split over its four nearest pixels and blurred, as until
    stop 42, a star's shape changed with its phase as no detector's does, and a frame shifted
    by a cubic spline missed the star at its new phase by 2.5 % of its peak for a 0.05 px
    shift, against 0.3 % integrated: ten times the residual an integrated star leaves.)
    """
    from .patch_kernels import add_integrated_gaussians

    ny, nx = shape
    s_in, s_out = fwhm[0] / 2.3548, fwhm[1] / 2.3548
    order = np.argsort(np.asarray(y), kind="stable")  # row by row: the image stays in cache
    x, y, flux = (np.asarray(a, float)[order] for a in (x, y, flux))
    f = far[np.clip(np.round(y).astype(np.int64), 0, ny - 1),
            np.clip(np.round(x).astype(np.int64), 0, nx - 1)].astype(float)
    weights = np.column_stack([(1 - f) * flux, f * flux])
    sigmas = np.array([[s_in, s_in], [0.85 * s_out, s_out]])
    return add_integrated_gaussians(shape, x, y, weights, sigmas, int(np.ceil(4 * s_out)))


def _from_corner(xx: np.ndarray, yy: np.ndarray, corner: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (0–1 across the CCD) measured from one of its four corners."""
    return (xx, 1 - xx)[corner % 2], (yy, 1 - yy)[corner // 2]


def simulate_ffi(
    size: int = SCIENCE,
    n_stars: int | None = None,
    *,
    seed: int = 0,
    collateral: bool | None = None,
    n_saturated: int = 3,
    sector: int = 42,
    camera: int = 1,
    ccd: int = 1,
    background: float = 136.0,
    density: float = 1.0,
    faintest: float = 19.0,
) -> SimulatedFFI:
    """Simulate one TESS FFI (see the module docstring for what is calibrated on real frames).

    Parameters
    ----------
    size : int
        Side of the square science region, pixels (2048 for a real FFI).
    n_stars : int, optional
        Number of stars; default from :data:`STAR_DENSITY` × ``density`` and the area.
    seed : int
        Random seed; the same seed gives the same image.
    collateral : bool, optional
        Add SPOC collateral (virtual columns and smear rows) around the science region;
        by default only for full-size frames.
    n_saturated : int
        Number of stars bright enough to saturate and bleed along their column.
    background : float
        Zodiacal sky, e⁻/s per pixel (unresolved faint stars add ~7); a scattered-light glow
        of up to 30 % of it comes from one corner.
    density : float
        Star density relative to the real sector-1 frame (4: a crowded field near the
        Galactic plane).
    faintest : float
        Faintest star simulated, Tmag.

    Returns
    -------
    SimulatedFFI
        ``image`` in e⁻/s, float32, shape (size + 30, size + 88) with collateral.
    """
    rng = np.random.default_rng(seed)
    collateral = size == SCIENCE if collateral is None else collateral
    brightest = 6.0
    if n_stars is None:
        n_stars = int(rng.poisson(stars_per_pixel(density, faintest) * size * size))
    top, left, right = COLLATERAL if collateral else (0, 0, 0)
    ny, nx = size + top, size + left + right
    sci = (slice(0, size), slice(left, left + size))

    # Where the frame lies on a 2048² CCD (a smaller frame at a random place): the distance
    # from the boresight corner sets the PSF, another corner sends scattered light.
    off_y, off_x = rng.integers(0, SCIENCE - size + 1, 2) if size < SCIENCE else (0, 0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = (yy + off_y) / SCIENCE, (xx + off_x) / SCIENCE
    boresight, glow = rng.choice(4, 2, replace=False)
    far = np.clip(np.hypot(*_from_corner(xx, yy, boresight)) / np.sqrt(2), 0, 1)
    gx, gy = _from_corner(xx, yy, glow)
    sky = background * (1.0 + 0.3 * np.exp(-3.0 * (gx**2 + gy**2)))

    # Stars: N(<T) ∝ 10^(STAR_SLOPE T) between Tmag 6 and ``faintest``.
    tmag = draw_tmag(rng, n_stars, brightest, faintest)
    tmag[:n_saturated] = rng.uniform(2.5, 4.0, min(n_saturated, n_stars))
    flux = tmag_flux(tmag)
    sx = rng.uniform(3, size - 3, n_stars)
    sy = rng.uniform(3, size - 3, n_stars)
    rate = _render_stars((size, size), sx, sy, flux, PSF_FWHM, far) + sky
    halves = _bleed(rate, sx[:n_saturated], sy[:n_saturated], flux[:n_saturated])
    electrons = rng.poisson(np.clip(rate * EXPOSURE_S, 0, None)).astype(np.float64)
    electrons += rng.normal(0, READ_NOISE_E, electrons.shape)

    image = np.zeros((ny, nx), np.float32)
    image[sci] = (electrons / EXPOSURE_S).astype(np.float32)
    if collateral:
        image[:, :left] = rng.normal(0.0, 0.7, (ny, left))
        image[:, left + size:] = rng.normal(0.0, 0.7, (ny, right))
        image[size:, left:left + size] = rng.normal(0.0, 0.7, (top, size))

    wcs = _tan_wcs(rng.uniform(0, 360), rng.uniform(-80, 80), size, size, rng.uniform(0, 360))
    # WCS of the full array: shift the reference pixel by the left collateral columns.
    wcs.wcs.crpix = [wcs.wcs.crpix[0] + left, wcs.wcs.crpix[1]]
    stars = Table(
        {"x": sx + left, "y": sy, "tmag": tmag, "flux": flux},
    )
    artefacts = [Anomaly("saturated_star", float(x + left), float(y),
                         (float(x + left - 6), float(y - h - 2), float(x + left + 6),
                          float(y + h + 2)))
                 for x, y, h in zip(sx[:n_saturated], sy[:n_saturated], halves, strict=True)]
    return SimulatedFFI(
        image=image, wcs=wcs, stars=stars, sector=sector, camera=camera, ccd=ccd,
        tstart=2400.0 + 27.4 * (sector - 42), science=sci, artefacts=artefacts,
    )


def _bleed(rate: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> list[int]:
    """Saturate stars and spread their excess charge up and down their columns, in place
    (``rate`` in e⁻/s; the star's own core stays, clipped at saturation).

    Returns the half-length of each bleed trail, pixels.
    """
    halves = []
    for xi, yi, f in zip(np.round(x).astype(int), np.round(y).astype(int), flux, strict=True):
        half = int(min(rate.shape[0] // 4, np.ceil(0.5 * f / SATURATION_E_PER_S)))
        col = slice(max(xi - 1, 0), min(xi + 2, rate.shape[1]))
        rows = slice(max(yi - half, 0), min(yi + half + 1, rate.shape[0]))
        rate[rows, xi] = np.maximum(rate[rows, xi], SATURATION_E_PER_S)
        rate[rows, col] = np.maximum(rate[rows, col], 0.3 * SATURATION_E_PER_S)
        halves.append(half)
    np.minimum(rate, SATURATION_E_PER_S, out=rate)
    return halves


def inject_anomalies(
    sim: SimulatedFFI,
    n_per_kind: int = 4,
    *,
    kinds: tuple[str, ...] = ANOMALY_KINDS,
    seed: int = 1,
    noise: float | None = None,
) -> list[Anomaly]:
    """Add anomalies of each kind at random positions in the science region, in place.

    Parameters
    ----------
    sim : SimulatedFFI
        Frame to modify; ``sim.anomalies`` is extended.
    n_per_kind : int
        How many of each kind.
    seed : int
        Random seed for positions and shapes.
    noise : float, optional
        Sky noise of the frame (image units); estimated robustly when not given.

    Returns
    -------
    list of Anomaly
        What was injected, in 0-based pixel coordinates of ``sim.image``.
    """
    added = inject_into_image(sim.image, sim.science, n_per_kind, kinds=kinds, seed=seed,
                              noise=noise, stars=sim.stars)
    sim.anomalies.extend(added)
    return added


def _robust_noise(img: np.ndarray) -> float:
    vals = img[np.isfinite(img)]
    med = np.median(vals)
    return float(1.4826 * np.median(np.abs(vals - med))) or 1.0


def inject_into_image(
    img: np.ndarray,
    region: tuple[slice, slice] | None = None,
    n_per_kind: int = 4,
    *,
    kinds: tuple[str, ...] = ANOMALY_KINDS,
    seed: int = 1,
    noise: float | None = None,
    stars: Table | None = None,
    margin: int = 24,
    psf: np.ndarray | str | None = "frame",
) -> list[Anomaly]:
    """Inject anomalies into any 2-D image in place (real pixels too); see :func:`inject_anomalies`.

    Amplitudes scale with the image's robust noise σ, so the same call works on a TESS frame in
    e-/s and on the Hubble Deep Field in 8-bit counts. ``flare`` brightens a known star from
    ``stars`` (columns x, y, flux) when given, otherwise a random place. Point-like light (a
    flare, a blend, a streak's trail) is drawn with ``psf``: ``"frame"`` (default) the image's
    own PSF (:func:`~.starfit.frame_psf`, measured before anything is injected), so that it
    looks like the frame's stars; an empirical PSF grid; or, where the frame teaches none or
    ``psf`` is None, a Gaussian (σ 1 px; 0.8 px for a streak).
    """
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"anomalies are injected in place into a floating-point image, not "
                        f"{img.dtype}: pass img.astype(np.float32)")
    rng = np.random.default_rng(seed)
    y0, y1, x0, x1 = region_bounds(img.shape, region)
    region = (slice(y0, y1), slice(x0, x1))
    if isinstance(psf, str):
        if psf != "frame":
            raise ValueError(f"psf must be 'frame', an empirical PSF grid or None, not {psf!r}")
        from .starfit import frame_psf

        psf = frame_psf(img, region)
    sig = noise or _robust_noise(img[region])
    peak = float(np.nanpercentile(img[region], 99.9))
    taken: list[tuple[float, float]] = []
    out: list[Anomaly] = []

    def place() -> tuple[float, float]:
        for _ in range(200):
            x = rng.uniform(x0 + margin, x1 - margin)
            y = rng.uniform(y0 + margin, y1 - margin)
            if all((x - a) ** 2 + (y - b) ** 2 > (2.5 * margin) ** 2 for a, b in taken):
                taken.append((x, y))
                return x, y
        taken.append((x, y))
        return x, y

    yy_cache: dict[int, np.ndarray] = {}

    def grid(cx: float, cy: float, half: int):
        if half not in yy_cache:
            yy_cache[half] = np.mgrid[-half:half + 1, -half:half + 1]
        gy, gx = yy_cache[half]
        iy, ix = round(cy), round(cx)
        sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        return sl, gx + ix - cx, gy + iy - cy

    for kind in kinds:
        for _ in range(n_per_kind):
            x, y = place()
            if kind == "streak":
                length, angle = rng.uniform(25, 40), rng.uniform(0, np.pi)
                t = np.linspace(-length / 2, length / 2, int(length * 3))
                px, py = x + t * np.cos(angle), y + t * np.sin(angle)
                add_sources(img, px, py, np.full(t.size, 4 * sig), sigma=0.8, half=3, psf=psf)
                hx, hy = abs(np.cos(angle)) * length / 2, abs(np.sin(angle)) * length / 2
                box = (x - hx, y - hy, x + hx, y + hy)
            elif kind == "cosmic_ray":
                n = rng.integers(3, 9)
                cx = np.round(x + np.cumsum(rng.integers(-1, 2, n))).astype(int)
                cy = np.round(y + np.cumsum(rng.integers(-1, 2, n))).astype(int)
                img[cy, cx] += rng.uniform(40, 120, n) * sig
                box = (cx.min(), cy.min(), cx.max(), cy.max())
            elif kind == "bleed_column":
                half = int(rng.integers(10, 25))
                ix, iy = round(x), round(y)
                level = max(peak * 3, 200 * sig)
                img[iy - half:iy + half + 1, ix] = level
                img[iy - half:iy + half + 1, ix - 1:ix + 2:2] += 0.3 * level
                box = (ix - 1, iy - half, ix + 1, iy + half)
            elif kind == "diffuse_blob":
                sl, dx, dy = grid(x, y, 14)
                a_ax, b_ax = rng.uniform(4, 7), rng.uniform(2.5, 4)
                th = rng.uniform(0, np.pi)
                u = dx * np.cos(th) + dy * np.sin(th)
                v = -dx * np.sin(th) + dy * np.cos(th)
                img[sl] += 3 * sig * np.exp(-0.5 * ((u / a_ax) ** 2 + (v / b_ax) ** 2))
                box = (x - a_ax, y - a_ax, x + a_ax, y + a_ax)
            elif kind == "ring_ghost":
                sl, dx, dy = grid(x, y, 14)
                r0 = rng.uniform(6, 10)
                r = np.hypot(dx, dy)
                img[sl] += 3 * sig * np.exp(-0.5 * ((r - r0) / 1.0) ** 2)
                box = (x - r0, y - r0, x + r0, y + r0)
            elif kind == "bad_column":
                half = int(rng.integers(15, 30))
                ix, iy = round(x), round(y)
                img[iy - half:iy + half + 1, ix] += rng.choice([-1, 1]) * 8 * sig
                box = (ix, iy - half, ix, iy + half)
            elif kind == "flare":
                if stars is not None and len(stars):
                    inside = ((stars["x"] > x0 + margin) & (stars["x"] < x1 - margin)
                              & (stars["y"] > y0 + margin) & (stars["y"] < y1 - margin)
                              & (stars["flux"] > 10 * sig) & (stars["flux"] < 300 * sig))
                    if taken[:-1]:
                        tx, ty = np.array(taken[:-1]).T
                        far = np.min(np.hypot(np.asarray(stars["x"])[:, None] - tx,
                                              np.asarray(stars["y"])[:, None] - ty), axis=1)
                        inside &= far > 2.5 * margin
                    idx = np.flatnonzero(inside)
                    star = stars[int(rng.choice(idx))] if idx.size else None
                else:
                    star = None
                factor = rng.uniform(5, 50)
                if star is not None:
                    taken[-1] = (float(star["x"]), float(star["y"]))
                    x, y = float(star["x"]), float(star["y"])
                    add_sources(img, [x], [y], [float(star["flux"]) * (factor - 1)], psf=psf)
                else:
                    add_sources(img, [x], [y], [factor * 20 * sig], psf=psf)
                box = (x - 1, y - 1, x + 1, y + 1)
            elif kind == "close_blend":
                sep, th = rng.uniform(1.5, 3.0), rng.uniform(0, np.pi)
                f = rng.uniform(30, 100) * sig
                add_sources(img, [x, x + sep * np.cos(th)], [y, y + sep * np.sin(th)], [f, f],
                            psf=psf)
                box = (x - 1, y - 1, x + sep + 1, y + sep + 1)
            else:
                raise ValueError(f"unknown anomaly kind {kind!r}")
            out.append(Anomaly(kind, float(x), float(y), tuple(float(v) for v in box)))
    return out


def write_spoc(sim: SimulatedFFI, path: str | Path, *, quality: int = 0,
               cadence_s: float = 1800.0) -> Path:
    """Write ``sim`` as a SPOC-style FFI: empty primary with SECTOR/CAMERA/CCD, image in HDU 1
    (``quality``: its DQUALITY bits; ``cadence_s``: TSTOP − TSTART, seconds)."""
    primary = fits.PrimaryHDU()
    h = primary.header
    h["TELESCOP"] = "TESS"
    h["INSTRUME"] = "TESS Photometer"
    h["SECTOR"], h["CAMERA"], h["CCD"] = sim.sector, sim.camera, sim.ccd
    h["ORIGIN"] = "anomaly-reaper simulator"
    hdu = fits.ImageHDU(sim.image, header=sim.wcs.to_header(), name="CAMERA.CCD")
    hdu.header["TSTART"] = (sim.tstart, "observation start, BTJD")
    hdu.header["TSTOP"] = (sim.tstart + cadence_s / 86400.0, "observation stop, BTJD")
    hdu.header["EXPOSURE"] = (EXPOSURE_S * cadence_s / 1800.0 / 86400.0, "days")
    hdu.header["BUNIT"] = "electrons/s"
    hdu.header["CAMERA"], hdu.header["CCD"] = sim.camera, sim.ccd
    hdu.header["DQUALITY"] = (int(quality), "TESS quality bits")
    # Where science starts and ends (1-based, inclusive), as SPOC writes it.
    rows, cols = sim.science
    hdu.header["SCIROWS"], hdu.header["SCIROWE"] = rows.start + 1, rows.stop
    hdu.header["SCCSA"], hdu.header["SCCED"] = cols.start + 1, cols.stop
    path = Path(path)
    fits.HDUList([primary, hdu]).writeto(path, overwrite=True)
    return path


def write_tica(sim: SimulatedFFI, path: str | Path, min_flux: float = 900.0) -> Path:
    """Write ``sim`` as a TICA-style FFI: image in HDU 0, star table (FLXCOL/FLXROW) in HDU 1."""
    primary = fits.PrimaryHDU(sim.image, header=sim.wcs.to_header())
    h = primary.header
    h["TELESCOP"] = "TESS"
    h["SECTOR"], h["CAMNUM"], h["CCDNUM"] = sim.sector, sim.camera, sim.ccd
    h["STARTTJD"] = sim.tstart
    h["ENDTJD"] = sim.tstart + 1800 / 86400.0
    bright = sim.stars[sim.stars["flux"] > min_flux]
    table = fits.BinTableHDU(
        Table({"FLXCOL": bright["x"] + 1.0, "FLXROW": bright["y"] + 1.0,
               "TMAG": bright["tmag"]}), name="STARS",
    )
    path = Path(path)
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
    return path
