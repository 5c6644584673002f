"""The service layer: everything the command line, the dashboard, the demo and the benchmarks do.

:class:`Reaper` holds the settings and the database engine and offers ingest, the current model,
fit / score / threshold, labels, the queries the pages need, and export. Nothing above it
touches sessions or tables; nothing below it knows about Streamlit or the command line.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import store
from .config import Settings, load_settings
from .errors import ModelError, ReaperError
from .progress import ProgressFn, noop

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from .embedders import Feature
    from .ingest import FileResult, IngestItem, IngestReport
    from .models import CurrentModel
    from .views import Filters, RankIndex


class Reaper:
    """Anomaly Reaper on one database.

    Parameters
    ----------
    settings : Settings, optional
        Default: :func:`~reaper_core.config.load_settings` (config file and environment).
    engine : sqlalchemy Engine, optional
        Default: one made for ``settings.db_url`` when first needed.
    """

    def __init__(self, settings: Settings | None = None, engine: Engine | None = None) -> None:
        self.settings = settings or load_settings()
        self._engine = engine
        #: Per model id, what never changes: its stored arrays and its decoded estimator.
        self._per_model: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        #: What another thread is making for :meth:`_kept`, by key.
        self._making: dict[tuple, Any] = {}
        #: (model id, data version, ids, standardised embeddings, similarity index or None)
        self._space_cache: tuple | None = None
        #: ((model id, cutouts), {labelled cutout id: local scale}) for re-ranking
        self._scales: tuple = ((None, 0), {})
        #: (stack id, stack, its reference) of the stack last viewed on the Timeline page
        self._reference: tuple | None = None

    @classmethod
    def open(cls, config: str | Path | None = None, **overrides: Any) -> Reaper:
        """A service from the config file, the environment and ``overrides`` (None ignored)."""
        return cls(load_settings(Path(config) if config else None, **overrides))

    @property
    def engine(self) -> Engine:
        """The database engine (tables created on first use)."""
        with self._lock:
            if self._engine is None:
                self._engine = store.make_engine(self.settings.engine_url())
            return self._engine

    # -- ingest -------------------------------------------------------------------------------
    def ingest(self, paths: Iterable[Any], *, progress: ProgressFn = noop,
               on_file: Callable[[int, int, str], None] | None = None,
               on_result: Callable[[int, int, FileResult], None] | None = None,
               fit_if_missing: bool = True, hdu: int | None = None,
               workers: int | None = None, scheduler: str | None = None) -> IngestReport:
        """Ingest files, folders, globs or :class:`~reaper_core.ingest.IngestItem`s (see
        :func:`~reaper_core.ingest.ingest_many`); ``hdu`` reads that HDU of every file.

        With ``workers`` (a LocalCluster of that many processes) or a ``scheduler`` address
        (default: the ``scheduler`` setting), the compute stages run on Dask
        (:mod:`reaper_core.cluster`) and this process stores the results."""
        from .ingest import ingest_many

        if scheduler:  # checked like the setting: one sentence for a malformed address
            from dataclasses import replace

            replace(self.settings, scheduler=scheduler)
        scheduler = scheduler or self.settings.scheduler or None
        kwargs = dict(progress=progress, on_file=on_file, on_result=on_result,
                      fit_if_missing=fit_if_missing, hdu=hdu)
        if workers or scheduler:
            from .cluster import close, connect

            client = connect(workers, scheduler)
            try:
                report = ingest_many(self.engine, paths, self.settings, client=client, **kwargs)
            finally:
                close(client)
        else:
            report = ingest_many(self.engine, paths, self.settings, **kwargs)
        model = self.model() if report.count("added") else None
        if model is not None:
            progress("fit", 1.0, "grouping the anomalies")
            self.groups(model)
        return report

    def ingest_uploads(self, uploads: list[tuple[str, bytes]], *, progress: ProgressFn = noop,
                       on_file: Callable[[int, int, str], None] | None = None,
                       on_result: Callable[[int, int, FileResult], None] | None = None,
                       hdu: int | None = None) -> IngestReport:
        """Store uploaded (name, bytes) under the uploads folder, then ingest them; a file that
        cannot be saved is reported like a bad file. Results keep the uploads' order, a file
        of several images (:func:`~reaper_core.ingest.images_of`) one result per image.
        ``hdu``: read that HDU of every file instead of choosing by the reader's rule."""
        from dataclasses import replace

        from .files import safe_filename, save_upload
        from .ingest import FileResult, IngestItem, images_of

        items: list[IngestItem | FileResult] = []
        inputs: list[int] = []  # the upload each item is of
        for k, (name, data) in enumerate(uploads):
            try:
                path = save_upload(name, data, self.settings.uploads_dir)
                images = images_of(
                    IngestItem(path, name=safe_filename(name), stored_path=str(path)), hdu)
            except OSError as exc:
                images = [FileResult(safe_filename(name), "error",
                                     f"{safe_filename(name)}: cannot be saved in the uploads "
                                     f"folder ({exc.strerror or exc})")]
            items.extend(images)
            inputs.extend([k] * len(images))
        good = [it for it in items if isinstance(it, IngestItem)]
        n = len(items)
        position = [i for i, it in enumerate(items) if isinstance(it, IngestItem)]

        def at(i: int) -> int:
            return position[i] if i < len(position) else i

        for i, it in enumerate(items):
            if isinstance(it, FileResult) and on_result:
                on_result(i, n, it)
        done = self.ingest(
            good, progress=progress,
            on_file=(lambda i, _n, name: on_file(at(i), n, name)) if on_file else None,
            on_result=(lambda i, _n, r: on_result(at(i), n, r)) if on_result else None)
        found = iter(done.results)
        return replace(done, inputs=inputs, results=[
            it if isinstance(it, FileResult) else next(found) for it in items])

    def stored(self, items: Iterable[IngestItem]) -> list[IngestItem]:
        """The images among ``items`` (:func:`~reaper_core.ingest.to_ingest`) that are in the
        database (by the SHA-256 of their file's bytes and their HDU)."""
        from .files import sha256_file
        from .ingest import image_key

        return [it for it in items if it.path.is_file() and store.file_by_sha(
            self.engine, image_key(sha256_file(it.path), it.hdu))]

    def demo_pending(self) -> bool:
        """Whether the demo data set should be (re)loaded: the database holds nothing (a first
        start), or nothing but demo files and no model yet (a load interrupted before its fit).
        Demo files a person removed (:meth:`remove_files`, which fits the model anew) stay
        removed."""
        from .demo import DEMO_FILES

        names = store.file_names(self.engine)
        if not self.settings.load_demo or not names <= set(DEMO_FILES):
            return False
        return not names or self.model() is None

    def load_demo(self, folder: str | Path | None = None, size: int = 512, *,
                  progress: ProgressFn = noop,
                  on_file: Callable[[int, int, str], None] | None = None,
                  on_result: Callable[[int, int, FileResult], None] | None = None,
                  ) -> IngestReport:
        """Write the demo files (once) and ingest them (files already stored are skipped, so
        an interrupted load resumes). ``progress("write", …)`` reports the writing."""
        from .demo import write_demo_files

        progress("write", 0.0, "writing the demo files")
        files = write_demo_files(Path(folder or Path(self.settings.uploads_dir) / "demo"),
                                 size=size)
        progress("write", 1.0, f"wrote {len(files)} demo files")
        return self.ingest(files, progress=progress, on_file=on_file, on_result=on_result)

    # -- the model ----------------------------------------------------------------------------
    def _kept(self, cache: OrderedDict, key: tuple, make: Callable[[], Any], keep: int = 4
              ) -> Any:
        """``cache[key]``, made by ``make()`` the first time (the ``keep`` last used kept);
        a caller that asks while another thread makes it waits for that one."""
        from concurrent.futures import Future

        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            pending = self._making.get(key)
            mine = pending is None
            if mine:
                pending = self._making[key] = Future()
        if not mine:
            return pending.result()
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                del self._making[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            cache[key] = value
            while len(cache) > keep:
                cache.popitem(last=False)
            del self._making[key]
        pending.set_result(value)
        return value

    def warm(self, model: CurrentModel) -> None:
        """Load the model's estimator on a thread of its own unless it is loaded (a page does
        this when it is drawn, so that the detail a person opens next does not wait for it)."""
        with self._lock:
            if ("detector", model.id) in self._per_model:
                return

        def load() -> None:
            try:
                model.detector  # noqa: B018  (loads it into the cache)
            except Exception:  # the detail that needs it reports the error
                pass

        threading.Thread(target=load, daemon=True, name="reaper-warm").start()

    def _model_arrays(self, model_id: int) -> bytes:
        """A model's stored arrays, read once per model (models are never changed)."""
        return self._kept(self._per_model, ("arrays", model_id),
                          lambda: store.model_arrays(self.engine, model_id), keep=6)

    def _detector(self, row: store.DetectorModel):
        """The estimator of a model row, decoded once per model (a few are kept)."""
        from .models import decode_detector

        return self._kept(self._per_model, ("detector", row.id), lambda: decode_detector(
            row, self._model_arrays(row.id)), keep=6)

    def model(self, embedder: str | None = None) -> CurrentModel | None:
        """The current model (for ``embedder`` when given), or None. Its row is read anew each
        call, so a threshold saved elsewhere is seen at once; its arrays (megabytes at a
        million cutouts) and its estimator once per model."""
        from .models import load_model

        row = store.current_model(self.engine, embedder, arrays=False)
        if row is None:
            return None
        return load_model(row, lambda: self._detector(row), lambda: self._model_arrays(row.id))

    def require_model(self, embedder: str | None = None) -> CurrentModel:
        """The current model, or :class:`ModelError` saying how to make one."""
        m = self.model(embedder)
        if m is None:
            raise ModelError("no model yet: ingest some files (or run `anomaly-reaper fit`)")
        return m

    def fit(self, n_components: float | None = None, embedder: str | None = None,
            progress: ProgressFn = noop, *, in_subprocess: bool = False,
            workers: int | None = None, scheduler: str | None = None) -> CurrentModel:
        """Fit a new model on every cutout (labels of "normal" count), make it current, score
        everything, group the anomalies.

        ``in_subprocess``: in a fresh process (what the dashboard does, so that its server
        never holds a fit's memory), with its progress relayed here; its error is raised here
        as the same one sentence. With ``workers`` (a LocalCluster of that many processes) or
        a ``scheduler`` address (default: the ``scheduler`` setting), every cutout is scored on
        the Dask cluster when its workers can read the database
        (:func:`reaper_core.cluster.reads_database`).
        """
        from dataclasses import replace

        from .models import fit_model

        if n_components is not None:  # checked as the setting is: one sentence (0 meant 5)
            replace(self.settings, n_components=n_components)
        if in_subprocess:
            return self._fit_in_subprocess(n_components, embedder, progress)

        settings = replace(self.settings, embedder=embedder) if embedder else self.settings
        if scheduler:  # checked like the setting: one sentence for a malformed address
            settings = replace(settings, scheduler=scheduler)
        scheduler = settings.scheduler or None
        client = None
        if workers or scheduler:
            from .cluster import connect

            client = connect(workers, scheduler)
        try:
            model = fit_model(self.engine, settings, progress=progress,
                              n_components=n_components, client=client)
        finally:
            if client is not None:
                from .cluster import close

                close(client)
        progress("fit", 1.0, "grouping the anomalies")
        self.groups(model)
        return model

    def _fit_in_subprocess(self, n_components: float | None, embedder: str | None,
                           progress: ProgressFn) -> CurrentModel:
        import multiprocessing as mp
        import queue as queue_mod

        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        child = ctx.Process(target=_fit_child, args=(self.settings, n_components, embedder, q),
                            daemon=True)
        child.start()
        outcome = None
        try:
            while outcome is None:
                try:
                    msg = q.get(timeout=0.5)
                except queue_mod.Empty:
                    if not child.is_alive():
                        outcome = ("error", f"the fit's process ended without an answer (exit "
                                            f"code {child.exitcode}); the current model is "
                                            "unchanged")
                    continue
                if msg[0] == "progress":
                    progress(*msg[1:])
                else:
                    outcome = msg
        finally:
            child.join(timeout=30)
        if outcome[0] == "error":
            raise ModelError(outcome[1])
        return self.require_model()

    def prune(self, keep: int | None = None) -> int:
        """Delete old models and their scores, keeping the current one and ``keep`` others
        (default: the ``keep_models`` setting); returns how many were deleted."""
        return store.prune_models(self.engine, self.settings.keep_models if keep is None
                                  else keep)

    def score_pending(self, model: CurrentModel | None = None) -> int:
        """Score cutouts the current model has not scored; returns how many."""
        from .models import score_pending

        return score_pending(self.engine, model or self.require_model())

    def save_threshold(self, mode: str, value: float,
                       model: CurrentModel | None = None) -> CurrentModel:
        """Store a new threshold with the (current) model; returns the model with it."""
        from .models import save_threshold

        model = save_threshold(self.engine, model or self.require_model(), mode, value)
        self.groups(model)  # the flagged set changed: group it again
        return model

    # -- labels -------------------------------------------------------------------------------
    def label(self, ids: Iterable[int], label: str | None, note: str = "",
              whole_object: bool = False) -> list[int]:
        """Label cutouts (``None`` removes the label); with ``whole_object`` also every other
        cutout of the same detected object. Returns the ids labelled."""
        from .labels import check_label

        ids = np.asarray(sorted({int(i) for i in ids}), dtype=np.int64)
        check_label(label)
        known = np.isin(ids, store.existing_ids(self.engine, ids))
        if not known.all():
            raise ReaperError(f"no cutout with id {', '.join(map(str, ids[~known]))}")
        picked = store.object_mates(self.engine, ids) if whole_object else ids
        store.set_label(self.engine, picked.tolist(), label, note)
        return picked.tolist()

    def n_labelled(self, label: str | None = None) -> int:
        """How many cutouts carry ``label`` (None: any label)."""
        if label is None:
            return len(store.all_labels(self.engine)[0])
        return int(store.labelled_ids(self.engine, label).size)

    # -- queries ------------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """Counts of files, cutouts and models."""
        return store.totals(self.engine)

    def overview(self, model: CurrentModel | None) -> dict[str, Any]:
        """What the home page counts, aggregated by the database (see
        :func:`reaper_core.store.overview`), with ``summary``: files, cutouts and anomalies by
        sector, camera and CCD as a DataFrame (missing values shown "—"), as
        :func:`reaper_core.views.summary` gives them from the cutout table."""

        from .views import dash_missing

        out = store.overview(self.engine, model.id if model else None,
                             model.threshold if model else None)
        rows = sorted(out["by_ccd"], key=lambda r: tuple((v is None, v or 0) for v in r[:3]))
        names = ["sector", "camera", "ccd", "files", "cutouts", "anomalies"]
        table = store.as_frame({k: [r[i] for r in rows] for i, k in enumerate(names)})
        out["summary"] = dash_missing(table, ("sector", "camera", "ccd"))
        return out

    def scores(self, model: CurrentModel) -> np.ndarray:
        """Every score under ``model``, shape (n,) (the histogram and the count flagged)."""
        return store.model_scores(self.engine, model.id)

    def top_scored(self, model: CurrentModel, above: float, limit: int = 500
                   ) -> pd.DataFrame:
        """The ``limit`` highest-scoring cutouts above ``above`` (ties by id): columns
        cutout_id, file, x, y, sector, camera, ccd, score, label."""

        rows = store.top_scored(self.engine, model.id, above, limit)
        names = ["cutout_id", "file", "x", "y", "sector", "camera", "ccd", "score", "label"]
        return store.as_frame({k: [r[k] for r in rows] for k in names})

    def data_version(self, labels: bool = True) -> tuple:
        """Changes whenever cutouts, models, scores or (with ``labels``) labels change (not
        the threshold)."""
        return store.data_version(self.engine, labels)

    def rank_index(self, model: CurrentModel | None) -> RankIndex:
        """Every cutout's id, file, segment and score under ``model``, ranked (what the
        gallery filters; see :class:`reaper_core.views.RankIndex`)."""
        from .views import RankIndex

        return RankIndex.from_columns(**store.rank_columns(self.engine,
                                                           model.id if model else None))

    def gallery(self, model: CurrentModel | None, index: RankIndex, filters: Filters, *,
                cutout_ids: Iterable[int] | None = None, per_object: bool = True,
                page: int = 0, per_page: int = 24) -> dict[str, Any]:
        """One page of the cutouts of ``index`` that pass ``filters`` (and are among
        ``cutout_ids`` when given), ranked; with ``per_object`` each object by its best cutout:
        :meth:`gallery_selection` and its :meth:`gallery_page` ``page`` (0-based, clipped)."""
        chosen = self.gallery_selection(model, index, filters, cutout_ids=cutout_ids,
                                        per_object=per_object)
        return {**chosen, "rows": self.gallery_page(model, index, chosen, page, per_page)}

    def gallery_selection(self, model: CurrentModel | None, index: RankIndex, filters: Filters,
                          *, cutout_ids: Iterable[int] | None = None, per_object: bool = True
                          ) -> dict[str, Any]:
        """What the gallery shows, without reading any cutout row: ``n_match`` (cutouts that
        pass), ``n_shown`` (objects, or cutouts), ``ids`` (every passing cutout id, ranked),
        ``n_any`` (with "anomalies only", the cutouts that pass the other filters; else
        ``n_match``), ``shown`` (rank positions of what is shown, in order), ``flagged``
        (their anomaly flags) and, with ``per_object``, ``n_cutouts`` (each object's cutouts
        that pass)."""
        from dataclasses import replace

        from .views import first_per_object, select

        flagged = model.flags(index.score) if model else np.zeros(len(index), bool)
        kw = {"files": self.file_columns(), "labelled": store.all_labels(self.engine),
              "cutout_ids": None if cutout_ids is None else np.fromiter(cutout_ids, np.int64)}
        sel = select(index, flagged, filters, **kw)
        n_any = len(sel)
        if filters.anomalies_only and not len(sel):
            n_any = len(select(index, flagged, replace(filters, anomalies_only=False), **kw))
        out = {"n_match": len(sel), "ids": index.cutout_id[sel], "n_any": n_any}
        shown = sel
        if per_object:
            keep, out["n_cutouts"] = first_per_object(index.file_id[sel], index.segment[sel])
            shown = sel[keep]
        return {**out, "n_shown": len(shown), "shown": shown, "flagged": flagged[shown]}

    def gallery_page(self, model: CurrentModel | None, index: RankIndex,
                     selection: dict[str, Any], page: int = 0, per_page: int = 24
                     ) -> pd.DataFrame:
        """Page ``page`` (0-based, clipped to the pages there are) of a
        :meth:`gallery_selection`: its cutouts as :meth:`rows` gives them, plus
        ``is_anomaly`` (and ``n_cutouts``). Only these rows are read from the database."""
        from .views import n_pages

        page = int(np.clip(page, 0, n_pages(selection["n_shown"], per_page) - 1))
        part = slice(page * per_page, (page + 1) * per_page)
        rows = self.rows(model, index.cutout_id[selection["shown"][part]])
        rows["is_anomaly"] = selection["flagged"][part]
        if "n_cutouts" in selection:
            rows["n_cutouts"] = selection["n_cutouts"][part]
        return rows

    def file_columns(self) -> dict[str, np.ndarray]:
        """Every file's id, name, sector, camera and CCD (see
        :func:`reaper_core.store.file_columns`)."""
        return store.file_columns(self.engine)

    def rows(self, model: CurrentModel | None, ids: Iterable[int]) -> pd.DataFrame:
        """The cutouts ``ids`` (in that order; unknown ids left out) with their file,
        metadata, score under ``model``, label and note, as :meth:`cutout_table` has them."""
        ids = [int(i) for i in ids]
        cols = store.cutout_rows(self.engine, model.id if model else None, ids)
        at = {int(c): i for i, c in enumerate(cols["cutout_id"])}
        order = [at[i] for i in ids if i in at]
        return store.as_frame({k: v[order] for k, v in cols.items()})

    def rows_csv(self, model: CurrentModel | None, ids: Iterable[int],
                 chunk: int = 50_000) -> bytes:
        """CSV of the cutouts ``ids`` (in that order), as :meth:`rows` gives them, plus
        ``is_anomaly``; read ``chunk`` cutouts at a time."""
        ids = [int(i) for i in ids]
        parts = []
        for a in range(0, max(len(ids), 1), chunk):
            rows = self.rows(model, ids[a:a + chunk])
            rows["is_anomaly"] = (model.flags(rows["score"].to_numpy(float)) if model
                                  else np.zeros(len(rows), bool))
            parts.append(rows.to_csv(index=False, header=a == 0))
        return "".join(parts).encode()

    def object_members(self, model: CurrentModel | None, cutout_id: int) -> pd.DataFrame:
        """The other cutouts of ``cutout_id``'s object (same file and segment), highest score
        first, as :meth:`rows` gives them; empty when it has no segment."""
        return store.as_frame(store.object_members(self.engine, model.id if model else None,
                                                   cutout_id))

    def cutout_table(self, model: CurrentModel | None = None) -> pd.DataFrame:
        """Every cutout with its file, metadata, score under ``model`` and label (no pixels);
        see :func:`reaper_core.store.cutout_table`."""
        return store.cutout_table(self.engine, model.id if model else None)

    def ranking(self, model: CurrentModel, one_per_object: bool = False,
                columns: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every cutout under ``model`` (the columns of :func:`reaper_core.store.cutout_columns`,
        or ``columns``, plus ``is_anomaly``), ranked: highest score first, ties by the lower
        cutout id; with ``one_per_object`` each object by its best cutout, plus ``n_cutouts``.
        NumPy only (the command line's fast path)."""
        from .views import first_per_object, rank_order

        cols = store.cutout_columns(self.engine, model.id) if columns is None else columns
        order = rank_order(cols["score"], cols["cutout_id"])
        out = {k: np.asarray(v)[order] for k, v in cols.items()}
        out["is_anomaly"] = model.flags(out["score"])
        if one_per_object:
            keep, n = first_per_object(out["file_id"], out["segment"])
            out = {k: v[keep] for k, v in out.items()}
            out["n_cutouts"] = n
        return out

    def ranked(self, model: CurrentModel, one_per_object: bool = False) -> pd.DataFrame:
        """:meth:`ranking` as a DataFrame."""
        return store.as_frame(self.ranking(model, one_per_object))

    def files(self) -> list[store.FitsFile]:
        """Every stored file."""
        return store.file_records(self.engine)

    def remove_files(self, names: Iterable[str], progress: ProgressFn = noop, *,
                     in_subprocess: bool = False) -> str:
        """Delete the stored files named ``names`` (every file of each name) with their
        cutouts, embeddings, scores, labels and groups, in one transaction, then fit the model
        anew on the cutouts left (its threshold mode and value kept; ``in_subprocess`` as for
        :meth:`fit`), or, with none left, drop the models. Returns what was done, in one
        sentence; a name that no stored file has raises :class:`ReaperError` and deletes
        nothing. The files on disk and the stacks' events stay."""
        from .words import count

        wanted = list(dict.fromkeys(str(n) for n in names))
        if not wanted:
            raise ReaperError("name at least one file to remove")
        stored = self.files()
        names = {f.name for f in stored}
        missing = [n for n in wanted if n not in names]
        if missing:
            raise ReaperError(f"no stored file is named {missing[0]!r}; nothing was removed")
        chosen = set(wanted)
        ids = [f.id for f in stored if f.name in chosen]
        progress("remove", 0.0, f"removing {count(len(ids), 'file')}")
        gone = store.delete_files(self.engine, ids)
        done = f"removed {count(len(ids), 'file')} ({count(gone, 'cutout')})"
        left = store.totals(self.engine)["cutouts"]
        has_model = self.model() is not None  # (none once nothing is left)
        if left >= 3 and has_model:
            model = self.fit(progress=progress, in_subprocess=in_subprocess)
            return (f"{done}; the model was fitted anew on the {count(left, 'cutout')} left "
                    f"(model {model.id})")
        if left:
            return (f"{done}; {count(left, 'cutout')} left, too few to fit a model anew"
                    + (" (the current one stays)" if has_model else ""))
        return f"{done}; nothing is left, so there is no model"

    def file(self, file_id: int) -> store.FitsFile | None:
        """One stored file, or None."""
        return store.file_record(self.engine, file_id)

    def cutouts(self, ids: list[int]) -> dict[int, tuple[np.ndarray, store.Cutout]]:
        """Patches, shape (s, s), and rows of the given cutouts, by id."""
        return store.get_cutouts(self.engine, ids)

    def anomalies_per_file(self, model: CurrentModel) -> dict[int, int]:
        """{file id: cutouts flagged by ``model``}."""
        return store.anomalies_per_file(self.engine, model.id, model.threshold)

    def pca_coordinates(self, model: CurrentModel, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(cutout ids, shape (m,); first ``n`` principal-component coordinates, shape (m, n))."""
        ids, X = store.load_embeddings(self.engine, model.embedder)
        if len(ids) == 0:
            return ids, np.zeros((0, n))
        return ids, model.projection.transform(X)[:, :n]

    def explore_points(self, model: CurrentModel, n: int = 5,
                       max_points: int = 20_000) -> dict[str, Any]:
        """What the Explore scatter draws, read for the points alone: every anomaly, and the
        other cutouts whole when there are at most ``max_points`` in all, else those whose id
        is a multiple of ``every`` = ⌈cutouts / max_points⌉ (a stated, reproducible sample).
        Columns ``cutout_id``, ``pcs`` (m, n), ``score``, ``file``, ``label``; and ``every``,
        ``total`` (cutouts embedded)."""
        total = store.count_embeddings(self.engine, model.embedder)
        every = max(1, -(-total // max_points))
        rows = store.explore_rows(self.engine, model.id, model.embedder, model.threshold, every)
        X = rows.pop("vector")
        rows["pcs"] = (model.projection.transform(X)[:, :n] if len(X)
                       else np.zeros((0, n)))
        return {**rows, "every": every, "total": total}

    # -- explanations -------------------------------------------------------------------------
    def features(self, model: CurrentModel) -> list[Feature] | None:
        """What each embedding dimension of the model's embedder measures (None if unknown)."""
        from .embedders import get_embedder

        try:
            return get_embedder(model.embedder, self.settings).features
        except ReaperError:
            return None

    def _per_cutout(self, model: CurrentModel, ids: list[int],
                    fn: Callable[[np.ndarray], list]) -> dict[int, Any]:
        """``fn`` of the embeddings (shape (n, d)) of the cutouts ``ids`` that the model's
        embedder embedded, one result per row, keyed by cutout id in the order of ``ids``."""
        got, X = store.load_embeddings(self.engine, model.embedder, ids=ids)
        if len(got) == 0:
            return {}
        found = dict(zip(got.tolist(), fn(X), strict=True))
        return {int(i): found[int(i)] for i in ids if int(i) in found}

    def explain(self, model: CurrentModel, ids: list[int],
                top: int = 5) -> dict[int, list[tuple[str, float]]]:
        """{cutout id: [(feature, share of the reconstruction error), …]}, in the order of
        ``ids``, for those embedded by the model's embedder."""
        from .explain import top_features

        features = self.features(model)
        return self._per_cutout(model, ids,
                                lambda X: top_features(model.detector, X, features, top))

    def reasons(self, model: CurrentModel, ids: list[int], top: int = 3) -> dict[int, list[str]]:
        """{cutout id: why it scores high, in plain words}, in the order of ``ids``."""
        from .explain import reasons

        features = self.features(model)
        return self._per_cutout(model, ids, lambda X: reasons(model.detector, X, features, top))

    def error_by_quadrant(self, model: CurrentModel, cutout_id: int) -> np.ndarray | None:
        """Share of a cutout's reconstruction error in each patch quadrant, shape (2, 2)."""
        from .explain import error_by_quadrant

        features = self.features(model)
        return self._per_cutout(model, [cutout_id], lambda X: [
            error_by_quadrant(model.detector, x, features) for x in X]).get(int(cutout_id))

    # -- discovery: re-ranking from labels, similar cutouts, groups ----------------------------
    def _space(self, model: CurrentModel) -> tuple[np.ndarray, np.ndarray]:
        """(cutout ids, shape (n,); standardised embeddings, shape (n, d), float32) of every
        cutout the model's embedder embedded; kept in memory per model."""
        version = store.data_version(self.engine)[:2]  # cutouts and models; labels do not count
        with self._lock:
            got = self._space_cache
        if got is not None and got[:2] == (model.id, version):
            return got[2], got[3]
        ids, Z = self._standardised(model)
        with self._lock:
            self._space_cache = (model.id, version, ids, Z, None)
        return ids, Z

    def _standardised(self, model: CurrentModel, **which: Any) -> tuple[np.ndarray, np.ndarray]:
        """(cutout ids, shape (n,); their standardised embeddings, each feature times its
        :attr:`~reaper_core.embedders.Feature.weight`, shape (n, d), float32) of the cutouts
        :func:`reaper_core.store.load_embeddings` gives for ``which``: the space where
        neighbours are found."""
        ids, X = store.load_embeddings(self.engine, model.embedder, **which)
        if not len(ids):
            return ids, np.zeros((0, 0), np.float32)
        Z = model.detector.standardised(X).astype(np.float32)
        features = self.features(model)
        if features is not None and len(features) == Z.shape[1]:
            Z *= np.array([f.weight for f in features], np.float32)
        return ids, Z

    def reranked(self, model: CurrentModel | None = None,
                 columns: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every embedded cutout's re-ranked score from every label (see
        :mod:`reaper_core.rerank`), in [0, 1]: columns ``cutout_id``, ``rerank``, ``closeness``
        (to the nearest label), ``unsupervised`` (rank fraction), ``label``, ``file_id``,
        ``segment``, ``x``, ``y``, ranked: highest re-ranked score first, ties by the lower id.
        ``columns``: :func:`reaper_core.store.cutout_columns` under the model, when already
        read."""
        from .rerank import LabelReranker, local_scale, rank_fraction
        from .views import rank_order

        model = model or self.require_model()
        ids, Z = self._space(model)
        cols = store.cutout_columns(self.engine, model.id) if columns is None else columns
        pos = np.searchsorted(cols["cutout_id"], ids)
        labels = cols["label"][pos]
        has = np.array([lab is not None for lab in labels], bool)
        # Local scales depend on the embeddings only: each label's is computed once.
        with self._lock:
            cached = self._scales if self._scales[0] == (model.id, len(ids)) else (
                (model.id, len(ids)), {})
        known = cached[1]
        lab_ids = ids[has].tolist()
        todo = [i for i, cid in enumerate(lab_ids) if cid not in known]
        if todo:
            got = local_scale(Z[has][todo], Z)
            known.update(zip([lab_ids[i] for i in todo], got.tolist(), strict=True))
        with self._lock:
            self._scales = cached
        rr = LabelReranker(self.settings.rerank_radius).fit(
            Z[has], labels[has].tolist(), scale=np.array([known[c] for c in lab_ids]))
        c, p = rr.closeness(Z)
        u = rank_fraction(cols["score"][pos])
        score = rr.combine(c, p, u)
        order = rank_order(score, ids)
        at = pos[order]
        return {"cutout_id": ids[order], "rerank": score[order], "closeness": c[order],
                "unsupervised": u[order], "label": labels[order],
                **{k: cols[k][at] for k in ("file_id", "segment", "x", "y")}}

    def discover_queue(self, model: CurrentModel | None = None, n: int = 24, explore: int = 4,
                       reranked: dict[str, np.ndarray] | None = None) -> list[int]:
        """The ``n`` cutouts the model most wants judged next: ``n - explore`` with the highest
        re-ranked score, then ``explore`` from the regions no label has reached yet (highest
        unsupervised score × distance from every label). One per object, and one per place:
        none within half a patch of a labelled cutout or of another in the page — places next
        to a labelled cutout come only once no other is left, so that the queue is empty only
        when every cutout is labelled; and a window that a window labelled interesting (or
        anomaly) partly showed already counts less, by :data:`~reaper_core.rerank.SEEN_PENALTY`
        × the share they have in common (it most likely shows the same thing again).
        ``reranked``: :meth:`reranked` when already made."""
        from .labels import lifts
        from .rerank import SEEN_PENALTY
        from .views import away_from, first_per_object, rank_order, spread, window_overlap

        r = self.reranked(model) if reranked is None else reranked
        x, y, f = r["x"], r["y"], r["file_id"]
        labelled = np.array([lab is not None for lab in r["label"]], bool)
        size = float(self.settings.patch_size)
        free = ~labelled & away_from(f, x, y, f[labelled], x[labelled], y[labelled], size / 2)
        # One per object, a free place first: each group keeps its ranked order.
        order = np.concatenate([np.flatnonzero(free), np.flatnonzero(~labelled & ~free)])
        keep, _ = first_per_object(f[order], r["segment"][order])
        cand = order[keep]
        shown = np.array([lifts(lab) for lab in r["label"]], bool)
        seen = np.ones(len(x))
        seen[cand] -= SEEN_PENALTY * window_overlap(f[cand], x[cand], y[cand], f[shown],
                                                    x[shown], y[shown], size)
        cand = cand[rank_order(r["rerank"][cand] * seen[cand], r["cutout_id"][cand])]
        cand, near = cand[free[cand]], cand[~free[cand]]
        best = spread(cand, f, x, y, max(n - explore, 0), size / 2)
        novelty = r["unsupervised"] * (1.0 - r["closeness"]) * seen
        rest = cand[~np.isin(cand, best)]
        rest = rest[rank_order(novelty[rest], r["cutout_id"][rest])]
        chosen = spread(np.concatenate([best, rest, near]).astype(int), f, x, y, n, size / 2)
        return r["cutout_id"][chosen].tolist()

    def similar(self, cutout_id: int, top: int = 20,
                model: CurrentModel | None = None) -> list[tuple[int, float]]:
        """The ``top`` cutouts nearest to one cutout in the model's standardised embedding
        space, across every file, each feature weighed by the share of the cutout's
        reconstruction error it carries (:func:`reaper_core.similarity.oddity_metric`):
        [(cutout id, distance), …], nearest first."""
        from .similarity import SimilarityIndex, oddity_metric

        model = model or self.require_model()
        ids, Z = self._space(model)
        where = np.flatnonzero(ids == int(cutout_id))
        if len(where) == 0:
            raise ReaperError(f"no cutout with id {int(cutout_id)} embedded by the current "
                              f"model's embedder ({model.embedder})")
        with self._lock:
            cached = self._space_cache
            index = cached[4] if cached is not None and cached[3] is Z else None
        if index is None:
            index = SimilarityIndex(ids, Z)
            with self._lock:
                if self._space_cache is not None and self._space_cache[3] is Z:
                    self._space_cache = (*self._space_cache[:4], index)
        _, X = store.load_embeddings(self.engine, model.embedder, ids=[int(cutout_id)])
        weights = oddity_metric(model.detector.residuals(X)[0])
        got, dist = index.query(Z[where[0]], top, exclude=int(cutout_id), weights=weights)
        return list(zip(got.tolist(), dist.tolist(), strict=True))

    def groups(self, model: CurrentModel | None = None) -> dict[int, int]:
        """{cutout id: group} of the flagged cutouts (0: in no group), made by
        :func:`reaper_core.groups.group_anomalies` once per model and threshold and stored."""
        from .groups import group_anomalies

        model = model or self.require_model()
        made_for, stored = store.read_groups(self.engine, model.id)
        if made_for is not None and made_for == model.threshold:
            return stored
        # The flagged cutouts' embeddings alone (a few % of them: a fit's child process has
        # not read every embedding, and need not).
        ids, Z = self._standardised(model, above=(model.id, model.threshold))
        groups = group_anomalies(Z)
        store.write_groups(self.engine, model.id, model.threshold, ids, groups)
        return dict(zip(ids.tolist(), groups.tolist(), strict=True))

    def group_reasons(self, model: CurrentModel | None = None, top: int = 3
                      ) -> dict[int, list[str]]:
        """{group: what its members share, in plain words (up to ``top`` phrases)} of the
        groups of :meth:`groups` (see :func:`reaper_core.explain.group_reasons`)."""
        from .explain import group_reasons

        model = model or self.require_model()
        groups = self.groups(model)
        ids, X = store.load_embeddings(self.engine, model.embedder,
                                       above=(model.id, model.threshold))
        if not len(ids):
            return {}
        return group_reasons(model.detector, X, np.array([groups.get(int(c), 0) for c in ids]),
                             self.features(model), top)

    # -- files for other tools ----------------------------------------------------------------
    def cutout_fits(self, cutout_id: int, model: CurrentModel | None = None) -> tuple[str, bytes]:
        """(file name, FITS bytes) of one cutout with its WCS, cut again from the original file
        when it is still where it was ingested from (see :func:`reaper_core.downloads.cutout_fits`
        ); the header names the file, the cutout and its score under ``model``."""
        from .downloads import cutout_file_name, cutout_fits
        from .fits_reader import read_fits

        patch, c = self._one_cutout(cutout_id)
        fr = self.file(c.file_id)
        image = None
        if fr.stored_path and Path(fr.stored_path).is_file():
            try:
                image = read_fits(fr.stored_path, name=fr.name, hdu=fr.hdu)
            except (ReaperError, OSError):
                image = None
        cards: dict[str, object] = {"CUTOUTID": int(cutout_id), "ORIGFILE": fr.name[:60]}
        model = model or self.model()
        score = store.scores_of(self.engine, model.id, [cutout_id]) if model else {}
        if cutout_id in score:
            cards["SCORE"] = float(score[cutout_id])
        return (cutout_file_name(cutout_id, "fits"),
                cutout_fits(patch, c.x, c.y, image if image is not None and image.data.shape
                            == (fr.ny, fr.nx) else None, cards))

    def cutout_png(self, cutout_id: int, stretch: str = "zscale", cmap: str = "gray",
                   upscale: int = 8) -> tuple[str, bytes]:
        """(file name, PNG bytes) of one cutout as shown (``stretch``, ``cmap``), each pixel
        ``upscale`` × ``upscale`` screen pixels."""
        from .cutouts import to_png
        from .downloads import cutout_file_name

        patch, _ = self._one_cutout(cutout_id)
        return cutout_file_name(cutout_id, "png"), to_png(patch, stretch, upscale, cmap)

    def region_file(self, file: int | str, model: CurrentModel | None = None) -> tuple[str, str]:
        """(file name, DS9 region text) boxing the flagged cutouts of one stored file (by id or
        name), each labelled with its id and score, so they overlay the file in DS9."""
        from .downloads import ds9_regions, region_file_name

        model = model or self.require_model()
        fr = self._file_named(file)
        cols = self.ranking(model)
        keep = (cols["file_id"] == fr.id) & cols["is_anomaly"]
        texts = [f"#{i} score {s:.3g}" for i, s in zip(cols["cutout_id"][keep],
                                                        cols["score"][keep], strict=True)]
        text = ds9_regions(cols["x"][keep], cols["y"][keep], fr.patch_size, texts)
        return region_file_name(fr.name), text

    def pixel_scale(self, file_id: int) -> float | None:
        """Arcseconds per pixel of a stored file (geometric mean of its WCS's two axes), or
        None without a WCS."""
        from astropy.io import fits
        from astropy.wcs import WCS
        from astropy.wcs.utils import proj_plane_pixel_scales

        fr = self.file(file_id)
        if fr is None or not fr.wcs_header:
            return None
        scales = proj_plane_pixel_scales(WCS(fits.Header.fromstring(fr.wcs_header)).celestial)
        return float(np.sqrt(np.prod(scales)) * 3600.0)

    def _one_cutout(self, cutout_id: int) -> tuple[np.ndarray, store.Cutout]:
        got = self.cutouts([int(cutout_id)])
        if int(cutout_id) not in got:
            raise ReaperError(f"no cutout with id {int(cutout_id)}")
        return got[int(cutout_id)]

    def _file_named(self, file: int | str) -> store.FitsFile:
        files = self.files()
        if isinstance(file, int) or str(file).isdigit():
            found = [f for f in files if f.id == int(file)]
        else:
            found = [f for f in files if f.name == str(file)]
        if not found:
            raise ReaperError(f"no stored file {file!r} (give its id or name as listed by "
                              "`anomaly-reaper export` or on the home page)")
        return found[0]

    # -- report -------------------------------------------------------------------------------
    def report(self, path: str | Path, top: int = 24) -> list[Path]:
        """Write the run's report (:mod:`reaper_core.report`): a 3-page PDF, or one PNG per
        page; the contact sheet shows the ``top`` objects by their best cutout."""
        from datetime import UTC, datetime

        from .config import mask_url
        from .report import ReportData, write_report

        model = self.require_model()
        table = self.cutout_table(model)
        table["is_anomaly"] = model.flags(table["score"].to_numpy(float))
        ids, pcs = self.pca_coordinates(model, n=3)
        best = self.ranked(model, one_per_object=True).head(top)
        patches = self.cutouts(best["cutout_id"].astype(int).tolist())
        shown = [(int(c), patches[int(c)][0], f"#{i + 1} · cutout {int(c)} · score {s:.3g}\n"
                                              f"{str(f)[:30]}")
                 for i, (c, s, f) in enumerate(zip(best["cutout_id"], best["score"],
                                                   best["file"], strict=True))
                 if int(c) in patches]
        settings = {
            "model": model.summary(), "threshold": model.threshold_text(),
            "patch size": f"{self.settings.patch_size} px",
            "sources": self.settings.source_method, "database": mask_url(self.settings.db_url),
            "made": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        try:
            return write_report(ReportData(table, model.threshold, pcs, ids, shown, settings),
                                path)
        except ValueError as exc:
            raise ReaperError(str(exc)) from None

    # -- export -------------------------------------------------------------------------------
    def export_table(self, model: CurrentModel | None = None) -> pd.DataFrame:
        """The export contract's table under ``model`` (default: the current one)."""
        model = model or self.model()
        return store.as_frame(self._export_columns(model))

    def _export_columns(self, model: CurrentModel | None) -> dict[str, np.ndarray]:
        """The export's columns; the re-ranked score from every label (the unsupervised rank
        fraction when nothing is labelled, which needs no model in memory) and the stored
        groups."""
        from .export import export_columns
        from .rerank import rank_fraction

        if model is None:
            return export_columns(self.engine, None)
        _, groups = store.read_groups(self.engine, model.id)
        cols = store.cutout_columns(self.engine, model.id)
        if any(lab is not None for lab in cols["label"]):
            r = self.reranked(model, cols)
            rerank = dict(zip(r["cutout_id"].tolist(), r["rerank"].tolist(), strict=True))
        else:
            rerank = dict(zip(cols["cutout_id"].tolist(),
                              rank_fraction(cols["score"]).tolist(), strict=True))
        return export_columns(self.engine, model, rerank, groups, cols)

    def export(self, path: str | Path, fmt: str | None = None,
               anomalies_only: bool = False) -> tuple[Path, int]:
        """Write the export to ``path`` (CSV, FITS or VOTable); returns (path, rows)."""
        from .export import write_export

        cols = self._export_columns(self.model())
        if anomalies_only:
            cols = {k: v[cols["is_anomaly"]] for k, v in cols.items()}
        return write_export(cols, path, fmt), len(cols["cutout_id"])

    # -- time domain: stacks and their events -------------------------------------------------
    def search_stack(self, paths: Iterable[str | Path], *,
                     progress: ProgressFn = noop) -> list[int]:
        """Search frames for time-domain events without cutting single-frame patches: one
        TESScut cube, or single-frame files of one sector/camera/CCD or one field — a stack of
        each chip when they are a mosaic's (:func:`~reaper_core.fits_reader.separate_images`).
        Returns the stacks' ids.

        Raises :class:`~reaper_core.errors.StackError` (or ``FITSReadError``) with one sentence
        when they cannot form a stack.
        """
        import hashlib

        from .files import expand_paths, sha256_file
        from .fits_reader import separate_images
        from .stacks import stack_from_cube, stack_from_files
        from .timedomain import search_and_store

        files = expand_paths([Path(p) for p in paths])
        if len(files) == 1:
            return [search_and_store(self.engine, stack_from_cube(files[0]),
                                     f"cube:{sha256_file(files[0])}", self.settings, progress)]
        digests = ",".join(sorted(sha256_file(f) for f in files))
        ids = []
        for hdu in separate_images(files[0]) or [None]:
            stack = stack_from_files(files, hdu=hdu)
            chip = "" if hdu is None else f"[{hdu}]"
            key = "files:" + hashlib.sha256((digests + chip).encode()).hexdigest()
            ids.append(search_and_store(self.engine, stack, key, self.settings, progress))
        return ids

    def stacks(self) -> list[dict[str, Any]]:
        """Every stack with its span (BTJD), cadence (minutes), gaps, flagged frames and
        events, by id."""
        import json

        counts: dict[int, int] = {}
        for r in store.event_rows(self.engine):
            counts[r.stack_id] = counts.get(r.stack_id, 0) + 1
        return [{"id": s.id, "stack": s.name, "frames": s.n_frames,
                 "t_start": s.t_start, "t_end": s.t_end,
                 "days": (s.t_end - s.t_start) if s.t_start is not None else None,
                 "cadence_min": s.cadence_min, "gaps": len(json.loads(s.gaps_json)),
                 "flagged": s.n_flagged, "events": counts.get(s.id, 0)}
                for s in store.stacks(self.engine)]

    def stack_id(self, name_or_id: str | int) -> int:
        """A stack's id from its id or its name; :class:`ReaperError` naming the choices."""
        rows = store.stacks(self.engine)
        for s in rows:
            if str(s.id) == str(name_or_id) or s.name == str(name_or_id):
                return int(s.id)
        names = ", ".join(f"{s.id} ({s.name})" for s in rows) or "none yet"
        raise ReaperError(f"no stack {str(name_or_id)!r}; stacks: {names}")

    def events(self, stack: str | int | None = None, kind: str | None = None
               ) -> dict[str, np.ndarray]:
        """Events as ranked columns (:data:`~reaper_core.timedomain.EVENT_COLUMNS`)."""
        from .events import EVENT_KINDS
        from .timedomain import event_columns

        if kind is not None and kind not in EVENT_KINDS:
            raise ReaperError(f"event kind must be one of {', '.join(EVENT_KINDS)}, "
                              f"not {kind!r}")
        sid = self.stack_id(stack) if stack is not None else None
        return event_columns(self.engine, sid, kind)

    def event(self, event_id: int) -> store.TimeEvent:
        """One event with its strip, light curve and features."""
        row = store.event_row(self.engine, int(event_id))
        if row is None:
            raise ReaperError(f"no event with id {event_id}")
        return row

    def event_model(self) -> store.EventModel | None:
        return store.current_event_model(self.engine)

    def save_event_threshold(self, mode: str, value: float) -> store.EventModel:
        """Store a new threshold with the event model (nothing re-fitted)."""
        from .thresholds import threshold_from_scores

        row = self.event_model()
        if row is None:
            raise ModelError("no event model yet: it is fitted once 3 events are stored")
        # From the events' ranking scores (strangeness × significance, timedomain.event_scores).
        scores = np.array([r.score for r in store.event_rows(self.engine)
                           if r.score is not None], float)
        try:
            thr = threshold_from_scores(scores, mode, float(value))
        except ValueError as exc:
            raise ModelError(f"threshold not saved: {exc}") from None
        return store.save_threshold(self.engine, row.id, mode, float(value), thr,
                                    store.EventModel)

    def label_event(self, event_id: int, label: str | None, note: str = "") -> None:
        """Label one event (:meth:`label_events`)."""
        self.label_events([event_id], label, note)

    def label_events(self, event_ids: list[int], label: str | None, note: str = "") -> None:
        """Label events (None removes their labels); when that changes whether one damps the
        events like it (normal, artefact), the event model is re-fitted once, at once (events
        are few: milliseconds)."""
        from .labels import sinks
        from .timedomain import fit_event_model

        try:  # an unknown label is refused there too, before anything is changed
            before = store.set_event_labels(self.engine, event_ids, label, note)
        except LookupError as exc:
            raise ReaperError(str(exc)) from None
        if any(sinks(lab) != sinks(label) for lab in before.values()):
            fit_event_model(self.engine, self.settings)

    def event_lightcurve(self, event_id: int) -> dict[str, np.ndarray]:
        """An event's light curve: ``time`` (BTJD), ``diff_flux``, ``diff_flux_err``, ``flux``
        (e⁻/s in a 2-px aperture) and ``quality``, each shape (n_frames,)."""
        from .timedomain import unpack_lightcurve

        return unpack_lightcurve(self.event(event_id).lightcurve)

    def export_events(self, path: str | Path, fmt: str | None = None,
                      stack: str | int | None = None, kind: str | None = None) -> int:
        """Write the events (one row each) as CSV, FITS or VOTable; returns how many."""
        from .export import write_export

        cols = self.events(stack, kind)
        write_export(cols, path, fmt)
        return len(cols["id"])

    def export_lightcurve(self, event_id: int, path: str | Path, fmt: str | None = None
                          ) -> Path:
        """Write an event's light curve as CSV, FITS or VOTable."""
        from .export import write_export

        return write_export(self.event_lightcurve(event_id), path, fmt)

    def stack_view(self, stack_id: int, frame: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Frame ``frame`` of a stored stack, its difference (both e⁻/s, science region,
        shape (ny, nx)) and its time (BTJD); the stack's reference is made once per service."""
        import json

        from .difference import build_reference, difference
        from .timedomain import stack_for_row

        row = store.stack_row(self.engine, int(stack_id))
        if row is None:
            raise ReaperError(f"no stack with id {stack_id}")
        if not 0 <= frame < row.n_frames:
            raise ReaperError(f"{row.name} has frames 0 to {row.n_frames - 1}, not {frame}")
        if self._reference is None or self._reference[0] != row.id:
            st = stack_for_row(row)
            self._reference = (row.id, st, build_reference(st))
        _, st, ref = self._reference
        img = st.frame(frame)
        shift = tuple(json.loads(row.shifts_json)[frame])
        return img, difference(img, ref, shift=shift, matched=False).diff, float(st.times[frame])

    def stack_offset(self, stack_id: int) -> tuple[int, int]:
        """(x0, y0): the stored-array pixel where a stack's science region starts."""
        import json

        row = store.stack_row(self.engine, int(stack_id))
        region = json.loads(row.science_json) if row and row.science_json else None
        return (region[2], region[0]) if region else (0, 0)

    def _strip_images(self, event_id: int, scale: int):
        from PIL import Image

        from .timedomain import unpack_strip

        strip = unpack_strip(self.event(event_id))
        hi = float(np.percentile(np.abs(strip), 99.5)) or 1.0
        norm = np.clip((strip + hi) / (2 * hi), 0, 1)  # symmetric: 0 difference is mid-grey
        return [Image.fromarray((255 * f[::-1]).astype(np.uint8)).resize(
            (f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in norm]

    def event_strip_pngs(self, event_id: int, scale: int = 3) -> list[bytes]:
        """The event's difference cutouts across its frames, as PNG images (north up as
        stored: row 0 at the bottom)."""
        import io

        out = []
        for im in self._strip_images(event_id, scale):
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            out.append(buf.getvalue())
        return out

    def lightcurve_csv(self, event_id: int) -> bytes:
        """An event's light curve as CSV bytes (for a download)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return self.export_lightcurve(event_id, Path(tmp) / "lc.csv").read_bytes()

    def event_gif(self, event_id: int, scale: int = 6) -> bytes:
        """The event's difference cutouts as an animated GIF (one frame each, 0.4 s)."""
        import io

        frames = self._strip_images(event_id, scale)
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                       duration=400, loop=0)
        return buf.getvalue()


def _fit_child(settings: Settings, n_components: float | None, embedder: str | None,
               queue: Any) -> None:
    """:meth:`Reaper.fit` in a process of its own: progress and the outcome go to ``queue``."""
    from .config import mask_url
    from .errors import describe_failure

    try:
        Reaper(settings).fit(n_components, embedder,
                             progress=lambda *a: queue.put(("progress", *a)))
        queue.put(("done",))
    except Exception as exc:
        queue.put(("error", describe_failure(exc, mask_url(settings.db_url))))
