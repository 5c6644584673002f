"""The first hour's pieces that are not pages: a cutout as FITS with the real file's WCS, DS9
region files, light command-line starts, the background demo load, counts in words."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from reaper_app.background import DemoLoad
from reaper_core.cli import main
from reaper_core.config import Settings
from reaper_core.errors import ReaperError
from reaper_core.service import Reaper
from reaper_core.words import count

from .test_real_tess import SPOC

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A service with the real SPOC FFI corner ingested from a copy that can be moved away."""
    folder = tmp_path_factory.mktemp("real")
    path = folder / SPOC.name
    shutil.copy(SPOC, path)
    reaper = Reaper(Settings(db_url=f"sqlite:///{folder / 'r.db'}",
                             uploads_dir=str(folder / "up")))
    assert reaper.ingest([path]).results[0].status == "added"
    return reaper, path


def test_cutout_fits_has_the_files_pixels_and_wcs(real):
    reaper, path = real
    ranked = reaper.ranking(reaper.model())
    cid, x, y = int(ranked["cutout_id"][0]), ranked["x"][0], ranked["y"][0]
    name, data = reaper.cutout_fits(cid)
    assert name == f"cutout_{cid}.fits"
    hdu = fits.open(io.BytesIO(data))[0]
    assert hdu.data.shape == (32, 32)
    assert hdu.header["CUTOUTID"] == cid and hdu.header["ORIGFILE"] == path.name
    assert hdu.header["SCORE"] == pytest.approx(ranked["score"][0], rel=1e-6)
    # The pixels are the file's own, from the origin the header states.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = fits.getdata(SPOC, 1).astype(np.float32)
        file_wcs = WCS(fits.getheader(SPOC, 1))
        cut_wcs = WCS(hdu.header)
    x0, y0 = hdu.header["XORIGIN"], hdu.header["YORIGIN"]
    inside = np.isfinite(hdu.data)
    ny, nx = inside.shape
    expect = np.full((ny, nx), np.nan, np.float32)
    ys, xs = slice(max(y0, 0), min(y0 + ny, image.shape[0])), slice(max(x0, 0),
                                                                    min(x0 + nx, image.shape[1]))
    expect[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = image[ys, xs]
    np.testing.assert_array_equal(hdu.data[inside], expect[inside])
    # Its WCS (SIP distortion included) gives the sky position the file's header gives.
    a = file_wcs.pixel_to_world(x, y)
    b = cut_wcs.pixel_to_world(x - x0, y - y0)
    assert a.separation(b).arcsec < 0.01
    assert cut_wcs.sip is not None


def test_cutout_fits_without_the_original_file_says_so(real, tmp_path):
    reaper, path = real
    cid = int(reaper.ranking(reaper.model())["cutout_id"][-1])
    moved = tmp_path / path.name
    shutil.move(path, moved)
    try:
        _, data = reaper.cutout_fits(cid)
    finally:
        shutil.move(moved, path)
    hdu = fits.open(io.BytesIO(data))[0]
    assert "no WCS" in str(hdu.header["COMMENT"]) and "CTYPE1" not in hdu.header
    np.testing.assert_array_equal(hdu.data, reaper.cutouts([cid])[cid][0])
    with pytest.raises(ReaperError, match="no cutout with id 999999"):
        reaper.cutout_fits(999999)


def test_region_file_boxes_the_files_anomalies(real, tmp_path):
    from regions import Regions

    reaper, path = real
    model = reaper.model()
    cols = reaper.ranking(model)
    flagged = cols["is_anomaly"]
    assert flagged.any()
    name, text = reaper.region_file(path.name)
    assert name.endswith("_anomalies.reg") and "\nimage\n" in text
    regs = Regions.parse(text, format="ds9")
    assert len(regs) == int(flagged.sum())
    # DS9 counts from 1: read back, the boxes sit on the cutouts' 0-based centres.
    got = sorted((r.center.x, r.center.y, r.meta["text"]) for r in regs)
    want = sorted((x, y, f"#{c} score {s:.3g}") for c, x, y, s in zip(
        cols["cutout_id"][flagged], cols["x"][flagged], cols["y"][flagged],
        cols["score"][flagged], strict=True))
    for (gx, gy, gt), (wx, wy, wt) in zip(got, want, strict=True):
        assert gx == pytest.approx(wx, abs=1e-6) and gy == pytest.approx(wy, abs=1e-6)
        assert gt == wt
    assert all(r.width == 32 and r.height == 32 for r in regs)
    # The same from the command line; a file that is not stored is one sentence.
    db = reaper.settings.db_url
    out = tmp_path / "a.reg"
    assert main(["regions", "--db-url", db, path.name, "-o", str(out)]) == 0
    assert out.read_text() == text
    assert main(["regions", "--db-url", db, "nosuch.fits"]) == 2
    # A file without anomalies still gets a region file DS9 opens (it was empty, 0 bytes).
    from reaper_core.downloads import ds9_regions

    empty = ds9_regions(np.zeros(0), np.zeros(0), 32, [])
    assert empty.startswith("# Region file format: DS9") and "\nimage\n" in empty
    assert len(Regions.parse(empty, format="ds9")) == 0


def test_light_commands_import_neither_pandas_nor_scikit_learn(real, tmp_path):
    """What keeps `score --top`, `export` and `label` starting in about a second (measured in
    benchmarks/startup.py): they do not import pandas, scikit-learn or astropy."""
    reaper, _ = real
    db = reaper.settings.db_url
    cid = str(int(reaper.ranking(reaper.model())["cutout_id"][0]))
    for args in (["score", "--top", "5"], ["export", "-o", str(tmp_path / "e.csv")],
                 ["label", cid, "--as", "interesting"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "reaper_core.cli",
                              *args, "--db-url", db], capture_output=True, text=True,
                             cwd=tmp_path, check=True)
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()
                    if line.startswith("import time:")}
        for heavy in ("pandas", "sklearn", "astropy", "photutils", "matplotlib"):
            assert heavy not in imported, (args, heavy)
    # Explore's points (every anomaly and their principal components) without scikit-learn.
    code = ("import sys; from reaper_core.config import Settings; "
            "from reaper_core.service import Reaper; "
            f"r = Reaper(Settings(db_url={db!r}, load_demo=0)); "
            "p = r.explore_points(r.require_model()); "
            "assert len(p['cutout_id']) and p['pcs'].shape[1] == 5; "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert out.stdout.strip() == "False"
    # The CSV written without pandas reads back as the export table.
    import pandas as pd

    back = pd.read_csv(tmp_path / "e.csv")
    want = reaper.export_table()
    assert list(back.columns) == list(want.columns)
    np.testing.assert_array_equal(back["cutout_id"], want["cutout_id"])
    np.testing.assert_allclose(back["score"], want["score"])
    np.testing.assert_allclose(back["ra"], want["ra"])
    assert (back["sector"] == 1).all() and back["is_anomaly"].dtype == bool
    reaper.label([int(cid)], None)


def test_demo_loads_in_the_background_and_resumes(tmp_path):
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'd.db'}",
                        uploads_dir=str(tmp_path / "up"))
    reaper = Reaper(settings)
    assert reaper.demo_pending()
    job = DemoLoad(reaper).start()
    seen = []
    while not job.state().done:
        seen.append(job.state())
        time.sleep(0.05)
    final = job.state()
    assert final.error is None and final.fraction == 1.0 and "3 added" in final.summary
    fractions = [s.fraction for s in seen]
    assert fractions == sorted(fractions)  # progress only goes forward
    assert any("file 2 of 3" in s.text for s in seen) and any("file 3 of 3" in s.text
                                                             for s in seen)
    assert not reaper.demo_pending()
    # Interrupted half-way (one file gone from the database): a new load adds only what is
    # missing.
    first = reaper.files()[0]
    from reaper_core import store

    with store.session_scope(reaper.engine) as s:
        s.delete(s.get(store.FitsFile, first.id))
    again = DemoLoad(reaper).start()
    while not again.state().done:
        time.sleep(0.05)
    assert "1 added" in again.state().summary and "2 duplicate" in again.state().summary
    # A demo file a person removed stays removed (the demo is not "interrupted").
    reaper.remove_files([first.name])
    assert first.name not in {f.name for f in reaper.files()} and not reaper.demo_pending()


def test_counts_in_words():
    assert count(1, "cutout") == "1 cutout"
    assert count(2500, "object") == "2,500 objects"
    assert count(0, "anomaly", "anomalies") == "0 anomalies"
