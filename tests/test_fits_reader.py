import bz2
import gzip

import numpy as np
import pytest
from astropy.io import fits

from reaper_core.config import Settings
from reaper_core.errors import FITSReadError
from reaper_core.files import expand_paths
from reaper_core.fits_reader import read_fits, separate_images
from reaper_core.service import Reaper
from reaper_core.tess import SPOC_SCIENCE

from .conftest import REAL_DATA


def test_spoc_layout_metadata_and_wcs(spoc_file, sim_small):
    img = read_fits(spoc_file)
    assert img.layout == "spoc"
    assert (img.sector, img.camera, img.ccd) == (7, 2, 3)
    assert img.tstart == pytest.approx(sim_small.tstart)
    assert img.mid_time > img.tstart
    assert img.wcs is not None
    # The WCS maps a star's pixel position to the same sky position as the simulator's WCS.
    x, y = float(sim_small.stars["x"][0]), float(sim_small.stars["y"][0])
    assert np.allclose(img.wcs.pixel_to_world_values(x, y),
                       sim_small.wcs.pixel_to_world_values(x, y))
    np.testing.assert_array_equal(img.data, sim_small.image)
    assert img.catalog is None


def test_tica_layout_reads_star_table(tica_file, sim_small):
    img = read_fits(tica_file)
    assert img.layout == "tica"
    assert (img.sector, img.camera, img.ccd) == (7, 2, 3)
    assert img.catalog is not None and len(img.catalog) > 20
    bright = sim_small.stars[sim_small.stars["flux"] > 900]  # write_tica's cut (Tmag ≈ 13)
    # FLXCOL/FLXROW are 1-based on disk; the reader returns 0-based positions.
    np.testing.assert_allclose(img.catalog[:, 0], bright["x"], atol=1e-6)
    np.testing.assert_allclose(img.catalog[:, 1], bright["y"], atol=1e-6)


def test_full_spoc_science_region(full_spoc_file):
    img = read_fits(full_spoc_file)
    assert img.shape == (2078, 2136)
    assert img.valid == SPOC_SCIENCE


def test_plain_gzip_and_tile_compressed(hdf_file, tmp_path):
    plain = read_fits(hdf_file)
    assert plain.layout == "plain" and plain.shape == (872, 1000)
    assert plain.sector is None and plain.wcs is None
    gz = tmp_path / "hdf.fits.gz"
    gz.write_bytes(gzip.compress(hdf_file.read_bytes()))
    np.testing.assert_array_equal(read_fits(gz).data, plain.data)
    # bzip2, as SDSS and older archives serve their frames.
    bz = tmp_path / "hdf.fits.bz2"
    bz.write_bytes(bz2.compress(hdf_file.read_bytes()))
    np.testing.assert_array_equal(read_fits(bz).data, plain.data)
    assert expand_paths([tmp_path]) == sorted([gz, bz])
    broken = tmp_path / "cut.fits.bz2"
    broken.write_bytes(bz.read_bytes()[:5000])
    with pytest.raises(FITSReadError, match=r"^cut.fits.bz2: is a damaged bzip2 file"):
        read_fits(broken)
    fz = tmp_path / "hdf.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(plain.data, compression_type="GZIP_1"),
                  ]).writeto(fz)
    comp = read_fits(fz)
    # Tile compression quantises floats (lossy by design, a fraction of the noise).
    np.testing.assert_allclose(comp.data, plain.data, atol=0.25)


def test_tesscut_cube_uses_median(tmp_path):
    cube = np.random.default_rng(0).normal(10, 1, (5, 20, 30)).astype(np.float32)
    cube[2] += 1000  # one bad frame is ignored by the median
    cols = fits.ColDefs([fits.Column(name="TIME", format="D", array=np.arange(5.0)),
                         fits.Column(name="FLUX", format="600E", dim="(30,20)", array=cube)])
    path = tmp_path / "tess-s0001-1-1_astrocut.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"SECTOR": 1, "CAMERA": 1, "CCD": 1})),
                  fits.BinTableHDU.from_columns(cols)]).writeto(path)
    img = read_fits(path)
    assert img.layout == "tesscut" and img.shape == (20, 30) and img.sector == 1
    np.testing.assert_allclose(img.data, np.median(cube, axis=0), rtol=1e-5)


def _write(tmp_path, name, hdus):
    p = tmp_path / name
    fits.HDUList(hdus).writeto(p)
    return p


@pytest.mark.parametrize("case, reason", [
    ("empty", "empty"),
    ("png", "PNG"),
    ("truncated", "truncated"),
    ("table_only", "no image HDU"),
    ("one_d", "1-D"),
    ("four_d", "4-D"),
    ("all_nan", "no finite pixels"),
    ("all_zero", "constant image"),
    ("tiny", "smaller than"),
    ("text", "not a FITS file"),
])
def test_bad_files_raise_one_clear_sentence(tmp_path, hdf_file, case, reason):
    rng = np.random.default_rng(0)
    if case == "empty":
        p = tmp_path / "empty.fits"
        p.write_bytes(b"")
    elif case == "png":
        from PIL import Image

        p = tmp_path / "picture.fits"
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(p, format="PNG")
    elif case == "truncated":
        p = tmp_path / "cut.fits"
        p.write_bytes(hdf_file.read_bytes()[: 2880 * 3 + 100])
    elif case == "table_only":
        p = _write(tmp_path, "table.fits", [fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
            [fits.Column(name="A", format="E", array=np.arange(3.0))])])
    elif case == "one_d":
        p = _write(tmp_path, "1d.fits", [fits.PrimaryHDU(rng.normal(size=100))])
    elif case == "four_d":
        p = _write(tmp_path, "4d.fits", [fits.PrimaryHDU(rng.normal(size=(2, 3, 20, 20)))])
    elif case == "all_nan":
        p = _write(tmp_path, "nan.fits", [fits.PrimaryHDU(np.full((32, 32), np.nan))])
    elif case == "all_zero":
        p = _write(tmp_path, "zero.fits", [fits.PrimaryHDU(np.zeros((32, 32)))])
    elif case == "tiny":
        p = _write(tmp_path, "tiny.fits", [fits.PrimaryHDU(rng.normal(size=(3, 3)))])
    else:
        p = tmp_path / "notes.fits"
        p.write_text("hello")
    with pytest.raises(FITSReadError) as info:
        read_fits(p)
    msg = str(info.value)
    assert msg.startswith(p.name + ":")
    assert reason in msg
    assert "\n" not in msg


@pytest.mark.parametrize("packer", [gzip, bz2], ids=["gzip", "bzip2"])
def test_size_limits_and_compression_bombs(tmp_path, hdf_file, packer, monkeypatch):
    with pytest.raises(FITSReadError, match=r"over the .* limit"):
        read_fits(hdf_file, max_bytes=100_000)
    with pytest.raises(FITSReadError, match="over the limit of"):
        read_fits(hdf_file, max_pixels=1000)
    # 200 MB of zeros compress to ~200 kB; refused while inflating, never held whole.
    bomb = tmp_path / f"bomb.fits.{'gz' if packer is gzip else 'bz2'}"
    header = fits.PrimaryHDU(np.zeros((10, 10), np.float32)).header.tostring().encode()
    with packer.open(bomb, "wb", compresslevel=9) as gz:
        gz.write(header)
        block = b"\0" * (1 << 20)
        for _ in range(200):
            gz.write(block)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(FITSReadError, match="inflates to more than"):
        read_fits(bomb, max_bytes=20_000_000)
    # Looking for the images of a file inflates no more of it either (astropy, asked to open
    # the bomb, inflated all of it: a 1.5 GB bomb took a minute and 3.2 GB of memory).
    stream = gzip.GzipFile if packer is gzip else bz2.BZ2File
    inflated = []
    read = stream.read

    def counted(self, *args, **kwargs):
        out = read(self, *args, **kwargs)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(stream, "read", counted)
    assert separate_images(bomb, max_bytes=20_000_000) == []
    assert 0 < sum(inflated) <= 20_000_000 + (1 << 20)


ISAAC = REAL_DATA / "other" / "isaac_vlt_crowded_field.fits"


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_zero_padding_is_read_as_missing(tmp_path):
    """A real frame written as mosaics and drizzled images often are — zeros outside the
    exposed area — is read with that area missing: no cutout comes from the padding's edge,
    and the strangest objects are the field's own (one flagged by the edge is flagged in the
    frame without padding too, where a cutout of the same object is: a bright star 7 px from
    the step). Dead pixels (a 3 × 3
    cluster, a column) stay zeros, things to find."""
    with fits.open(ISAAC) as hdul:
        data = hdul[0].data.astype(np.float32)
    data[:, :60] = 0.0  # a padded margin
    data[900:, :300] = 0.0  # and a step in it
    data[500:503, 500:503] = 0.0  # a dead cluster
    data[100:400, 700] = 0.0  # a dead column
    path = tmp_path / "padded.fits"
    fits.PrimaryHDU(data).writeto(path)
    img = read_fits(path)
    pad = np.zeros(data.shape, bool)
    pad[:, :60] = pad[900:, :300] = True
    assert np.isnan(img.data[pad]).all() and np.isfinite(img.data[~pad]).all()
    assert (img.data[500:503, 500:503] == 0).all() and (img.data[100:400, 700] == 0).all()
    assert img.valid == (slice(0, 1024), slice(60, 1024))
    assert any(f"{pad.sum():,} pixels of exact zeros" in n for n in img.notes)

    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'pad.db'}", load_demo=0))
    result = reaper.ingest([path]).results[0]
    assert result.status == "added", result.message
    df = reaper.export_table()
    # No cutout is centred on the padding, and none by its edge is flagged.
    assert df["x"].min() >= 60 and not ((df["x"] < 300) & (df["y"] >= 900)).any()
    flagged = df[df["is_anomaly"]]
    by_edge = (flagged["x"] < 60 + 16) | ((flagged["x"] < 300 + 16) & (flagged["y"] > 900 - 16))
    assert len(flagged) > 20
    if by_edge.any():
        whole = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'whole.db'}", load_demo=0))
        assert whole.ingest([ISAAC]).results[0].status == "added"
        own = whole.export_table().query("is_anomaly")
        for x, y in zip(flagged["x"][by_edge], flagged["y"][by_edge], strict=True):
            assert (np.hypot(own["x"] - x, own["y"] - y) < 12).any(), (x, y)  # its object
    # An integer image's zeros are data (its sky may well be 0).
    fits.PrimaryHDU(np.round(data).astype(np.int16)).writeto(tmp_path / "int.fits")
    assert np.isfinite(read_fits(tmp_path / "int.fits").data).all()


def test_cube_of_image_planes_reads_their_median(tmp_path):
    """A 3-D image (planes of one field: exposures, or a spectral cube) is read as the
    per-pixel median of its planes, said in the notes; a plane with a flash leaves no trace."""
    rng = np.random.default_rng(3)
    sky = rng.normal(100, 5, (40, 48)).astype(np.float32)
    planes = np.stack([sky + rng.normal(0, 1, sky.shape).astype(np.float32)
                       for _ in range(5)])
    planes[2, 20, 24] += 5000  # a flash in one plane
    path = _write(tmp_path, "planes.fits", [fits.PrimaryHDU(),
                                            fits.ImageHDU(planes)])
    img = read_fits(path)
    assert img.shape == (40, 48) and img.hdu == 1 and img.layout == "plain"
    np.testing.assert_allclose(img.data, np.median(planes, axis=0))
    assert img.data[20, 24] < 130
    assert any("HDU 1 is a cube of 5 planes" in n for n in img.notes)
    # A 2-D image beside it is preferred; the cube is still there to choose.
    both = _write(tmp_path, "both.fits", [fits.PrimaryHDU(sky), fits.ImageHDU(planes)])
    assert read_fits(both).hdu == 0 and read_fits(both, hdu=1).shape == (40, 48)


KEPLER = REAL_DATA / "kepler" / "kplr-ffi_ch01_test.fits"


@pytest.mark.skipif(not KEPLER.exists(), reason="../shared/data/ is not beside the checkout")
def test_times_in_btjd_from_any_mission_or_observatory(tmp_path):
    """Every file's times are read as BTJD: Kepler's TSTART counts from BJD 2454833 (its
    BJDREFI), not TESS's 2457000; a ground-based frame has MJD-OBS or DATE-OBS (UTC) and
    EXPTIME; such frames make a stack of their own."""
    from reaper_core.stacks import stack_from_files

    kepler = read_fits(KEPLER)
    with fits.open(KEPLER) as hdul:
        mjd_start = hdul[1].header["MJDSTART"]
    # BJD and UTC differ by at most 8.3 minutes (the light time across Earth's orbit).
    assert kepler.tstart == pytest.approx(mjd_start + 2400000.5 - 2457000, abs=0.006)
    assert kepler.tstart < 0 and kepler.tstop > kepler.tstart

    isaac = read_fits(ISAAC)
    assert isaac.tstart == pytest.approx(53838.27267296 + 2400000.5 - 2457000, abs=1e-9)
    assert (isaac.tstop - isaac.tstart) * 86400 == pytest.approx(4.0)  # EXPTIME
    rng = np.random.default_rng(0)
    paths = []
    for i, date in enumerate(["2006-04-13T06:40:00", "2006-04-13T06:32:38.9", "2006-04-13T07:00"]):
        h = fits.Header({"DATE-OBS": date, "EXPTIME": 30.0})
        paths.append(_write(tmp_path, f"frame{i}.fits",
                            [fits.PrimaryHDU(rng.normal(100, 5, (64, 64)), header=h)]))
    stack = stack_from_files(paths)
    assert [f.name for f in stack.frames] == ["frame1.fits", "frame0.fits", "frame2.fits"]
    assert np.diff(stack.times) * 1440 == pytest.approx([7 + 21.1 / 60, 20], abs=1e-3)
    # A date without a time of day is no time to order frames by.
    h = fits.Header({"DATE-OBS": "2006-04-13"})
    assert read_fits(_write(tmp_path, "day.fits", [fits.PrimaryHDU(
        rng.normal(100, 5, (64, 64)), header=h)])).tstart is None


def test_kepler_target_pixel_file_times_in_btjd(tmp_path):
    """A Kepler/K2 target pixel file is a cube like TESScut's, its TIME in BKJD (BJD −
    2454833, its BJDREFI): read in BTJD, as every other time."""
    from reaper_core.fits_reader import read_tesscut
    from reaper_core.simulate_stack import simulate_stack

    sim = simulate_stack(6, 20, seed=1, events={})
    path = sim.write_cube(tmp_path / "kplr008462852-2013098041711_lpd-targ.fits")
    tess_times = read_tesscut(path).time
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["BJDREFI"], hdul[1].header["BJDREFF"] = 2454833, 0.5
    np.testing.assert_allclose(read_tesscut(path).time, tess_times + 2454833.5 - 2457000)


def _kepler_mosaic(path, extra=()):
    """A mosaic file of three CCD channels made of the real Kepler channel's pixels (as they
    are, upside down, mirrored; each with the channel's header, EXTNAME ``MOD.OUT 2.n``), an
    uncertainty image and a data-quality image beside them, and ``extra`` HDUs."""
    with fits.open(KEPLER) as hdul:
        primary, header, data = hdul[0].header, hdul[1].header, hdul[1].data.astype(np.float32)
    channels = [fits.ImageHDU(d, header=header, name=f"MOD.OUT 2.{n + 1}")
                for n, d in enumerate([data, data[::-1].copy(), data[:, ::-1].copy()])]
    fits.HDUList([fits.PrimaryHDU(header=primary), *channels,
                  fits.ImageHDU(np.sqrt(np.abs(data)), name="UNCERT"),
                  fits.ImageHDU(np.zeros(data.shape, np.int16), name="DQ"),
                  *extra]).writeto(path)
    return path, data


@pytest.mark.skipif(not KEPLER.exists(), reason="../shared/data/ is not beside the checkout")
def test_every_image_of_a_mosaic_is_a_frame(tmp_path):
    """A file holding several images of the sky — a mosaic's CCDs (a Kepler FFI has 84
    channels), a field's bands — is ingested image by image, each stored as FILE[N] with its
    own cutouts and WCS; its uncertainty and quality images are not frames. Only the largest
    image was read before (the rest needed --hdu, which then said "same bytes")."""
    from reaper_core.fits_reader import separate_images

    path, data = _kepler_mosaic(tmp_path / "kplr_ffi.fits")
    assert separate_images(path) == [1, 2, 3]
    # HST/JWST: the SCI images (each chip's), not their ERR and DQ beside them.
    chip = data[:100, :100]
    acs = tmp_path / "acs_flt.fits"
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(d, name=n) for n, d in [
        ("SCI", chip), ("ERR", chip), ("DQ", chip.astype(np.int16)),
        ("SCI", chip[::-1]), ("ERR", chip), ("DQ", chip.astype(np.int16))]]).writeto(acs)
    assert separate_images(acs) == [1, 4]
    # One image, a TESS frame and its uncertainties, images of other sizes: one frame each.
    assert separate_images(KEPLER) == []
    assert separate_images(REAL_DATA / "tess" / "tess2018206192942-s0001-1-4-0120-s_ffic.fits"
                           ) == []
    assert separate_images(_write(tmp_path, "thumb.fits", [
        fits.PrimaryHDU(data[::4, ::4].copy()), fits.ImageHDU(data)])) == []

    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", load_demo=0))
    report = reaper.ingest([path])
    assert [(r.name, r.status) for r in report.results] == [
        (f"kplr_ffi.fits[{n}]", "added") for n in (1, 2, 3)]
    assert "image read from HDU 2 (MOD.OUT 2.2), one of 5 images in the file" in \
        report.results[1].notes
    files = reaper.files()
    assert [(f.name, f.hdu) for f in files] == [(f"kplr_ffi.fits[{n}]", n) for n in (1, 2, 3)]
    # The first channel is the real file's image: the same cutouts, at the same RA/Dec.
    alone = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'k.db'}", load_demo=0))
    alone.ingest([KEPLER])
    mine, theirs = (t[t["file_id"] == t["file_id"].min()] for t in (
        reaper.cutout_table(), alone.cutout_table()))
    np.testing.assert_array_equal(mine["x"], theirs["x"])
    np.testing.assert_allclose(mine["ra"], theirs["ra"])
    assert all(f.n_cutouts > 100 for f in files)  # each channel its own cutouts
    assert reaper.region_file(files[1].id)[0] == "kplr_ffi_hdu2_anomalies.reg"
    # Again: each image a duplicate; one HDU asked for: that image, a duplicate too.
    again = reaper.ingest([path])
    assert [r.status for r in again.results] == ["duplicate"] * 3
    assert [r.name for r in reaper.ingest([path], hdu=2).results] == ["kplr_ffi.fits[2]"]
    # The same file gzipped (other bytes): its three images.
    gz = tmp_path / "kplr_ffi.fits.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert [r.name for r in reaper.ingest([gz]).results if r.status == "added"] == [
        f"kplr_ffi.fits.gz[{n}]" for n in (1, 2, 3)]


@pytest.mark.skipif(not KEPLER.exists(), reason="../shared/data/ is not beside the checkout")
def test_wcs_inherited_from_the_primary_header(tmp_path):
    """An extension that says INHERIT = T takes the primary header's cards it lacks (a
    mosaic's WCS written once): the real Kepler channel's WCS moved to the primary header
    gives the same RA/Dec; without INHERIT the extension has none."""
    from astropy.wcs import WCS

    with fits.open(KEPLER) as hdul:
        header, data = hdul[1].header.copy(), hdul[1].data
    wcs_cards = WCS(header).to_header(relax=True)
    for key in wcs_cards:
        header.remove(key, ignore_missing=True, remove_all=True)
    primary = fits.Header(wcs_cards)
    expect = read_fits(KEPLER).wcs.pixel_to_world_values([10.0, 150.0], [20.0, 180.0])
    header["INHERIT"] = True
    path = _write(tmp_path, "inherit.fits", [fits.PrimaryHDU(header=primary),
                                             fits.ImageHDU(data, header=header)])
    got = read_fits(path).wcs.pixel_to_world_values([10.0, 150.0], [20.0, 180.0])
    np.testing.assert_allclose(got, expect, atol=1e-9)
    header["INHERIT"] = False
    path = _write(tmp_path, "own.fits", [fits.PrimaryHDU(header=primary),
                                         fits.ImageHDU(data, header=header)])
    assert read_fits(path).wcs is None


@pytest.mark.skipif(not ISAAC.exists(), reason="../shared/data/ is not beside the checkout")
def test_sky_positions_in_icrs_whatever_the_wcs_frame(tmp_path):
    """RA and Dec are ICRS whatever the WCS's own frame: a field with galactic axes (l = b = 0
    at its reference pixel: the Galactic centre, RA 266.405°, Dec −28.936°) and an old plate's
    FK4 B1950 equator were read as if they were RA and Dec (off by 93° and by 0.7°)."""
    from reaper_core.ingest import world_coords

    data = fits.getdata(ISAAC).astype(np.float32)[:256, :256]
    frames = {"GLON-TAN": ("GLAT-TAN", {}, (0.0, 0.0)),
              "RA---TAN": ("DEC--TAN", {"RADESYS": "FK4", "EQUINOX": 1950.0},
                           (265.61074, -28.91679))}
    expect = {"GLON-TAN": (266.40499, -28.93617), "RA---TAN": (266.40499, -28.93617)}
    for ctype1, (ctype2, cards, crval) in frames.items():
        header = fits.Header({"CTYPE1": ctype1, "CTYPE2": ctype2, "CRPIX1": 128.0,
                              "CRPIX2": 128.0, "CRVAL1": crval[0], "CRVAL2": crval[1],
                              "CDELT1": -0.148 / 3600, "CDELT2": 0.148 / 3600, **cards})
        path = _write(tmp_path, f"{ctype1[:4]}.fits", [fits.PrimaryHDU(data, header=header)])
        img = read_fits(path)
        ra, dec = world_coords(img, np.array([127.0]), np.array([127.0]))
        assert (ra[0], dec[0]) == pytest.approx(expect[ctype1], abs=2e-4)
        reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / ctype1[:4]}.db", load_demo=0))
        reaper.ingest([path])
        table = reaper.cutout_table()
        # Every cutout within the frame's 38″ of the Galactic centre.
        sep = np.hypot((table["ra"] - 266.405) * np.cos(np.radians(28.936)),
                       table["dec"] + 28.936) * 3600
        assert len(table) > 50 and sep.max() < 40


def test_times_of_space_telescopes_and_older_headers(tmp_path):
    """HST's EXPSTART/EXPEND and JWST's MJD-BEG/MJD-END (MJD), and a DATE-OBS that is a date
    alone with the time of day in TIME-OBS or UT (HST, IRAF): each frame has its time (they
    had none, and could not be stacked), and three such frames stack in time order."""
    from reaper_core.stacks import stack_from_files

    rng = np.random.default_rng(0)
    btjd = 2400000.5 - 2457000

    def frame(name, **cards):
        return _write(tmp_path, name, [fits.PrimaryHDU(rng.normal(100, 5, (64, 64)),
                                                       header=fits.Header(cards))])

    hst = read_fits(frame("hst.fits", **{"DATE-OBS": "2004-06-01", "TIME-OBS": "12:00:00",
                                         "EXPSTART": 53157.5, "EXPEND": 53157.51}))
    assert (hst.tstart, hst.tstop) == pytest.approx((53157.5 + btjd, 53157.51 + btjd))
    jwst = read_fits(frame("jwst.fits", **{"MJD-BEG": 60000.25, "MJD-END": 60000.26}))
    assert (jwst.tstart, jwst.tstop) == pytest.approx((60000.25 + btjd, 60000.26 + btjd))
    paths = [frame(f"old{i}.fits", **{"DATE-OBS": "2004-06-01", key: clock, "EXPTIME": 60.0})
             for i, (key, clock) in enumerate([("TIME-OBS", "12:20:00"), ("UT", "12:00:00"),
                                               ("TIME-OBS", "12:10:00")])]
    assert read_fits(paths[1]).tstart == pytest.approx(53157.5 + btjd)
    stack = stack_from_files(paths)
    assert [f.name for f in stack.frames] == ["old1.fits", "old2.fits", "old0.fits"]
    assert np.diff(stack.times) * 1440 == pytest.approx([10, 10], abs=1e-6)


DSS = REAL_DATA / "other" / "dss_poss1_plate_1951.fits"


@pytest.mark.skipif(not KEPLER.exists(), reason="../shared/data/ is not beside the checkout")
def test_a_gzipped_mosaic_is_inflated_once(tmp_path, monkeypatch):
    """The images of a gzipped mosaic are read from one inflation of the file (it was inflated
    to find its images, then again for each); they are the same as the uncompressed file's,
    under the gzipped file's name, and the kept bytes go when the batch ends. A compressed
    file of one image is not kept."""
    import gzip

    from reaper_core import fits_reader

    path, _ = _kepler_mosaic(tmp_path / "kplr_ffi.fits")
    packed = tmp_path / "kplr_ffi.fits.gz"
    packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    opened = []

    def counting(*args, **kwargs):
        opened.append(args[0])
        return gzip.open(*args, **kwargs)

    monkeypatch.setitem(fits_reader._COMPRESSED, b"\x1f\x8b", ("gzip", counting))
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'gz.db'}", load_demo=0))
    report = reaper.ingest([packed])
    assert [(r.name, r.status) for r in report.results] == [
        (f"kplr_ffi.fits.gz[{n}]", "added") for n in (1, 2, 3)]
    assert len(opened) == 2  # to find the images, then once for all three
    assert fits_reader._KEPT is None
    plain = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'plain.db'}", load_demo=0))
    assert [r.n_cutouts for r in plain.ingest([path]).results] == [
        r.n_cutouts for r in report.results]
    # Outside a batch nothing is kept: each read inflates.
    read_fits(packed, hdu=2)
    read_fits(packed, hdu=3)
    assert len(opened) == 4
    # Nor is a compressed file of one image, read twice as before (its images, its read).
    single = tmp_path / "kplr.fits.gz"
    single.write_bytes(gzip.compress(KEPLER.read_bytes(), compresslevel=1))
    assert reaper.ingest([single]).results[0].status == "added"
    assert len(opened) == 6


@pytest.mark.skipif(not DSS.exists(), reason="../shared/data/ is not beside the checkout")
def test_old_plate_dates_and_blank_pixels_of_unsigned_images(tmp_path):
    """A plate scan's DATE-OBS in the old DD/MM/YY form with its UT (the real 1951 POSS-I
    plate: 1 December 1951, 04:25 UT) gives its time (it had none); an unsigned 16-bit image's
    BLANK pixels (BZERO 32768: astropy leaves them as numbers) are missing, said in a note,
    while an image without BLANK keeps its values."""
    from astropy.time import Time

    plate = read_fits(DSS)
    assert plate.tstart == pytest.approx(Time("1951-12-01T04:25:00", scale="utc").jd - 2457000)
    counts = np.random.default_rng(0).normal(1000, 30, (100, 100)).astype(np.uint16)
    counts[:10] = 0  # raw −32768 + BZERO 32768: what the blank pixels read as
    hdu = fits.PrimaryHDU(counts)
    hdu.header["BLANK"] = -32768
    img = read_fits(_write(tmp_path, "u16.fits", [hdu]))
    assert np.isnan(img.data[:10]).all() and np.isfinite(img.data[10:]).all()
    assert "1,000 pixels marked blank (BLANK) read as missing" in img.notes
    plain = read_fits(_write(tmp_path, "u16_plain.fits", [fits.PrimaryHDU(counts)]))
    assert np.isfinite(plain.data).all() and (plain.data[:10] == 0).all()


def test_a_file_of_thousands_of_stamps_is_read_as_one_image(tmp_path):
    """A file of more images than a mosaic camera writes (here 200 postage stamps) is not read
    image by image — each read parses the whole file, and 3,000 stamps took 2 s an image —
    but as its largest image, with a sentence saying so and how to read the others."""
    from reaper_core.fits_reader import MAX_SEPARATE_IMAGES

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:24, :24]
    stamps = [fits.ImageHDU((rng.normal(100, 5, (24, 24)) + 500 * np.exp(
        -((xx - 12) ** 2 + (yy - 12) ** 2) / 4)).astype(np.float32)) for _ in range(200)]
    path = tmp_path / "stamps.fits"
    fits.HDUList([fits.PrimaryHDU(), *stamps]).writeto(path)
    assert 200 > MAX_SEPARATE_IMAGES and separate_images(path) == []
    report = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 's.db'}")).ingest([path])
    assert [r.name for r in report.results] == ["stamps.fits"]
    assert report.results[0].status == "added", report.results[0].message
    assert (f"image read from HDU 1, the largest of 200 images: a file of more than "
            f"{MAX_SEPARATE_IMAGES} is not read image by image (choose another with --hdu)"
            in report.results[0].notes)
    # A mosaic's worth (Kepler's FFIs: 84 channels) is still read image by image.
    fits.HDUList([fits.PrimaryHDU(), *stamps[:84]]).writeto(tmp_path / "mosaic.fits")
    assert separate_images(tmp_path / "mosaic.fits") == list(range(1, 85))
