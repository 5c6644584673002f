"""Explain scores: which features, and which part of a patch, carry an anomaly score.

Pure functions of (detector, embedding vectors, feature metadata): nothing here reads the
database; :mod:`reaper_core.service` fetches the vectors and the embedder's features.
"""

from __future__ import annotations

import numpy as np

from .detector import PCAAnomalyDetector
from .embedders.base import QUADRANTS, Feature


def _usable(det: PCAAnomalyDetector, features: list[Feature] | None) -> list[Feature] | None:
    """The features when they describe the detector's inputs, else None."""
    return features if features is not None and len(features) == det.n_features_in_ else None


def top_features(det: PCAAnomalyDetector, X: np.ndarray, features: list[Feature] | None,
                 top: int = 5) -> list[list[tuple[str, float]]]:
    """The features that carry most of each sample's reconstruction error.

    Parameters
    ----------
    det : fitted PCAAnomalyDetector
    X : ndarray, shape (n, d)
        Embeddings.
    features : list of Feature, length d, or None
        What each dimension is (``Embedder.features``); generic names when None or mismatched.
    top : int

    Returns
    -------
    list, per sample, of up to ``top`` (feature name, share of the error in [0, 1]).
    """
    R = det.residuals(np.atleast_2d(X)) ** 2
    feats = _usable(det, features)
    names = [f.name for f in feats] if feats else [f"f{i}" for i in range(R.shape[1])]
    out = []
    for row in R:
        total = row.sum() or 1.0
        idx = np.argsort(row, kind="stable")[::-1][:top]
        out.append([(names[i], float(row[i] / total)) for i in idx])
    return out


#: A feature is put into words only when the sample's value lies at least this far from the
#: typical sample's (standardised units, σ of the training set) on the side its residual says:
#: "a bright column" for a patch that has one, not for one whose column is merely fainter than
#: the rest of its light predicts.
MIN_DEVIATION = 1.0


def deviations(det: PCAAnomalyDetector, X: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Each feature's distance from the typical sample, shape (n, d): standardised units
    from the training mean for the embedding columns, the context columns' robust z — as in
    ``R``, the samples' :meth:`~reaper_core.detector.PCAAnomalyDetector.residuals` (shape
    (n, d), already computed; not changed)."""
    X = np.atleast_2d(X)
    D = np.array(R, float)
    d = det.components_.shape[1]
    D[:, :d] = det.standardised(X)[:, :d] - det.pca_mean_
    return D


def reasons(det: PCAAnomalyDetector, X: np.ndarray, features: list[Feature] | None,
            top: int = 3) -> list[list[str]]:
    """Why each sample scores high, in plain words: the phrases of the features that carry
    most of its reconstruction error (the ten largest residuals), "high" or "low" by the sign
    of the residual (the value is above or below what the model expects) — each only when the
    value itself is that far from the typical one (:data:`MIN_DEVIATION`), so that no phrase
    says what the patch does not show — repeated phrases once (naming each quadrant).
    Empty when features have none.

    Returns, per sample (rows of ``X``, shape (n, d)), up to ``top`` phrases.
    """
    feats = _usable(det, features)
    X = np.atleast_2d(X)
    R = det.residuals(X)
    return [_phrases(row, feats, top, dev)
            for row, dev in zip(R, deviations(det, X, R), strict=True)]


def group_reasons(det: PCAAnomalyDetector, X: np.ndarray, groups: np.ndarray,
                  features: list[Feature] | None, top: int = 3) -> dict[int, list[str]]:
    """What the members of each group share, in plain words: :func:`reasons` of their mean
    residual direction (each member's residuals scaled to unit length, so that a bright one
    does not speak for the rest) and their mean :func:`deviations`. ``X`` shape (n, d)
    embeddings, ``groups`` shape (n,) their groups (0: in none, left out). Returns {group: up
    to ``top`` phrases}."""
    feats = _usable(det, features)
    groups = np.asarray(groups)
    X = np.atleast_2d(X)
    R = det.residuals(X)
    D = deviations(det, X, R)
    R = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-12)
    return {int(g): _phrases(R[groups == g].mean(axis=0), feats, top,
                             D[groups == g].mean(axis=0))
            for g in np.unique(groups) if g > 0}


def group_titles(words: dict[int, list[str]]) -> dict[int, str]:
    """A short title for each group of :func:`group_reasons`: its phrase that the fewest other
    groups share (the first such, in its own order), so that groups whose first phrase is the
    same ("light at its centre that no star explains …") read apart; a phrase of what is
    missing ("no bright column") only when the group has no other; "" for none."""
    counts: dict[str, int] = {}
    for phrases in words.values():
        for p in set(phrases):
            counts[p] = counts.get(p, 0) + 1

    def title(phrases: list[str]) -> str:
        present = [p for p in phrases if not p.startswith("no ")] or phrases
        return min(present, key=lambda p: counts[p]) if present else ""

    return {g: title(phrases) for g, phrases in words.items()}


def _phrases(row: np.ndarray, feats: list[Feature] | None, top: int,
             deviation: np.ndarray) -> list[str]:
    """The phrases of the (ten) features of largest ``row²`` (residuals, shape (d,)), "high"
    or "low" by sign, up to ``top``, each once with the quadrants it is said of; a feature
    whose ``deviation`` (shape (d,), :func:`deviations`) is not at least
    :data:`MIN_DEVIATION` on the same side is left unsaid."""
    if feats is None:
        return []
    said: dict[str, list[str]] = {}  # phrase template → its quadrants, in order of importance
    for i in np.argsort(row * row, kind="stable")[::-1][:10]:  # the ten that weigh most
        if not (row[i] * deviation[i] > 0 and abs(deviation[i]) >= MIN_DEVIATION):
            continue
        f = feats[i]
        phrase = f.high if row[i] > 0 else f.low
        if not phrase or (phrase not in said and len(said) == top):
            continue
        where = said.setdefault(phrase, [])
        if f.quadrant and f.quadrant.replace("-", " ") not in where:
            where.append(f.quadrant.replace("-", " "))
    return [p.replace("{where}", _where(w)) for p, w in said.items()]


def _where(quadrants: list[str]) -> str:
    """``["upper left", "lower left"]`` → "the upper left and lower left of the patch"."""
    if len(quadrants) == 4:
        return "every quarter of the patch"
    return f"the {' and '.join(quadrants)} of the patch" if quadrants else "the patch"


def describe(shares: list[tuple[str, float]]) -> str:
    """One line naming the features and their shares, e.g. ``peak_snr 40%, p99 12%``."""
    return ", ".join(f"{n} {100 * s:.0f}%" for n, s in shares)


def error_by_quadrant(det: PCAAnomalyDetector, x: np.ndarray,
                      features: list[Feature] | None) -> np.ndarray | None:
    """Share of one sample's reconstruction error carried by each patch quadrant, shape (2, 2).

    Uses the features that describe one quadrant (``Feature.quadrant``); row 0 is the lower
    half as displayed (origin lower). None when no feature is spatial.
    """
    feats = _usable(det, features)
    if feats is None or not any(f.quadrant for f in feats):
        return None
    r2 = det.residuals(np.asarray(x, float).reshape(1, -1))[0] ** 2
    total = r2.sum() or 1.0
    grid = np.zeros((2, 2))
    for share, f in zip(r2 / total, feats, strict=True):
        if f.quadrant in QUADRANTS:
            vert, horiz = f.quadrant.split("-")
            grid[int(vert == "upper"), int(horiz == "right")] += share
    return grid if grid.any() else None


def residual_map(patch: np.ndarray) -> np.ndarray:
    """Where in the patch the odd signal sits: |patch − smooth sky model| in σ, shape (s, s).

    The sky model is the patch's robust median and noise from its outer ring; pixels that stand
    far above the local sky (a streak, a cosmic-ray hit) light up, a normal star stays compact.
    """
    from .embedders.local import sky_units

    return np.abs(sky_units(patch[None])[0]).astype(np.float32)
