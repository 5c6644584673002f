"""Simulated stacks of TESS frames with time-domain events and their ground truth.

One star field (calibrated like :func:`.simulate.simulate_ffi`: star counts, undersampled PSF,
sky, shot and read noise) is observed ``n_frames`` times at a fixed cadence, with the pointing
jittering by a few hundredths of a pixel and jumping at momentum dumps (flagged with quality
bit 32), a scattered-light glow that rises through each orbit, a mid-sector downlink gap, and
injected events whose brightness is drawn from barely detectable to obvious:

============ ============== =====================================================================
injected     expected kind  what
============ ============== =====================================================================
flare        transient      a star brightens ×2–×50 within one frame and decays in minutes–hours
supernova    transient      a point source rises over days in a galaxy, then fades
eclipse      variable       a star dims for a few hours
asteroid     mover          a point source crossing the frame at 0.2–3 px per frame
glint        single_frame   a point-like flash in one frame
satellite    single_frame   a streak across part of one frame
============ ============== =====================================================================

Each event's ``peak_sigma`` is measured the way :mod:`.difference` measures detections: the
PSF-matched-filter signal-to-noise of the event's own pixels at its peak frame.

:func:`field_night` makes frames as other observatories take them, from a real image: a night
dithered and turned between exposures, hit by cosmic rays, with a transient fixed on the sky.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from .difference import psf_kernel
from .simulate import (
    EXPOSURE_S,
    PSF_FWHM,
    READ_NOISE_E,
    SimulatedFFI,
    _render_stars,
    _tan_wcs,
    draw_tmag,
    stars_per_pixel,
    tmag_flux,
    write_spoc,
)
from .tess import MOMENTUM_DUMP

if TYPE_CHECKING:
    from .stacks import Stack

#: Injected event kinds and the event kind :mod:`.events` should give each.
EXPECTED_KIND = {
    "flare": "transient", "supernova": "transient", "eclipse": "variable",
    "asteroid": "mover", "glint": "single_frame", "satellite": "single_frame",
}
_PSF_SIGMA = PSF_FWHM[0] / 2.3548


@dataclass
class TrueEvent:
    """One injected event: frames it spans (inclusive), its place at the peak (0-based pixels of
    the science array) and, for an asteroid or a streak, where it ends."""

    kind: str
    x: float
    y: float
    f_start: int
    f_peak: int
    f_end: int
    x_end: float | None = None
    y_end: float | None = None
    peak_sigma: float = 0.0

    @property
    def expected(self) -> str:
        """The event kind it should be found as (a flare over within one frame is seen in a
        single frame, like a glint)."""
        if self.f_start == self.f_end and self.kind == "flare":
            return "single_frame"
        return EXPECTED_KIND[self.kind]


@dataclass
class SimulatedStack:
    """Frames (e⁻/s, float32, shape (n, ny, nx)), their times (BTJD), quality bits and pointing
    offsets (px, shape (n, 2) as dy, dx), and the injected events."""

    frames: np.ndarray
    times: np.ndarray
    quality: np.ndarray
    shifts: np.ndarray
    events: list[TrueEvent]
    sector: int = 1
    camera: int = 1
    ccd: int = 1
    cadence_s: float = 1800.0
    wcs: object = field(default=None, repr=False)

    def as_stack(self, name: str = "simulated") -> Stack:
        """The frames as a :class:`~reaper_core.stacks.Stack` held in memory (its cube), to be
        searched as a stored stack is."""
        from .stacks import Stack, StackFrame

        frames = [StackFrame("sim", "sim", float(t), int(q), i)
                  for i, (t, q) in enumerate(zip(self.times, self.quality, strict=True))]
        return Stack(name, frames, self.frames.shape[1:], cube=self.frames, wcs=self.wcs)

    def write(self, folder: str | Path, *, frames: slice | None = None) -> list[Path]:
        """Write each frame as a SPOC-style FFI named like the mission's files; returns paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        idx = range(len(self.times))[frames or slice(None)]
        for i in idx:
            sim = SimulatedFFI(image=self.frames[i], wcs=self.wcs, stars=None,
                               sector=self.sector, camera=self.camera, ccd=self.ccd,
                               tstart=float(self.times[i] - self.cadence_s / 172800.0),
                               science=(slice(0, self.frames.shape[1]),
                                        slice(0, self.frames.shape[2])))
            stamp = f"{2018206000000 + i * 100:013d}"
            name = f"tess{stamp}-s{self.sector:04d}-{self.camera}-{self.ccd}-0120-s_ffic.fits"
            out.append(write_spoc(sim, folder / name, quality=int(self.quality[i]),
                                  cadence_s=self.cadence_s))
        return out

    def write_cube(self, path: str | Path) -> Path:
        """Write the stack as a TESScut-style cube (PIXELS table with TIME, FLUX, QUALITY)."""
        from astropy.io import fits

        n = len(self.times)
        cols = [
            fits.Column("TIME", "D", array=self.times),
            fits.Column("CADENCENO", "J", array=np.arange(n)),
            fits.Column("FLUX", f"{self.frames[0].size}E", dim=f"({self.frames.shape[2]},"
                        f"{self.frames.shape[1]})", array=self.frames),
            fits.Column("QUALITY", "J", array=self.quality),
        ]
        primary = fits.PrimaryHDU()
        primary.header["SECTOR"], primary.header["CAMERA"] = self.sector, self.camera
        primary.header["CCD"] = self.ccd
        table = fits.BinTableHDU.from_columns(cols, name="PIXELS")
        aperture = fits.ImageHDU(np.ones(self.frames.shape[1:], np.int32),
                                 header=self.wcs.to_header() if self.wcs else None,
                                 name="APERTURE")
        path = Path(path)
        fits.HDUList([primary, table, aperture]).writeto(path, overwrite=True)
        return path


def _start(rng: np.random.Generator, n: int, lo: int, tail: int) -> int:
    """An event's first frame, from frame ``lo`` to ``tail`` frames before the end of ``n``;
    in a stack too short for that, anywhere in its first three quarters."""
    hi = n - tail
    if hi <= lo:
        lo = min(lo, n // 4)
        hi = max(lo + 1, n - max(n // 4, 1))
    return int(rng.integers(lo, hi))


def _flux_for(snr: float, sigma_px: float) -> float:
    """Flux (e⁻/s) of a point source whose PSF-matched-filter S/N is ``snr`` on noise
    ``sigma_px`` (e⁻/s per pixel)."""
    return float(snr * sigma_px * np.sqrt(4 * np.pi) * _PSF_SIGMA)


def _line(x0: float, y0: float, x1: float, y1: float, flux_per_px: float):
    n = max(int(np.hypot(x1 - x0, y1 - y0) * 2), 2)
    t = np.linspace(0, 1, n)
    return x0 + t * (x1 - x0), y0 + t * (y1 - y0), np.full(n, flux_per_px / 2)


def simulate_stack(
    n_frames: int = 200,
    size: int = 256,
    *,
    seed: int = 0,
    density: float = 1.0,
    cadence_s: float = 1800.0,
    events: dict[str, int] | None = None,
    snr: tuple[float, float] = (4.0, 150.0),
    jitter_px: float = 0.03,
    dump_every: int = 70,
    background: float = 150.0,
    faintest: float = 17.0,
    sector: int = 1,
    camera: int = 1,
    ccd: int = 1,
) -> SimulatedStack:
    """Simulate a stack of frames with injected events (see the module docstring).

    Parameters
    ----------
    n_frames, size : int
        Frames and the side of each (science pixels only).
    density : float
        Star density relative to the real sector-1 frame.
    cadence_s : float
        Seconds between frames (1800, 600 or 200 for TESS FFIs); sets the exposure.
    events : dict, optional
        How many of each kind (default two of each).
    snr : (low, high)
        Range of the injected events' matched-filter S/N at peak, drawn log-uniformly.
    jitter_px, dump_every : float, int
        Pointing jitter (px, rms) and frames between momentum dumps (each shifts the pointing
        by 0.2–0.5 px).
    """
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(EXPECTED_KIND, 2) if events is None else dict(events)
    exposure = EXPOSURE_S * cadence_s / 1800.0
    ny = nx = size

    # Star field (Tmag 6 – faintest) on the science array.
    n_stars = int(rng.poisson(stars_per_pixel(density, faintest) * size * size))
    flux = tmag_flux(draw_tmag(rng, n_stars, 6.0, faintest))
    sx, sy = rng.uniform(2, size - 2, n_stars), rng.uniform(2, size - 2, n_stars)
    far = np.full((ny, nx), 0.3, np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx] / size
    glow_shape = np.exp(-3.0 * (xx**2 + yy**2))
    sigma_sky = np.sqrt(background * exposure + READ_NOISE_E**2) / exposure

    # Times: a cadence, with a one-day downlink in the middle; pointing: jitter and dumps.
    step = cadence_s / 86400.0
    times = 1325.3 + step * np.arange(n_frames)
    times[n_frames // 2:] += 1.0
    quality = np.zeros(n_frames, np.int64)
    dumps = np.arange(dump_every, n_frames, dump_every)
    quality[dumps] = MOMENTUM_DUMP
    offset = np.zeros((n_frames, 2))
    for d in dumps:
        offset[d:] += rng.uniform(0.2, 0.5, 2) * rng.choice([-1, 1], 2)
    shifts = offset + rng.normal(0, jitter_px, (n_frames, 2))
    orbit = (times - times[0]) % 13.7 / 13.7
    glow = 0.3 * background * orbit**2

    # Events: (kind, frames (n,), x (n,), y (n,), extra flux (n,)) per rendered point.
    star_mult = np.ones((n_frames, n_stars))
    extra: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # frame, x, y, f
    galaxies: list[tuple[float, float, float]] = []
    truth: list[TrueEvent] = []
    margin = min(12, max(size // 4, 2))  # events keep clear of the edges, small frames too

    def place() -> tuple[float, float]:
        return tuple(rng.uniform(margin, size - margin, 2))  # type: ignore[return-value]

    def star_near(lo: float, hi: float) -> int:
        inner = (sx > margin) & (sx < size - margin) & (sy > margin) & (sy < size - margin)
        ok = np.flatnonzero(inner & (flux >= lo) & (flux <= hi))
        if len(ok) == 0:
            ok = np.flatnonzero(inner) if inner.any() else np.arange(len(flux))
            return int(ok[np.argmin(np.abs(np.log(flux[ok] / np.sqrt(lo * hi))))])
        return int(rng.choice(ok))

    for kind, n in counts.items():
        for _ in range(n):
            target = float(np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]))))
            f_peak_flux = _flux_for(target, sigma_sky)
            if kind == "flare":
                s = star_near(f_peak_flux / 49, f_peak_flux)
                f0 = _start(rng, n_frames, 5, 10)
                tau = rng.uniform(0.5, 4.0)
                last = min(n_frames - 1, f0 + int(np.ceil(tau * np.log(10))))
                k = np.arange(f0, last + 1)
                star_mult[k, s] += f_peak_flux / flux[s] * np.exp(-(k - f0) / tau)
                truth.append(TrueEvent(kind, sx[s], sy[s], f0, f0, last))
            elif kind == "eclipse":
                s = star_near(f_peak_flux / 0.8, 20 * f_peak_flux)
                depth = min(0.8, f_peak_flux / flux[s])
                f0 = _start(rng, n_frames, 5, 12)
                dur = int(rng.integers(3, 9))
                star_mult[f0:f0 + dur, s] *= 1 - depth
                end = min(f0 + dur, n_frames) - 1
                truth.append(TrueEvent(kind, sx[s], sy[s], f0, min(f0 + dur // 2, end), end))
            elif kind == "supernova":
                x, y = place()
                galaxies.append((x + rng.normal(0, 1), y + rng.normal(0, 1),
                                 rng.uniform(3, 10) * sigma_sky * 30))
                f0 = _start(rng, n_frames, 5, n_frames - n_frames // 2)
                rise = int(rng.integers(6, 16))
                tau = rng.uniform(10, 30)
                k = np.arange(f0, n_frames)
                prof = np.where(k < f0 + rise, ((k - f0 + 1) / (rise + 1)) ** 2,
                                np.exp(-(k - f0 - rise) / tau))
                on = prof > 0.1
                if not on.any():  # a stack too short to see it rise
                    continue
                extra.append((k[on], np.full(on.sum(), x), np.full(on.sum(), y),
                              f_peak_flux * prof[on]))
                truth.append(TrueEvent(kind, x, y, int(k[on][0]),
                                       min(f0 + rise, int(k[on][-1])), int(k[on][-1])))
            elif kind == "asteroid":
                x0, y0 = place()
                rate = rng.uniform(0.2, 3.0)
                ang = rng.uniform(0, 2 * np.pi)
                dur = int(rng.integers(15, 50))
                dur = min(dur, int((size - 2 * margin) / rate / 1.5))
                f0 = int(rng.integers(2, max(3, n_frames - dur - 2)))
                k = np.arange(f0, min(n_frames, f0 + dur))
                x = x0 + rate * np.cos(ang) * (k - f0)
                y = y0 + rate * np.sin(ang) * (k - f0)
                inside = (x > 4) & (x < size - 4) & (y > 4) & (y < size - 4)
                k, x, y = k[inside], x[inside], y[inside]
                if len(k) < 3:
                    continue
                extra.append((k, x, y, np.full(len(k), f_peak_flux)))
                mid = len(k) // 2
                truth.append(TrueEvent(kind, float(x[mid]), float(y[mid]), int(k[0]),
                                       int(k[mid]), int(k[-1]), float(x[-1]), float(y[-1])))
            elif kind == "glint":
                x, y = place()
                f0 = _start(rng, n_frames, 2, 2)
                extra.append((np.array([f0]), np.array([x]), np.array([y]),
                              np.array([f_peak_flux])))
                truth.append(TrueEvent(kind, x, y, f0, f0, f0))
            elif kind == "satellite":
                x0, y0 = place()
                length = rng.uniform(40, 150)
                ang = rng.uniform(0, 2 * np.pi)
                x1 = float(np.clip(x0 + length * np.cos(ang), margin, size - margin))
                y1 = float(np.clip(y0 + length * np.sin(ang), margin, size - margin))
                # A streak's matched-filter S/N per unit length ~ that of a point source of
                # flux per pixel × 2.5 PSF widths.
                lx, ly, lf = _line(x0, y0, x1, y1, f_peak_flux / (2.5 * _PSF_SIGMA))
                f0 = _start(rng, n_frames, 2, 2)
                extra.append((np.full(len(lx), f0), lx, ly, lf))
                truth.append(TrueEvent(kind, (x0 + x1) / 2, (y0 + y1) / 2, f0, f0, f0, x1, y1))
            else:
                raise ValueError(f"unknown event kind {kind!r}")

    gal = np.zeros((ny, nx))
    for gx, gy, gf in galaxies:
        gal += gf * np.exp(-((xx * size - gx) ** 2 + (yy * size - gy) ** 2) / (2 * 2.5**2)) \
            / (2 * np.pi * 2.5**2)
    static_sky = background + gal
    fx = np.concatenate([e[0] for e in extra]) if extra else np.zeros(0, int)
    ex = np.concatenate([e[1] for e in extra]) if extra else np.zeros(0)
    ey = np.concatenate([e[2] for e in extra]) if extra else np.zeros(0)
    ef = np.concatenate([e[3] for e in extra]) if extra else np.zeros(0)

    frames = np.empty((n_frames, ny, nx), np.float32)
    event_rate = {}
    peak_frames = {ev.f_peak for ev in truth}
    for i in range(n_frames):
        dy, dx = shifts[i]
        here = fx == i
        px = np.concatenate([sx, ex[here]]) + dx
        py = np.concatenate([sy, ey[here]]) + dy
        pf = np.concatenate([flux * star_mult[i], ef[here]])
        rate = _render_stars((ny, nx), px, py, pf, PSF_FWHM, far) + static_sky \
            + glow[i] * glow_shape
        if i in peak_frames:  # the events' own pixels, for their true significance
            base = _render_stars((ny, nx), sx + dx, sy + dy, flux, PSF_FWHM, far)
            event_rate[i] = (rate - static_sky - glow[i] * glow_shape - base, rate)
        e = rng.poisson(np.clip(rate * exposure, 0, None)).astype(np.float64)
        e += rng.normal(0, READ_NOISE_E, e.shape)
        frames[i] = (e / exposure).astype(np.float32)

    k = psf_kernel(_PSF_SIGMA)
    norm = np.sqrt((k**2).sum())
    for ev in truth:
        signal, rate = event_rate[ev.f_peak]
        sigma = np.sqrt(np.clip(rate, 0, None) * exposure + READ_NOISE_E**2) / exposure
        snr_map = np.abs(ndimage.convolve(signal / sigma, k, mode="constant")) / norm
        x0, x1 = sorted((ev.x, ev.x if ev.x_end is None or ev.kind == "asteroid" else ev.x_end))
        y0, y1 = sorted((ev.y, ev.y if ev.y_end is None or ev.kind == "asteroid" else ev.y_end))
        box = (slice(max(int(y0) - 4, 0), int(y1) + 5), slice(max(int(x0) - 4, 0), int(x1) + 5))
        ev.peak_sigma = float(snr_map[box].max())

    wcs = _tan_wcs(107.27, -70.0, ny, nx, 30.0)
    return SimulatedStack(frames=frames, times=times, quality=quality, shifts=shifts,
                          events=truth, sector=sector, camera=camera, ccd=ccd,
                          cadence_s=cadence_s, wcs=wcs)


def add_sine_star(sim: SimulatedStack, x: float, y: float, snr: float,
                  period_days: float = 1.0) -> np.ndarray:
    """Add in place to ``sim``'s frames a point source at (x, y) (px) varying through the
    whole stack as a sine of ``period_days``, ``snr`` σ of the PSF-matched filter at its
    extremes, σ the frames' own pixel noise (1.4826 × the median absolute change between
    consecutive frames, over √2, away from the edges); returns the sine, shape (n,): a star
    with no quiet stretch (a pulsator, a rotator), which no event kind of
    :func:`simulate_stack` makes."""
    _, ny, nx = sim.frames.shape
    m = min(8, min(ny, nx) // 8)
    noise = 1.4826 * np.median(np.abs(np.diff(sim.frames[:, m:-m, m:-m], axis=0))) / 2**0.5
    yy, xx = np.mgrid[0:ny, 0:nx]
    psf = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.85**2))
    psf /= psf.sum()
    wave = np.sin(2 * np.pi * (sim.times - sim.times[0]) / period_days)
    # A matched-filter S/N of ``snr``: snr σ / √Σpsf².
    sim.frames += (snr * noise / np.sqrt((psf**2).sum()) * wave)[:, None, None] * psf
    return wave


def field_night(field_image: np.ndarray, header: Any, folder: str | Path, *,
                offsets: list[tuple[int, int]], angles: list[float] | None = None,
                size: int = 192, corner: tuple[int, int] = (300, 300),
                transient: tuple[float, float] = (120.0, 100.0), transient_frames=(3, 4, 5),
                amplitude: float = 400.0, psf_sigma: float = 1.5, cosmic_rays: int = 0,
                noise: float = 3.0, seed: int = 0
                ) -> tuple[list[Path], list[tuple[np.ndarray, np.ndarray]]]:
    """A night of a real field from the ground or a space telescope, written as one FITS file
    a frame: ``size``² px of ``field_image`` (its pixel ``corner`` (row, column) at the first
    frame's origin) at the position angles ``angles`` (degrees; default 0) and offsets
    ``offsets`` ((dy, dx) px: a dither), resampled from it (cubic), ten minutes apart
    (``DATE-OBS``, ``EXPTIME``), with Gaussian noise ``noise``, ``cosmic_rays`` hits a frame
    (one or two pixels, 200–3,000 counts, none within 8 px of the transient) and a transient
    of peak ``amplitude`` (a Gaussian of σ ``psf_sigma`` px) fixed on the sky at pixel
    ``transient`` (x, y) of the first frame, in ``transient_frames``. With ``header`` (the
    field's celestial WCS, a linear CD matrix), each frame carries its own WCS, turned and
    shifted with it.

    Returns the paths, in time order (``folder``/f0.fits …), and each frame's cosmic rays
    (rows, columns of their first pixels).
    """
    from astropy import units as u
    from astropy.io import fits
    from astropy.time import Time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    angles = angles or [0.0] * len(offsets)
    rng = np.random.default_rng(seed)
    t0 = Time("2006-04-13T06:00:00", scale="utc")
    y, x = np.mgrid[:size, :size].astype(float)
    c = (size - 1) / 2
    tx, ty = corner[1] + transient[0], corner[0] + transient[1]  # on the field
    paths, hits = [], []
    for i, (angle, (oy, ox)) in enumerate(zip(angles, offsets, strict=True)):
        t = np.radians(angle)
        turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])  # (x, y) → field
        b = np.array([corner[1] + c + ox, corner[0] + c + oy]) - turn @ np.array([c, c])
        frame = ndimage.map_coordinates(
            field_image.astype(np.float32), [turn[1, 0] * x + turn[1, 1] * y + b[1],
                                             turn[0, 0] * x + turn[0, 1] * y + b[0]],
            order=3, mode="nearest")
        frame += rng.normal(0, noise, frame.shape)
        px, py = np.linalg.solve(turn, np.array([tx, ty]) - b)
        if i in transient_frames:
            frame += amplitude * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * psf_sigma**2))
        hy, hx = rng.integers(5, size - 6, (2, 3 * cosmic_rays))
        far = np.hypot(hx - px, hy - py) > 8
        hy, hx = hy[far][:cosmic_rays], hx[far][:cosmic_rays]
        frame[hy, hx] += rng.uniform(200, 3000, len(hy))
        two = rng.random(len(hy)) < 0.5
        frame[hy[two] + 1, hx[two]] += rng.uniform(100, 1000, int(two.sum()))
        hits.append((hy, hx))
        cards = {"DATE-OBS": (t0 + i * 600 * u.s).isot, "EXPTIME": 60.0}
        if header is not None:
            cd0 = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
            crpix = np.linalg.solve(turn, np.array([header["CRPIX1"] - 1,
                                                    header["CRPIX2"] - 1]) - b) + 1
            cd = cd0 @ turn
            cards.update({"CTYPE1": header["CTYPE1"], "CTYPE2": header["CTYPE2"],
                          "CRVAL1": header["CRVAL1"], "CRVAL2": header["CRVAL2"],
                          "CRPIX1": crpix[0], "CRPIX2": crpix[1], "CD1_1": cd[0, 0],
                          "CD1_2": cd[0, 1], "CD2_1": cd[1, 0], "CD2_2": cd[1, 1]})
        paths.append(folder / f"f{i}.fits")
        fits.PrimaryHDU(frame.astype(np.float32), header=fits.Header(cards)).writeto(
            paths[-1], overwrite=True)
    return paths, hits
