import io
import zlib

import numpy as np
import pandas as pd
import pytest
import zstandard
from sqlalchemy import func, text
from sqlmodel import Session, select

from reaper_core import store, views
from reaper_core.config import Settings
from reaper_core.cutouts import extract_cutouts, ring_sky
from reaper_core.detector import PCAAnomalyDetector
from reaper_core.export import write_export
from reaper_core.files import expand_paths
from reaper_core.ingest import ingest_file, ingest_many
from reaper_core.models import current_model, fit_model, save_threshold

from .conftest import exported, older_features, runs_match


def test_ingest_spoc_scores_and_stores_everything(engine, settings, spoc_file, sim_small):
    stages = []
    report = ingest_many(engine, [spoc_file], settings,
                                   progress=lambda s, f, m: stages.append(s))
    assert report.fitted and report.count("added") == 1
    r = report.results[0]
    assert r.n_cutouts > 100 and 0 < r.n_anomalies < r.n_cutouts * 0.2
    # The default embedder cuts, packs and embeds a chunk at a time: one "embed" stage.
    assert {"read", "sources", "stars", "embed", "store", "fit"} <= set(stages)
    assert stages.index("embed") < stages.index("stars") < stages.index("store")
    df = exported(engine)
    assert len(df) == r.n_cutouts and df.score.notna().all()
    assert (df.sector == 7).all() and (df.camera == 2).all() and (df.ccd == 3).all()
    # RA/Dec come from the file's WCS at the cutout centre.
    row = df.iloc[0]
    ra, dec = sim_small.wcs.pixel_to_world_values(row.x, row.y)
    assert row.ra == pytest.approx(float(ra)) and row.dec == pytest.approx(float(dec))
    with Session(engine) as s:
        c = s.exec(select(store.Cutout)).first()
        patch = store.unpack_patch(c.patch, c.patch_size)
        assert patch.shape == (32, 32)
        iy, ix = round(c.y), round(c.x)
        # Stored in steps of 1/64 of the patch's sky noise (store.pack_patches).
        sigma = float(ring_sky(patch[None])[1][0])
        assert (abs(patch[16, 16] - sim_small.image[iy, ix]) <= sigma / 128 * 1.01
                or c.x < 16 or c.y < 16)
        f = s.exec(select(store.FitsFile)).one()
        assert len(f.sha256) == 64 and f.preview_png.startswith(b"\x89PNG")


def test_patches_are_stored_compactly_to_a_128th_of_their_noise():
    """Real SPOC patches, one with NaN and one with a star far beyond 16 bits of noise steps,
    come back within σ/128 (σ: the ring's noise), NaN as NaN, in ~1.4 KB; float32 patches
    stored by earlier versions still read."""
    from reaper_core.fits_reader import read_fits

    from .conftest import REAL_SPOC

    img = read_fits(REAL_SPOC)
    rng = np.random.default_rng(1)
    r0, r1 = img.valid[0].start or 0, img.valid[0].stop or img.shape[0]
    c0, c1 = img.valid[1].start or 0, img.valid[1].stop or img.shape[1]
    ys, xs = rng.uniform(r0 + 16, r1 - 16, 200), rng.uniform(c0 + 16, c1 - 16, 200)
    p = extract_cutouts(img.data, xs, ys, 32, img.valid)
    p[0, 3:6, 7] = np.nan
    p[1, 16, 16] = 5e7  # a saturated-frame value: 32-bit codes
    p[1, 0, 0] = np.nan  # (missing in a 32-bit patch too)
    blobs = store.pack_patches(p)
    back = np.stack([store.unpack_patch(b, 32) for b in blobs])
    sigma = ring_sky(np.nan_to_num(p, nan=float(np.nanmedian(p[0]))))[1]
    assert np.isnan(back[0, 3:6, 7]).all() and np.isfinite(back[0]).sum() == 1024 - 3
    err = np.nan_to_num(np.abs(back - p)).reshape(len(p), -1).max(1)
    assert (err <= sigma / 128 * 1.01 + 1e-3).all()
    assert back[1, 16, 16] == pytest.approx(5e7, abs=float(sigma[1]))
    assert np.isnan(back[1, 0, 0]) and np.isfinite(back[1]).sum() == 1024 - 1
    assert np.mean([len(b) for b in blobs]) < 1600
    legacy = store.pack_float32(p[2])
    assert np.array_equal(store.unpack_patch(legacy, 32), p[2])
    # The same codes compressed with zlib, as stored before Zstandard, read the same.
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(blobs[2][8:])
    assert blobs[2][8:12] == b"\x28\xb5\x2f\xfd" and len(raw) == 2 * 1024
    old = blobs[2][:8] + zlib.compress(raw, 1)
    assert np.array_equal(store.unpack_patch(old, 32), back[2])


def test_fit_on_a_sample_scores_every_cutout(engine, settings, spoc_file):
    """Above the sample size the fit learns from a reproducible hash sample of the ids plus
    every cutout labelled normal, reads embeddings in chunks, scores every cutout, and takes
    the threshold from every score."""
    from reaper_core.models import in_fit_sample
    from reaper_core.service import Reaper
    from reaper_core.thresholds import threshold_from_scores

    ingest_many(engine, [spoc_file], settings)
    ids_all, X_all = store.load_embeddings(engine, settings.embedder)
    normal = [int(ids_all[3]), int(ids_all[7])]
    Reaper(settings).label(normal, "normal")
    model = fit_model(engine, settings, sample=len(ids_all) // 4, chunk=37)
    fraction = (len(ids_all) // 4) / len(ids_all)
    chosen = in_fit_sample(ids_all, fraction)
    assert np.array_equal(chosen, in_fit_sample(ids_all, fraction))  # reproducible
    assert 0.15 < chosen.mean() < 0.35
    assert model.row.n_train == int((chosen | np.isin(ids_all, normal)).sum())
    assert model.detector.n_normal_ == 2
    scores = store.scores_of(engine, model.id, ids_all.tolist())
    assert len(scores) == len(ids_all)  # every cutout scored
    s = np.array([scores[int(i)] for i in ids_all])
    assert np.allclose(s, model.detector.anomaly_score(X_all), rtol=1e-6)
    assert model.detector.threshold_ == pytest.approx(threshold_from_scores(
        s, model.row.threshold_mode, model.row.threshold_value))


def test_fit_in_a_process_of_its_own(settings, spoc_file):
    """The dashboard's re-fit runs in a fresh process: its progress reaches this one, the new
    model is current here, and a failure comes back as the same one sentence."""
    from reaper_core.errors import ModelError
    from reaper_core.service import Reaper

    r = Reaper(settings)
    r.ingest([spoc_file])
    old = r.require_model().id
    seen = []
    new = r.fit(4, in_subprocess=True, progress=lambda *a: seen.append(a))
    assert new.id != old and new.row.n_components == 4 and new.detector.n_components_ == 4
    assert any(a[0] == "fit" for a in seen) and seen[-1][1] == 1.0
    assert r.model().id == new.id
    with pytest.raises(ModelError, match=r"unknown embedder 'nope'"):
        r.fit(embedder="nope", in_subprocess=True)
    assert r.model().id == new.id  # unchanged


def test_a_batchs_files_are_read_a_chunk_of_parameters_at_a_time(settings, spoc_file,
                                                                  hdf_file, monkeypatch):
    """A batch's anomalies and pending scores are found through its files' ids, bound a few
    thousand to a query (a sector's batch holds more files than SQLite takes parameters): one
    file a query gives what one query for both gives."""
    from reaper_core.service import Reaper

    r = Reaper(settings)
    r.ingest([spoc_file, hdf_file])
    m = r.require_model()
    fids = sorted(r.overview(m)["per_file"])
    assert len(fids) == 2
    whole = store.anomalies_per_file(r.engine, m.id, m.threshold, fids)
    ids, X = store.load_embeddings(r.engine, m.embedder, file_ids=fids)
    monkeypatch.setattr(store, "PARAMETERS", 1)
    assert store.anomalies_per_file(r.engine, m.id, m.threshold, fids) == whole
    got_ids, got_X = store.load_embeddings(r.engine, m.embedder, file_ids=fids)
    assert np.array_equal(got_ids, ids) and np.array_equal(got_X, X)
    assert np.all(np.diff(got_ids) > 0) and len(ids) == r.totals()["cutouts"]
    assert store.anomalies_per_file(r.engine, m.id, m.threshold, []) == {}


def test_overview_is_counted_by_the_database_as_from_the_table(settings, spoc_file, hdf_file):
    """The home page's counts (SQL aggregates) equal those of the whole cutout table, with a
    file that has no sector (the Hubble Deep Field) and a label."""
    from reaper_core.service import Reaper

    r = Reaper(settings)
    r.ingest([spoc_file, hdf_file])
    m = r.require_model()
    tbl = r.cutout_table(m)
    flagged = m.flags(tbl["score"].to_numpy(float))
    r.label([int(tbl.cutout_id.iloc[0])], "interesting")
    o = r.overview(m)
    assert (o["files"], o["cutouts"], o["anomalies"], o["labelled"]) == (
        2, len(tbl), int(flagged.sum()), 1)
    expected = views.summary(tbl, flagged)
    got = o["summary"]
    assert got.astype(str).values.tolist() == expected.astype(str).values.tolist()
    per_file = pd.Series(flagged).groupby(tbl["file_id"].to_numpy()).sum()
    assert o["per_file"] == {int(k): int(v) for k, v in per_file.items()}
    # A batch's files alone (what an ingest reports), counted through their cutouts.
    for fid in o["per_file"]:
        assert store.anomalies_per_file(r.engine, m.id, m.threshold, [fid]) == (
            {fid: o["per_file"][fid]} if o["per_file"][fid] else {})
    # The Threshold page's score column and its top flagged rows, read by the database.
    assert np.array_equal(np.sort(r.scores(m)), np.sort(tbl["score"].to_numpy(float)))
    top = r.top_scored(m, m.threshold, 7)
    want = tbl[flagged].sort_values(["score", "cutout_id"], ascending=[False, True]).head(7)
    assert top.cutout_id.tolist() == want.cutout_id.tolist()
    assert top.file.tolist() == want.file.tolist() and np.allclose(top.score, want.score)


def test_explore_draws_every_anomaly_and_a_stated_sample(settings, spoc_file, hdf_file):
    """Explore's points: all of them when few; else every anomaly and the inliers whose id is a
    multiple of ⌈n / max⌉, with the same projection, scores, files and labels as the table."""
    from reaper_core.service import Reaper

    r = Reaper(settings)
    r.ingest([spoc_file, hdf_file])
    m = r.require_model()
    tbl = r.cutout_table(m).set_index("cutout_id")
    r.label([int(tbl.index[0])], "artefact")
    tbl = r.cutout_table(m).set_index("cutout_id")
    whole = r.explore_points(m)
    assert whole["every"] == 1 and whole["total"] == len(tbl)
    assert whole["cutout_id"].tolist() == sorted(tbl.index)
    ids_all, pcs_all = r.pca_coordinates(m)
    assert np.allclose(whole["pcs"], pcs_all)
    assert whole["label"][0] == "artefact"
    part = r.explore_points(m, max_points=len(tbl) // 5)
    every = part["every"]
    assert every == -(-len(tbl) // (len(tbl) // 5))
    flagged = m.flags(tbl["score"].to_numpy(float))
    expect = sorted(set(tbl.index[flagged]) | {c for c in tbl.index if c % every == 0})
    assert part["cutout_id"].tolist() == expect
    pos = np.searchsorted(ids_all, part["cutout_id"])
    assert np.allclose(part["pcs"], pcs_all[pos])
    assert np.allclose(part["score"], tbl.loc[expect, "score"].to_numpy(float))
    assert part["file"].tolist() == tbl.loc[expect, "file"].tolist()
    # Files are named from each file's run of cutout ids; without the runs (a database from
    # before them, or a file whose ids interleaved with another writer's), from the rows.
    assert runs_match(r.engine)
    with r.engine.begin() as conn:
        conn.execute(text("UPDATE fits_file SET first_cutout_id = NULL WHERE id = "
                          "(SELECT min(id) FROM fits_file)"))
    again = r.explore_points(m, max_points=len(tbl) // 5)
    assert again["file"].tolist() == part["file"].tolist()
    assert again["cutout_id"].tolist() == expect


def test_the_models_arrays_are_read_once_per_model(settings, spoc_file, monkeypatch):
    """Every page reads the current model's row; its arrays (every training score: megabytes
    at a million cutouts) are read only when the estimator or the projection is needed, and
    then once per model."""
    from sqlalchemy.orm.exc import DetachedInstanceError

    from reaper_core.service import Reaper

    Reaper(settings).ingest([spoc_file])
    r = Reaper(settings)  # a fresh service (a dashboard started on this database)
    reads = []
    real = store.model_arrays
    monkeypatch.setattr(store, "model_arrays", lambda e, i: reads.append(i) or real(e, i))
    m = r.require_model()
    with pytest.raises(DetachedInstanceError):
        _ = m.row.arrays  # the row came without them
    assert m.summary() and m.threshold > 0 and reads == []
    X = store.load_embeddings(r.engine, m.embedder)[1]
    np.testing.assert_allclose(m.projection.transform(X), m.detector.transform(X), atol=1e-9)
    again = r.require_model()
    np.testing.assert_allclose(again.detector.anomaly_score(X), m.detector.anomaly_score(X))
    assert reads == [m.id]  # once, for both models' estimator and projection


def test_warming_loads_the_estimator_once_in_the_background(settings, spoc_file, monkeypatch):
    """A page warms the model's estimator on a thread when drawn; a detail that asks for it
    meanwhile waits for that load instead of reading the arrays a second time."""
    import threading
    import time

    from reaper_core.service import Reaper

    Reaper(settings).ingest([spoc_file])
    r = Reaper(settings)
    reads, started = [], threading.Event()
    real = store.model_arrays

    def slow(engine, model_id):
        reads.append(model_id)
        started.set()
        time.sleep(0.3)
        return real(engine, model_id)

    monkeypatch.setattr(store, "model_arrays", slow)
    m = r.require_model()
    r.warm(m)
    assert started.wait(5)
    t0 = time.perf_counter()
    det = r.require_model().detector  # a detail opened while it loads
    assert time.perf_counter() - t0 < 1 and det.n_components_ == m.detector.n_components_
    r.warm(m)  # loaded: nothing to do
    assert reads == [m.id]


def test_duplicate_bytes_under_another_name_add_nothing(engine, settings, spoc_file, tmp_path):
    ingest_many(engine, [spoc_file], settings)
    before = store.totals(engine)
    copy = tmp_path / "renamed.fits"
    copy.write_bytes(spoc_file.read_bytes())
    report = ingest_many(engine, [copy], settings)
    assert report.results[0].status == "duplicate"
    assert store.totals(engine) == before


def test_bad_file_in_batch_leaves_others_and_no_partial_rows(engine, settings, spoc_file,
                                                            hdf_file, tmp_path):
    bad = tmp_path / "broken.fits"
    bad.write_bytes(spoc_file.read_bytes()[:5000])
    report = ingest_many(engine, [bad, hdf_file, spoc_file], settings)
    status = {r.name: r.status for r in report.results}
    assert status == {"broken.fits": "error", "hubble_deep_field.fits": "added",
                      spoc_file.name: "added"}
    assert "broken.fits" in report.results[0].message
    with Session(engine) as s:
        names = {f.name for f in s.exec(select(store.FitsFile)).all()}
        assert names == {"hubble_deep_field.fits", spoc_file.name}
        n_cut = len(s.exec(select(store.Cutout.id)).all())
        assert n_cut == sum(r.n_cutouts for r in report.results)


def test_failure_inside_transaction_rolls_back(engine, settings, spoc_file, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_insert_embeddings", boom)
    result = ingest_file(engine, spoc_file, settings)
    assert result.status == "error" and "disk on fire" in result.message
    assert store.totals(engine)["files"] == 0 and store.totals(engine)["cutouts"] == 0


def test_a_write_found_locked_is_tried_again_whole(engine, settings, spoc_file, monkeypatch):
    """A file's transaction that meets a locked database after its cutouts went in is rolled
    back and written again from the start: every cutout once, as one file stores them."""
    from sqlalchemy.exc import OperationalError

    real = store._insert_embeddings
    calls = []

    def locked_once(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*a, **k)

    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    monkeypatch.setattr(store, "_insert_embeddings", locked_once)
    result = ingest_file(engine, spoc_file, settings)
    assert result.status == "added" and len(calls) == 2
    monkeypatch.undo()
    assert store.totals(engine)["files"] == 1
    assert store.totals(engine)["cutouts"] == result.n_cutouts > 0
    table = exported(engine)
    assert len(table) == result.n_cutouts and table["sector"].notna().all()
    assert table["ra"].notna().all()
    ids, X = store.load_embeddings(engine, settings.embedder)
    assert len(ids) == len(np.unique(ids)) == result.n_cutouts and np.isfinite(X).all()
    patches = store.get_cutouts(engine, ids[:5].tolist())
    assert all(p.shape == (r.patch_size, r.patch_size) for p, r in patches.values())


def test_rethreshold_relabels_without_refit(engine, settings, spoc_file, hdf_file):
    ingest_many(engine, [spoc_file, hdf_file], settings)
    _m = current_model(engine)
    row, det = _m.row, _m.detector
    before = exported(engine)
    thr = save_threshold(engine, _m, "percentile", 99.0).threshold
    _m = current_model(engine)
    row2, det2 = _m.row, _m.detector
    assert row2.id == row.id and row2.threshold == pytest.approx(thr)
    np.testing.assert_array_equal(det2.components_, det.components_)
    after = exported(engine)
    np.testing.assert_array_equal(after.score, before.score)
    assert after.is_anomaly.mean() == pytest.approx(0.01, abs=0.01)
    assert after.is_anomaly.sum() < before.is_anomaly.sum()


def test_second_file_scored_with_existing_model_and_refit(engine, settings, spoc_file, hdf_file):
    ingest_many(engine, [hdf_file], settings)  # 5,497 cutouts
    first = current_model(engine).row
    report = ingest_many(engine, [spoc_file], settings)  # 3,360 more: scored, not re-fitted
    assert not report.fitted and report.model_id == first.id and not report.refit_note
    assert exported(engine).score.notna().all()
    row = fit_model(engine, settings, n_components=5).row
    assert row.id != first.id and row.n_components == 5 and row.is_current
    assert row.n_train == store.totals(engine)["cutouts"]
    with Session(engine) as s:
        assert len(s.exec(select(store.DetectorModel).where(
            store.DetectorModel.is_current == True)).all()) == 1  # noqa: E712


def test_removing_a_file_takes_all_of_it_and_fits_the_model_anew(settings, spoc_file,
                                                                 hdf_file, tmp_path):
    """A removed file leaves no cutout, embedding, score, label or group behind, in one
    transaction; the model is fitted anew on what is left with its threshold mode kept; a
    name no file has removes nothing and says so; with nothing left there is no model."""
    from reaper_core.errors import ReaperError
    from reaper_core.service import Reaper

    r = Reaper(settings)
    r.ingest([hdf_file, spoc_file])
    r.save_threshold("percentile", 98.0, r.model())
    hdf = next(f for f in r.files() if f.name == hdf_file.name)
    with Session(r.engine) as s:
        hdf_ids = s.exec(select(store.Cutout.id).where(store.Cutout.file_id == hdf.id)).all()
    r.label(hdf_ids[:3], "normal")
    r.groups(r.model())
    before = store.totals(r.engine)
    with pytest.raises(ReaperError, match=r"no stored file is named 'nope\.fits'"):
        r.remove_files([hdf_file.name, "nope.fits"])
    assert store.totals(r.engine) == before
    old = r.model().id
    said = r.remove_files([hdf_file.name])
    left = before["cutouts"] - hdf.n_cutouts
    assert said.startswith(f"removed 1 file ({hdf.n_cutouts:,} cutouts)")
    assert f"{left:,} cutouts left" in said
    m = r.model()
    assert m.id != old and m.row.n_train == left and m.row.threshold_mode == "percentile"
    assert [f.name for f in r.files()] == [spoc_file.name]
    with Session(r.engine) as s:
        for table in (store.Cutout, store.Embedding, store.Score, store.Label,
                      store.AnomalyGroup):
            column = table.id if table is store.Cutout else table.cutout_id
            assert not s.exec(select(column).where(column.in_(hdf_ids))).all(), table
        scored = s.exec(select(func.count()).select_from(store.Score)
                        .where(store.Score.model_id == m.id)).one()
    assert scored == left
    said = r.remove_files([spoc_file.name])
    assert said.endswith("nothing is left, so there is no model")
    assert r.model() is None and store.totals(r.engine)["cutouts"] == 0


def test_a_model_that_saw_under_half_the_cutouts_is_refitted(engine, settings, spoc_file,
                                                              hdf_file):
    """A first model from a small file does not judge a larger batch alone: the batch re-fits
    it (keeping its saved threshold) and says why."""
    ingest_many(engine, [spoc_file], settings)  # 3,360 cutouts
    n_first = store.totals(engine)["cutouts"]
    first = save_threshold(engine, current_model(engine), "sigma", 3.0)
    report = ingest_many(engine, [hdf_file], settings)  # 5,497 more
    n_all = store.totals(engine)["cutouts"]
    now = current_model(engine)
    assert n_first < 0.5 * n_all
    assert report.fitted and now.id != first.id and now.row.n_train == n_all
    assert (now.row.threshold_mode, now.row.threshold_value) == ("sigma", 3.0)
    assert f"learned from {n_first:,} of the {n_all:,} cutouts" in report.summary()


def test_refit_with_other_embedder_embeds_stored_patches(engine, settings, hdf_file):
    ingest_many(engine, [hdf_file], settings)
    settings.embedder = "hog"
    row = fit_model(engine, settings).row
    assert row.embedder == "hog"
    det = PCAAnomalyDetector.from_bytes(row.arrays, row.meta_json)
    assert det.n_features_in_ == 36


def test_a_store_of_the_earlier_default_embedder_moves_to_the_new_one(engine, settings,
                                                                     spoc_file, hdf_file):
    """A database made with the default before stop 45 (``local+stars``, 5 components): the
    next ingest embeds its stored patches with today's default as well and fits one model of
    it that scores every cutout, old and new."""
    from dataclasses import replace

    old = replace(settings, embedder="local+stars", n_components=5)
    ingest_many(engine, [spoc_file], old)
    assert current_model(engine).embedder == "local+stars"
    report = ingest_many(engine, [hdf_file], settings)
    model = current_model(engine)
    n = store.totals(engine)["cutouts"]
    assert report.fitted and model.embedder == settings.embedder == "local+core+stars"
    assert model.row.n_components == 10 and model.row.n_train == n
    assert store.count_embeddings(engine, "local+core+stars") == n
    assert exported(engine).score.notna().all()


def test_stored_patches_are_embedded_a_chunk_at_a_time(engine, settings, hdf_file):
    """Another embedder embeds every stored patch, read by key ranges in chunks; the vectors
    equal those of the patches as stored, and progress reaches 1."""
    from reaper_core.embedders import get_embedder
    from reaper_core.models import embed_missing

    ingest_many(engine, [hdf_file], settings)
    n = store.totals(engine)["cutouts"]
    seen = []
    emb = get_embedder("stats")
    assert embed_missing(engine, emb, lambda *a: seen.append(a[1]), chunk=17) == n
    assert seen[-1] == 1.0 and len(seen) == -(-n // 17)
    ids, X = store.load_embeddings(engine, "stats")
    assert len(ids) == n
    patches = store.get_cutouts(engine, ids[:5].tolist())
    again = emb.embed(np.stack([patches[int(i)][0] for i in ids[:5]]))
    assert np.allclose(X[:5], again)
    assert embed_missing(engine, emb) == 0  # nothing left


def test_labels_and_export_formats(engine, settings, hdf_file, tmp_path):
    ingest_many(engine, [hdf_file], settings)
    df = exported(engine)
    cid = int(df.cutout_id.iloc[0])
    store.set_label(engine, cid, "artefact", "<script>alert(1)</script>")
    df = exported(engine)
    assert df.set_index("cutout_id").loc[cid, "label"] == "artefact"
    with pytest.raises(ValueError):
        store.set_label(engine, cid, "spaceship")
    from astropy.table import Table

    for fmt in ("fits", "votable"):
        p = write_export(df, tmp_path / f"out.{fmt}", fmt)
        t = Table.read(p, format=fmt)
        assert len(t) == len(df)
        assert {"file", "sector", "camera", "ccd", "x", "y", "ra", "dec", "score",
                "is_anomaly", "label"} <= set(t.colnames)


def test_expand_paths_folders_globs_and_missing(tmp_path, spoc_file, hdf_file):
    (tmp_path / "sub").mkdir()
    a = tmp_path / "sub" / "a.fits"
    a.write_bytes(b"x")
    (tmp_path / "sub" / "notes.txt").write_text("x")
    got = expand_paths([tmp_path, str(tmp_path / "sub" / "*.fits"),
                                 tmp_path / "missing.fits"])
    assert got == [a, tmp_path / "missing.fits"]


def test_one_per_object_keeps_each_objects_best_cutout(engine, settings, hdf_file, spoc_file):
    ingest_many(engine, [hdf_file, spoc_file], settings)
    model = store.current_model(engine)
    rows = store.cutout_table(engine, model.id).sort_values("score", ascending=False)
    assert rows.segment.notna().all() and (rows.segment > 0).mean() > 0.95
    objects = views.one_per_object(rows)
    # Big galaxies and bleed trails are cut into many cells: far fewer objects than cutouts.
    assert len(objects) < 0.9 * len(rows)
    assert objects.n_cutouts.sum() == len(rows)
    assert not objects.duplicated(["file_id", "segment"]).any()
    assert (objects.score.diff().dropna() <= 0).all()  # order kept
    best = rows.groupby(["file_id", "segment"]).score.max()
    kept = objects.set_index(["file_id", "segment"]).score
    np.testing.assert_array_equal(kept.sort_index().to_numpy(), best.sort_index().to_numpy())
    # The other cutouts of an object, for the gallery's detail view.
    cid = int(objects.loc[objects.n_cutouts > 1, "cutout_id"].iloc[0])
    members = views.object_members(rows, cid)
    assert len(members) == objects.set_index("cutout_id").n_cutouts[cid] - 1
    assert cid not in set(members.cutout_id)
    # Without a segment (cutouts stored before segments were kept) every cutout stands alone.
    old = rows.assign(segment=pd.array([pd.NA] * len(rows), dtype="Int64"))
    assert len(views.one_per_object(old)) == len(rows)
    assert views.object_members(old, cid).empty
    assert views.one_per_object(rows.iloc[:0]).empty


def test_database_from_before_segments_gets_the_column(tmp_path, hdf_file):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    eng = store.make_engine(url)
    ingest_many(eng, [hdf_file], Settings(db_url=url))
    with eng.begin() as conn:  # as a database made before segments (and their index)
        conn.execute(text("DROP INDEX ix_cutout_file_segment"))
        conn.execute(text("ALTER TABLE cutout DROP COLUMN segment"))
        conn.execute(text("ALTER TABLE fits_file DROP COLUMN first_cutout_id"))
        conn.execute(text("ALTER TABLE time_event DROP COLUMN lc_sigma"))
        conn.execute(text("ALTER TABLE time_event DROP COLUMN binned"))
        # and with the indexes of early releases, which no query used
        conn.execute(text("CREATE INDEX ix_cutout_file_id ON cutout (file_id)"))
        conn.execute(text("CREATE INDEX ix_cutout_sector_cam_ccd ON cutout "
                          "(sector, camera, ccd)"))
    eng.dispose()
    eng = store.make_engine(url)  # what opening an old database does
    from sqlalchemy import inspect

    assert {i["name"] for i in inspect(eng).get_indexes("cutout")} == {"ix_cutout_file_segment"}
    assert {"lc_sigma", "binned"} <= {c["name"] for c in inspect(eng).get_columns("time_event")}
    assert runs_match(eng)  # the files stored before get their runs of cutout ids
    df = exported(eng)
    assert len(df) > 0 and df.segment.isna().all()
    assert len(views.one_per_object(df.assign(file_id=0))) == len(df)
    eng.dispose()


def test_objects_labelled_normal_leave_the_top_after_a_refit(engine, settings, hdf_file):
    """The astronomer's loop on real pixels: label the gallery's first page of objects (the
    Hubble Deep Field's big galaxies) normal, every cutout of each, and re-fit: they score 0,
    the model remembers how many, and the galaxies of the next page drop too."""
    ingest_many(engine, [hdf_file], settings)
    first = current_model(engine)
    rows = store.cutout_table(engine, first.id).sort_values("score", ascending=False)
    objects = views.one_per_object(rows)
    page = objects.cutout_id.astype(int).tolist()[:24]
    labelled = set(page)
    for cid in page:
        labelled.update(views.object_members(rows, cid).cutout_id.astype(int))
    store.set_label(engine, sorted(labelled), "normal")
    assert set(store.labelled_ids(engine, "normal")) == labelled
    row = fit_model(engine, settings)
    assert row.n_normal == len(labelled) and first.n_normal == 0
    after = store.cutout_table(engine, row.id).set_index("cutout_id")
    assert after.loc[sorted(labelled), "score"].max() < 1e-9
    new_top = views.one_per_object(after.reset_index().sort_values("score", ascending=False))
    assert not set(new_top.cutout_id.astype(int)[:24]) & labelled
    # The next page's objects, unlabelled but mostly galaxies like the first, rank lower too
    # (their median place was 35.5 of the objects; 76.5 after, when written).
    second = objects.cutout_id.astype(int).tolist()[24:48]
    rank = {c: i for i, c in enumerate(new_top.cutout_id.astype(int))}
    assert np.median([rank.get(c, len(rank)) for c in second]) > 50
    # Unlabelling forgets: the next fit knows of no normal cutouts.
    store.set_label(engine, sorted(labelled), None)
    assert fit_model(engine, settings).n_normal == 0


def _reference_filter(tbl, flagged, f, ids=None):
    """The gallery's filters written out on the whole table with pandas (the reference)."""
    m = pd.Series(True, index=tbl.index)
    m &= tbl.score.between(f.score_min, f.score_max)
    for col, wanted in (("sector", f.sectors), ("camera", f.cameras), ("ccd", f.ccds)):
        if wanted:
            m &= tbl[col].isin(wanted).fillna(False).astype(bool)
    if f.labels:
        m &= tbl.label.fillna("unlabelled").isin(f.labels)
    if f.file_contains:
        m &= tbl.file.str.contains(f.file_contains, case=False, regex=False)
    if f.anomalies_only:
        m &= flagged
    if ids is not None:
        m &= tbl.cutout_id.isin(ids)
    return tbl[m.to_numpy()].sort_values(["score", "cutout_id"], ascending=[False, True])


def test_gallery_pages_match_the_whole_table(engine, settings, hdf_file, spoc_file):
    """The gallery reads only its page: counts, order, one per object and each object's
    cutouts agree with the same filters applied to the whole cutout table."""
    check_gallery_pages(engine, settings, [hdf_file, spoc_file])


def check_gallery_pages(engine, settings, files):
    """:func:`test_gallery_pages_match_the_whole_table` on ``engine`` (also PostgreSQL)."""
    from reaper_core.service import Reaper

    ingest_many(engine, files, settings)
    reaper = Reaper(settings, engine=engine)
    m = reaper.model()
    tbl = reaper.cutout_table(m)
    flagged = pd.Series(m.flags(tbl.score.to_numpy(float)), index=tbl.index)
    hdf = tbl[tbl.file.str.startswith("hubble")].sort_values("score", ascending=False)
    reaper.label(hdf.cutout_id.iloc[:3].astype(int), "interesting")
    reaper.label(hdf.cutout_id.iloc[3:5].astype(int), "artefact", note="<b>x</b>")
    index = reaper.rank_index(m)
    tbl = reaper.cutout_table(m)  # with the labels
    lo, hi = float(tbl.score.min()), float(tbl.score.max())
    cases = [views.Filters(lo, hi, anomalies_only=True), views.Filters(lo, hi),
             views.Filters(lo, hi, file_contains="HUBBLE"), views.Filters(lo, hi, sectors=(7,)),
             views.Filters(lo, hi, labels=("interesting", "artefact")),
             views.Filters(lo, hi, labels=("unlabelled",), anomalies_only=True),
             views.Filters(float(tbl.score.median()), hi, cameras=(1,), ccds=(2, 3)),
             views.Filters(lo, hi, file_contains="no such file")]
    for f in cases:
        want = _reference_filter(tbl, flagged, f)
        for per_object in (False, True):
            shown = views.one_per_object(want) if per_object else want
            for page in (0, 1, 99):
                got = reaper.gallery(m, index, f, per_object=per_object, page=page, per_page=12)
                assert got["n_match"] == len(want), f
                assert got["n_shown"] == len(shown), f
                np.testing.assert_array_equal(got["ids"], want.cutout_id.to_numpy())
                last = max(0, -(-len(shown) // 12) - 1)
                part = shown.iloc[min(page, last) * 12:(min(page, last) + 1) * 12]
                rows = got["rows"]
                np.testing.assert_array_equal(rows.cutout_id, part.cutout_id)
                assert rows.file.tolist() == part.file.tolist()
                assert rows.label.fillna("").tolist() == part.label.fillna("").tolist()
                np.testing.assert_array_equal(rows.is_anomaly, flagged[part.index])
                if per_object:
                    np.testing.assert_array_equal(rows.n_cutouts, part.n_cutouts)
    # A group: only its cutouts; "anomalies only" with none flagged says how many there are.
    some = tbl.cutout_id.iloc[::7].astype(int).tolist()
    f = views.Filters(lo, hi)
    got = reaper.gallery(m, index, f, cutout_ids=some, per_object=False)
    assert got["n_match"] == len(_reference_filter(tbl, flagged, f, some)) == len(some)
    quiet = tbl[~flagged].cutout_id.astype(int).tolist()[:5]
    got = reaper.gallery(m, index, views.Filters(lo, hi, anomalies_only=True), cutout_ids=quiet)
    assert got["n_match"] == 0 and got["n_any"] == len(quiet)
    # A detail's object, its rows and the CSV of a selection.
    cid = int(views.one_per_object(tbl.sort_values("score", ascending=False))
              .query("n_cutouts > 1").cutout_id.iloc[0])
    np.testing.assert_array_equal(
        np.sort(reaper.object_members(m, cid).cutout_id),
        np.sort(views.object_members(tbl, cid).cutout_id))
    csv = pd.read_csv(io.BytesIO(reaper.rows_csv(m, got["ids"][:0].tolist() + some[:40],
                                                 chunk=16)))
    assert csv.cutout_id.tolist() == some[:40] and "is_anomaly" in csv
    assert reaper.rows(m, [10**9]).empty


def test_vectors_of_an_older_feature_set_are_embedded_again(engine, settings, spoc_file,
                                                            tica_file):
    """A database written when the embedder gave more features (this version dropped the
    patches' sky level and noise in image units): the next ingest drops those vectors and the
    model fitted on them, and the fit embeds the stored patches again; one sentence says so.
    Before, vectors of two lengths under one name could not be stacked."""
    from reaper_core.embedders import get_embedder
    from reaper_core.models import retire_stale

    first = ingest_many(engine, [spoc_file], settings).results[0].n_cutouts
    name, dim = settings.embedder, get_embedder(settings.embedder).dim
    assert older_features(engine) == first
    assert store.vector_length(engine, name) == 4 * (dim + 4)
    report = ingest_many(engine, [tica_file], settings)
    assert report.ok and report.fitted
    assert (f"model fitted (the {name} embedder describes a cutout with {dim} features since "
            f"this version: {first:,} stored cutouts embedded before are embedded again)"
            in report.summary())
    with engine.connect() as conn:
        lengths = conn.execute(text("SELECT length(vector), count(*) FROM embedding "
                                    "GROUP BY length(vector)")).all()
        assert conn.execute(text("SELECT count(*) FROM detector_model")).scalar() == 1
    assert lengths == [(4 * dim, first + report.results[0].n_cutouts)]
    assert exported(engine).score.notna().all()
    assert retire_stale(engine, get_embedder(name)) is None  # nothing stale now
