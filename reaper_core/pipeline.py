"""Pipeline: ingest = read → sources → cutouts → embed → score → store, with progress callbacks.

The dashboard and the command line both call these functions and nothing else.
"""

from __future__ import annotations

import glob
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select, update

from . import store
from .config import Settings
from .cutouts import extract_cutouts, to_png
from .detector import PCAAnomalyDetector
from .embedders import Embedder, get_embedder
from .errors import FITSReadError, ModelError, ReaperError
from .fits_reader import FitsImage, read_fits
from .sources import Sources, find_sources
from .uploads import FITS_SUFFIXES, safe_filename, sha256_file

#: progress(stage, fraction in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]
STAGES = ("read", "sources", "cutouts", "embed", "store", "score")


def _noop(stage: str, fraction: float, message: str) -> None:
    return None


@dataclass
class Prepared:
    """A file read, cut and embedded, ready to be stored."""

    name: str
    sha256: str
    size_bytes: int
    image: FitsImage
    sources: Sources
    patches: np.ndarray  # (n, s, s)
    embeddings: np.ndarray  # (n, d)
    ra: np.ndarray
    dec: np.ndarray


@dataclass
class FileResult:
    """What happened to one file."""

    name: str
    status: str  # "added", "duplicate" or "error"
    message: str = ""
    file_id: int | None = None
    n_cutouts: int = 0
    n_anomalies: int | None = None
    seconds: float = 0.0


@dataclass
class IngestReport:
    """Results of a batch."""

    results: list[FileResult] = field(default_factory=list)
    model_id: int | None = None
    fitted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("error") == 0


# -- files --------------------------------------------------------------------------------------
def is_fits_name(path: str | Path) -> bool:
    return str(path).lower().endswith(FITS_SUFFIXES)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, FITS files inside folders (recursively), and glob matches, sorted, unique."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and is_fits_name(q)))
        elif p.exists():
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matches:
                out.append(p)  # reported as an error by ingest, not silently dropped
            out.extend(m for m in matches if m.is_file())
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def world_coords(image: FitsImage, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec in degrees for 0-based pixels (x, y); NaN without a WCS. Shapes (n,)."""
    if image.wcs is None or len(x) == 0:
        return np.full(len(x), np.nan), np.full(len(x), np.nan)
    try:
        ra, dec = image.wcs.pixel_to_world_values(x, y)
        return np.asarray(ra, float), np.asarray(dec, float)
    except Exception:
        return np.full(len(x), np.nan), np.full(len(x), np.nan)


def prepare(
    path: str | Path,
    settings: Settings,
    embedder: Embedder,
    progress: ProgressFn = _noop,
    *,
    name: str | None = None,
    sha256: str | None = None,
) -> Prepared:
    """Read, find sources, cut and embed one file (no database access)."""
    path = Path(path)
    name = safe_filename(name or path.name)
    progress("read", 0.0, f"reading {name}")
    image = read_fits(path, name=name, max_bytes=int(settings.max_file_mb * 1e6),
                      max_pixels=settings.max_pixels)
    progress("sources", 0.0, "finding sources")
    sources = find_sources(image, settings.source_method, patch_size=settings.patch_size)
    if len(sources) == 0:
        raise FITSReadError(name, "has no detectable objects to cut out")
    progress("cutouts", 0.0, f"cutting {len(sources)} patches")
    patches = extract_cutouts(image.data, sources.x, sources.y, settings.patch_size, image.valid)
    progress("embed", 0.0, f"embedding {len(patches)} patches with {embedder.name}")
    X = embedder.embed(patches, lambda d, n: progress("embed", d / max(n, 1), f"{d}/{n}"))
    ra, dec = world_coords(image, sources.x, sources.y)
    return Prepared(name=name, sha256=sha256 or sha256_file(path),
                    size_bytes=path.stat().st_size, image=image, sources=sources,
                    patches=patches, embeddings=X, ra=ra, dec=dec)


def _preview_png(image: FitsImage, max_side: int = 512) -> bytes:
    step = max(1, int(np.ceil(max(image.shape) / max_side)))
    return to_png(image.data[::step, ::step], stretch="zscale")


def store_prepared(engine: Engine, prep: Prepared, settings: Settings,
                   model: tuple[store.DetectorModel, PCAAnomalyDetector] | None,
                   stored_path: str | None = None) -> tuple[int, int | None]:
    """Write a prepared file in ONE transaction; returns (file id, anomalies or None).

    Raises IntegrityError when another writer stored the same bytes first.
    """
    img = prep.image
    wcs_header = img.wcs.to_header().tostring() if img.wcs is not None else None
    scores = model[1].score_samples(prep.embeddings) if model else None
    preview = _preview_png(img)

    def write() -> int:
        with store.session_scope(engine) as s:
            f = store.FitsFile(
                sha256=prep.sha256, name=prep.name, stored_path=stored_path,
                size_bytes=prep.size_bytes, layout=img.layout, sector=img.sector,
                camera=img.camera, ccd=img.ccd, tstart=img.tstart, tstop=img.tstop,
                date_obs=img.date_obs, ny=img.shape[0], nx=img.shape[1],
                header_json=json.dumps(img.header_cards), wcs_header=wcs_header,
                source_method=settings.source_method, patch_size=settings.patch_size,
                n_cutouts=len(prep.patches), preview_png=preview,
            )
            s.add(f)
            s.flush()
            t = img.mid_time
            rows = [
                {"file_id": f.id, "x": float(x), "y": float(y),
                 "ra": None if np.isnan(r) else float(r), "dec": None if np.isnan(d) else float(d),
                 "sector": img.sector, "camera": img.camera, "ccd": img.ccd, "time": t,
                 "origin": str(o), "segment": int(g), "patch_size": settings.patch_size,
                 "patch": store.to_bytes(p)}
                for x, y, r, d, o, g, p in zip(prep.sources.x, prep.sources.y, prep.ra, prep.dec,
                                               prep.sources.origin, prep.sources.segment,
                                               prep.patches, strict=True)
            ]
            ids = store.insert_cutouts(s, rows)
            store.insert_embeddings(s, ids, settings.embedder, prep.embeddings)
            if model is not None:
                store.insert_scores(s, model[0].id, ids, scores)
            return f.id

    file_id = store.with_retry(write)
    n_anom = int((scores > model[0].threshold).sum()) if model else None
    return file_id, n_anom


def load_detector(row: store.DetectorModel) -> PCAAnomalyDetector:
    """The estimator saved in a model row."""
    det = PCAAnomalyDetector.from_bytes(row.arrays, row.meta_json)
    det.set_threshold(row.threshold_mode, row.threshold_value)
    det.threshold_ = row.threshold
    return det


def n_normal(row: store.DetectorModel) -> int:
    """How many cutouts were labelled normal when the model was fitted."""
    return int(json.loads(row.meta_json).get("n_normal_", 0))


def current(engine: Engine, embedder: str | None = None
            ) -> tuple[store.DetectorModel, PCAAnomalyDetector] | None:
    """The current model row and its estimator, or None."""
    with Session(engine) as s:
        row = store.current_model(s, embedder)
    return (row, load_detector(row)) if row else None


def ingest_file(
    engine: Engine,
    path: str | Path,
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    progress: ProgressFn = _noop,
    name: str | None = None,
    stored_path: str | None = None,
) -> FileResult:
    """Ingest one file. Never raises for a bad file: the result says what went wrong."""
    t0 = time.perf_counter()
    path = Path(path)
    display = safe_filename(name or path.name)
    try:
        if not path.is_file():
            raise FITSReadError(display, "does not exist or is not a file")
        sha = sha256_file(path)
        with Session(engine) as s:
            dup = store.file_by_sha(s, sha)
        if dup is not None:
            return FileResult(display, "duplicate", f"same bytes as {dup.name}, already ingested",
                              file_id=dup.id, n_cutouts=dup.n_cutouts,
                              seconds=time.perf_counter() - t0)
        embedder = embedder or get_embedder(settings.embedder, settings)
        prep = prepare(path, settings, embedder, progress, name=display, sha256=sha)
        model = current(engine, embedder.name)
        progress("store", 0.0, f"storing {len(prep.patches)} cutouts")
        try:
            file_id, n_anom = store_prepared(engine, prep, settings, model,
                                             stored_path=stored_path)
        except IntegrityError:
            with Session(engine) as s:
                dup = store.file_by_sha(s, sha)
            return FileResult(display, "duplicate", "ingested meanwhile by another process",
                              file_id=dup.id if dup else None, seconds=time.perf_counter() - t0)
        progress("store", 1.0, "stored")
        return FileResult(display, "added", f"{len(prep.patches)} objects", file_id=file_id,
                          n_cutouts=len(prep.patches), n_anomalies=n_anom,
                          seconds=time.perf_counter() - t0)
    except ReaperError as exc:
        return FileResult(display, "error", str(exc), seconds=time.perf_counter() - t0)
    except MemoryError:
        return FileResult(display, "error", f"{display}: too large to process in memory",
                          seconds=time.perf_counter() - t0)
    except Exception as exc:
        return FileResult(display, "error", f"{display}: unexpected {type(exc).__name__}: {exc}",
                          seconds=time.perf_counter() - t0)


def ingest_paths(
    engine: Engine,
    paths: Iterable[str | Path],
    settings: Settings,
    *,
    progress: ProgressFn = _noop,
    on_file: Callable[[int, int, str], None] | None = None,
    fit_if_missing: bool = True,
) -> IngestReport:
    """Ingest many files; fit a model first time round, then report anomalies per file.

    ``on_file(index, total, name)`` is called before each file.
    """
    files = expand_paths(paths)
    embedder = get_embedder(settings.embedder, settings)
    report = IngestReport()
    for i, p in enumerate(files):
        if on_file:
            on_file(i, len(files), p.name)
        report.results.append(ingest_file(engine, p, settings, embedder=embedder,
                                          progress=progress, stored_path=str(p.resolve())))
    finish_batch(engine, report, settings, progress, fit_if_missing)
    return report


def finish_batch(engine: Engine, report: IngestReport, settings: Settings,
                 progress: ProgressFn = _noop, fit_if_missing: bool = True) -> None:
    """After a batch: fit a model when there is none, score what is unscored, count anomalies.

    A model is fitted whenever cutouts exist without one, also when this batch added nothing
    (an earlier batch may have been interrupted before its fit).
    """
    model = current(engine, settings.embedder)
    if model is None and fit_if_missing and store.totals(engine)["cutouts"] >= 3:
        row = fit_model(engine, settings, progress=progress)
        report.fitted, model = True, (row, load_detector(row))
    elif model is not None and report.count("added"):
        score_pending(engine, model)
    if model is None:
        return
    report.model_id = model[0].id
    counts = anomalies_per_file(engine, model[0])
    for r in report.results:
        if r.status == "added" and r.file_id is not None:
            r.n_anomalies = counts.get(r.file_id, 0)


def anomalies_per_file(engine: Engine, row: store.DetectorModel) -> dict[int, int]:
    """{file id: number of cutouts scoring above the model's threshold}."""
    from sqlalchemy import func

    with Session(engine) as s:
        q = (select(store.Cutout.file_id, func.count())
             .join(store.Score, store.Score.cutout_id == store.Cutout.id)
             .where(store.Score.model_id == row.id, store.Score.score > row.threshold)
             .group_by(store.Cutout.file_id))
        return {fid: n for fid, n in s.exec(q).all()}


# -- models -------------------------------------------------------------------------------------
def embed_missing(engine: Engine, embedder: Embedder, progress: ProgressFn = _noop,
                  chunk: int = 2000) -> int:
    """Embed stored patches that ``embedder`` has not embedded yet; returns how many."""
    with Session(engine) as s:
        todo = store.cutouts_without_embedding(s, embedder.name)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        patches = np.stack([store.patch_array(b, n) for _, b, n in part])
        X = embedder.embed(patches)

        def write(part=part, X=X) -> None:
            with store.session_scope(engine) as s:
                store.insert_embeddings(s, [i for i, _, _ in part], embedder.name, X)

        store.with_retry(write)
        progress("embed", min(start + chunk, len(todo)) / len(todo), "embedding stored patches")
    return len(todo)


def fit_model(engine: Engine, settings: Settings, progress: ProgressFn = _noop,
              n_components: float | None = None) -> store.DetectorModel:
    """Fit a new model on every cutout, make it current and score everything with it."""
    embedder = get_embedder(settings.embedder, settings)
    embed_missing(engine, embedder, progress)
    progress("fit", 0.0, "loading embeddings")
    with Session(engine) as s:
        ids, X = store.load_embeddings(s, embedder.name)
        normal = np.isin(ids, store.labelled_ids(s, "normal"))
    if len(ids) < 3:
        raise ModelError(f"need at least 3 cutouts embedded by {embedder.name} to fit a model")
    nc = settings.n_components if n_components is None else n_components
    nc = int(nc) if nc >= 1 else (nc if nc > 0 else 5)
    # Cutouts a person labelled normal count normal_weight times and damp the scores of
    # those like them (the feedback benchmarks/quality.py --feedback measures).
    det = PCAAnomalyDetector(n_components=nc, threshold_mode=settings.threshold_mode,
                             threshold_value=settings.threshold_value,
                             normalize_residuals=bool(settings.normalize_residuals),
                             normal_weight=settings.normal_weight).fit(X, normal=normal)
    progress("fit", 0.6, "scoring every cutout")
    scores = det.train_scores_
    arrays, meta = det.to_bytes()
    row = store.DetectorModel(
        embedder=embedder.name, n_components_requested=float(nc), n_components=det.n_components_,
        n_train=len(ids), threshold_mode=det.threshold_mode, threshold_value=det.threshold_value,
        threshold=det.threshold_, arrays=arrays, meta_json=meta,
        explained_variance_json=json.dumps(det.explained_variance_ratio_.tolist()),
        is_current=True,
    )

    def write() -> store.DetectorModel:
        with store.session_scope(engine) as s:
            s.exec(update(store.DetectorModel).values(is_current=False))
            s.add(row)
            s.flush()
            store.insert_scores(s, row.id, ids.tolist(), scores)
            return row

    row = store.with_retry(write)
    progress("fit", 1.0, f"model {row.id}: {row.n_components} components"
             + (f", {det.n_normal_:,} cutouts labelled normal" if det.n_normal_ else ""))
    return row


def score_pending(engine: Engine, model: tuple[store.DetectorModel, PCAAnomalyDetector]) -> int:
    """Score cutouts that have an embedding for the model's embedder but no score; returns n."""
    row, det = model
    with Session(engine) as s:
        ids, X = store.load_embeddings(s, row.embedder, only_unscored_for=row.id)
    if len(ids) == 0:
        return 0
    scores = det.score_samples(X)

    def write() -> None:
        with store.session_scope(engine) as s:
            store.insert_scores(s, row.id, ids.tolist(), scores)

    try:
        store.with_retry(write)
    except IntegrityError:  # another process scored them meanwhile
        return 0
    return len(ids)


def set_threshold(engine: Engine, model_id: int, mode: str, value: float) -> float:
    """Store a new threshold with a model (no re-embedding, no re-fitting); returns it.

    Only the model's JSON changes; its arrays are left as they are.
    """
    with store.session_scope(engine) as s:
        row = s.get(store.DetectorModel, model_id)
        if row is None:
            raise ModelError(f"no model with id {model_id}")
        det = PCAAnomalyDetector.from_bytes(row.arrays, row.meta_json)
        thr = det.set_threshold(mode, value)
        meta = json.loads(row.meta_json)
        meta.update(threshold_mode=mode, threshold_value=float(value), threshold_=thr)
        row.meta_json = json.dumps(meta)
        row.threshold_mode, row.threshold_value, row.threshold = mode, float(value), thr
        return thr


# -- export -------------------------------------------------------------------------------------
EXPORT_COLUMNS = ["cutout_id", "file", "sector", "camera", "ccd", "x", "y", "ra", "dec", "time",
                  "segment", "score", "is_anomaly", "label", "note"]


def export_table(engine: Engine, model_id: int | None = None,
                 threshold: float | None = None):
    """The export contract as a DataFrame: one row per cutout (see DESIGN.md)."""
    if model_id is None:
        model = current(engine)
        model_id = model[0].id if model else None
        threshold = threshold if threshold is not None else (model[0].threshold if model else None)
    df = store.cutout_table(engine, model_id)
    df["is_anomaly"] = (df["score"] > threshold) if threshold is not None else False
    df["label"] = df["label"].fillna("")
    df["note"] = df["note"].fillna("")
    return df[EXPORT_COLUMNS]


def write_export(df, path: str | Path, fmt: str | None = None) -> Path:
    """Write an export table as CSV, FITS or VOTable (by ``fmt`` or the file's suffix)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "csv").lower()
    if fmt == "csv":
        df.to_csv(path, index=False)
        return path
    cols = {}
    for name in df.columns:
        col = df[name]
        if name in ("sector", "camera", "ccd", "segment"):
            cols[name] = col.fillna(-1).astype(int).to_numpy()
        elif name in ("file", "label", "note"):
            cols[name] = np.asarray(col.fillna("").astype(str).tolist(), dtype=str)
        elif name == "is_anomaly":
            cols[name] = col.astype(bool).to_numpy()
        else:
            cols[name] = col.astype(float).to_numpy()
    table = Table(cols)
    if fmt in ("fits", "fit"):
        table.write(path, format="fits", overwrite=True)
    elif fmt in ("vot", "votable", "xml"):
        table.write(path, format="votable", overwrite=True)
    else:
        raise ReaperError(f"unknown export format {fmt!r}; use csv, fits or votable")
    return path
