"""An embedder with the star-subtracted residual at the cutout's centre as a context score.

:class:`StarResidualEmbedder` wraps any backend: its vector is the backend's embedding followed
by one context column, what the image's stars, fitted with its own PSF, leave unexplained at the
cutout's centre (:func:`reaper_core.starfit.cutout_residuals`). The detector does not model that
column with PCA but adds it as a robust z to the log score (``PCAAnomalyDetector(n_context=1)``).
At ingest the column comes from the whole image; patches embedded without their image (stored
ones, for another embedder) measure it from the patches alone
(:func:`reaper_core.starfit.patch_residuals`).
"""

from __future__ import annotations

import numpy as np

from .base import Embedder, EmbedProgressFn, Feature

#: The context column every star-residual embedding ends with.
STAR_RESIDUAL = Feature(
    "star_residual", "morphology",
    high="light at its centre that no star explains (sharper, broader or other than the "
         "frame's PSF: a cosmic ray, a blend, a trail)",
    low="a centre the frame's stars explain exactly")


class StarResidualEmbedder(Embedder):
    """``base``'s embedding plus the star-subtracted residual at the centre (one column)."""

    #: Trailing columns that are context scores, for the detector.
    n_context = 1
    #: :func:`reaper_core.ingest.prepare` passes the residual measured on the whole image
    #: (:meth:`with_context`).
    uses_image = True
    #: Without the image, the residual comes from every patch at once.
    per_patch = False

    def __init__(self, base: Embedder) -> None:
        self.base = base
        self.name = f"{base.name}+stars"

    @property
    def dim(self) -> int:
        return self.base.dim + 1

    @property
    def features(self) -> list[Feature]:
        return [*self.base.features, STAR_RESIDUAL]

    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None,
              context: np.ndarray | None = None) -> np.ndarray:
        """Embed patches (n, s, s); ``context``, shape (n, 1), is the residual measured on
        the image (from the patches alone when None). Returns shape (n, dim), float32."""
        from ..starfit import patch_residuals

        X = self.base.embed(patches, progress)
        return self.with_context(X, patch_residuals(patches) if context is None else context)

    def with_context(self, X: np.ndarray, context: np.ndarray) -> np.ndarray:
        """The base's embeddings ``X`` (n, dim − 1) with the context column (n, 1) after them;
        shape (n, dim), float32."""
        c = np.asarray(context, float).reshape(len(X), 1)
        return np.hstack([X, c]).astype(np.float32)
