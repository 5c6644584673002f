"""Time domain: stacks (the real TESScut cube, simulated jittered frames), difference imaging,
event linking and kinds, bad stacks, the events command and export, the Timeline page."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from astropy.io import fits
from astropy.table import Table
from streamlit.testing.v1 import AppTest

from reaper_core.cli import main
from reaper_core.config import Settings
from reaper_core.difference import build_reference, detect, difference
from reaper_core.errors import StackError
from reaper_core.events import (
    BIN_FRAMES,
    LC_FRACTION,
    LC_FRACTION_SEVERAL,
    MIN_SIGMA,
    SINGLE_FRAME_SIGMA,
    Event,
    lightcurve_sigma,
    search_stack,
)
from reaper_core.service import Reaper
from reaper_core.simulate_stack import (
    EXPECTED_KIND,
    SimulatedStack,
    add_sine_star,
    simulate_stack,
)
from reaper_core.stacks import stack_from_cube, stack_from_files

from .conftest import REAL_CUBE, REAL_DATA

CUBE = REAL_CUBE
APP = str(Path(__file__).resolve().parent.parent / "reaper_app" / "main.py")
CONTRACT = ["stack", "kind", "x", "y", "t_start", "t_peak", "t_end", "peak_sigma", "ra", "dec",
            "score", "is_anomaly", "label"]


@pytest.fixture(scope="module")
def kinds_sim() -> SimulatedStack:
    """120 frames of 160² px (jitter, no momentum dump) with one clear event of every kind."""
    return simulate_stack(120, 160, seed=5, snr=(25, 60), dump_every=1000, events={
        "flare": 1, "supernova": 1, "eclipse": 1, "asteroid": 1, "glint": 1, "satellite": 1})


@pytest.fixture(scope="module")
def kinds_found(kinds_sim):
    return search_stack(kinds_sim.as_stack())


# -- stacks ------------------------------------------------------------------------------------
@pytest.mark.skipif(not CUBE.exists(), reason="../shared/data/ is not beside the checkout")
def test_real_cube_is_a_stack_with_true_times_gap_and_quality():
    stack = stack_from_cube(CUBE)
    with fits.open(CUBE) as hdul:
        table = hdul[1].data
        times, quality = np.asarray(table["TIME"], float), np.asarray(table["QUALITY"], int)
    finite = np.isfinite(times)
    assert len(stack) == finite.sum() == 1282
    assert np.array_equal(stack.times, times[finite])  # true BTJD times, in order
    assert np.all(np.diff(stack.times) > 0)
    assert (stack.sector, stack.camera, stack.ccd) == (1, 4, 3)
    assert stack.cadence_days == pytest.approx(30 / 1440, rel=0.01)
    (g0, g1), = stack.gaps()
    assert 1338 < g0 < g1 < 1340  # the mid-sector downlink
    s = stack.summary()
    assert s["flagged"] == int((quality[finite] != 0).sum()) > 0
    assert np.array_equal(stack.frame(7), np.asarray(table["FLUX"][np.flatnonzero(finite)[7]],
                                                     np.float32))


@pytest.mark.skipif(not CUBE.exists(), reason="../shared/data/ is not beside the checkout")
def test_real_cube_search_light_curve_and_quality(tmp_path):
    r = Reaper(Settings(db_url=f"sqlite:///{tmp_path}/db.sqlite"))
    sid, = r.search_stack([CUBE])
    info, = r.stacks()
    assert info["id"] == sid and info["frames"] == 1282 and info["gaps"] == 1
    cols = r.events()
    stack = stack_from_cube(CUBE)
    severe = ~stack.good
    for eid, t_peak in zip(cols["id"], cols["t_peak"], strict=True):
        lc = r.event_lightcurve(int(eid))
        assert np.array_equal(lc["time"], stack.times)  # one point per cadence, BTJD
        assert np.array_equal(lc["quality"], stack.quality)
        peak = int(np.flatnonzero(stack.times == t_peak)[0])
        assert not severe[peak]  # flagged cadences are never searched
    # The light curve's aperture flux follows the cube's own pixels.
    if len(cols["id"]):
        lc = r.event_lightcurve(int(cols["id"][0]))
        assert np.isfinite(lc["flux"]).mean() > 0.95


@pytest.mark.skipif(not CUBE.exists(), reason="../shared/data/ is not beside the checkout")
def test_flares_injected_into_the_real_cube_are_found():
    """Flares on the real cube's star at real cadences: each found where and when it was put
    (every candidate of a 5×5 cube measures the same pixels; a flare must not set its own
    frame's noise)."""
    stack = stack_from_cube(CUBE)
    cube = stack.cube.astype(np.float64)
    rows = np.array([f.index for f in stack.frames])
    good = np.flatnonzero(stack.good)
    sigma_px = stack.pixel_noise()
    ny, nx = cube.shape[1:]
    sy, sx = np.unravel_index(np.argmax(np.nanmedian(cube, 0)), (ny, nx))
    yy, xx = np.mgrid[0:ny, 0:nx]
    psf = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * 0.85**2)) / (2 * np.pi * 0.85**2)
    starts = good[[300, 700, 1000]]
    for f0, snr in zip(starts, (30.0, 45.0, 60.0), strict=True):
        for k in range(3):
            cube[rows[f0 + k]] += np.exp(-k / 1.5) * snr * sigma_px * np.sqrt(4 * np.pi) * 0.85 \
                * psf
    stack.cube = cube.astype(np.float32)
    events = search_stack(stack).events
    for f0 in starts:
        assert any(np.hypot(e.x - sx, e.y - sy) < 1.5 and e.frame_start <= f0 + 4
                   and e.frame_end >= f0 - 2 for e in events), f"flare at cadence {f0} missed"


def test_bad_stacks_give_one_clear_sentence(tmp_path):
    sim = simulate_stack(4, 64, seed=1, events={})
    files = sim.write(tmp_path / "ok")
    with pytest.raises(StackError, match=r"at least 3 frames.*1 given"):
        stack_from_files(files[:1])
    other = simulate_stack(3, 64, seed=2, events={}, ccd=2).write(tmp_path / "ccd2")
    with pytest.raises(StackError, match=r"CCD 2.*CCD 1|CCD 1.*CCD 2"):
        stack_from_files([*files[:2], other[0]])
    big = simulate_stack(3, 80, seed=2, events={}).write(tmp_path / "big")
    with pytest.raises(StackError, match=r"80×80.*64×64|64×64.*80×80"):
        stack_from_files([*files[:2], big[0]])
    flagged = SimulatedStack(sim.frames, sim.times, np.full(4, 32), sim.shifts, [], wcs=sim.wcs)
    with pytest.raises(StackError, match=r"4 of its 4 frames are flagged.*momentum dump"):
        stack_from_files(flagged.write(tmp_path / "flagged"))
    r = Reaper(Settings(db_url=f"sqlite:///{tmp_path}/db.sqlite"))
    with pytest.raises(StackError):
        r.search_stack(files[:2])
    assert r.stacks() == []  # nothing half-stored
    # Three different images of one moment (e.g. one frame rotated): ingested, no stack.
    same = SimulatedStack(sim.frames[:3], np.full(3, sim.times[0]), sim.quality[:3],
                          sim.shifts[:3], [], wcs=sim.wcs).write(tmp_path / "same")
    with pytest.raises(StackError, match=r"same time as .*different times"):
        stack_from_files(same)
    report = r.ingest(same)
    assert report.count("added") == 3 and r.stacks() == []
    assert len(report.stack_notes) == 1 and "same time" in report.stack_notes[0]


# -- difference imaging and events ----------------------------------------------------------
def test_constant_stars_leave_few_residuals_above_5_sigma():
    """A stack of constant stars with sub-pixel jitter (no momentum dump: the residuals a
    dump's jump leaves are a known shortfall, measured in benchmarks/timeline.py)."""
    sim = simulate_stack(40, 128, seed=11, events={}, dump_every=100)
    stack = sim.as_stack()
    ref = build_reference(stack)
    above = [(np.abs(difference(stack.frame(i), ref).snr) > 5).mean() for i in range(40)]
    assert np.mean(above) < 1e-3  # of the pixels of a difference
    assert len(search_stack(stack).events) <= 1


def test_simulated_stars_are_integrated_over_their_pixels():
    """The simulator's stars are its PSF integrated over each pixel (checked against a 20×
    supersampled PSF): their shape follows their sub-pixel position as a real star's does, so
    a frame shifted by the cubic spline of the alignment meets the star rendered at its new
    place to well under 1 % of its peak (the stars split over four pixels and blurred, as
    until stop 42, missed it by 2.5 % for a 0.05 px shift, 14 % for 0.3 px)."""
    from reaper_core.difference import align
    from reaper_core.simulate import PSF_FWHM, _render_stars

    n, far = 24, np.full((24, 24), 0.4, np.float32)

    def star(x: float, y: float) -> np.ndarray:
        return _render_stars((n, n), np.array([x]), np.array([y]), np.array([1000.0]),
                             PSF_FWHM, far)

    # Against the PSF sampled 20 × finer and summed over each pixel.
    sub = (np.arange(n * 20) + 0.5) / 20 - 0.5
    s_in, s_out = PSF_FWHM[0] / 2.3548, PSF_FWHM[1] / 2.3548
    dx, dy = sub[None, :] - 11.3, sub[:, None] - 12.6

    def gauss(sx: float, sy: float) -> np.ndarray:
        return np.exp(-0.5 * ((dx / sx) ** 2 + (dy / sy) ** 2)) / (2 * np.pi * sx * sy * 400)

    fine = 1000.0 * (0.6 * gauss(s_in, s_in) + 0.4 * gauss(0.85 * s_out, s_out))
    expected = fine.reshape(n, 20, n, 20).sum(axis=(1, 3))
    got = star(11.3, 12.6)
    assert np.abs(got - expected).max() < 2e-3 * got.max()
    assert got.sum() == pytest.approx(1000.0, rel=2e-3)
    for x0 in (12.0, 12.25, 12.5):
        for d in (0.05, 0.3):
            moved = align(star(x0 - d, 12.0).astype(np.float32), (0.0, d))
            at_new_phase = star(x0, 12.0)
            assert np.abs(moved - at_new_phase).max() < (0.006 if d < 0.1 else 0.03) * \
                at_new_phase.max()


@pytest.mark.skipif(not CUBE.exists(), reason="../shared/data/ is not beside the checkout")
def test_the_fast_shift_and_matched_filter_equal_scipy_s():
    """The alignment's spline shift and the matched filter, written as separable 1-D passes
    for speed, give what ``scipy.ndimage.shift`` (cubic, "nearest") and the 2-D convolution
    with the PSF kernel give, edges included, on a real TESS frame's pixels."""
    from scipy import ndimage

    from reaper_core.difference import _spline_shift, matched_filter, psf_kernel

    with fits.open(REAL_CUBE) as hdul:
        img = np.nan_to_num(np.asarray(hdul[1].data["FLUX"][100], np.float32))
    img = np.tile(img, (7, 5))[:33, :21]  # rows and columns of unequal, odd length
    for shift in [(0.3, -0.7), (-2.4, 3.9), (1.0, 0.0), (-4.99, 0.01), (7.5, -8.0)]:
        want = ndimage.shift(img, shift, order=3, mode="nearest")
        np.testing.assert_allclose(_spline_shift(img, shift), want, rtol=1e-6,
                                   atol=1e-6 * np.abs(img).max())
    k = psf_kernel()
    want = ndimage.convolve(img.astype(float), k, mode="constant") / np.sqrt((k**2).sum())
    np.testing.assert_allclose(matched_filter(img), want, rtol=1e-5,
                               atol=1e-6 * np.abs(want).max())


@pytest.mark.skipif(not CUBE.exists(), reason="../shared/data/ is not beside the checkout")
def test_the_reference_median_is_numpy_s_nanmedian():
    """The reference's per-pixel median of its frames, by one sort, is ``np.nanmedian`` to the
    bit: odd and even counts of finite values, missing pixels, a pixel missing everywhere."""
    from reaper_core.difference import _nanmedian_frames

    with fits.open(REAL_CUBE) as hdul:
        frames = np.asarray(hdul[1].data["FLUX"][200:224], np.float32)
    frames[3, 0] = np.nan
    frames[:11, 2, 2] = np.nan
    frames[:, 4, 4] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmedian(frames, axis=0)
    got = _nanmedian_frames(frames)
    assert np.isnan(got[4, 4]) and np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("seed", [3, 7])
def test_momentum_dumps_and_scattered_light_leave_no_false_event(seed):
    """Pointing jumps at two momentum dumps (0.2–0.5 px each) and a scattered-light glow
    rising through the orbit, no event: no event in 120 frames (the residual sky is measured
    on each difference, not on the crowded frame; the patterns a pointing state leaves are
    learned however few sample frames share it; a bright star's dipole in a frame that jitters
    more than most is no event: 1 and 5 false events before)."""
    sim = simulate_stack(120, 160, seed=seed, events={}, dump_every=40)
    assert np.count_nonzero(sim.quality) == 2
    assert search_stack(sim.as_stack()).events == []


def test_bright_stars_do_not_bias_the_sky_of_a_difference():
    """Every 32-px cell of every fourth difference (frames 100–199, the glow rising) has a
    median S/N within ±1.2: the sky of a difference is measured with the reference's
    brightest pixels left out (their residuals biased a whole cell, up to 2.3 before, and
    left false events a cell wide in the corner where the glow is brightest)."""
    sim = simulate_stack(200, 256, seed=0, events=dict.fromkeys(EXPECTED_KIND, 3))
    stack = sim.as_stack()
    ref = build_reference(stack)
    worst = 0.0
    for i in range(100, 200, 4):
        cells = difference(stack.frame(i), ref).snr.reshape(8, 32, 8, 32)
        worst = max(worst, float(np.abs(np.median(cells, axis=(1, 3))).max()))
    assert worst < 1.2


def test_a_residual_that_follows_the_pointing_is_no_event():
    """A dip while the pointing sits 0.4 px away (a star's residual in that pointing state,
    seen again later in the same state) loses its significance once the light curve is
    decorrelated against the pointing; an eclipse of the same depth at another time keeps
    it."""
    rng = np.random.default_rng(5)
    n = 200
    shifts = np.zeros((n, 2))
    shifts[120:150] = shifts[170:190] = (0.1, 0.4)  # two visits to one pointing state
    noise = rng.normal(0, 1.0, n)
    follows = noise - 50 * shifts[:, 1] ** 2  # -8 e/s in that state
    eclipse = noise.copy()
    eclipse[60:66] -= 8

    def event(flux, start, end):
        ev = Event("variable", 10, 10, start, start + 2, end, 0, 0, 0, 8.0, -1, end - start + 1,
                   -8.0, 6, 1.0)
        ev.lightcurve = {"diff_flux": flux}
        return ev

    dip = event(follows, 120, 149)
    assert lightcurve_sigma(dip) > 6
    assert lightcurve_sigma(dip, shifts=shifts) < 3
    real = event(eclipse, 60, 65)
    assert lightcurve_sigma(real, shifts=shifts) > 6


def test_a_long_transient_s_tail_is_no_baseline():
    """A supernova-like rise and 20-frame fall (6σ at its peak) detected over a few frames near
    its peak only: the tail still up after the detections is left out of the light curve's
    baseline (which it would raise and widen), so over 20 noise draws the event measures
    near what a baseline without the event gives, well above what the frames outside its
    detections alone give; pure noise around a one-frame event grows no span."""
    from reaper_core.difference import robust_std

    n, k = 200, np.arange(200)
    profile = np.where(k < 60, np.clip((k - 49) / 11, 0, None) ** 2, np.exp(-(k - 60) / 20))
    quiet = (k < 48) | (profile < 0.05)  # where the event is truly below 0.3σ

    def event(lc, start, end):
        ev = Event("transient", 10, 10, start, 60, end, 0, 0, 0, 6.0, 1, end - start + 1,
                   6.0, 6, 1.0)
        ev.lightcurve = {"diff_flux": lc}
        return ev

    def measured(lc, base):
        return (lc[58:64].max() - np.median(lc[base])) / robust_std(lc[base])

    got, naive, truth = [], [], []
    for seed in range(20):
        flux = np.random.default_rng(seed).normal(0, 1.0, n) + 6.0 * profile
        got.append(lightcurve_sigma(event(flux, 58, 63)))
        naive.append(measured(flux, (k < 56) | (k > 65)))
        truth.append(measured(flux, quiet))
    assert np.median(got) > np.median(naive) + 0.4
    assert np.median(np.abs(np.subtract(got, truth))) < 0.75 * np.median(
        np.abs(np.subtract(naive, truth)))
    # A short light curve up for 12 of its 30 frames: its span is not grown past what leaves a
    # baseline long enough to decorrelate (20 frames), so it keeps the baseline it had.
    short = np.random.default_rng(4).normal(0, 1.0, 30)
    short[8:20] += 8.0
    short_base = (np.arange(30) < 10) | (np.arange(30) > 14)
    assert lightcurve_sigma(event(short, 12, 12)) == pytest.approx(
        (short[12] - np.median(short[short_base])) / robust_std(short[short_base]))
    noise = np.random.default_rng(3).normal(0, 1.0, n)
    noise[100] += 7.0
    base = (k < 98) | (k > 102)
    assert lightcurve_sigma(event(noise, 100, 100)) == pytest.approx(
        (noise[100] - np.median(noise[base])) / robust_std(noise[base]))


def test_a_frame_s_noise_at_stars_does_not_drown_a_streak_on_the_sky():
    """A frame's noise factor is read at the candidates, mostly stars' residuals, which a
    pointing state raises; an event on the sky is measured against its own light curve alone
    (``at_star``). Seed 11's two single-frame streaks (9.6σ and 8.8σ, 120 frames of 128² px,
    a momentum dump every 40, two faint glints): the fainter streak, in such a frame, was
    lost; now both are found and no false event."""
    from scipy import ndimage

    from reaper_core.events import STAR_REACH_PX, at_star

    def _matches(t, e) -> bool:  # in the streak's frame, within 4 px of the streak
        along = np.linspace(0, 1, 200)
        return (abs(e.frame_peak - t.f_peak) <= 2
                and np.hypot(t.x + along * (t.x_end - t.x) * 2 - (t.x_end - t.x) - e.x,
                             t.y + along * (t.y_end - t.y) * 2 - (t.y_end - t.y) - e.y
                             ).min() < 4)

    sim = simulate_stack(120, 128, seed=11, events={"satellite": 2, "glint": 2}, snr=(6, 9),
                         dump_every=40)
    found = search_stack(sim.as_stack())
    streaks = [t for t in sim.events if t.kind == "satellite"]
    assert [round(t.peak_sigma, 1) for t in streaks] == [9.6, 8.8]
    for t in streaks:
        assert any(_matches(t, e) for e in found.events)
    glints = [t for t in sim.events if t.kind == "glint"]  # 2.9σ and 6.0σ: may be found
    assert not [e for e in found.events if not any(
        _matches(t, e) for t in streaks) and not any(
        np.hypot(e.x - t.x, e.y - t.y) < 3 for t in glints)]
    # at_star: on a star's pixel, and far from every one.
    ref = found.reference
    ys, xs = np.nonzero(ref.stars)
    on = Event("transient", float(xs[0]), float(ys[0]), 5, 5, 6, 0, 0, 0, 8.0, 1, 2, 5.0, 4,
               1.0)
    assert at_star(on, ref)
    far = np.argwhere(ndimage.distance_transform_edt(~ref.stars) > STAR_REACH_PX + 1)
    sky = Event("single_frame", float(far[0][1]), float(far[0][0]), 5, 5, 5, 0, 0, 0, 8.0, 1,
                1, 5.0, 4, 1.0)
    assert not at_star(sky, ref)
    on.kind = "mover"
    assert not at_star(on, ref)


def test_a_faint_flash_that_fades_is_a_flare_and_one_that_does_not_is_noise():
    """One detection under the single-frame threshold (6.5σ) is kept when the next frame's
    matched-filter S/N at its place is still ≥ 2σ — a flare fading below the detection
    threshold — as a transient; the same flash without that (a glint that faint, a chance
    excursion of noise) is not, nor is a flash above the threshold changed (read so, satellite
    streaks whose next frame chanced above 2σ became transients: 3 of 35 on seeds 6–11)."""
    from reaper_core.events import make_events

    def flash(sigma: float, next_sigma: float | None) -> dict[str, np.ndarray]:
        det = {"frame": np.array([40.0]), "x": np.array([20.0]), "y": np.array([30.0]),
               "sign": np.array([1.0]), "sigma": np.array([sigma]), "flux": np.array([9.0]),
               "area": np.array([5.0]), "elongation": np.array([1.0])}
        if next_sigma is not None:
            det["next_sigma"] = np.array([next_sigma])
        return det

    times = 1325.0 + np.arange(100) / 48
    faded, = make_events(flash(5.8, 2.4), times)
    assert faded.kind == "transient" and faded.n_detections == 1
    assert make_events(flash(5.8, 1.5), times) == []
    assert make_events(flash(5.8, None), times) == []
    assert make_events(flash(4.8, 3.0), times) == []  # under the least an event needs
    bright, = make_events(flash(7.0, 3.0), times)
    assert bright.kind == "single_frame"


def test_a_clean_faint_flash_is_kept_and_a_ragged_one_is_not():
    """One detection between 5.5σ and the single-frame threshold (6.5σ) whose next frame shows
    nothing is kept, as a single-frame event, when its difference at the peak is clean (purity
    ≥ 0.8: a glint is the PSF's shape); a ragged one (noise among noise) is not, nor is a clean
    one under 5.5σ."""
    from reaper_core.events import CLEAN_PURITY, CLEAN_SINGLE_SIGMA, SINGLE_FRAME_SIGMA, make_events

    def flash(sigma: float, purity: float) -> dict[str, np.ndarray]:
        return {"frame": np.array([40.0]), "x": np.array([20.0]), "y": np.array([30.0]),
                "sign": np.array([1.0]), "sigma": np.array([sigma]), "flux": np.array([9.0]),
                "area": np.array([5.0]), "elongation": np.array([1.0]),
                "next_sigma": np.array([0.5]), "purity": np.array([purity])}

    times = 1325.0 + np.arange(100) / 48
    assert CLEAN_SINGLE_SIGMA < 5.9 < SINGLE_FRAME_SIGMA
    glint, = make_events(flash(5.9, 0.87), times, min_purity=0.35)
    assert glint.kind == "single_frame" and glint.peak_purity == 0.87
    assert make_events(flash(5.9, CLEAN_PURITY - 0.2), times, min_purity=0.35) == []
    assert make_events(flash(CLEAN_SINGLE_SIGMA - 0.2, 0.95), times, min_purity=0.35) == []
    # Without purities (a caller that measured none) the single-frame threshold holds.
    det = flash(5.9, 0.87)
    del det["purity"]
    assert make_events(det, times) == []


def test_a_faint_flare_seen_in_one_frame_is_found():
    """A simulated flare of 7.3σ fading over nine frames, detected in its first frame only and
    at 5.9σ — under the single-frame threshold — is found, as a transient: the next frame
    still shows it (missed before such flashes were kept)."""
    from reaper_core.events import SINGLE_FRAME_SIGMA

    sim = simulate_stack(60, 96, seed=8, events={"flare": 3}, snr=(6, 10))
    flare = next(t for t in sim.events if t.f_start == 47)
    events = search_stack(sim.as_stack()).events
    found = [e for e in events if np.hypot(e.x - flare.x, e.y - flare.y) < 3
             and flare.f_start - 2 <= e.frame_peak <= flare.f_end]
    assert [e.kind for e in found] == ["transient"]
    assert found[0].n_detections == 1 and found[0].peak_sigma < SINGLE_FRAME_SIGMA


def test_a_bin_finds_a_slow_event_and_leaves_a_one_frame_flash_to_the_frames():
    """Bins of frames searched as one (:class:`BinnedSearch`): a faint source up in every
    frame of a bin (3σ a frame, under detection) is found at about 3·√16 = 12σ; a flash
    stronger in one frame than the bin (a glint) is left to that frame's own search; a bin
    short of half its frames is not searched."""
    from types import SimpleNamespace

    from reaper_core.difference import matched_filter
    from reaper_core.events import BinnedSearch

    ny = nx = 96
    yy, xx = np.mgrid[0:ny, 0:nx]
    def blob(x, y):  # a PSF of unit L2 norm: its matched-filter S/N is its amplitude
        b = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.85**2))
        return b / np.sqrt((b**2).sum())

    ref = SimpleNamespace(faint=np.ones((ny, nx), bool))
    rng = np.random.default_rng(2)
    slow, flash = BinnedSearch(16, ref), BinnedSearch(16, ref)
    for i in range(16):
        noise = rng.normal(0, 1, (ny, nx))
        snr = matched_filter(noise + 3.0 * blob(30, 40))
        slow.add(i, snr / snr.std())
        snr = matched_filter(noise + (40.0 if i == 7 else 0.0) * blob(60, 50))
        flash.add(i, snr / snr.std())
        slow.close(i)
        flash.close(i)
    det = slow.detections()
    best = int(np.argmax(det["sigma"]))
    assert (round(det["x"][best]), round(det["y"][best])) == (30, 40)
    assert 9 < det["sigma"][best] < 15 and det["sign"][best] == 1
    assert (det["first"][best], det["last"][best], det["frame"][best]) == (0, 15, 8)
    far = np.hypot(det["x"] - 30, det["y"] - 40) > 3
    assert not (det["sigma"][far] >= 5).any()
    det = flash.detections()
    assert not (np.hypot(det["x"] - 60, det["y"] - 50) < 3).any()
    # A place that is up in every frame (a residual the noise model misses) is judged
    # against the bins before it there: found in the first bins only.
    steady = BinnedSearch(4, ref)
    for i in range(48):
        steady.add(i, matched_filter(rng.normal(0, 1, (ny, nx)) + 3.0 * blob(50, 20)))
        steady.close(i)
    det = steady.detections()
    at = np.hypot(det["x"] - 50, det["y"] - 20) < 2
    assert 0 in det["first"][at] and det["first"][at].max() < 16
    short = BinnedSearch(16, ref)
    for i in range(7):
        short.add(i, matched_filter(10 * blob(30, 40)))
    short.close(6, last=True)
    assert len(short.detections()["x"]) == 0


def test_a_slow_transient_too_faint_for_any_one_frame_is_found_in_bins(monkeypatch):
    """A simulated supernova of 5.3σ at its peak frame, up for 68 of 160 frames (the
    reference, a median, holds part of it): the single frames alone find nothing, the bins
    of frames find it, as a transient whose span (where its light curve stays up) holds its
    true peak, and nothing else."""
    import reaper_core.events as events_module

    sim = simulate_stack(160, 96, seed=1, events={"supernova": 1}, snr=(6, 6))
    sn, = sim.events
    events = search_stack(sim.as_stack()).events
    assert [(e.kind, e.binned > 1) for e in events] == [("transient", True)]
    ev, = events
    assert np.hypot(ev.x - sn.x, ev.y - sn.y) < 2
    assert sn.f_start <= ev.frame_peak <= sn.f_end and ev.peak_sigma >= MIN_SIGMA
    assert ev.flux > 0 and ev.frame_start <= sn.f_peak <= ev.frame_end
    # Its span is where its light curve stays up, beyond the one bin it was found in, and
    # its strip of cutouts spans that.
    assert ev.frame_end - ev.frame_start + 1 > 16 and ev.n_detections == 1
    assert ev.strip_frames.min() <= ev.frame_start and ev.strip_frames.max() >= ev.frame_end
    monkeypatch.setattr(events_module, "BIN_FRAMES", ())
    assert search_stack(sim.as_stack()).events == []


def test_an_event_found_in_frames_and_in_bins_at_once_is_one_transient():
    """An event found in single frames and, over the same frames, in a bin is one episode:
    merged, it stays a transient (not a variable brightening twice) and shows its
    single frames' view; two brightenings far apart in time are still a variable."""
    from reaper_core.events import merge_recurrent

    def ev(start, end, sigma, binned):
        return Event("transient", 20.0, 30.0, start, (start + end) // 2, end, start, start,
                     end, sigma, 1, 3, 10.0, 5, 1.0, binned=binned,
                     frames=np.arange(start, end + 1))

    merged, = merge_recurrent([ev(40, 44, 7.0, 1), ev(32, 47, 12.0, 16)])
    assert merged.kind == "transient" and merged.binned == 1 and merged.peak_sigma == 7.0
    assert (merged.frame_start, merged.frame_end) == (32, 47)
    twice, = merge_recurrent([ev(40, 44, 7.0, 1), ev(96, 111, 12.0, 16)])
    assert twice.kind == "variable"


def test_events_in_a_tesscut_sized_stack_are_found():
    """A 40 × 40 px stack (a TESScut cube of ordinary size) gets the systematics fit and noise
    model of a full frame, and a plane for its scattered light: 21 of 24 clear events found
    in six stacks (17 when only 64 × 64 px and larger had them), at most 2 false events in 720
    frames."""
    found, false = 0, 0
    for seed in range(6):
        sim = simulate_stack(120, 40, seed=seed, snr=(25, 60),
                             events={"flare": 1, "supernova": 1, "eclipse": 1, "glint": 1})
        events = search_stack(sim.as_stack()).events
        near = [[e for e in events if np.hypot(e.x - t.x, e.y - t.y) < 3
                 and e.frame_start <= t.f_end + 2 and e.frame_end >= t.f_start - 2]
                for t in sim.events]
        found += sum(bool(n) for n in near)
        false += sum(all(e not in n for n in near) for e in events)
    assert found >= 20
    assert false <= 2


def test_events_on_stars_in_jittery_frames_are_found():
    """A frame's misfit is measured where the reference is sharpest, not over a mostly-sky
    sample whose slightly higher noise was multiplied up at every bright star: 27 of 32
    events (flares, eclipses, supernovae on stars) in eight 128² stacks (24 before), at most
    one false event."""
    found, n, false = 0, 0, 0
    for seed in range(8):
        sim = simulate_stack(120, 128, seed=seed, snr=(12, 30),
                             events={"flare": 2, "eclipse": 1, "supernova": 1})
        events = search_stack(sim.as_stack()).events
        near = [[e for e in events if np.hypot(e.x - t.x, e.y - t.y) < 3
                 and e.frame_start <= t.f_end + 2 and e.frame_end >= t.f_start - 2]
                for t in sim.events]
        found += sum(bool(m) for m in near)
        n += len(sim.events)
        false += sum(all(e not in m for m in near) for e in events)
    assert n == 32 and found >= 26
    assert false <= 2


def _pointing_steps(n: int = 1282, every: int = 70, seed: int = 0):
    """A sector of 30-minute cadences with a one-day gap half-way and the pointing jumping
    at every ``every``-th frame (a momentum dump); the residual of an undersampled star
    stepping with it — periodic in the sub-pixel phase of the pointing, up to ±4 noise σ —
    and white noise σ = 1."""
    rng = np.random.default_rng(seed)
    times = 1325.3 + np.arange(n) / 48.0
    times[n // 2:] += 1.0
    segment = np.arange(n) // every
    pointing = np.cumsum(rng.normal(0, 0.4, (segment.max() + 1, 2)), axis=0)
    shifts = pointing[segment] + rng.normal(0, 0.01, (n, 2))
    steps = 4 * np.sin(2 * np.pi * (shifts[:, 1] + 0.3)) * np.cos(2 * np.pi * shifts[:, 0])
    return times, shifts, steps + rng.normal(0, 1, n)


def _whole_stack_candidate(times: np.ndarray, diff_flux: np.ndarray) -> Event:
    n = len(times)
    return Event(kind="variable", x=10.0, y=10.0, frame_start=0, frame_peak=0,
                 frame_end=n - 1, t_start=float(times[0]), t_peak=float(times[0]),
                 t_end=float(times[-1]), peak_sigma=1.0, sign=1, n_detections=1, flux=0.0,
                 area=1.0, elongation=1.0, frames=np.array([0]),
                 lightcurve={"time": times, "diff_flux": diff_flux})


def test_a_residual_stepping_with_the_pointing_is_no_variable_star():
    """Over a sector, a star's residual steps at each momentum dump by more than a quadratic
    in the pointing takes out: judged without each pointing segment's level, it does not
    wander (before, it strayed 10σ and made a false variable); a ±3σ sine of period one day
    on top of the same steps still does. Where the pointing is not measured (a frame under
    24 px), the momentum dumps' quality flags split the segments."""
    from reaper_core.events import VARIABLE_SIGMA, pointing_segments, wander
    from reaper_core.tess import MOMENTUM_DUMP

    times, shifts, flux = _pointing_steps()
    seg = pointing_segments(times, shifts)
    # A new segment at each of the 18 dumps and at the gap (which falls at frame 641, inside
    # the tenth pointing: 20 in all); the jitter alone starts none.
    assert seg.max() == 19 and np.array_equal(np.flatnonzero(np.diff(seg)) + 1,
                                              np.union1d(np.arange(70, 1282, 70), [641]))
    z = wander(_whole_stack_candidate(times, flux), shifts)
    assert z is None or np.nanmax(np.abs(z)) < VARIABLE_SIGMA
    sine = 3 * np.sin(2 * np.pi * (times - times[0]))
    z = wander(_whole_stack_candidate(times, flux + sine), shifts)
    assert z is not None and np.nanmax(np.abs(z)) >= VARIABLE_SIGMA  # 9.5
    # A frame too small to measure its pointing (shifts 0): the dumps' quality flags split it.
    quality = np.zeros(len(times), np.int32)
    quality[70::70] = MOMENTUM_DUMP | 128
    still = np.zeros_like(shifts)
    assert np.array_equal(pointing_segments(times, still, quality), seg)
    assert pointing_segments(times, still).max() == 1  # the gap alone
    ev = _whole_stack_candidate(times, flux)
    ev.lightcurve["quality"] = quality
    z = wander(ev, still, mesh_sky=False)
    assert z is None or np.nanmax(np.abs(z)) < VARIABLE_SIGMA


def _search_with_sine(n_frames: int, size: int, seed: int, x: float, y: float, add: bool,
                      amplitude: float = 12.0):
    """The events of a simulated stack without events, with (``add``) a source at (x, y)
    varying as a sine of period 1 day, ``amplitude`` σ of the matched filter at its extremes
    (:func:`~reaper_core.simulate_stack.add_sine_star`); and the sine, shape (n_frames,)
    (None without it)."""
    sim = simulate_stack(n_frames, size, seed=seed, events={})
    wave = add_sine_star(sim, x, y, amplitude) if add else None
    return search_stack(sim.as_stack()).events, wave


def test_a_variable_star_in_a_cube_too_small_for_a_mesh_sky():
    """A TESScut-sized cube (32² px, 300 frames): a star varying as a ±12σ sine is one
    ``variable`` (left out before: a sector's stack of such cubes made false variables until
    each pointing segment's straight line was taken out of a candidate's light curve), and
    the cube without it has none."""
    with_it, _ = _search_with_sine(300, 32, 1, 15.7, 16.2, add=True)
    without, _ = _search_with_sine(300, 32, 1, 15.7, 16.2, add=False)
    near = [e for e in with_it if np.hypot(e.x - 15.7, e.y - 16.2) < 1.5]
    assert [e.kind for e in near] == ["variable"]
    assert not any(e.kind == "variable" for e in without)


def test_a_star_varying_through_the_whole_stack_is_a_variable():
    """A source that varies as a sine (period 1 day, ±12σ of the matched filter at its
    extremes) through all 150 frames has no quiet stretch for an event to stand out of, and
    its own scatter sets its pixels' noise: the frame-by-frame search finds nothing there (nor
    did the code before this check). Its S/N wandering smoothly from frame to frame
    (:class:`~reaper_core.events.Coherence`) makes it one ``variable`` event whose light curve
    follows the sine; the same stack without it gives the same events as with it, less that
    one."""
    from reaper_core.events import VARIABLE_SIGMA, Coherence

    with_it, wave = _search_with_sine(150, 96, 11, 47.3, 52.6, add=True)
    without, _ = _search_with_sine(150, 96, 11, 47.3, 52.6, add=False)
    near = [e for e in with_it if np.hypot(e.x - 47.3, e.y - 52.6) < 1.5]
    assert [e.kind for e in near] == ["variable"]
    assert near[0].lc_sigma >= VARIABLE_SIGMA
    lc = near[0].lightcurve["diff_flux"]
    ok = np.isfinite(lc)
    assert np.corrcoef(lc[ok], wave[ok])[0, 1] > 0.8  # 0.87
    assert not any(np.hypot(e.x - 47.3, e.y - 52.6) < 3 for e in without)
    assert sorted((e.kind, round(e.x), round(e.y)) for e in with_it if e is not near[0]) == \
        sorted((e.kind, round(e.x), round(e.y)) for e in without)
    # Noise alone wanders 0 on average, a sine of amplitude a by a² / 2.
    rng = np.random.default_rng(0)
    c = Coherence()
    for i in range(400):
        snr = rng.normal(size=(4, 4)).astype(np.float32)
        snr[0, 0] += 4 * np.sin(2 * np.pi * i / 50)
        c.add(i, None if i == 200 else snr)
    v = c.smooth_variance()
    assert abs(v[1:, 1:].mean()) < 0.05 and v[0, 0] == pytest.approx(8, rel=0.15)


def test_missing_pixels_and_empty_cadences_make_no_event():
    """A masked column and cadences held as NaN (as a TESScut cube holds its off-detector
    pixels and its lost cadences): the events are found and nothing else (two false events
    along the column and one from the empty cadences before, and a warning per frame measured
    against an empty anchor); an empty cadence is NaN in the light curves."""
    import warnings

    sim = simulate_stack(100, 40, seed=1, snr=(30, 60),
                         events={"flare": 1, "eclipse": 1, "glint": 1})
    stack = sim.as_stack()
    stack.cube[:, :, 5] = np.nan
    stack.cube[::7] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = search_stack(stack).events
    assert not [w for w in caught if "empty" in str(w.message)]
    found = [[e for e in events if np.hypot(e.x - t.x, e.y - t.y) < 3
              and e.frame_start <= t.f_end + 2 and e.frame_end >= t.f_start - 2]
             for t in sim.events]
    assert all(found)
    assert len(events) == len(sim.events)
    assert np.isnan(events[0].lightcurve["diff_flux"][::7]).all()
    assert np.isfinite(events[0].lightcurve["diff_flux"][1::7]).all()


def test_a_stack_without_data_is_one_sentence():
    sim = simulate_stack(6, 40, seed=1, events={})
    stack = sim.as_stack()
    stack.cube[:] = np.nan
    with pytest.raises(StackError, match="none of its 6 frames holds any data"):
        search_stack(stack)


def test_purity_tells_a_dipole_from_an_event():
    """An event's difference at its peak is of its own sign; a star's residual where the frame
    is misaligned is a dipole, as much below as above."""
    from reaper_core.events import Event, purity

    yy, xx = np.mgrid[0:32, 0:32]

    def psf(x0: float, y0: float) -> np.ndarray:
        return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 0.85**2)).astype(np.float32)

    def event(cut: np.ndarray, sign: int) -> Event:
        return Event(kind="transient", x=40.3, y=20.0, frame_start=3, frame_peak=3,
                     frame_end=3, t_start=0, t_peak=0, t_end=0, peak_sigma=8, sign=sign,
                     n_detections=1, flux=1, area=4, elongation=1, strip=cut[None],
                     strip_frames=np.array([3]))

    flare = psf(16.3, 16)
    assert purity(event(flare, 1)) == pytest.approx(1.0)
    assert purity(event(-flare, -1)) == pytest.approx(1.0)  # an eclipse
    assert purity(event(-flare, 1)) == pytest.approx(-1.0)
    dipole = psf(16.8, 16) - psf(15.8, 16)  # a star shifted by one pixel against its reference
    assert abs(purity(event(dipole, 1))) < 0.05
    assert purity(event(dipole + 2 * flare, 1)) > 0.35  # a flare on that star stands out


def test_a_mover_needs_a_steady_track():
    """Three noise detections that happen to lie on a line are no mover; four in five
    consecutive frames are."""
    from reaper_core.events import classify

    def det(frames, xs):
        n = len(frames)
        return {"frame": np.array(frames, float), "x": np.array(xs, float),
                "y": np.full(n, 50.0), "sign": np.ones(n)}

    three = det([10, 11, 13], [20, 22, 26])
    assert classify(three, np.arange(3))[0] == "transient"
    four = det([10, 11, 13, 14], [20, 22, 26, 28])
    kind, rate = classify(four, np.arange(4))
    assert kind == "mover" and rate == pytest.approx(2.0)
    sparse = det([10, 13, 17, 20], [20, 26, 34, 40])  # 4 of 11 frames
    assert classify(sparse, np.arange(4))[0] == "transient"


def test_a_moving_line_of_dimmings_is_no_mover():
    """A moving object brightens what it crosses; dimmings lined up at a steady rate (star
    residuals in successive frames) make no event, the same track brightening a mover."""
    from reaper_core.events import make_events

    def det(sign):
        f = np.arange(10, 15)
        return {"frame": f.astype(float), "x": 20.0 + 1.5 * (f - 10), "y": np.full(5, 50.0),
                "sign": np.full(5, float(sign)), "sigma": np.full(5, 8.0),
                "flux": np.full(5, sign * 50.0), "area": np.full(5, 6.0),
                "elongation": np.ones(5)}

    times = 1325.0 + np.arange(30) / 48
    bright, = make_events(det(1), times)
    assert bright.kind == "mover" and bright.sign == 1
    assert make_events(det(-1), times) == []


def test_aperture_off_the_frame_is_empty():
    """A mover's track extended past the frame's edge measures nothing there (it raised
    'negative dimensions' before)."""
    from reaper_core.events import _aperture

    assert len(_aperture((64, 64), -10.0, 30.0, 2.0)) == 0
    assert len(_aperture((64, 64), 30.0, 80.0, 2.0)) == 0
    assert len(_aperture((64, 64), 30.0, 30.0, 2.0)) == 13


def test_each_kind_is_linked_as_expected(kinds_sim, kinds_found):
    events = kinds_found.events
    for truth in kinds_sim.events:
        if truth.kind == "satellite":  # matched anywhere along its streak
            t = np.linspace(0, 1, 100)
            sx = 2 * truth.x - truth.x_end + t * 2 * (truth.x_end - truth.x)
            sy = 2 * truth.y - truth.y_end + t * 2 * (truth.y_end - truth.y)
            near = [e for e in events if np.hypot(sx - e.x, sy - e.y).min() < 4]
        elif truth.kind == "asteroid":
            near = [e for e in events if e.kind == "mover"
                    and np.hypot(e.x_end - truth.x_end, e.y_end - truth.y_end) < 4]
        else:
            near = [e for e in events if np.hypot(e.x - truth.x, e.y - truth.y) < 3
                    and e.frame_start <= truth.f_end + 2 and e.frame_end >= truth.f_start - 2]
        assert near, f"{truth.kind} at ({truth.x:.0f}, {truth.y:.0f}) not found"
        best = max(near, key=lambda e: e.peak_sigma)
        # A flare that fades within one frame is seen once, like a glint. A supernova that lasts
        # much of the stack is partly in the reference, leaving dips beside its rise: it may be
        # called variable (a known shortfall: benchmarks/timeline.py counts it).
        allowed = {truth.expected, "single_frame"} if truth.kind == "flare" else \
            {truth.expected, "variable"} if truth.kind == "supernova" else {truth.expected}
        assert best.kind in allowed, (truth.kind, best.kind)
        if truth.kind == "asteroid":
            true_rate = np.hypot(truth.x_end - truth.x, truth.y_end - truth.y) / (
                truth.f_end - truth.f_peak) * 48  # px per frame × 48 frames a day
            assert best.rate == pytest.approx(true_rate, rel=0.2)


def test_the_search_on_threads_equals_it_on_one(kinds_sim, kinds_found, monkeypatch):
    """Frames are differenced on every core and taken in order: the events, their light
    curves and strips are those of one thread's search."""
    import warnings

    from reaper_core import parallel

    monkeypatch.setattr(parallel, "compute_threads", lambda: 2)
    filters = list(warnings.filters)
    search_stack(kinds_sim.as_stack())
    assert warnings.filters == filters  # no thread left a warnings filter behind
    monkeypatch.setattr(parallel, "compute_threads", lambda: 1)
    one = search_stack(kinds_sim.as_stack())
    assert len(one.events) == len(kinds_found.events) > 0
    assert np.array_equal(one.shifts, kinds_found.shifts)
    for a, b in zip(one.events, kinds_found.events, strict=True):
        assert (a.kind, a.x, a.y, a.frame_peak, a.peak_sigma, a.lc_sigma) == (
            b.kind, b.x, b.y, b.frame_peak, b.peak_sigma, b.lc_sigma)
        assert np.array_equal(a.lightcurve["diff_flux"], b.lightcurve["diff_flux"],
                              equal_nan=True)
        assert np.array_equal(a.strip, b.strip)


def test_frames_are_mapped_in_order_with_few_ahead(monkeypatch):
    """``map_ordered`` yields in order, draws its items in the calling thread (files are read
    there), holds no more results ahead of its caller than it has threads (a long stack's
    differences never pile up), and raises what a frame raised."""
    import threading
    import time

    from reaper_core import parallel

    monkeypatch.setattr(parallel, "compute_threads", lambda: 2)
    lock, started = threading.Lock(), []

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))
        return i * i

    drawn_in = set()

    def items():
        for i in range(40):
            drawn_in.add(threading.get_ident())
            yield i

    out = []
    for i, v in enumerate(parallel.map_ordered(work, items())):
        with lock:
            assert max(started) <= i + 2  # this one, and at most two begun ahead
        out.append(v)
    assert out == [i * i for i in range(40)]
    assert drawn_in == {threading.get_ident()}

    def bad(i: int) -> int:
        if i == 5:
            raise ValueError("frame 5 is unreadable")
        return i

    with pytest.raises(ValueError, match="frame 5"):
        list(parallel.map_ordered(bad, range(10)))


def test_peak_purity_of_the_search_is_the_purity_of_the_cutout(kinds_found):
    """Each event's purity measured on its frame's difference while searching equals the one
    of its stored cutout (which decides whether it is kept)."""
    from reaper_core.events import purity

    still = [e for e in kinds_found.events if e.kind != "mover"]
    assert len(still) >= 4
    for e in still:
        assert e.peak_purity == pytest.approx(purity(e), abs=1e-9)


def test_light_curve_pass_measures_pure_candidates_and_bounded_probes(kinds_sim, monkeypatch):
    """Candidates that are a dipole at their peak are never made events nor measured; the
    noise of each frame is read at a bounded, evenly spread set of places among all the
    candidates; the light curves summed at once equal the difference summed over each
    aperture frame by frame."""
    from reaper_core import events as ev_mod
    from reaper_core.difference import difference as make_difference

    seen = {}
    real_measure = ev_mod.measure
    real_make = ev_mod.make_events

    def spy_make(*args, **kwargs):
        seen["events"] = real_make(*args, **kwargs)
        seen["places"] = kwargs["places"]
        return seen["events"]

    def spy_measure(stack, ref, events, shifts, **kwargs):
        seen.update(measured=list(events), probes=kwargs["probes"], ref=ref, shifts=shifts)
        return real_measure(stack, ref, events, shifts, **kwargs)

    monkeypatch.setattr(ev_mod, "make_events", spy_make)
    monkeypatch.setattr(ev_mod, "measure", spy_measure)
    monkeypatch.setattr(ev_mod, "MAX_NOISE_PROBES", 3)
    stack = kinds_sim.as_stack()
    res = search_stack(stack)
    # The single frames' candidates, then those of the bins of frames, then the candidate
    # variable stars (measured whatever their purity: their peak is known only once every
    # frame was searched; the purity of a kept one is measured on its cutout).
    n_frames = len(seen["events"])
    measured = seen["measured"]
    assert measured[:n_frames] == seen["events"]
    rest = measured[n_frames:]
    n_binned = sum(e.binned > 1 for e in rest)
    assert all(e.binned > 1 for e in rest[:n_binned])
    wandering = {id(e) for e in rest[n_binned:]}
    assert all(e.binned == 1 and e.n_detections == 1 for e in rest[n_binned:])
    assert len(wandering) <= ev_mod.MAX_VARIABLES
    still = [e for e in seen["events"] if e.kind != "mover"]
    assert all(e.peak_purity >= ev_mod.MIN_PURITY for e in measured
               if e.kind != "mover" and id(e) not in wandering)
    assert all(e.peak_purity >= ev_mod.MIN_PURITY for e in res.events if e.kind != "mover")
    assert len(seen["places"]) >= len(still)  # every still candidate's place, kept or not
    # Probes: one per place among all still candidates, at most 3, first and last kept.
    assert len(seen["probes"]) == 3
    monkeypatch.setattr(ev_mod, "MAX_NOISE_PROBES", 10**9)
    every = ev_mod.noise_probes(seen["places"])
    assert len(every) > 3 and seen["probes"][0] == every[0] and seen["probes"][-1] == every[-1]
    # One still event's light curve against the difference summed over its aperture.
    e = next(e for e in res.events if e.kind != "mover")
    ap = ev_mod._aperture(seen["ref"].image.shape, e.x, e.y, ev_mod.APERTURE_PX)
    for i in (0, e.frame_peak, len(stack) - 1):
        d = make_difference(stack.frame(i), seen["ref"], shift=tuple(seen["shifts"][i]))
        assert e.lightcurve["diff_flux"][i] == pytest.approx(float(d.diff.ravel()[ap].sum()),
                                                             rel=1e-5, abs=1e-6)
        assert e.lightcurve["diff_flux_err"][i] == pytest.approx(
            float(np.sqrt((d.sigma.ravel()[ap].astype(float) ** 2).sum())), rel=1e-6)


def test_a_dipole_candidate_is_a_place_but_no_event():
    """With a least purity, a still candidate below it is not made an event but its place is
    recorded; a mover is never judged by it."""
    from reaper_core.events import make_events

    def det(purity: float) -> dict[str, np.ndarray]:
        return {"frame": np.array([40.0, 41.0]), "x": np.array([20.0, 20.1]),
                "y": np.array([30.0, 30.0]), "sign": np.array([1.0, 1.0]),
                "sigma": np.array([9.0, 7.0]), "flux": np.array([9.0, 7.0]),
                "area": np.array([5.0, 5.0]), "elongation": np.array([1.0, 1.0]),
                "purity": np.array([purity, 1.0])}

    times = 1325.0 + np.arange(100) / 48
    places: list = []
    assert make_events(det(0.1), times, min_purity=0.35, places=places) == []
    assert places == [(times[40], 30.0, 20.0)]
    kept, = make_events(det(0.9), times, min_purity=0.35, places=places)
    assert kept.kind == "transient" and kept.peak_purity == pytest.approx(0.9)
    assert len(places) == 2
    assert len(make_events(det(0.1), times)) == 1  # no least purity: every candidate


def test_candidates_beyond_the_budgets_are_measured_in_batches_and_cut_if_they_survive(
        kinds_sim, kinds_found, monkeypatch):
    """Over the strip budget, the light-curve pass cuts each candidate's peak cutout only and
    a third pass cuts the strips of the events that survive; over the light-curve budget,
    the candidates are measured in several passes (the probes with the first): the same
    events, strips and light curves as when every candidate is measured and cut at once."""
    from reaper_core import events as ev_mod

    calls: list[tuple[int, bool, set]] = []
    seen: dict = {}
    real_measure, real_cut = ev_mod.measure, ev_mod.cut_strips

    def spy_measure(stack, ref, events, shifts, **kwargs):
        out = real_measure(stack, ref, events, shifts, **kwargs)
        calls.append((len(events), kwargs["probes"] is not None, {len(e.strip) for e in events}))
        return out

    def spy_cut(stack, ref, events, shifts, **kwargs):
        seen["cut"] = len(events)
        return real_cut(stack, ref, events, shifts, **kwargs)

    monkeypatch.setattr(ev_mod, "measure", spy_measure)
    monkeypatch.setattr(ev_mod, "cut_strips", spy_cut)
    monkeypatch.setattr(ev_mod, "STRIP_BUDGET_BYTES", 0)
    # Room for 5 candidates at a time: 12 bytes a frame and a 32² cutout each.
    monkeypatch.setattr(ev_mod, "LIGHTCURVE_BUDGET_BYTES", 5 * (12 * 120 + 4 * 32**2))
    got = search_stack(kinds_sim.as_stack()).events
    measured = sum(c[0] for c in calls)
    assert len(calls) == -(-measured // 5) >= 3 and all(c[0] == 5 for c in calls[:-1])
    assert [c[1] for c in calls] == [True] + [False] * (len(calls) - 1)
    assert set().union(*(c[2] for c in calls)) == {1}  # the peak's cutout only
    assert len(got) <= seen["cut"] < measured
    assert len(got) == len(kinds_found.events)
    for a, b in zip(got, kinds_found.events, strict=True):
        assert (a.kind, a.x, a.y, a.frame_start, a.frame_end, a.lc_sigma) == (
            b.kind, b.x, b.y, b.frame_start, b.frame_end, b.lc_sigma)
        assert len(a.strip) > 1
        np.testing.assert_array_equal(a.strip_frames, b.strip_frames)
        np.testing.assert_array_equal(a.strip, b.strip)
        for key, col in b.lightcurve.items():
            np.testing.assert_array_equal(a.lightcurve[key], col)


def test_frame_factors_are_the_median_normalised_scatter_of_the_probes():
    """A frame's factor: the robust σ over the places of their flux less its median, each in
    units of its own robust σ; places with fewer than 10 frames of data left out; ≥ 1."""
    from reaper_core.difference import robust_std
    from reaper_core.events import frame_factors

    rng = np.random.default_rng(3)
    flux = rng.normal(0, 1, (60, 80)) * rng.uniform(0.5, 20, (60, 1)) + rng.normal(0, 50, (60, 1))
    flux[:, 7] *= 3.0  # a frame three times noisier than usual
    flux[rng.random(flux.shape) < 0.05] = np.nan
    flux[5, 12:] = np.nan  # a place with 12 frames of data, left out
    rows = []
    for d in flux:
        ok = np.isfinite(d)
        if ok.sum() >= 10:
            rows.append(np.abs(d - np.median(d[ok])) / robust_std(d[ok]))
    want = np.maximum(1.4826 * np.nanmedian(np.array(rows), axis=0), 1.0)
    got = frame_factors(flux)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[7] > 2.5 and np.median(got) < 1.3
    np.testing.assert_array_equal(frame_factors(flux[:9]), np.ones(80))  # too few places


def test_noise_probes_are_fewer_in_a_long_stack():
    """At most MAX_NOISE_PROBES places, and at most NOISE_PROBE_VALUES fluxes in all, but
    never fewer than MIN_NOISE_PROBES; spread evenly, the first and last kept."""
    from reaper_core import events as ev_mod

    places = [(float(i), 4.0 * (i // 100), 4.0 * (i % 100)) for i in range(6000)]
    every = ev_mod.noise_probes(places, 0)
    assert len(every) == ev_mod.MAX_NOISE_PROBES
    for n, want in ((200, 4000), (800, 1000), (5000, ev_mod.MIN_NOISE_PROBES)):
        got = ev_mod.noise_probes(places, n)
        assert len(got) == min(ev_mod.MAX_NOISE_PROBES,
                               max(ev_mod.MIN_NOISE_PROBES, ev_mod.NOISE_PROBE_VALUES // n))
        assert len(got) == want and got[0] == (0.0, 0.0) and got[-1] == (396.0, 236.0)


def test_detections_have_both_signs(kinds_sim):
    stack = kinds_sim.as_stack()
    ref = build_reference(stack)
    eclipse = next(e for e in kinds_sim.events if e.kind == "eclipse")
    det = detect(difference(stack.frame(eclipse.f_peak), ref), frame=eclipse.f_peak)
    near = np.hypot(det["x"] - eclipse.x, det["y"] - eclipse.y) < 3
    assert (det["sign"][near] == -1).any()


# -- store, command line, export -------------------------------------------------------------
@pytest.fixture(scope="module")
def stack_db(tmp_path_factory, kinds_sim):
    folder = tmp_path_factory.mktemp("stackdb")
    files = kinds_sim.write(folder / "frames")
    url = f"sqlite:///{folder}/db.sqlite"
    assert main(["events", *map(str, files), "--db-url", url]) == 0
    return url, folder, files


def test_events_command_lists_and_exports_the_contract(stack_db, capsys, tmp_path):
    url, _, _ = stack_db
    capsys.readouterr()
    assert main(["stacks", "--db-url", url]) == 0
    out = capsys.readouterr().out
    assert "sector 1, camera 1, CCD 1" in out and "120" in out
    assert main(["events", "--db-url", url, "--kind", "mover"]) == 0
    assert "mover" in capsys.readouterr().out
    out_csv = tmp_path / "events.csv"
    assert main(["events", "--db-url", url, "-o", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert rows and set(CONTRACT) <= set(rows[0])
    assert {r["kind"] for r in rows} <= {"transient", "variable", "mover", "single_frame"}
    # How many frames each detection summed: 1 in single frames, else a bin's length.
    assert {r["binned"] for r in rows} <= {"1", *(str(b) for b in BIN_FRAMES)}
    movers = [r for r in rows if r["kind"] == "mover"]
    assert movers and all(r["x_end"] and r["y_end"] for r in movers)
    for r in rows:
        assert float(r["t_start"]) <= float(r["t_peak"]) <= float(r["t_end"])
        assert 1325 < float(r["t_peak"]) < 1330  # BTJD: 120 half-hours and a 1-day gap
        assert -90 <= float(r["dec"]) <= 90
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for suffix in ("fits", "vot"):
        path = tmp_path / f"events.{suffix}"
        assert main(["events", "--db-url", url, "-o", str(path)]) == 0
        t = Table.read(path, format="fits" if suffix == "fits" else "votable")
        assert len(t) == len(rows) and set(CONTRACT) <= set(t.colnames)
    # Each event's light-curve significance is stored and exported: at least what kept it.
    for r in rows:
        least = (LC_FRACTION * SINGLE_FRAME_SIGMA if r["kind"] == "single_frame"
                 else LC_FRACTION_SEVERAL * MIN_SIGMA)
        assert r["kind"] == "mover" or float(r["lc_sigma"]) >= least
    lc_path = tmp_path / "lc.fits"
    assert main(["events", "--db-url", url, "--lightcurve", rows[0]["id"], "-o",
                 str(lc_path)]) == 0
    lc = Table.read(lc_path)
    assert len(lc) == 120 and {"time", "diff_flux", "diff_flux_err", "flux"} <= set(lc.colnames)


def test_events_described_by_older_features_are_described_again(stack_db, tmp_path):
    """Events stored with features of another length — an older definition of the embedder's
    features, or another embedder — are described again from their stored strips when the
    event model is next fitted, as they were first described, and every event is ranked
    (before, only those of the newest length were; the others kept their old scores)."""
    import shutil

    from reaper_core import store
    from reaper_core.timedomain import fit_event_model

    _, folder, _ = stack_db
    for f in folder.glob("db.sqlite*"):  # (with its write-ahead log)
        shutil.copy(f, tmp_path / f.name)
    url = f"sqlite:///{tmp_path}/db.sqlite"
    engine = store.make_engine(url)
    rows = store.event_rows(engine, features=True)
    first = {r.id: np.frombuffer(r.features, np.float32) for r in rows}
    older = [r.id for r in rows[::2]]
    store.write_event_features(engine, older, np.stack([
        np.concatenate([first[i][:-10], np.ones(4, np.float32), first[i][-10:]])
        for i in older]))  # four features more before the light curve's ten
    model = fit_event_model(engine, Settings(db_url=url))
    again = {r.id: np.frombuffer(r.features, np.float32)
             for r in store.event_rows(engine, features=True)}
    assert model.n_train == len(rows) >= 3
    for i, v in first.items():
        np.testing.assert_allclose(again[i], v, rtol=1e-5, atol=1e-6)
    assert all(r.score is not None for r in store.event_rows(engine))
    engine.dispose()


def test_events_x_y_are_stored_pixels(stack_db, kinds_sim):
    """x, y are 0-based pixels of the array as stored: the glint is where it was put."""
    url, _, _ = stack_db
    cols = Reaper(Settings(db_url=url)).events(kind="single_frame")
    glint = next(e for e in kinds_sim.events if e.kind == "glint")
    d = np.hypot(cols["x"].astype(float) - glint.x, cols["y"].astype(float) - glint.y)
    assert d.min() < 1.0


def test_labels_and_threshold_of_events(stack_db):
    url, _, _ = stack_db
    r = Reaper(Settings(db_url=url))
    eid = int(r.events()["id"][0])
    r.label_event(eid, "interesting", "<b>odd</b>")
    assert r.event(eid).label == "interesting"
    row = r.save_event_threshold("sigma", 0.5)
    cols = r.events()
    scores = np.array(cols["score"], float)
    assert np.array_equal(cols["is_anomaly"].astype(bool), scores > row.threshold)
    # A few events still rank: the model keeps ≥ 4 events per component, so it does not
    # rebuild each one exactly (every score 0 before).
    assert row.n_components <= max(1, len(scores) // 4)
    assert (scores > 1e-6).all() and len(set(np.round(scores, 9))) == len(scores)
    with pytest.raises(Exception, match="label must be one of"):
        r.label_event(eid, "great")


def test_a_normal_label_on_an_event_sinks_it_and_is_undone(stack_db):
    """Labels work for events as for cutouts: an event called normal (or an artefact) counts
    in the event model's fit and damps what is like it — at once, the model is re-fitted."""
    url, _, _ = stack_db
    r = Reaper(Settings(db_url=url))
    before = r.events()
    top = int(before["id"][0])
    old = {int(i): float(s) for i, s in zip(before["id"], before["score"], strict=True)}
    r.label_event(top, "artefact")
    after = r.events()
    new = {int(i): float(s) for i, s in zip(after["id"], after["score"], strict=True)}
    assert new[top] < 1e-3 * old[top] and int(after["id"][0]) != top
    r.label_event(top, "interesting")  # a label that does not damp: the ranking as before
    again = r.events()
    assert int(again["id"][0]) == top
    assert np.allclose([float(s) for s in again["score"]], [old[int(i)] for i in again["id"]])
    r.label_event(top, None)


def test_events_are_labelled_from_the_command_line(stack_db, capsys):
    url, _, _ = stack_db
    r = Reaper(Settings(db_url=url))
    ids = [int(i) for i in r.events()["id"][:2]]
    assert main(["events", "--db-url", url, "--label", *map(str, ids), "--as", "normal"]) == 0
    assert "labelled normal 2 events" in capsys.readouterr().out
    cols = r.events()
    assert {int(i) for i in cols["id"][-2:]} == set(ids)  # they sink to the bottom
    assert main(["events", "--db-url", url, "--label", *map(str, ids), "--as", "none"]) == 0
    assert all(r.event(i).label is None for i in ids)
    capsys.readouterr()
    assert main(["events", "--db-url", url, "--label", str(ids[0]), "--as", "great"]) != 0
    assert "--as must be one of" in capsys.readouterr().err
    assert main(["events", "--db-url", url, "--label", "999999", "--as", "normal"]) != 0
    assert "no event with id 999999" in capsys.readouterr().err
    # One transaction: with one id missing, none is labelled.
    assert main(["events", "--db-url", url, "--label", str(ids[0]), "999999", "--as",
                 "artefact"]) != 0
    assert "no event with id 999999" in capsys.readouterr().err
    assert r.event(ids[0]).label is None


def test_faint_strange_detections_rank_below_significant_events():
    """The event ranking weighs strangeness by significance: faint detections that look odd
    (a star's residual beside a 5σ blip) no longer head the list above real events; among
    events of one significance the stranger still ranks first."""
    from sklearn.metrics import roc_auc_score

    from reaper_core.timedomain import rank_events

    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (60, 12))
    junk = rng.normal(0, 1, (8, 12))
    junk[np.arange(8), rng.permutation(12)[:8]] += 8.0  # each odd-looking in its own way
    X = np.vstack([real, junk])
    sigma = np.r_[rng.uniform(8, 60, 60), rng.uniform(5, 6.5, 8)]
    is_real = np.r_[np.ones(60), np.zeros(8)]
    det, scores, threshold = rank_events(X, sigma, "sigma", 2.0)
    assert roc_auc_score(is_real, det.train_anomaly_scores_) < 0.2  # strangeness alone
    assert roc_auc_score(is_real, scores) > 0.9
    assert np.isfinite(threshold) and (scores > threshold).any()
    same = np.full(len(X), 10.0)  # one significance: strangeness decides
    _, s_same, _ = rank_events(X, same, "sigma", 2.0)
    assert roc_auc_score(is_real, s_same) < 0.2


def test_an_event_weak_in_its_light_curve_ranks_by_the_weaker_significance():
    """An event is as significant as the weaker of its detection S/N and its light-curve
    significance: of two events alike but for a light curve that barely holds one, that one
    ranks lower (by the detection S/N alone they tied)."""
    from reaper_core.events import significance
    from reaper_core.timedomain import rank_events

    assert significance([12.0, 12.0, 7.0], [12.0, 4.5, None]).tolist() == [12.0, 4.5, 7.0]
    X = np.random.default_rng(1).normal(0, 1, (40, 8))
    X[1] = X[0]  # the two events look alike
    peak = np.full(40, 12.0)
    lc = np.full(40, 12.0)
    lc[1] = 4.5
    _, by_peak, _ = rank_events(X, peak, "sigma", 2.0)
    assert by_peak[0] == by_peak[1]
    _, scores, _ = rank_events(X, significance(peak, lc), "sigma", 2.0)
    assert scores[1] < 0.5 * scores[0]


def test_a_normal_label_sinks_a_more_significant_look_alike():
    """Labels damp an event's score, not only its strangeness: a look-alike of an event called
    normal sinks below ordinary events even when it is 1.5 times as significant as they are
    (with the damping inside the strangeness, whose fourth root the score takes, it stayed on
    top)."""
    from reaper_core.timedomain import rank_events

    rng = np.random.default_rng(2)
    X = rng.normal(0, 1, (40, 8))
    X[0] += 6.0  # an odd pair of events, alike
    X[1] = X[0] + rng.normal(0, 0.5, 8)
    sigma = np.full(40, 10.0)
    sigma[1] = 15.0
    _, before, _ = rank_events(X, sigma, "sigma", 2.0)
    assert np.argmax(before) == 1
    normal = np.zeros(40, bool)
    normal[0] = True
    _, after, _ = rank_events(X, sigma, "sigma", 2.0, normal=normal)
    assert after[0] == 0.0
    assert after[1] < np.median(after[2:])


def test_stack_forms_on_ingest(tmp_path):
    sim = simulate_stack(6, 96, seed=4, events={"glint": 1}, snr=(40, 40))
    r = Reaper(Settings(db_url=f"sqlite:///{tmp_path}/db.sqlite"))
    r.ingest(sim.write(tmp_path / "frames")[:2])
    assert r.stacks() == []  # two frames are not a stack yet
    r.ingest(sim.write(tmp_path / "frames")[2:])
    info, = r.stacks()
    assert info["frames"] == 6 and info["stack"] == "sector 1, camera 1, CCD 1"


@pytest.mark.skipif(not CUBE.exists(), reason="../shared/data/ is not beside the checkout")
def test_a_tesscut_cube_too_small_to_cut_is_ingested_as_a_stack(tmp_path, spoc_file):
    """The real 5 x 5 px TESScut cube dropped on ingest: added without cutouts (it said 'too
    small' and failed before), searched as the stack it is; files after it are cut, embedded
    and scored as usual."""
    r = Reaper(Settings(db_url=f"sqlite:///{tmp_path}/db.sqlite"))
    report = r.ingest([CUBE])
    res, = report.results
    assert report.ok and res.status == "added" and res.n_cutouts == 0
    assert "stack of frames" in res.message
    assert any("too small to cut" in n for n in res.notes)
    info, = r.stacks()
    assert info["frames"] == 1282 and info["gaps"] == 1
    later = r.ingest([spoc_file])
    assert later.ok and later.results[0].n_cutouts > 50 and later.fitted
    assert r.totals()["files"] == 2
    # A cube too small to cut and too short to be a stack: one sentence, nothing stored.
    short = simulate_stack(2, 8, seed=0, events={}).write_cube(tmp_path / "short_cube.fits")
    bad, = r.ingest([short]).results
    assert bad.status == "error" and bad.message.startswith("short_cube.fits: ")
    assert "2 frames of 8 x 8 px" in bad.message and "at least 3 frames" in bad.message
    assert r.totals()["files"] == 2


# -- the Timeline page -------------------------------------------------------------------------
@pytest.fixture
def timeline(stack_db, monkeypatch):
    url, folder, _ = stack_db
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", url)
    monkeypatch.setenv("ANOMALY_REAPER_UPLOADS_DIR", str(folder / "uploads"))
    monkeypatch.setenv("ANOMALY_REAPER_LOAD_DEMO", "0")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("app_pages/timeline.py").run()
    assert not at.exception, at.exception
    yield at
    st.cache_resource.clear()


def test_timeline_page_scrubs_and_opens_an_event(timeline, kinds_sim):
    at = timeline
    assert "120 frames" in at.caption[0].value and "gap" in at.caption[0].value
    glint = next(e for e in kinds_sim.events if e.kind == "glint")
    at.slider(key="frame-1").set_value(glint.f_peak).run()
    assert not at.exception, at.exception
    frame_fig = at.get("plotly_chart")[0].proto.spec
    assert '"events"' in frame_fig  # the glint is marked on its frame
    at.selectbox(key="event-1").set_value(int(at.selectbox(key="event-1").options[0]
                                              .split(" ")[1])).run()
    assert not at.exception, at.exception
    assert any("light" in c.proto.spec or "difference flux" in c.proto.spec
               for c in at.get("plotly_chart"))
    # An event labelled an artefact on the page sinks in the list at once.
    first = int(at.selectbox(key="event-1").options[0].split(" ")[1])
    at.selectbox(key="event-1").set_value(first).run()
    next(b for b in at.selectbox if b.label == "Label").set_value("artefact")
    next(b for b in at.button if b.label == "Save label").click().run()
    assert not at.exception, at.exception
    assert int(at.selectbox(key="event-1").options[0].split(" ")[1]) != first
    Reaper(Settings(db_url=os.environ["ANOMALY_REAPER_DB_URL"])).label_event(first, None)


def test_an_event_found_in_bins_says_so_on_the_page_and_in_the_export(tmp_path, monkeypatch):
    """The faint supernova found in bins of 16 frames only: stored with its bins' length, the
    Timeline page says its S/N is a bin's, and the export's ``binned`` column holds 16."""
    sim = simulate_stack(160, 96, seed=1, events={"supernova": 1}, snr=(6, 6))
    url = f"sqlite:///{tmp_path}/db.sqlite"
    assert main(["events", *map(str, sim.write(tmp_path / "frames")), "--db-url", url]) == 0
    assert main(["events", "--db-url", url, "-o", str(tmp_path / "events.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "events.csv").open()))
    assert [(r["kind"], r["binned"]) for r in rows] == [("transient", "16")]
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", url)
    monkeypatch.setenv("ANOMALY_REAPER_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("ANOMALY_REAPER_LOAD_DEMO", "0")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        at.switch_page("app_pages/timeline.py").run()
        assert not at.exception, at.exception
        shown = [c.value.replace("\\", "") for c in at.caption]  # plain text, escaped
        assert any("found in 1 bin of 16 frames summed (its S/N the bin's)" in c for c in shown)
    finally:
        st.cache_resource.clear()


def test_timeline_page_says_when_no_event_can_reach_the_threshold(timeline):
    """n scores lie at most (n − 1)/√n standard deviations above their mean: with a handful of
    events a σ threshold above that flags none, and the page says so instead of showing an
    empty column of flags without a reason."""
    from reaper_core.thresholds import sigma_reach

    at = timeline
    n = len(at.selectbox(key="event-1").options)
    assert sigma_reach(5) < 2.0 < sigma_reach(6) and sigma_reach(1) == 0.0
    note = [c.value for c in at.caption if "can stand" in c.value]
    assert bool(note) == (2.0 >= sigma_reach(n))
    at.slider(key="event-threshold").set_value(round(sigma_reach(n) + 0.5, 1)).run()
    assert not at.exception, at.exception
    note, = [c.value for c in at.caption if "can stand" in c.value]
    assert f"With {n} events" in note and "none is flagged" in note
    at.slider(key="event-threshold").set_value(0.5).run()
    assert not [c.value for c in at.caption if "can stand" in c.value]


def test_the_kind_of_a_brightening_is_read_from_its_light_curve():
    """Detections grouped at one place call it a ``variable`` when it brightened in more than
    one detected stretch or dipped somewhere; its light curve tells the module's kinds apart:
    a supernova-like rise and fall with the shallow dips that a reference holding some of it
    leaves before it is one episode, a ``transient``; two flares as strong as each other, or
    a variable star, stay ``variable``s; a flare its detections saw as one episode stays a
    ``transient`` whatever dips a long light curve holds elsewhere; a dimming stays what it
    was."""
    from reaper_core.events import episodes, kind_from_episodes

    n, k = 200, np.arange(200)
    rng = np.random.default_rng(5)

    def event(flux, start, end, kind="variable", sign=1):
        ev = Event(kind, 10, 10, start, start + 5, end, 0, 0, 0, 12.0, sign, 8, 12.0, 6, 1.0)
        ev.lightcurve = {"diff_flux": flux, "quality": np.zeros(n, np.int32)}
        return ev

    sn = rng.normal(0, 1.0, n) + 20 * np.where(k < 110, np.clip((k - 98) / 12, 0, None) ** 2,
                                                np.exp(-(k - 110) / 25))
    sn[70:98] -= 6  # the reference holds some of it: the place looks dimmer before it
    ev = event(sn, 70, 150)
    assert episodes(ev) == (1, 0)
    assert kind_from_episodes(ev) == "transient"

    flares = rng.normal(0, 1.0, n)
    flares[[40, 41, 42]] += [15, 9, 5]
    flares[[120, 121, 122]] += [14, 8, 4]
    ev = event(flares, 40, 122)
    assert episodes(ev) == (2, 0)
    assert kind_from_episodes(ev) == "variable"

    star = rng.normal(0, 1.0, n) + 10 * np.sin(2 * np.pi * k / 100)
    assert kind_from_episodes(event(star, 0, 60)) == "variable"

    flare = rng.normal(0, 1.0, n)
    flare[[40, 41, 42]] += [15, 9, 5]
    flare[150:160] -= 12  # an excursion of the light curve far from the flare
    ev = event(flare, 40, 42, kind="transient")
    assert episodes(ev) == (1, 1)
    assert kind_from_episodes(ev) == "transient"

    dip = rng.normal(0, 1.0, n)
    dip[60:66] -= 10
    assert kind_from_episodes(event(dip, 60, 65, sign=-1)) == "variable"
    # Frames flagged by severe quality bits (a momentum dump's) are no episode.
    spike = sn.copy()
    spike[29:32] += 25
    ev = event(spike, 70, 150)
    assert kind_from_episodes(ev) == "variable"
    ev.lightcurve["quality"][29:32] = 32
    assert kind_from_episodes(ev) == "transient"


ISAAC = REAL_DATA / "other" / "isaac_vlt_crowded_field.fits"
KEPLER = REAL_DATA / "kepler" / "kplr-ffi_ch01_test.fits"


def _isaac_frames(folder: Path, n: int = 8, cards: dict | None = None) -> list[Path]:
    """``n`` frames of the real ISAAC field's first 160² px, ten minutes apart (DATE-OBS,
    EXPTIME and ``cards`` in their headers), jittered by 0.1 px rms with noise, a transient of
    400 counts at (80.3, 90.7) in frames 3–5."""
    from astropy import units as u
    from astropy.time import Time
    from scipy import ndimage

    field = fits.getdata(ISAAC).astype(np.float32)[:160, :160]
    rng = np.random.default_rng(0)
    t0 = Time("2006-04-13T06:00:00", scale="utc")
    yy, xx = np.mgrid[:160, :160]
    paths = []
    for i in range(n):
        frame = ndimage.shift(field, rng.normal(0, 0.1, 2), order=3, mode="nearest")
        frame += rng.normal(0, 3, frame.shape).astype(np.float32)
        if i in (3, 4, 5):
            frame += 400 * np.exp(-((xx - 80.3) ** 2 + (yy - 90.7) ** 2) / (2 * 1.5**2))
        header = fits.Header({"DATE-OBS": (t0 + i * 600 * u.s).isot, "EXPTIME": 60.0,
                              **(cards or {})})
        paths.append(folder / f"f{i}.fits")
        fits.PrimaryHDU(frame.astype(np.float32), header=header).writeto(paths[-1])
    return paths


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_event_in_a_short_stack_of_ground_based_frames_is_found(tmp_path):
    """Eight frames of a real crowded field (VLT/ISAAC), times from DATE-OBS and EXPTIME, a
    transient in three of them: found, of its kind, and first in the ranking. Every frame of
    so short a stack is a sample of its reference, and the event spans more than a fifth of
    them: learned as one of the reference's patterns, it was fitted away (not found). A
    residual that every frame holds alike is no event, though no frame lies outside it."""
    stack = stack_from_files(_isaac_frames(tmp_path))
    assert np.diff(stack.times) * 1440 == pytest.approx(np.full(7, 10.0))
    events = search_stack(stack).events
    hit = [e for e in events if np.hypot(e.x - 80.3, e.y - 90.7) < 1.5]
    assert len(hit) == 1 and hit[0].kind == "transient"
    assert (hit[0].frame_start, hit[0].frame_end) == (3, 5)
    assert hit[0].significance == max(e.significance for e in events)
    # The field's steep glow along its top rows leaves the same residual in every frame, no
    # event (here up to 33σ before): nothing else comes near.
    others = [e.significance for e in events if e is not hit[0]]
    assert max(others, default=0.0) < 15.0


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_frames_of_one_field_stack_on_ingest(tmp_path):
    """Frames that are not TESS's make a stack on ingest when they show one field (the same
    OBJECT, telescope, instrument and size) and have times — the Timeline page then has them;
    frames without an OBJECT never do (unrelated frames of one size are not stacked)."""
    cards = {"OBJECT": "NGC 6334 <b>", "TELESCOP": "ESO-VLT-U1", "INSTRUME": "ISAAC"}
    (tmp_path / "night").mkdir()
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'f.db'}", load_demo=0))
    report = reaper.ingest(_isaac_frames(tmp_path / "night", 8, cards))
    assert all(r.status == "added" for r in report.results)
    stacks = reaper.stacks()
    assert [s["stack"] for s in stacks] == ["NGC 6334 <b> (ESO-VLT-U1 ISAAC)"]
    assert stacks[0]["frames"] == 8
    events = reaper.events()
    assert len(events["id"]) >= 1
    assert np.hypot(events["x"][0] - 80.3, events["y"][0] - 90.7) < 1.5  # first: the transient
    (tmp_path / "anon").mkdir()
    other = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'g.db'}", load_demo=0))
    other.ingest(_isaac_frames(tmp_path / "anon", 4))
    assert other.stacks() == []


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_frames_named_as_space_telescopes_name_them_stack(tmp_path):
    """HST's and JWST's frames name their field TARGNAME, not OBJECT, and ACS its filters
    FILTER1 and FILTER2: such frames stack on ingest, named with them (they never did)."""
    cards = {"TARGNAME": "NGC6334", "TELESCOP": "HST", "INSTRUME": "ACS", "FILTER1": "F606W",
             "FILTER2": "CLEAR2L"}
    (tmp_path / "visit").mkdir()
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'h.db'}", load_demo=0))
    reaper.ingest(_isaac_frames(tmp_path / "visit", 4, cards))
    assert [(s["stack"], s["frames"]) for s in reaper.stacks()] == [
        ("NGC6334 (HST ACS, F606W CLEAR2L)", 4)]


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_frames_of_a_field_through_two_filters_are_two_stacks(tmp_path):
    """A night of one field through J and Ks in turn (in Ks 1.6 times brighter, each star by
    its colour): a stack for each filter, named with it, the transient first in each (88σ and
    29σ). As one stack, every star changed from one frame to the next: a star's colour came
    first (8.6σ), the transient second at 6.7σ."""
    from scipy import ndimage

    cards = {"OBJECT": "NGC 6334", "TELESCOP": "ESO-VLT-U1", "INSTRUME": "ISAAC"}
    (tmp_path / "night").mkdir()
    paths = _isaac_frames(tmp_path / "night", 10, cards)
    # Each star's colour its own: the Ks/J ratio varies over the field by ±25 % (rms).
    smooth = ndimage.gaussian_filter(np.random.default_rng(5).normal(size=(160, 160)), 3)
    colour = 1.6 * (1 + 0.25 * smooth / smooth.std())
    for i, p in enumerate(paths):
        with fits.open(p) as hdul:
            header, frame = hdul[0].header, hdul[0].data
        header["FILTER"] = ("J", "Ks")[i % 2]
        fits.PrimaryHDU((frame * colour if i % 2 else frame).astype(np.float32),
                        header=header).writeto(p, overwrite=True)
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'f.db'}", load_demo=0))
    reaper.ingest(paths)
    stacks = reaper.stacks()
    assert [(s["stack"], s["frames"]) for s in stacks] == [
        ("NGC 6334 (ESO-VLT-U1 ISAAC, J)", 5), ("NGC 6334 (ESO-VLT-U1 ISAAC, Ks)", 5)]
    for stack in stacks:
        events = reaper.events(stack["stack"])
        assert np.hypot(events["x"][0] - 80.3, events["y"][0] - 90.7) < 1.5
        assert events["peak_sigma"][0] > 20


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_each_chip_of_a_mosaic_makes_its_own_stack(tmp_path):
    """Frames of a two-chip camera (each file: the field's header, then its chips' images):
    each chip is a stack of its own on ingest, named with its HDU, its frames read from that
    HDU; the chips of one exposure never stack together (they show other skies)."""
    cards = {"OBJECT": "NGC 6334", "TELESCOP": "ESO-VLT-U1", "INSTRUME": "ISAAC"}
    (tmp_path / "single").mkdir()
    (tmp_path / "night").mkdir()
    paths = []
    for p in _isaac_frames(tmp_path / "single", 8, cards):
        with fits.open(p) as hdul:
            header, frame = hdul[0].header, hdul[0].data
        paths.append(tmp_path / "night" / p.name)
        fits.HDUList([fits.PrimaryHDU(header=header),
                      fits.ImageHDU(frame, name="CHIP1"),
                      fits.ImageHDU(frame[::-1].copy(), name="CHIP2")]).writeto(paths[-1])
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'f.db'}", load_demo=0))
    report = reaper.ingest(paths)
    assert [r.status for r in report.results] == ["added"] * 16
    stacks = reaper.stacks()
    assert [(s["stack"], s["frames"]) for s in stacks] == [
        ("NGC 6334 (ESO-VLT-U1 ISAAC) [1]", 8), ("NGC 6334 (ESO-VLT-U1 ISAAC) [2]", 8)]
    for stack, y in zip(stacks, (90.7, 159 - 90.7), strict=True):
        events = reaper.events(stack["stack"])
        assert np.hypot(events["x"][0] - 80.3, events["y"][0] - y) < 1.5  # first: the transient
    # `anomaly-reaper events FILES` likewise: a stack of each chip.
    other = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'g.db'}", load_demo=0))
    ids = other.search_stack(paths)
    assert [s["stack"] for s in other.stacks()] == [
        "NGC 6334 (ESO-VLT-U1 ISAAC) [1]", "NGC 6334 (ESO-VLT-U1 ISAAC) [2]"]
    for sid, y in zip(ids, (90.7, 159 - 90.7), strict=True):
        events = other.events(sid)
        assert np.hypot(events["x"][0] - 80.3, events["y"][0] - y) < 1.5


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_a_dithered_night_is_registered(tmp_path):
    """Frames of a field offset between exposures by up to 22 px (a dither, as nights on the
    ground and visits in space are taken) are moved onto the first frame by their measured
    offsets and searched where all of them cover: the transient is the one event. They were
    searched as if TESS's pointing held (offsets over 5 px refused): 217 events up to 1,161σ,
    the transient 48th."""
    from reaper_core.stacks import register

    offsets = [(0, 0), (12, -9), (-15, 7), (20, 18), (-8, -22), (0, 0), (12, -9), (-15, 7)]
    stack = stack_from_files(_night(tmp_path / "night", offsets)[0])
    assert [f.dither for f in stack.frames] == offsets
    assert stack.science == (slice(20, 177), slice(18, 170))  # what every frame covers
    events = sorted(search_stack(stack).events, key=lambda e: -e.significance)
    assert events[0].kind == "transient" and events[0].significance > 50
    assert (events[0].x, events[0].y) == pytest.approx((120, 100), abs=0.5)
    assert (events[0].frame_start, events[0].frame_end) == (3, 5)
    # The rest are the field's faint stars at the threshold, as without a dither (here 3).
    assert len(events) <= 3 and all(e.significance < 8 for e in events[1:])
    # Frames without a dither, and a frame of noise alone (nothing to correlate), stay put.
    plain = stack_from_files(_night(tmp_path / "still", [(0, 0)] * 8)[0])
    assert [f.dither for f in plain.frames] == [(0, 0)] * 8 and plain.science is None
    noise = np.random.default_rng(1).normal(0, 3, (192, 192)).astype(np.float32)
    fits.PrimaryHDU(noise, header=fits.getheader(tmp_path / "still" / "f1.fits")).writeto(
        tmp_path / "still" / "f1.fits", overwrite=True)
    register(plain)
    assert plain.frames[1].dither == (0, 0)


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_cosmic_rays_of_frames_from_the_ground_are_no_events(tmp_path):
    """Ten frames of the real ISAAC field, each hit by 20 cosmic rays (one or two pixels, 200
    to 3,000 counts; a TESS FFI is cleaned of them on board, a frame from the ground or from
    a space telescope is not), a transient in three: the transient is the first event, and no
    hit is one. Before: 152 events up to 718σ, the transient 117th."""
    from reaper_core.difference import build_reference, cosmic_rays, difference

    paths, hits = _night(tmp_path / "night", [(0, 0)] * 10, cosmic_rays=20)
    stack = stack_from_files(paths)
    events = sorted(search_stack(stack).events, key=lambda e: -e.significance)
    assert events[0].kind == "transient" and events[0].significance > 50
    assert (events[0].x, events[0].y) == pytest.approx((120, 100), abs=0.5)
    ex, ey = np.array([e.x for e in events])[:, None], np.array([e.y for e in events])[:, None]
    assert min(np.hypot(ex - xs, ey - ys).min() for ys, xs in hits) > 3
    # The rest: the field's faint stars at the threshold, as without cosmic rays.
    assert len(events) <= 4 and all(e.significance < 8 for e in events[1:])
    # The rule itself: every hit is found in its frame's difference, the transient's pixels
    # (as sharp as the field's stars) are not.
    d = difference(stack.frame(4), build_reference(stack))
    mask = cosmic_rays(d.diff, d.sigma)
    assert mask[hits[4]].all() and not mask[97:104, 117:124].any()


@pytest.mark.skipif(not KEPLER.exists(), reason="../shared/data/ is not beside the checkout")
def test_cosmic_rays_beside_an_undersampled_field(tmp_path):
    """On Kepler's real field, whose undersampled stars are sharper than ISAAC's (the median
    star's peak 4.6 times its neighbours'), a cosmic ray must be sharper than 1.6 times that:
    the 20 hits of each frame are no events, a transient as sharp as the field's stars is
    the one event."""
    from reaper_core.difference import build_reference
    from reaper_core.simulate_stack import field_night

    image = fits.getdata(KEPLER, 1).astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(image - np.median(image))))
    paths, _ = field_night(image, None, tmp_path / "night", offsets=[(0, 0)] * 10, size=160,
                           corner=(20, 20), transient=(80.0, 70.0), amplitude=30 * noise,
                           psf_sigma=0.65, noise=0.3 * noise, cosmic_rays=20)
    stack = stack_from_files(paths)
    assert 4 < build_reference(stack).star_contrast < 5
    events = search_stack(stack).events
    assert len(events) == 1 and events[0].kind == "transient"
    assert (events[0].x, events[0].y) == pytest.approx((80, 70), abs=0.5)


def _night(folder: Path, offsets: list[tuple[int, int]], **kwargs):
    """A night of the real ISAAC field (:func:`~reaper_core.simulate_stack.field_night`, its
    WCS with it): the transient at (120, 100) of the first frame, in frames 3–5."""
    from reaper_core.simulate_stack import field_night

    with fits.open(ISAAC) as hdul:
        image, header = hdul[0].data, hdul[0].header
    return field_night(image, header, folder, offsets=offsets, **kwargs)


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_frames_at_other_position_angles_are_resampled(tmp_path):
    """Frames of a field at position angles up to 4° apart and offset by up to 11 px (visits
    in space, an alt-azimuth telescope's field): each is resampled onto the first frame's
    pixels by an affine map fitted to its WCS, and the transient is first, far above the
    rest. Before: 275 events up to 1,237σ, the transient 180th."""
    from reaper_core.fits_reader import read_fits, sky_positions

    angles = [0, 2.0, -3.0, 4.0, 1.0, -2.0, 3.0, 0.5]
    offsets = [(0, 0), (6, -4), (-8, 5), (10, 9), (-4, -11), (0, 3), (5, -6), (-7, 2)]
    # (given last first: the frames are ordered by time, and registered onto the first)
    stack = stack_from_files(_night(tmp_path / "night", offsets, angles=angles)[0][::-1])
    assert stack.frames[0].warp is None and stack.frames[0].name == "f0.fits"
    turned = [np.degrees(np.arctan2(f.warp[2], f.warp[0])) for f in stack.frames[1:]]
    assert turned == pytest.approx(angles[1:], abs=1e-6)
    events = sorted(search_stack(stack).events, key=lambda e: -e.significance)
    assert events[0].kind == "transient" and events[0].significance > 50
    assert (events[0].x, events[0].y) == pytest.approx((120, 100), abs=0.5)
    assert len(events) <= 3 and all(e.significance < 8 for e in events[1:])
    # Its sky position by the stack's WCS (the first frame's) is the transient's, to 0.1″.
    ra, dec = sky_positions(stack.wcs, events[0].x, events[0].y)
    true_ra, true_dec = sky_positions(read_fits(ISAAC).wcs, 420, 400)
    assert np.hypot((ra - true_ra) * np.cos(np.radians(dec)), dec - true_dec) * 3600 < 0.1


def test_simulated_stacks_of_a_few_frames():
    """The simulator makes stacks as short as three frames, every event inside the stack
    (a longer stack's draws are unchanged: its events' first frames come from the same calls)."""
    for n in (3, 5, 8, 12):
        sim = simulate_stack(n, 48, seed=1)
        assert sim.frames.shape == (n, 48, 48) and sim.events
        assert all(0 <= e.f_start <= e.f_peak <= e.f_end < n for e in sim.events)
