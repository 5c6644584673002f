"""The model lifecycle: the current model, fitting, scoring and its one stored threshold."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import store
from .config import Settings
from .embedders import Embedder, get_embedder
from .errors import ModelError
from .progress import ProgressFn, noop
from .thresholds import flags

if TYPE_CHECKING:
    from .detector import PCAAnomalyDetector
    from .projection import Projection


class CurrentModel:
    """A stored model: its database row and its estimator, which uses the row's threshold.

    The row holds the only stored copy of the threshold (mode, value and the absolute score);
    the estimator's ``threshold_`` is set from it when the model is loaded. The estimator is
    decoded (and scikit-learn imported) only when first used: flags, counts and summaries need
    the row alone.

    Parameters
    ----------
    row : DetectorModel
    detector : PCAAnomalyDetector, optional
        The estimator, already with the row's threshold.
    decode : callable, optional
        Gives the estimator on first use (default: decoded from the row).
    arrays : callable, optional
        Gives the row's stored arrays when the row was read without them (see
        :func:`reaper_core.store.current_model`); default: the row's own.
    """

    def __init__(self, row: store.DetectorModel, detector: PCAAnomalyDetector | None = None,
                 *, decode: Callable[[], PCAAnomalyDetector] | None = None,
                 arrays: Callable[[], bytes] | None = None) -> None:
        self.row = row
        self._detector = detector
        self._arrays = arrays or (lambda: row.arrays)
        self._decode = decode or (lambda: decode_detector(row, self._arrays()))

    @property
    def detector(self) -> PCAAnomalyDetector:
        if self._detector is None:
            self._detector = self._decode()
        return self._detector

    @cached_property
    def projection(self) -> Projection:
        """The model's principal components alone, read without scikit-learn (what a PCA
        scatter needs)."""
        from .projection import Projection

        return Projection.from_arrays(self._arrays())

    @property
    def id(self) -> int:
        return int(self.row.id)

    @property
    def embedder(self) -> str:
        return self.row.embedder

    @property
    def threshold(self) -> float:
        """Anomaly scores strictly above it are flagged."""
        return float(self.row.threshold)

    @property
    def n_normal(self) -> int:
        """How many cutouts were labelled normal when the model was fitted."""
        return int(json.loads(self.row.meta_json).get("n_normal_", 0))

    @property
    def explained_variance(self) -> np.ndarray:
        """Explained variance ratio of each component, shape (n_components,)."""
        return np.asarray(json.loads(self.row.explained_variance_json), float)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """Anomaly flags for stored scores, shape (n,) (NaN: unscored, never flagged)."""
        return flags(scores, self.threshold)

    def threshold_text(self) -> str:
        """The threshold in words, e.g. ``0.412 (sigma 2)``."""
        return f"{self.threshold:.3g} ({self.row.threshold_mode} {self.row.threshold_value:g})"

    def summary(self, short: bool = False) -> str:
        """The model in one sentence (threshold page, command line); ``short``: in a line
        (sidebar)."""
        r = self.row
        if short:
            return (f"Model #{r.id}: {r.embedder}, {r.n_components} components, "
                    f"threshold {self.threshold_text()}")
        return (f"Model #{r.id}: {r.embedder} embedder, {r.n_components} components "
                f"explaining {100 * self.explained_variance.sum():.1f} % of the variance, "
                f"trained on {r.n_train:,} cutouts"
                + (f", {self.n_normal:,} of them labelled normal." if self.n_normal else "."))


def decode_detector(row: store.DetectorModel, arrays: bytes | None = None
                    ) -> PCAAnomalyDetector:
    """The estimator saved in a model row (its ``arrays``, unless given), with the row's
    threshold."""
    from .detector import PCAAnomalyDetector

    return PCAAnomalyDetector.from_bytes(row.arrays if arrays is None else arrays,
                                         row.meta_json, row.threshold)


def load_model(row: store.DetectorModel,
               decoded: Callable[[], PCAAnomalyDetector] | None = None,
               arrays: Callable[[], bytes] | None = None) -> CurrentModel:
    """The model stored in ``row``; ``decoded`` gives that row's estimator already decoded
    (e.g. cached by the service), which is then only given the row's threshold; ``arrays``
    the row's arrays when it was read without them."""
    if decoded is None:
        return CurrentModel(row, arrays=arrays)
    return CurrentModel(row, decode=lambda: decoded().with_threshold(row.threshold),
                        arrays=arrays)


def current_model(engine: Engine, embedder: str | None = None) -> CurrentModel | None:
    """The current model (for ``embedder`` when given), or None."""
    row = store.current_model(engine, embedder)
    return load_model(row) if row else None


def retire_stale(engine: Engine, embedder: Embedder) -> str | None:
    """Drop what an older definition of ``embedder``'s features stored — its vectors of another
    length and the models fitted on them (:func:`~reaper_core.store.drop_other_lengths`) — so
    that the next fit embeds the stored patches again (:func:`embed_missing`) and learns anew;
    returns a sentence saying so, or None when nothing was stale. Two one-row reads when
    nothing is."""
    nbytes = 4 * embedder.dim
    row = store.current_model(engine, embedder.name, arrays=False)
    fitted = None if row is None else json.loads(row.meta_json).get("n_features_in_")
    same = store.vector_length(engine, embedder.name) in (None, nbytes)
    if same and fitted in (None, embedder.dim):
        return None
    gone, _ = store.drop_other_lengths(engine, embedder.name, nbytes)
    return (f"the {embedder.name} embedder describes a cutout with {embedder.dim} features "
            f"since this version: {gone:,} stored cutouts embedded before are embedded again")


def embed_missing(engine: Engine, embedder: Embedder, progress: ProgressFn = noop,
                  chunk: int = 2000) -> int:
    """Embed stored patches that ``embedder`` has not embedded yet, ``chunk`` at a time (each
    chunk its own transaction); returns how many."""
    total = store.count_without_embedding(engine, embedder.name)
    done = 0
    for part in store.iter_without_embedding(engine, embedder.name, chunk):
        patches = np.stack([store.unpack_patch(b, n) for _, b, n in part])
        store.write_embeddings(engine, [i for i, _, _ in part], embedder.name,
                               embedder.embed(patches))
        done += len(part)
        progress("embed", min(done / max(total, 1), 1.0), "embedding stored patches")
    return done


#: The most cutouts a fit learns from: above it, a sample (every cutout labelled normal, and
#: the others whose id falls in a fixed hash range, see :func:`in_fit_sample`) — 250,000
#: embeddings are ~70 MB, and the principal components of a uniform sample that large match
#: the whole set's. Every cutout is then scored, a chunk at a time.
FIT_SAMPLE = 250_000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def in_fit_sample(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Whether each cutout id (n,) is in the fit's sample: a multiplicative hash of the id
    below ``fraction`` of its range — uniform, reproducible, the same for a cutout whichever
    process asks; bool (n,)."""
    if fraction >= 1:
        return np.ones(len(ids), bool)
    h = (np.asarray(ids, dtype=np.uint64) * _GOLDEN) >> np.uint64(11)
    return h.astype(np.float64) / float(2**53) < fraction


def fit_model(engine: Engine, settings: Settings, progress: ProgressFn = noop,
              n_components: float | None = None, sample: int | None = None,
              chunk: int = 100_000, client=None) -> CurrentModel:
    """Fit a new model, make it current and score every cutout with it.

    The fit learns from every cutout, or from a sample of ``sample`` (default
    :data:`FIT_SAMPLE`) when there are more (:func:`in_fit_sample`); embeddings are read and
    scored ``chunk`` at a time, so memory stays bounded — on the workers of a
    ``distributed.Client``'s cluster when they can read the database
    (:func:`reaper_core.cluster.score_on_cluster`). The threshold comes from the scores
    of every cutout. Cutouts a person labelled normal are always in the fit, count
    ``settings.normal_weight`` times and damp the scores of those like them. The threshold mode
    and value are the current model's (the ones the person last saved), the settings' for a
    first model. Older models beyond ``settings.keep_models`` are pruned with their scores.
    """
    embedder = get_embedder(settings.embedder, settings)
    retire_stale(engine, embedder)
    embed_missing(engine, embedder, progress)
    progress("fit", 0.0, "loading embeddings")
    n = store.count_embeddings(engine, embedder.name)
    if n < 3:
        raise ModelError(f"need at least 3 cutouts embedded by {embedder.name} to fit a model")
    labelled_normal = np.asarray(sorted(store.labelled_ids(engine, "normal")), np.int64)
    fraction = min(1.0, (sample or FIT_SAMPLE) / n)
    parts_ids, parts_X = [], []
    for ids, X in store.iter_embeddings(engine, embedder.name, chunk):
        keep = in_fit_sample(ids, fraction) | np.isin(ids, labelled_normal)
        parts_ids.append(ids[keep])
        parts_X.append(X[keep])
    ids = np.concatenate(parts_ids)
    X = np.concatenate(parts_X)
    del parts_X
    normal = np.isin(ids, labelled_normal)
    nc = settings.n_components if n_components is None else n_components
    nc = int(nc) if nc >= 1 else (nc if nc > 0 else 5)
    last = store.current_model(engine)
    mode, value = ((last.threshold_mode, last.threshold_value) if last is not None
                   else (settings.threshold_mode, settings.threshold_value))
    from .detector import PCAAnomalyDetector

    n_context = getattr(embedder, "n_context", 0)
    weights = [f.weight for f in embedder.features][:embedder.dim - n_context]
    det = PCAAnomalyDetector(n_components=nc, threshold_mode=mode, threshold_value=value,
                             normalize_residuals=bool(settings.normalize_residuals),
                             normal_weight=settings.normal_weight, n_context=n_context,
                             feature_weights=weights).fit(X, normal=normal)
    n_fit = len(ids)
    if fraction < 1:  # score the rest, a chunk at a time; the threshold from every score
        del X
        progress("fit", 0.3, f"fitted on {n_fit:,} of {n:,} cutouts; scoring every cutout")
        ids, scores = _score_every(engine, settings, det, embedder.name, n, chunk, progress,
                                   client)
        det.train_anomaly_scores_ = scores
        det = det.with_threshold(det.threshold_for(mode, value))
    else:
        scores = det.train_anomaly_scores_
    progress("fit", 0.6, "storing the scores of every cutout")
    arrays, meta = det.to_bytes()
    row = store.write_model(engine, dict(
        embedder=embedder.name, n_components_requested=float(nc), n_components=det.n_components_,
        n_train=n_fit, threshold_mode=det.threshold_mode, threshold_value=det.threshold_value,
        threshold=det.threshold_, arrays=arrays, meta_json=meta,
        explained_variance_json=json.dumps(det.explained_variance_ratio_.tolist()),
    ), ids, scores)
    store.prune_models(engine, settings.keep_models)
    store.refresh_statistics(engine)
    progress("fit", 1.0, f"model {row.id}: {row.n_components} components"
             + (f", fitted on {n_fit:,} of {n:,} cutouts" if n_fit < n else "")
             + (f", {det.n_normal_:,} cutouts labelled normal" if det.n_normal_ else ""))
    return CurrentModel(row, det)


def _score_every(engine: Engine, settings: Settings, det: PCAAnomalyDetector, embedder: str,
                 n: int, chunk: int, progress: ProgressFn, client=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of every cutout ``embedder`` embedded (``n`` of them), in id order,
    ``chunk`` at a time: on ``client``'s workers when they can read the database, else here."""
    done = [0]

    def step(m: int, where: str) -> None:
        done[0] += m
        progress("fit", 0.3 + 0.3 * done[0] / max(n, 1), f"scoring every cutout{where}")

    from .cluster import reads_database, score_on_cluster

    if client is not None and reads_database(engine, client):
        ranges = store.embedding_ranges(engine, embedder, chunk)
        return score_on_cluster(client, settings, det, embedder, ranges, step)
    all_ids, all_scores = [], []
    for ids_c, X_c in store.iter_embeddings(engine, embedder, chunk):
        all_ids.append(ids_c)
        all_scores.append(det.anomaly_score(X_c))
        step(len(ids_c), "")
    return np.concatenate(all_ids), np.concatenate(all_scores)


def score_pending(engine: Engine, model: CurrentModel, file_ids: list[int] | None = None
                  ) -> int:
    """Score cutouts embedded for the model's embedder but not scored by it (of the files
    ``file_ids`` alone, when given: a batch's, rather than a scan of every cutout); returns
    how many."""
    ids, X = store.load_embeddings(engine, model.embedder, only_unscored_for=model.id,
                                   file_ids=file_ids)
    if len(ids) == 0:
        return 0
    try:
        store.write_scores(engine, model.id, ids.tolist(), model.detector.anomaly_score(X))
    except IntegrityError:  # another process scored them meanwhile
        return 0
    return len(ids)


def save_threshold(engine: Engine, model: CurrentModel, mode: str,
                   value: float) -> CurrentModel:
    """Store a new threshold with a model (no re-embedding, no re-fitting); returns the model
    with it. The threshold is derived from the model's training scores."""
    try:  # threshold_from_scores checks the mode and value
        thr = model.detector.threshold_for(mode, float(value))
    except ValueError as exc:
        raise ModelError(f"threshold not saved: {exc}") from None
    row = store.save_threshold(engine, model.id, mode, float(value), thr)
    return CurrentModel(row, model.detector.with_threshold(thr))
