"""Reliability and security: bad files, mutations, duplicates, crashes, two writers, hostility."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, func, select

from reaper_core import store
from reaper_core.cli import main
from reaper_core.config import Settings
from reaper_core.embedders import get_embedder
from reaper_core.errors import FITSReadError
from reaper_core.files import safe_filename, save_upload
from reaper_core.fits_reader import read_fits
from reaper_core.ingest import ingest_many, prepare
from reaper_core.models import current_model, score_pending

from .badfiles import MAX_FILE_MB, MAX_PIXELS, make_zoo
from .conftest import exported

ROOT = Path(__file__).resolve().parent.parent


def consistent(engine) -> tuple[int, int]:
    """Assert the database holds only whole files; return (files, cutouts)."""
    with Session(engine) as s:
        files = s.exec(select(store.FitsFile)).all()
        for f in files:
            n = s.exec(select(func.count()).select_from(store.Cutout).where(
                store.Cutout.file_id == f.id)).one()
            assert n == f.n_cutouts, f"{f.name}: {n} cutouts stored, {f.n_cutouts} expected"
        orphans = s.exec(select(func.count()).select_from(store.Cutout).where(
            store.Cutout.file_id.not_in(select(store.FitsFile.id)))).one()
        assert orphans == 0
        emb = s.exec(select(func.count()).select_from(store.Embedding)).one()
        n_cut = s.exec(select(func.count()).select_from(store.Cutout)).one()
        assert emb >= n_cut
        return len(files), n_cut


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("zoo")
    return folder, make_zoo(folder, request.getfixturevalue("hdf_file"))


def test_bad_file_zoo_through_cli(zoo, hdf_file, tmp_path, capsys, monkeypatch):
    folder, expected = zoo
    monkeypatch.setenv("ANOMALY_REAPER_MAX_FILE_MB", str(MAX_FILE_MB))
    monkeypatch.setenv("ANOMALY_REAPER_MAX_PIXELS", str(MAX_PIXELS))
    db = f"sqlite:///{tmp_path / 'z.db'}"
    rc = main(["ingest", "--db-url", db, str(folder), str(hdf_file)])
    out = capsys.readouterr().out
    assert rc == 1
    lines = {ln.split(":")[0].split()[-1]: ln for ln in out.splitlines()
             if ln.startswith("error")}
    for name, words in expected.items():
        assert name in lines, f"no error line for {name}:\n{out}"
        assert words in lines[name], lines[name]
    assert f"summary: 1 added, 0 duplicate, {len(expected)} failed" in out
    engine = store.make_engine(db)
    assert consistent(engine)[0] == 1


def test_bad_file_zoo_through_upload_page(zoo, hdf_file, tmp_path, monkeypatch):
    import streamlit as st_
    from streamlit.testing.v1 import AppTest

    folder, expected = zoo
    db = f"sqlite:///{tmp_path / 'u.db'}"
    for k, v in {"DB_URL": db, "LOAD_DEMO": "0", "UPLOADS_DIR": str(tmp_path / "up"),
                 "MAX_FILE_MB": str(MAX_FILE_MB), "MAX_PIXELS": str(MAX_PIXELS)}.items():
        monkeypatch.setenv(f"ANOMALY_REAPER_{k}", v)
    st_.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "reaper_app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/upload.py").run()
    files = [(n, (folder / n).read_bytes(), "application/octet-stream") for n in expected]
    files.append(("hubble.fits", hdf_file.read_bytes(), "application/fits"))
    at.file_uploader(key="uploader").set_value(files).run()
    assert not at.exception
    # Messages are escaped for Markdown (shown as typed); compare the text a person reads.
    assert all("\\." in e.value for e in at.error)
    errors = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]
    for name, words in expected.items():
        assert any(e.startswith(name + ":") and words in e for e in errors), (name, errors)
    assert any("hubble\\.fits" in s.value for s in at.success)
    assert consistent(store.make_engine(db))[0] == 1
    st_.cache_resource.clear()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_fits_reads_or_raises_our_error(data, spoc_file, tmp_path_factory):
    raw = bytearray(spoc_file.read_bytes()[: 2880 * 4])  # headers and the first data blocks
    ops = data.draw(st.lists(st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "header"]),
        st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=4))
    for op, pos, val in ops:
        if op == "flip":
            raw[pos % len(raw)] = val
        elif op == "truncate":
            del raw[max(pos, 1):]
        elif op == "insert":
            raw[pos:pos] = bytes([val]) * 7
        else:  # rewrite a header card's value
            card = (pos // 80) % 36
            raw[card * 80 + 10: card * 80 + 30] = f"{val * 1e9:>20g}".encode()[:20]
        if not raw:
            raw = bytearray(b"S")
    path = tmp_path_factory.mktemp("mut") / "m.fits"
    path.write_bytes(bytes(raw))
    try:
        img = read_fits(path)
    except FITSReadError as exc:
        assert str(exc).startswith("m.fits: ")
    else:
        assert img.data.ndim == 2 and np.isfinite(img.data).any()


def _ingest_worker(db: str, paths: list[str], barrier) -> None:
    barrier.wait()
    settings = Settings(db_url=db)
    engine = store.make_engine(db)
    report = ingest_many(engine, paths, settings)
    assert all(r.status in ("added", "duplicate") for r in report.results), report


def _run_two(db: str, a: list[str], b: list[str]) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_ingest_worker, args=(db, p, barrier)) for p in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0


def test_same_file_by_two_processes_ends_with_one_copy(tmp_path, spoc_file):
    db = f"sqlite:///{tmp_path / 'two.db'}"
    store.make_engine(db)
    _run_two(db, [str(spoc_file)], [str(spoc_file)])
    files, cutouts = consistent(store.make_engine(db))
    assert files == 1 and cutouts == read_count(spoc_file)


def read_count(path) -> int:
    s = Settings(db_url="sqlite://")
    prep = prepare(path, s, get_embedder("local"))
    return len(prep.patches)


def test_two_writers_sqlite_every_row_no_lock_error(tmp_path, spoc_file, tica_file, hdf_file,
                                                    fits_dir):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    store.make_engine(db)
    extra = fits_dir / "hdf_copy_flipped.fits"
    from astropy.io import fits

    fits.PrimaryHDU(read_fits(hdf_file).data[::-1].copy()).writeto(extra, overwrite=True)
    _run_two(db, [str(spoc_file), str(hdf_file)], [str(tica_file), str(extra)])
    engine = store.make_engine(db)
    files, cutouts = consistent(engine)
    assert files == 4
    assert cutouts == sum(read_count(p) for p in (spoc_file, tica_file, hdf_file, extra))
    # Scores for every cutout under the current model (no half-scored state).
    _m = current_model(engine)
    row, _ = _m.row, _m.detector
    score_pending(engine, current_model(engine))
    with Session(engine) as s:
        n = s.exec(select(func.count()).select_from(store.Score).where(
            store.Score.model_id == row.id)).one()
    assert n == cutouts


def test_sigkill_mid_ingest_leaves_consistent_db_and_rerun_completes(tmp_path, fits_dir,
                                                                    full_spoc_file, hdf_file,
                                                                    spoc_file):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    paths = [str(hdf_file), str(full_spoc_file), str(spoc_file)]
    env = dict(os.environ, ANOMALY_REAPER_DB_URL=db)
    proc = subprocess.Popen([sys.executable, "-m", "reaper_core.cli", "ingest", *paths],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engine = store.make_engine(db)
    # Kill it once the first file is in, while the big frame is being processed.
    deadline = time.time() + 120
    while time.time() < deadline and store.totals(engine)["files"] < 1:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files_before, _ = consistent(engine)
    assert 1 <= files_before < 3
    assert main(["ingest", "--db-url", db, *paths]) == 0
    files, cutouts = consistent(engine)
    assert files == 3
    assert cutouts == sum(read_count(p) for p in paths)
    assert current_model(engine) is not None
    assert exported(engine).score.notna().all()


@pytest.mark.parametrize("name", [
    "../../../etc/passwd.fits", "/etc/cron.d/evil.fits", "..\\..\\windows\\evil.fits",
    "nul\x00byte.fits", "x" * 5000 + ".fits", "ｆｕｌｌｗｉｄｔｈ🚀.fits", ".hidden.fits", "..",
    "", "CON.fits", "a/../../b.fits.gz",
])
def test_hostile_upload_names_stay_in_uploads_folder(tmp_path, name):
    uploads = tmp_path / "uploads"
    path = save_upload(name, b"SIMPLE  = data", uploads)
    assert path.resolve().parent == uploads.resolve()
    assert path.is_file() and len(path.name) <= 140
    assert "\x00" not in path.name and "/" not in safe_filename(name)
    assert list(tmp_path.iterdir()) == [uploads]


def test_header_html_is_shown_as_text(tmp_path, monkeypatch):
    import streamlit as st_
    from astropy.io import fits
    from streamlit.testing.v1 import AppTest

    data = np.random.default_rng(0).normal(100, 5, (128, 128)).astype(np.float32)
    data[60:64, 60:64] += 500
    hdu = fits.PrimaryHDU(data)
    hdu.header["OBJECT"] = "<script>alert('x')</script>"
    hdu.header["TELESCOP"] = "<img src=x onerror=alert(1)>"
    path = tmp_path / "html.fits"
    hdu.writeto(path)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    ingest_many(store.make_engine(db), [path, path.parent / "html.fits"],
                          Settings(db_url=db))
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", db)
    monkeypatch.setenv("ANOMALY_REAPER_LOAD_DEMO", "0")
    st_.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "reaper_app" / "main.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/gallery.py").run()
    at.checkbox(key="g_only").uncheck().run()
    first = next(b.key for b in at.button if b.key and b.key.startswith("page-detail-"))
    at.button(key=first).click().run()
    assert not at.exception
    header = next(d.value for d in at.dataframe if "card" in d.value.columns)
    values = dict(zip(header["card"], header["value"], strict=True))
    assert values["OBJECT"] == "<script>alert('x')</script>"
    assert values["TELESCOP"] == "<img src=x onerror=alert(1)>"
    for md in at.markdown:
        assert "<script" not in md.value and "onerror" not in md.value
    st_.cache_resource.clear()


def test_no_pickle_and_no_raw_html_anywhere():
    sources = [*ROOT.glob("reaper_core/**/*.py"), *ROOT.glob("reaper_app/**/*.py"),
               ROOT / "app.py"]
    assert len(sources) > 25
    for path in sources:
        text = path.read_text()
        for bad in ("import pickle", "pickle.load", "allow_pickle=True", "joblib",
                    "unsafe_allow_html", "cloudpickle", "dill"):
            assert bad not in text, f"{bad} in {path}"
    assert "enableXsrfProtection = true" in (ROOT / ".streamlit" / "config.toml").read_text()
    # The installed dashboard gets the same options whatever folder it starts from.
    from reaper_app import server_flags

    flags = server_flags()
    assert flags[flags.index("--server.enableXsrfProtection") + 1] == "true"
