"""Anomaly Reaper: find what is strange in TESS full-frame images.

The library behind the dashboard and the command line; it imports no Streamlit or Plotly.
What a notebook needs is importable from here (each name is loaded on first use, so
``import reaper_core`` is instant)::

    from reaper_core import read_fits, science_sky, find_sources, extract_cutouts, get_embedder
    from reaper_core import PCAAnomalyDetector, Reaper

    image = read_fits("tess2018206192942-s0001-1-4-0120-s_ffic.fits")
    sky, rms = science_sky(image)                      # smooth background, its noise (e-/s)
    src = find_sources(image, sky=(sky, rms))
    patches = extract_cutouts(image.data, src.x, src.y, 32, image.valid, sky)   # (n, 32, 32)
    X = get_embedder("local").embed(patches)                                # (n, 65)
    det = PCAAnomalyDetector(n_components=5).fit(X)
    odd = det.anomaly_score(X)                                              # higher is odder

    reaper = Reaper()                      # the service: database, ingest, model, labels, export
    reaper.ingest(["sector1/"])
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

#: Public name → the module that owns it.
_EXPORTS = {
    # reading and cutting
    "FitsImage": "fits_reader", "read_fits": "fits_reader",
    "Sources": "sources", "find_sources": "sources", "SOURCE_METHODS": "sources",
    "science_sky": "sources",
    "extract_cutouts": "cutouts", "to_png": "cutouts", "STRETCHES": "cutouts",
    # embedding and detecting
    "Embedder": "embedders", "Feature": "embedders", "get_embedder": "embedders",
    "EMBEDDERS": "embedders",
    "PCAAnomalyDetector": "detector",
    "THRESHOLD_MODES": "thresholds", "threshold_from_scores": "thresholds",
    "top_features": "explain", "error_by_quadrant": "explain", "residual_map": "explain",
    # the service layer and what it returns
    "Reaper": "service", "CurrentModel": "models",
    "IngestReport": "ingest", "FileResult": "ingest", "prepare": "ingest",
    "export_table": "export", "write_export": "export", "EXPORT_COLUMNS": "export",
    "Settings": "config", "load_settings": "config",
    "LABELS": "labels",
    "ReaperError": "errors", "FITSReadError": "errors", "ConfigError": "errors",
    "ModelError": "errors", "EmbeddingError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
