"""Real TESS pixels from ../shared/data/: a SPOC calibrated FFI corner and a TESScut cube."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from reaper_core import store
from reaper_core.config import Settings
from reaper_core.cutouts import cutout_origins
from reaper_core.errors import FITSReadError
from reaper_core.fits_reader import read_fits, read_tesscut
from reaper_core.ingest import world_coords
from reaper_core.service import Reaper
from reaper_core.sources import find_sources, missing_regions
from reaper_core.tess import describe_quality, parse_name, science_region

from .conftest import REAL_CUBE, REAL_DATA, REAL_SPOC

DATA, SPOC, CUBE = REAL_DATA, REAL_SPOC, REAL_CUBE
pytestmark = pytest.mark.skipif(not SPOC.exists() and not os.environ.get("CI"),
                                reason="../shared/data/ (real TESS files) is not beside the "
                                       "checkout")


def _header_wcs() -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(fits.getheader(SPOC, 1))


def test_tess_file_names():
    assert parse_name(SPOC.name) == parse_name(f"/any/where/{SPOC.name}")
    spoc = parse_name(SPOC.name)
    assert (spoc.product, spoc.sector, spoc.camera, spoc.ccd) == ("spoc", 1, 1, 4)
    cut = parse_name(CUBE.name)
    assert (cut.product, cut.sector, cut.camera, cut.ccd) == ("tesscut", 1, 4, 3)
    tica = parse_name("hlsp_tica_tess_ffi_s0030-o1-00123456-cam2-ccd3_tess_v01_img.fits")
    assert (tica.product, tica.sector, tica.camera, tica.ccd) == ("tica", 30, 2, 3)
    assert parse_name("hubble_deep_field.fits") is None
    assert parse_name("m31-s0001-9-9_x.fits") is None  # no camera 9


def test_real_spoc_ffi_is_read_as_tess():
    img = read_fits(SPOC)
    assert img.layout == "spoc" and img.hdu == 1 and img.shape == (128, 173)
    # No SECTOR keyword: the sector comes from the file name; camera and CCD from the header.
    assert "SECTOR" not in fits.getheader(SPOC, 0) and "SECTOR" not in fits.getheader(SPOC, 1)
    assert (img.sector, img.camera, img.ccd) == (1, 1, 4)
    # Science region from SCCSA/SCCED/SCIROWS/SCIROWE, clipped to the trimmed frame.
    assert img.valid == (slice(0, 128), slice(44, 173))
    assert img.quality == 0 and img.notes == []
    assert img.tstart == pytest.approx(1325.3188, abs=1e-3)
    # The collateral columns really are not sky: far below it.
    assert np.nanmedian(img.data[:, :44]) < 0.2 * np.nanmedian(img.data[:, 44:])


def test_real_spoc_wcs_with_sip_gives_radec_of_a_known_pixel():
    img = read_fits(SPOC)
    assert img.wcs is not None and img.wcs.sip is not None
    h = fits.getheader(SPOC, 1)
    # The reference pixel (1-based CRPIX) is the 0-based pixel CRPIX − 1: its RA/Dec is CRVAL.
    ra, dec = world_coords(img, np.array([h["CRPIX1"] - 1]), np.array([h["CRPIX2"] - 1]))
    assert ra[0] == pytest.approx(h["CRVAL1"], abs=1e-9)
    assert dec[0] == pytest.approx(h["CRVAL2"], abs=1e-9)
    # Inside the frame, the header's full SIP WCS; the distortion matters here (> 100″).
    x, y = np.array([44.0, 100.0, 172.0]), np.array([0.0, 64.0, 127.0])
    ra, dec = world_coords(img, x, y)
    ra0, dec0 = _header_wcs().pixel_to_world_values(x, y)
    np.testing.assert_allclose(ra, ra0, atol=1e-9)
    np.testing.assert_allclose(dec, dec0, atol=1e-9)
    linear = WCS(naxis=2)
    linear.wcs.crpix = [h["CRPIX1"], h["CRPIX2"]]
    linear.wcs.crval = [h["CRVAL1"], h["CRVAL2"]]
    linear.wcs.cd = [[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]]
    linear.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ral, decl = linear.pixel_to_world_values(x, y)
    assert np.max(np.hypot((ra - ral) * np.cos(np.radians(dec)), dec - decl)) * 3600 > 100


def test_no_cutout_from_collateral_pixels_and_sector_exported(tmp_path):
    img = read_fits(SPOC)
    src = find_sources(img)
    assert len(src) > 100  # a crowded real sky
    assert src.x.min() >= 44
    x0, y0 = cutout_origins(src.x, src.y, 32, img.shape, img.valid)
    assert x0.min() >= 44 and (x0 + 32).max() <= 173 and y0.min() >= 0 and (y0 + 32).max() <= 128
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'real.db'}"))
    report = reaper.ingest([SPOC])
    assert report.results[0].status == "added", report.results[0].message
    df = reaper.export_table()
    assert (df["sector"] == 1).all() and (df["camera"] == 1).all() and (df["ccd"] == 4).all()
    assert df["x"].min() >= 44  # 0-based columns of the array as stored, collateral included
    # RA/Dec in the export are the header's SIP WCS at each cutout centre.
    ra0, dec0 = _header_wcs().pixel_to_world_values(df["x"].to_numpy(), df["y"].to_numpy())
    np.testing.assert_allclose(df["ra"], ra0, atol=1e-9)
    np.testing.assert_allclose(df["dec"], dec0, atol=1e-9)
    # The stored WCS keeps its SIP terms, and the file remembers its HDU.
    f = reaper.files()[0]
    assert "A_ORDER" in f.wcs_header and f.hdu == 1 and f.quality == 0


def test_science_region_of_headers_and_full_frames():
    h = fits.Header({"SCCSA": 45, "SCCED": 2092, "SCIROWS": 1, "SCIROWE": 2048})
    assert science_region(h, (2078, 2136)) == (slice(0, 2048), slice(44, 2092))
    assert science_region(h, (128, 173)) == (slice(0, 128), slice(44, 173))
    assert science_region(fits.Header(), (2078, 2136)) == (slice(0, 2048), slice(44, 2092))
    assert science_region(fits.Header(), (512, 512)) is None


def test_flagged_frame_is_said_so(tmp_path):
    with fits.open(SPOC) as hdul:
        hdul[1].header["DQUALITY"] = 32 | 4
        path = tmp_path / SPOC.name
        hdul.writeto(path)
    img = read_fits(path)
    assert img.quality == 36
    assert any("coarse point" in n and "momentum dump" in n for n in img.notes)
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}"))
    result = reaper.ingest([path]).results[0]
    assert result.status == "added" and any("quality bits 36" in n for n in result.notes)


def test_real_tesscut_cube_times_and_quality():
    cube = read_tesscut(CUBE)
    assert cube.flux.shape == (1282, 5, 5) and cube.time.shape == (1282,)
    assert (cube.sector, cube.camera, cube.ccd) == (1, 4, 3)
    assert cube.time[0] == pytest.approx(1325.32, abs=0.01)
    assert cube.time[-1] == pytest.approx(1353.16, abs=0.01)
    assert np.all(np.diff(cube.time) > 0)
    assert cube.cadence_days == pytest.approx(30 / 1440, rel=0.01)  # 30-minute FFIs
    gaps = cube.gaps()
    assert len(gaps) == 1 and 1338 < gaps[0][0] < gaps[0][1] < 1340  # the mid-sector downlink
    flagged = np.flatnonzero(cube.quality)
    assert 0 < len(flagged) < 50
    assert {name for q in cube.quality[flagged] for name in describe_quality(q)} == {
        "reaction wheel desaturation (momentum dump)"}
    assert cube.wcs is not None
    # As a single image it is too small for 32-pixel cutouts, and says so, and what it can do.
    with pytest.raises(FITSReadError, match="5 x 5 image, smaller than") as err:
        read_fits(CUBE)
    assert "TESScut cube" in str(err.value) and "anomaly-reaper events" in str(err.value)
    # Read as a stack's image, its pixels are the cube's: no note of a choice among images
    # (its APERTURE image is not one).
    img = read_fits(CUBE, any_cube=True)
    assert img.layout == "tesscut" and img.hdu == 1 and img.n_images == 2
    assert not any("largest" in n for n in img.notes)


def test_hdu_rule_and_choice(tmp_path):
    noise = np.random.default_rng(0).normal(size=(128, 128)).astype(np.float32)
    real = read_fits(SPOC).data[:, 44:]
    path = tmp_path / "two_images.fits"
    fits.HDUList([fits.PrimaryHDU(noise), fits.ImageHDU(noise[:64]),
                  fits.ImageHDU(np.vstack([real, real]))]).writeto(path)
    img = read_fits(path)
    assert img.hdu == 2 and img.shape == (256, 129)  # the largest 2-D image
    assert any("HDU 2, the largest of 3 images" in n for n in img.notes)
    assert read_fits(path, hdu=0).shape == (128, 128)
    with pytest.raises(FITSReadError, match="has no HDU 7"):
        read_fits(path, hdu=7)
    shutil.copy(SPOC, tmp_path / "copy.fits")
    with pytest.raises(FITSReadError, match="HDU 0 holds no 2-D image"):
        read_fits(tmp_path / "copy.fits", hdu=0)


def test_simulator_matches_the_real_frame_within_30_percent():
    """The simulator's statistics on reduced-size frames agree with the real SPOC corner."""
    from reaper_core.frame_stats import frame_statistics
    from reaper_core.simulate import simulate_ffi

    img = read_fits(SPOC)
    real = frame_statistics(img.data[img.valid])
    ny, nx = img.data[img.valid].shape
    sims = [frame_statistics(simulate_ffi(size=256, seed=s, n_saturated=0).image[:ny, :nx])
            for s in range(8)]  # as benchmarks/realism.py: the brightest pixel is a maximum
    for key in ("peaks_5", "peaks_10", "peaks_50", "sky_median", "sky_sigma", "psf_fwhm",
                "brightest"):
        sim = float(np.median([d[key] for d in sims]))
        assert abs(sim - real[key]) <= 0.3 * real[key], (key, sim, real[key])
    # A crowded field near the Galactic plane: several times the stars, a brighter sky.
    dense = simulate_ffi(size=256, seed=0, n_saturated=0, density=4.0)
    sparse = simulate_ffi(size=256, seed=0, n_saturated=0)
    assert len(dense.stars) > 3.5 * len(sparse.stars)
    assert frame_statistics(dense.image)["sky_median"] > 1.2 * real["sky_median"]


def test_simulated_spoc_file_has_real_keywords_and_bleeds_both_ways(tmp_path):
    from reaper_core.simulate import SATURATION_E_PER_S, simulate_ffi, write_spoc

    sim = simulate_ffi(size=256, seed=2, collateral=True, n_saturated=1)
    path = write_spoc(sim, tmp_path / "tess2020001000000-s0020-2-3-0165-s_ffic.fits")
    img = read_fits(path)
    assert img.valid == sim.science and (img.sector, img.camera, img.ccd) == (42, 1, 1)
    star = sim.stars[0]
    x, y = round(float(star["x"])), round(float(star["y"]))
    column = sim.image[:, x]
    assert column[y] >= 0.99 * SATURATION_E_PER_S  # the star, saturated
    above, below = column[y + 3:y + 8], column[y - 7:y - 2]
    assert (above > 0.25 * SATURATION_E_PER_S).all() and (below > 0.25 * SATURATION_E_PER_S).all()


def test_a_hot_pixel_beside_a_star_gets_a_cutout_of_its_own():
    """A 40σ hot pixel 2 px beside each faint star (peak 10–30σ) of the real SPOC frame: the
    star's segment holds it, so it needs a position of its own (sharper than any star): 41
    of 47 within 1.5 px now, 29 before."""
    from dataclasses import replace

    from reaper_core.sources import science_sky

    img = read_fits(SPOC)
    src = find_sources(img)
    rms = float(np.median(science_sky(img)[1]))
    data, x0 = img.data, img.valid[1].start
    near, tried = 0, 0
    for x, y in zip(src.x, src.y, strict=True):
        ix, iy = round(float(x)), round(float(y))
        inside = x0 + 10 < ix < data.shape[1] - 10 and 10 < iy < data.shape[0] - 10
        if not inside or not 10 * rms < data[iy, ix] - np.median(data) < 30 * rms:
            continue
        hot = data.copy()
        hot[iy, ix + 2] += 40 * rms
        found = find_sources(replace(img, data=hot))
        tried += 1
        near += bool((np.hypot(found.x - (ix + 2), found.y - iy) < 1.5).any())
    assert tried >= 30
    assert near / tried >= 0.8


def _real_frame_copy(folder, k: int, data: np.ndarray):
    """The real SPOC frame, headers and all, with ``data`` as its image: ``folder``/k_<name>."""
    path = folder / f"{k}_{REAL_SPOC.name}"
    with fits.open(REAL_SPOC) as hdul:
        hdul[1].data = data
        hdul.writeto(path)
    return path


def _real_frame_and_noise():
    """The real SPOC frame, its first science column and its sky's robust noise σ."""
    from reaper_core.simulate import _robust_noise

    img = read_fits(REAL_SPOC)
    return img, img.valid[1].start, _robust_noise(img.data[img.valid])


def _ingest_copies(db_url: str, paths: list, places: list):
    """A service over ``db_url`` with the copies ``paths`` ingested (each added), its export,
    each row's copy number and its offset (dx, dy) from that copy's place in ``places``."""
    reaper = Reaper(Settings(db_url=db_url, load_demo=0))
    assert all(r.status == "added" for r in reaper.ingest(paths).results)
    df = reaper.export_table()
    copy = df.file.map({p.name: k for k, p in enumerate(paths)}).to_numpy()
    at = np.array(places)[copy]
    return reaper, df, copy, df.x.to_numpy() - at[:, 0], df.y.to_numpy() - at[:, 1]


def test_a_hole_in_the_data_gets_a_cutout_of_its_own(tmp_path):
    """A block of missing (NaN) pixels inside the real SPOC frame — undetectable once filled
    with the median — gets a position on a real pixel beside it, cut and ranked among the top
    tenth, its window showing the hole (one hole in each of four copies of the frame, one
    model); missing pixels along the science region's edge get none."""
    img = read_fits(REAL_SPOC)
    x0 = img.valid[1].start
    holes = [(x0 + 30, 30), (x0 + 90, 40), (x0 + 40, 95), (x0 + 100, 100)]
    paths = []
    for k, (x, y) in enumerate(holes):
        data = img.data.copy()
        data[y - 2:y + 3, x - 2:x + 3] = np.nan
        data[:, x0:x0 + 2] = np.nan  # the science region's first two columns: an edge
        paths.append(_real_frame_copy(tmp_path, k, data))
        science = data[img.valid]
        hx, hy = missing_regions(np.isfinite(science))  # the hole, not the edge's columns
        assert len(hx) == 1 and np.isfinite(science[int(hy[0]), int(hx[0])])
        assert np.hypot(hx[0] + x0 - x, hy[0] - y) <= 3.5
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'h.db'}"))
    assert all(r.status == "added" for r in reaper.ingest(paths).results)
    df = reaper.export_table()
    rank = df.score.rank(ascending=False, method="min").to_numpy()
    for path, (x, y) in zip(paths, holes, strict=True):
        near = np.flatnonzero((df.file == path.name).to_numpy()
                              & (np.hypot(df.x - x, df.y - y) <= 3.5).to_numpy())
        assert len(near)
        assert rank[near].min() <= 0.1 * len(df)  # 5–41 of 859 (the first 438th when the
        # whole window's missing pixels counted)
        cid = int(df.cutout_id.iloc[near[0]])
        assert np.isnan(reaper.cutouts([cid])[cid][0]).sum() == 25  # the whole hole shows


def test_the_core_statistics_rank_a_faint_ring_among_real_stars_higher(tmp_path):
    """A faint defocused ring (3 px radius, 10σ: the held-out table's "donut", which no default
    before stop 45 was chosen on) at eight places of the real SPOC frame, one in each copy:
    with the default embedding — the statistics of each patch's central half beside the whole
    patch's, ten components — seven of eight rank in the top tenth of the 1,711 cutouts (their
    best cutout within 6 px), with the default before stop 45 (``local+stars``, five
    components) five; the mean rank halves (83 against 169)."""
    from dataclasses import replace

    img, x0, sig = _real_frame_and_noise()
    yy, xx = np.mgrid[0:img.data.shape[0], 0:img.data.shape[1]]
    places = [(x0 + 25, 30), (x0 + 95, 35), (x0 + 45, 90), (x0 + 100, 100), (x0 + 60, 60),
              (x0 + 30, 110), (x0 + 110, 70), (x0 + 75, 20)]
    paths = []
    for k, (x, y) in enumerate(places):
        r = np.hypot(xx - x - 0.3, yy - y - 0.4)
        ring = 10 * sig * np.exp(-0.5 * ((r - 3) / 0.8) ** 2)
        paths.append(_real_frame_copy(tmp_path, k, (img.data + ring).astype(np.float32)))
    ranks = {}
    for name, settings in [("default", Settings()),
                           ("before", Settings(embedder="local+stars", n_components=5))]:
        reaper = Reaper(replace(settings, db_url=f"sqlite:///{tmp_path / name}.db"))
        assert all(r.status == "added" for r in reaper.ingest(paths).results)
        df = reaper.export_table()
        rank = df.score.rank(ascending=False, method="min").to_numpy()
        ranks[name] = np.array([rank[(df.file == p.name).to_numpy()
                                     & (np.hypot(df.x - x, df.y - y) <= 6).to_numpy()].min()
                                for p, (x, y) in zip(paths, places, strict=True)])
        top_tenth = 0.1 * len(df)
    assert (ranks["default"] <= top_tenth).sum() >= 7 > (ranks["before"] <= top_tenth).sum()
    assert ranks["default"].mean() < 0.6 * ranks["before"].mean()


def test_more_like_a_cosmic_ray_is_other_cosmic_rays(tmp_path):
    """A cosmic ray (a two-pixel track, 30σ to 300σ) in each of eight copies of the real SPOC
    frame: "more like this" from each one's best cutout finds more cutouts of the other seven
    among its 10 nearest in other copies (29 of 80) than the plain Euclidean neighbours of the
    same space (20 of 80), because the distance weighs the features that make the query odd."""
    from reaper_core.similarity import SimilarityIndex

    img, x0, sig = _real_frame_and_noise()
    places = [(x0 + 20 + 15 * k % 90, 25 + 11 * k) for k in range(8)]
    paths = []
    for k, ((x, y), amp) in enumerate(zip(places, np.geomspace(30, 300, 8) * sig, strict=True)):
        data = img.data.astype(np.float32)
        data[y, x] += amp
        data[y, x + 1] += 0.6 * amp
        paths.append(_real_frame_copy(tmp_path, k, data))
    reaper, df, copy, dx, dy = _ingest_copies(f"sqlite:///{tmp_path / 'c.db'}", paths, places)
    shows = (np.abs(dx) <= 16) & (np.abs(dy) <= 16)  # the window shows its copy's ray
    row = {int(c): i for i, c in enumerate(df.cutout_id)}
    ids, Z = reaper._space(reaper.model())
    plain = SimilarityIndex(ids, Z)
    found = {"more like this": 0, "Euclidean": 0}
    for k in range(8):
        near = np.flatnonzero((copy == k) & (np.hypot(dx, dy) <= 3))
        q = int(df.cutout_id.iloc[near[np.argmax(df.score.to_numpy()[near])]])
        for how, got in (("more like this", [i for i, _ in reaper.similar(q, 40)]),
                         ("Euclidean", plain.query(Z[ids == q][0], 40, exclude=q)[0].tolist())):
            other = [row[i] for i in got if copy[row[i]] != k][:10]
            found[how] += int(shows[other].sum())
    assert found["more like this"] >= 24 and found["more like this"] > found["Euclidean"] + 5


def test_a_group_of_bad_columns_is_named_for_them(tmp_path, capsys):
    """A dark bad column (41 px, 8σ low) in each of eight copies of the real SPOC frame: the
    group holding most of their flagged cutouts is named by what its members share — a dark
    column — in the words the gallery and ``anomaly-reaper groups`` show."""
    from collections import Counter

    from reaper_core.cli import main

    img, x0, sig = _real_frame_and_noise()
    places = [(x0 + 100 - 9 * k, 100 - 8 * k) for k in range(8)]
    paths = []
    for k, (x, y) in enumerate(places):
        data = img.data.astype(np.float32)
        data[y - 20:y + 21, x] -= 8 * sig
        paths.append(_real_frame_copy(tmp_path, k, data))
    db = f"sqlite:///{tmp_path / 'g.db'}"
    reaper, df, _, dx, dy = _ingest_copies(db, paths, places)
    on_column = (np.abs(dx) <= 3) & (np.abs(dy) <= 21)
    groups = reaper.groups()
    counts = Counter(groups.get(int(c), 0) for c in df.cutout_id[on_column])
    counts.pop(0, None)
    best = counts.most_common(1)[0][0]
    words = reaper.group_reasons()
    assert set(words) == set(groups.values()) - {0}
    assert any("dark column" in w for w in words[best])
    assert main(["groups", "--db-url", db]) == 0
    assert f"    what they share: {'; '.join(words[best])}" in capsys.readouterr().out


def test_reasons_say_only_what_the_patch_shows(tmp_path):
    """Why a cutout of the real SPOC frame scores high is said in phrases that are true of it:
    each phrase of a statistic ("a brighter peak than usual", "no bright column", "a dark
    column …") names a value on that side of the median over the frame's cutouts — not one
    merely above or below what the rest of the patch predicts (a bleed trail's column, fainter
    than its star's light predicts, was "no bright column"). Of the 40 highest-scoring
    cutouts, every phrase; each has two or three, nearly all three."""
    from reaper_core import store

    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'w.db'}", load_demo=0))
    assert reaper.ingest([SPOC]).results[0].status == "added"
    model = reaper.model()
    ids, X = store.load_embeddings(reaper.engine, model.embedder)
    median = np.median(X, axis=0)
    said: dict[str, list[tuple[int, int]]] = {}  # phrase → the (feature, side) saying it
    for i, f in enumerate(reaper.features(model)):
        for phrase, side in ((f.high, 1), (f.low, -1)):
            if phrase and "{where}" not in phrase:
                said.setdefault(phrase, []).append((i, side))
    top = reaper.ranking(model)["cutout_id"][:40].tolist()
    why = reaper.reasons(model, top)
    checked = 0
    assert sum(len(why[cid]) == 3 for cid in top) >= 36
    for cid in top:
        x = X[np.flatnonzero(ids == cid)[0]]
        assert len(why[cid]) in (2, 3)
        for phrase in why[cid]:
            if phrase in said:
                checked += 1
                assert any(side * (x[i] - median[i]) > 0 for i, side in said[phrase]), (
                    cid, phrase)
    assert checked >= 80


def test_the_same_frame_in_other_units_is_judged_alike(tmp_path):
    """A frame in ADU instead of e⁻/s, or with its sky subtracted, is the same sky: its
    cutouts are embedded alike and the one model flags the same ones in each (before, the
    patches' sky level and noise in image units were features: the frame ×10 scored by a
    model of the original had most of its cutouts flagged)."""
    with fits.open(SPOC) as hdul:
        data = hdul[1].data.astype(np.float32)
        for name, pixels in (("adu", data * 10), ("nosky", data - np.nanmedian(data))):
            hdul[1].data = pixels
            hdul.writeto(tmp_path / f"{name}_{SPOC.name}")
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'units.db'}"))
    first = reaper.ingest([SPOC]).results[0]
    second = reaper.ingest([tmp_path / f"adu_{SPOC.name}"]).results[0]
    assert first.n_anomalies and second.n_anomalies == first.n_anomalies
    # (The third file makes the model learn anew from all three: they flag alike still.)
    assert reaper.ingest([tmp_path / f"nosky_{SPOC.name}"]).results[0].status == "added"
    df = reaper.export_table()
    flagged = {f: set(zip(g.x[g.is_anomaly].round(2), g.y[g.is_anomaly].round(2), strict=True))
               for f, g in df.groupby("file")}  # (centroids differ by float32 rounding)
    assert len(flagged) == 3 and len(set(map(frozenset, flagged.values()))) == 1
    ids, X = next(store.iter_embeddings(reaper.engine, reaper.settings.embedder))
    row = dict(zip(ids.tolist(), X, strict=True))
    a, b, c = (np.stack([row[i] for i in g.cutout_id]) for _, g in df.groupby("file"))
    np.testing.assert_allclose(b, a, atol=1e-2)
    np.testing.assert_allclose(c, a, atol=1e-2)


def test_a_frame_under_scattered_light_is_judged_by_what_it_shows(tmp_path):
    """The real SPOC frame under a sky rising 10σ per 100 px (scattered light), stored after
    the original and scored by the original's model: it keeps its objects and is flagged about
    as little. Before, its background's RMS widened with the slope (187 of the 215 cutouts
    cut) and the patches kept the slope (135 of them flagged, the original 8)."""
    with fits.open(SPOC) as hdul:
        data = hdul[1].data.astype(np.float32)
        science = data[science_region(hdul[1].header, data.shape)]
        sigma = 1.4826 * np.nanmedian(np.abs(science - np.nanmedian(science)))
        yy, xx = np.mgrid[0:data.shape[0], 0:data.shape[1]]
        hdul[1].data = data + (0.1 * sigma * (xx + 0.5 * yy)).astype(np.float32)
        hdul.writeto(tmp_path / f"lit_{SPOC.name}")
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'lit.db'}"))
    first = reaper.ingest([SPOC]).results[0]
    report = reaper.ingest([tmp_path / f"lit_{SPOC.name}"])
    lit = report.results[0]
    assert not report.fitted  # scored by the original's model
    assert lit.n_cutouts > 0.9 * first.n_cutouts  # 205 of 215 (the base: 187)
    assert lit.n_anomalies < max(4 * first.n_anomalies, lit.n_cutouts / 6)
