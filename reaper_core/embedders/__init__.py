"""Embedders: turn patches of shape (n, s, s) into vectors of shape (n, d).

Every backend implements :class:`~reaper_core.embedders.base.Embedder` and is chosen by name with
:func:`get_embedder`. Backends are imported only when built, so naming one costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .base import FEATURE_KINDS, QUADRANTS, Embedder, EmbedProgressFn, Feature


def _local(settings: Any = None, **kw: Any) -> Embedder:
    from .local import LocalEmbedder

    return LocalEmbedder()


def _local_core(settings: Any = None, **kw: Any) -> Embedder:
    from .local import LocalEmbedder

    return LocalEmbedder(core=True)


def _stats(settings: Any = None, **kw: Any) -> Embedder:
    from .local import StatsEmbedder

    return StatsEmbedder()


def _hog(settings: Any = None, **kw: Any) -> Embedder:
    from .local import HOGEmbedder

    return HOGEmbedder()


def _hog_fine(settings: Any = None, **kw: Any) -> Embedder:
    from .local import HOGEmbedder

    return HOGEmbedder(cells=4)


def _local_core_stars(settings: Any = None, **kw: Any) -> Embedder:
    from .local import LocalEmbedder
    from .stars import StarResidualEmbedder

    return StarResidualEmbedder(LocalEmbedder(core=True))


def _local_stars(settings: Any = None, **kw: Any) -> Embedder:
    from .local import LocalEmbedder
    from .stars import StarResidualEmbedder

    return StarResidualEmbedder(LocalEmbedder())


def _vertex_stars(settings: Any = None, **kw: Any) -> Embedder:
    from .stars import StarResidualEmbedder

    return StarResidualEmbedder(_vertex(settings, **kw))


def _vertex(settings: Any = None, **kw: Any) -> Embedder:
    from .vertex import VertexEmbedder

    return VertexEmbedder.from_settings(settings, **kw)


#: Backends by name: the registry.
EMBEDDERS: dict[str, Callable[..., Embedder]] = {
    "local+core+stars": _local_core_stars,
    "local+core": _local_core,
    "local+stars": _local_stars,
    "local": _local,
    "stats": _stats,
    "hog": _hog,
    "hog-fine": _hog_fine,
    "vertex": _vertex,
    "vertex+stars": _vertex_stars,
}


def check_embedder_name(name: str) -> None:
    """Raise :class:`ConfigError` when no backend is called ``name``."""
    if name not in EMBEDDERS:
        raise ConfigError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")


def get_embedder(name: str, settings: Any = None, **kwargs: Any) -> Embedder:
    """Build the embedder called ``name`` (``local+core+stars``, the default, ``local+core``,
    ``local+stars``, ``local``, ``stats``, ``hog``, ``hog-fine``, ``vertex``, ``vertex+stars``;
    ``+core``: with the statistics of the patch's central half, see
    :func:`.local.core_stats_features`; ``+stars``: with the star-subtracted residual at the
    centre, see :mod:`.stars`).

    ``settings`` (a :class:`~reaper_core.config.Settings`) configures backends that need it.
    """
    check_embedder_name(name)
    return EMBEDDERS[name](settings=settings, **kwargs)


__all__ = ["EMBEDDERS", "FEATURE_KINDS", "QUADRANTS", "EmbedProgressFn", "Embedder", "Feature",
           "check_embedder_name", "get_embedder"]
