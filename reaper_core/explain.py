"""Explain scores: which features and which part of a patch carry a cutout's anomaly score."""

from __future__ import annotations

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from . import store
from .detector import PCAAnomalyDetector
from .embedders import get_embedder


def _vectors(engine: Engine, embedder: str, ids: list[int]) -> dict[int, np.ndarray]:
    with Session(engine) as s:
        rows = s.exec(select(store.Embedding).where(
            store.Embedding.embedder == embedder,
            store.Embedding.cutout_id.in_([int(i) for i in ids]))).all()
    return {r.cutout_id: np.frombuffer(r.vector, dtype=np.float32) for r in rows}


def top_features(engine: Engine, model: tuple[store.DetectorModel, PCAAnomalyDetector],
                 ids: list[int], top: int = 5) -> dict[int, list[tuple[str, float]]]:
    """{cutout id: [(feature, share of the reconstruction error), ...]} for the given cutouts."""
    row, det = model
    vecs = _vectors(engine, row.embedder, ids)
    if not vecs:
        return {}
    keys = list(vecs)
    names = get_embedder(row.embedder).feature_names
    if len(names) != det.n_features_in_:
        names = None
    expl = det.explain(np.stack([vecs[k] for k in keys]), names, top=top)
    return dict(zip(keys, expl, strict=True))


def explain_cutouts(engine: Engine, model, ids: list[int], top: int = 3) -> dict[int, str]:
    """One line per cutout naming the features that carry most of its score."""
    return {cid: ", ".join(f"{n} {100 * s:.0f}%" for n, s in feats)
            for cid, feats in top_features(engine, model, ids, top).items()}


def error_by_quadrant(engine: Engine, model: tuple[store.DetectorModel, PCAAnomalyDetector],
                      cutout_id: int) -> np.ndarray | None:
    """Share of a cutout's reconstruction error carried by each patch quadrant, shape (2, 2).

    Uses the HOG part of the embedding (one set of orientation bins per quadrant); row 0 is the
    lower half as displayed (origin lower). None when the embedder has no spatial features.
    """
    row, det = model
    names = get_embedder(row.embedder).feature_names
    vec = _vectors(engine, row.embedder, [cutout_id]).get(cutout_id)
    if vec is None or len(names) != det.n_features_in_:
        return None
    r2 = det.residuals(vec[None])[0] ** 2
    total = r2.sum() or 1.0
    grid = np.zeros((2, 2))
    for i, name in enumerate(names):
        if name.startswith("hog ") and "-" in name:
            vert, horiz = name.split()[1].split("-")
            grid[int(vert == "upper"), int(horiz == "right")] += r2[i] / total
    return grid if grid.any() else None


def residual_map(patch: np.ndarray) -> np.ndarray:
    """Where in the patch the odd signal sits: |patch − smooth sky model| in σ, shape (s, s).

    The sky model is the patch's robust median and noise from its outer ring; pixels that stand
    far above the local sky (a streak, a cosmic-ray hit) light up, a normal star stays compact.
    """
    from .embedders.local import sky_units

    return np.abs(sky_units(patch[None])[0]).astype(np.float32)
