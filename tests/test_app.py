"""Page logic through streamlit.testing.v1.AppTest, on a database of real ingested files."""

import gc
import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from reaper_app import widgets
from reaper_core import store, views
from reaper_core.config import Settings, load_settings
from reaper_core.models import current_model, fit_model
from reaper_core.thresholds import threshold_from_scores

from .conftest import REAL_DATA, exported, ingested_db

APP = str(Path(__file__).resolve().parent.parent / "reaper_app" / "main.py")
HST = REAL_DATA / "other" / "hst_acs_goodsn_100px_astrocut.fits"


@pytest.fixture(scope="module")
def db(tmp_path_factory, request):
    """SQLite database with the Hubble Deep Field and a simulated SPOC frame ingested."""
    folder = tmp_path_factory.mktemp("appdb")
    url = ingested_db(folder, [request.getfixturevalue("hdf_file"),
                               request.getfixturevalue("spoc_file")])
    return url, folder


def app_on(url: str, folder: Path, monkeypatch, timeout: float = 60) -> AppTest:
    """The app, run once, on the database ``url`` (uploads in ``folder``, no demo)."""
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", url)
    monkeypatch.setenv("ANOMALY_REAPER_UPLOADS_DIR", str(folder / "uploads"))
    monkeypatch.setenv("ANOMALY_REAPER_LOAD_DEMO", "0")
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(db, monkeypatch):
    yield app_on(*db, monkeypatch)
    st.cache_resource.clear()


def decode(arr):
    """Plotly's JSON arrays: plain lists, or typed {"dtype", "bdata"} base64 blobs."""
    if isinstance(arr, dict) and "bdata" in arr:
        import base64

        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"])
    return np.asarray(arr)


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def _engine(db):
    return store.make_engine(db[0])


def test_home_shows_totals_and_model(app, db):
    eng = _engine(db)
    t = store.totals(eng)
    assert _metric(app, "Files") == "2"
    assert _metric(app, "Cutouts") == f"{t['cutouts']:,}"
    n_anom = int(exported(eng).is_anomaly.sum())
    assert _metric(app, "Anomalies") == f"{n_anom:,}"
    assert any("embedder: **local\\+core\\+stars**" in m.value for m in app.markdown)
    files = app.dataframe[1].value
    assert set(files["file"]) == {"hubble_deep_field.fits", "tess-s0007-2-3_ffic.fits"}


def test_runs_that_import_modules_freeze_the_heap(app):
    """What imports made is frozen out of the collector's full walks (they cost 150 ms in the
    middle of an interaction at a million cutouts); a run that imports nothing freezes nothing."""
    from reaper_app import state

    frozen = gc.get_freeze_count()
    assert frozen > 0
    app.run()
    assert gc.get_freeze_count() == frozen
    state._frozen_at[0] -= 100  # as if the run had imported a library
    app.run()
    assert gc.get_freeze_count() > frozen


def test_threshold_slider_rescores_live_and_saves(app, db):
    app.switch_page("app_pages/threshold.py").run()
    assert not app.exception
    eng = _engine(db)
    m = current_model(eng)
    row, det = m.row, m.detector
    scores = exported(eng).score.to_numpy()
    before = _metric(app, "Anomalies")
    slider = app.slider[0]
    slider.set_value(4.0).run()
    assert not app.exception
    thr = threshold_from_scores(det.train_anomaly_scores_, "sigma", 4.0)
    assert _metric(app, "Anomalies") == f"{int((scores > thr).sum()):,}"
    assert _metric(app, "Anomalies") != before
    # The histogram's threshold line follows the slider.
    fig = app.get("plotly_chart")[0].proto.spec
    assert f"threshold {thr:.3g}" in fig
    # A preview until saved; then saved with the model, without re-fitting.
    assert current_model(eng).row.threshold_value == row.threshold_value
    app.button(key="save_threshold").click().run()
    assert not app.exception
    m2 = current_model(eng)
    row2, det2 = m2.row, m2.detector
    assert row2.id == row.id and row2.threshold_value == 4.0
    assert row2.threshold == pytest.approx(thr)
    np.testing.assert_array_equal(det2.components_, det.components_)
    # The sidebar, drawn after the page, already shows the threshold just saved.
    side = " ".join(m.value for m in app.sidebar.markdown)
    assert f"threshold {thr:.3g} (sigma 4)" in side
    # Percentile mode.
    app.radio[0].set_value("percentile").run()
    app.slider[0].set_value(90.0).run()
    assert _metric(app, "Share flagged").startswith(("9.", "10."))


def test_refit_button(app, db):
    app.switch_page("app_pages/threshold.py").run()
    eng = _engine(db)
    old = current_model(eng).row.id
    app.number_input[0].set_value(6)
    app.button(key="refit_submit").click().run()  # the form's submit button
    assert not app.exception
    row = current_model(eng).row
    assert row.id != old and row.n_components == 6


def test_home_removes_files_once_confirmed(tmp_path, monkeypatch, hdf_file, spoc_file):
    """Home's "Remove files": nothing happens without the box ticked; then the file's
    cutouts go, the model is fitted anew on the rest and the page says so, as text."""
    url = ingested_db(tmp_path, [hdf_file, spoc_file])
    at = app_on(url, tmp_path, monkeypatch, timeout=120)
    eng = store.make_engine(url)
    old, n_spoc = current_model(eng).row.id, store.totals(eng)["cutouts"]
    at.multiselect(key="remove_names").set_value([hdf_file.name])
    at.button(key="FormSubmitter:remove_files-Remove").click().run()
    assert not at.exception and any("Tick the box" in w.value for w in at.warning)
    assert _metric(at, "Files") == "2"
    at.checkbox(key="remove_sure").check()
    at.button(key="FormSubmitter:remove_files-Remove").click().run()
    assert not at.exception, at.exception
    said = next(x.value for x in at.success if "Removed 1 file" in x.value)
    assert "fitted anew" in said and "\\(" in said  # shown as text: Markdown escaped
    assert _metric(at, "Files") == "1"
    assert set(at.dataframe[1].value["file"]) == {spoc_file.name}
    assert not at.checkbox(key="remove_sure").value  # the form starts afresh
    row = current_model(eng).row
    assert row.id != old and row.n_train == store.totals(eng)["cutouts"] < n_spoc
    eng.dispose()
    st.cache_resource.clear()


def test_explore_scatter_has_ids_and_anomaly_trace(app, db):
    app.switch_page("app_pages/explore.py").run()
    assert not app.exception
    import json

    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    names = [t["name"] for t in spec["data"]]
    assert names == ["inliers", "anomalies"] and all(t["type"] == "scattergl"
                                                     for t in spec["data"])
    # Each point carries (cutout id, score, file): the hover says what it is.
    rows = [np.asarray(t["customdata"], dtype=object) for t in spec["data"]]
    ids = np.concatenate([r[:, 0].astype(int) for r in rows])
    df = exported(_engine(db))
    assert sorted(ids) == sorted(df.cutout_id)
    assert set(rows[1][:, 0].astype(int)) == set(df.cutout_id[df.is_anomaly])
    by_id = df.set_index("cutout_id")
    for cid, score, file in rows[1][:5]:
        assert file == by_id.file[int(cid)] and np.isclose(score, by_id.score[int(cid)])
    assert all("score" in t["hovertemplate"] and "customdata[2]" in t["hovertemplate"]
               for t in spec["data"])


def test_gallery_filters(app, db):
    app.switch_page("app_pages/gallery.py").run()
    assert not app.exception
    eng = _engine(db)
    df = exported(eng)
    n_anom = int(df.is_anomaly.sum())
    assert any(f"**{n_anom:,}** cutouts match" in m.value for m in app.markdown)
    app.checkbox(key="g_only").uncheck().run()
    assert any(f"**{len(df):,}** cutouts match" in m.value for m in app.markdown)
    app.text_input(key="g_file").input("hubble").run()
    n_hdf = int((df.file == "hubble_deep_field.fits").sum())
    assert any(f"**{n_hdf:,}** cutouts match" in m.value for m in app.markdown)
    app.text_input(key="g_file").input("").run()
    app.multiselect(key="g_sector").set_value([7]).run()
    n7 = int((df.sector == 7).sum())
    assert any(f"**{n7:,}** cutouts match" in m.value for m in app.markdown)
    assert len(app.get("imgs")) > 0 or len(app.image) > 0
    # Paging: page 2 of 12 shows the 13th to 24th highest scores of the filtered rows.
    app.checkbox(key="g_per_object").uncheck().run()
    app.selectbox(key="g_per_page").set_value(12).run()
    app.number_input(key="g_page").set_value(2).run()
    assert not app.exception
    shown = [int(b.key.split("-")[-1]) for b in app.button
            if b.key and b.key.startswith("page-detail-")]
    s7 = df[df.sector == 7].set_index("cutout_id").score
    assert len(set(shown)) == 12 and set(shown) <= set(s7.index)
    # (The grid is read column by column and equal scores may come in either order, so
    # compare the sorted scores.)
    np.testing.assert_allclose(np.sort(s7.loc[shown].to_numpy())[::-1],
                               np.sort(s7.to_numpy())[::-1][12:24])
    assert app.number_input(key="g_page").max == -(-n7 // 12)


def _shown(app):
    return [int(b.key.split("-")[-1]) for b in app.button
            if b.key and b.key.startswith("page-detail-")]


def test_gallery_one_per_object(app, db):
    app.switch_page("app_pages/gallery.py").run()
    eng = _engine(db)
    model = store.current_model(eng)
    tbl = store.cutout_table(eng, model.id)
    flagged = tbl[tbl.score > model.threshold].sort_values("score", ascending=False)
    objects = views.one_per_object(flagged)
    assert len(objects) < len(flagged)
    assert any(f"**{len(flagged):,}** cutouts match (of {len(tbl):,}), from "
               f"**{len(objects):,} objects**" in m.value for m in app.markdown)
    # The first page holds the 24 best objects, each by its best cutout, captioned with its
    # number of cutouts.
    shown = _shown(app)
    assert set(shown) == set(objects.cutout_id[:24])
    n = objects.set_index("cutout_id").n_cutouts
    captions = [re.sub(r"\\(.)", r"\1", c.value) for c in app.caption]
    multi = [cid for cid in shown if n[cid] > 1]
    assert multi
    for cid in multi:
        assert any(c.startswith(f"cutout #{cid} · score ")
                   and f" · best of {n[cid]} cutouts of its object" in c for c in captions)
    # The detail of an object of several cutouts shows all its others, flagged or not.
    app.button(key=f"page-detail-{multi[0]}").click().run()
    assert not app.exception
    row = tbl.set_index("cutout_id").loc[multi[0]]
    n_same = int(((tbl.file_id == row.file_id) & (tbl.segment == row.segment)).sum())
    assert n_same >= n[multi[0]]
    assert any(f"The same object: {n_same - 1:,} more cutouts" in c.value for c in app.caption)
    app.button(key="close_detail").click().run()
    # Unticked: every cutout, highest score first.
    app.checkbox(key="g_per_object").uncheck().run()
    assert set(_shown(app)) == set(flagged.cutout_id[:24])
    assert not any("objects" in m.value for m in app.markdown if "cutouts match" in m.value)


def test_gallery_detail_and_label(app, db):
    app.switch_page("app_pages/gallery.py").run()
    first = next(b.key for b in app.button if b.key and b.key.startswith("page-detail-"))
    app.button(key=first).click().run()
    assert not app.exception
    cid = app.session_state["detail"]
    assert any(f"Cutout #{cid}" in h.value for h in app.subheader)
    assert any(m.value.startswith("Why: ") for m in app.markdown)
    quads = next(d.value for d in app.dataframe if "left %" in d.value.columns)
    assert quads.shape == (2, 2) and 0 < quads.to_numpy().sum() <= 100.0001
    next(r for r in app.radio if r.label == "Label").set_value("artefact")
    next(t for t in app.text_input if t.label == "Note").input("<b>satellite</b> glint")
    next(b for b in app.button if b.label == "Save label").click().run()
    lab = exported(_engine(db)).set_index("cutout_id").loc[cid]
    assert lab.label == "artefact" and lab.note == "<b>satellite</b> glint"
    store.set_label(_engine(db), cid, None)


def test_gallery_label_object_normal_and_refit(app, db):
    """Label a whole object normal from its detail view, re-fit from the gallery's banner: the
    object leaves the first page and the model (and the threshold page) say how many."""
    app.switch_page("app_pages/gallery.py").run()
    caps = [re.sub(r"\\(.)", r"\1", c.value) for c in app.caption]
    multi = next(c for c in _shown(app) if any(cap.startswith(f"cutout #{c} ")
                                               and "cutouts of its object" in cap for cap in caps))
    app.button(key=f"page-detail-{multi}").click().run()
    eng = _engine(db)
    tbl = store.cutout_table(eng, current_model(eng).row.id)
    members = {multi, *views.object_members(tbl, multi).cutout_id.astype(int)}
    assert app.checkbox(key="g_whole").value  # every cutout of the object, by default
    assert app.checkbox(key="g_whole").label == f"Label all {len(members):,} cutouts of this object"
    next(r for r in app.radio if r.label == "Label").set_value("normal")
    next(b for b in app.button if b.label == "Save label").click().run()
    assert not app.exception
    assert set(store.labelled_ids(eng, "normal")) == members
    assert any(f"{len(members):,} cutouts are labelled normal; the current model counted 0"
               in i.value for i in app.info)
    app.button(key="close_detail").click().run()
    app.button(key="g_refit").click().run()
    assert not app.exception
    assert current_model(eng).n_normal == len(members)
    assert not any("labelled normal" in i.value for i in app.info)  # the banner is gone
    assert not set(_shown(app)) & members
    app.switch_page("app_pages/threshold.py").run()
    assert any(f"{len(members):,} of them labelled normal." in m.value for m in app.markdown)
    assert any(f"{len(members):,} labelled now" in c.value for c in app.caption)
    app.switch_page("app_pages/home.py").run()
    assert any(f"**{len(members):,}** labelled normal" in m.value for m in app.markdown)
    store.set_label(eng, sorted(members), None)
    fit_model(eng, load_settings())  # the app's settings (the fixture's environment)


def test_upload_good_bad_and_duplicate(app, db, tica_file, tmp_path):
    app.switch_page("app_pages/upload.py").run()
    app.file_uploader(key="uploader").set_value([
        ("tica.fits", tica_file.read_bytes(), "application/fits"),
        ("../../etc/evil.fits", b"\x89PNG\r\n\x1a\n" + b"1" * 64, "application/fits"),
        ("again.fits", tica_file.read_bytes(), "application/fits"),
    ]).run()
    assert not app.exception
    text = " ".join(e.value for e in app.success) + " ".join(e.value for e in app.error)
    text += " ".join(e.value for e in app.info)
    # Names and messages are escaped, so Markdown shows them as typed.
    assert "evil\\.fits" in text
    text = re.sub(r"\\(.)", r"\1", text)
    assert "**tica.fits**" in text and re.search(r"[\d,]+ cutouts of [\d,]+ objects", text)
    assert "evil.fits: is not a FITS file but a PNG image" in text
    assert "duplicate" in text
    assert "demo" not in text  # no demo file in this database: nothing to say of one
    assert "was fitted" not in text  # the model learned from enough of the cutouts already
    uploads = Path(db[1]) / "uploads"
    assert all(p.resolve().parent == uploads.resolve() for p in uploads.iterdir())


def test_upload_beside_the_demo_says_how_to_judge_ones_own(tmp_path, monkeypatch, hdf_file,
                                                            tica_file):
    """Files uploaded into a database that holds the demo's are scored by a model that learned
    from the demo too: the page says so, and where to remove the demo files."""
    import shutil

    from reaper_core.demo import DEMO_FILES

    demo = tmp_path / next(iter(DEMO_FILES))
    shutil.copy(hdf_file, demo)
    at = app_on(ingested_db(tmp_path, [demo]), tmp_path, monkeypatch, timeout=120)
    at.switch_page("app_pages/upload.py").run()
    at.file_uploader(key="uploader").set_value([
        ("mine.fits", tica_file.read_bytes(), "application/fits")]).run()
    assert not at.exception, at.exception
    said = " ".join(i.value for i in at.info)
    assert "also learned from the demo" in said and "remove the demo files" in said
    st.cache_resource.clear()


def test_upload_into_a_database_of_older_features_says_the_model_was_fitted_anew(
        tmp_path, monkeypatch, hdf_file, tica_file):
    """An upload into a database an older version wrote (its vectors longer by the features
    this version dropped) is stored, the stored cutouts are embedded again and the model fitted
    anew: the page says so, in words; the next upload that fits nothing says nothing of it."""
    from reaper_core.store import make_engine

    from .conftest import older_features

    url = ingested_db(tmp_path, [hdf_file])
    engine = make_engine(url)
    n = older_features(engine)
    engine.dispose()
    at = app_on(url, tmp_path, monkeypatch, timeout=120)
    at.switch_page("app_pages/upload.py").run()
    at.file_uploader(key="uploader").set_value([
        ("mine.fits", tica_file.read_bytes(), "application/fits")]).run()
    assert not at.exception, at.exception
    said = re.sub(r"\\(.)", r"\1", " ".join(i.value for i in at.info))
    assert (f"The model was fitted anew (the local+core+stars embedder describes a cutout "
            f"with 92 features since this version: {n:,} stored cutouts embedded before are "
            f"embedded again): every cutout is scored by it.") in said
    assert any("**mine\\.fits**" in s.value for s in at.success)
    st.cache_resource.clear()


def test_shared_link_opens_a_cutout_with_sky_links(app, db):
    """?cutout=ID opens that cutout's detail; a cutout with RA/Dec links to sky atlases."""
    eng = _engine(db)
    tbl = exported(eng)
    row = tbl[tbl.ra.notna()].sort_values("score").iloc[len(tbl) // 4]  # any, flagged or not
    cid = int(row.cutout_id)
    app.query_params["cutout"] = str(cid)
    app.switch_page("app_pages/gallery.py").run()
    assert not app.exception
    assert any(f"Cutout #{cid} — " in h.value for h in app.subheader)
    links = {b.proto.label: b.proto.url for b in app.get("link_button")}
    assert set(links) == {"Aladin ↗", "ESASky ↗", "SIMBAD ↗"}
    assert f"{row.ra:.6f}%20{row.dec:+.6f}" in links["SIMBAD ↗"]
    # Closing the detail drops the id from the URL.
    app.button(key="close_detail").click().run()
    assert "cutout" not in app.query_params
    assert not any(h.value.startswith("Cutout #") for h in app.subheader)


def test_home_offers_the_report(app):
    app.button(key="make_report").click().run()
    assert not app.exception
    pdf = app.session_state["report_pdf"]
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
    assert any(b.proto.label == "Download the report (PDF)" for b in app.get("download_button"))


def test_upload_reads_the_chosen_hdu(app, db, tmp_path):
    from astropy.io import fits

    from reaper_core.demo import hubble_deep_field_image

    img = hubble_deep_field_image()[::-1].copy()
    buf = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(img[:300, :300]), fits.ImageHDU(img)]).writeto(buf)
    app.switch_page("app_pages/upload.py").run()
    app.selectbox(key="upload_hdu").set_value(0).run()
    app.file_uploader(key="uploader").set_value(
        [("two_hdus.fits", buf.read_bytes(), "application/fits")]).run()
    assert not app.exception
    f = next(f for f in store.file_records(_engine(db)) if f.name == "two_hdus.fits[0]")
    assert f.hdu == 0 and (f.ny, f.nx) == (300, 300)


@pytest.mark.skipif(not HST.exists(), reason="../shared/data/ is not beside the checkout")
def test_upload_of_a_file_of_several_images(app, db):
    """One upload holding three bands of a field (real HST/ACS cutouts): three images, each
    with its result and its notes, each to open in the gallery; the progress counts images."""
    app.switch_page("app_pages/upload.py").run()
    app.file_uploader(key="uploader").set_value(
        [(HST.name, HST.read_bytes(), "application/fits")]).run()
    assert not app.exception
    names = [f"{HST.name}[{n}]" for n in (1, 2, 3)]
    said = [s.value for s in app.success]
    assert len(said) == 3 and all(widgets.plain(n) in s
                                  for n, s in zip(names, said, strict=True))
    assert widgets.plain("image read from HDU 3 (CUTOUT), one of 3 images in the file") in [
        c.value for c in app.caption]
    assert list(app.selectbox(key="goto_file").options) == names
    assert {f.name for f in store.file_records(_engine(db))} >= set(names)


def test_gallery_tiles_label_page_and_detail_downloads(app, db):
    """Label from a tile's menu, turn pages below the grid, and the detail's colour bar and
    downloads."""
    app.switch_page("app_pages/gallery.py").run()
    eng = _engine(db)
    first = _shown(app)[0]
    app.button(key=f"page-{first}-interesting").click().run()
    assert not app.exception
    assert exported(eng).set_index("cutout_id").label[first] == "interesting"
    caps = [re.sub(r"\\(.)", r"\1", c.value) for c in app.caption]
    assert any(c.startswith(f"cutout #{first} ") and c.endswith("labelled interesting")
               for c in caps)
    app.button(key=f"page-{first}-None").click().run()
    assert exported(eng).set_index("cutout_id").label[first] == ""
    # Paging below the grid: "Next page" shows the next 24 objects; "Previous" comes back.
    page1 = _shown(app)
    app.button(key="g_next").click().run()
    assert app.number_input(key="g_page").value == 2
    page2 = _shown(app)
    assert page2 and not set(page1) & set(page2)
    app.button(key="g_prev").click().run()
    assert _shown(app) == page1 and app.button(key="g_prev").disabled
    # The detail: the cutout with a colour bar in pixel values, and three downloads.
    app.button(key=f"page-detail-{first}").click().run()
    assert not app.exception
    import json

    from reaper_core.cutouts import display_limits

    spec = json.loads(next(c for c in app.get("plotly_chart")
                           if "heatmap" in c.proto.spec).proto.spec)
    bar = spec["data"][0]["colorbar"]
    patch = store.get_cutouts(eng, [first])[first][0]
    lo, hi = display_limits(patch, "zscale")
    assert bar["ticktext"][0] == f"{lo:.4g}" and bar["ticktext"][-1] == f"{hi:.4g}"
    downloads = [d.proto.label for d in app.get("download_button")]
    assert {"Download FITS (with WCS)", "Download PNG",
            "DS9 regions"} <= set(downloads)
    app.button(key="close_detail").click().run()


def test_home_offers_region_files(app, db):
    app.run()
    assert not app.exception
    names = [f.name for f in store.file_records(_engine(db))]
    assert app.selectbox(key="reg_file").options == names  # shown by name
    labels = [d.proto.label for d in app.get("download_button")]
    assert "DS9 region file" in labels


def test_discover_page_labels_and_requeues(app, db):
    app.switch_page("app_pages/discover.py").run()
    assert not app.exception
    eng = _engine(db)
    first = int(re.search(r"Cutout #(\d+)", app.subheader[0].value).group(1))
    assert {b.key for b in app.button} >= {"judge-interesting", "judge-anomaly",
                                            "judge-artefact", "judge-normal", "judge-None"}
    app.button(key="judge-interesting").click().run()
    assert not app.exception
    assert exported(eng).set_index("cutout_id").label[first] == "interesting"
    second = int(re.search(r"Cutout #(\d+)", app.subheader[0].value).group(1))
    assert second != first
    app.button(key="judge-None").click().run()  # skip: not labelled, not shown again
    third = int(re.search(r"Cutout #(\d+)", app.subheader[0].value).group(1))
    assert third not in (first, second)
    assert exported(eng).set_index("cutout_id").label[second] == ""
    app.toggle(key="discover_similar").set_value(True).run()
    assert not app.exception and any(k.startswith("like-detail-") for k in
                                      (b.key or "" for b in app.button))
    df = exported(eng)
    store.set_label(eng, df.cutout_id[df.label != ""].astype(int).tolist(), None)


def test_discover_page_names_the_group_of_a_flagged_cutout(tmp_path, spoc_file, monkeypatch):
    """On a fresh database the first cutout to judge (the highest score) is flagged and in a
    group of anomalies: the page says which, how many it holds and what its members share."""
    from reaper_core.service import Reaper

    url = ingested_db(tmp_path, [spoc_file])
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", url)
    monkeypatch.setenv("ANOMALY_REAPER_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("ANOMALY_REAPER_LOAD_DEMO", "0")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("app_pages/discover.py").run()
    assert not at.exception
    first = int(re.search(r"Cutout #(\d+)", at.subheader[0].value).group(1))
    reaper = Reaper(Settings(db_url=url, load_demo=0))
    groups = reaper.groups()
    group = groups[first]
    members = sum(g == group for g in groups.values())
    shared = "; ".join(reaper.group_reasons()[group])
    assert group >= 1 and shared
    assert [m.value for m in at.markdown if "In group" in m.value] == [widgets.plain(
        f"In group {group} of the anomalies ({members:,} cutouts: {shared}); the gallery "
        "filters by group and labels one in one action.")]
    st.cache_resource.clear()


def test_gallery_more_like_this_and_groups(app, db):
    """The detail's "More like this" shows the nearest cutouts; a group filters the gallery
    and is labelled in one action."""
    from reaper_core.service import Reaper

    app.switch_page("app_pages/gallery.py").run()
    first = _shown(app)[0]
    app.button(key=f"page-detail-{first}").click().run()
    app.toggle(key="g_like").set_value(True).run()
    assert not app.exception
    like = [int(b.key.split("-")[-1]) for b in app.button
            if b.key and b.key.startswith("like-detail-")]
    reaper = Reaper(Settings(db_url=db[0], load_demo=0))
    assert sorted(like) == sorted(i for i, _ in reaper.similar(first, 12))  # drawn by column
    app.toggle(key="g_like").set_value(False).run()
    app.button(key="close_detail").click().run()
    groups = reaper.groups()
    assert max(groups.values()) >= 1
    app.multiselect(key="g_group").set_value([1]).run()
    members = {c for c, g in groups.items() if g == 1}
    shared = "; ".join(reaper.group_reasons()[1])  # what the group's members share, in words
    assert shared and any(c.value == widgets.plain(f"Group 1 ({len(members):,} cutouts): {shared}")
                          for c in app.caption)
    assert any(f"**{len(members):,}** cutouts match" in m.value for m in app.markdown)
    app.selectbox(key="g_group_label").set_value("artefact")  # in a form: sent on submit
    next(b for b in app.button if b.label == "Label the group").click().run()
    assert not app.exception
    labels = exported(_engine(db)).set_index("cutout_id").label
    assert (labels[sorted(members)] == "artefact").all()
    store.set_label(_engine(db), sorted(members), None)


def test_tables_show_a_dash_for_what_is_missing(app, db):
    """The Hubble Deep Field has no sector, camera or CCD, and no cutout is labelled: the
    tables say "—", never None."""
    app.run()
    files = next(d.value for d in app.dataframe if "what it is" in d.value.columns)
    hdf = files.set_index("file").loc["hubble_deep_field.fits"]
    assert (hdf[["sector", "camera", "ccd"]] == "—").all()
    assert files.set_index("file").loc["tess-s0007-2-3_ffic.fits", "sector"] == "7"
    app.switch_page("app_pages/threshold.py").run()
    flagged = next(d.value for d in app.dataframe if "score" in d.value.columns)
    assert (flagged["label"] == "—").all()
    assert not flagged.astype(str).isin(["None", "<NA>", "nan"]).any().any()
