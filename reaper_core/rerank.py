"""Re-ranking from a person's labels, in the spirit of Astronomaly's neighbour score (Lochner &
Bassett 2021): what is like a cutout labelled "interesting" or "anomaly" rises, what is like
one labelled "normal" or "artefact" sinks, and far from every label the unsupervised score
still rules.

For each cutout, with u its unsupervised score as a rank fraction in [0, 1] and the k nearest
labelled cutouts at standardised distances d_j with relevances y_j (:data:`RELEVANCE`):

    w_j = exp(-½ (d_j / h)²),  c = max_j w_j,  p = Σ w_j y_j / Σ w_j,
    score = (1 − c) u + c p,

so a cutout next to a label takes that label's verdict, and one far from all keeps u. Each
label's reach adapts to how crowded its neighbourhood is: h_j = ``radius`` × the distance from
labelled cutout j to its ``scale_k``-th nearest cutout, so a label on a common galaxy speaks for
its close look-alikes only, one on a lone oddity for the odd things around it.
"""

from __future__ import annotations

import numpy as np

from .labels import RELEVANCE, check_label


def rank_fraction(scores: np.ndarray) -> np.ndarray:
    """Scores as fractions of the ranking in [0, 1] (1: the highest), shape (n,); ties share
    the mean of their ranks; NaN counts as the lowest."""
    s = np.nan_to_num(np.asarray(scores, float), nan=-np.inf)
    if len(s) < 2:
        return np.ones(len(s))
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inverse] / (len(s) - 1)


class LabelReranker:
    """Re-rank cutouts from labels given to some of them (see the module's formula).

    Parameters
    ----------
    radius : float, default 1.0
        Kernel width as a multiple of each label's local scale.
    n_neighbors : int, default 10
        Labelled neighbours that vote.
    scale_k : int, default 10
        The local scale of a label: the distance to its ``scale_k``-th nearest cutout.
    """

    def __init__(self, radius: float = 1.0, n_neighbors: int = 10, scale_k: int = 10) -> None:
        if not radius > 0 or n_neighbors < 1 or scale_k < 1:
            raise ValueError("radius must be > 0, n_neighbors and scale_k ≥ 1")
        self.radius = float(radius)
        self.n_neighbors = int(n_neighbors)
        self.scale_k = int(scale_k)

    def fit(self, Z: np.ndarray, labels: list[str],
            Z_all: np.ndarray | None = None) -> LabelReranker:
        """Remember the labelled cutouts: ``Z`` shape (m, d), standardised; ``labels`` m
        labels from :data:`~reaper_core.labels.LABELS`; ``Z_all`` (shape (n, d)) every cutout,
        for each label's local scale (without it, one scale: √d)."""
        for lab in set(labels):
            check_label(lab)
        self.Z_ = np.atleast_2d(np.asarray(Z, np.float32))
        if len(self.Z_) != len(labels):
            raise ValueError(f"{len(self.Z_)} rows of Z but {len(labels)} labels")
        self.relevance_ = np.array([RELEVANCE[lab] for lab in labels], float)
        d = self.Z_.shape[1] if self.Z_.ndim == 2 else 0
        if Z_all is not None and len(self.Z_) and len(Z_all) > 1:
            k = min(self.scale_k + 1, len(Z_all))  # the label itself is among them
            dist, _ = _nearest(self.Z_, np.asarray(Z_all, np.float32), k)
            self.scale_ = np.maximum(dist[:, -1], 1e-6)
        else:
            self.scale_ = np.full(len(self.Z_), np.sqrt(max(d, 1)))
        return self

    def closeness(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c, p) of every row of ``Z`` (shape (n, d)): closeness to the nearest label in
        [0, 1] and the labels' weighted verdict in [0, 1], each shape (n,)."""
        n = len(Z)
        if len(self.Z_) == 0:
            return np.zeros(n), np.full(n, 0.5)
        dist, idx = _nearest(np.asarray(Z, np.float32), self.Z_,
                             min(self.n_neighbors, len(self.Z_)))
        h = self.radius * self.scale_[idx]
        w = np.exp(-0.5 * (dist / h) ** 2)
        total = w.sum(axis=1)
        p = np.where(total > 1e-12, (w * self.relevance_[idx]).sum(axis=1)
                     / np.maximum(total, 1e-12), 0.5)
        return w.max(axis=1), p

    def score(self, Z: np.ndarray, unsupervised: np.ndarray) -> np.ndarray:
        """Re-ranked scores in [0, 1], shape (n,), of cutouts ``Z`` (shape (n, d)) with
        unsupervised scores ``unsupervised`` (shape (n,), higher is odder)."""
        c, p = self.closeness(Z)
        return (1.0 - c) * rank_fraction(unsupervised) + c * p


def _nearest(Z: np.ndarray, L: np.ndarray, k: int,
             chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each shape (n, k), of the ``k`` rows of ``L`` nearest to each row
    of ``Z``, exact, in chunks (NumPy only, so the command line needs no scikit-learn)."""
    sq = np.einsum("ij,ij->i", L, L)
    dist = np.empty((len(Z), k))
    idx = np.empty((len(Z), k), np.int64)
    for a in range(0, len(Z), chunk):
        z = Z[a:a + chunk]
        d2 = np.maximum(sq[None, :] - 2.0 * (z @ L.T) + np.einsum("ij,ij->i", z, z)[:, None], 0)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < L.shape[0] else \
            np.broadcast_to(np.arange(L.shape[0]), (len(z), L.shape[0]))
        d = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(d, axis=1, kind="stable")
        idx[a:a + chunk] = np.take_along_axis(part, order, axis=1)
        dist[a:a + chunk] = np.sqrt(np.take_along_axis(d, order, axis=1))
    return dist, idx
