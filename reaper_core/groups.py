"""Anomalies in groups: HDBSCAN (scikit-learn) on the flagged cutouts' embeddings, so that an
astronomer can name a group ("bleed trails", "satellite streaks") and label it in one action."""

from __future__ import annotations

import numpy as np


def group_anomalies(Z: np.ndarray, min_cluster_size: int = 5,
                    n_components: int = 10) -> np.ndarray:
    """Group ids for the rows of ``Z`` (shape (n, d), standardised embeddings of flagged
    cutouts): 1, 2, … numbered by group size (largest first, ties by first member), 0 for
    cutouts in no group. Deterministic. The rows are first reduced to ``n_components``
    principal components."""
    n = len(Z)
    if n < max(min_cluster_size, 2):
        return np.zeros(n, np.int64)
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    k = min(n_components, Z.shape[1], n - 1)
    Y = PCA(n_components=k, svd_solver="full").fit_transform(np.asarray(Z, float))
    raw = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(Y)
    out = np.zeros(n, np.int64)
    found = [g for g in np.unique(raw) if g >= 0]
    order = sorted(found, key=lambda g: (-int((raw == g).sum()), int(np.argmax(raw == g))))
    for number, g in enumerate(order, 1):
        out[raw == g] = number
    return out
