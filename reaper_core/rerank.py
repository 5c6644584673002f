"""Re-ranking from a person's labels, in the spirit of Astronomaly's neighbour score (Lochner &
Bassett 2021): what is like a cutout labelled "interesting" or "anomaly" rises, what is like
one labelled "normal" or "artefact" sinks, and far from every label the unsupervised score
still rules.

For each cutout, with u its unsupervised score as a rank fraction in [0, 1] and the labelled
cutouts j at standardised distances d_j with relevances y_j (:data:`RELEVANCE`):

    w_j = exp(-½ (d_j / h_j)²),  c = max_j w_j,  p = Σ w_j y_j / Σ w_j,
    score = (1 − c) u + c (v p + (1 − v) u) = u + c v (p − u),

so a cutout next to a label moves a share v (``verdict``, ½) of the way to that label's
verdict, keeping the rest of u: look-alikes of one label still rank among themselves by how
odd each is (as Astronomaly's neighbour score modulates the anomaly score rather than
replacing it), and one far from all keeps u. With v = 1 (the rule until stop 40) the verdict
replaced u next to a label: on the simulator, the re-ranked score then ranked the cutouts not
yet viewed worse than u alone (``benchmarks/discovery.py``). Each
label's reach adapts to how crowded its neighbourhood is: h_j = ``radius`` × the distance from
labelled cutout j to its ``scale_k``-th nearest cutout (:func:`local_scale`), so a label on a
common galaxy speaks for its close look-alikes only, one on a lone oddity for the odd things
around it. NumPy only, exact, in chunks (the command line needs no scikit-learn).
"""

from __future__ import annotations

import numpy as np

from .labels import RELEVANCE, check_label

#: Rows of the cutouts × labels distance matrix computed at once.
CHUNK = 8192

#: In the queue of what to judge next, a window's score is multiplied by 1 − this × the share
#: of it that a window labelled interesting (or anomaly) showed already: it most likely shows
#: the same anomaly again. Chosen by ``benchmarks/discovery.py`` (0, ¼, ½, ¾, 1; see the README).
SEEN_PENALTY = 0.5


def rank_fraction(scores: np.ndarray) -> np.ndarray:
    """Scores as fractions of the ranking in [0, 1] (1: the highest), shape (n,); ties share
    the mean of their ranks; NaN counts as the lowest."""
    s = np.nan_to_num(np.asarray(scores, float), nan=-np.inf)
    if len(s) < 2:
        return np.ones(len(s))
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inverse] / (len(s) - 1)


def _sq_dist(A: np.ndarray, B: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows of A (a, d) and B (b, d), shape (a, b);
    computed in place in the product's array (no temporaries of that size)."""
    d2 = A @ B.T
    d2 *= -2.0
    d2 += b2[None, :]
    d2 += np.einsum("ij,ij->i", A, A)[:, None]
    return np.maximum(d2, 0, out=d2)


def local_scale(L: np.ndarray, Z: np.ndarray, k: int = 10) -> np.ndarray:
    """The distance from each row of ``L`` (shape (m, d)) to its ``k``-th nearest row of ``Z``
    (shape (n, d)) other than itself, shape (m,); at least 1e-6."""
    L = np.asarray(L, np.float32)
    Z = np.asarray(Z, np.float32)
    k = min(k + 1, len(Z))  # a labelled cutout is among Z itself
    z2 = np.einsum("ij,ij->i", Z, Z)
    out = np.empty(len(L))
    for a in range(0, len(L), 256):
        d2 = _sq_dist(L[a:a + 256], Z, z2)
        out[a:a + 256] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return np.maximum(out, 1e-6)


class LabelReranker:
    """Re-rank cutouts from labels given to some of them (see the module's formula).

    Parameters
    ----------
    radius : float, default 1.0
        Kernel width as a multiple of each label's local scale.
    scale_k : int, default 10
        The local scale of a label: the distance to its ``scale_k``-th nearest cutout.
    verdict : float, default 0.5
        How far, next to a label, the score moves from the unsupervised rank towards the
        labels' verdict (v in the module's formula), in (0, 1].
    """

    def __init__(self, radius: float = 1.0, scale_k: int = 10, verdict: float = 0.5) -> None:
        if not radius > 0 or scale_k < 1 or not 0 < verdict <= 1:
            raise ValueError("radius must be > 0, scale_k ≥ 1 and verdict in (0, 1]")
        self.radius = float(radius)
        self.scale_k = int(scale_k)
        self.verdict = float(verdict)

    def fit(self, Z: np.ndarray, labels: list[str], Z_all: np.ndarray | None = None,
            scale: np.ndarray | None = None) -> LabelReranker:
        """Remember the labelled cutouts: ``Z`` shape (m, d), standardised; ``labels`` m
        labels from :data:`~reaper_core.labels.LABELS`; their local scales ``scale`` (shape
        (m,)), else computed from ``Z_all`` (every cutout, shape (n, d)), else √d for all."""
        for lab in set(labels):
            check_label(lab)
        self.Z_ = np.atleast_2d(np.asarray(Z, np.float32))
        if len(self.Z_) != len(labels):
            raise ValueError(f"{len(self.Z_)} rows of Z but {len(labels)} labels")
        self.relevance_ = np.array([RELEVANCE[lab] for lab in labels], np.float32)
        if scale is not None:
            self.scale_ = np.asarray(scale, float)
        elif Z_all is not None and len(self.Z_) and len(Z_all) > 1:
            self.scale_ = local_scale(self.Z_, Z_all, self.scale_k)
        else:
            self.scale_ = np.full(len(self.Z_), np.sqrt(max(self.Z_.shape[1], 1)))
        return self

    def closeness(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c, p) of every row of ``Z`` (shape (n, d)): closeness to the nearest label in
        [0, 1] and the labels' weighted verdict in [0, 1] (0.5 where no label reaches), each
        shape (n,)."""
        n = len(Z)
        if len(self.Z_) == 0:
            return np.zeros(n), np.full(n, 0.5)
        from .parallel import map_chunks

        Z = np.asarray(Z, np.float32)
        inv = (-0.5 / (self.radius * self.scale_) ** 2).astype(np.float32)
        l2 = np.einsum("ij,ij->i", self.Z_, self.Z_)

        def chunk(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            w = _sq_dist(part, self.Z_, l2)
            w *= inv[None, :]
            np.exp(w, out=w)
            total = w.sum(axis=1)
            verdict = np.where(total > 1e-12, (w @ self.relevance_)
                               / np.maximum(total, 1e-12), 0.5)
            return w.max(axis=1), verdict

        parts = map_chunks(chunk, Z, CHUNK)  # a thread per core: NumPy releases the GIL
        return (np.concatenate([c for c, _ in parts]).astype(float),
                np.concatenate([p for _, p in parts]).astype(float))

    def combine(self, c: np.ndarray, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Re-ranked scores in [0, 1], shape (n,), from the closeness ``c`` and verdict ``p``
        of :meth:`closeness` and the unsupervised rank fractions ``u`` (each shape (n,))."""
        return u + c * self.verdict * (p - u)

    def score(self, Z: np.ndarray, unsupervised: np.ndarray) -> np.ndarray:
        """Re-ranked scores in [0, 1], shape (n,), of cutouts ``Z`` (shape (n, d)) with
        unsupervised scores ``unsupervised`` (shape (n,), higher is odder)."""
        return self.combine(*self.closeness(Z), rank_fraction(unsupervised))
