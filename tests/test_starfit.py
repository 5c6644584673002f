"""Star-subtracted residuals on real TESS pixels, and the detector's context columns."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from reaper_core import starfit
from reaper_core.config import Settings
from reaper_core.detector import PCAAnomalyDetector
from reaper_core.embedders import get_embedder
from reaper_core.embedders.local import LocalEmbedder
from reaper_core.embedders.stars import STAR_RESIDUAL
from reaper_core.sources import estimate_background

from .conftest import REAL_SPOC

needs_real = pytest.mark.skipif(not REAL_SPOC.exists() and not os.environ.get("CI"),
                                reason="../shared/data/ (real TESS files) is not beside the "
                                       "checkout")


def _science() -> np.ndarray:
    return fits.getdata(REAL_SPOC, 1).astype(float)[:, 44:]


def _psf_fwhm(psf: np.ndarray) -> float:
    """FWHM (pixels) of an oversampled PSF from its second moments."""
    n = psf.shape[0]
    g = (np.arange(n) - n // 2) / starfit.OVERSAMPLE
    r2 = g[:, None] ** 2 + g[None, :] ** 2
    return float(2.3548 * np.sqrt((psf * r2).sum() / psf.sum() / 2))


@needs_real
def test_real_frame_stars_are_explained_by_their_psf():
    sci = _science()
    bkg, rms = estimate_background(sci)
    stars = starfit.fit_stars(sci, bkg, rms)
    assert len(stars.x) > 150 and stars.n_psf_stars >= 5
    # The PSF comes from the frame's own stars: TESS's ≈ 2.4 px FWHM (real corner, DESIGN.md).
    sub = sci - bkg
    psf, n = starfit.build_psf(sub, rms, *starfit.find_peaks(sub, rms))
    assert n >= 5 and 1.8 < _psf_fwhm(psf) < 3.2
    # Over the frame, the star-subtracted residual is near its expected noise ...
    z = stars.residual / stars.noise
    assert np.median(np.abs(z)) < 1.0
    # ... and most of the bright stars' light is gone: at their peaks ≈ 11 % is left (the
    # undersampled PSF differs a little from star to star).
    bright = stars.flux > np.percentile(stars.flux, 90)
    iy, ix = np.round(stars.y[bright]).astype(int), np.round(stars.x[bright]).astype(int)
    assert np.median(np.abs(stars.residual[iy, ix]) / sub[iy, ix]) < 0.2


@needs_real
def test_a_cosmic_ray_stands_out_and_a_copied_star_does_not():
    sci = _science()
    sigma = 7.2  # the real corner's sky σ, e⁻/s
    hit = sci.copy()
    # A cosmic ray: three pixels in a row, 60 σ each (sharper than any star).
    hit[40, 30:33] += 60 * sigma
    # A real star of the frame copied, with its PSF, to an empty place.
    bkg, rms = estimate_background(sci)
    stars = starfit.fit_stars(sci, bkg, rms)
    inner = np.flatnonzero((stars.x > 10) & (stars.x < 118) & (stars.y > 10) & (stars.y < 118))
    j = inner[np.argsort(stars.flux[inner])[-10]]  # a bright star, not the brightest
    sx, sy = round(stars.x[j]), round(stars.y[j])
    stamp = (sci - bkg)[sy - 4:sy + 5, sx - 4:sx + 5]
    # The emptiest 9 × 9 place of the frame, away from the cosmic ray.
    from scipy.ndimage import uniform_filter

    light = uniform_filter(stars.model, 9)
    light[:12], light[-12:], light[:, :12], light[:, -12:] = np.inf, np.inf, np.inf, np.inf
    light[25:55, 15:45] = np.inf
    py, px = np.unravel_index(np.argmin(light), light.shape)
    hit[py - 4:py + 5, px - 4:px + 5] += stamp
    c = starfit.cutout_residuals(hit, None, np.r_[31.0, px, stars.x],
                                 np.r_[40.0, py, stars.y])[:, 0]
    cr, copy, normal = c[0], c[1], c[2:]
    assert cr > np.percentile(normal, 99)
    # A star of the frame's own PSF is as ordinary as the frame's other bright stars.
    bright = stars.flux > np.percentile(stars.flux, 75)
    assert copy < np.percentile(normal[bright], 90)
    assert cr > 6 and cr > 2 * copy  # in robust σ of the frame's cutouts (8.2 and 3.3 here)


@needs_real
def test_patch_residuals_find_the_cosmic_ray_from_the_patches_alone():
    from reaper_core.cutouts import extract_cutouts
    from reaper_core.fits_reader import read_fits
    from reaper_core.sources import find_sources

    img = read_fits(REAL_SPOC)
    img.data[60, 90:93] += 60 * 7.2
    src = find_sources(img)
    x, y = np.r_[91.0, src.x], np.r_[60.0, src.y]
    patches = extract_cutouts(img.data, x, y, 32, img.valid)
    c = starfit.patch_residuals(patches)[:, 0]
    assert c.shape == (len(x),) and np.all(np.isfinite(c))
    assert c[0] >= np.sort(c)[-3]


def test_context_column_lifts_the_score_and_pca_ignores_it():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(400, 6))
    ctx = rng.normal(1.0, 0.2, size=(400, 1))
    ctx[7] = 5.0  # what the stars leave at this centre is far above the rest
    X = np.hstack([E, ctx])
    det = PCAAnomalyDetector(n_components=3, n_context=1).fit(X)
    assert det.components_.shape == (3, 6)
    s = det.anomaly_score(X)
    assert int(np.argmax(s)) == 7 and np.all(s >= 0)
    # Without the context column the same sample is unremarkable.
    plain = PCAAnomalyDetector(n_components=3).fit(E).anomaly_score(E)
    assert np.argsort(-plain).tolist().index(7) > 20
    # The context does not enter the principal components (Explore's axes).
    assert det.transform(X).shape == (400, 3)
    np.testing.assert_allclose(det.transform(X),
                               PCAAnomalyDetector(n_components=3).fit(E).transform(E),
                               atol=1e-6)
    # Residuals carry the context's robust z in its column (for explanations).
    assert det.residuals(X).shape == (400, 7) and det.residuals(X)[7, -1] > 10
    # Saved as arrays and JSON, read back the same.
    arrays, meta = det.to_bytes()
    back = PCAAnomalyDetector.from_bytes(arrays, meta, threshold=det.threshold_)
    np.testing.assert_allclose(back.anomaly_score(X), s)
    with pytest.raises(ValueError, match="n_context"):
        PCAAnomalyDetector(n_context=7).fit(X)


def test_star_residual_embedder_is_the_default():
    emb = get_embedder(Settings().embedder)
    assert emb.name == "local+core+stars" and emb.n_context == 1
    assert emb.dim == LocalEmbedder(core=True).dim + 1 and emb.features[-1] == STAR_RESIDUAL
    patches = np.random.default_rng(1).normal(100, 5, size=(30, 32, 32)).astype(np.float32)
    given = emb.embed(patches, context=np.full((30, 1), 0.25))
    assert given.shape == (30, emb.dim) and np.allclose(given[:, -1], 0.25)
    np.testing.assert_allclose(given[:, :-1], LocalEmbedder(core=True).embed(patches), rtol=1e-5)
    alone = emb.embed(patches)  # from the patches alone
    assert alone.shape == (30, emb.dim) and np.all(np.isfinite(alone))


def test_a_field_of_galaxies_gets_no_star_residual():
    """The Hubble Deep Field teaches no PSF (no bright isolated stars): every cutout's residual
    is 0, so the ranking there is the embedding's alone."""
    from reaper_core.demo import hubble_deep_field_image

    img = hubble_deep_field_image().astype(float)
    x, y = np.array([100.0, 500.0, 900.0]), np.array([100.0, 400.0, 800.0])
    assert np.all(starfit.cutout_residuals(img, None, x, y) == 0)


def test_blocks_of_uneven_size_hold_every_star():
    """A frame that the PSF blocks do not divide evenly (457 columns in 2 blocks, rows in 3):
    every star is fitted with its own block's PSF, none falls off a block's edge."""
    rng = np.random.default_rng(3)
    ny, nx = 301, 457
    img = rng.normal(100.0, 3.0, (ny, nx))
    yy, xx = np.mgrid[:ny, :nx]
    sx, sy = rng.uniform(5, nx - 5, 120), rng.uniform(5, ny - 5, 120)
    for x0, y0, f in zip(sx, sy, rng.uniform(500, 5000, 120), strict=True):
        img += f / (2 * np.pi) * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2))
    stars = starfit.fit_stars(img, np.full_like(img, 100.0), np.full_like(img, 3.0), block=150)
    assert len(stars.x) >= 100 and stars.n_psf_stars > 0
    assert np.median(np.abs(stars.residual / stars.noise)) < 1.5


@needs_real
def test_point_sources_injected_with_the_frames_psf_look_like_its_stars():
    """The benchmark's flares and blends are drawn with the frame's own PSF: on the real SPOC
    frame the star fit explains them about as well as the frame's stars (median central
    residual 1.3 against their 90th percentile 2.0), a Gaussian of σ 1 px not (2.3)."""
    from reaper_core.simulate import add_sources

    sci = _science()
    psf = starfit.frame_psf(sci)
    assert psf is not None
    bkg, rms = estimate_background(sci)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(15, sci.shape[1] - 15, 12), rng.uniform(15, sci.shape[0] - 15, 12)
    flux = np.full(12, 300 * float(np.median(rms)))
    medians = {}
    for name, kw in [("frame", {"psf": psf}), ("gaussian", {})]:
        img = sci.copy()
        add_sources(img, x, y, flux, **kw)
        assert np.isclose(np.nansum(img - sci), flux.sum(), rtol=0.02)
        stars = starfit.fit_stars(img, bkg, rms)
        medians[name] = np.median(starfit.central_residual(stars, x, y))
        if name == "frame":  # the frame's own stars (and the injected ones)
            real = np.percentile(starfit.central_residual(stars, stars.x, stars.y), 90)
    assert medians["frame"] < real < medians["gaussian"]
    assert medians["gaussian"] - medians["frame"] > 0.5


def test_frame_psf_of_frames_that_teach_none():
    """No PSF (so the injectors keep their Gaussian) from a frame without stars, one too small
    to measure, or one mostly missing — and no error."""
    rng = np.random.default_rng(0)
    mostly_missing = rng.normal(size=(64, 64))
    mostly_missing[:, 8:] = np.nan
    for img in (rng.normal(size=(64, 64)), rng.normal(size=(12, 12)),
                np.full((64, 64), np.nan), mostly_missing):
        assert starfit.frame_psf(img) is None


def test_injection_refuses_what_it_cannot_do_in_one_sentence():
    from reaper_core.simulate import inject_into_image

    with pytest.raises(TypeError, match="floating-point image, not int64"):
        inject_into_image(np.zeros((64, 64), np.int64), None, 1)
    with pytest.raises(ValueError, match="psf must be 'frame'"):
        inject_into_image(np.zeros((64, 64)), None, 1, psf="gaussian")
