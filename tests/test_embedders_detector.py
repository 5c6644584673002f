import io
import json

import numpy as np
import pytest

from reaper_core.cutouts import extract_cutouts
from reaper_core.detector import PCAAnomalyDetector
from reaper_core.embedders import Feature, get_embedder
from reaper_core.embedders.local import STATS_NAMES
from reaper_core.errors import ConfigError, ModelError
from reaper_core.explain import top_features
from reaper_core.fits_reader import read_fits
from reaper_core.ingest import ingest_many
from reaper_core.models import current_model
from reaper_core.sources import find_sources
from reaper_core.thresholds import threshold_from_scores

from .conftest import REAL_SPOC as TESS_FFI
from .conftest import exported


@pytest.fixture(scope="module")
def patches(request):
    spoc = request.getfixturevalue("spoc_file")
    img = read_fits(spoc)
    src = find_sources(img, "segment")
    return extract_cutouts(img.data, src.x, src.y, 32, img.valid)


@pytest.mark.parametrize("name, dim", [("stats", len(STATS_NAMES)), ("hog", 36),
                                       ("hog-fine", 324), ("local", len(STATS_NAMES) + 36),
                                       ("local+core", 2 * len(STATS_NAMES) + 36 - 3)])
def test_local_embedders_shape_determinism(patches, name, dim):
    emb = get_embedder(name)
    seen = []
    X = emb.embed(patches, progress=lambda d, n: seen.append((d, n)))
    assert X.shape == (len(patches), dim) == (len(patches), emb.dim)
    assert X.dtype == np.float32 and np.isfinite(X).all()
    assert seen[-1] == (len(patches), len(patches))
    np.testing.assert_array_equal(X, get_embedder(name).embed(patches))
    assert len(emb.feature_names) == dim


def test_local_features_separate_star_from_streak():
    rng = np.random.default_rng(0)
    sky = rng.normal(100, 2, (2, 32, 32)).astype(np.float32)
    yy, xx = np.mgrid[0:32, 0:32]
    sky[0] += 500 * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 2)  # a star
    sky[1] += 100 * np.exp(-((yy - xx) ** 2) / 2)  # a diagonal streak
    F = get_embedder("stats").embed(sky)
    e = STATS_NAMES.index("ellipticity")
    assert F[1, e] > 0.7 > 0.2 > F[0, e]
    assert F[0, STATS_NAMES.index("peak_snr")] > F[1, STATS_NAMES.index("peak_snr")]


def test_core_statistics_see_the_centre_not_its_neighbours():
    """The default embedder measures the statistics once more on the patch's central half: a
    star beside the centre changes the whole patch's statistics, not the core's; the core's
    are :func:`stats_features` of the central 16 px less the three brightness ones, named
    and explained as such; a patch of 8 px is its own core."""
    from reaper_core.embedders.local import (
        CORE_STATS,
        LocalEmbedder,
        core_side,
        core_stats_features,
        stats_features,
    )

    rng = np.random.default_rng(4)
    p = np.repeat(rng.normal(100, 2, (1, 32, 32)), 2, axis=0).astype(np.float32)
    yy, xx = np.mgrid[0:32, 0:32]
    p += 400 * np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / 2)  # the centred star
    p[1] += 400 * np.exp(-((xx - 27) ** 2 + (yy - 6) ** 2) / 2)  # a neighbour outside the core
    emb = LocalEmbedder(core=True)
    X = emb.embed(p)
    n, core = len(STATS_NAMES) + 36, [f.name for f in emb.features][len(STATS_NAMES) + 36:]
    assert emb.name == "local+core" and X.shape == (2, emb.dim) and core_side(32) == 16
    assert core == [f"core {c}" for c in CORE_STATS] and "peak_snr" not in CORE_STATS
    said = {f.name: f.high for f in emb.features}
    assert said["core row_max"] == "a bright row across the patch's central half"
    assert said["core gini"] == "light concentrated in few pixels in the patch's central half"
    np.testing.assert_array_equal(X[:, :n], LocalEmbedder().embed(p))
    whole = STATS_NAMES.index("n_peaks")
    assert X[1, whole] > X[0, whole]  # the whole patch sees the neighbour
    np.testing.assert_allclose(X[1, n:], X[0, n:], atol=0.05)  # the core does not
    idx = [STATS_NAMES.index(c) for c in CORE_STATS]
    np.testing.assert_allclose(X[:, n:], stats_features(p[:, 8:24, 8:24])[:, idx])
    small = rng.normal(0, 1, (3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(core_stats_features(small), stats_features(small)[:, idx])


def test_hog_names_follow_skimage_layout():
    from reaper_core.embedders.local import hog_feature_list, hog_features

    patch = np.zeros((1, 32, 32), np.float32)
    patch[0, 20:28, 2:14] = np.linspace(0, 50, 12)  # a horizontal gradient, upper-left
    f = hog_features(patch)[0]
    names = [f.name for f in hog_feature_list(32)]
    top = names[int(np.argmax(f))]
    assert top.startswith("hog upper-left")


def _real_patches(n: int = 300) -> np.ndarray:
    """32 px patches of the real SPOC corner around its brightest pixels, plus odd ones."""
    from reaper_core.cutouts import extract_cutouts
    from reaper_core.fits_reader import read_fits

    img = read_fits(TESS_FFI)
    data = np.nan_to_num(img.data)
    rng = np.random.default_rng(0)
    ys = rng.integers(0, data.shape[0], n)
    xs = rng.integers(0, data.shape[1], n)
    p = extract_cutouts(img.data, xs.astype(float), ys.astype(float), 32, img.valid)
    p[0] = 0.0  # flat
    p[1, :, 5] = np.nan  # a NaN column
    p[2, 10:20, 10:20] = 7e4  # a saturated block
    return p


def test_vectorised_hog_equals_scikit_image():
    """All patches at once give scikit-image's ``hog`` (9 orientations, L2-Hys), coarse
    (2 × 2 cells) and fine (4 × 4 cells, 2 × 2 blocks), on real TESS patches."""
    from skimage.feature import hog

    from reaper_core.embedders.local import HOG_STRETCHES, _hog_of, sky_units

    z = HOG_STRETCHES["asinh"](sky_units(_real_patches()))
    for cell, block in ((16, (1, 1)), (8, (2, 2))):
        ours = _hog_of(z, cell)
        ref = np.array([hog(zi.astype(np.float64), orientations=9, pixels_per_cell=(cell, cell),
                            cells_per_block=block, block_norm="L2-Hys") for zi in z])
        assert ours.shape == ref.shape
        # float32 arithmetic: a gradient exactly on a bin edge may fall in the next bin.
        close = np.isclose(ours, ref, atol=1e-4)
        assert close.mean() > 0.999, close.mean()
        assert np.abs(ours - ref).max() < 0.05


def test_statistics_agree_with_scipy_and_numpy():
    """The vectorised statistics (one sort for all of them) equal NumPy's percentiles and
    SciPy's skewness and kurtosis of the pixels in sky units."""
    from scipy import stats as sps

    from reaper_core.embedders.local import STATS_NAMES, sky_units, stats_features

    p = _real_patches()
    F = stats_features(p)
    z = sky_units(p).reshape(len(p), -1).astype(np.float64)

    def slog(v):
        return np.sign(v) * np.log1p(np.abs(v))

    for name, q in (("p01", 1), ("p25", 25), ("p99", 99)):
        assert np.allclose(F[:, STATS_NAMES.index(name)], slog(np.percentile(z, q, axis=1)),
                           atol=1e-4)
    with np.errstate(all="ignore"):
        skew = np.nan_to_num(np.clip(sps.skew(z, axis=1), -50, 50))
        kurt = np.nan_to_num(slog(sps.kurtosis(z, axis=1)))
    assert np.allclose(F[:, STATS_NAMES.index("skew")], skew, atol=1e-3)
    assert np.allclose(F[:, STATS_NAMES.index("kurtosis")], kurt, atol=1e-3)
    # The NaN column and the saturated block show.
    # (A NaN column 5 px from the window's edge: outside its central half, not counted.)
    assert F[1, STATS_NAMES.index("nan_fraction")] == 0
    holed = p[:2].copy()
    holed[0, 14:19, 10:15] = np.nan  # a 5 × 5 hole beside the centre, all of it counted
    holed[1, 6:11, 20:25] = np.nan  # straddling the central half's corner: 3 × 4 px inside
    assert stats_features(holed)[:, STATS_NAMES.index("nan_fraction")] == pytest.approx(
        [25 / 256, 12 / 256])
    assert F[2, STATS_NAMES.index("flat_top")] > F[3:, STATS_NAMES.index("flat_top")].max()


def test_statistics_equal_their_definitions_on_real_patches():
    """The compiled sums give each statistic as its plain definition does, patch by patch, on
    real SPOC patches (a flat one, one with a NaN column and a saturated block among them)."""
    from scipy import ndimage, stats

    from reaper_core.embedders.local import sky_units, stats_features

    p = _real_patches(120)
    F = stats_features(p)
    z = sky_units(p).astype(np.float64)
    n, s, _ = z.shape
    col = {name: F[:, i] for i, name in enumerate(STATS_NAMES)}

    def slog(v):
        return np.sign(v) * np.log1p(np.abs(v))

    flat = z.reshape(n, -1)
    yy, xx = np.mgrid[0:s, 0:s]
    r = np.hypot(xx - 15.5, yy - 15.5).ravel()
    varied = flat.std(axis=1) > 0
    np.testing.assert_allclose(col["skew"][varied], stats.skew(flat[varied], axis=1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(col["kurtosis"][varied],
                               slog(stats.kurtosis(flat[varied], axis=1)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(col["aperture_snr"],
                               slog(flat[:, r <= 3].sum(1) / np.sqrt((r <= 3).sum())), rtol=1e-5)
    np.testing.assert_allclose(col["area_3sigma"], (flat > 3).mean(1), rtol=1e-6)
    peaks = [((zi == ndimage.maximum_filter(zi, 3, mode="constant", cval=-np.inf))
              & (zi > 5)).sum() for zi in z]
    np.testing.assert_allclose(col["n_peaks"], np.log1p(peaks), rtol=1e-6)
    w = np.clip(np.sort(flat, axis=1), 0, None)
    k = np.arange(1, s * s + 1)
    tot = w.sum(1)
    gini = np.where(tot > 0, (w * (2 * k - s * s - 1)).sum(1) / (np.where(tot > 0, tot, 1)
                                                                  * (s * s - 1)), 0)
    np.testing.assert_allclose(col["gini"], gini, rtol=1e-5, atol=1e-6)
    asym = np.abs(z - z[:, ::-1, ::-1]).reshape(n, -1).sum(1) / (np.abs(flat).sum(1) + 1e-9)
    np.testing.assert_allclose(col["asymmetry"], asym, rtol=1e-5, atol=1e-7)
    pos = np.clip(flat, 0, None)
    mx = (pos * xx.ravel()).sum(1) / np.where(tot > 0, tot, 1)
    my = (pos * yy.ravel()).sum(1) / np.where(tot > 0, tot, 1)
    bright = np.hypot(mx - 15.5, my - 15.5)
    np.testing.assert_allclose(col["centroid_offset"][tot > 0], bright[tot > 0], rtol=1e-4,
                               atol=1e-4)


def test_median_deviation_of_sorted_rows_equals_a_second_sort():
    """The median absolute deviation from sorted rows equals the median of the deviations
    sorted again, for even and odd rows, with ties, in float32 and float64."""
    from reaper_core.cutouts import median_along
    from reaper_core.patch_kernels import median_deviation_of_sorted

    rng = np.random.default_rng(3)
    for m in (1, 2, 3, 348, 349):
        for dtype in (np.float32, np.float64):
            v = rng.normal(size=(200, m)).astype(dtype)
            v[:50] = np.round(v[:50])  # ties
            v[50] = 4.0  # all equal
            srt = np.sort(v, axis=1)
            med = median_along(srt)
            want = median_along(np.abs(srt - med[:, None]))
            got = median_deviation_of_sorted(srt, med)
            assert got.dtype == dtype
            assert np.array_equal(got, want), (m, dtype)


def test_embedding_on_threads_equals_one_thread(monkeypatch):
    """Chunks embedded on several threads come back in order, equal to one thread's, with
    progress rising to n."""
    from reaper_core import parallel
    from reaper_core.embedders import local

    p = np.concatenate([_real_patches()] * 4)
    seen = []
    monkeypatch.setattr(parallel, "compute_threads", lambda: 1)
    one = get_embedder("local").embed(p)
    monkeypatch.setattr(parallel, "compute_threads", lambda: 3)
    many = local._chunked(get_embedder("local").embed, p, lambda d, n: seen.append(d),
                          one.shape[1], chunk=128)
    assert np.array_equal(one, many)
    assert seen == sorted(seen) and seen[-1] == len(p)


def test_star_fit_beside_detection_equals_it_after(monkeypatch, spoc_file):
    """The star fit runs on a thread of its own while sources are found and patches cut; the
    embeddings are those of the same steps one after another, and a failure in it is the
    file's failure."""
    from reaper_core import parallel
    from reaper_core.config import Settings
    from reaper_core.ingest import prepare

    settings = Settings()
    emb = get_embedder(settings.embedder)
    monkeypatch.setattr(parallel, "compute_threads", lambda: 1)
    one = prepare(spoc_file, settings, emb)
    monkeypatch.setattr(parallel, "compute_threads", lambda: 2)
    both = prepare(spoc_file, settings, emb)
    assert np.array_equal(one.embeddings, both.embeddings)
    assert np.ptp(both.embeddings[:, -1]) > 0  # the star residual column was measured

    def broken(*args):
        raise RuntimeError("PSF fit diverged")

    monkeypatch.setattr("reaper_core.starfit.fit_region", broken)
    with pytest.raises(RuntimeError, match="diverged"):
        prepare(spoc_file, settings, emb)


def test_blas_held_to_one_thread_while_prepare_runs_its_own(monkeypatch, spoc_file):
    """Source finding (its matrix products) sees BLAS limited to one thread when the process
    runs its own compute threads, and the limit is lifted after."""
    from threadpoolctl import threadpool_info

    from reaper_core import parallel, sources
    from reaper_core.config import Settings
    from reaper_core.ingest import prepare

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []
    real = sources.find_sources

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "find_sources", spy)
    monkeypatch.setattr(parallel, "compute_threads", lambda: 2)
    prepare(spoc_file, Settings(), get_embedder("local"))
    assert seen and all(n == 1 for n in seen[0])
    assert blas_threads() == before


def test_error_by_quadrant_points_at_the_odd_corner(tmp_path, hdf_file):
    from reaper_core import store
    from reaper_core.config import Settings
    from reaper_core.service import Reaper

    s = Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}")
    engine = store.make_engine(s.db_url)
    ingest_many(engine, [hdf_file], s)
    model = current_model(engine)
    # A streak in the upper-right quarter of an otherwise ordinary patch.
    df = exported(engine).sort_values("score")
    cid = int(df.cutout_id.iloc[len(df) // 2])
    patch, _ = store.get_cutouts(engine, [cid])[cid]
    odd = patch.copy()
    for i in range(4, 14):
        odd[18 + i, 18 + i // 2] += 40 * float(np.std(patch))
    X = get_embedder("local").embed(odd[None])
    with store.session_scope(engine) as sess:
        row = sess.get(store.Embedding, (cid, s.embedder))
        # The stored star residual (the last column) stays: only the patch changed.
        old = np.frombuffer(row.vector, np.float32)
        row.vector = store.pack_float32(np.hstack([X[0], old[X.shape[1]:]]))
    grid = Reaper(s, engine).error_by_quadrant(model, cid)
    assert grid is not None and grid.shape == (2, 2)
    assert np.argmax(grid) == 3  # upper-right: row 1 (upper), column 1 (right)


def test_unknown_embedder():
    with pytest.raises(ConfigError, match="unknown embedder"):
        get_embedder("clip")


def test_detector_ranks_outliers_and_thresholds():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 20))
    X = rng.normal(size=(500, 3)) @ basis + 0.05 * rng.normal(size=(500, 20))
    odd = rng.normal(size=(5, 20)) * 2
    det = PCAAnomalyDetector(n_components=3).fit(X)
    s_in, s_out = det.anomaly_score(X), det.anomaly_score(odd)
    assert s_out.min() > np.percentile(s_in, 99)
    assert (det.predict(odd) == -1).all()
    assert (det.predict(X) == 1).mean() > 0.9
    assert det.threshold_ == pytest.approx(s_in.mean() + 2 * s_in.std())
    # Re-thresholding changes the threshold, never the scores or the fit.
    comps = det.components_.copy()
    assert det.threshold_for("percentile", 90) == pytest.approx(np.percentile(s_in, 90))
    assert det.threshold_for("absolute", 0.5) == 0.5
    assert det.with_threshold(0.5).predict(odd).tolist() == [-1] * 5
    np.testing.assert_array_equal(det.components_, comps)
    np.testing.assert_array_equal(det.anomaly_score(X), s_in)
    assert det.transform(X).shape == (500, 3)
    expl = top_features(det, odd[:1], [Feature(f"f{i}", "learned") for i in range(20)],
                        top=3)[0]
    assert len(expl) == 3 and expl[0][1] >= expl[1][1] >= expl[2][1]


def test_detector_variance_fraction_and_errors():
    X = np.random.default_rng(1).normal(size=(200, 10))
    det = PCAAnomalyDetector(n_components=0.5).fit(X)
    assert det.explained_variance_ratio_.sum() >= 0.5
    assert 1 <= det.n_components_ < 10
    with pytest.raises(ValueError, match="minimum of 3"):
        PCAAnomalyDetector().fit(X[:2])
    with pytest.raises(ValueError, match="expecting 10"):
        det.anomaly_score(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        threshold_from_scores(np.ones(3), "magic", 1)


def test_normalised_residuals_weigh_features_by_their_usual_error():
    # Feature 0 is noisy, feature 1 is almost perfectly explained by the components: the same
    # residual of 1 (standardised) is ordinary for feature 0 and very strange for feature 1.
    rng = np.random.default_rng(4)
    t = rng.normal(size=(2000, 1))
    X = np.hstack([rng.normal(size=(2000, 1)), t, t + 0.01 * rng.normal(size=(2000, 1)),
                   rng.normal(size=(2000, 1))])
    det = PCAAnomalyDetector(n_components=1).fit(X)
    plain = PCAAnomalyDetector(n_components=1, normalize_residuals=False).fit(X)
    np.testing.assert_array_equal(plain.residual_scale_, np.ones(4))
    assert det.residual_scale_[1] < 0.05 < 0.5 < min(det.residual_scale_[[0, 3]])
    # The normalised training error is 1 per feature by construction.
    assert det.train_anomaly_scores_.mean() == pytest.approx(1.0)
    odd_noisy, odd_tight = X[:1].copy(), X[:1].copy()
    odd_noisy[0, 3] += 3 * X[:, 3].std()
    odd_tight[0, 2] += 0.3 * X[:, 2].std()
    # Plain squared error ranks the big shift in the noisy feature first ...
    assert plain.anomaly_score(odd_noisy)[0] > plain.anomaly_score(odd_tight)[0]
    # ... normalised, a break of a tight relation between features is the stranger one.
    assert det.anomaly_score(odd_tight)[0] > det.anomaly_score(odd_noisy)[0]
    assert det.predict(odd_tight)[0] == -1


def test_feature_weights_scale_each_residual_and_are_saved():
    """A feature's weight multiplies its (normalised) residual in the score: a break in a
    feature weighing half counts a quarter as much; the weights are saved with the model (JSON)
    and a wrong number of them is one clear error."""
    rng = np.random.default_rng(5)
    t = rng.normal(size=(500, 1))
    X = np.hstack([t + 0.1 * rng.normal(size=(500, 3)), rng.normal(size=(500, 3))])
    w = np.array([1, 1, 1, 0.5, 0.5, 0.5])
    plain = PCAAnomalyDetector(n_components=1).fit(X)
    weighted = PCAAnomalyDetector(n_components=1, feature_weights=w).fit(X)
    np.testing.assert_allclose(weighted.residuals(X), plain.residuals(X) * w, atol=1e-12)
    np.testing.assert_allclose(weighted.reconstruction_error(X),
                               np.mean((plain.residuals(X) * w) ** 2, axis=1))
    # The same break in feature 1 and in feature 4: equal without weights, not with them.
    a, b = X[:1].copy(), X[:1].copy()
    a[0, 1] += 4 * X[:, 1].std()
    b[0, 4] += 4 * X[:, 4].std()
    assert weighted.anomaly_score(a)[0] > 2 * weighted.anomaly_score(b)[0]
    arrays, meta = weighted.to_bytes()
    assert json.loads(meta)["params"]["feature_weights"] == w.tolist()
    again = PCAAnomalyDetector.from_bytes(arrays, meta, weighted.threshold_)
    np.testing.assert_array_equal(again.anomaly_score(X), weighted.anomaly_score(X))
    with pytest.raises(ValueError,
                       match=r"feature_weights must be 6 positive, finite numbers .*not 2 values"):
        PCAAnomalyDetector(feature_weights=[1, 1]).fit(X)
    with pytest.raises(ValueError, match=r"feature_weights must be 6 .*not a value ≤ 0"):
        PCAAnomalyDetector(feature_weights=[1, 1, 1, 0, 1, 1]).fit(X)


def test_detector_saves_as_arrays_and_json_only(tmp_path):
    X = np.random.default_rng(2).normal(size=(100, 8))
    det = PCAAnomalyDetector(n_components=3, threshold_mode="percentile",
                             threshold_value=95).fit(X)
    meta = det.save(tmp_path / "model")
    assert json.loads(meta.read_text())["params"]["threshold_mode"] == "percentile"
    with np.load(tmp_path / "model.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype.kind == "f" for k in npz.files)
    back = PCAAnomalyDetector.load(tmp_path / "model")
    np.testing.assert_allclose(back.anomaly_score(X), det.anomaly_score(X))
    assert back.threshold_ == det.threshold_
    assert back.normalize_residuals and (back.residual_scale_ != 1).any()
    # A model saved before residual normalisation existed still loads and scores as it did.
    old = PCAAnomalyDetector(n_components=3, normalize_residuals=False).fit(X)
    arrays, meta_json = old.to_bytes()
    with np.load(io.BytesIO(arrays), allow_pickle=False) as npz:
        legacy = {{"train_anomaly_scores_": "train_scores_"}.get(k, k): npz[k]
                  for k in npz.files if k != "residual_scale_"}
    buf = io.BytesIO()
    np.savez_compressed(buf, **legacy)
    new_meta = json.loads(meta_json)
    legacy_meta = {"format": "anomaly-reaper-pca/1", "n_components_": new_meta["n_components_"],
                   "n_features_in_": new_meta["n_features_in_"], "threshold_": old.threshold_,
                   **{k: v for k, v in new_meta["params"].items() if k != "normalize_residuals"}}
    again = PCAAnomalyDetector.from_bytes(buf.getvalue(), json.dumps(legacy_meta))
    np.testing.assert_allclose(again.anomaly_score(X), old.anomaly_score(X))
    # A pickle disguised as a model is refused, never loaded.
    (tmp_path / "evil.npz").write_bytes(b"\x80\x04\x95" + b"x" * 50)
    (tmp_path / "evil.json").write_text(meta.read_text())
    with pytest.raises(ModelError):
        PCAAnomalyDetector.load(tmp_path / "evil")


def test_projection_without_scikit_learn_equals_the_detectors(tmp_path):
    """The Explore scatter's coordinates, read from the stored arrays with NumPy alone, are
    the detector's own (context columns are standardised but not projected)."""
    from reaper_core.projection import Projection

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 9)) * rng.uniform(0.5, 20, 9) + rng.normal(size=9) * 5
    det = PCAAnomalyDetector(n_components=4, n_context=1).fit(X)
    arrays, _ = det.to_bytes()
    proj = Projection.from_arrays(arrays)
    assert proj.n_components == 4
    np.testing.assert_allclose(proj.transform(X), det.transform(X), rtol=1e-10, atol=1e-10)
    with pytest.raises(ModelError, match="embeddings of 8 features for a model of 9"):
        proj.transform(X[:, :8])
    with pytest.raises(ModelError, match="cannot be read"):
        Projection.from_arrays(b"\x80\x04\x95" + b"x" * 50)  # a pickle is never loaded


def test_local_embedder_stretch_changes_only_the_hog_block(patches):
    from reaper_core.embedders.local import LocalEmbedder

    default = LocalEmbedder().embed(patches)
    linear = LocalEmbedder(stretch="linear")
    assert linear.name == "local[linear]" and LocalEmbedder().name == "local"
    X = linear.embed(patches)
    n_stats = len(STATS_NAMES)
    np.testing.assert_array_equal(X[:, :n_stats], default[:, :n_stats])
    # A linear view of a bright star and an asinh view give different gradient histograms.
    assert np.abs(X[:, n_stats:] - default[:, n_stats:]).max() > 0.05
    with pytest.raises(ValueError, match="unknown stretch"):
        LocalEmbedder(stretch="gamma")


def test_sky_units_measure_against_the_outer_ring():
    """Sky 100 ± 5 with a 50σ star and a NaN: the ring's median and σ come out, the star stands
    at ~50 in sky σ, the NaN takes the patch's median, and a flat patch does not divide by 0."""
    from reaper_core.embedders.local import sky_units

    rng = np.random.default_rng(3)
    p = 100 + 5 * rng.standard_normal((2, 32, 32))
    p[0, 16, 16] += 250
    p[0, 5, 20] = np.nan
    p[1] = 7.0
    z = sky_units(p)
    assert z.shape == p.shape and np.isfinite(z).all()
    ring = np.ones((32, 32), bool)
    ring[3:29, 3:29] = False
    assert abs(np.median(z[0][ring])) < 0.1
    assert 0.9 < 1.4826 * np.median(np.abs(z[0][ring])) < 1.1
    assert 45 < z[0, 16, 16] < 55
    assert abs(z[0, 5, 20]) < 0.5
    assert (z[1] == 0).all()


def test_samples_labelled_normal_count_more_and_damp_their_like():
    """A normal label repeats its sample ``normal_weight`` times in the fit and damps the scores
    of samples near it: a rare kind of sample ranks first until four of twelve are labelled
    normal, then all twelve drop far while the common ones are left alone; the training
    scores stay one per given sample."""
    rng = np.random.default_rng(4)
    basis = rng.normal(size=(2, 12))
    common = rng.normal(size=(400, 2)) @ basis + 0.05 * rng.normal(size=(400, 12))
    amp = rng.uniform(2, 4, (12, 1)) * rng.choice([-1, 1], (12, 1))
    rare = amp * rng.normal(size=12) + 0.05 * rng.normal(size=(12, 12))
    X = np.vstack([common, rare])
    normal = np.zeros(len(X), bool)
    normal[400:404] = True

    plain = PCAAnomalyDetector(n_components=2).fit(X)
    taught = PCAAnomalyDetector(n_components=2).fit(X, normal=normal)
    assert taught.train_anomaly_scores_.shape == (len(X),) and taught.n_normal_ == 4
    rank = {name: np.argsort(np.argsort(-d.anomaly_score(X)))
            for name, d in (("plain", plain), ("taught", taught))}
    assert rank["plain"][400:].max() < 20  # the rare ones lead the plain ranking...
    assert rank["taught"][400:].min() > 100  # ...and drop far once four are called normal
    assert (taught.anomaly_score(X[normal]) == 0).all()
    # The damping leaves the common samples, far from every labelled one, alone.
    damping = taught.anomaly_score(X) / np.mean(taught.residuals(X) ** 2, axis=1)
    assert np.median(damping[:400]) > 0.95

    # Weights are repeats: the fit equals one on the normal rows repeated normal_weight times
    # (the damping aside, which a model without labels does not do).
    rep = PCAAnomalyDetector(n_components=2).fit(np.repeat(X, np.where(normal, 30, 1), axis=0))
    np.testing.assert_allclose(taught.components_, rep.components_, atol=1e-8)
    np.testing.assert_allclose(taught.mean_, rep.mean_)
    # The labels travel with the model; old models without them load with none.
    arrays, meta = taught.to_bytes()
    back = PCAAnomalyDetector.from_bytes(arrays, meta)
    assert back.n_normal_ == 4
    np.testing.assert_array_equal(back.anomaly_score(X), taught.anomaly_score(X))
    with pytest.raises(ValueError, match="shape"):
        PCAAnomalyDetector().fit(X, normal=normal[:5])
    with pytest.raises(ValueError, match="normal_weight"):
        PCAAnomalyDetector(normal_weight=0).fit(X, normal=normal)


def test_detector_passes_scikit_learns_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(PCAAnomalyDetector(), on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_detector_signs_follow_scikit_learn():
    """score_samples is lower-is-more-abnormal and decision_function negative for outliers, so a
    scikit-learn tool that relies on the contract ranks the same way as anomaly_score."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 12))
    odd = rng.normal(size=(10, 12)) * 3
    det = PCAAnomalyDetector(n_components=3).fit(X)
    both = np.vstack([X, odd])
    truth = np.r_[np.zeros(len(X)), np.ones(len(odd))]
    np.testing.assert_array_equal(det.score_samples(both), -det.anomaly_score(both))
    assert det.offset_ == -det.threshold_
    np.testing.assert_allclose(det.decision_function(both),
                               det.score_samples(both) - det.offset_)
    assert (det.decision_function(odd) < 0).all()
    assert roc_auc_score(truth, -det.score_samples(both)) > 0.99
    np.testing.assert_array_equal(det.predict(both) == -1,
                                  det.anomaly_score(both) > det.threshold_)
    # NaN is refused with a clear error, never silently turned into 0.
    bad = X[:5].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        det.anomaly_score(bad)
    with pytest.raises(ValueError, match="NaN"):
        PCAAnomalyDetector().fit(np.vstack([X, bad]))
    # Parameters are checked by scikit-learn's constraints, at fit time.
    with pytest.raises(ValueError, match="threshold_mode"):
        PCAAnomalyDetector(threshold_mode="magic").fit(X)
    with pytest.raises(ValueError, match="n_components"):
        PCAAnomalyDetector(n_components=-3).fit(X)


def test_reasons_in_plain_words(hdf_file):
    """A dark column drawn into an ordinary patch is explained as one, in words; quadrant
    phrases are said once."""
    from reaper_core.explain import _where, reasons

    img = read_fits(hdf_file)
    src = find_sources(img)
    patches = extract_cutouts(img.data, src.x, src.y, 32, img.valid)
    emb = get_embedder("local")
    X = emb.embed(patches)
    det = PCAAnomalyDetector(n_components=5).fit(X)
    typical = int(np.argsort(det.anomaly_score(X))[len(X) // 2])
    odd = patches[typical].copy()
    sky = np.median(odd)
    odd[:, 20] = sky - 30 * np.std(patches[typical])  # a dead column
    why = reasons(det, emb.embed(odd[None]), emb.features, top=3)[0]
    assert "a dark column (a bad column)" in why
    assert all(isinstance(p, str) and p and "{" not in p for p in why)
    assert len(set(why)) == len(why) <= 3
    assert reasons(det, X[:2], None) == [[], []]  # no feature meanings: no words
    assert _where(["upper left", "lower left"]) == "the upper left and lower left of the patch"
    assert _where(["a", "b", "c", "d"]) == "every quarter of the patch"


def test_samples_all_alike_explain_no_variance_without_a_warning():
    """Cutouts all alike (a frame smaller than a patch: every window is the whole frame) give
    a model whose components explain no variance — 0, not NaN in its stored JSON — and no
    division-by-zero warning."""
    import json
    import warnings

    X = np.tile(np.linspace(0, 1, 12), (5, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det = PCAAnomalyDetector(n_components=2).fit(X)
    assert np.array_equal(det.explained_variance_ratio_, np.zeros(det.n_components_))
    assert "NaN" not in det.to_bytes()[1] and json.loads(det.to_bytes()[1])
    assert np.isfinite(det.anomaly_score(X)).all()
