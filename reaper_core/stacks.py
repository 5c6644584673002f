"""Stacks: the frames of one sector, camera and CCD in time order, or one TESScut cube.

A stack is what time-domain search runs on (:mod:`.difference`, :mod:`.events`). Frames are read
one at a time from their files, so a stack of 1,300 full frames never sits in memory; a TESScut
cube is small and is held whole. Times are mid-exposure BTJD (BJD − 2457000, days); quality bits
are TESS's (:mod:`.tess`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FITSReadError, StackError
from .tess import SEVERE_QUALITY, cadence_days, describe_quality, good_quality, time_gaps

#: Fewest frames that make a stack (a reference and something to compare with it).
MIN_FRAMES = 3


@dataclass(frozen=True)
class StackFrame:
    """One frame of a stack: where its pixels are and when they were taken.

    ``index`` is the cadence's row in a TESScut cube (None for a file holding one frame);
    ``hdu`` the HDU of a file the frame is read from (None: the one the reader's rule picks);
    ``dither`` the whole pixels (dy, dx) that move it onto the first frame's pixels (a
    dithered sequence of frames of a field), after ``warp`` where the frame is rotated or
    scaled against the first: (m00, m01, m10, m11, t0, t1), pixel (row, column) o of the
    warped frame is pixel M·o + t of the stored one (see :func:`register`).
    """

    path: str
    name: str
    time: float
    quality: int = 0
    index: int | None = None
    hdu: int | None = None
    dither: tuple[int, int] = (0, 0)
    warp: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # (lists, read back from JSON)
        object.__setattr__(self, "dither", (int(self.dither[0]), int(self.dither[1])))
        if self.warp is not None:
            object.__setattr__(self, "warp", tuple(float(v) for v in self.warp))

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "time": self.time,
                "quality": self.quality, "index": self.index, "hdu": self.hdu,
                "dither": list(self.dither),
                "warp": None if self.warp is None else list(self.warp)}


@dataclass
class Stack:
    """Frames of one sector/camera/CCD in time order.

    Attributes
    ----------
    name : str
        How the stack is shown, e.g. ``sector 1, camera 1, CCD 4`` or the cube's file name.
    frames : list of StackFrame
        In time order.
    shape : (ny, nx)
        Shape of every frame's array as stored.
    science : (slice, slice) or None
        The science pixels of that array (SPOC collateral columns and rows left out).
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the stored array (of the first frame).
    cube : ndarray, shape (n_cadences, ny, nx), or None
        A TESScut cube's pixels, e⁻/s (a frame's ``index`` is its row).
    """

    name: str
    frames: list[StackFrame]
    shape: tuple[int, int]
    sector: int | None = None
    camera: int | None = None
    ccd: int | None = None
    science: tuple[slice, slice] | None = None
    wcs: Any = None
    cube: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def times(self) -> np.ndarray:
        """Mid-exposure times, BTJD days, shape (n,)."""
        return np.array([f.time for f in self.frames], float)

    @property
    def quality(self) -> np.ndarray:
        """TESS quality bits per frame, shape (n,)."""
        return np.array([f.quality for f in self.frames], np.int64)

    @property
    def good(self) -> np.ndarray:
        """Frames fit for science (no severe quality bit), bool, shape (n,)."""
        return good_quality(self.quality)

    @property
    def cadence_days(self) -> float:
        return cadence_days(self.times)

    def gaps(self, factor: float = 5.0) -> list[tuple[float, float]]:
        """Intervals (start, end), BTJD, without frames for more than ``factor`` cadences."""
        return time_gaps(self.times, factor)

    @property
    def has_cosmic_rays(self) -> bool:
        """Whether its frames may hold cosmic rays: those of other instruments than TESS,
        whose FFIs (and TESScut cubes cut from them) are cleaned of them on board."""
        return self.cube is None and self.sector is None

    @property
    def offset(self) -> tuple[int, int]:
        """(x0, y0): the stored-array pixel of the science region's first pixel."""
        if self.science is None:
            return 0, 0
        return int(self.science[1].start or 0), int(self.science[0].start or 0)

    def pixel_noise(self) -> float:
        """A cube pixel's typical noise from one cadence to the next, e⁻/s: the median over
        pixels of the robust scatter (1.4826 × MAD) of the differences of consecutive good
        cadences, over √2. Only for a TESScut cube (``cube`` set)."""
        if self.cube is None:
            raise ValueError(f"{self.name} is not a cube")
        rows = np.array([f.index for f in self.frames])[self.good]
        d = np.diff(self.cube[rows].astype(np.float64), axis=0)
        mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0)
        return float(np.median(1.4826 * mad) / np.sqrt(2))

    @property
    def science_shape(self) -> tuple[int, int]:
        if self.science is None:
            return self.shape
        return (self.science[0].stop - self.science[0].start,
                self.science[1].stop - self.science[1].start)

    def frame(self, i: int) -> np.ndarray:
        """Science pixels of frame ``i`` (e⁻/s, float32, NaN kept), shape ``science_shape``."""
        if self.cube is not None:
            data = self.cube[self.frames[i].index]
        else:
            f = self.frames[i]
            data = moved(warped(stack_frame_pixels(f, self.shape), f.warp), f.dither)
        if self.science is not None:
            data = data[self.science]
        return np.ascontiguousarray(data, np.float32)

    def summary(self) -> dict[str, Any]:
        """Span, cadence, gaps and flagged frames, for a person (home page, command line)."""
        t = self.times
        flagged = self.quality != 0
        return {
            "stack": self.name, "frames": len(self),
            "t_start": float(t.min()), "t_end": float(t.max()),
            "days": float(t.max() - t.min()), "cadence_min": 1440 * self.cadence_days,
            "gaps": len(self.gaps()), "flagged": int(flagged.sum()),
            "unusable": int((~self.good).sum()),
        }


def _size(shape: Sequence[int]) -> str:
    return f"{shape[0]}×{shape[1]}"


def stack_from_cube(path: str | Path, *, name: str | None = None) -> Stack:
    """A TESScut cube as a stack (its cadences with their true times and quality bits).

    Cadences without a time (the cube's NaN rows) are left out.
    """
    from .fits_reader import read_tesscut

    cube = read_tesscut(path, name=name)
    frames = [StackFrame(str(path), cube.name, float(cube.time[i]), int(cube.quality[i]), int(i))
              for i in np.flatnonzero(np.isfinite(cube.time))]
    stack = Stack(name=cube.name, frames=frames, shape=cube.flux.shape[1:],
                  sector=cube.sector, camera=cube.camera, ccd=cube.ccd, wcs=cube.wcs,
                  cube=cube.flux)
    check_stack(stack)
    return stack


@dataclass(frozen=True)
class FrameInfo:
    """What a stack needs to know of one single-frame file."""

    path: str
    name: str
    sector: int | None
    camera: int | None
    ccd: int | None
    time: float | None
    quality: int
    shape: tuple[int, int]
    #: The HDU its image is read from (None: the one the reader's rule picks).
    hdu: int | None = None
    #: Its celestial WCS, when it has one.
    wcs: Any = field(default=None, repr=False, compare=False)


def frame_info(path: str | Path, name: str | None = None,
               hdu: int | None = None) -> tuple[FrameInfo, Any]:
    """Read one file's stack metadata (of its HDU ``hdu``, else of the image the reader's rule
    picks); returns it with the file's image (for its science region and WCS). Raises
    :class:`FITSReadError` for an unreadable file."""
    from .fits_reader import read_fits

    path = Path(path)
    img = read_fits(path, name=name or path.name, max_bytes=2_000_000_000, hdu=hdu)
    if img.layout == "tesscut":
        raise FITSReadError(img.name, "is a TESScut cube, a stack by itself; give it alone")
    return FrameInfo(str(path), img.name, img.sector, img.camera, img.ccd, img.mid_time,
                     int(img.quality), img.shape, hdu, img.wcs), img


def stack_from_files(paths: Iterable[str | Path], *, name: str | None = None,
                     hdu: int | None = None) -> Stack:
    """Single-frame files of one sector, camera and CCD as a stack, ordered by time; ``hdu``:
    the HDU of each file to read (one chip of a mosaic; its stack's name then ends ``[hdu]``).

    Raises :class:`StackError` with one sentence when they cannot form one (see
    :func:`check_frames`).
    """
    infos, first = [], None
    for p in paths:
        info, img = frame_info(p, hdu=hdu)
        infos.append(info)
        first = first or img
    infos = check_frames(infos)  # refuses fewer than MIN_FRAMES: ``first`` is a frame
    head = infos[0]
    field = field_of(first.header_cards) if head.sector is None else None
    name = name or chip_name(field_name(field) if field else
                             stack_name(head.sector, head.camera, head.ccd), hdu)
    return _file_stack(infos, name, first.valid, first.wcs)


def _file_stack(infos: list[FrameInfo], name: str, science: Any, wcs: Any) -> Stack:
    head = infos[0]
    stack = Stack(name=name, shape=tuple(head.shape),
                  frames=[StackFrame(i.path, i.name, float(i.time), i.quality, hdu=i.hdu)
                          for i in infos],
                  sector=head.sector, camera=head.camera, ccd=head.ccd, science=science, wcs=wcs)
    check_stack(stack)
    if head.sector is None:  # frames of a field, not TESS's (whose pointing holds): dithered?
        register(stack, [i.wcs for i in infos])
        # Registered onto the first frame in time: its WCS gives the events' RA and Dec.
        stack.wcs = head.wcs if head.wcs is not None else stack.wcs
    return stack


def register(stack: Stack, wcs: Sequence[Any] | None = None) -> None:
    """Register a stack's frames onto its first: frames of a field from the ground or from
    space are offset between exposures by tens of pixels (a dither), and may be rotated
    (another position angle), which the difference images' sub-pixel alignment (to 5 px,
    TESS's jitter) does not reach.

    Where every frame has a celestial WCS (``wcs``, one per frame) and a frame is rotated or
    scaled against the first (by more than :data:`WARP_MIN_PX` across the frame), it is
    resampled onto the first frame's pixels (``StackFrame.warp``: an affine map fitted to its
    WCS). Then each frame's whole-pixel dither (up to a third of :data:`DITHER_BOX`) is
    measured by phase correlation of the central windows (scikit-image) and kept
    (``StackFrame.dither``); the stack is searched where every frame has pixels."""
    from skimage.registration import phase_cross_correlation

    from .difference import central_window

    if wcs is not None and len(wcs) == len(stack) and all(w is not None for w in wcs):
        for i in range(1, len(stack)):
            if (warp := _warp_between(wcs[0], wcs[i], stack.shape)) is not None:
                stack.frames[i] = replace(stack.frames[i], warp=warp)

    def window(i: int) -> np.ndarray:
        f = stack.frames[i]
        return central_window(warped(stack_frame_pixels(f, stack.shape), f.warp), DITHER_BOX)

    def mismatch(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.nanmedian(np.abs(a - b)))

    anchor = window(0)
    limit = anchor.shape[0] // 3
    for i in range(1, len(stack)):
        win = window(i)
        shift, _, _ = phase_cross_correlation(anchor, win, normalization=None)
        dy, dx = (round(float(v)) for v in shift)
        # Kept when it is a dither and moving the frame makes it match: a frame without
        # stars to correlate gives a shift at random, which matches no better.
        if 0 < max(abs(dy), abs(dx)) <= limit and \
                mismatch(anchor, moved(win, (dy, dx))) < 0.9 * mismatch(anchor, win):
            stack.frames[i] = replace(stack.frames[i], dither=(dy, dx))
    if any(f.dither != (0, 0) or f.warp is not None for f in stack.frames):
        # Searched where every frame has pixels: a difference image's sky and noise at the
        # edge of a frame's coverage are not those of the frames that cover it.
        stack.science = _common_box(stack)


#: Side of the central window in which a frame's dither is measured, pixels (at most).
DITHER_BOX = 512
#: Fewest rows and columns that every frame of a registered stack must cover.
MIN_COMMON = 16
#: A frame is resampled when its WCS puts a corner this far (pixels) from where a shift alone
#: would: rotated or scaled against the first frame.
WARP_MIN_PX = 0.3


def _warp_between(first: Any, other: Any, shape: tuple[int, int]
                  ) -> tuple[float, ...] | None:
    """The affine map (m00, m01, m10, m11, t0, t1) from the first frame's pixels (row,
    column) to another frame's, fitted to their WCSs on a 5 × 5 grid; None when a shift
    alone would do (to :data:`WARP_MIN_PX`) or the WCSs cannot say."""
    ny, nx = shape
    gy, gx = (g.ravel() for g in np.meshgrid(np.linspace(0, ny - 1, 5),
                                              np.linspace(0, nx - 1, 5), indexing="ij"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            px, py = other.world_to_pixel(first.pixel_to_world(gx, gy))
    except Exception:
        return None
    py, px = np.asarray(py, float), np.asarray(px, float)
    if not (np.isfinite(py).all() and np.isfinite(px).all()):
        return None
    design = np.column_stack([gy, gx, np.ones_like(gy)])
    (m00, m01, t0), *_ = np.linalg.lstsq(design, py, rcond=None)
    (m10, m11, t1), *_ = np.linalg.lstsq(design, px, rcond=None)
    m = np.array([[m00, m01], [m10, m11]])
    corners = np.array([[0, 0], [0, nx - 1], [ny - 1, 0], [ny - 1, nx - 1]], float)
    centre = np.array([(ny - 1) / 2, (nx - 1) / 2])
    off_shift = (corners - centre) @ (m - np.eye(2)).T
    if np.abs(off_shift).max() < WARP_MIN_PX:
        return None
    return (float(m00), float(m01), float(m10), float(m11), float(t0), float(t1))


def warped(data: np.ndarray, warp: tuple[float, ...] | None) -> np.ndarray:
    """``data`` resampled by ``warp`` (see :class:`StackFrame`; cubic spline), NaN where the
    map falls outside it or on a missing pixel; ``data`` itself without a warp."""
    from scipy import ndimage

    from .difference import _filled

    if warp is None:
        return data
    m = np.array(warp[:4]).reshape(2, 2)
    t = np.array(warp[4:])
    filled, finite = _filled(data)
    out = ndimage.affine_transform(filled.astype(np.float32), m, offset=t, order=3,
                                   mode="nearest")
    inside = ndimage.affine_transform(finite.astype(np.float32), m, offset=t, order=1,
                                      mode="constant", cval=0.0)
    out[inside < 0.99] = np.nan
    return out.astype(np.float32)


def _common_box(stack: Stack) -> tuple[slice, slice]:
    """The rows and columns (of the first frame's pixels, within its science region) that
    every registered frame covers: the bounding box of their common coverage (on a grid of
    every pixel up to 512 a side, of every n-th beyond), its edges moved in until every grid
    point inside is covered. Raises :class:`StackError` when under :data:`MIN_COMMON` a side
    is left."""
    ny, nx = stack.shape
    step = max(1, min(ny, nx) // 512)
    rows, cols = stack.science or (slice(0, ny), slice(0, nx))
    gy, gx = np.mgrid[0:ny:step, 0:nx:step].astype(float)
    ok = ((gy >= (rows.start or 0)) & (gy < (rows.stop or ny))
          & (gx >= (cols.start or 0)) & (gx < (cols.stop or nx)))
    for f in stack.frames:
        py, px = gy - f.dither[0], gx - f.dither[1]  # in the warped frame
        if f.warp is not None:
            m00, m01, m10, m11, t0, t1 = f.warp
            py, px = m00 * py + m01 * px + t0, m10 * py + m11 * px + t1
        ok &= (py >= 0) & (py <= ny - 1) & (px >= 0) & (px <= nx - 1)
    r0 = c0 = 0
    r1, c1 = ok.shape
    if ok.any():
        rr, cc = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
        r0, r1, c0, c1 = rr[0], rr[-1] + 1, cc[0], cc[-1] + 1
        while r1 > r0 and c1 > c0 and not ok[r0:r1, c0:c1].all():
            box = ok[r0:r1, c0:c1]
            edges = [(~box[0]).sum(), (~box[-1]).sum(), (~box[:, 0]).sum(), (~box[:, -1]).sum()]
            k = int(np.argmax(edges))
            r0, r1, c0, c1 = (r0 + (k == 0), r1 - (k == 1), c0 + (k == 2), c1 - (k == 3))
    y0, y1 = int(r0 * step), int(min((r1 - 1) * step + 1, ny)) if r1 > r0 else 0
    x0, x1 = int(c0 * step), int(min((c1 - 1) * step + 1, nx)) if c1 > c0 else 0
    if not ok.any() or y1 - y0 < MIN_COMMON or x1 - x0 < MIN_COMMON:
        dy, dx = (max(abs(f.dither[k]) for f in stack.frames) for k in (0, 1))
        raise StackError(f"{stack.name}: its frames are offset by up to {dy} x {dx} pixels "
                         f"(or rotated), leaving {max(y1 - y0, 0)} x {max(x1 - x0, 0)} that "
                         "every frame covers; too little to search")
    return slice(y0, y1), slice(x0, x1)


def stack_frame_pixels(f: StackFrame, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a single-frame file's frame as stored (not moved), shape ``shape``."""
    from .fits_reader import read_fits

    data = read_fits(f.path, name=f.name, max_bytes=2_000_000_000, hdu=f.hdu).data
    if data.shape != shape:
        raise StackError(f"{f.name}: its image is {_size(data.shape)} pixels, the stack's "
                         f"frames {_size(shape)}; a stack's frames must all be the same size")
    return data


def moved(data: np.ndarray, dither: tuple[int, int]) -> np.ndarray:
    """``data`` moved by whole pixels ``dither`` (dy, dx): pixel (y, x) of the result is pixel
    (y − dy, x − dx) of ``data``; NaN where that falls outside. Shape unchanged."""
    dy, dx = dither
    if dy == 0 and dx == 0:
        return data
    ny, nx = data.shape
    out = np.full(data.shape, np.nan, np.float32)
    if abs(dy) < ny and abs(dx) < nx:
        out[max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)] = \
            data[max(-dy, 0):ny + min(-dy, 0), max(-dx, 0):nx + min(-dx, 0)]
    return out


def field_of(cards: dict[str, str]) -> tuple[str, str, str, str] | None:
    """(telescope, instrument, object, filter) of a frame that is not TESS's, from its header
    cards (:data:`~reaper_core.fits_reader.KEY_CARDS`): frames of one field through one filter
    that make a stack together (with their size); None without an ``OBJECT`` (HST's and
    JWST's: ``TARGNAME``) — unrelated frames of one size are never stacked. (Frames of a
    field taken through several filters in turn are a stack for each: every star would
    otherwise change from one to the next.)"""
    from .fits_reader import FILTER_CARDS

    obj = str(cards.get("OBJECT", "")).strip() or str(cards.get("TARGNAME", "")).strip()
    if not obj:
        return None
    band = " ".join(v for k in FILTER_CARDS if (v := str(cards.get(k, "")).strip()))
    return (str(cards.get("TELESCOP", "")).strip(), str(cards.get("INSTRUME", "")).strip(), obj,
            band)


def field_name(field: tuple[str, str, str, str]) -> str:
    """``NGC 6334 (ESO-VLT-U1 ISAAC, Ks)``: a stack of frames of one field (:func:`field_of`)."""
    telescope, instrument, obj, band = field
    return (f"{obj} ({' '.join(g for g in (telescope, instrument) if g) or 'frames'}"
            f"{', ' + band if band else ''})")


def chip_name(name: str, hdu: int | None) -> str:
    """A stack's ``name`` for the frames of one HDU of each file (one chip of a mosaic):
    ``name [hdu]``; ``name`` itself for whole files (``hdu`` None)."""
    return name if hdu is None else f"{name} [{hdu}]"


def stack_name(sector: int | None, camera: int | None, ccd: int | None) -> str:
    """``sector 1, camera 1, CCD 4`` (parts not known left out)."""
    parts = [f"{word} {v}" for word, v in (("sector", sector), ("camera", camera), ("CCD", ccd))
             if v is not None]
    return ", ".join(parts) or "frames without TESS pointing"


def check_frames(infos: list[FrameInfo]) -> list[FrameInfo]:
    """The frames in time order, or :class:`StackError` naming the file and the reason: fewer
    than :data:`MIN_FRAMES`, a frame without a time, two frames of the same time, frames of
    different CCDs or sizes."""
    if len(infos) < MIN_FRAMES:
        which = f" ({', '.join(i.name for i in infos)})" if infos else ""
        raise StackError(f"a stack needs at least {MIN_FRAMES} frames of one CCD; "
                         f"{len(infos)} given{which}")
    for i in infos:
        if i.time is None or not np.isfinite(i.time):
            raise StackError(f"{i.name}: has no observation time (TSTART/TSTOP in its header); "
                             "a stack needs the time of every frame")
    head = infos[0]
    for i in infos[1:]:
        if (i.sector, i.camera, i.ccd) != (head.sector, head.camera, head.ccd):
            raise StackError(
                f"{i.name}: is {stack_name(i.sector, i.camera, i.ccd)} but {head.name} is "
                f"{stack_name(head.sector, head.camera, head.ccd)}; a stack holds frames of one "
                "sector, camera and CCD")
        if tuple(i.shape) != tuple(head.shape):
            raise StackError(f"{i.name}: its image is {_size(i.shape)} pixels but {head.name}'s "
                             f"is {_size(head.shape)}; a stack's frames must be the same size")
    ordered = sorted(infos, key=lambda i: (i.time, i.name))
    for a, b in pairwise(ordered):
        if b.time - a.time < 1e-6:  # days: 0.1 s
            raise StackError(f"{b.name}: was taken at the same time as {a.name} (BTJD "
                             f"{a.time:.5f}); a stack's frames are exposures at different times")
    return ordered


def check_stack(stack: Stack) -> None:
    """Raise :class:`StackError` when a stack cannot be searched: too few frames, or too few
    not flagged by severe quality bits to make a reference image."""
    if len(stack) < MIN_FRAMES:
        raise StackError(f"{stack.name}: a stack needs at least {MIN_FRAMES} frames; it has "
                         f"{len(stack)}")
    good = stack.good
    if good.sum() < MIN_FRAMES:
        bits = int(np.bitwise_or.reduce(stack.quality[~good])) if (~good).any() else 0
        raise StackError(
            f"{stack.name}: {int((~good).sum())} of its {len(stack)} frames are flagged by "
            f"quality bits ({', '.join(describe_quality(bits & SEVERE_QUALITY))}), leaving "
            f"{int(good.sum())}; a reference image needs at least {MIN_FRAMES} good frames")


def stored_wcs(header: str | None) -> Any:
    """The celestial WCS that a stored file or stack keeps (its header's text), None without
    one or for one that cannot be read."""
    if not header:
        return None
    from astropy.io import fits
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(fits.Header.fromstring(header)).celestial
    except Exception:
        return None


def stack_from_records(records: Sequence[Any], name: str, science: Any, wcs: Any) -> Stack:
    """A stack from stored file records (``FitsFile`` rows with ``stored_path``)."""
    infos = [FrameInfo(str(r.stored_path), r.name, r.sector, r.camera, r.ccd,
                       None if r.tstart is None or r.tstop is None else (r.tstart + r.tstop) / 2,
                       int(r.quality or 0), (r.ny, r.nx), r.hdu,
                       # (what registering frames needs: not TESS's, whose pointing holds)
                       stored_wcs(r.wcs_header) if r.sector is None else None)
             for r in records]
    return _file_stack(check_frames(infos), name, science, wcs)
