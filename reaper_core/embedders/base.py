"""The embedder interface and the registry of backends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError

ProgressFn = Callable[[int, int], None]


class Embedder(ABC):
    """Turns patches into fixed-length vectors.

    Subclasses set ``name`` (stored with every embedding, so models and embeddings from different
    backends never mix) and implement :meth:`embed`.
    """

    name: str = ""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one embedding."""

    @property
    def feature_names(self) -> list[str]:
        """A name per embedding dimension (used to explain scores)."""
        return [f"{self.name}_{i}" for i in range(self.dim)]

    @abstractmethod
    def embed(self, patches: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
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


def _local(**kw: Any) -> Embedder:
    from .local import LocalEmbedder

    return LocalEmbedder()


def _stats(**kw: Any) -> Embedder:
    from .local import StatsEmbedder

    return StatsEmbedder()


def _hog(**kw: Any) -> Embedder:
    from .local import HOGEmbedder

    return HOGEmbedder()


def _hog_fine(**kw: Any) -> Embedder:
    from .local import HOGEmbedder

    return HOGEmbedder(cells=4)


def _vertex(settings: Any = None, **kw: Any) -> Embedder:
    from .vertex import VertexEmbedder

    return VertexEmbedder.from_settings(settings, **kw)


#: Backends by name.
EMBEDDERS: dict[str, Callable[..., Embedder]] = {
    "local": _local,
    "stats": _stats,
    "hog": _hog,
    "hog-fine": _hog_fine,
    "vertex": _vertex,
}


def get_embedder(name: str, settings: Any = None, **kwargs: Any) -> Embedder:
    """Build the embedder called ``name`` (``local``, ``stats``, ``hog``, ``hog-fine``, ``vertex``).

    ``settings`` (a :class:`~reaper_core.config.Settings`) configures backends that need it.
    """
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}"
        ) from None
    return factory(settings=settings, **kwargs)
