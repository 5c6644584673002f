import sys

import numpy as np
import pytest

from reaper_core.cutouts import (
    STRETCHES,
    cutout_origins,
    extract_cutouts,
    normalize,
    to_png,
    to_uint8,
)
from reaper_core.fits_reader import read_fits
from reaper_core.simulate import add_sources
from reaper_core.sources import detect_segments, find_sources, grid_positions

from .conftest import REAL_DATA


def _nearest(src, x, y):
    return np.min(np.hypot(src.x - x, src.y - y))


def test_segmentation_finds_stars_and_every_injected_anomaly(spoc_file, sim_small):
    img = read_fits(spoc_file)
    src = find_sources(img, "segment")
    assert set(src.origin) == {"segment"}
    # Bright stars (Tmag < 10.4) are found where the simulator put them.
    bright = sim_small.stars[sim_small.stars["flux"] > 10_000]
    found = [_nearest(src, s["x"], s["y"]) < 2.0 for s in bright]
    # No deblending: in a crowded TESS sky a star touching a brighter neighbour (or a bleed
    # column) merges with it.
    assert np.mean(found) > 0.85
    # Streaks, blobs, rings, bleed and bad columns, cosmic rays: each gets a source inside
    # its bounding box (grown by 3 px).
    for a in sim_small.anomalies:
        x0, y0, x1, y1 = a.box
        inside = (src.x > x0 - 3) & (src.x < x1 + 3) & (src.y > y0 - 3) & (src.y < y1 + 3)
        assert inside.any(), f"{a.kind} at ({a.x:.0f}, {a.y:.0f}) has no source"


def test_auto_uses_catalog_and_adds_non_catalog_objects(tica_file, sim_small):
    img = read_fits(tica_file)
    src = find_sources(img, "auto")
    n_cat = int((src.origin == "catalog").sum())
    assert n_cat == len(img.catalog)
    seg = src.origin == "segment"
    assert seg.sum() > 0
    # Added detections are not duplicates of catalogue stars.
    d = np.min(np.hypot(src.x[seg][:, None] - img.catalog[:, 0],
                        src.y[seg][:, None] - img.catalog[:, 1]), axis=1)
    assert (d > 3.0).all()
    only = find_sources(img, "catalog")
    assert len(only) == n_cat


def test_two_objects_in_one_segment_each_get_a_position():
    # A point source in the wing of a small galaxy shares its segment; the centroid lies
    # between them, so the point source's peak must still get a position of its own.
    rng = np.random.default_rng(5)
    img = rng.normal(100, 3, size=(96, 96)).astype(np.float32)
    add_sources(img, [40.0], [48.0], [2000.0], sigma=1.5, half=12)  # a small galaxy
    add_sources(img, [45.0], [48.0], [1000.0])  # a point source 5 px away
    x, y, _ = detect_segments(img)
    assert np.hypot(x - 45, y - 48).min() < 1.0
    assert np.hypot(x - 40, y - 48).min() < 2.0


def test_grid_mode_tiles_the_frame(hdf_file):
    img = read_fits(hdf_file)
    src = find_sources(img, "grid", patch_size=32)
    gx, _ = grid_positions(img.shape, 32)
    assert len(src) == gx.size == (872 // 32) * (1000 // 32)
    assert src.x.min() == pytest.approx(15.5) and src.y.min() == pytest.approx(15.5)


def test_unknown_method_raises(hdf_file):
    with pytest.raises(ValueError, match="unknown source method"):
        find_sources(read_fits(hdf_file), "magic")


def test_cutouts_are_centred_and_stay_inside_the_frame():
    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    p = extract_cutouts(img, np.array([60.0, 0.0, 119.0]), np.array([50.0, 0.0, 99.0]), 16)
    assert p.shape == (3, 16, 16) and p.dtype == np.float32
    assert p[0, 8, 8] == img[50, 60]  # centre pixel at (size//2, size//2)
    np.testing.assert_array_equal(p[1], img[:16, :16])  # shifted inwards at the corner
    np.testing.assert_array_equal(p[2], img[-16:, -16:])
    assert np.isfinite(p).all()
    # The science region is respected: nothing from outside it is used.
    region = (slice(10, 90), slice(20, 100))
    q = extract_cutouts(img, np.array([20.0]), np.array([10.0]), 16, region)
    np.testing.assert_array_equal(q[0], img[10:26, 20:36])


def test_cutout_origins_name_the_pixels_that_were_cut():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(100, 120)).astype(np.float32)
    region = (slice(4, 96), slice(2, 110))
    x, y = rng.uniform(-5, 125, 50), rng.uniform(-5, 105, 50)
    patches = extract_cutouts(img, x, y, 16, region)
    ix, iy = cutout_origins(x, y, 16, img.shape, region)
    assert (ix >= 2).all() and (ix + 16 <= 110).all() and (iy >= 4).all() and (iy + 16 <= 96).all()
    for p, c, r in zip(patches, ix, iy, strict=True):
        np.testing.assert_array_equal(p, img[r:r + 16, c:c + 16])


def test_levelled_cutouts_lose_the_sky_slope_and_keep_its_level():
    """Cut with the frame's smooth sky, a patch keeps what lies on the sky and the sky's value
    at its centre, not the slope across its window; at the region's edge (window shifted
    inwards) the level is still the centre's, the object's place."""
    yy, xx = np.mgrid[0:100, 0:120].astype(np.float32)
    sky = 50 + 0.7 * xx - 0.3 * yy
    star = np.zeros_like(sky)
    add_sources(star, [61.0], [40.0], [500.0], sigma=1.2)
    region = (slice(10, 90), slice(20, 110))
    image = sky + star
    x, y = np.array([61.0, 22.0]), np.array([40.0, 12.0])
    p = extract_cutouts(image, x, y, 16, region, background=sky[region])
    raw = extract_cutouts(image, x, y, 16, region)
    np.testing.assert_allclose(p[0], star[32:48, 53:69] + sky[40, 61], atol=1e-3)
    np.testing.assert_allclose(p[1], star[10:26, 20:36] + sky[12, 22], atol=1e-3)
    assert np.ptp(raw[0] - star[32:48, 53:69]) > 10  # the slope the raw cut keeps


def test_cutout_of_small_frame_is_nan_padded():
    img = np.ones((10, 10), np.float32)
    p = extract_cutouts(img, np.array([5.0]), np.array([5.0]), 16)
    assert p.shape == (1, 16, 16)
    assert np.isnan(p).sum() == 16 * 16 - 100


@pytest.mark.parametrize("stretch", STRETCHES)
def test_stretches_map_to_unit_interval(stretch):
    patch = np.random.default_rng(1).gamma(2.0, 10.0, (32, 32)).astype(np.float32)
    patch[5, 5] = np.nan
    out = normalize(patch, stretch)
    assert out.shape == (32, 32) and 0 <= out.min() and out.max() <= 1
    assert out.max() > 0.9  # the brightest pixels reach the top of the range
    u8 = to_uint8(patch, stretch)
    assert u8.dtype == np.uint8
    png = to_png(patch, stretch, upscale=2)
    assert png.startswith(b"\x89PNG")


def test_unknown_stretch_raises():
    with pytest.raises(ValueError):
        normalize(np.ones((4, 4)), "fancy")


def test_cells_of_one_object_share_its_segment(spoc_file, sim_small):
    # A bleed column is one long segment cut into 12 px cells: every cell belongs to it.
    src = find_sources(read_fits(spoc_file), "segment")
    assert (src.segment > 0).all()
    columns = [a for a in sim_small.anomalies if a.kind == "bleed_column"]
    assert columns
    for a in columns:
        x0, y0, x1, y1 = a.box
        inside = (src.x >= x0 - 1) & (src.x <= x1 + 1) & (src.y >= y0) & (src.y <= y1)
        assert inside.sum() >= 2
        assert len(set(src.segment[inside])) == 1


def test_merged_neighbours_are_deblended_into_objects_of_their_own():
    # Two galaxies 20 px apart whose wings touch form one segment (without deblending both
    # would get segment 1); deblending tells them apart, while each galaxy's cells stay
    # together.
    rng = np.random.default_rng(2)
    img = rng.normal(100, 3, size=(96, 128)).astype(np.float32)
    add_sources(img, [54.0, 74.0], [48.0, 48.0], [60000.0, 60000.0], sigma=4.0, half=30)
    x, y, seg = detect_segments(img)
    left = np.hypot(x - 54, y - 48) < 6
    right = np.hypot(x - 74, y - 48) < 6
    assert left.sum() >= 2 and right.sum() >= 2  # big: cut into cells
    assert len(set(seg[left])) == 1 and len(set(seg[right])) == 1
    assert seg[left][0] != seg[right][0]


def test_deblending_stack_is_sized_to_the_pixels_above_threshold(monkeypatch):
    """sep's pixel stack holds the pixels above the threshold, not the whole frame; should
    sep find it too small, the frame's size is tried and the same objects come back."""
    import sep

    from reaper_core import sources

    rng = np.random.default_rng(2)
    img = rng.normal(0, 1, size=(700, 700)).astype(np.float32)
    add_sources(img, [200.0, 220.0, 500.0], [300.0, 300.0, 100.0], [5e4, 5e4, 3e4], sigma=3.0,
                half=20)
    threshold = np.full(img.shape, 3.0, np.float32)
    first = sources._deblended_objects(img, threshold, 5)
    assert 300_000 <= sep.get_extract_pixstack() < img.size
    assert first.max() >= 3

    real, calls = sep.extract, []

    def tight(*args, **kwargs):
        calls.append(sep.get_extract_pixstack())
        if sep.get_extract_pixstack() < img.size:
            raise Exception("internal pixel buffer full: the limit of active object pixels "
                            "over the detection threshold was reached.")
        return real(*args, **kwargs)

    monkeypatch.setattr(sep, "extract", tight)
    again = sources._deblended_objects(img, threshold, 5)
    assert calls == [calls[0], img.size] and calls[0] < img.size
    assert np.array_equal(first, again)


@pytest.mark.skipif(not (REAL_DATA / "other" / "isaac_vlt_crowded_field.fits").exists(),
                    reason="../shared/data/ is not beside the checkout")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_deblending_in_a_child_process_gives_the_objects_of_one_core(monkeypatch):
    """Half of the big segments are deblended in a forked child while this process deblends
    the other half: on the real ISAAC crowded field the positions and their objects are the
    ones a single core gives, and merged neighbours still part."""
    import os

    from reaper_core import parallel

    data = np.nan_to_num(read_fits(REAL_DATA / "other" / "isaac_vlt_crowded_field.fits").data)
    forks, real_fork = [], os.fork

    def counted() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counted)
    monkeypatch.setattr(parallel, "compute_threads", lambda: 2)
    x, y, seg = detect_segments(data)
    assert forks  # the child ran
    monkeypatch.setattr(parallel, "compute_threads", lambda: 1)
    forks.clear()
    x1, y1, seg1 = detect_segments(data)
    assert not forks
    assert np.array_equal(x, x1) and np.array_equal(y, y1) and np.array_equal(seg, seg1)
    # Deblending grouped the cells of big segments into objects: fewer objects than positions.
    assert 0.3 * len(seg) < len(np.unique(seg)) < len(seg)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_work_begun_in_a_child_comes_back_or_is_done_here(monkeypatch):
    """begin_in_child returns the child's array; where the child fails or hangs the work is
    done in this process, and its own error is raised here; work cancelled stops its child."""
    import os
    import time

    from reaper_core import parallel

    monkeypatch.setattr(parallel, "compute_threads", lambda: 2)
    parent = os.getpid()
    values = np.arange(100_000, dtype=np.int64)  # larger than a pipe's buffer

    def pid_and(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[os.getpid()], values])

    got = parallel.begin_in_child(pid_and, values).result()
    assert got[0] != parent and np.array_equal(got[1:], values)

    def only_here(values: np.ndarray) -> np.ndarray:
        if os.getpid() != parent:
            raise RuntimeError("the child fails")
        return values * 2

    assert np.array_equal(parallel.begin_in_child(only_here, values).result(), values * 2)

    def always_fails(values: np.ndarray) -> np.ndarray:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        parallel.begin_in_child(always_fails, values).result()

    def hangs_there(values: np.ndarray) -> np.ndarray:
        while os.getpid() != parent:
            time.sleep(1)
        return values + 1

    monkeypatch.setattr(parallel, "CHILD_TIMEOUT_S", 0.5)
    t0 = time.perf_counter()
    assert np.array_equal(parallel.begin_in_child(hangs_there, values).result(), values + 1)
    assert time.perf_counter() - t0 < 10
    # A host's SIGCHLD handler reaping the child first: its data still come back.
    real_waitpid = os.waitpid

    def reaped_elsewhere(pid: int, options: int) -> tuple[int, int]:
        real_waitpid(pid, options)
        raise ChildProcessError("no child")

    monkeypatch.setattr(os, "waitpid", reaped_elsewhere)
    got = parallel.begin_in_child(pid_and, values).result()
    assert got[0] != parent and np.array_equal(got[1:], values)
    monkeypatch.setattr(os, "waitpid", real_waitpid)
    # Work no longer wanted: the child is stopped and reaped at once.
    work = parallel.begin_in_child(hangs_there, values)
    child = work._pid
    t0 = time.perf_counter()
    work.cancel()
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ChildProcessError):  # gone, and reaped
        os.waitpid(child, 0)


def test_catalog_stars_take_the_segment_of_their_detection(tica_file):
    src = find_sources(read_fits(tica_file), "auto")
    cat = src.origin == "catalog"
    # Most catalogue stars are detected too; the few too faint to be keep 0.
    assert (src.segment[cat] > 0).mean() > 0.5
    assert (src.segment[~cat] > 0).all()


@pytest.mark.parametrize("shape", [(300, 300), (250, 333)])
def test_mesh_upsampling_equals_photutils_own_interpolation(spoc_file, shape):
    """A mesh is up-sampled as two matrix products: photutils' own median filter and
    cubic-spline zoom of the same mesh give the same images, also when the frame is not a
    whole number of boxes."""
    import warnings

    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    from reaper_core.sources import _median_filter_mesh, _upsample

    data = read_fits(spoc_file).data[:shape[0], :shape[1]].astype(np.float32)
    box = min(64, min(shape) // 4)  # estimate_background's box for a small frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, raw = (Background2D(data, box, filter_size=size, sigma_clip=SigmaClip(sigma=3.0),
                                 mask=~np.isfinite(data), bkg_estimator=MedianBackground(),
                                 exclude_percentile=50.0) for size in (3, 1))
    for mine, theirs in ((raw.background_mesh, ref.background),
                         (raw.background_rms_mesh, ref.background_rms)):
        up = _upsample(_median_filter_mesh(mine, 3), raw.box_size, data.shape, np.float32)
        assert up.shape == data.shape
        np.testing.assert_allclose(up, theirs, rtol=1e-5, atol=1e-4)
    assert np.ptp(ref.background_rms) > 0  # a real (varying) map was compared, not a constant


@pytest.mark.skipif(not (REAL_DATA / "tess").exists(),
                    reason="../shared/data/ is not beside the checkout")
def test_background_follows_scattered_light_to_the_edges():
    """Under a sky rising 10σ per 100 px the background follows the slope to the frame's
    edges and through its last, partial box, and the RMS stays the noise's: photutils' mesh
    held the background flat within half a box of the edges (4.4σ off at the 99th percentile
    of the real SPOC corner) and widened the RMS by the slope within each box (× 1.64), so
    that 28 of its 215 cutouts were no longer cut."""
    from reaper_core.sources import science_sky

    path = REAL_DATA / "tess" / "tess2018206192942-s0001-1-4-0120-s_ffic.fits"
    img = read_fits(path)
    science = img.data[img.valid].astype(np.float32)
    sigma = 1.4826 * np.nanmedian(np.abs(science - np.nanmedian(science)))
    yy, xx = np.mgrid[0:science.shape[0], 0:science.shape[1]]
    slope = (0.1 * sigma * (xx + 0.5 * yy)).astype(np.float32)
    sky, rms = science_sky(img)
    n = len(find_sources(img))
    img.data = img.data.astype(np.float32)
    img.data[img.valid] += slope
    lit_sky, lit_rms = science_sky(img)
    off = np.abs(lit_sky - sky - slope) / sigma
    assert np.percentile(off, 99) < 2.5
    assert np.median(lit_rms / rms) < 1.1
    assert len(find_sources(img)) > 0.9 * n  # 205 of 215 (the base: 187)


def test_background_of_a_frame_mostly_missing():
    """Missing pixels are left out of the background's boxes; where so many are missing that
    no box is half filled (photutils then refuses), they are filled with the median instead,
    and the background is still the sky's."""
    from reaper_core.sources import estimate_background

    rng = np.random.default_rng(5)
    data = rng.normal(100.0, 5.0, (256, 256)).astype(np.float32)
    data[:, 30:] = np.nan  # 88 % missing: every 64 px box is more than half empty
    data[:, :30] += np.linspace(0, 20, 256, dtype=np.float32)[:, None]
    background, rms = estimate_background(data)
    assert np.isfinite(background).all() and np.isfinite(rms).all()
    assert abs(np.median(background[:, :30]) - np.nanmedian(data)) < 2
    holed = rng.normal(100.0, 5.0, (256, 256)).astype(np.float32)
    holed[100:160, 100:160] = np.nan  # a hole: left out, the sky around it as before
    background, rms = estimate_background(holed)
    assert np.isfinite(background).all()
    assert np.abs(background - 100).max() < 2 and np.abs(np.median(rms) - 5) < 0.5


def test_mesh_median_filter_equals_photutils_generic_filter():
    """The meshes' 3 × 3 median filter (one NaN median over stacked windows) gives what
    photutils' ``generic_filter`` of a NaN median gives, NaN mesh points and edges included."""
    from photutils.utils._stats import nanmedian
    from scipy.ndimage import generic_filter

    from reaper_core.sources import _median_filter_mesh

    mesh = np.random.default_rng(3).normal(100, 5, (9, 13))
    mesh[2, 3] = mesh[0, 0] = mesh[8, 5] = np.nan
    for size in (3, 5):
        ref = generic_filter(mesh, nanmedian, size=size, mode="constant", cval=np.nan)
        np.testing.assert_array_equal(_median_filter_mesh(mesh, size), ref)


@pytest.mark.skipif(not (REAL_DATA / "other" / "isaac_vlt_crowded_field.fits").exists(),
                    reason="../shared/data/ is not beside the checkout")
def test_segment_kernels_equal_their_numpy_definitions_on_a_real_crowded_field():
    # The compiled cell sums and window maxima that detection uses, against the NumPy lines
    # they replaced (np.unique + np.bincount; ndimage.maximum_filter), on the ISAAC field.
    from scipy import ndimage

    from reaper_core.patch_kernels import cell_sums, window_maxima
    from reaper_core.sources import estimate_background

    data = read_fits(REAL_DATA / "other" / "isaac_vlt_crowded_field.fits").data
    data = np.nan_to_num(np.asarray(data, np.float32))
    background, rms = estimate_background(data)
    sub = (data - background).astype(np.float32)
    labels, n = ndimage.label(sub > 3 * rms, structure=np.ones((3, 3), bool))
    area = np.bincount(labels.ravel(), minlength=n + 1)
    big = area > 40
    big[0] = False
    assert 20 < big.sum() < n
    weights = np.clip(sub, 0, None)
    cell = 12
    ys, xs = np.nonzero(big[labels])
    ncx = labels.shape[1] // cell + 1
    ncells = ncx * (labels.shape[0] // cell + 1)
    key = labels[ys, xs].astype(np.int64) * ncells + (ys // cell) * ncx + xs // cell
    ukey, inv = np.unique(key, return_inverse=True)
    w = weights[ys, xs] + 1e-6
    got = cell_sums(labels, big, weights, cell)
    want = (ukey, np.bincount(inv, w), np.bincount(inv, w * xs), np.bincount(inv, w * ys),
            np.bincount(inv))
    for g, e in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, e)  # bit for bit

    for half in (1, 2):
        where = (labels > 0) & (sub > 10 * rms)
        want = np.nonzero(where & (sub == ndimage.maximum_filter(sub, size=2 * half + 1)))
        got = window_maxima(sub, where, half)
        assert len(got[0]) > 50
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
