"""Embedders: turn patches of shape (n, s, s) into vectors of shape (n, d).

Every backend implements :class:`~reaper_core.embedders.base.Embedder` and is chosen by name with
:func:`get_embedder`.
"""

from .base import EMBEDDERS, Embedder, get_embedder
from .local import HOGEmbedder, LocalEmbedder, StatsEmbedder

__all__ = ["EMBEDDERS", "Embedder", "HOGEmbedder", "LocalEmbedder", "StatsEmbedder",
           "get_embedder"]
