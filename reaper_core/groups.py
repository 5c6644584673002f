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


def min_group_size(n: int) -> int:
    """HDBSCAN's ``min_cluster_size`` for ``n`` flagged cutouts: a group of 3 among the tens
    that one frame flags, of more among the thousands of a sector (n / 50)."""
    return max(MIN_GROUP, round(n / CUTOUTS_PER_MIN_GROUP))


def group_anomalies(Z: np.ndarray, min_cluster_size: int | None = None,
                    n_components: int = 24) -> np.ndarray:
    """Group ids for the rows of ``Z`` (shape (n, d), standardised embeddings of flagged
    cutouts): 1, 2, … numbered by group size (largest first, ties by first member), 0 for
    cutouts in no group. Deterministic. Rows are grouped by direction (each scaled to unit
    length), in their first ``n_components`` principal components; ``min_cluster_size``:
    :func:`min_group_size` of n unless given."""
    n = len(Z)
    size = min_group_size(n) if min_cluster_size is None else int(min_cluster_size)
    if n < max(size, 2):
        return np.zeros(n, np.int64)
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    U = np.asarray(Z, float)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    k = min(n_components, U.shape[1], n - 1)
    Y = PCA(n_components=k, svd_solver="full").fit_transform(U)
    raw = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(Y)
    out = np.zeros(n, np.int64)
    found = [g for g in np.unique(raw) if g >= 0]
    order = sorted(found, key=lambda g: (-int((raw == g).sum()), int(np.argmax(raw == g))))
    for number, g in enumerate(order, 1):
        out[raw == g] = number
    return out
