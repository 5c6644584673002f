"""The simulator against the real TESS frame: the same statistics, side by side.

Peaks above 5/10/50 σ per 10⁴ px (5 × 5 maxima of (image − median) / robust σ), sky median and
robust σ, PSF FWHM from second moments of isolated bright stars, the brightest pixel and the
fraction of saturated pixels, on the real SPOC corner (128 × 129 science pixels) and on
simulated corners of the same size (median of several seeds), at the default density and a
crowded (Galactic-plane) one. Target: every statistic within 30 % of the real corner.

    uv run python benchmarks/realism.py [--seeds 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import SHARED_DATA, machine, table  # noqa: E402
from reaper_core.fits_reader import read_fits  # noqa: E402
from reaper_core.frame_stats import frame_statistics  # noqa: E402
from reaper_core.simulate import SATURATION_E_PER_S, simulate_ffi  # noqa: E402

REAL = SHARED_DATA / "tess" / "tess2018206192942-s0001-1-4-0120-s_ffic.fits"
KEYS = ["peaks_5", "peaks_10", "peaks_50", "sky_median", "sky_sigma", "psf_fwhm", "brightest",
        "saturated_fraction"]


def simulated_corner(shape: tuple[int, int], density: float, seeds: int) -> dict[str, float]:
    """Median statistics of ``seeds`` simulated corners of ``shape`` (no forced bright stars)."""
    stats = [frame_statistics(simulate_ffi(size=256, seed=s, density=density, n_saturated=0)
                              .image[:shape[0], :shape[1]], SATURATION_E_PER_S)
             for s in range(seeds)]
    return {k: float(np.median([d[k] for d in stats])) for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args()
    print(f"# Simulator realism — {machine()}\n")
    img = read_fits(REAL)
    real = frame_statistics(img.data[img.valid], SATURATION_E_PER_S)
    shape = img.data[img.valid].shape
    sim = simulated_corner(shape, 1.0, args.seeds)
    crowded = simulated_corner(shape, 4.0, args.seeds)
    rows = []
    for k in KEYS:
        r, s = real[k], sim[k]
        ok = abs(s - r) <= 0.3 * abs(r) if r else abs(s) < 1e-3
        rows.append({"statistic": k, "real SPOC corner": r, "simulated": s,
                     "sim / real": s / r if r else float("nan"), "within 30 %": ok,
                     "crowded (density 4)": crowded[k]})
    print(table(rows, f"Real sector-1 corner vs simulated corners of {shape[0]} × {shape[1]} "
                      f"px (median of {args.seeds} seeds)"))
    print(f"{sum(r['within 30 %'] for r in rows)} of {len(rows)} statistics within 30 %.")


if __name__ == "__main__":
    main()
