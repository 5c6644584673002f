"""Ingest: read → sources → cutouts → embed → score → store, one transaction per file.

:func:`ingest_many` is the one batch loop (command line, uploads, demo, benchmarks); a bad file
becomes a :class:`FileResult` with one sentence and never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import store
from .config import Settings
from .embedders import Embedder, get_embedder
from .errors import FITSReadError, ReaperError, describe_failure
from .files import expand_paths, safe_filename, sha256_file
from .fits_reader import FitsImage, read_fits, refuse_folder, sky_positions
from .models import FIT_SAMPLE, CurrentModel, current_model, fit_model, retire_stale, score_pending
from .progress import ProgressFn, noop
from .views import object_keys
from .words import count


@dataclass
class Prepared:
    """A file read, cut and embedded, ready to be stored."""

    name: str
    sha256: str
    size_bytes: int
    image: FitsImage
    sources: object  # reaper_core.sources.Sources
    embeddings: np.ndarray  # (n, d)
    ra: np.ndarray  # (n,) degrees, NaN without a WCS
    dec: np.ndarray  # (n,)
    #: The patches as stored (:func:`reaper_core.store.pack_patches`), packed here so that a
    #: cluster's workers do it.
    patch_blobs: list[bytes] | None = None
    #: The frame's preview (PNG), made with the cutouts for the same reason.
    preview_png: bytes | None = None
    #: Patch side, pixels.
    patch_size: int = 32
    #: The science region's smooth sky the patches are levelled by (see
    #: :func:`~reaper_core.cutouts.extract_cutouts`), image units.
    background: np.ndarray | None = field(default=None, repr=False)
    _patches: np.ndarray | None = field(default=None, repr=False)

    @property
    def patches(self) -> np.ndarray:
        """The cutouts, shape (n, s, s) float32: cut from the image when first asked for
        (ingest itself cuts, packs and embeds a few hundred at a time and keeps none)."""
        if self._patches is None:
            from .cutouts import extract_cutouts

            self._patches = extract_cutouts(self.image.data, self.sources.x, self.sources.y,
                                            self.patch_size, self.image.valid, self.background)
        return self._patches

    @patches.setter
    def patches(self, value: np.ndarray) -> None:
        self._patches = value


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
    #: What a person should know about how the file was read (HDU chosen, quality flags).
    notes: list[str] = field(default_factory=list)
    #: The Dask worker that stored it in its own transaction (a server database), else None.
    stored_on: str | None = None


@dataclass
class IngestReport:
    """Results of a batch, in the order the files were given."""

    results: list[FileResult] = field(default_factory=list)
    model_id: int | None = None
    fitted: bool = False
    #: One sentence per stack that the batch made or grew but that could not be searched.
    stack_notes: list[str] = field(default_factory=list)
    #: Why the batch re-fitted an existing model (empty when it did not).
    refit_note: str = ""
    #: For uploads (:meth:`~reaper_core.service.Reaper.ingest_uploads`), which upload each
    #: result is of: a file of several images has a result for each.
    inputs: list[int] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("error") == 0

    def summary(self) -> str:
        """The batch in one line, e.g. ``3 added, 1 duplicate, 0 failed, model fitted`` (and
        how many Dask workers stored them, where the workers did)."""
        writers = {r.stored_on for r in self.results if r.stored_on}
        return (f"{self.count('added')} added, {self.count('duplicate')} duplicate, "
                f"{self.count('error')} failed"
                + (f" (stored by {count(len(writers), 'worker')})" if writers else "")
                + (", model fitted" if self.fitted else "")
                + (f" ({self.refit_note})" if self.refit_note else ""))


@dataclass(frozen=True)
class IngestItem:
    """One image to ingest: its file (where it is, the name to show, where it is kept) and
    the HDU to read (None: the reader's rule picks it)."""

    path: Path
    name: str | None = None
    stored_path: str | None = None
    hdu: int | None = None

    @property
    def display(self) -> str:
        """The name the image is stored and reported under (:func:`image_name`)."""
        return image_name(self.name or self.path.name, self.hdu)


def image_name(name: str, hdu: int | None) -> str:
    """The name an image is shown and stored under: the file's safe name, followed by
    ``[hdu]`` (the extension syntax of CFITSIO) when it was read from a named HDU."""
    return safe_filename(name) + (f"[{hdu}]" if hdu is not None else "")


def image_key(sha256: str, hdu: int | None) -> str:
    """An image's identity in the store: the SHA-256 of its file's bytes, or, for an image
    read from a named HDU, the SHA-256 of that and the HDU's number (64 hex digits)."""
    return sha256 if hdu is None else hashlib.sha256(f"{sha256}[{hdu}]".encode()).hexdigest()


def world_coords(image: FitsImage, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (ICRS, degrees) of 0-based pixels (x, y); NaN without a WCS. Shapes (n,)
    (:func:`~reaper_core.fits_reader.sky_positions`)."""
    return sky_positions(image.wcs, x, y)


def prepare(
    path: str | Path,
    settings: Settings,
    embedder: Embedder,
    progress: ProgressFn = noop,
    *,
    name: str | None = None,
    sha256: str | None = None,
    hdu: int | None = None,
) -> Prepared:
    """Read, find sources, cut and embed one file (no database access); ``hdu`` reads that
    HDU instead of the one the reader's rule picks. ``name``: the file's name (default: the
    path's), stored as :func:`image_name`; ``sha256``: its bytes' SHA-256, when known."""
    from .parallel import own_threads

    with own_threads():
        return _prepare(path, settings, embedder, progress, name=name, sha256=sha256, hdu=hdu)


def _prepare(path: str | Path, settings: Settings, embedder: Embedder, progress: ProgressFn,
             *, name: str | None, sha256: str | None, hdu: int | None) -> Prepared:
    from .cutouts import MAX_NAN_FRACTION, extract_cutouts, usable_positions
    from .fits_reader import MIN_SIDE
    from .parallel import map_chunks
    from .sources import Sources, find_sources

    path = Path(path)
    name = image_name(name or path.name, hdu)
    sha256 = image_key(sha256 or sha256_file(path), hdu)
    progress("read", 0.0, f"reading {name}")
    image = read_fits(path, name=name, max_bytes=int(settings.max_file_mb * 1e6),
                      max_pixels=settings.max_pixels, hdu=hdu, any_cube=True)
    if image.layout == "tesscut" and min(image.shape) < MIN_SIDE:
        return _stack_only(path, name, sha256, image, embedder, settings.patch_size)
    progress("sources", 0.0, "finding sources")
    from .sources import science_sky

    # The smooth sky: detection's background, the star fit's, and what each patch is
    # levelled by (scattered light's slope taken out).
    sky = science_sky(image)
    stars = None
    if getattr(embedder, "uses_image", False):
        from .parallel import begin
        from .starfit import fit_region

        # The star fit overlaps detection, cutting, packing and embedding (started after
        # detection instead, the ingest of a 2048² frame took 0.5 s longer: measured).
        stars = begin(fit_region, image.data, image.valid, sky)
    sources = find_sources(image, settings.source_method, patch_size=settings.patch_size,
                           sky=sky)
    ok = usable_positions(image.data, sources.x, sources.y, settings.patch_size, image.valid)
    excluded = int((~ok).sum())
    if excluded:
        sources = Sources(sources.x[ok], sources.y[ok], sources.origin[ok], sources.segment[ok])
        image.extra_notes.append(
            f"{excluded} positions not cut: centred on a non-finite (NaN) pixel, or more than "
            f"{100 * MAX_NAN_FRACTION:g} % of their window is")
    if len(sources) == 0 and excluded:
        raise FITSReadError(
            name, f"has {excluded} positions to cut around but no usable window: each is "
                  f"centred on a missing (NaN or infinite) pixel or more than "
                  f"{100 * MAX_NAN_FRACTION:g} % of its window is missing")
    if len(sources) == 0:
        raise FITSReadError(name, "has no detectable objects to cut out")
    n, size = len(sources), settings.patch_size
    # The star fit goes on meanwhile: its residual is one more column after the embedding.
    core = embedder.base if stars is not None else embedder

    def step(done: int, total: int) -> None:
        progress("embed", done / max(total, 1), f"{done}/{total}")

    def cut(rows: slice) -> np.ndarray:
        return extract_cutouts(image.data, sources.x[rows], sources.y[rows], size, image.valid,
                               sky[0])

    patches = None
    if core.per_patch:
        # A few hundred patches at a time on every core, each cut, packed and embedded while
        # it is in the cache; a frame's patches are never all in memory at once (memory
        # touched for the first time is slow, and 50,000 patches are 200 MB).
        progress("embed", 0.0, f"cutting and embedding {n} patches with {core.name}")

        def chunk(rows: np.ndarray) -> tuple[list[bytes], np.ndarray]:
            p = cut(slice(int(rows[0]), int(rows[-1]) + 1))
            return store.pack_patches(p), core.embed(p)

        parts = map_chunks(chunk, np.arange(n), STREAM_CHUNK, step)
        blobs = [b for part, _ in parts for b in part]
        X = np.vstack([x for _, x in parts]).astype(np.float32)
    else:
        progress("cutouts", 0.0, f"cutting {n} patches")
        patches = cut(slice(None))
        blobs = store.pack_patches(patches)
        progress("embed", 0.0, f"embedding {n} patches with {core.name}")
        X = core.embed(patches, step)
    if stars is not None:
        from .starfit import context_at

        progress("stars", 0.0, "fitting every star with the frame's PSF")
        X = embedder.with_context(X, context_at(stars(), image.valid, sources.x, sources.y))
    ra, dec = world_coords(image, sources.x, sources.y)
    return Prepared(name=name, sha256=sha256,
                    size_bytes=path.stat().st_size, image=image, sources=sources,
                    embeddings=X, ra=ra, dec=dec, patch_blobs=blobs,
                    preview_png=_preview_png(image), patch_size=size, background=sky[0],
                    _patches=patches)


def _stack_only(path: Path, name: str, sha256: str, image: FitsImage, embedder: Embedder,
                patch_size: int) -> Prepared:
    """A TESScut cube whose frames are too small to cut: stored without cutouts, to be
    searched as the stack of frames it is (see :func:`~reaper_core.timedomain.auto_stacks`)."""
    from .fits_reader import MIN_SIDE, read_tesscut
    from .sources import Sources
    from .stacks import MIN_FRAMES

    ny, nx = image.shape
    frames = len(read_tesscut(path, name=name).time)
    if frames < MIN_FRAMES:
        raise FITSReadError(name, f"is a TESScut cube of {count(frames, 'frame')} of {ny} x {nx} "
                                  f"px: too small to cut (under {MIN_SIDE} x {MIN_SIDE} px), "
                                  f"and a stack needs at least {MIN_FRAMES} frames")
    image.extra_notes.append(
        f"its frames ({ny} x {nx} px) are too small to cut (under {MIN_SIDE} x {MIN_SIDE} px): "
        "it is searched as a stack of frames only (events on the Timeline page)")
    empty = np.zeros(0)
    return Prepared(name=name, sha256=sha256,
                    size_bytes=path.stat().st_size, image=image,
                    sources=Sources(empty, empty, np.zeros(0, dtype="<U7")),
                    embeddings=np.zeros((0, embedder.dim), np.float32), ra=empty, dec=empty,
                    patch_blobs=[], preview_png=_preview_png(image), patch_size=patch_size)


#: Patches cut, packed and embedded together by one thread at ingest (see :func:`prepare`).
STREAM_CHUNK = 512


def _preview_png(image: FitsImage, max_side: int = 512) -> bytes:
    from .cutouts import to_png

    step = max(1, int(np.ceil(max(image.shape) / max_side)))
    return to_png(image.data[::step, ::step], stretch="zscale")


def store_prepared(engine: Engine, prep: Prepared, settings: Settings,
                   model: CurrentModel | None, stored_path: str | None = None,
                   embedder: str | None = None) -> tuple[int, int | None]:
    """Write a prepared file in ONE transaction; returns (file id, anomalies or None).

    ``embedder`` names the embedder of ``prep.embeddings`` (default: the settings').
    Raises IntegrityError when another writer stored the same bytes first.
    """
    img = prep.image
    scores = None
    if model is not None:  # (a cube stored as a stack only has no cutout to score)
        scores = (model.detector.anomaly_score(prep.embeddings) if len(prep.embeddings)
                  else np.zeros(0))
    record = dict(
        sha256=prep.sha256, name=prep.name, stored_path=stored_path,
        size_bytes=prep.size_bytes, layout=img.layout, sector=img.sector,
        camera=img.camera, ccd=img.ccd, tstart=img.tstart, tstop=img.tstop,
        date_obs=img.date_obs, ny=img.shape[0], nx=img.shape[1],
        header_json=json.dumps(img.header_cards),
        # relax=True keeps the SIP distortion terms (TESS WCSs have them).
        wcs_header=img.wcs.to_header(relax=True).tostring() if img.wcs is not None else None,
        hdu=img.hdu, quality=img.quality,
        source_method=settings.source_method, patch_size=settings.patch_size,
        n_cutouts=len(prep.embeddings), preview_png=prep.preview_png,
    )
    n = len(prep.embeddings)

    def nullable(v: np.ndarray) -> list[float | None]:
        return [None if f != f else f for f in np.asarray(v, float).tolist()]

    columns = {
        "x": np.asarray(prep.sources.x, float).tolist(),
        "y": np.asarray(prep.sources.y, float).tolist(),
        "ra": nullable(prep.ra), "dec": nullable(prep.dec),
        "sector": [img.sector] * n, "camera": [img.camera] * n,
        "ccd": [img.ccd] * n, "time": [img.mid_time] * n,
        "origin": [str(o) for o in prep.sources.origin],
        "segment": np.asarray(prep.sources.segment).astype(int).tolist(),
        "patch_size": [settings.patch_size] * n,
        "patch": prep.patch_blobs or store.pack_patches(prep.patches),
    }
    file_id = store.write_file(engine, record, columns, embedder or settings.embedder,
                               prep.embeddings, model.id if model else None, scores)
    n_anom = int(model.flags(scores).sum()) if model else None
    return file_id, n_anom


def ingest_file(
    engine: Engine,
    path: str | Path,
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    progress: ProgressFn = noop,
    name: str | None = None,
    stored_path: str | None = None,
    hdu: int | None = None,
    sha256: str | None = None,
) -> FileResult:
    """Ingest one file (the image of its HDU ``hdu``, else the one the reader's rule picks).
    ``sha256``: its bytes' SHA-256, when known. Never raises for a bad file: the result says
    what went wrong."""
    t0 = time.perf_counter()
    path = Path(path)
    display = image_name(name or path.name, hdu)
    try:
        sha, dup = check_new(engine, path, display, t0, hdu, sha256)
        if dup is not None:
            return dup
        embedder = embedder or get_embedder(settings.embedder, settings)
        prep = prepare(path, settings, embedder, progress, name=name or path.name, sha256=sha,
                       hdu=hdu)
        return store_result(engine, prep, settings, stored_path, embedder.name, t0, progress)
    except Exception as exc:
        return failure(display, exc, settings, t0)


def check_new(engine: Engine, path: Path, display: str, t0: float,
              hdu: int | None = None, sha256: str | None = None
              ) -> tuple[str, FileResult | None]:
    """(SHA-256 of the file — ``sha256`` when known —, the "duplicate" result when its image —
    of HDU ``hdu``, else the one the reader picks — is stored already)."""
    refuse_folder(path, display)
    if not path.is_file():
        raise FITSReadError(display, "does not exist or is not a file")
    sha = sha256 or sha256_file(path)
    dup = store.file_by_sha(engine, image_key(sha, hdu))
    if dup is None:
        return sha, None
    what = "same bytes" if hdu is None else f"same image (HDU {hdu} of the same bytes)"
    return sha, FileResult(display, "duplicate", f"{what} as {dup.name}, already ingested",
                           file_id=dup.id, n_cutouts=dup.n_cutouts,
                           seconds=time.perf_counter() - t0)


def store_result(engine: Engine, prep: Prepared, settings: Settings, stored_path: str | None,
                 embedder: str, t0: float, progress: ProgressFn = noop) -> FileResult:
    """Store a prepared file in one transaction (scored by the current model) and say so; a
    file another writer stored first is a duplicate, nothing is stored twice."""
    model = current_model(engine, embedder)
    progress("store", 0.0, f"storing {len(prep.embeddings)} cutouts")
    try:
        file_id, n_anom = store_prepared(engine, prep, settings, model,
                                         stored_path=stored_path, embedder=embedder)
    except IntegrityError:
        dup = store.file_by_sha(engine, prep.sha256)
        return FileResult(prep.name, "duplicate", "ingested meanwhile by another process",
                          file_id=dup.id if dup else None, seconds=time.perf_counter() - t0)
    progress("store", 1.0, "stored")
    n_objects = len(np.unique(object_keys(np.zeros(len(prep.sources.segment)),
                                          prep.sources.segment)))
    what = (f"{count(len(prep.embeddings), 'cutout')} of {count(n_objects, 'object')}"
            if len(prep.embeddings) else "no cutouts: a stack of frames only")
    return FileResult(prep.name, "added", what, file_id=file_id,
                      n_cutouts=len(prep.embeddings), n_anomalies=n_anom,
                      seconds=time.perf_counter() - t0, notes=prep.image.notes)


def failure(display: str, exc: BaseException, settings: Settings, t0: float) -> FileResult:
    """The "error" result of a file whose ingest raised ``exc``: one sentence naming it."""
    if isinstance(exc, ReaperError):
        message = str(exc)
    elif isinstance(exc, MemoryError):
        message = f"{display}: too large to process in memory"
    else:
        from .config import mask_url

        message = f"{display}: {describe_failure(exc, mask_url(settings.db_url))}"
    return FileResult(display, "error", message, seconds=time.perf_counter() - t0)


def images_of(item: IngestItem, hdu: int | None = None) -> list[IngestItem]:
    """The images to ingest of one file: its HDU ``hdu`` when one is named (by the item or
    the caller), else each of its images when it holds several of the sky
    (:func:`~reaper_core.fits_reader.separate_images`: a mosaic's CCDs, the bands of a
    field), else the image the reader's rule picks."""
    from dataclasses import replace

    from .fits_reader import separate_images

    if item.hdu is not None or hdu is not None:
        return [item if item.hdu is not None else replace(item, hdu=hdu)]
    return [replace(item, hdu=i) for i in separate_images(item.path)] or [item]


def to_ingest(items: Iterable[str | Path | IngestItem],
              hdu: int | None = None) -> list[IngestItem]:
    """The images to ingest, in order: those of the files named by paths, folders (searched
    recursively) or globs (:func:`images_of`), and :class:`IngestItem` objects as they are
    (``hdu`` given to those that name none)."""
    todo: list[IngestItem] = []
    for it in items:
        if isinstance(it, IngestItem):
            todo.extend([it] if hdu is None else images_of(it, hdu))
        else:
            for p in expand_paths([it]):
                todo.extend(images_of(IngestItem(p, stored_path=str(p.resolve())), hdu))
    return todo


def ingest_many(
    engine: Engine,
    items: Iterable[str | Path | IngestItem],
    settings: Settings,
    *,
    progress: ProgressFn = noop,
    on_file: Callable[[int, int, str], None] | None = None,
    on_result: Callable[[int, int, FileResult], None] | None = None,
    fit_if_missing: bool = True,
    hdu: int | None = None,
    client=None,
) -> IngestReport:
    """Ingest many files; fit a model when there is none, then count anomalies per file.

    Paths may be files, folders (searched recursively) or globs. ``on_file(index, total, name)``
    is called before each file, ``on_result(index, total, result)`` after it, and
    ``progress(stage, fraction, message)`` within it. ``hdu`` reads that HDU of every file.
    With a ``distributed.Client``, the compute stages run on its cluster
    (:func:`reaper_core.cluster.run_on_cluster`) and this process stores the results.
    """
    from .fits_reader import inflate_once

    todo = to_ingest(items, hdu)
    report = IngestReport()
    embedder = get_embedder(settings.embedder, settings)
    # Stored vectors of an older definition of the features are embedded again by the fit.
    report.refit_note = retire_stale(engine, embedder) or ""
    if client is not None:
        from .cluster import run_on_cluster

        report.results = run_on_cluster(engine, todo, settings, client, on_file, on_result)
        finish_batch(engine, report, settings, progress, fit_if_missing, client)
        return report
    # A file of several images (a mosaic's CCDs) is hashed once, and inflated once when it
    # is compressed, for all of them.
    hashes = _hashes_of_shared_files(todo)
    with inflate_once(hashes):
        for i, it in enumerate(todo):
            if on_file:
                on_file(i, len(todo), it.display)
            result = ingest_file(engine, it.path, settings, embedder=embedder,
                                 progress=progress, name=it.name, stored_path=it.stored_path,
                                 hdu=it.hdu, sha256=hashes.get(it.path))
            report.results.append(result)
            if on_result:
                on_result(i, len(todo), result)
    finish_batch(engine, report, settings, progress, fit_if_missing)
    return report


def _hashes_of_shared_files(todo: list[IngestItem]) -> dict[Path, str]:
    """{path: SHA-256} of the files that several items read (each image of a mosaic)."""
    from collections import Counter

    hashes = {}
    for p, n in Counter(it.path for it in todo).items():
        if n > 1:
            try:
                hashes[p] = sha256_file(p)
            except OSError:
                pass  # each of its images' ingest says why it cannot be read
    return hashes


#: A batch re-fits the model when it learned from fewer than this share of the cutouts.
REFIT_SHARE = 0.5


def finish_batch(engine: Engine, report: IngestReport, settings: Settings,
                 progress: ProgressFn = noop, fit_if_missing: bool = True, client=None) -> None:
    """After a batch: fit a model when there is none, score what is unscored, count anomalies.

    A model is fitted whenever cutouts exist without one, also when this batch added nothing
    (an earlier batch may have been interrupted before its fit); and fitted again when it has
    learned from fewer than :data:`REFIT_SHARE` of the cutouts now stored (of at most
    :data:`~reaper_core.models.FIT_SAMPLE`): a first model made from one small file does not
    go on to judge a sector. Its threshold mode and value stay. A fit scores on ``client``'s
    cluster when there is one (:func:`~reaper_core.models.fit_model`).
    """
    from .timedomain import auto_stacks

    added = [r.file_id for r in report.results if r.status == "added" and r.file_id]
    report.stack_notes = auto_stacks(engine, settings, added, progress)
    model = current_model(engine, settings.embedder)
    if model is None and fit_if_missing and store.totals(engine)["cutouts"] >= 3:
        model = fit_model(engine, settings, progress=progress, client=client)
        report.fitted = True
    elif model is not None and report.count("added"):
        seen, total = model.row.n_train, store.count_embeddings(engine, model.embedder)
        if fit_if_missing and seen < REFIT_SHARE * min(total, FIT_SAMPLE):
            model = fit_model(engine, settings, progress=progress, client=client)
            report.fitted = True
            report.refit_note = (f"the model had learned from {seen:,} of the {total:,} "
                                 "cutouts now stored")
        else:
            # Every other cutout was scored when it was stored, or by the fit that made the
            # model: only this batch's can have been stored under an older model.
            score_pending(engine, model, added)
    if model is None:
        return
    report.model_id = model.id
    counts = store.anomalies_per_file(engine, model.id, model.threshold, added)
    for r in report.results:
        if r.status == "added" and r.file_id is not None:
            r.n_anomalies = counts.get(r.file_id, 0)
