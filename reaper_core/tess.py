"""TESS conventions: file names, the science region of a CCD image, and quality flags.

SPOC and TICA full-frame images hold more than sky: a SPOC ``cal`` image is 2078 rows × 2136
columns, of which columns 0–43 and 2092–2135 are serial-register (collateral) columns and rows
2048–2077 buffer, smear and virtual rows. The header says where science starts and ends
(``SCCSA``/``SCCED``: first and last science column, ``SCIROWS``/``SCIROWE``: first and last
science row, all 1-based), also for a frame trimmed by its publisher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: SPOC FFI array shape (rows, columns) and its science region, 0-based, end-exclusive.
SPOC_SHAPE = (2078, 2136)
SPOC_SCIENCE = (slice(0, 2048), slice(44, 2092))

#: TESS quality bits (``DQUALITY`` of an FFI, ``QUALITY`` of a TESScut cadence), as named by the
#: mission's archive manual and lightkurve.
QUALITY_FLAGS = {
    1: "attitude tweak",
    2: "safe mode",
    4: "coarse point",
    8: "Earth point",
    16: "Argabrightening",
    32: "reaction wheel desaturation (momentum dump)",
    64: "aperture cosmic",
    128: "manual exclude",
    256: "discontinuity",
    512: "impulsive outlier",
    1024: "collateral cosmic",
    2048: "straylight",
    4096: "scattered light",
    8192: "planet search exclude",
    16384: "bad calibration exclude",
    32768: "insufficient targets for error correction",
}
#: Bits that make a frame unfit for science (pointing lost, excluded, badly calibrated).
SEVERE_QUALITY = 1 | 2 | 4 | 8 | 32 | 128 | 16384
#: The bit of a momentum dump (the pointing jumps there).
MOMENTUM_DUMP = 32


def good_quality(quality: Any) -> np.ndarray:
    """Whether each cadence is fit for science: none of :data:`SEVERE_QUALITY`'s bits set in
    its TESS quality flags ``quality`` (integers, shape (n,)); bool, shape (n,)."""
    return (np.asarray(quality).astype(np.int64) & SEVERE_QUALITY) == 0


def describe_quality(bits: int) -> list[str]:
    """Names of the quality flags set in ``bits`` (unknown bits as ``bit N``)."""
    bits = int(bits)
    names = [name for bit, name in QUALITY_FLAGS.items() if bits & bit]
    unknown = bits & ~sum(QUALITY_FLAGS)
    names += [f"bit {b}" for b in range(32) if unknown & (1 << b)]
    return names


@dataclass(frozen=True)
class TessName:
    """What a TESS file name says: its product and where it looked."""

    product: str  # "spoc", "tica" or "tesscut"
    sector: int
    camera: int
    ccd: int


# tess2018206192942-s0001-1-4-0120-s_ffic.fits (SPOC FFI, calibrated or raw)
_SPOC = re.compile(r"tess\d{13}-s(\d{4})-([1-4])-([1-4])-\d{4}-[a-z]_ffi[cr]", re.I)
# hlsp_tica_tess_ffi_s0030-o1-00123456-cam1-ccd1_tess_v01_img.fits (TICA FFI)
_TICA = re.compile(r"tica.*?s(\d{4})-o\d+-\d+-cam([1-4])-ccd([1-4])", re.I)
# tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits (TESScut cube), and names like it
_TESSCUT = re.compile(r"(?:^|[^a-z0-9])s(\d{4})-([1-4])-([1-4])(?=[_.-])", re.I)


def parse_name(name: str) -> TessName | None:
    """Sector, camera and CCD from a TESS file name (SPOC FFI, TICA FFI, TESScut), or None."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    for product, pattern in (("spoc", _SPOC), ("tica", _TICA), ("tesscut", _TESSCUT)):
        m = pattern.search(base)
        if m:
            sector, camera, ccd = (int(g) for g in m.groups())
            if sector >= 1:
                return TessName(product, sector, camera, ccd)
    return None


def _card(header: Any, key: str) -> int | None:
    value = header.get(key) if header is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


def science_region(header: Any, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The science pixels of a TESS image, 0-based (rows, columns), from its header.

    Uses ``SCIROWS``/``SCIROWE`` and ``SCCSA``/``SCCED`` (1-based, inclusive) clipped to the
    array, so a trimmed frame (e.g. the CCD's first 128 rows) keeps its collateral columns out
    too. None when the header does not say and the array is not a full SPOC frame.
    """
    ny, nx = shape
    r0, r1 = _card(header, "SCIROWS"), _card(header, "SCIROWE")
    c0, c1 = _card(header, "SCCSA"), _card(header, "SCCED")
    if None in (r0, r1, c0, c1):
        return SPOC_SCIENCE if tuple(shape) == SPOC_SHAPE else None
    rows = slice(max(r0 - 1, 0), min(r1, ny))
    cols = slice(max(c0 - 1, 0), min(c1, nx))
    if rows.stop - rows.start < 1 or cols.stop - cols.start < 1:
        return None
    if (rows.start, rows.stop, cols.start, cols.stop) == (0, ny, 0, nx):
        return None  # every pixel is science
    return rows, cols


def cadence_days(times: np.ndarray) -> float:
    """Median interval between successive times (days; NaN for fewer than two)."""
    t = np.asarray(times, float)
    t = t[np.isfinite(t)]
    return float(np.median(np.diff(t))) if len(t) > 1 else float("nan")


def time_gaps(times: np.ndarray, factor: float = 5.0) -> list[tuple[float, float]]:
    """Intervals (start, end) of sorted ``times`` (days) where nothing was taken for more than
    ``factor`` cadences (a downlink, a safe mode)."""
    t = np.asarray(times, float)
    t = t[np.isfinite(t)]
    if len(t) < 2:
        return []
    big = np.flatnonzero(np.diff(t) > factor * cadence_days(t))
    return [(float(t[i]), float(t[i + 1])) for i in big]
