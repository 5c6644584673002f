"""Anomalies in groups: HDBSCAN (scikit-learn) on the flagged cutouts' embeddings, so that an
astronomer can name a group ("bleed trails", "satellite streaks") and label it in one action.

A flagged cutout lies far from the typical one in the standardised embedding; *which way* it
lies says what kind of oddity it is, *how far* says how strong. The same kind comes faint and
bright (a streak barely above the sky and a satellite glint, a weak and a strong bleed column),
so the rows are grouped by their direction alone: each scaled to unit length, then reduced to
``n_components`` principal components (for speed: HDBSCAN in all 96 dimensions takes 20 s at
10,000 flagged cutouts). Chosen by ``benchmarks/discovery.py`` on cached embeddings of seven
draws of each data set; see the README.
"""

from __future__ import annotations

import numpy as np

#: HDBSCAN's smallest group: one per this many flagged cutouts, at least :data:`MIN_GROUP`.
CUTOUTS_PER_MIN_GROUP = 50
#: The smallest group whatever the number of flagged cutouts.
MIN_GROUP = 3
#: HDBSCAN's ``min_samples`` (its density: the distance to the k-th neighbour) at most,
#: instead of its default, the smallest group (a kNN search of hundreds at sector scale).
MIN_SAMPLES = 5
#: At most this many flagged cutouts are clustered (a seeded sample); each of the rest joins
#: the group of its nearest clustered one. HDBSCAN in 24 dimensions takes 1.4 s for 10,000
#: rows and 23 s for 35,000 (a sector's flagged cutouts; 10 million cutouts flag 350,000).
MAX_CLUSTERED = 10_000


def min_group_size(n: int) -> int:
    """HDBSCAN's ``min_cluster_size`` for ``n`` flagged cutouts: a group of 3 among the tens
    that one frame flags, of more among the thousands of a sector (n / 50)."""
    return max(MIN_GROUP, round(n / CUTOUTS_PER_MIN_GROUP))


def group_anomalies(Z: np.ndarray, min_cluster_size: int | None = None,
                    n_components: int = 24, max_clustered: int = MAX_CLUSTERED) -> np.ndarray:
    """Group ids for the rows of ``Z`` (shape (n, d), standardised embeddings of flagged
    cutouts): 1, 2, … numbered by group size (largest first, ties by first member), 0 for
    cutouts in no group. Deterministic. Rows are grouped by direction (each scaled to unit
    length), in their first ``n_components`` principal components; ``min_cluster_size``:
    :func:`min_group_size` of the rows clustered unless given. Above ``max_clustered`` rows, a
    seeded sample of that many is clustered and every other row takes the group of its
    nearest sampled row."""
    n = len(Z)
    m = min(n, max(int(max_clustered), 2))
    size = min_group_size(m) if min_cluster_size is None else int(min_cluster_size)
    if n < max(size, 2):
        return np.zeros(n, np.int64)
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    U = np.asarray(Z, float)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    pick = (np.arange(n) if m == n
            else np.sort(np.random.default_rng(0).choice(n, m, replace=False)))
    k = min(n_components, U.shape[1], m - 1)
    pca = PCA(n_components=k, svd_solver="full").fit(U[pick])
    Y = pca.transform(U[pick])
    raw = HDBSCAN(min_cluster_size=size, min_samples=min(size, MIN_SAMPLES),
                  copy=True).fit_predict(Y)
    if m < n:
        from sklearn.neighbors import NearestNeighbors

        nearest = NearestNeighbors(n_neighbors=1).fit(Y).kneighbors(
            pca.transform(U), return_distance=False)[:, 0]
        sampled, raw = raw, raw[nearest]
        raw[pick] = sampled  # a sampled row keeps its own group (ties among equal rows)
    out = np.zeros(n, np.int64)
    found = [g for g in np.unique(raw) if g >= 0]
    order = sorted(found, key=lambda g: (-int((raw == g).sum()), int(np.argmax(raw == g))))
    for number, g in enumerate(order, 1):
        out[raw == g] = number
    return out
