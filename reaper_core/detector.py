"""Detector: PCA reconstruction error, in scikit-learn style.

The embeddings are standardised, projected on the first principal components and mapped back;
the score of a sample is its mean squared reconstruction error in standardised units, each
feature's residual first divided by its RMS over the training set (``normalize_residuals``), so
that a feature the components always reconstruct well counts when it fails. Samples a person
labelled normal count more in the fit and damp the scores of samples like them. A sample is
an anomaly when its score exceeds the threshold, which is derived from the training scores in one
of three modes and can be changed at any time without re-fitting:

``sigma``       mean + k·σ of the training scores (default k = 2)
``percentile``  the given percentile of the training scores
``absolute``    the value itself

Models are saved as ``.npz`` arrays (loaded with ``allow_pickle=False``) plus JSON; never pickle.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from .errors import ModelError

THRESHOLD_MODES = ("sigma", "percentile", "absolute")
_ARRAYS = ("mean_", "scale_", "components_", "pca_mean_", "explained_variance_ratio_",
           "train_scores_", "residual_scale_", "normal_")


def threshold_from_scores(scores: np.ndarray, mode: str, value: float) -> float:
    """Absolute score threshold for ``mode`` and ``value`` given reference scores, shape (n,)."""
    scores = np.asarray(scores, dtype=float)
    if mode == "absolute":
        return float(value)
    if scores.size == 0:
        raise ModelError("no reference scores to derive a threshold from")
    if mode == "sigma":
        return float(scores.mean() + value * scores.std())
    if mode == "percentile":
        if not 0 < value < 100:
            raise ValueError("a percentile threshold must lie strictly between 0 and 100")
        return float(np.percentile(scores, value))
    raise ValueError(f"threshold mode must be one of {THRESHOLD_MODES}, not {mode!r}")


class PCAAnomalyDetector(OutlierMixin, BaseEstimator):
    """Rank samples by PCA reconstruction error.

    Parameters
    ----------
    n_components : int or float, default 0.9
        Number of components (int ≥ 1) or the fraction of variance to explain (0 < float < 1).
    threshold_mode : {"sigma", "percentile", "absolute"}, default "sigma"
    threshold_value : float, default 2.0
        k for ``sigma``, the percentile for ``percentile``, the score for ``absolute``.
    normalize_residuals : bool, default True
        Divide each feature's residual by its RMS over the training samples before scoring
        (False: the plain mean squared error of the original design).
    normal_weight : int, default 30
        How many times a sample labelled normal counts in the fit.
    normal_radius : float, default 0.4
        Reach of a normal label, in standardised units per √feature (see :meth:`score_samples`).
    random_state : int, default 0

    Attributes
    ----------
    n_components_ : int
    explained_variance_ratio_ : ndarray, shape (n_components_,)
    residual_scale_ : ndarray, shape (n_features,)
        RMS training residual of each standardised feature (ones without normalisation).
    train_scores_ : ndarray, shape (n_train,)
        Scores of the training samples, the reference for the threshold.
    n_normal_ : int
        How many training samples were labelled normal.
    normal_ : ndarray, shape (n_normal_, n_features)
        Those samples, standardised.
    threshold_ : float
        Absolute score threshold.
    """

    def __init__(self, n_components: float = 0.9, threshold_mode: str = "sigma",
                 threshold_value: float = 2.0, normalize_residuals: bool = True,
                 normal_weight: int = 30, normal_radius: float = 0.4,
                 random_state: int = 0) -> None:
        self.n_components = n_components
        self.threshold_mode = threshold_mode
        self.threshold_value = threshold_value
        self.normalize_residuals = normalize_residuals
        self.normal_weight = normal_weight
        self.normal_radius = normal_radius
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: Any = None,
            normal: np.ndarray | None = None) -> PCAAnomalyDetector:
        """Fit the scaler and PCA to embeddings ``X`` of shape (n_samples, n_features).

        ``normal``, bool of shape (n_samples,), marks samples a person labelled normal. Each
        counts ``normal_weight`` times in the fit (scikit-learn's PCA takes no weights, so the
        rows are repeated), so objects like them are reconstructed well; and the score of any
        sample that looks like one of them is damped (see :meth:`score_samples`).
        ``train_scores_`` are the scores of ``X`` itself, each sample once.
        """
        X = self._check_X(X, fitting=True)
        if len(X) < 3:
            raise ModelError(f"need at least 3 cutouts to fit a model, got {len(X)}")
        if int(self.normal_weight) != self.normal_weight or self.normal_weight < 1:
            raise ValueError("normal_weight must be a whole number ≥ 1")
        if not self.normal_radius > 0:
            raise ValueError("normal_radius must be > 0")
        normal = np.zeros(len(X), bool) if normal is None else np.asarray(normal, bool)
        if normal.shape != (len(X),):
            raise ValueError(f"normal must have shape ({len(X)},), not {normal.shape}")
        Xw = X  # each row as many times as it counts
        if normal.any():
            Xw = np.repeat(X, np.where(normal, int(self.normal_weight), 1), axis=0)
        n, d = Xw.shape
        scaler = StandardScaler().fit(Xw)
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        Z = (Xw - self.mean_) / self.scale_
        nc = self.n_components
        limit = min(n - 1, d)
        if isinstance(nc, float) and 0 < nc < 1:
            pca = PCA(n_components=nc, svd_solver="full", random_state=self.random_state)
        else:
            k = int(nc)
            if k < 1:
                raise ValueError("n_components must be ≥ 1 or a fraction in (0, 1)")
            solver = "randomized" if k < 0.8 * limit and n > 500 else "full"
            pca = PCA(n_components=min(k, limit), svd_solver=solver,
                      random_state=self.random_state)
        pca.fit(Z)
        self.components_ = pca.components_.astype(np.float64)
        self.pca_mean_ = pca.mean_.astype(np.float64)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_.astype(np.float64)
        self.n_components_ = int(pca.n_components_)
        self.n_features_in_ = d
        self.residual_scale_ = np.ones(d)
        if self.normalize_residuals:
            rms = np.sqrt(np.mean(self.residuals(Xw) ** 2, axis=0))
            # A feature reconstructed exactly in training keeps unit scale (no division by ~0).
            self.residual_scale_ = np.where(rms > 1e-6, rms, 1.0)
        self.n_normal_ = int(normal.sum())
        self.normal_ = (X[normal] - self.mean_) / self.scale_
        self.train_scores_ = self.score_samples(X)
        self.set_threshold(self.threshold_mode, self.threshold_value)
        return self

    def set_threshold(self, mode: str | None = None, value: float | None = None,
                      reference: np.ndarray | None = None) -> float:
        """Change the threshold without re-fitting; returns the new absolute threshold.

        ``reference`` scores (e.g. every stored cutout) replace the training scores as the basis
        of ``sigma`` and ``percentile`` thresholds when given.
        """
        mode = mode or self.threshold_mode
        value = self.threshold_value if value is None else float(value)
        ref = self.train_scores_ if reference is None else reference
        self.threshold_ = threshold_from_scores(ref, mode, value)
        self.threshold_mode, self.threshold_value = mode, value
        return self.threshold_

    # -- scoring -----------------------------------------------------------------------------
    def _check_X(self, X: np.ndarray, fitting: bool = False) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of embeddings, got shape {X.shape}")
        if not fitting:
            check_is_fitted(self, "components_")
            if X.shape[1] != self.n_features_in_:
                raise ModelError(
                    f"embeddings have {X.shape[1]} features but the model expects "
                    f"{self.n_features_in_}; re-fit the model for this embedder"
                )
        return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (self._check_X(X) - self.mean_) / self.scale_

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Principal-component coordinates, shape (n_samples, n_components_)."""
        return (self._standardise(X) - self.pca_mean_) @ self.components_.T

    def residuals(self, X: np.ndarray) -> np.ndarray:
        """Reconstruction residual per feature, shape (n, n_features), in standardised units
        divided by ``residual_scale_``."""
        return self._residuals(self._standardise(X))

    def _residuals(self, Z: np.ndarray) -> np.ndarray:
        T = (Z - self.pca_mean_) @ self.components_.T
        return (Z - (T @ self.components_ + self.pca_mean_)) / self.residual_scale_

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Mean squared (normalised) reconstruction error per sample, shape (n_samples,);
        higher = odder.

        With samples labelled normal in the fit, each score is multiplied by
        1 − exp(−½ (r / h)²), r the standardised distance to the nearest of them and
        h = ``normal_radius`` · √n_features: a sample labelled normal scores 0, one like it
        little, the rest as before.
        """
        Z = self._standardise(X)
        R = self._residuals(Z)
        score = np.mean(R * R, axis=1)
        if len(self.normal_):
            _, r = pairwise_distances_argmin_min(Z, self.normal_)
            h = self.normal_radius * np.sqrt(self.n_features_in_)
            score = score * -np.expm1(-0.5 * (r / h) ** 2)
        return score

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Score minus threshold, shape (n_samples,): positive for anomalies."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """-1 for anomalies and 1 for inliers (scikit-learn's outlier convention)."""
        return np.where(self.score_samples(X) > self.threshold_, -1, 1)

    def explain(self, X: np.ndarray, feature_names: list[str] | None = None,
                top: int = 5) -> list[list[tuple[str, float]]]:
        """The features that carry most of each sample's reconstruction error.

        Returns, per sample, up to ``top`` pairs (feature name, share of the error in [0, 1]).
        """
        R = self.residuals(X) ** 2
        names = feature_names or [f"f{i}" for i in range(R.shape[1])]
        out = []
        for row in R:
            total = row.sum() or 1.0
            idx = np.argsort(row)[::-1][:top]
            out.append([(names[i], float(row[i] / total)) for i in idx])
        return out

    # -- persistence -------------------------------------------------------------------------
    def to_bytes(self) -> tuple[bytes, str]:
        """Serialise to (npz bytes, JSON text) — plain arrays and plain values only."""
        check_is_fitted(self, "components_")
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: getattr(self, k) for k in _ARRAYS})
        meta = {
            "format": "anomaly-reaper-pca/1",
            "n_components": self.n_components,
            "n_components_": self.n_components_,
            "n_features_in_": self.n_features_in_,
            "threshold_mode": self.threshold_mode,
            "threshold_value": self.threshold_value,
            "threshold_": self.threshold_,
            "normalize_residuals": bool(self.normalize_residuals),
            "random_state": self.random_state,
            "normal_weight": int(self.normal_weight),
            "normal_radius": float(self.normal_radius),
            "n_normal_": int(self.n_normal_),
        }
        return buf.getvalue(), json.dumps(meta)

    @classmethod
    def from_bytes(cls, arrays: bytes, meta_json: str) -> PCAAnomalyDetector:
        """Rebuild a model from :meth:`to_bytes` output. Never unpickles."""
        try:
            meta = json.loads(meta_json)
            if meta.get("format") != "anomaly-reaper-pca/1":
                raise ModelError("not an anomaly-reaper PCA model")
            with np.load(io.BytesIO(arrays), allow_pickle=False) as npz:
                # Models saved before residual normalisation existed score with unit scales.
                data = {k: np.asarray(npz[k], dtype=np.float64) for k in _ARRAYS if k in npz}
            data.setdefault("residual_scale_", np.ones(data["mean_"].shape))
            # ...and those saved before normal labels counted know of none.
            data.setdefault("normal_", np.zeros((0, data["mean_"].shape[0])))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"saved model cannot be read ({exc})") from None
        model = cls(n_components=meta["n_components"], threshold_mode=meta["threshold_mode"],
                    threshold_value=meta["threshold_value"],
                    normalize_residuals=meta.get("normalize_residuals", False),
                    normal_weight=meta.get("normal_weight", 30),
                    normal_radius=meta.get("normal_radius", 0.4),
                    random_state=meta["random_state"])
        for k, v in data.items():
            setattr(model, k, v)
        model.n_components_ = int(meta["n_components_"])
        model.n_features_in_ = int(meta["n_features_in_"])
        model.threshold_ = float(meta["threshold_"])
        model.n_normal_ = int(meta.get("n_normal_", 0))
        return model

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` and ``<path>.json``; returns the JSON path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays, meta = self.to_bytes()
        path.with_suffix(".npz").write_bytes(arrays)
        path.with_suffix(".json").write_text(meta)
        return path.with_suffix(".json")

    @classmethod
    def load(cls, path: str | Path) -> PCAAnomalyDetector:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        return cls.from_bytes(path.with_suffix(".npz").read_bytes(),
                              path.with_suffix(".json").read_text())
