"""FITS reading: open a file safely, find its image, read TESS metadata, WCS and star table.

Supported layouts
-----------------
``spoc``     TESS SPOC FFI (``*-s_ffic.fits``): image in HDU 1, SECTOR/CAMERA/CCD in HDU 0.
``tica``     TESS TICA FFI: image in HDU 0, star table with FLXCOL/FLXROW in HDU 1.
``tesscut``  TESScut cube: a BINTABLE with a 3-D FLUX column; the per-pixel median is used.
``plain``    any other 2-D image, including ``.fits.gz`` and tile-compressed (``.fz``) images.

Everything else raises :class:`~reaper_core.errors.FITSReadError` with one sentence.
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from .errors import FITSReadError

#: Smallest accepted image side, pixels.
MIN_SIDE = 16
#: Header cards shown to a person (gallery detail view).
KEY_CARDS = (
    "TELESCOP", "INSTRUME", "OBJECT", "SECTOR", "CAMERA", "CCD", "CAMNUM", "CCDNUM",
    "DATE-OBS", "DATE-END", "TSTART", "TSTOP", "EXPOSURE", "BUNIT", "CTYPE1", "CTYPE2",
    "CRVAL1", "CRVAL2",
)
#: SPOC FFI science region inside the 2078 x 2136 array (rows, columns), 0-based, end-exclusive.
SPOC_SHAPE = (2078, 2136)
SPOC_SCIENCE = (slice(0, 2048), slice(44, 2092))

_GZIP_MAGIC = b"\x1f\x8b"
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

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    @property
    def mid_time(self) -> float | None:
        """Mid-exposure time, BTJD days, or None."""
        if self.tstart is None or self.tstop is None:
            return self.tstart
        return 0.5 * (self.tstart + self.tstop)


def _read_bytes(path: Path, name: str, max_bytes: int) -> bytes:
    """Read a file, inflating gzip in chunks so that a bomb is refused without filling memory."""
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
    with path.open("rb") as fh:
        head = fh.read(len(_FITS_MAGIC))
    if head.startswith(_GZIP_MAGIC):
        out = io.BytesIO()
        try:
            with gzip.open(path, "rb") as gz:
                while chunk := gz.read(1 << 20):
                    out.write(chunk)
                    if out.tell() > max_bytes:
                        raise FITSReadError(
                            name,
                            f"inflates to more than the {max_bytes / 1e6:.0f} MB limit; refused",
                        )
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise FITSReadError(name, f"is a damaged gzip file ({exc})") from None
        raw = out.getvalue()
    else:
        raw = path.read_bytes()
    if not raw.startswith(_FITS_MAGIC):
        kind = _sniff(raw)
        raise FITSReadError(name, f"is not a FITS file{kind} (it does not start with SIMPLE =)")
    return raw


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


def _celestial_wcs(header: fits.Header) -> WCS | None:
    if "CTYPE1" not in header and "CTYPE2" not in header:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2, relax=True)
    except Exception:
        return None
    if not wcs.has_celestial:
        return None
    return wcs.celestial


def _catalog_from_table(hdu: fits.BinTableHDU) -> np.ndarray | None:
    names = {n.upper(): n for n in hdu.columns.names}
    if "FLXCOL" not in names or "FLXROW" not in names:
        return None
    col = np.asarray(hdu.data[names["FLXCOL"]], dtype=float)
    row = np.asarray(hdu.data[names["FLXROW"]], dtype=float)
    ok = np.isfinite(col) & np.isfinite(row)
    # TICA star tables follow the FITS convention (1-based pixel centres).
    return np.column_stack([col[ok] - 1.0, row[ok] - 1.0])


def _image_from_hdus(hdul: fits.HDUList, name: str) -> tuple[np.ndarray, int, str]:
    """Return (data, hdu index, layout) for the first usable image in ``hdul``."""
    saw_dims: list[int] = []
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            naxis = int(hdu.header.get("NAXIS", 0))
            if naxis == 0:
                continue
            saw_dims.append(naxis)
            if naxis == 2 or (naxis > 2 and all(
                int(hdu.header.get(f"NAXIS{i}", 1)) == 1 for i in range(3, naxis + 1)
            )):
                data = hdu.data
                if data is None:
                    continue
                data = np.asarray(data).reshape(data.shape[-2:])
                layout = "spoc" if index == 1 and isinstance(hdul[0], fits.PrimaryHDU) else (
                    "plain")
                return data, index, layout
        elif isinstance(hdu, fits.BinTableHDU) and "FLUX" in [
            c.upper() for c in hdu.columns.names
        ]:
            flux = np.asarray(hdu.data["FLUX"], dtype=np.float32)
            if flux.ndim == 3 and flux.shape[0] > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    return np.nanmedian(flux, axis=0), index, "tesscut"
    if saw_dims:
        dims = ", ".join(f"{d}-D" for d in sorted(set(saw_dims)))
        raise FITSReadError(name, f"holds only {dims} data; a 2-D image is needed")
    raise FITSReadError(name, "has no image HDU (no HDU holds 2-D pixel data)")


def read_fits(
    path: str | Path,
    *,
    name: str | None = None,
    max_bytes: int = 512_000_000,
    max_pixels: int = 64_000_000,
) -> FitsImage:
    """Read the science image and its metadata from a FITS file.

    Parameters
    ----------
    path : str or Path
        File to read (``.fits``, ``.fit``, ``.fts``, ``.fz``, ``.fits.gz``).
    name : str, optional
        Display name for messages; defaults to the file name.
    max_bytes : int
        Largest accepted file size, bytes, after gzip inflation.
    max_pixels : int
        Largest accepted image, pixels.

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
    raw = _read_bytes(path, name, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                return _parse(hdul, name, max_pixels)
    except FITSReadError:
        raise
    except MemoryError:
        raise FITSReadError(name, "is too large to load into memory") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise FITSReadError(name, f"is a damaged or truncated FITS file ({reason})") from None


def _parse(hdul: fits.HDUList, name: str, max_pixels: int) -> FitsImage:
    if len(hdul) == 0:
        raise FITSReadError(name, "has no HDUs")
    for hdu in hdul:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            hdr = hdu.header
            naxes = [int(hdr.get(f"NAXIS{i}", 0)) for i in range(1, int(hdr.get("NAXIS", 0)) + 1)]
            if naxes and int(np.prod(naxes, dtype=np.int64)) > max_pixels:
                raise FITSReadError(
                    name,
                    f"has a {' x '.join(map(str, naxes))} image, over the limit of "
                    f"{max_pixels:,} pixels",
                )
    data, index, layout = _image_from_hdus(hdul, name)
    primary = hdul[0].header
    header = hdul[index].header
    headers = [header, primary]
    if layout == "plain" and index == 0 and len(hdul) > 1 and isinstance(
        hdul[1], fits.BinTableHDU
    ):
        catalog = _catalog_from_table(hdul[1])
        if catalog is not None:
            layout = "tica"
    else:
        catalog = None
    if layout == "spoc" and "SECTOR" not in primary and "CAMERA" not in primary:
        layout = "plain"

    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise FITSReadError(name, f"has non-numeric pixel data ({data.dtype})")
    image = np.asarray(data, dtype=np.float32)
    ny, nx = image.shape
    if ny < MIN_SIDE or nx < MIN_SIDE:
        raise FITSReadError(
            name, f"is a {ny} x {nx} image, smaller than {MIN_SIDE} x {MIN_SIDE} pixels"
        )
    finite = np.isfinite(image)
    if not finite.any():
        raise FITSReadError(name, "has no finite pixels (all NaN or infinite)")
    values = image[finite]
    if values.min() == values.max():
        raise FITSReadError(name, f"is a constant image (every pixel is {values.min():g})")

    valid = SPOC_SCIENCE if layout in ("spoc", "tica") and image.shape == SPOC_SHAPE else None
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
        sector=_int_card(headers, "SECTOR"),
        camera=_int_card(headers, "CAMERA", "CAMNUM"),
        ccd=_int_card(headers, "CCD", "CCDNUM"),
        tstart=_float_card(headers, "TSTART", "STARTTJD"),
        tstop=_float_card(headers, "TSTOP", "ENDTJD"),
        date_obs=str(header.get("DATE-OBS", primary.get("DATE-OBS", ""))) or None,
        wcs=_celestial_wcs(header),
        catalog=catalog,
        valid=valid,
        header_cards=cards,
    )
