"""Files an astronomer takes to other tools: one cutout as FITS with its WCS, and DS9 region
files of a file's flagged cutouts (astropy ``Cutout2D`` and the ``regions`` package)."""

from __future__ import annotations

import io

import numpy as np

from .fits_reader import FitsImage


def cutout_fits(patch: np.ndarray, x: float, y: float, image: FitsImage | None = None,
                cards: dict[str, object] | None = None) -> bytes:
    """A cutout as a FITS file (bytes), centred on pixel (``x``, ``y``), 0-based.

    With the original ``image``, the pixels are cut again from it by :class:`Cutout2D`
    (centred, NaN beyond the frame's edge) and the header carries its WCS (SIP included),
    shifted to the cutout; without it, the stored ``patch`` (shape (s, s)) is written and the
    header says that it has no WCS. ``cards``: more header keywords (name: value), e.g. the
    cutout's id and score.
    """
    from astropy.io import fits

    size = patch.shape[0]
    header = fits.Header()
    if image is not None:
        from astropy.nddata import Cutout2D

        cut = Cutout2D(image.data, (x, y), (size, size), wcs=image.wcs, mode="partial",
                       fill_value=np.nan)
        data = cut.data.astype(np.float32)
        if cut.wcs is not None:
            header.update(cut.wcs.to_header(relax=True))
        header["XORIGIN"] = (int(cut.origin_original[0]), "0-based column of pixel 0 in file")
        header["YORIGIN"] = (int(cut.origin_original[1]), "0-based row of pixel 0 in file")
    else:
        data = np.asarray(patch, np.float32)
        header["COMMENT"] = "The original file was not available: pixels as stored, no WCS."
    header["XCENTER"] = (float(x), "0-based column of the cutout centre in the file")
    header["YCENTER"] = (float(y), "0-based row of the cutout centre in the file")
    for key, value in (cards or {}).items():
        header[key[:8].upper()] = value
    buf = io.BytesIO()
    fits.PrimaryHDU(data, header).writeto(buf)
    return buf.getvalue()


def region_file_name(file_name: str) -> str:
    """The name of the DS9 region file of a stored file's anomalies (``x.fits`` →
    ``x_anomalies.reg``; one image of several, ``x.fits[2]`` → ``x_hdu2_anomalies.reg``)."""
    import re
    from pathlib import Path

    hdu = re.search(r"\[(\d+)\]$", file_name)
    return (f"{Path(file_name).name.split('.')[0]}{f'_hdu{hdu[1]}' if hdu else ''}"
            "_anomalies.reg")


def cutout_file_name(cutout_id: int, suffix: str) -> str:
    """The name of a downloaded cutout (``suffix``: "fits" or "png")."""
    return f"cutout_{int(cutout_id)}.{suffix}"


def ds9_regions(x: np.ndarray, y: np.ndarray, size: int, texts: list[str]) -> str:
    """A DS9 region file (text) with a box of ``size`` pixels around each position.

    Parameters
    ----------
    x, y : arrays of shape (n,), 0-based pixel coordinates (column, row) in the image array;
        the file uses DS9's 1-based image coordinates, so the boxes fall on the same pixels.
    size : box side, pixels.
    texts : n labels shown beside the boxes (e.g. "#12 score 8.1"); braces, which end a DS9
        text, become parentheses.
    """
    from regions import PixCoord, RectanglePixelRegion, Regions

    texts = [t.replace("{", "(").replace("}", ")") for t in texts]
    regs = [RectanglePixelRegion(PixCoord(float(cx), float(cy)), size, size,
                                 meta={"text": t}, visual={"color": "red"})
            for cx, cy, t in zip(x, y, texts, strict=True)]
    if not regs:  # astropy-regions writes nothing at all; DS9 reads the header alone
        return "# Region file format: DS9 astropy/regions\n# no anomalies\nimage\n"
    return Regions(regs).serialize(format="ds9")
