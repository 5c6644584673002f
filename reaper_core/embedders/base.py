"""The embedder interface and the structured description of embedding features."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: progress(done, total): patches embedded so far.
EmbedProgressFn = Callable[[int, int], None]

#: Kinds of feature, for explanations.
FEATURE_KINDS = ("photometry", "morphology", "shape", "learned")
#: Patch quadrants as displayed (origin lower: array row 0 is drawn at the bottom).
QUADRANTS = ("lower-left", "lower-right", "upper-left", "upper-right")


@dataclass(frozen=True)
class Feature:
    """What one embedding dimension measures.

    Attributes
    ----------
    name : str
        Short identifier, e.g. ``peak_snr`` or ``hog upper-left 60°``.
    kind : str
        One of :data:`FEATURE_KINDS`.
    quadrant : str or None
        The patch quadrant it describes (one of :data:`QUADRANTS`), None for the whole patch.
    orientation_deg : float or None
        Gradient orientation it counts, degrees, for shape features.
    high, low : str
        In plain words, what a patch shows when this value is higher (lower) than the model
        expects, e.g. "a bright column (a bleed trail or a streak)"; empty when unknown.
        ``{where}`` stands for where the feature looks ("the upper left of the patch");
        phrases that differ only there are said once, naming every quadrant.
    weight : float
        How much it counts: a factor on its residual in the detector's reconstruction error
        (``PCAAnomalyDetector(feature_weights=...)``) and on its standardised value where
        neighbours are found (the labels' re-ranking, more like this, groups).
    """

    name: str
    kind: str
    quadrant: str | None = None
    orientation_deg: float | None = None
    high: str = ""
    low: str = ""
    weight: float = 1.0


class Embedder(ABC):
    """Turns patches into fixed-length vectors.

    Subclasses set ``name`` (stored with every embedding, so models and embeddings from different
    backends never mix) and implement :attr:`dim` and :meth:`embed`.
    """

    name: str = ""
    #: Each patch's vector depends on that patch alone and the embedder may be called from
    #: several threads at once: ingest then cuts, packs and embeds a few hundred patches at a
    #: time instead of holding every patch of a frame (a network backend sets False).
    per_patch: bool = True

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one embedding."""

    @property
    def features(self) -> list[Feature]:
        """A :class:`Feature` per embedding dimension (used to explain scores)."""
        return [Feature(f"{self.name}_{i}", "learned") for i in range(self.dim)]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @abstractmethod
    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None) -> np.ndarray:
        """Embed patches.

        Parameters
        ----------
        patches : ndarray, shape (n, s, s)
            Raw pixel values; NaN marks pixels outside the frame.
        progress : callable, optional
            Called as ``progress(done, total)``.

        Returns
        -------
        ndarray, shape (n, dim), float32
        """
