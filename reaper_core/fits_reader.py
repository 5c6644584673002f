"""FITS reading: open a file safely, find its image, read TESS metadata, WCS and star table.

Supported layouts
-----------------
``spoc``     TESS SPOC FFI (``*-s_ffic.fits``): image in HDU 1, collateral columns and rows
             outside ``SCCSA``–``SCCED`` × ``SCIROWS``–``SCIROWE`` (see :mod:`.tess`).
``tica``     TESS TICA FFI: image in HDU 0, star table with FLXCOL/FLXROW in HDU 1.
``tesscut``  TESScut cube: a BINTABLE with a 3-D FLUX column; the per-pixel median is used.
``plain``    any other 2-D image, including ``.fits.gz``, ``.fits.bz2`` and tile-compressed
             (``.fz``) images.

Which HDU: a TESScut cube's FLUX table when there is one, else the largest 2-D image (the first
of equal ones), else the first 3-D image (a cube of planes: their per-pixel median is read),
unless the caller names one (``hdu``). Sector, camera and CCD come from the
headers, else from the TESS file-name conventions (:func:`.tess.parse_name`).

Everything else raises :class:`~reaper_core.errors.FITSReadError` with one sentence.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from .errors import FITSReadError
from .files import NO_FITS_IN_FOLDER
from .tess import cadence_days, describe_quality, parse_name, science_region, time_gaps

#: Smallest accepted image side, pixels.
MIN_SIDE = 16
#: Fewest pixels of exact zeros, solid over 3 × 3 and touching the frame's edge, that are read
#: as padding (no data) in a floating-point image: many surveys and mosaics write 0 rather
#: than NaN or ``BLANK`` outside what was exposed (GNU Astronomy Utilities reads every 0.0 of
#: such images as blank). A smaller block of zeros, or one inside the frame, is kept: dead
#: pixels are something to find.
PADDING_MIN_PX = 64
#: Header cards shown to a person (gallery detail view).
KEY_CARDS = (
    "TELESCOP", "INSTRUME", "OBJECT", "TARGNAME", "FILTER", "FILTER1", "FILTER2", "SECTOR",
    "CAMERA", "CCD", "CAMNUM", "CCDNUM", "DATE-OBS", "DATE-END", "TSTART", "TSTOP", "EXPOSURE",
    "BUNIT", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2",
)
#: The cards of :data:`KEY_CARDS` that name a frame's filter (HST's ACS has two wheels).
FILTER_CARDS = ("FILTER", "FILTER1", "FILTER2")
#: Compressed files the reader inflates (as astropy does), by their first bytes: (what, opener).
_COMPRESSED = {b"\x1f\x8b": ("gzip", gzip.open), b"BZh": ("bzip2", bz2.open)}
_FITS_MAGIC = b"SIMPLE  ="


@dataclass
class FitsImage:
    """One image read from a FITS file.

    Attributes
    ----------
    name : str
        Display name of the file.
    data : ndarray, shape (ny, nx), float32
        The image; non-finite pixels are kept as NaN.
    layout : str
        ``spoc``, ``tica``, ``tesscut`` or ``plain``.
    sector, camera, ccd : int or None
        TESS pointing metadata when the headers have it.
    tstart, tstop : float or None
        Observation start and stop, TESS BJD - 2457000 (days).
    date_obs : str or None
        ``DATE-OBS`` as written in the header.
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the image, when the header has a usable one.
    catalog : ndarray, shape (n, 2), or None
        0-based (x, y) pixel positions of the file's own star table.
    valid : tuple of slice or None
        Region holding science pixels (SPOC FFIs carry collateral columns and rows).
    header_cards : dict
        A few header values as strings, for display.
    hdu : int
        Index of the HDU the image was read from.
    n_images : int
        How many HDUs of the file hold an image (a cube counts as one).
    chosen : bool
        Whether the caller named the HDU (else the reader's rule chose it).
    extname : str
        The HDU's ``EXTNAME``, "" when it has none.
    quality : int
        TESS quality bits of the frame (``DQUALITY``), 0 when none are set or known.
    """

    name: str
    data: np.ndarray
    layout: str = "plain"
    sector: int | None = None
    camera: int | None = None
    ccd: int | None = None
    tstart: float | None = None
    tstop: float | None = None
    date_obs: str | None = None
    wcs: WCS | None = None
    catalog: np.ndarray | None = None
    valid: tuple[slice, slice] | None = None
    header_cards: dict[str, str] = field(default_factory=dict)
    hdu: int = 0
    n_images: int = 1
    chosen: bool = False
    extname: str = ""
    quality: int = 0
    #: Further notes added while the file is processed (e.g. positions left out).
    extra_notes: list[str] = field(default_factory=list)
    #: The pixels' shape once ``data`` is dropped (:meth:`without_pixels`).
    kept_shape: tuple[int, int] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.kept_shape or self.data.shape  # type: ignore[return-value]

    def without_pixels(self) -> FitsImage:
        """This image with its pixels dropped, its shape and metadata kept: what a writer
        needs once the file's cutouts and preview are made (a cluster's worker sends it)."""
        return replace(self, data=np.zeros((0, 0), np.float32), kept_shape=self.shape)

    @property
    def notes(self) -> list[str]:
        """What a person should know about how the file was read, one sentence each."""
        out = []
        # A SPOC FFI's image is in HDU 1 by convention (HDU 2 holds its uncertainties); a
        # TESScut cube's pixels are chosen before any image (its APERTURE is one).
        if self.chosen and self.n_images > 1:
            out.append(f"image read from HDU {self.hdu}{self._extname}, one of "
                       f"{self.n_images} images in the file")
        elif self.n_images > 1 and not (self.layout == "spoc" and self.hdu == 1) \
                and self.layout != "tesscut":
            many = (f": a file of more than {MAX_SEPARATE_IMAGES} is not read image by image"
                    if self.n_images > MAX_SEPARATE_IMAGES else "")
            out.append(f"image read from HDU {self.hdu}{self._extname}, the largest of "
                       f"{self.n_images:,} images{many} (choose another with --hdu)")
        if self.quality:
            out.append(f"frame flagged by TESS quality bits {self.quality} "
                       f"({', '.join(describe_quality(self.quality))})")
        return out + self.extra_notes

    @property
    def _extname(self) -> str:
        return f" ({self.extname})" if self.extname else ""

    @property
    def mid_time(self) -> float | None:
        """Mid-exposure time, BTJD days, or None."""
        if self.tstart is None or self.tstop is None:
            return self.tstart
        return 0.5 * (self.tstart + self.tstop)


def refuse_folder(path: Path, name: str) -> None:
    """Raise :class:`FITSReadError` for a folder given as a file (one with no FITS file in it:
    folders are expanded to their FITS files before reading)."""
    if path.is_dir():
        raise FITSReadError(name, NO_FITS_IN_FOLDER)


def _packing(path: Path) -> tuple[str, Callable] | None:
    """(what, opener) of a compressed file (:data:`_COMPRESSED`) by its first bytes; None for
    any other."""
    with path.open("rb") as fh:
        head = fh.read(len(_FITS_MAGIC))
    return next((c for magic, c in _COMPRESSED.items() if head.startswith(magic)), None)


#: While :func:`inflate_once` holds: the files it names ("shared"), and the one of them last
#: inflated ("kept": {key: bytes}).
_KEPT: dict[str, Any] | None = None
_KEPT_LOCK = threading.Lock()


@contextmanager
def inflate_once(paths: Iterable[str | Path]) -> Iterator[None]:
    """Within it, each of ``paths`` that is compressed — a gzipped mosaic whose images are read
    one by one — is inflated once: the last of them inflated is kept in memory (its bytes) and
    read from there while its size and modification time stay the same. Other files, and
    every file outside it, are inflated at each read and not kept. (A 113 MB gzip file of 32
    images of 1024² px: ingested in 73 s, 47 s uncompressed; inflating it for each image was
    the difference.)"""
    global _KEPT
    with _KEPT_LOCK:
        before = _KEPT
        _KEPT = {"shared": {str(Path(p).resolve()) for p in paths}, "kept": {}}
    try:
        yield
    finally:
        with _KEPT_LOCK:
            _KEPT = before


def _kept_key(path: Path) -> tuple | None:
    """The key :func:`inflate_once` keeps ``path``'s bytes under; None when it does not."""
    resolved = str(path.resolve())
    if _KEPT is None or resolved not in _KEPT["shared"]:
        return None
    st = path.stat()
    return resolved, st.st_mtime_ns, st.st_size


def _inflates_too_far(name: str, max_bytes: int) -> FITSReadError:
    return FITSReadError(name, f"inflates to more than the {max_bytes / 1e6:.0f} MB limit; "
                               "refused")


def _read_bytes(path: Path, name: str, max_bytes: int) -> bytes:
    """Read a file, inflating gzip or bzip2 in chunks so that a bomb is refused without filling
    memory (once for several reads, within :func:`inflate_once`)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FITSReadError(name, f"cannot be opened ({exc.strerror or exc})") from None
    if size == 0:
        raise FITSReadError(name, "is empty (0 bytes)")
    if size > max_bytes:
        raise FITSReadError(
            name, f"is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit"
        )
    packed = _packing(path)
    with _KEPT_LOCK:
        key = _kept_key(path) if packed is not None else None
        raw = _KEPT["kept"].get(key) if key is not None else None
    if raw is not None:
        if len(raw) > max_bytes:
            raise _inflates_too_far(name, max_bytes)
    elif packed is not None:
        what, opener = packed
        out = io.BytesIO()
        try:
            with opener(path, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
                    if out.tell() > max_bytes:
                        raise _inflates_too_far(name, max_bytes)
        except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile is an OSError
            raise FITSReadError(name, f"is a damaged {what} file ({exc})") from None
        raw = out.getvalue()
        with _KEPT_LOCK:
            if key is not None and _KEPT is not None:
                _KEPT["kept"] = {key: raw}
    else:
        raw = path.read_bytes()
    if not raw.startswith(_FITS_MAGIC):
        kind = _sniff(raw)
        raise FITSReadError(name, f"is not a FITS file{kind} (it does not start with SIMPLE =)")
    return raw


def _check_dimensions(path: Path, name: str, max_bytes: int, max_pixels: int) -> None:
    """Refuse an image over ``max_pixels`` from its headers alone, before any data is read
    (a plain FITS file; compressed files are checked as they inflate)."""
    try:
        if not 0 < path.stat().st_size <= max_bytes:
            return  # _read_bytes says why
        with path.open("rb") as fh:
            if not fh.read(len(_FITS_MAGIC)).startswith(_FITS_MAGIC):
                return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                _refuse_oversized(hdul, name, max_pixels)
    except FITSReadError:
        raise
    except Exception:
        return  # a damaged file: the full read says what is wrong


def _sniff(raw: bytes) -> str:
    signatures = {
        b"\x89PNG": " but a PNG image",
        b"\xff\xd8\xff": " but a JPEG image",
        b"%PDF": " but a PDF document",
        b"PK\x03\x04": " but a ZIP archive",
        b"GIF8": " but a GIF image",
    }
    for magic, text in signatures.items():
        if raw.startswith(magic):
            return text
    return ""


def _int_card(headers: list[fits.Header], *keys: str) -> int | None:
    for key in keys:
        for hdr in headers:
            value = hdr.get(key)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
    return None


def _float_card(headers: list[fits.Header], *keys: str) -> float | None:
    for key in keys:
        for hdr in headers:
            value = hdr.get(key)
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                if np.isfinite(value):
                    return float(value)
    return None


#: The zero of TESS's times (BTJD = BJD − 2457000, days), the times every file is read in.
BTJD_ZERO = 2457000.0
#: Julian date of MJD 0.
MJD_ZERO = 2400000.5


def btjd_offset(headers: list[fits.Header]) -> float:
    """Days that turn a header's mission times (``TSTART``, a cube's ``TIME``) into BTJD:
    ``BJDREFI + BJDREFF − 2457000`` (Kepler's BKJD: −2167), 0 where the header gives no
    reference (TESS's own)."""
    ref = _float_card(headers, "BJDREFI")
    return 0.0 if ref is None else ref + (_float_card(headers, "BJDREFF") or 0.0) - BTJD_ZERO


def _utc_days(headers: list[fits.Header], mjd_keys: tuple[str, ...],
              date_keys: tuple[str, ...], time_keys: tuple[str, ...] = ()) -> float | None:
    """The first of ``mjd_keys`` (MJD) or of ``date_keys`` (ISO date and time, UTC; a date
    alone with the time of day from one of ``time_keys``) as JD − 2457000, or None."""
    mjd = _float_card(headers, *mjd_keys)
    if mjd is not None:
        return mjd + MJD_ZERO - BTJD_ZERO
    from astropy.time import Time

    for hdr in headers:
        for key in date_keys:
            value = hdr.get(key)
            if not isinstance(value, str) or not value.strip():
                continue
            value = value.strip().rstrip("Z")
            if old := re.fullmatch(r"(\d\d)/(\d\d)/(\d\d)", value):  # DD/MM/YY: 1900–1999
                value = f"19{old[3]}-{old[2]}-{old[1]}"
            if "T" not in value:  # a date alone: its time of day in another card (HST, IRAF)
                clock = next((str(hdr[k]).strip() for k in time_keys
                              if isinstance(hdr.get(k), str) and ":" in hdr[k]), None)
                if clock is None:
                    continue
                value = f"{value}T{clock}"
            try:
                with warnings.catch_warnings():  # ERFA's "dubious year" before 1960's UTC
                    warnings.simplefilter("ignore")
                    return float(Time(value, format="isot", scale="utc").jd - BTJD_ZERO)
            except ValueError:
                continue
    return None


def observation_times(headers: list[fits.Header]) -> tuple[float | None, float | None]:
    """(start, stop) of the exposure in BTJD days, from the first of ``headers`` that says:
    ``TSTART``/``TSTOP`` (TICA: ``STARTTJD``/``ENDTJD``) on the header's BJD reference
    (:func:`btjd_offset`), else ``MJD-OBS``, ``MJD-BEG`` or ``EXPSTART`` (MJD: JWST, HST),
    ``DATE-OBS`` or ``DATE-BEG`` (a date alone, or in the old ``DD/MM/YY`` form of the plate
    scans, with ``TIME-OBS``, ``UT`` or ``UTSTART``), with
    ``MJD-END``, ``EXPEND``, ``DATE-END`` or ``EXPTIME`` (s) — UTC, not barycentric (within
    ±8.3 minutes of BJD), what a frame of another observatory gives. None for what is not
    known."""
    start = _float_card(headers, "TSTART", "STARTTJD")
    if start is not None:
        offset = btjd_offset(headers)
        stop = _float_card(headers, "TSTOP", "ENDTJD")
        return start + offset, None if stop is None else stop + offset
    start = _utc_days(headers, ("MJD-OBS", "MJD-BEG", "EXPSTART"), ("DATE-OBS", "DATE-BEG"),
                      ("TIME-OBS", "UT", "UTSTART"))
    if start is None:
        return None, None
    stop = _utc_days(headers, ("MJD-END", "EXPEND"), ("DATE-END",))
    exposure = _float_card(headers, "EXPTIME")
    if stop is None and exposure is not None and exposure > 0:
        stop = start + exposure / 86400.0
    return start, stop


#: Pixel scales a celestial WCS may have, arcsec per pixel (outside: refused as broken).
PIXEL_SCALE_RANGE = (1e-3, 3600.0)


def _celestial_wcs(header: fits.Header) -> tuple[WCS | None, str | None]:
    """(the header's celestial WCS, None), or (None, why it was refused) for one that is there
    but unusable: singular, non-finite, or with an impossible pixel scale."""
    if "CTYPE1" not in header and "CTYPE2" not in header:
        return None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2, relax=True)
    except Exception as exc:
        return None, f"its WCS cannot be read ({str(exc).splitlines()[0][:120]})"
    if not wcs.has_celestial:
        return None, None
    wcs = wcs.celestial
    m = wcs.pixel_scale_matrix
    if not np.all(np.isfinite(m)) or not np.all(np.isfinite(wcs.wcs.crval)):
        return None, "its WCS has non-finite values"
    det = abs(float(np.linalg.det(m)))
    scale = np.sqrt(det) * 3600.0
    if det == 0 or np.linalg.cond(m) > 1e6:
        return None, "its WCS matrix is singular (CD/PC of rank 1)"
    lo, hi = PIXEL_SCALE_RANGE
    if not lo <= scale <= hi:
        return None, f"its WCS has a pixel scale of {scale:.3g}″, outside {lo:g}–{hi:g}″"
    return wcs, None


def sky_positions(wcs: WCS | None, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (ICRS, degrees) of 0-based pixels (``x``, ``y``, any shape) by ``wcs``,
    whatever its own frame: galactic or ecliptic axes and an old plate's FK4 (B1950)
    equator are converted, not read as RA and Dec. NaN without a WCS or where it fails."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nan = np.full(np.broadcast(x, y).shape, np.nan)
    if wcs is None or nan.size == 0:
        return nan, nan.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            icrs = wcs.pixel_to_world(x, y).icrs
        return np.asarray(icrs.ra.deg, float), np.asarray(icrs.dec.deg, float)
    except Exception:
        return nan, nan.copy()


def _inherited(header: fits.Header, primary: fits.Header) -> fits.Header:
    """An extension's header with the primary header's cards it does not have, when it says
    ``INHERIT = T`` (the FITS convention for keywords shared by every extension: a mosaic's
    WCS may be written once, in the primary header); else the header itself."""
    if header.get("INHERIT") is not True:
        return header
    merged = header.copy()
    for card in primary.cards:
        if card.keyword and card.keyword not in merged and card.keyword not in _STRUCTURE:
            merged.append(card)
    return merged


#: Cards that describe an HDU's own structure, never inherited from the primary header.
_STRUCTURE = frozenset({"SIMPLE", "EXTEND", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3",
                        "PCOUNT", "GCOUNT", "XTENSION", "EXTNAME", "EXTVER", "BSCALE", "BZERO",
                        "BLANK", "COMMENT", "HISTORY", "", "END", "CHECKSUM", "DATASUM"})


def _catalog_from_table(hdu: fits.BinTableHDU) -> np.ndarray | None:
    names = {n.upper(): n for n in hdu.columns.names}
    if "FLXCOL" not in names or "FLXROW" not in names:
        return None
    col = np.asarray(hdu.data[names["FLXCOL"]], dtype=float)
    row = np.asarray(hdu.data[names["FLXROW"]], dtype=float)
    ok = np.isfinite(col) & np.isfinite(row)
    # TICA star tables follow the FITS convention (1-based pixel centres).
    return np.column_stack([col[ok] - 1.0, row[ok] - 1.0])


_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


def _axes(hdu: Any) -> list[int]:
    """Axis lengths (NAXIS1, NAXIS2, …) of an image HDU, from its header alone (a compressed
    image's header is its image's); [] for anything else."""
    if not isinstance(hdu, _IMAGE_HDUS):
        return []
    hdr = hdu.header
    return [int(hdr.get(f"NAXIS{i}", 0) or 0) for i in range(1, int(hdr.get("NAXIS", 0) or 0) + 1)]


def _refuse_oversized(hdul: fits.HDUList, name: str, max_pixels: int) -> None:
    """Raise :class:`FITSReadError` for an image HDU over ``max_pixels``, from headers alone."""
    for each in hdul:
        axes = _axes(each)
        if axes and int(np.prod(axes, dtype=np.int64)) > max_pixels:
            raise FITSReadError(name, f"has a {' x '.join(map(str, axes))} image, over the limit "
                                      f"of {max_pixels:,} pixels")


def _image_shape(hdu: Any) -> tuple[int, int] | None:
    """(rows, columns) of an image HDU holding one 2-D image (extra axes of length 1 allowed)."""
    axes = _axes(hdu)
    if len(axes) < 2 or any(a != 1 for a in axes[2:]):
        return None
    return axes[1], axes[0]


def _planes(hdu: Any) -> int:
    """Planes of an image HDU holding a 3-D cube (a third axis longer than 1, any further axes
    of length 1), from its header; 0 for anything else."""
    axes = _axes(hdu)
    if len(axes) < 3 or axes[2] < 2 or any(a != 1 for a in axes[3:]) or 0 in axes[:2]:
        return 0
    return axes[2]


def _largest(shapes: dict[int, tuple[int, int]]) -> int:
    """The HDU of the largest image of ``shapes`` ({HDU: (rows, columns)}), the first of
    equal ones."""
    return max(shapes, key=lambda i: (shapes[i][0] * shapes[i][1], -i))


def _is_cube(hdu: Any) -> bool:
    return isinstance(hdu, fits.BinTableHDU) and "FLUX" in [c.upper() for c in hdu.columns.names]


def _image_from_hdus(hdul: fits.HDUList, name: str,
                     hdu: int | None = None) -> tuple[np.ndarray, int, str, int, int]:
    """Return (data, hdu index, layout, number of images, planes: 0 unless the image is the
    median of a 3-D image's planes) by the rule in the module docstring."""
    shapes = {i: _image_shape(h) for i, h in enumerate(hdul)}
    images = [i for i, sh in shapes.items() if sh and sh[0] * sh[1] > 0]
    cubes = [i for i, h in enumerate(hdul) if _is_cube(h)]
    planes = {i: n for i, h in enumerate(hdul) if (n := _planes(h))}
    n_images = len(images) + len(cubes) + len(planes)
    if hdu is not None:
        if not 0 <= hdu < len(hdul):
            raise FITSReadError(name, f"has no HDU {hdu} (it has {len(hdul)}, numbered from 0)")
        if hdu not in images and hdu not in cubes and hdu not in planes:
            raise FITSReadError(name, f"HDU {hdu} holds no 2-D image")
        chosen = hdu
    elif cubes:
        chosen = cubes[0]
    elif images:
        chosen = _largest({i: shapes[i] for i in images})
    elif planes:
        chosen = min(planes)
    else:
        dims = sorted({len(_axes(h)) for h in hdul} - {0})
        if dims:
            raise FITSReadError(name, f"holds only {', '.join(f'{d}-D' for d in dims)} data; "
                                      "a 2-D image is needed")
        raise FITSReadError(name, "has no image HDU (no HDU holds 2-D pixel data)")
    if chosen in cubes:
        flux = np.asarray(hdul[chosen].data["FLUX"], dtype=np.float32)
        if flux.ndim != 3 or flux.shape[0] == 0:
            raise FITSReadError(name, f"HDU {chosen} has a FLUX column that is not a cube of "
                                      "2-D images")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(flux, axis=0), chosen, "tesscut", n_images, 0
    data = hdul[chosen].data
    if data is None:
        raise FITSReadError(name, f"HDU {chosen} declares an image but holds no data")
    if chosen in planes:
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise FITSReadError(name, f"has non-numeric pixel data ({data.dtype})")
        cube = np.asarray(data, dtype=np.float32).reshape(-1, *data.shape[-2:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(cube, axis=0), chosen, "plain", n_images, len(cube)
    data = np.asarray(data).reshape(data.shape[-2:])
    layout = "spoc" if chosen == 1 and isinstance(hdul[0], fits.PrimaryHDU) else "plain"
    return data, chosen, layout, n_images, 0


#: Words of an ``EXTNAME`` that name what describes an image rather than an image of the sky:
#: its errors, variance, weights, data quality, masks, exposure or context maps.
ANCILLARY_WORDS = frozenset({
    "ERR", "ERROR", "ERRORS", "UNC", "UNCERT", "SIGMA", "NOISE", "RMS", "VAR", "VARIANCE",
    "IVAR", "INVVAR", "WHT", "WEIGHT", "WEIGHTS", "DQ", "QUALITY", "FLAG", "FLAGS", "MASK",
    "BPM", "EXP", "EXPMAP", "EXPTIME", "CTX", "CON", "AREA", "BKG", "BACKGROUND",
})


def _ancillary(extname: str) -> bool:
    words = {w for w in re.split(r"[^A-Z0-9]+", extname.upper()) if w}
    return bool(words & ANCILLARY_WORDS) or extname.upper().startswith("VAR_")


#: The most images of one file read one by one (:func:`separate_images`): a mosaic camera
#: writes up to ~150 (Kepler's FFIs 84 channels); a file of more — thousands of postage
#: stamps — would be read once per image (3,000 stamps of 20² px: 2 s an image), so its
#: largest image alone is read, and the others with ``--hdu``.
MAX_SEPARATE_IMAGES = 128


def separate_images(path: str | Path, max_bytes: int = 512_000_000) -> list[int]:
    """HDUs of a file that holds several images of the sky, each to be read as a frame of its
    own: a mosaic's CCDs (a Kepler FFI's 84 channels, a camera's chips), the bands of one
    field. [] for a file of one image.

    The images are those of the shape and kind (integer or floating point) of the one the
    reader's rule picks, without those whose ``EXTNAME`` names errors, weights, data quality
    and the like (:data:`ANCILLARY_WORDS`); when some are named ``SCI``, those. A TESS file
    (one CCD, its uncertainties beside it), a TESScut cube and a file of more than
    :data:`MAX_SEPARATE_IMAGES` are one image. Read from the headers alone (a compressed file
    inflated within ``max_bytes``); [] for a file that cannot be read (its read says why).
    """
    path = Path(path)
    if parse_name(path.name) is not None:
        return []  # a TESS file by its name: not opened twice
    try:
        # A compressed file inflated within the limit (astropy would inflate all of a bomb).
        source = (io.BytesIO(_read_bytes(path, path.name, max_bytes)) if _packing(path)
                  else path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(source, memmap=True, lazy_load_hdus=True) as hdul:
                found: dict[int, tuple[tuple[int, int], bool, str]] = {}
                declared = 0
                for i, each in enumerate(hdul):
                    if _is_cube(each):
                        return []
                    axes = _axes(each)
                    bytes_per = abs(int(each.header.get("BITPIX", 8) or 8)) // 8
                    declared += int(np.prod(axes, dtype=np.int64)) * bytes_per if axes else 0
                    if declared > max_bytes:
                        return []  # too large to read: the read says so
                    if (shape := _image_shape(each)) and min(shape) >= MIN_SIDE:
                        found[i] = (shape, int(each.header.get("BITPIX", 0)) < 0,
                                    str(each.header.get("EXTNAME", "") if i else "").strip())
                primary = hdul[0].header
    except Exception:
        return []
    if len(found) < 2 or str(primary.get("TELESCOP", "")).strip().upper() == "TESS":
        return []
    first = _largest({i: f[0] for i, f in found.items()})
    alike = [i for i, f in found.items() if f[:2] == found[first][:2]]
    science = [i for i in alike if found[i][2].upper() == "SCI"]
    keep = science or [i for i in alike if i == first or not _ancillary(found[i][2])]
    return keep if 1 < len(keep) <= MAX_SEPARATE_IMAGES else []


def read_fits(
    path: str | Path,
    *,
    name: str | None = None,
    max_bytes: int = 512_000_000,
    max_pixels: int = 64_000_000,
    hdu: int | None = None,
    any_cube: bool = False,
) -> FitsImage:
    """Read the science image and its metadata from a FITS file.

    Parameters
    ----------
    path : str or Path
        File to read (``.fits``, ``.fit``, ``.fts``, ``.fz``, ``.fits.gz``, ``.fits.bz2``).
    name : str, optional
        Display name for messages; defaults to the file name.
    max_bytes : int
        Largest accepted file size, bytes, after gzip inflation.
    max_pixels : int
        Largest accepted image, pixels.
    hdu : int, optional
        Read this HDU (0-based) instead of choosing by the rule above.
    any_cube : bool
        Read a TESScut cube however small its frames (its median image may then be too small
        to cut, but its frames are a stack to search in time); other images still need
        :data:`MIN_SIDE` pixels a side.

    Returns
    -------
    FitsImage

    Raises
    ------
    FITSReadError
        For anything that is not a usable 2-D image, with the reason.
    """
    path = Path(path)
    name = name or path.name
    refuse_folder(path, name)
    _check_dimensions(path, name, max_bytes, max_pixels)
    raw = _read_bytes(path, name, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                return _parse(hdul, name, max_pixels, hdu, any_cube)
    except FITSReadError:
        raise
    except MemoryError:
        raise FITSReadError(name, "is too large to load into memory") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise FITSReadError(name, f"is a damaged or truncated FITS file ({reason})") from None


def _parse(hdul: fits.HDUList, name: str, max_pixels: int, hdu: int | None = None,
           any_cube: bool = False) -> FitsImage:
    if len(hdul) == 0:
        raise FITSReadError(name, "has no HDUs")
    _refuse_oversized(hdul, name, max_pixels)
    data, index, layout, n_images, n_planes = _image_from_hdus(hdul, name, hdu)
    primary = hdul[0].header
    header = hdul[index].header
    headers = [header, primary]
    named = parse_name(name)
    tess = named is not None or any(
        str(h.get("TELESCOP", "")).strip().upper() == "TESS" for h in headers)
    if layout == "plain" and index == 0 and len(hdul) > 1 and isinstance(
        hdul[1], fits.BinTableHDU
    ):
        catalog = _catalog_from_table(hdul[1])
        if catalog is not None:
            layout = "tica"
    else:
        catalog = None
    if layout == "spoc" and not tess:
        layout = "plain"

    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise FITSReadError(name, f"has non-numeric pixel data ({data.dtype})")
    image = np.asarray(data, dtype=np.float32)
    # An integer image's blank pixels (its BLANK card, scaled as its pixels are): astropy
    # makes them NaN only where it turns the image into floats, not in an unsigned one.
    blank = _scaled_blank(header) if data.dtype.kind in "iu" else None
    blanked = image == blank if blank is not None else None
    if blanked is not None and blanked.any() and not blanked.all():
        image[blanked] = np.nan
    else:
        blanked = None
    padding = zero_padding(image) if data.dtype.kind == "f" else None
    if padding is not None and padding.all():
        padding = None  # not padding: a constant image, refused below
    if padding is not None:
        image[padding] = np.nan
    ny, nx = image.shape
    if (ny < MIN_SIDE or nx < MIN_SIDE) and not (any_cube and layout == "tesscut"):
        # A TESScut cube that small is still a stack of frames to search in time.
        hint = (" to cut (a TESScut cube: its frames can still be searched for events, "
                "anomaly-reaper events FILE)" if layout == "tesscut" else "")
        raise FITSReadError(
            name, f"is a {ny} x {nx} image, smaller than {MIN_SIDE} x {MIN_SIDE} pixels{hint}"
        )
    finite = np.isfinite(image)
    if not finite.any():
        raise FITSReadError(name, "has no finite pixels (all NaN or infinite)")
    values = image[finite]
    if values.min() == values.max():
        raise FITSReadError(name, f"is a constant image (every pixel is {values.min():g})")

    valid = science_region(header, image.shape) if layout in ("spoc", "tica") else None
    valid = _finite_box(finite, valid)
    wcs, wcs_problem = _celestial_wcs(_inherited(header, primary) if index else header)
    tstart, tstop = observation_times(headers)
    notes = []
    if n_planes:
        notes.append(f"HDU {index} is a cube of {n_planes} planes: the image read is their "
                     "per-pixel median (a stack's frames are single-frame files or a TESScut "
                     "cube)")
    if wcs_problem:
        notes.append(f"WCS ignored: {wcs_problem}; no RA/Dec for its cutouts")
    if padding is not None:
        notes.append(f"{int(padding.sum()):,} pixels of exact zeros at the frame's edge read as "
                     "padding outside the exposed area (no data)")
    if blanked is not None:
        notes.append(f"{int(blanked.sum()):,} pixels marked blank (BLANK) read as missing")
    cards = {}
    for key in KEY_CARDS:
        for hdr in headers:
            if key in hdr:
                cards[key] = str(hdr[key])
                break
    return FitsImage(
        name=name,
        data=image,
        layout=layout,
        sector=_first(_int_card(headers, "SECTOR"), named and named.sector),
        camera=_first(_int_card(headers, "CAMERA", "CAMNUM"), named and named.camera),
        ccd=_first(_int_card(headers, "CCD", "CCDNUM"), named and named.ccd),
        tstart=tstart,
        tstop=tstop,
        date_obs=str(header.get("DATE-OBS", primary.get("DATE-OBS", ""))) or None,
        wcs=wcs,
        catalog=catalog,
        valid=valid,
        header_cards=cards,
        hdu=index,
        n_images=n_images,
        chosen=hdu is not None,
        extname=str(header.get("EXTNAME", "") if index else "").strip()[:68],
        quality=_int_card(headers, "DQUALITY") or 0,
        extra_notes=notes,
    )


def _scaled_blank(header: fits.Header) -> float | None:
    """An integer image's blank value as its pixels read: ``BLANK`` × ``BSCALE`` + ``BZERO``;
    None without a ``BLANK`` card."""
    raw = header.get("BLANK")
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    scale, zero = header.get("BSCALE", 1), header.get("BZERO", 0)
    if not isinstance(scale, int | float) or not isinstance(zero, int | float):
        return None
    return float(raw * scale + zero)


def zero_padding(image: np.ndarray) -> np.ndarray | None:
    """Pixels of ``image`` (shape (ny, nx)) that are padding: exact zeros in blocks solid over
    3 × 3 that touch the frame's edge, :data:`PADDING_MIN_PX` pixels or more each. Bool mask
    of the same shape, or None when there are none."""
    from scipy import ndimage

    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if not (edge == 0).any():
        return None
    solid = ndimage.binary_opening(image == 0, np.ones((3, 3), bool))
    labels, n = ndimage.label(solid)
    if n == 0:
        return None
    size = np.bincount(labels.ravel(), minlength=n + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.zeros(n + 1, bool)
    keep[border] = True
    keep &= size >= PADDING_MIN_PX
    keep[0] = False
    return keep[labels] if keep.any() else None


def _finite_box(finite: np.ndarray, region: tuple[slice, slice] | None
                ) -> tuple[slice, slice] | None:
    """``region`` (or the whole frame) shrunk to the rows and columns holding finite pixels, so
    that NaN borders (calibrated FFIs have them) count as the frame's edge."""
    from .cutouts import region_bounds

    r0, r1, c0, c1 = region_bounds(finite.shape, region)
    rows = np.flatnonzero(finite[r0:r1, c0:c1].any(axis=1))
    cols = np.flatnonzero(finite[r0:r1, c0:c1].any(axis=0))
    box = (slice(r0 + rows[0], r0 + rows[-1] + 1), slice(c0 + cols[0], c0 + cols[-1] + 1))
    full = (box[0].start, box[0].stop, box[1].start, box[1].stop) == (0, finite.shape[0], 0,
                                                                      finite.shape[1])
    return None if full else box


def _first(*values: int | None) -> int | None:
    """The first value that is not None (or falsy)."""
    return next((v for v in values if v), None)


@dataclass
class TessCutCube:
    """A TESScut cube read along its time axis.

    Attributes
    ----------
    name : str
    time : ndarray, shape (n,)
        Mid-cadence times, BTJD (BJD − 2457000, days).
    cadenceno : ndarray of int, shape (n,)
    flux, flux_err, flux_bkg : ndarray, shape (n, ny, nx)
        Calibrated flux, its error and the subtracted background, e⁻/s.
    quality : ndarray of int, shape (n,)
        TESS quality bits of each cadence (see :mod:`.tess`).
    sector, camera, ccd : int or None
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the cutout (from its APERTURE HDU), SIP included.
    """

    name: str
    time: np.ndarray
    cadenceno: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    flux_bkg: np.ndarray
    quality: np.ndarray
    sector: int | None = None
    camera: int | None = None
    ccd: int | None = None
    wcs: WCS | None = None

    @property
    def cadence_days(self) -> float:
        """Median interval between cadences, days."""
        return cadence_days(self.time)

    def gaps(self, factor: float = 5.0) -> list[tuple[float, float]]:
        """Intervals (start, end), BTJD, where no cadence falls for more than ``factor``
        cadences (a downlink, a safe mode)."""
        return time_gaps(self.time, factor)


def read_tesscut(path: str | Path, *, name: str | None = None,
                 max_bytes: int = 512_000_000) -> TessCutCube:
    """Read a TESScut cube (``PIXELS`` table with TIME, FLUX, QUALITY…) along its time axis.

    Raises :class:`FITSReadError` with one sentence for anything else.
    """
    path = Path(path)
    name = name or path.name
    refuse_folder(path, name)
    raw = _read_bytes(path, name, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                cube = next((h for h in hdul if _is_cube(h)), None)
                if cube is None:
                    raise FITSReadError(name, "is not a TESScut cube (no table with a FLUX "
                                              "column of images)")
                cols = {c.upper(): c for c in cube.columns.names}
                for needed in ("TIME", "QUALITY"):
                    if needed not in cols:
                        raise FITSReadError(name, f"is a cube without a {needed} column")

                def column(key: str, dtype: type) -> np.ndarray | None:
                    return (np.asarray(cube.data[cols[key]], dtype=dtype) if key in cols
                            else None)

                flux = column("FLUX", np.float32)
                if flux is None or flux.ndim != 3:
                    raise FITSReadError(name, "has a FLUX column that is not a cube of images")
                nan = np.full_like(flux, np.nan)
                headers = [h.header for h in hdul]
                named = parse_name(name)
                aperture = next((h for h in hdul if isinstance(h, fits.ImageHDU)), None)
                return TessCutCube(
                    name=name, time=column("TIME", np.float64) + btjd_offset(
                        [cube.header, *headers]),
                    cadenceno=(column("CADENCENO", np.int64) if "CADENCENO" in cols
                               else np.arange(len(flux))),
                    flux=flux,
                    flux_err=column("FLUX_ERR", np.float32) if "FLUX_ERR" in cols else nan,
                    flux_bkg=column("FLUX_BKG", np.float32) if "FLUX_BKG" in cols else nan,
                    quality=column("QUALITY", np.int64),
                    sector=_first(_int_card(headers, "SECTOR"), named and named.sector),
                    camera=_first(_int_card(headers, "CAMERA"), named and named.camera),
                    ccd=_first(_int_card(headers, "CCD"), named and named.ccd),
                    wcs=_celestial_wcs(aperture.header)[0] if aperture is not None else None,
                )
    except FITSReadError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise FITSReadError(name, f"is a damaged or truncated FITS file ({reason})") from None
