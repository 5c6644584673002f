"""Demo data: real pixels (Hubble Deep Field, bundled with scikit-image) and a simulated TESS FFI.

Nothing is downloaded. The Hubble Deep Field is real; the TESS frame is the project's own
simulation with injected anomalies, and the file names say which is which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Demo files and what they are, for the home page.
DEMO_FILES = {
    "hubble_deep_field_real.fits": "real pixels: Hubble Deep Field (WFPC2), from scikit-image",
    "tess_simulated_s0042-1-1_ffic.fits": "simulated TESS SPOC FFI (camera 1, CCD 1) with "
                                          "injected anomalies",
    "tess_simulated_s0042-1-2_tica.fits": "simulated TESS TICA FFI (camera 1, CCD 2) with "
                                          "injected anomalies",
}


def hubble_deep_field_image() -> np.ndarray:
    """The Hubble Deep Field as a 2-D float32 luminance image, shape (872, 1000)."""
    from skimage import data
    from skimage.color import rgb2gray

    return rgb2gray(data.hubble_deep_field()).astype(np.float32)[::-1] * 255.0


def write_hubble_fits(path: str | Path) -> Path:
    """Write the Hubble Deep Field as a plain FITS image."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(hubble_deep_field_image())
    hdu.header["TELESCOP"] = "HST"
    hdu.header["INSTRUME"] = "WFPC2"
    hdu.header["OBJECT"] = "Hubble Deep Field"
    hdu.header["ORIGIN"] = "skimage.data.hubble_deep_field"
    path = Path(path)
    hdu.writeto(path, overwrite=True)
    return path


def write_demo_files(folder: str | Path, size: int = 512) -> list[Path]:
    """Write the demo files into ``folder``; ``size`` is the simulated frames' side in pixels."""
    from .simulate import inject_anomalies, simulate_ffi, write_spoc, write_tica

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(DEMO_FILES)
    out = [write_hubble_fits(folder / names[0])]
    sim = simulate_ffi(size=size, seed=42, sector=42, camera=1, ccd=1)
    inject_anomalies(sim, n_per_kind=2, seed=7)
    out.append(write_spoc(sim, folder / names[1]))
    sim2 = simulate_ffi(size=size, seed=43, sector=42, camera=1, ccd=2)
    inject_anomalies(sim2, n_per_kind=2, seed=8)
    out.append(write_tica(sim2, folder / names[2]))
    return out
