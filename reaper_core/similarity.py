"""More like this: the nearest cutouts in embedding space, exact, by brute force in float32.

Measured (benchmarks/discovery.py): one query over 10⁶ cutouts of 67 features takes tens of
milliseconds on 2 cores, so no approximate index is needed at that size.
"""

from __future__ import annotations

import numpy as np


class SimilarityIndex:
    """Exact Euclidean nearest neighbours of rows of ``Z`` (shape (n, d)), with ``ids``
    (shape (n,)) to name them; ties by the lower id."""

    def __init__(self, ids: np.ndarray, Z: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.Z = np.ascontiguousarray(Z, dtype=np.float32)
        self._sq = np.einsum("ij,ij->i", self.Z, self.Z)

    def __len__(self) -> int:
        return len(self.ids)

    def query(self, z: np.ndarray, k: int = 20,
              exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of the ``k`` nearest rows to ``z`` (shape (d,)), nearest first;
        ``exclude`` leaves one id out (the query itself)."""
        z = np.asarray(z, np.float32)
        d2 = self._sq - 2.0 * (self.Z @ z) + float(z @ z)
        if exclude is not None:
            d2[self.ids == exclude] = np.inf
        k = min(k, len(d2) - (exclude is not None))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        part = np.argpartition(d2, k - 1)[:k] if k < len(d2) else np.arange(len(d2))
        order = part[np.lexsort((self.ids[part], d2[part]))]
        return self.ids[order], np.sqrt(np.maximum(d2[order], 0.0))
