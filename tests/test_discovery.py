"""The discovery loop on the real Hubble Deep Field and a simulated TESS frame: re-ranking from
every label, more like this, groups, the Discover page, the command line."""

from __future__ import annotations

import numpy as np
import pytest

from reaper_core.cli import main
from reaper_core.config import Settings
from reaper_core.errors import LabelError, ModelError, ReaperError
from reaper_core.rerank import LabelReranker, rank_fraction
from reaper_core.service import Reaper
from reaper_core.similarity import SimilarityIndex


@pytest.fixture(scope="module")
def reaper(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("disc")
    r = Reaper(Settings(db_url=f"sqlite:///{folder / 'd.db'}", uploads_dir=str(folder / "up"),
                        load_demo=0))
    report = r.ingest([request.getfixturevalue("hdf_file"),
                       request.getfixturevalue("spoc_file")])
    assert all(x.status == "added" for x in report.results)
    return r


def _rank_of(reaper, cid: int) -> int:
    return reaper.reranked()["cutout_id"].tolist().index(cid)


def test_each_label_moves_its_neighbours_the_right_way(reaper):
    """A cutout in the middle of the ranking and its nearest neighbour: "interesting" or
    "anomaly" on the cutout lifts the neighbour, "normal" or "artefact" sinks it; a cutout far
    from the label keeps its unsupervised place."""
    r0 = reaper.reranked()
    ids = r0["cutout_id"]
    mid = int(ids[len(ids) // 2])
    near = reaper.similar(mid, 1)[0][0]
    far = int(ids[np.argmax(r0["unsupervised"] == r0["unsupervised"].max())])
    before = _rank_of(reaper, near)
    assert reaper.reranked()["rerank"][0] == pytest.approx(1.0)  # no labels: the rank fraction
    moved = {}
    for label in ("interesting", "anomaly", "normal", "artefact"):
        reaper.label([mid], label)
        r = reaper.reranked()
        moved[label] = r["cutout_id"].tolist().index(near)
        c = dict(zip(r["cutout_id"].tolist(), r["closeness"].tolist(), strict=True))
        assert c[mid] == pytest.approx(1.0) and c[far] < 1e-3
        reaper.label([mid], None)
    assert moved["interesting"] < before and moved["anomaly"] < before
    assert moved["normal"] > before and moved["artefact"] > before
    assert _rank_of(reaper, near) == before  # unlabelling forgets


def test_look_alikes_of_a_label_keep_their_own_order():
    """Next to a label its look-alikes move towards its verdict but still rank among
    themselves by how odd each is (the verdict once replaced their score: a tie)."""
    # A labelled cutout at the origin, two look-alikes equally close, one far away.
    Z = np.array([[0, 0], [0.01, 0], [0, 0.01], [50, 50], [80, 80]], np.float32)
    u = np.array([0.5, 3.0, 1.0, 2.0, 5.0])  # unsupervised: look-alike 1 odder than 2
    for label, lifted in (("normal", False), ("interesting", True)):
        rr = LabelReranker().fit(Z[:1], [label], scale=np.array([1.0]))
        score = rr.score(Z, u)
        assert score[1] > score[2]  # their own order kept
        assert (score[1:3] > rank_fraction(u)[1:3]).all() == lifted
        assert score[3:] == pytest.approx(rank_fraction(u)[3:])  # far away: untouched
    with pytest.raises(ValueError, match="verdict in"):
        LabelReranker(verdict=0)


def test_the_queue_follows_the_labels(reaper):
    first = reaper.discover_queue(n=24, explore=4)
    assert len(first) == len(set(first)) == 24
    reaper.label(first, "normal", whole_object=True)
    second = reaper.discover_queue(n=24, explore=4)
    assert not set(first) & set(second)  # labelled objects leave the queue
    # What was like the page labelled normal sinks: the next page's cutouts are farther from
    # the labels than the unsupervised ranking's next ones would be.
    r = reaper.reranked()
    c = dict(zip(r["cutout_id"].tolist(), r["closeness"].tolist(), strict=True))
    unsup = [i for i in reaper.ranking(reaper.model(), one_per_object=True)["cutout_id"]
             .tolist() if i not in set(first)][:24]
    assert np.mean([c[i] for i in second]) < np.mean([c[i] for i in unsup])
    reaper.label(reaper.ranking(reaper.model())["cutout_id"].tolist(), None)


def test_the_queue_shows_a_labelled_anomaly_once(reaper):
    """Windows that a window labelled interesting partly showed already rank lower in the
    queue: the next page holds fewer of them than the re-ranked order alone would give."""
    from reaper_core.views import away_from, first_per_object, spread, window_overlap

    page = reaper.discover_queue(n=24, explore=0)
    reaper.label(page, "interesting")
    try:
        r = reaper.reranked()
        f, x, y = r["file_id"], r["x"], r["y"]
        size = float(reaper.settings.patch_size)
        lab = np.isin(r["cutout_id"], page)
        free = ~lab & away_from(f, x, y, f[lab], x[lab], y[lab], size / 2)
        keep, _ = first_per_object(f[free], r["segment"][free])
        cand = np.flatnonzero(free)[keep]
        plain = spread(cand, f, x, y, 24, size / 2)  # the re-ranked order alone
        ids = r["cutout_id"].tolist()
        queue = [ids.index(c) for c in reaper.discover_queue(n=24, explore=0)]

        def overlapping(rows) -> int:
            rows = np.asarray(rows)
            return int((window_overlap(f[rows], x[rows], y[rows], f[lab], x[lab], y[lab],
                                       size) > 0).sum())

        assert overlapping(queue) < overlapping(plain)
    finally:
        reaper.label(page, None)


def test_the_queue_is_empty_only_when_every_cutout_is_labelled(reaper):
    """Places next to a labelled cutout wait until no other place is left, then come: the
    Discover page never says "nothing left to judge" while a cutout is unlabelled."""
    ids = reaper.ranking(reaper.model())["cutout_id"].tolist()
    left = ids[len(ids) // 2:len(ids) // 2 + 3]
    reaper.label([c for c in ids if c not in left], "interesting")
    try:
        got = reaper.discover_queue(n=24, explore=4)
        assert got and set(got) <= set(left)
        reaper.label(left, "normal")
        assert reaper.discover_queue(n=24, explore=4) == []
    finally:
        reaper.label(ids, None)


def test_window_overlap():
    from reaper_core.views import window_overlap

    share = window_overlap(np.array([1, 1, 2, 1]), np.array([8.0, 100, 0, 40]),
                           np.array([16.0, 100, 0, 0]), np.array([1, 1]),
                           np.array([0.0, 50]), np.array([0.0, 0]), 32)
    # (32 − 8)(32 − 16)/32² for the first; far, another file: 0; the nearer reference wins.
    np.testing.assert_allclose(share, [0.375, 0, 0, 22 * 32 / 32**2])


def test_similar_is_the_exact_nearest_neighbours(reaper):
    """In the space of labels, each feature weighed by its share of the query's
    reconstruction error (the oddity metric), exact; the metric's weights average 1."""
    from sklearn.neighbors import NearestNeighbors

    from reaper_core import store
    from reaper_core.similarity import oddity_metric

    model = reaper.model()
    ids, Z = reaper._space(model)
    q = int(ids[7])
    got = reaper.similar(q, 10)
    _, X = store.load_embeddings(reaper.engine, model.embedder, ids=[q])
    r = model.detector.residuals(X)[0]
    w = oddity_metric(r)
    assert w.mean() == pytest.approx(1.0) and w.argmax() == np.abs(r).argmax()
    assert (w >= 0.2 - 1e-12).all() and oddity_metric(np.zeros(4)).tolist() == [1.0] * 4
    assert oddity_metric(np.array([2.0, np.nan, np.inf])).tolist() == pytest.approx(
        [2.6, 0.2, 0.2])  # a non-finite residual counts as 0
    nn = NearestNeighbors(n_neighbors=11).fit(Z.astype(float) * np.sqrt(w))
    dist, idx = nn.kneighbors(Z[7:8].astype(float) * np.sqrt(w))
    want = [int(ids[i]) for i in idx[0] if ids[i] != q][:10]
    assert [i for i, _ in got] == want
    np.testing.assert_allclose([d for _, d in got], dist[0][1:11], rtol=1e-3, atol=0.01)
    with pytest.raises(ReaperError, match="no cutout with id 99999999"):
        reaper.similar(99999999)
    # Ties by the lower id, whatever the order of the rows.
    index = SimilarityIndex(np.array([5, 3, 9]), np.zeros((3, 2)))
    assert index.query(np.zeros(2), 3)[0].tolist() == [3, 5, 9]


def test_neighbours_are_found_with_each_feature_weighted(reaper):
    """The space of labels, more like this and groups is the model's standardised embedding,
    each feature times its weight: the default embedder's HOG values count half, its
    statistics and star residual fully; the model's detector has the same weights."""
    from reaper_core import store
    from reaper_core.embedders.local import HOG_WEIGHT

    model = reaper.model()
    ids, Z = reaper._space(model)
    got, X = store.load_embeddings(reaper.engine, model.embedder)
    plain = model.detector.standardised(X)
    features = reaper.features(model)
    hog = np.array([f.name.startswith("hog") for f in features])
    assert model.embedder == "local+core+stars" and hog.sum() == 36 and (ids == got).all()
    assert HOG_WEIGHT == 0.5
    np.testing.assert_allclose(Z[:, hog], 0.5 * plain[:, hog], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Z[:, ~hog], plain[:, ~hog], rtol=1e-5, atol=1e-6)
    # The detector weighs its residuals alike (the star residual is a context column, apart).
    np.testing.assert_array_equal(model.detector.feature_weights,
                                  np.where(hog[:-1], 0.5, 1.0))


def test_groups_are_stored_exported_and_remade_after_a_refit(reaper, tmp_path):
    model = reaper.model()
    groups = reaper.groups(model)
    flagged = reaper.ranking(model)
    assert set(groups) == set(flagged["cutout_id"][flagged["is_anomaly"]].tolist())
    assert max(groups.values()) >= 1 and reaper.groups(model) == groups  # stored, same
    df = reaper.export_table()
    got = df.set_index("cutout_id")["group"]
    assert all(got[c] == g for c, g in groups.items())
    assert got[~df.set_index("cutout_id")["is_anomaly"]].isna().all()
    assert df["rerank_score"].between(0, 1).all()
    new = reaper.fit()
    assert new.id != model.id and set(reaper.groups(new)) == set(
        reaper.ranking(new)["cutout_id"][reaper.ranking(new)["is_anomaly"]].tolist())
    # One group labelled in one action (command line).
    db = reaper.settings.db_url
    assert main(["groups", "--db-url", db, "--label", "interesting", "--group", "1"]) == 0
    members = [c for c, g in reaper.groups().items() if g == 1]
    labels = reaper.export_table().set_index("cutout_id")["label"]
    assert (labels[members] == "interesting").all()
    assert main(["groups", "--db-url", db, "--label", "normal", "--group", "999"]) == 2
    reaper.label(members, None)


def test_command_line_similar_and_rerank(reaper, capsys):
    db = reaper.settings.db_url
    cid = int(reaper.ranking(reaper.model())["cutout_id"][0])
    assert main(["similar", "--db-url", db, str(cid), "--top", "5"]) == 0
    out = capsys.readouterr().out
    want = [i for i, _ in reaper.similar(cid, 5)]
    assert f"most like cutout {cid}" in out
    assert [int(line.split()[0]) for line in out.splitlines()[2:7]] == want
    assert main(["rerank", "--db-url", db, "--top", "6"]) == 0
    out = capsys.readouterr().out
    assert [int(line.split()[0]) for line in out.splitlines()[2:8]] == \
        reaper.discover_queue(n=6, explore=4)
    assert main(["similar", "--db-url", db, "424242"]) == 2


def test_bad_input_is_one_sentence(tmp_path):
    with pytest.raises(LabelError, match="label must be one of"):
        LabelReranker().fit(np.zeros((1, 3)), ["wonderful"])
    empty = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'e.db'}", load_demo=0))
    with pytest.raises(ModelError, match="no model yet"):
        empty.reranked()
    with pytest.raises(ModelError, match="no model yet"):
        empty.similar(1)
    assert rank_fraction(np.array([2.0, 2.0, 1.0])).tolist() == [0.75, 0.75, 0.0]


def test_groups_are_kinds_whatever_their_strength():
    """Flagged cutouts of one kind lie along one direction from the typical cutout, faint ones
    near, bright ones far: a group holds the kind from faint to bright (grouping by distance
    split each kind by strength), and among a frame's few dozen flagged cutouts a kind of
    four is a group."""
    from sklearn.metrics import adjusted_rand_score

    from reaper_core.groups import group_anomalies, min_group_size

    rng = np.random.default_rng(7)
    d, kinds, per_kind = 96, 8, 6
    directions = rng.normal(size=(kinds, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    strength = np.geomspace(3, 40, per_kind)  # barely flagged to obvious
    Z = np.stack([s * directions[k] + rng.normal(scale=0.3, size=d)
                        for k in range(kinds) for s in strength])
    truth = np.repeat(np.arange(kinds), per_kind)
    groups = group_anomalies(Z)
    assert min_group_size(len(Z)) == 3 and min_group_size(10_000) == 200
    assert adjusted_rand_score(truth, groups) > 0.9
    for k in range(kinds):  # the faintest and the brightest of a kind together
        assert groups[k * per_kind] == groups[(k + 1) * per_kind - 1] != 0
    # Above max_clustered rows a sample is clustered and the rest join their nearest: the
    # same kinds (a sector flags tens of thousands of cutouts).
    strength = np.geomspace(3, 40, 60)
    many = np.concatenate([strength[:, None] * directions[k]
                           + rng.normal(scale=0.3, size=(60, d)) for k in range(kinds)])
    sampled = group_anomalies(many, max_clustered=100)
    assert adjusted_rand_score(np.repeat(np.arange(kinds), 60), sampled) > 0.9


def test_group_titles_tell_groups_apart(reaper):
    """A group's title in the gallery's filter is its phrase that the fewest other groups
    share: on the Hubble field and the simulated frame the groups' first phrases repeat, their
    titles less."""
    from reaper_core.explain import group_titles

    words = reaper.group_reasons()
    titles = group_titles(words)
    assert set(titles) == set(words) and all(titles[g] in words[g] for g in words if words[g])
    firsts = [w[0] for w in words.values() if w]
    assert len(set(titles.values())) > len(set(firsts))  # 7 against 6 of 9 groups
    assert group_titles({1: ["a", "b"], 2: ["a", "c"], 3: []}) == {1: "b", 2: "c", 3: ""}
    assert group_titles({1: ["a", "no b"], 2: ["a"], 3: ["no c"]}) == {1: "a", 2: "a",
                                                                       3: "no c"}
