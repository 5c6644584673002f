"""Principal-component coordinates of embeddings under a stored model, with NumPy alone.

:class:`~reaper_core.detector.PCAAnomalyDetector` is a scikit-learn estimator, and importing
scikit-learn costs 1–3.5 s on a 2-core machine. Drawing the PCA scatter (the Explore page, the
report) needs only four of the model's arrays and one line of arithmetic: :class:`Projection`
reads those arrays from the model's stored ``.npz`` (``allow_pickle=False``, never pickle) and
:func:`project` is the arithmetic the detector itself uses.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .errors import ModelError

#: The stored arrays a projection needs.
ARRAYS = ("mean_", "scale_", "pca_mean_", "components_")


def project(Z: np.ndarray, pca_mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Principal-component coordinates of standardised embeddings ``Z`` (n, d), given the
    PCA's mean (d,) and components (k, d). Returns shape (n, k)."""
    return (Z - pca_mean) @ components.T


@dataclass(frozen=True)
class Projection:
    """A stored model's standardisation and principal components.

    Attributes
    ----------
    mean, scale : ndarray, shape (n_features,)
        The standardisation of every column (embedding and context columns).
    pca_mean : ndarray, shape (d,)
        Mean of the standardised embedding columns.
    components : ndarray, shape (k, d)
        The principal components (d embedding columns; context columns are not projected).
    """

    mean: np.ndarray
    scale: np.ndarray
    pca_mean: np.ndarray
    components: np.ndarray

    @classmethod
    def from_arrays(cls, arrays: bytes) -> Projection:
        """Read from a model's stored ``.npz`` bytes (see
        :meth:`~reaper_core.detector.PCAAnomalyDetector.to_bytes`)."""
        try:
            with np.load(io.BytesIO(arrays), allow_pickle=False) as npz:
                got = {k: np.asarray(npz[k], dtype=np.float64) for k in ARRAYS}
        except Exception as exc:
            raise ModelError(f"saved model cannot be read ({type(exc).__name__}: {exc})") from None
        return cls(got["mean_"], got["scale_"], got["pca_mean_"], got["components_"])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Principal-component coordinates of embeddings ``X`` (n, n_features), shape
        (n, n_components) — the same as the detector's ``transform``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise ModelError(f"embeddings of {X.shape[-1]} features for a model of "
                             f"{len(self.mean)}")
        d = self.components.shape[1]
        return project(((X - self.mean) / self.scale)[:, :d], self.pca_mean, self.components)
