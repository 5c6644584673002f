"""Reliability and security, round two: secrets, NaN edges, HDUs, WCS, clear errors, bounded
growth, settings that are refused, interrupted ingests. Each test failed on the main before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import event
from streamlit.testing.v1 import AppTest

from reaper_core import store
from reaper_core.cli import main
from reaper_core.config import Settings, load_settings
from reaper_core.demo import hubble_deep_field_image
from reaper_core.errors import ConfigError, FITSReadError, ReaperError
from reaper_core.export import write_export
from reaper_core.fits_reader import read_fits
from reaper_core.service import Reaper

ROOT = Path(__file__).resolve().parent.parent
ENTRY = str(ROOT / "reaper_app" / "main.py")
SECRET_URL = "postgresql+psycopg://astro:s3cr3t-pw@127.0.0.1:1/reaper"


def test_database_password_is_never_printed(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", SECRET_URL)
    assert main(["configure"]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t" not in out and "db_url = postgresql+psycopg://astro:***@127.0.0.1:1" in out
    import reaper_core.cli as cli

    monkeypatch.setattr(cli, "_run_child", lambda cmd, env: 0)
    assert main(["run", "--port", "8999"]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t" not in out and "astro:***@" in out
    # The password can live in a file of its own, out of every URL and message.
    pw = tmp_path / "pw"
    pw.write_text("from-a-file\n")
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", "postgresql+psycopg://astro@127.0.0.1:1/x")
    monkeypatch.setenv("ANOMALY_REAPER_DB_PASSWORD_FILE", str(pw))
    s = load_settings()
    assert s.engine_url() == "postgresql+psycopg://astro:from-a-file@127.0.0.1:1/x"
    assert main(["configure"]) == 0
    assert "from-a-file" not in capsys.readouterr().out
    # An unreachable database: one sentence, masked, no traceback.
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", SECRET_URL)
    monkeypatch.delenv("ANOMALY_REAPER_DB_PASSWORD_FILE")
    assert main(["export", "-o", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the database (postgresql+psycopg://astro:***@127.0.0.1:1")
    assert "cannot be reached" in err and "s3cr3t" not in err and err.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()


def test_dashboard_with_an_unreachable_database_says_one_sentence(monkeypatch):
    import streamlit as st

    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", SECRET_URL)
    monkeypatch.setenv("ANOMALY_REAPER_LOAD_DEMO", "0")
    st.cache_resource.clear()
    at = AppTest.from_file(ENTRY, default_timeout=60).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "cannot be reached" in errors[0] and "s3cr3t" not in errors[0]
    assert "Traceback" not in errors[0] and "\n" not in errors[0]
    st.cache_resource.clear()


def test_nan_borders_never_reach_the_ranking(tmp_path):
    img = hubble_deep_field_image()
    nan = img.copy()
    nan[:, :60] = np.nan
    nan[:40, :] = np.nan
    nan[:, -25:] = np.nan
    nan[400:440, 500:540] = np.nan  # a hole inside: its positions are left out and counted
    path = tmp_path / "nan_borders.fits"
    fits.PrimaryHDU(nan).writeto(path)
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}"))
    result = reaper.ingest([path]).results[0]
    assert result.status == "added"
    assert any("positions not cut" in n for n in result.notes)
    df = reaper.export_table().sort_values("score", ascending=False)
    x, y = np.round(df.x.to_numpy()).astype(int), np.round(df.y.to_numpy()).astype(int)
    assert np.isfinite(nan[y, x]).all()  # no cutout centred on NaN
    # Every window holds real pixels (at most 5 % NaN); the top 15 are not at the borders.
    patches = reaper.cutouts(df.cutout_id.astype(int).tolist())
    assert max(np.isnan(p).mean() for p, _ in patches.values()) <= 0.05
    top = df.head(15)
    assert ((top.x > 80) & (top.y > 60) & (top.x < 1000 - 45)).all()


def test_a_frame_whose_every_window_is_holed_says_so(tmp_path):
    """Every 7th row infinite: objects are found, but no window holds ≤ 5 % missing pixels;
    the sentence says that, not that nothing was detected, and the batch goes on."""
    img = hubble_deep_field_image()
    holed = img.copy()
    holed[::7] = np.inf
    bad, good = tmp_path / "striped.fits", tmp_path / "good.fits"
    fits.PrimaryHDU(holed).writeto(bad)
    fits.PrimaryHDU(img).writeto(good)
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 's.db'}"))
    results = {r.name: r for r in reaper.ingest([bad, good]).results}
    assert results["good.fits"].status == "added"
    msg = results["striped.fits"].message
    assert results["striped.fits"].status == "error"
    assert msg.startswith("striped.fits: has ") and "no usable window" in msg
    assert "infinite" in msg and "5 %" in msg and "\n" not in msg


def test_singular_wcs_is_dropped_with_a_note(tmp_path):
    hdu = fits.PrimaryHDU(hubble_deep_field_image())
    h = hdu.header
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 189.2, 62.2, 500, 436
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = 1e-5, 2e-5, 1e-5, 2e-5  # rank 1
    path = tmp_path / "singular.fits"
    hdu.writeto(path)
    img = read_fits(path)
    assert img.wcs is None and any("singular" in n for n in img.notes)
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'w.db'}"))
    result = reaper.ingest([path]).results[0]
    assert any("WCS ignored" in n for n in result.notes)
    assert reaper.export_table().ra.isna().all()
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = 2.0, 0.0, 0.0, 2.0  # 7200″ / px
    hdu.writeto(tmp_path / "huge.fits")
    assert read_fits(tmp_path / "huge.fits").wcs is None


def test_disk_full_database_is_one_sentence(tmp_path, hdf_file, spoc_file):
    url = f"sqlite:///{tmp_path / 'full.db'}"
    engine = store.make_engine(url)
    Reaper(Settings(db_url=url), engine).ingest([hdf_file])

    @event.listens_for(engine, "connect")
    def _full(dbapi_conn, _record):  # no page may be added: "database or disk is full"
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()

    engine.dispose()
    result = Reaper(Settings(db_url=url), engine).ingest([spoc_file]).results[0]
    assert result.status == "error"
    assert "disk is full" in result.message and "free some space" in result.message
    assert "[SQL" not in result.message and "\n" not in result.message
    assert "OperationalError" not in result.message


def test_export_onto_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    from reaper_core import export

    cols = {"cutout_id": [1, 2], "score": [0.5, 1.5]}

    def full(columns, path):
        Path(path).write_text("cutout_id,score\n1,0.5\n")  # half written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_csv", full)
    target = tmp_path / "out.csv"
    with pytest.raises(ReaperError, match=r"cannot write the export .*out\.csv: No space left"):
        write_export(cols, target)
    assert list(tmp_path.iterdir()) == []


def test_nan_threshold_is_refused_in_one_line(tmp_path, hdf_file, capsys):
    db = f"sqlite:///{tmp_path / 't.db'}"
    assert main(["ingest", "--db-url", db, str(hdf_file)]) == 0
    capsys.readouterr()
    assert main(["score", "--db-url", db, "--value", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: threshold not saved: threshold value must be a finite")
    assert err.count("\n") == 1 and "SELECT" not in err and "UPDATE" not in err
    with pytest.raises(ConfigError, match="threshold_value must be a finite number"):
        load_settings(None, threshold_value="nan")


def test_models_are_pruned_and_a_refit_keeps_the_users_threshold(tmp_path, hdf_file, capsys):
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'p.db'}", keep_models=2))
    reaper.ingest([hdf_file])
    reaper.save_threshold("percentile", 97.5)
    for _ in range(5):
        model = reaper.fit()
    assert reaper.totals()["models"] == 3  # the current one and two others
    assert (model.row.threshold_mode, model.row.threshold_value) == ("percentile", 97.5)
    with store.Session(reaper.engine) as s:
        kept = {r for (r,) in s.execute(store.select(store.Score.model_id).distinct())}
    assert len(kept) == 3 and model.id in kept
    assert main(["prune", "--db-url", reaper.settings.db_url, "--keep", "0"]) == 0
    assert "deleted 2 old models" in capsys.readouterr().out
    assert reaper.totals()["models"] == 1 and reaper.model().id == model.id


@pytest.mark.parametrize(("env", "value", "message"), [
    ("N_COMPONENTS", "-3", "n_components must be a whole number ≥ 1 or a fraction"),
    ("MAX_FILE_MB", "-5", "max_file_mb must be greater than 0"),
    ("PATCH_SIZE", "3.7", "setting patch_size must be a whole number, not '3.7'"),
    ("EMBEDDER", "nosuch", "unknown embedder 'nosuch'"),
    ("TRESHOLD_VALUE", "3", "ANOMALY_REAPER_TRESHOLD_VALUE is not a setting; did you mean "
                            "ANOMALY_REAPER_THRESHOLD_VALUE?"),
])
def test_bad_settings_are_refused_at_load(monkeypatch, capsys, env, value, message):
    monkeypatch.setenv(f"ANOMALY_REAPER_{env}", value)
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        load_settings()
    assert main(["score"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_or_folder_config_is_refused(tmp_path, capsys):
    assert main(["configure", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "config file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_settings(tmp_path)


def test_ctrl_c_during_ingest_says_which_files_were_stored(tmp_path, hdf_file, full_spoc_file,
                                                           spoc_file):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    env = dict(os.environ, ANOMALY_REAPER_DB_URL=db)
    # Ctrl-C as in a terminal: a suite started as a background job ignores SIGINT, and its
    # children inherit that (Python then never raises KeyboardInterrupt; seen once).
    proc = subprocess.Popen([sys.executable, "-m", "reaper_core.cli", "ingest", str(hdf_file),
                             str(full_spoc_file), str(spoc_file)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    engine = store.make_engine(db)
    deadline = time.time() + 120
    while time.time() < deadline and store.totals(engine)["files"] < 1:
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("interrupted:"))
    stored = store.totals(engine)["files"]
    assert f"interrupted: {stored} files stored (hubble_deep_field.fits" in line
    assert f"{3 - stored} not stored" in line


def test_ctrl_c_that_python_drops_still_stops_the_ingest(tmp_path, monkeypatch, capsys,
                                                         hdf_file, spoc_file):
    """Python drops a KeyboardInterrupt raised while a finaliser runs; the batch then went
    on and ended as if Ctrl-C had not been pressed. The command remembers the signal and says
    what was stored."""
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", f"sqlite:///{tmp_path / 'd.db'}")
    real = Reaper.ingest

    def ingest_dropping_ctrl_c(self, paths, **kw):
        report = real(self, list(paths)[:1], **kw)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here
        except KeyboardInterrupt:
            pass  # dropped, as in a finaliser
        return report

    monkeypatch.setattr(Reaper, "ingest", ingest_dropping_ctrl_c)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        assert main(["ingest", str(hdf_file), str(spoc_file)]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    err = capsys.readouterr().err
    assert "interrupted: 1 files stored (hubble_deep_field.fits); 1 not stored" in err


def test_oversized_image_is_refused_from_its_header_without_reading_it(tmp_path):
    """A 2.5 GB image over the pixel limit is refused before its data are read."""
    path = tmp_path / "huge.fits"
    hdr = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 25000,
                       "NAXIS2": 25000})
    with open(path, "wb") as fh:
        fh.write(hdr.tostring().encode())
        fh.truncate(len(hdr.tostring()) + 25000 * 25000 * 4)  # sparse: no disk used
    # Linux keeps a process's peak RSS across exec, so the child measures how much it grows.
    code = (f"import resource; from reaper_core.fits_reader import read_fits\n"
            f"peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
            f"before = peak()\n"
            f"try:\n    read_fits({str(path)!r}, max_bytes=4_000_000_000, max_pixels=10**8)\n"
            f"except Exception as e:\n    print(e)\n"
            f"print(peak() - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120).stdout.splitlines()
    assert out[0] == "huge.fits: has a 25000 x 25000 image, over the limit of 100,000,000 pixels"
    assert int(out[-1]) < 300  # MB of growth: far less than the 2.5 GB file
    with pytest.raises(FITSReadError, match="over the limit"):
        read_fits(path, max_bytes=4_000_000_000, max_pixels=10**8)


def test_cli_hdu_option(tmp_path, capsys):
    hdf = hubble_deep_field_image()
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(hdf[:64, :64]), fits.ImageHDU(hdf)]).writeto(path)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["ingest", "--db-url", db, str(path)]) == 0
    assert "note: image read from HDU 1, the largest of 2 images" in capsys.readouterr().out
    reaper = Reaper(Settings(db_url=db))
    assert reaper.files()[0].hdu == 1 and reaper.files()[0].ny == 872
    # Another HDU of the same bytes is another image (it was refused: "same bytes"), stored
    # under the file's name and its HDU's; asked again, it is the duplicate.
    assert main(["ingest", "--db-url", db, "--hdu", "0", str(path)]) == 0
    assert "added     two.fits[0]: " in capsys.readouterr().out
    assert [(f.name, f.hdu, f.ny) for f in reaper.files()] == [
        ("two.fits", 1, 872), ("two.fits[0]", 0, 64)]
    assert main(["ingest", "--db-url", db, "--hdu", "0", str(path)]) == 0
    assert ("duplicate two.fits[0]: same image (HDU 0 of the same bytes) as two.fits[0]"
            in capsys.readouterr().out)
    assert main(["ingest", "--db-url", db, "--hdu", "7", str(path)]) == 1
    assert "two.fits[7]: has no HDU 7 (it has 2, numbered from 0)" in capsys.readouterr().out
