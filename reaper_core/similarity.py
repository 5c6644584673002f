"""More like this: the nearest cutouts in embedding space, exact, by brute force in float32.

What makes a flagged cutout odd is a few of its features (a streak: an excess along a line; a
cosmic ray: a sharp peak), the rest describe whatever else lies in its window. Measured from
such a cutout, distance weighs each feature by how much of the cutout's reconstruction error
it carries (:func:`oddity_metric`): its look-alikes are the cutouts odd the same way. On the
discovery benchmark's seven draws the share of an injected anomaly's 10 nearest cutouts that
show one of its kind rose from 0.26 to 0.31 on the Hubble Deep Field and from 0.37 to 0.41 on
the real TESS frame (the simulator: 0.17 either way).

Measured (benchmarks/discovery.py): one query over 10⁶ cutouts of 96 features takes tens of
milliseconds on 2 cores, so no approximate index is needed at that size.
"""

from __future__ import annotations

import numpy as np

#: How much a cutout's own oddity shapes the distance from it (α of :func:`oddity_metric`):
#: 0.6, 0.8 and 1 found alike; 0 is Euclidean.
ODDITY = 0.8

#: Rows of the index weighed at once by a query with feature weights.
CHUNK = 65536


def oddity_metric(r: np.ndarray, alpha: float = ODDITY) -> np.ndarray:
    """Feature weights, shape (d,), for distances from a cutout with reconstruction
    residuals ``r`` (shape (d,), a row of
    :meth:`~reaper_core.detector.PCAAnomalyDetector.residuals`): (1 − α) + α d r_f² / Σ r²,
    mean 1 over the d features (all 1 where the residuals are all 0; a non-finite one counts
    as 0)."""
    r2 = np.square(np.nan_to_num(np.asarray(r, np.float64), nan=0.0, posinf=0.0, neginf=0.0))
    total = r2.sum()
    share = r2 / total if total > 0 else np.full(len(r2), 1.0 / max(len(r2), 1))
    return (1.0 - alpha) + alpha * len(r2) * share


class SimilarityIndex:
    """Exact nearest neighbours of rows of ``Z`` (shape (n, d)), with ``ids`` (shape (n,)) to
    name them; ties by the lower id."""

    def __init__(self, ids: np.ndarray, Z: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.Z = np.ascontiguousarray(Z, dtype=np.float32)
        self._sq = np.einsum("ij,ij->i", self.Z, self.Z)

    def __len__(self) -> int:
        return len(self.ids)

    def _sq_distances(self, z: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """Squared distances Σ_f w_f (Z_if − z_f)² of every row to ``z``, shape (n,)."""
        if weights is None:
            return self._sq - 2.0 * (self.Z @ z) + float(z @ z)
        w = np.asarray(weights, np.float32)
        wz = w * z
        d2 = np.empty(len(self.Z), np.float32)
        for a in range(0, len(self.Z), CHUNK):
            part = self.Z[a:a + CHUNK]
            d2[a:a + CHUNK] = np.square(part) @ w - 2.0 * (part @ wz)
        return d2 + float(wz @ z)

    def query(self, z: np.ndarray, k: int = 20, exclude: int | None = None,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of the ``k`` nearest rows to ``z`` (shape (d,)), nearest first;
        ``exclude`` leaves one id out (the query itself); ``weights`` (shape (d,)): each
        feature's weight in the distance (:func:`oddity_metric`), else Euclidean."""
        z = np.asarray(z, np.float32)
        d2 = self._sq_distances(z, weights)
        if exclude is not None:
            d2[self.ids == exclude] = np.inf
        k = min(k, len(d2) - (exclude is not None))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        part = np.argpartition(d2, k - 1)[:k] if k < len(d2) else np.arange(len(d2))
        order = part[np.lexsort((self.ids[part], d2[part]))]
        return self.ids[order], np.sqrt(np.maximum(d2[order], 0.0))
