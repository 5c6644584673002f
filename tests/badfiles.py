"""A zoo of bad inputs, each with the words its error message must contain."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image

#: Settings used with the zoo: small limits so "too large" cases stay small on disk.
MAX_FILE_MB = 20.0
MAX_PIXELS = 4_000_000


def _fits_bytes(hdus) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def make_zoo(folder: Path, good: Path) -> dict[str, str]:
    """Write the bad files into ``folder``; returns {file name: expected words in the error}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good_bytes = good.read_bytes()
    zoo: dict[str, tuple[bytes, str]] = {}
    zoo["empty.fits"] = (b"", "is empty")
    zoo["truncated.fits"] = (good_bytes[: len(good_bytes) // 3], "truncated")
    header = bytearray(good_bytes)
    header[:2880] = (b"SIMPLE  =                    T" + b"GARBAGE!" * 356)[:2880]
    zoo["corrupt_header.fits"] = (bytes(header), "damaged")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(png, "PNG")
    zoo["holiday_photo.fits"] = (png.getvalue(), "PNG image")
    zoo["no_image_hdu.fits"] = (_fits_bytes([fits.PrimaryHDU()]), "no image HDU")
    zoo["table_only.fits"] = (_fits_bytes([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="RA", format="D", array=np.arange(5.0))])]), "no image HDU")
    zoo["one_d.fits"] = (_fits_bytes([fits.PrimaryHDU(rng.normal(size=500))]), "1-D")
    zoo["four_d.fits"] = (_fits_bytes([fits.PrimaryHDU(rng.normal(size=(2, 2, 32, 32)))]),
                          "4-D")
    zoo["all_nan.fits"] = (_fits_bytes([fits.PrimaryHDU(np.full((64, 64), np.nan,
                                                                np.float32))]), "no finite")
    zoo["all_zero.fits"] = (_fits_bytes([fits.PrimaryHDU(np.zeros((64, 64), np.float32))]),
                            "constant")
    zoo["tiny_3x3.fits"] = (_fits_bytes([fits.PrimaryHDU(rng.normal(size=(3, 3)))]),
                            "smaller than")
    big = fits.PrimaryHDU(np.zeros((2100, 2100), np.uint8))
    big.data[0, 0] = 1
    zoo["too_many_pixels.fits"] = (_fits_bytes([big]), "over the limit of")
    zoo["too_big_on_disk.fits"] = (good_bytes + b"\0" * int(MAX_FILE_MB * 1e6), "MB limit")
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as gz:
        gz.write(fits.PrimaryHDU(np.zeros((8, 8), np.float32)).header.tostring().encode())
        block = b"\0" * (1 << 20)
        for _ in range(int(MAX_FILE_MB) * 3):
            gz.write(block)
    zoo["bomb.fits.gz"] = (bomb.getvalue(), "inflates to more than")
    out = {}
    for name, (data, words) in zoo.items():
        (folder / name).write_bytes(data)
        out[name] = words
    return out
