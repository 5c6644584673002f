"""Store: SQLModel tables and the few queries everything else uses.

SQLite by default (WAL journal, a long busy timeout, foreign keys on); any SQLAlchemy URL works,
PostgreSQL included. Each ingested file is written in one transaction, so a failure — or a killed
process — leaves nothing of that file behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlalchemy import Column, Index, LargeBinary, event, func, insert, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import defer
from sqlmodel import Field, Session, SQLModel, create_engine, select, update

from .labels import check_label

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


class FitsFile(SQLModel, table=True):
    """One ingested file, identified by the SHA-256 of its bytes."""

    __tablename__ = "fits_file"
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True, index=True)
    name: str
    stored_path: str | None = None
    size_bytes: int = 0
    layout: str = "plain"
    sector: int | None = Field(default=None, index=True)
    camera: int | None = None
    ccd: int | None = None
    tstart: float | None = None
    tstop: float | None = None
    date_obs: str | None = None
    ny: int = 0
    nx: int = 0
    header_json: str = "{}"
    wcs_header: str | None = None
    source_method: str = "auto"
    patch_size: int = 32
    n_cutouts: int = 0
    #: The HDU the image was read from, and its TESS quality bits (NULL: stored before).
    hdu: int | None = None
    quality: int | None = None
    #: Its cutouts' ids are ``first_cutout_id … first_cutout_id + n_cutouts − 1`` (NULL: not
    #: one run of ids — two PostgreSQL writers' reservations interleaved — or stored before).
    first_cutout_id: int | None = None
    preview_png: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    ingested_at: datetime = Field(default_factory=_now)


class Cutout(SQLModel, table=True):
    """One patch: where it is, what it looks like, its metadata."""

    __tablename__ = "cutout"
    # One index besides the key: (file_id, segment) serves the lookups by file alone too (a
    # file's cutouts, the cascade of a file's deletion); sector, camera and CCD are filtered
    # through the files' table. Two more indexes (file_id; sector, camera, ccd) slowed every
    # insert and served no query: databases made with them lose them when opened.
    __table_args__ = (Index("ix_cutout_file_segment", "file_id", "segment"),)
    id: int | None = Field(default=None, primary_key=True)
    file_id: int = Field(foreign_key="fits_file.id", ondelete="CASCADE")
    x: float
    y: float
    ra: float | None = None
    dec: float | None = None
    sector: int | None = None
    camera: int | None = None
    ccd: int | None = None
    time: float | None = None
    origin: str = "segment"
    #: The object the cutout belongs to within its file (``Sources.segment``): the cells of
    #: one big galaxy or bleed trail share it; 0 for none, NULL for cutouts stored before it.
    segment: int | None = None
    patch_size: int = 32
    patch: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Embedding(SQLModel, table=True):
    """A cutout's embedding under one embedder (float32 bytes)."""

    __tablename__ = "embedding"
    cutout_id: int = Field(foreign_key="cutout.id", primary_key=True, ondelete="CASCADE")
    embedder: str = Field(primary_key=True, max_length=64)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class DetectorModel(SQLModel, table=True):
    """A fitted detector, saved as npz arrays and JSON (never pickle)."""

    __tablename__ = "detector_model"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=_now)
    embedder: str
    n_components_requested: float
    n_components: int
    n_train: int
    threshold_mode: str
    threshold_value: float
    threshold: float
    explained_variance_json: str = "[]"
    arrays: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    meta_json: str
    is_current: bool = Field(default=False, index=True)


class Score(SQLModel, table=True):
    """A cutout's score under one model."""

    __tablename__ = "score"
    __table_args__ = (Index("ix_score_model_score", "model_id", "score"),)
    model_id: int = Field(foreign_key="detector_model.id", primary_key=True, ondelete="CASCADE")
    cutout_id: int = Field(foreign_key="cutout.id", primary_key=True, ondelete="CASCADE")
    score: float


class Label(SQLModel, table=True):
    """A person's label for a cutout."""

    __tablename__ = "label"
    cutout_id: int = Field(foreign_key="cutout.id", primary_key=True, ondelete="CASCADE")
    label: str = Field(max_length=32)
    note: str = ""
    updated_at: datetime = Field(default_factory=_now)


class AnomalyGroup(SQLModel, table=True):
    """The group of a flagged cutout under one model and threshold (see
    :mod:`reaper_core.groups`); 0 for a flagged cutout in no group."""

    __tablename__ = "anomaly_group"
    model_id: int = Field(foreign_key="detector_model.id", primary_key=True, ondelete="CASCADE")
    cutout_id: int = Field(foreign_key="cutout.id", primary_key=True, ondelete="CASCADE")
    grp: int = 0
    threshold: float = 0.0




class ImageStack(SQLModel, table=True):
    """A stack of frames searched for time-domain events (see :mod:`reaper_core.stacks`).

    ``key`` identifies it (a cube's SHA-256, or sector/camera/CCD and size); ``frames_json``
    lists its frames (path, name, time, quality, cube row) and ``shifts_json`` the pointing
    offset of each; ``science_json`` the science region, ``wcs_header`` its WCS.
    """

    __tablename__ = "image_stack"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, unique=True, max_length=128)
    name: str
    sector: int | None = None
    camera: int | None = None
    ccd: int | None = None
    n_frames: int = 0
    n_flagged: int = 0
    t_start: float | None = None
    t_end: float | None = None
    cadence_min: float | None = None
    gaps_json: str = "[]"
    frames_json: str = "[]"
    shifts_json: str = "[]"
    science_json: str | None = None
    wcs_header: str | None = None
    ny: int = 0
    nx: int = 0
    n_detections: int = 0
    searched_at: datetime = Field(default_factory=_now)


class TimeEvent(SQLModel, table=True):
    """One time-domain event of a stack: where and when, how strong, its cutout strip, light
    curve and features, its score under the current event model and a person's label."""

    __tablename__ = "time_event"
    id: int | None = Field(default=None, primary_key=True)
    stack_id: int = Field(foreign_key="image_stack.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16, index=True)
    x: float
    y: float
    x_start: float | None = None
    y_start: float | None = None
    x_end: float | None = None
    y_end: float | None = None
    rate: float | None = None
    t_start: float
    t_peak: float
    t_end: float
    frame_peak: int = 0
    peak_sigma: float
    lc_sigma: float | None = None
    sign: int = 1
    n_detections: int = 1
    #: Frames summed in each detection: 1, or the length of the bins it was found in.
    binned: int = 1
    ra: float | None = None
    dec: float | None = None
    score: float | None = None
    label: str | None = Field(default=None, max_length=32)
    note: str = ""
    patch_size: int = 32
    strip: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    strip_frames_json: str = "[]"
    track_json: str = "[]"
    lightcurve: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    features: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class EventModel(SQLModel, table=True):
    """The detector that ranks events (its own PCA, fitted on every stored event), with its
    one stored threshold."""

    __tablename__ = "event_model"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=_now)
    embedder: str
    n_components: int
    n_train: int
    threshold_mode: str
    threshold_value: float
    threshold: float
    arrays: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    meta_json: str
    explained_variance_json: str = "[]"
    is_current: bool = Field(default=False, index=True)


#: SQLite page size of new database files, bytes (see :func:`make_engine`).
SQLITE_PAGE_SIZE = 16384


def make_engine(url: str) -> Engine:
    """Engine for ``url`` with the tables created; SQLite gets WAL and a 60 s busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # Before the first table (a no-op on an existing file): a cutout row (a ~2 KB
            # patch) fills half a 4 KB page, so 4 KB pages waste a page per row; 16 KB pages
            # hold 7 (``benchmarks/scale.py`` measures the bytes per cutout).
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    with_retry(lambda: _create_tables(engine))
    return engine


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables; another process creating them at the same moment is fine."""
    for i in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            _bring_up_to_date(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            text_ = str(exc).lower()
            if i == attempts - 1 or not ("already exists" in text_ or "duplicate" in text_):
                raise
            time.sleep(0.05 * (i + 1))


#: Columns added after the first release: (table, column, SQL type, the statement that fills
#: it for existing rows or None). A database made before gets them when it is opened (NULL for
#: existing rows, unless filled).
_ADDED_COLUMNS = [
    ("cutout", "segment", "INTEGER", None), ("fits_file", "hdu", "INTEGER", None),
    ("fits_file", "quality", "INTEGER", None), ("time_event", "lc_sigma", "REAL", None),
    ("time_event", "binned", "INTEGER", "UPDATE time_event SET binned = 1"),
    # The files stored before get their runs of cutout ids, in one scan.
    ("fits_file", "first_cutout_id", "INTEGER",
     "UPDATE fits_file SET first_cutout_id = r.lo FROM (SELECT file_id, min(id) AS lo, "
     "max(id) AS hi, count(*) AS n FROM cutout GROUP BY file_id) AS r "
     "WHERE r.file_id = fits_file.id AND r.hi - r.lo + 1 = r.n"),
]


#: Indexes added after the first release: (name, table, columns).
_ADDED_INDEXES = [("ix_cutout_file_segment", "cutout", "file_id, segment")]
#: Indexes of earlier releases that no query uses: (name, table).
_DROPPED_INDEXES = [("ix_cutout_file_id", "cutout"), ("ix_cutout_sector_cam_ccd", "cutout")]


def _bring_up_to_date(engine: Engine) -> None:
    """Give a database made by an earlier release what this one has: the added columns and
    indexes, without the dropped indexes."""
    def indexes(table: str) -> set[str]:
        return {i["name"] for i in inspect(engine).get_indexes(table)}

    for table, column, sql_type, fill in _ADDED_COLUMNS:
        if column not in {c["name"] for c in inspect(engine).get_columns(table)}:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
                if fill:
                    conn.execute(text(fill))
    for name, table, columns in _ADDED_INDEXES:
        if name not in indexes(table):
            with engine.begin() as conn:
                conn.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})"))
    for name, table in _DROPPED_INDEXES:
        if name in indexes(table):
            with engine.begin() as conn:
                conn.execute(text(f"DROP INDEX IF EXISTS {name}"))


def with_retry(fn: Callable[[], T], attempts: int = 8, delay: float = 0.2) -> T:
    """Run ``fn``, retrying when the database reports it is locked or busy."""
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            msg = str(exc).lower()
            if i == attempts - 1 or not ("locked" in msg or "busy" in msg or "deadlock" in msg):
                raise
            time.sleep(delay * (2**i))
    raise AssertionError("unreachable")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def pack_float32(a: np.ndarray) -> bytes:
    """An array as float32 bytes (patches, embedding vectors)."""
    return np.ascontiguousarray(a, dtype=np.float32).tobytes()


#: Stored patches are integers in steps of 1/64 of the patch's sky noise (the robust σ of its
#: outer ring, as the embedder measures it): 16-bit codes, or 32-bit when the patch spans more
#: than 65,533 steps (a bright star), byte-shuffled and compressed with Zstandard (its fast
#: level −1: 4–5× faster than zlib's level 1 and smaller; level 3 packed a 2048² FFI's
#: 53,565 patches 32 % slower for 1.7 % fewer bytes), after an 8-byte
#: header, float32 lowest value and step. Rounding adds noise of step/√12 = σ/222,
#: 0.002 % of the sky's variance. About 1.3 KB a 32 × 32 patch instead of 4 KB;
#: ``benchmarks/scale.py`` measures the bytes per cutout and the embeddings of stored patches
#: against the originals'. NaN is code -32,768 (16-bit) or -2³¹ (32-bit). Patches stored by
#: earlier versions (float32, 4 bytes a pixel; the same codes compressed with zlib) still read.
PATCH_STEPS_PER_SIGMA = 64


def pack_patches(patches: np.ndarray, chunk: int = 2048) -> list[bytes]:
    """Patches (n, s, s) as stored (see :data:`PATCH_STEPS_PER_SIGMA`), one bytes each."""
    from .parallel import map_chunks

    # Small chunks keep the temporaries in the cache; zlib and NumPy use every core.
    parts = map_chunks(lambda p: _pack(np.asarray(p, dtype=np.float32)), patches, chunk)
    return [b for part in parts for b in part]


#: The patches' compression level (Zstandard).
PATCH_ZSTD_LEVEL = -1


def _pack(p: np.ndarray) -> list[bytes]:
    import zstandard

    from .cutouts import fill_nan, ring_sky
    from .patch_kernels import shuffled_codes

    n = len(p)
    if n == 0:
        return []
    bad = ~np.isfinite(p).reshape(n, -1)
    filled = fill_nan(p) if bad.any() else p
    _, sigma = ring_sky(filled)
    flat = filled.reshape(n, -1)
    lo = flat.min(axis=1)
    step = (sigma / PATCH_STEPS_PER_SIGMA).astype(np.float32)
    step = np.where(np.isfinite(step) & (step > 0), step, np.float32(1.0))
    codes, segments = shuffled_codes(flat, lo, step, bad)
    # One buffer of the rows, compressed row by row (no bytes object a row on the way in).
    rows = zstandard.ZstdCompressor(level=PATCH_ZSTD_LEVEL).multi_compress_to_buffer(
        zstandard.BufferWithSegments(codes, segments.astype(np.uint64).tobytes()), threads=1)
    heads = np.column_stack([lo, step]).astype(np.float32)
    blobs = [h + r.tobytes() for h, r in zip(map(bytes, heads), rows, strict=True)]
    # Never the length of an old float32 patch (the decoders ignore a trailing byte).
    return [b + b"\0" if len(b) == 4 * flat.shape[1] else b for b in blobs]


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def unpack_patch(blob: bytes, size: int) -> np.ndarray:
    """Stored patch bytes (see :func:`pack_patches`) back to shape (size, size), float32."""
    import zlib

    npx = size * size
    if len(blob) == 4 * npx:  # float32, as stored before
        return np.frombuffer(blob, dtype=np.float32).reshape(size, size)
    lo, step = np.frombuffer(blob[:8], dtype=np.float32)
    if blob[8:12] == _ZSTD_MAGIC:
        import zstandard

        raw = zstandard.ZstdDecompressor().decompressobj().decompress(blob[8:])
    else:  # zlib, as stored before
        raw = zlib.decompressobj().decompress(blob[8:])
    width = len(raw) // npx
    codes = np.frombuffer(raw, np.uint8).reshape(width, npx).T.copy().view(
        np.int16 if width == 2 else np.int32).ravel()
    nan = codes == (-32768 if width == 2 else -(2**31))
    out = lo + (codes.astype(np.float64) + 32767) * step
    out[nan] = np.nan
    return out.astype(np.float32).reshape(size, size)


def _file_by_sha(session: Session, sha: str) -> FitsFile | None:
    return session.exec(select(FitsFile).where(FitsFile.sha256 == sha)).first()


def file_by_sha(engine: Engine, sha: str) -> FitsFile | None:
    """The stored file with these bytes (SHA-256, hex), or None."""
    with Session(engine) as s:
        return _file_by_sha(s, sha)


def _reserve_ids(session: Session, table: str, n: int) -> list[int]:
    """``n`` new primary keys of ``table`` for a bulk insert inside the current transaction:
    from the table's sequence on PostgreSQL; after the largest id on SQLite, whose one
    writer at a time holds the write lock (the caller has written already)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        ids = conn.execute(text(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
            "FROM generate_series(1, :n)"), {"n": n}).scalars().all()
        return sorted(int(i) for i in ids)
    start = int(conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar()) + 1
    return list(range(start, start + n))


def _insert_many(session: Session, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Insert tuples through the driver: PostgreSQL's ``COPY`` (a million scores in seconds,
    where ``executemany`` took 20 s), SQLite's ``executemany`` (tens of thousands of rows a
    second, where the ORM's bulk insert spends its time building parameters)."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            with conn.connection.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except dbapi_error as exc:  # as SQLAlchemy's own statements raise (IntegrityError, …)
            raise DBAPIError.instance(sql, None, exc, dbapi_error,
                                      dialect=conn.dialect) from None
        return
    style = conn.dialect.paramstyle
    marks = ", ".join("?" if style == "qmark" else f":{i + 1}" if style == "numeric" else "%s"
                      for i in range(len(columns)))
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


#: The cutout columns a write gives, in order (with ``id`` and ``file_id`` first).
_CUTOUT_COLUMNS = ["x", "y", "ra", "dec", "sector", "camera", "ccd", "time", "origin",
                   "segment", "patch_size", "patch"]


def _insert_cutouts(session: Session, file_id: int, columns: dict[str, Sequence[Any]]
                    ) -> list[int]:
    """Bulk-insert the cutouts of one file, given column by column (``_CUTOUT_COLUMNS``, each
    a sequence of n Python values: a write that is tried again reads them again), and return
    their ids in order."""
    n = len(columns["x"])
    if not n:
        return []
    ids = _reserve_ids(session, "cutout", n)
    _insert_many(session, "cutout", ["id", "file_id", *_CUTOUT_COLUMNS],
                 list(zip(ids, repeat(file_id, n), *(columns[c] for c in _CUTOUT_COLUMNS),
                          strict=True)))
    return ids


def _insert_embeddings(session: Session, ids: list[int], embedder: str, X: np.ndarray) -> None:
    X = np.ascontiguousarray(X, dtype=np.float32)
    _insert_many(session, "embedding", ["cutout_id", "embedder", "vector"],
                 [(int(i), embedder, v.tobytes()) for i, v in zip(ids, X, strict=True)])


def _insert_scores(session: Session, model_id: int, ids: Sequence[int], scores: np.ndarray,
                   chunk: int = 100_000) -> None:
    """Insert scores ``chunk`` rows at a time (bounded memory at millions of cutouts)."""
    mid = int(model_id)
    for start in range(0, len(ids), chunk):
        _insert_many(session, "score", ["model_id", "cutout_id", "score"],
                     [(mid, int(i), float(v)) for i, v in zip(
                         ids[start:start + chunk], scores[start:start + chunk], strict=True)])


# -- writes: each one transaction ---------------------------------------------------------------
def write_file(engine: Engine, record: dict[str, Any], cutouts: dict[str, Sequence[Any]],
               embedder: str, embeddings: np.ndarray, model_id: int | None = None,
               scores: np.ndarray | None = None) -> int:
    """Store a file, its cutouts (by column, see :func:`_insert_cutouts`), their embeddings
    and (optionally) scores in ONE transaction; returns the file id.

    Raises IntegrityError when another writer stored the same bytes first.
    """
    def write() -> int:
        with session_scope(engine) as s:
            f = FitsFile(**record)
            s.add(f)
            s.flush()
            ids = _insert_cutouts(s, f.id, cutouts)
            if ids and ids[-1] - ids[0] == len(ids) - 1:
                f.first_cutout_id = ids[0]
            _insert_embeddings(s, ids, embedder, embeddings)
            if model_id is not None and scores is not None:
                _insert_scores(s, model_id, ids, scores)
            return f.id

    return with_retry(write)


def write_embeddings(engine: Engine, ids: list[int], embedder: str, X: np.ndarray) -> None:
    """Store embeddings of stored cutouts, shape (n, d), in one transaction."""
    def write() -> None:
        with session_scope(engine) as s:
            _insert_embeddings(s, ids, embedder, X)

    with_retry(write)


def write_scores(engine: Engine, model_id: int, ids: list[int], scores: np.ndarray) -> None:
    """Store scores of cutouts under a model in one transaction (IntegrityError when another
    process stored them first)."""
    def write() -> None:
        with session_scope(engine) as s:
            _insert_scores(s, model_id, ids, scores)

    with_retry(write)


def write_model(engine: Engine, row: dict[str, Any], ids: Sequence[int],
                scores: np.ndarray) -> DetectorModel:
    """Store a fitted model with the scores of its training cutouts and make it the current one,
    in one transaction."""
    def write() -> DetectorModel:
        with session_scope(engine) as s:
            s.exec(update(DetectorModel).values(is_current=False))
            new = DetectorModel(**row, is_current=True)
            s.add(new)
            s.flush()
            _insert_scores(s, new.id, ids, scores)
            return new

    return with_retry(write)


def refresh_statistics(engine: Engine, table: str = "score") -> None:
    """Have PostgreSQL sample ``table`` again after a bulk change (a model's million scores in,
    an old model's out): until its autovacuum gets to it, the planner's estimates are those
    of before, and a page's queries took seconds instead of milliseconds. SQLite: nothing."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {table}")


def prune_models(engine: Engine, keep: int) -> int:
    """Delete every model but the current ones and the ``keep`` newest others, with their
    scores, in one transaction; returns how many models were deleted."""
    def write() -> int:
        with session_scope(engine) as s:
            rows = s.exec(select(DetectorModel.id, DetectorModel.is_current)
                          .order_by(DetectorModel.id.desc())).all()
            old = [mid for mid, cur in rows if not cur][keep:]
            for start in range(0, len(old), 500):
                chunk = old[start:start + 500]
                s.execute(Score.__table__.delete().where(Score.model_id.in_(chunk)))
                s.execute(AnomalyGroup.__table__.delete()
                          .where(AnomalyGroup.model_id.in_(chunk)))
                s.execute(DetectorModel.__table__.delete().where(DetectorModel.id.in_(chunk)))
            return len(old)

    return with_retry(write)


def delete_files(engine: Engine, file_ids: Sequence[int]) -> int:
    """Delete files with their cutouts and everything of those cutouts (embeddings, scores,
    labels, groups) in one transaction; returns how many cutouts went. With no cutout left,
    the models go too (they would score nothing). Stacks and their events stay: they hold
    their own strips and light curves."""
    ids = sorted({int(i) for i in file_ids})

    def write() -> int:
        with session_scope(engine) as s:
            gone = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                of_files = select(Cutout.id).where(Cutout.file_id.in_(chunk))
                for table in (Score, Label, AnomalyGroup, Embedding):
                    s.execute(table.__table__.delete().where(table.cutout_id.in_(of_files)))
                gone += s.execute(Cutout.__table__.delete()
                                  .where(Cutout.file_id.in_(chunk))).rowcount
                s.execute(FitsFile.__table__.delete().where(FitsFile.id.in_(chunk)))
            if s.exec(select(Cutout.id).limit(1)).first() is None:  # (their scores went)
                s.execute(DetectorModel.__table__.delete())
            return gone

    return with_retry(write)


def save_threshold(engine: Engine, model_id: int, mode: str, value: float,
                   threshold: float, table: type[DetectorModel | EventModel] = DetectorModel
                   ) -> DetectorModel | EventModel:
    """Store a model's threshold (its only copy) in its ``table`` (the cutouts' models or the
    events' model); returns the updated row."""
    def write() -> DetectorModel | EventModel:
        with session_scope(engine) as s:
            row = s.get(table, model_id)
            if row is None:
                raise LookupError(f"no model with id {model_id}")
            row.threshold_mode, row.threshold_value, row.threshold = mode, float(value), threshold
            return row

    return with_retry(write)


# -- reads --------------------------------------------------------------------------------------
def current_model(engine: Engine, embedder: str | None = None, *, arrays: bool = True
                  ) -> DetectorModel | None:
    """The model row marked current (for ``embedder`` when given), or None. ``arrays=False``
    leaves out its arrays (megabytes at a million cutouts: every training score), which
    :func:`model_arrays` reads when they are needed; the row's ``arrays`` is then unset."""
    q = select(DetectorModel).where(DetectorModel.is_current == True)  # noqa: E712
    if embedder:
        q = q.where(DetectorModel.embedder == embedder)
    if not arrays:
        q = q.options(defer(DetectorModel.arrays))
    with Session(engine) as s:
        return s.exec(q.order_by(DetectorModel.id.desc())).first()


def model_arrays(engine: Engine, model_id: int) -> bytes:
    """The stored ``.npz`` arrays of one model (see :func:`current_model`)."""
    with Session(engine) as s:
        got = s.exec(select(DetectorModel.arrays).where(DetectorModel.id == model_id)).first()
    if got is None:
        raise LookupError(f"no model with id {model_id}")
    return got


def model_row(engine: Engine, model_id: int) -> DetectorModel | None:
    """One model row by id, or None."""
    with Session(engine) as s:
        return s.get(DetectorModel, model_id)


def load_embeddings(engine: Engine, embedder: str, only_unscored_for: int | None = None,
                    ids: list[int] | None = None, file_ids: list[int] | None = None,
                    between: tuple[int, int] | None = None,
                    above: tuple[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cutout ids, shape (n,); vectors, shape (n, d)) of cutouts embedded by ``embedder``,
    by id: every one, those without a score under a model, the ``ids`` given, those of the
    files ``file_ids``, those with ``after < id <= upto`` for ``between=(after, upto)``, or
    those scoring above ``threshold`` for ``above=(model_id, threshold)`` (through the
    (model_id, score) index: a model's flagged cutouts); each filter narrows the others."""
    q = select(Embedding.cutout_id, Embedding.vector).where(Embedding.embedder == embedder)
    if above is not None:
        q = q.join(Score, Score.cutout_id == Embedding.cutout_id).where(
            Score.model_id == int(above[0]), Score.score > float(above[1]))
    if between is not None:
        q = q.where(Embedding.cutout_id > int(between[0]), Embedding.cutout_id <= int(between[1]))
    if only_unscored_for is not None:
        scored = select(Score.cutout_id).where(Score.model_id == only_unscored_for,
                                               Score.cutout_id == Embedding.cutout_id)
        q = q.where(~scored.exists())  # an anti-join (NOT IN is quadratic on PostgreSQL)
    if ids is not None:
        q = q.where(Embedding.cutout_id.in_([int(i) for i in ids]))
    queries = [q] if file_ids is None else [  # a batch's files, some thousands a query
        q.join(Cutout, Cutout.id == Embedding.cutout_id).where(Cutout.file_id.in_(part))
        for part in _id_chunks(file_ids, PARAMETERS)]
    with Session(engine) as s:
        rows = [r for part in queries for r in s.execute(part.order_by(Embedding.cutout_id))]
    if len(queries) > 1:
        rows.sort(key=lambda r: r[0])
    return _ids_and_vectors(rows)


def _ids_and_vectors(rows: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (cutout id, vector bytes) as (ids, shape (n,) int64; vectors, shape (n, d)
    float32); (0,) and (0, 0) for none."""
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, np.frombuffer(b"".join(r[1] for r in rows),
                              dtype=np.float32).reshape(len(rows), -1)


def vector_length(engine: Engine, embedder: str) -> int | None:
    """Bytes of ``embedder``'s stored vectors (its first one's: they are all alike, see
    :func:`drop_other_lengths`), or None when it has embedded nothing."""
    with Session(engine) as s:
        return s.execute(select(func.length(Embedding.vector))
                         .where(Embedding.embedder == embedder)
                         .order_by(Embedding.cutout_id).limit(1)).scalar()


def drop_other_lengths(engine: Engine, embedder: str, nbytes: int) -> tuple[int, int]:
    """Delete, in one transaction, the embeddings of ``embedder`` whose vectors are not
    ``nbytes`` long and its models fitted on vectors of another length (with their scores and
    groups): what an older definition of its features stored. Returns (embeddings, models)
    deleted."""
    import json

    def write() -> tuple[int, int]:
        with session_scope(engine) as s:
            gone = s.execute(Embedding.__table__.delete().where(
                Embedding.embedder == embedder,
                func.length(Embedding.vector) != int(nbytes))).rowcount
            rows = s.exec(select(DetectorModel.id, DetectorModel.meta_json)
                          .where(DetectorModel.embedder == embedder)).all()
            old = [mid for mid, meta in rows
                   if json.loads(meta).get("n_features_in_", nbytes // 4) * 4 != nbytes]
            for table in (Score, AnomalyGroup):
                s.execute(table.__table__.delete().where(table.model_id.in_(old)))
            s.execute(DetectorModel.__table__.delete().where(DetectorModel.id.in_(old)))
            return int(gone), len(old)

    return with_retry(write)


def count_embeddings(engine: Engine, embedder: str) -> int:
    """How many cutouts ``embedder`` has embedded."""
    with Session(engine) as s:
        return int(s.execute(select(func.count()).select_from(Embedding)
                             .where(Embedding.embedder == embedder)).scalar())


def iter_embeddings(engine: Engine, embedder: str, chunk: int = 100_000
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every embedding of ``embedder`` in id order, ``chunk`` at a time: (ids (m,), vectors
    (m, d) float32), read by key ranges so memory stays bounded whatever the table holds."""
    last = -1
    while True:
        q = (select(Embedding.cutout_id, Embedding.vector)
             .where(Embedding.embedder == embedder, Embedding.cutout_id > last)
             .order_by(Embedding.cutout_id).limit(chunk))
        with Session(engine) as s:
            rows = s.execute(q).all()
        if not rows:
            return
        ids, X = _ids_and_vectors(rows)
        yield ids, X
        last = int(ids[-1])
        if len(rows) < chunk:
            return


def embedding_ranges(engine: Engine, embedder: str, chunk: int) -> list[tuple[int, int]]:
    """Id ranges ``(after, upto)`` that split the embeddings of ``embedder`` into runs of
    ``chunk`` (the last shorter), in id order; found through the key index, ``chunk`` rows
    skipped at a time."""
    out: list[tuple[int, int]] = []
    last = -1
    with Session(engine) as s:
        while True:
            base = (select(Embedding.cutout_id)
                    .where(Embedding.embedder == embedder, Embedding.cutout_id > last)
                    .order_by(Embedding.cutout_id))
            upto = s.execute(base.offset(int(chunk) - 1).limit(1)).scalar()
            if upto is None:
                end = s.execute(select(func.max(Embedding.cutout_id)).where(
                    Embedding.embedder == embedder, Embedding.cutout_id > last)).scalar()
                if end is not None:
                    out.append((last, int(end)))
                return out
            out.append((last, int(upto)))
            last = int(upto)


def count_without_embedding(engine: Engine, embedder: str) -> int:
    """How many cutouts ``embedder`` has not embedded yet."""
    with Session(engine) as s:
        return int(s.execute(select(func.count()).select_from(Cutout)
                             .where(~_embedded(embedder))).scalar())


def _embedded(embedder: str):
    """SQL: the cutout has an embedding by ``embedder`` (negated: an anti-join, where NOT IN
    a subquery is quadratic on PostgreSQL once it outgrows work_mem)."""
    return select(Embedding.cutout_id).where(Embedding.embedder == embedder,
                                             Embedding.cutout_id == Cutout.id).exists()


def iter_without_embedding(engine: Engine, embedder: str, chunk: int = 2000
                           ) -> Iterator[list[tuple[int, bytes, int]]]:
    """(id, patch bytes, patch size) of the cutouts ``embedder`` has not embedded yet, in id
    order, ``chunk`` at a time (read by key ranges: memory stays bounded)."""
    last = -1
    while True:
        q = (select(Cutout.id, Cutout.patch, Cutout.patch_size)
             .where(Cutout.id > last, ~_embedded(embedder)).order_by(Cutout.id).limit(chunk))
        with Session(engine) as s:
            rows = [tuple(r) for r in s.execute(q).all()]
        if not rows:
            return
        yield rows
        last = int(rows[-1][0])


#: Columns of :func:`cutout_columns` (and :func:`cutout_table`), in order.
CUTOUT_COLUMNS = ("cutout_id", "file_id", "file", "x", "y", "ra", "dec", "sector", "camera", "ccd",
                  "time", "origin", "segment", "score", "label", "note")
#: Columns of whole numbers that may be missing: float64 with NaN in NumPy columns, ``Int64``
#: in DataFrames, -1 in FITS and VOTable exports (``group`` is added by the export).
WHOLE_COLUMNS = ("sector", "camera", "ccd", "segment", "group")
_FLOAT_COLUMNS = ("x", "y", "ra", "dec", "time", "score")


def model_scores(engine: Engine, model_id: int) -> np.ndarray:
    """Every score under ``model_id``, shape (n,), float64, in no particular order."""
    with engine.connect() as conn:
        cur = conn.exec_driver_sql("SELECT score FROM score WHERE model_id = "
                                   f"{int(model_id)}")
        return np.fromiter((r[0] for r in cur), dtype=float)


def top_scored(engine: Engine, model_id: int, above: float, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` cutouts scoring above ``above`` under ``model_id``, highest first (ties
    by id), with file name, position, sector/camera/CCD and label; read through the
    (model_id, score) index, not the table."""
    sql = text(
        "SELECT c.id AS cutout_id, f.name AS file, c.x, c.y, c.sector, c.camera, c.ccd, "
        "s.score, l.label FROM score s JOIN cutout c ON c.id = s.cutout_id "
        "JOIN fits_file f ON f.id = c.file_id LEFT JOIN label l ON l.cutout_id = c.id "
        "WHERE s.model_id = :mid AND s.score > :above "
        "ORDER BY s.score DESC, c.id ASC LIMIT :limit")
    with engine.connect() as conn:
        rows = conn.execute(sql, {"mid": model_id, "above": float(above),
                                  "limit": int(limit)}).mappings().all()
    return [dict(r) for r in rows]


def explore_rows(engine: Engine, model_id: int, embedder: str, threshold: float,
                 every: int = 1, chunk: int = 5000) -> dict[str, np.ndarray]:
    """The points an embedding scatter draws: every cutout scoring above ``threshold`` under
    ``model_id`` (through the score index) and, of the others, those whose id is a multiple of
    ``every`` (1: all), by id, looked up by key; columns ``cutout_id`` (int64), ``vector``
    (m, d) float32, ``score`` (NaN unscored), ``file`` and ``label`` (object).

    A point's file comes from its file's run of cutout ids (``first_cutout_id``) where there is
    one, else from its cutout's row: on PostgreSQL each such row is a random read of a 1.5 KB
    row (its patch inline) — a second of a million-cutout Explore's first render."""
    with engine.connect() as conn:
        above = conn.execute(text("SELECT cutout_id FROM score WHERE model_id = :mid AND "
                                  "score > :thr"), {"mid": model_id, "thr": float(threshold)})
        ids = {int(r[0]) for r in above}
        top = conn.execute(text("SELECT max(cutout_id) FROM embedding WHERE embedder = :emb"),
                           {"emb": embedder}).scalar() or 0
        ids.update(range(max(int(every), 1), int(top) + 1, max(int(every), 1)))
        wanted = sorted(ids)
        rows = []
        for a in range(0, len(wanted), chunk):
            part = wanted[a:a + chunk]
            rows += conn.execute(text(
                "SELECT e.cutout_id, e.vector, s.score, l.label FROM embedding e "
                "LEFT JOIN score s ON s.cutout_id = e.cutout_id AND s.model_id = :mid "
                "LEFT JOIN label l ON l.cutout_id = e.cutout_id "
                f"WHERE e.embedder = :emb AND e.cutout_id IN ({', '.join(map(str, part))}) "
                "ORDER BY e.cutout_id"), {"mid": model_id, "emb": embedder}).all()
        got = np.array([int(r[0]) for r in rows], np.int64)
        names = _file_names(conn, got, chunk)
    keep = np.array([v is not None for v in names], bool)  # a cutout whose row is gone: not drawn
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 4
    return {"cutout_id": np.asarray(cols[0], np.int64),
            "vector": np.frombuffer(b"".join(cols[1]), np.float32).reshape(n, -1) if n
            else np.zeros((0, 0), np.float32),
            "score": np.array([np.nan if v is None else v for v in cols[2]], float),
            "file": names[keep], "label": np.array(cols[3], dtype=object)}


def _file_names(conn: Any, ids: np.ndarray, chunk: int) -> np.ndarray:
    """The file name of each cutout id (shape (n,), object; None where no cutout has it): by
    the files' runs of ids, the rest from the cutout rows."""
    files = conn.execute(text("SELECT first_cutout_id, n_cutouts, name FROM fits_file "
                              "WHERE first_cutout_id IS NOT NULL ORDER BY first_cutout_id")).all()
    out = np.full(len(ids), None, dtype=object)
    if files and len(ids):
        first = np.array([f[0] for f in files], np.int64)
        k = np.searchsorted(first, ids, side="right") - 1
        inside = (k >= 0) & (ids < first[np.maximum(k, 0)]
                             + np.array([f[1] for f in files], np.int64)[np.maximum(k, 0)])
        out[inside] = np.array([f[2] for f in files], dtype=object)[k[inside]]
    rest = ids[np.array([v is None for v in out], bool)]
    for a in range(0, len(rest), chunk):
        part = rest[a:a + chunk].tolist()
        found = dict(conn.execute(text(
            "SELECT c.id, f.name FROM cutout c JOIN fits_file f ON f.id = c.file_id "
            f"WHERE c.id IN ({', '.join(map(str, part))})")).all())
        pos = np.searchsorted(ids, part)
        out[pos] = [found.get(i) for i in part]
    return out


def overview(engine: Engine, model_id: int | None, threshold: float | None) -> dict[str, Any]:
    """Counts the home page shows, aggregated by the database (no cutout rows read): ``files``,
    ``cutouts``, ``anomalies`` (score above ``threshold`` under ``model_id``), ``labelled``;
    ``by_ccd``: rows (sector, camera, ccd, files, cutouts, anomalies), columns in that order,
    rows unordered; ``per_file``: {file id: anomalies}.

    The files' own rows give their cutouts, sector, camera and CCD (a file's cutouts carry
    its values); only the anomalies are counted among the cutouts, through the index on
    (model, score), so a million cutouts cost what their few percent above the cut cost."""
    with engine.connect() as conn:
        files = conn.execute(text(
            "SELECT id, sector, camera, ccd, n_cutouts FROM fits_file WHERE n_cutouts > 0"
        )).all()
        labelled = conn.execute(text(
            "SELECT COUNT(*) FROM label l JOIN cutout c ON c.id = l.cutout_id")).scalar()
    flagged = ({} if not model_id or threshold is None
               else anomalies_per_file(engine, model_id, threshold))
    per_file = {int(f.id): int(flagged.get(f.id, 0)) for f in files}
    groups: dict[tuple, list[int]] = {}
    for f in files:
        g = groups.setdefault((f.sector, f.camera, f.ccd), [0, 0, 0])
        g[0] += 1
        g[1] += int(f.n_cutouts)
        g[2] += per_file[int(f.id)]
    rows = [(*k, *v) for k, v in groups.items()]  # the caller orders them for display
    return {"files": len(files), "cutouts": sum(r[4] for r in rows),
            "anomalies": sum(r[5] for r in rows), "labelled": int(labelled or 0),
            "by_ccd": rows, "per_file": per_file}


def cutout_columns(engine: Engine, model_id: int | None) -> dict[str, np.ndarray]:
    """Every cutout with its file, metadata, score under ``model_id`` and label (no pixels), as
    NumPy columns of equal length, by cutout id (see :data:`CUTOUT_COLUMNS`).

    ``cutout_id`` and ``file_id`` are int64; x, y, ra, dec, time and score float64 (NaN where
    missing); sector, camera, ccd and segment float64 too (NaN where missing, so that "none"
    survives); file, origin, label and note object arrays (None where missing). Needs no pandas,
    so the command line starts fast.
    """
    return _cutout_query(engine, model_id)


def _cutout_query(engine: Engine, model_id: int | None, where: str = "1 = 1",
                  order: str = "c.id", **params: Any) -> dict[str, np.ndarray]:
    """The :data:`CUTOUT_COLUMNS` of the cutouts (alias ``c``) that pass the SQL ``where``
    (with ``params``), ordered by ``order``, as NumPy columns."""
    score_join = ("LEFT JOIN score s ON s.cutout_id = c.id AND s.model_id = :mid" if model_id
                  else "LEFT JOIN (SELECT NULL AS cutout_id, NULL AS score) s ON 1 = 0")
    sql = text(
        "SELECT c.id AS cutout_id, c.file_id, f.name AS file, c.x, c.y, c.ra, c.dec, "
        "c.sector, c.camera, c.ccd, c.time, c.origin, c.segment, s.score, l.label, l.note "
        f"FROM cutout c JOIN fits_file f ON f.id = c.file_id {score_join} "
        f"LEFT JOIN label l ON l.cutout_id = c.id WHERE {where} ORDER BY {order}")
    with engine.connect() as conn:
        rows = conn.execute(sql, {**({"mid": model_id} if model_id else {}), **params}).all()
    return _as_columns(rows)


def _as_columns(rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
    """Rows of :data:`CUTOUT_COLUMNS` values as NumPy columns (see :func:`cutout_columns`)."""
    raw = list(zip(*rows, strict=True)) if rows else [()] * len(CUTOUT_COLUMNS)
    out: dict[str, np.ndarray] = {}
    for name, values in zip(CUTOUT_COLUMNS, raw, strict=True):
        if name in ("cutout_id", "file_id"):
            out[name] = np.asarray(values, dtype=np.int64)
        elif name in WHOLE_COLUMNS or name in _FLOAT_COLUMNS:
            out[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            out[name] = np.array(values, dtype=object)
    return out


#: Ids bound as parameters in one query (SQLite takes 32,766, PostgreSQL 65,535).
PARAMETERS = 10_000


def _id_chunks(ids: Iterable[int], chunk: int = 50_000) -> Iterator[list[int]]:
    """The distinct ``ids``, sorted, in lists of at most ``chunk`` (bound as parameters:
    :data:`PARAMETERS`)."""
    ids = sorted({int(i) for i in ids})
    for a in range(0, len(ids), chunk):
        yield ids[a:a + chunk]


def _id_list(ids: Iterable[int], chunk: int = 50_000) -> Iterator[str]:
    """The distinct ``ids``, sorted, as SQL lists ``"1, 2, 3"`` of at most ``chunk`` each."""
    for part in _id_chunks(ids, chunk):
        yield ", ".join(map(str, part))


def cutout_rows(engine: Engine, model_id: int | None, ids: Iterable[int]
                ) -> dict[str, np.ndarray]:
    """The columns of :func:`cutout_columns` for the given cutouts only, by id."""
    parts = [_cutout_query(engine, model_id, f"c.id IN ({listed})")
             for listed in _id_list(ids)]
    if not parts:
        return _as_columns([])
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def object_members(engine: Engine, model_id: int | None, cutout_id: int
                   ) -> dict[str, np.ndarray]:
    """The other cutouts of ``cutout_id``'s object (same file and segment > 0), ranked;
    the columns of :func:`cutout_columns` (none when it has no segment)."""
    with engine.connect() as conn:
        me = conn.execute(text("SELECT file_id, segment FROM cutout WHERE id = :id"),
                          {"id": int(cutout_id)}).first()
    if me is None or me[1] is None or me[1] <= 0:
        return _as_columns([])
    return _cutout_query(engine, model_id, "c.file_id = :fid AND c.segment = :seg AND "
                         "c.id != :id", "s.score IS NULL, s.score DESC, c.id",
                         fid=int(me[0]), seg=int(me[1]), id=int(cutout_id))


def rank_columns(engine: Engine, model_id: int | None) -> dict[str, np.ndarray]:
    """Every cutout's ``cutout_id``, ``file_id`` (int64), ``segment`` (float, 0 for none) and
    ``score`` under ``model_id`` (float, NaN unscored), shape (n,) each, by cutout id: what a
    :class:`reaper_core.views.RankIndex` holds, read from two narrow scans (no pixels)."""
    raw = engine.raw_connection()  # plain tuples: ten times faster to turn into arrays
    try:
        cur = raw.cursor()
        cur.execute("SELECT id, file_id, COALESCE(segment, 0) FROM cutout")
        cut = cur.fetchall()
        scored: list[tuple] = []
        if model_id:  # in cutout order, through the primary key
            cur.execute(f"SELECT cutout_id, score FROM score WHERE model_id = {int(model_id)} "
                        "ORDER BY cutout_id")
            scored = cur.fetchall()
        cur.close()
    finally:
        raw.close()
    c = np.array(cut, dtype=float).reshape(-1, 3)
    order = np.argsort(c[:, 0], kind="stable")
    ids, file_id, segment = c[order, 0].astype(np.int64), c[order, 1], c[order, 2]
    score = np.full(len(ids), np.nan)
    if scored:
        s = np.array(scored, dtype=float).reshape(-1, 2)
        at = np.searchsorted(ids, s[:, 0].astype(np.int64))
        ok = at < len(ids)
        ok[ok] = ids[at[ok]] == s[ok, 0]
        score[at[ok]] = s[ok, 1]
    return {"cutout_id": ids, "file_id": file_id.astype(np.int64), "segment": segment,
            "score": score}


def existing_ids(engine: Engine, ids: Iterable[int]) -> np.ndarray:
    """Those of the cutout ``ids`` that exist, sorted (int64)."""
    with engine.connect() as conn:
        found = [r[0] for listed in _id_list(ids) for r in conn.exec_driver_sql(
            f"SELECT id FROM cutout WHERE id IN ({listed})")]
    return np.array(sorted(found), np.int64)


def object_mates(engine: Engine, ids: Iterable[int]) -> np.ndarray:
    """The cutouts ``ids`` and every other cutout of their objects (same file and segment
    > 0), sorted (int64); read through the (file_id, segment) index."""
    out = {int(i) for i in ids}
    with engine.connect() as conn:
        pairs = {(int(f), int(g)) for listed in _id_list(out) for f, g in conn.exec_driver_sql(
            f"SELECT file_id, segment FROM cutout WHERE segment > 0 AND id IN ({listed})")}
        for f, g in sorted(pairs):
            out |= {int(r[0]) for r in conn.execute(text(
                "SELECT id FROM cutout WHERE file_id = :f AND segment = :g"), {"f": f, "g": g})}
    return np.array(sorted(out), np.int64)


def file_columns(engine: Engine) -> dict[str, np.ndarray]:
    """Every file's ``id`` (int64), ``name`` (object), ``sector``, ``camera``, ``ccd`` (float,
    NaN where missing), shape (F,) each, by id."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, name, sector, camera, ccd FROM fits_file ORDER BY id").all()
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    return {"id": np.asarray(cols[0], np.int64), "name": np.array(cols[1], dtype=object),
            **{k: np.array([np.nan if v is None else v for v in vals], float)
               for k, vals in zip(("sector", "camera", "ccd"), cols[2:], strict=True)}}


def all_labels(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """(cutout ids int64, labels object) of every labelled cutout, shape (m,) each."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT cutout_id, label FROM label").all()
    return (np.array([r[0] for r in rows], np.int64),
            np.array([r[1] for r in rows], dtype=object))


def cutout_table(engine: Engine, model_id: int | None) -> pd.DataFrame:
    """:func:`cutout_columns` as a DataFrame (sector, camera, ccd and segment as ``Int64``)."""
    return as_frame(cutout_columns(engine, model_id))


def as_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Columns of :func:`cutout_columns` (any subset, in their order, and more) as a DataFrame;
    the :data:`WHOLE_COLUMNS` become ``Int64`` (missing values stay missing)."""
    import pandas as pd

    df = pd.DataFrame(columns)
    for col in WHOLE_COLUMNS:
        if col in df:
            df[col] = pd.array(df[col].to_numpy(float), dtype="Float64").astype("Int64")
    return df


def totals(engine: Engine) -> dict[str, int]:
    """Counts of files, cutouts and models."""
    with Session(engine) as s:
        return {
            "files": s.exec(select(func.count()).select_from(FitsFile)).one(),
            # Each file's row counts its cutouts (written in the same transaction): no scan.
            "cutouts": int(s.exec(select(func.coalesce(func.sum(FitsFile.n_cutouts), 0))).one()),
            "models": s.exec(select(func.count()).select_from(DetectorModel)).one(),
        }


def set_label(engine: Engine, cutout_ids: int | Iterable[int], label: str | None,
              note: str = "") -> None:
    """Set (or with ``label=None`` remove) a person's label on one cutout or several (e.g. every
    cutout of an object), in one transaction."""
    check_label(label)
    ids = [int(cutout_ids)] if isinstance(cutout_ids, int | np.integer) else [
        int(i) for i in cutout_ids]
    with session_scope(engine) as s:
        existing = {}
        for start in range(0, len(ids), 500):  # a bounded number of parameters per query
            chunk = ids[start:start + 500]
            existing.update((lab.cutout_id, lab) for lab in
                            s.exec(select(Label).where(Label.cutout_id.in_(chunk))))
        for cid in dict.fromkeys(ids):
            old = existing.get(cid)
            if label is None:
                if old:
                    s.delete(old)
            elif old:
                old.label, old.note, old.updated_at = label, note, _now()
            else:
                s.add(Label(cutout_id=cid, label=label, note=note))


def write_groups(engine: Engine, model_id: int, threshold: float, ids: np.ndarray,
                 groups: np.ndarray) -> None:
    """Replace the stored groups of ``model_id`` by these (for ``threshold``), in one
    transaction."""
    with session_scope(engine) as s:
        s.execute(AnomalyGroup.__table__.delete().where(AnomalyGroup.model_id == model_id))
        if len(ids):
            s.execute(insert(AnomalyGroup), [
                {"model_id": model_id, "cutout_id": int(i), "grp": int(g),
                 "threshold": float(threshold)} for i, g in zip(ids, groups, strict=True)])


def read_groups(engine: Engine, model_id: int) -> tuple[float | None, dict[int, int]]:
    """(threshold they were made for or None, {cutout id: group}) of ``model_id``."""
    with engine.connect() as conn:  # plain SQL: the gallery reads them on every run
        rows = conn.exec_driver_sql("SELECT cutout_id, grp, threshold FROM anomaly_group "
                                    f"WHERE model_id = {int(model_id)}").all()
    if not rows:
        return None, {}
    return float(rows[0][2]), {int(c): int(g) for c, g, _ in rows}


def labelled_ids(engine: Engine, label: str) -> np.ndarray:
    """Ids of the cutouts carrying ``label``, shape (n,), sorted."""
    with Session(engine) as s:
        rows = s.execute(select(Label.cutout_id).where(Label.label == label)).all()
    return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))


def get_cutouts(engine: Engine, ids: list[int]) -> dict[int, tuple[np.ndarray, Cutout]]:
    """Patches (size, size) and rows of the given cutouts, keyed by id."""
    if not ids:
        return {}
    with Session(engine) as s:
        rows = s.exec(select(Cutout).where(Cutout.id.in_([int(i) for i in ids]))).all()
    return {r.id: (unpack_patch(r.patch, r.patch_size), r) for r in rows}


def scores_of(engine: Engine, model_id: int, ids: Iterable[int]) -> dict[int, float]:
    """{cutout id: score under ``model_id``} of the given cutouts that have one."""
    with Session(engine) as s:
        rows = s.exec(select(Score.cutout_id, Score.score).where(
            Score.model_id == model_id, Score.cutout_id.in_([int(i) for i in ids]))).all()
    return {int(c): float(v) for c, v in rows}


def file_record(engine: Engine, file_id: int) -> FitsFile | None:
    """One stored file by id, or None."""
    with Session(engine) as s:
        return s.get(FitsFile, file_id)


def file_records(engine: Engine) -> list[FitsFile]:
    """Every stored file, in the order they were ingested."""
    with Session(engine) as s:
        return list(s.exec(select(FitsFile).order_by(FitsFile.id)).all())


def file_names(engine: Engine) -> set[str]:
    """The display names of every stored file."""
    with Session(engine) as s:
        return set(s.exec(select(FitsFile.name)).all())


def data_version(engine: Engine, labels: bool = True) -> tuple:
    """A cheap fingerprint that changes whenever files, cutouts, models, scores or (with
    ``labels``) labels change.

    The threshold is not part of it: moving the threshold never reloads the cutout table.
    """
    with Session(engine) as s:
        # The files' count too: removing files (their cutouts) may leave the highest id.
        n_cut = (s.exec(select(func.max(Cutout.id))).one(),
                 s.exec(select(func.count(FitsFile.id))).one())
        n_mod = s.exec(select(func.max(DetectorModel.id))).one()
        current = s.exec(select(DetectorModel.id).where(DetectorModel.is_current)).all()
        # Scores are added (for new cutouts) or come with a new model: the highest scored id
        # of each current model, one seek in the (model_id, cutout_id) key, tells.
        n_score = tuple(s.exec(select(func.max(Score.cutout_id)).where(Score.model_id == i))
                        .one() for i in sorted(current))
        if not labels:
            return (n_cut, n_mod, n_score)
        n_lab, last_lab = s.exec(select(func.count(), func.max(Label.updated_at))).one()
    return (n_cut, n_mod, n_lab, str(last_lab), n_score)


def anomalies_per_file(engine: Engine, model_id: int, threshold: float,
                       file_ids: list[int] | None = None) -> dict[int, int]:
    """{file id: number of cutouts scoring above ``threshold`` under the model}, of every
    file or of ``file_ids`` alone (counted through their cutouts, not every anomaly)."""
    if file_ids is None:  # every anomaly, through the (model, score) index
        queries = [select(Cutout.file_id, func.count())
                   .join(Score, Score.cutout_id == Cutout.id)
                   .where(Score.model_id == model_id, Score.score > threshold)]
    else:  # the files' cutouts, each score looked up by its key
        above = select(Score.cutout_id).where(Score.model_id == model_id,
                                              Score.cutout_id == Cutout.id,
                                              Score.score > threshold)
        queries = [select(Cutout.file_id, func.count())
                   .where(Cutout.file_id.in_(part), above.exists())
                   for part in _id_chunks(file_ids, PARAMETERS)]
    with Session(engine) as s:
        return {fid: n for q in queries for fid, n in s.exec(q.group_by(Cutout.file_id)).all()}


# -- time domain --------------------------------------------------------------------------------
def stack_by_key(engine: Engine, key: str) -> ImageStack | None:
    with Session(engine) as s:
        return s.exec(select(ImageStack).where(ImageStack.key == key)).first()


def write_stack(engine: Engine, record: dict[str, Any], events: list[dict[str, Any]]) -> int:
    """Store a searched stack with its events in one transaction, replacing an earlier search
    of the same stack (labels carried over to the events found again at the same place and
    time). Returns the stack id."""
    def write() -> int:
        with session_scope(engine) as s:
            old = s.exec(select(ImageStack).where(ImageStack.key == record["key"])).first()
            labels: list[tuple[float, float, float, float, str, str]] = []
            if old is not None:
                for e in s.exec(select(TimeEvent).where(TimeEvent.stack_id == old.id)):
                    if e.label:
                        labels.append((e.x, e.y, e.t_start, e.t_end, e.label, e.note))
                s.execute(TimeEvent.__table__.delete().where(TimeEvent.stack_id == old.id))
                s.delete(old)
                s.flush()
            row = ImageStack(**record)
            s.add(row)
            s.flush()
            for ev in events:
                for x, y, t0, t1, lab, note in labels:
                    if (np.hypot(ev["x"] - x, ev["y"] - y) <= 2.0
                            and ev["t_start"] <= t1 and ev["t_end"] >= t0):
                        ev = dict(ev, label=lab, note=note)
                        break
                s.add(TimeEvent(stack_id=row.id, **ev))
            return int(row.id)

    return with_retry(write)


def stacks(engine: Engine) -> list[ImageStack]:
    """Every stored stack, by id."""
    with Session(engine) as s:
        return list(s.exec(select(ImageStack).order_by(ImageStack.id)))


def stack_row(engine: Engine, stack_id: int) -> ImageStack | None:
    with Session(engine) as s:
        return s.get(ImageStack, stack_id)


def event_rows(engine: Engine, stack_id: int | None = None, kind: str | None = None,
               heavy: bool = False, features: bool = False,
               ids: Sequence[int] | None = None) -> list[TimeEvent]:
    """Stored events (of one stack, of one kind, with these ``ids``), by id; without their
    strips, light curves and features unless ``heavy`` (``features``: with their features
    only)."""
    left_out = () if heavy else ("strip", "lightcurve") if features else (
        "strip", "lightcurve", "features")
    q = select(TimeEvent) if heavy else select(*[
        getattr(TimeEvent, c) for c in TimeEvent.model_fields if c not in left_out])
    if stack_id is not None:
        q = q.where(TimeEvent.stack_id == stack_id)
    if kind is not None:
        q = q.where(TimeEvent.kind == kind)
    if ids is not None:
        q = q.where(TimeEvent.id.in_([int(i) for i in ids]))
    with Session(engine) as s:
        return list(s.exec(q.order_by(TimeEvent.id)))


def write_event_features(engine: Engine, ids: Sequence[int], X: np.ndarray) -> None:
    """Store events' features (rows of ``X``, shape (n, d), float32) in one transaction."""
    X = np.ascontiguousarray(X, np.float32)

    def write() -> None:
        with session_scope(engine) as s:
            for i, v in zip(ids, X, strict=True):
                s.execute(update(TimeEvent).where(TimeEvent.id == int(i))
                          .values(features=v.tobytes()))

    with_retry(write)


def event_row(engine: Engine, event_id: int) -> TimeEvent | None:
    with Session(engine) as s:
        return s.get(TimeEvent, event_id)


def write_event_model(engine: Engine, row: dict[str, Any], ids: list[int],
                      scores: np.ndarray) -> EventModel:
    """Store a fitted event model, make it current and store every event's score under it, in
    one transaction."""
    def write() -> EventModel:
        with session_scope(engine) as s:
            s.exec(update(EventModel).values(is_current=False))
            new = EventModel(**row, is_current=True)
            s.add(new)
            for i, sc in zip(ids, scores, strict=True):
                s.exec(update(TimeEvent).where(TimeEvent.id == i).values(score=float(sc)))
            s.flush()
            return new

    return with_retry(write)


def current_event_model(engine: Engine) -> EventModel | None:
    with Session(engine) as s:
        return s.exec(select(EventModel).where(EventModel.is_current == True)  # noqa: E712
                      .order_by(EventModel.id.desc())).first()


def set_event_labels(engine: Engine, event_ids: Iterable[int], label: str | None,
                     note: str = "") -> dict[int, str | None]:
    """Set (or with None remove) a person's label on events, in one transaction: none is
    changed when one does not exist (LookupError). Returns each event's label before."""
    check_label(label)
    before: dict[int, str | None] = {}
    with session_scope(engine) as s:
        for eid in dict.fromkeys(int(i) for i in event_ids):
            row = s.get(TimeEvent, eid)
            if row is None:
                raise LookupError(f"no event with id {eid}")
            before[eid] = row.label
            row.label, row.note = label, note if label else ""
    return before
