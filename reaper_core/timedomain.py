"""Time-domain search on the store: find a stack's events, describe and rank them, store them.

Each event is described by the embedding of its difference cutout at peak (the configured
embedder, as single-frame cutouts are) followed by its light-curve features
(:data:`~reaper_core.events.LIGHTCURVE_FEATURES`), and ranked by the PCA reconstruction error
of its own model (:class:`~reaper_core.detector.PCAAnomalyDetector`, re-fitted on every stored
event whenever a stack is searched) weighted by how significant the event is (see
:func:`event_scores`), so thresholds, labels and export work as for cutouts.

Stacks form by themselves on ingest: a TESScut cube is one; single-frame files of one sector,
camera, CCD and size form one once there are :data:`~reaper_core.stacks.MIN_FRAMES` of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from . import store
from .config import Settings
from .errors import ReaperError
from .progress import ProgressFn, noop
from .stacks import (
    Stack,
    chip_name,
    field_name,
    field_of,
    stack_from_cube,
    stack_from_records,
    stack_name,
)

if TYPE_CHECKING:
    from .embedders import Embedder

#: The event model keeps at least this many events per principal component.
MIN_EVENTS_PER_COMPONENT = 4
#: An event's score is its PCA reconstruction error to the power :data:`STRANGENESS_POWER` ×
#: (its significance / the least a kept event has) to this power (:func:`event_scores`).
SIGNIFICANCE_POWER = 4.0
#: How much an event's strangeness (its PCA reconstruction error) counts beside its
#: significance (:func:`event_scores`).
STRANGENESS_POWER = 0.25
#: Columns of a stored light curve, in order.
LIGHTCURVE_COLUMNS = ("time", "diff_flux", "diff_flux_err", "flux", "quality")
#: Columns of the events export, in order (the export contract's and more).
EVENT_COLUMNS = (
    "id", "stack", "kind", "x", "y", "t_start", "t_peak", "t_end", "peak_sigma", "ra", "dec",
    "score", "is_anomaly", "label", "x_start", "y_start", "x_end", "y_end", "rate",
    "n_detections", "binned", "sign", "lc_sigma",
)


def _wcs_header(wcs: Any) -> str | None:
    return wcs.to_header(relax=True).tostring() if wcs is not None else None


def _world(wcs: Any, x: float, y: float) -> tuple[float | None, float | None]:
    """RA, Dec (ICRS, degrees) of a pixel, None without a WCS or where it fails."""
    from .fits_reader import sky_positions

    ra, dec = sky_positions(wcs, x, y)
    return (None, None) if np.isnan(ra) or np.isnan(dec) else (float(ra), float(dec))


def pack_lightcurve(lc: dict[str, np.ndarray]) -> bytes:
    """A light curve as float64 bytes, columns :data:`LIGHTCURVE_COLUMNS`."""
    return np.stack([np.asarray(lc[c], float) for c in LIGHTCURVE_COLUMNS]).tobytes()


def unpack_lightcurve(blob: bytes) -> dict[str, np.ndarray]:
    """The columns of a stored light curve, each shape (n,)."""
    a = np.frombuffer(blob, np.float64).reshape(len(LIGHTCURVE_COLUMNS), -1)
    return {c: a[i] for i, c in enumerate(LIGHTCURVE_COLUMNS)}


def unpack_strip(row: store.TimeEvent) -> np.ndarray:
    """An event's difference cutouts, shape (m, s, s), e⁻/s."""
    s = row.patch_size
    return np.frombuffer(row.strip, np.float32).reshape(-1, s, s)


def search_and_store(engine: Engine, stack: Stack, key: str, settings: Settings,
                     progress: ProgressFn = noop) -> int:
    """Search ``stack`` for events (:func:`~reaper_core.events.search_stack`), describe them,
    store the stack and its events in one transaction (replacing an earlier search of the
    same ``key``), then re-fit the event model. Returns the stack's id."""
    from .events import search_stack

    res = search_stack(stack, patch_size=settings.patch_size, progress=progress)
    rows = []
    if res.events:
        progress("embed", 0.0, f"embedding {len(res.events)} event cutouts")
        feats = event_features(res.events, stack.cadence_days, settings)
        for e, f in zip(res.events, feats, strict=True):
            ra, dec = _world(stack.wcs, e.x, e.y)
            rows.append(dict(
                kind=e.kind, x=e.x, y=e.y, x_start=e.x_start, y_start=e.y_start, x_end=e.x_end,
                y_end=e.y_end, rate=e.rate, t_start=e.t_start, t_peak=e.t_peak, t_end=e.t_end,
                frame_peak=e.frame_peak, peak_sigma=e.peak_sigma, lc_sigma=e.lc_sigma,
                sign=e.sign,
                n_detections=e.n_detections, binned=e.binned, ra=ra, dec=dec,
                patch_size=settings.patch_size,
                strip=np.ascontiguousarray(e.strip, np.float32).tobytes(),
                strip_frames_json=json.dumps([int(v) for v in e.strip_frames]),
                track_json=json.dumps(np.round(e.track, 3).tolist()),
                lightcurve=pack_lightcurve(e.lightcurve), features=f.tobytes(),
            ))
    summary = stack.summary()
    record = dict(
        key=key, name=stack.name, sector=stack.sector, camera=stack.camera, ccd=stack.ccd,
        n_frames=len(stack), n_flagged=summary["flagged"], t_start=summary["t_start"],
        t_end=summary["t_end"], cadence_min=summary["cadence_min"],
        gaps_json=json.dumps(stack.gaps()),
        frames_json=json.dumps([f.as_dict() for f in stack.frames]),
        shifts_json=json.dumps(np.round(res.shifts, 4).tolist()),
        science_json=json.dumps(_region(stack.science)), wcs_header=_wcs_header(stack.wcs),
        ny=int(stack.shape[0]), nx=int(stack.shape[1]), n_detections=res.n_detections,
    )
    sid = store.write_stack(engine, record, rows)
    fit_event_model(engine, settings)
    progress("events", 1.0, f"{len(rows)} events in {stack.name}")
    return sid


def event_features(events: list, cadence_days: float, settings: Settings) -> np.ndarray:
    """What describes each event (:class:`~reaper_core.events.Event`): the embedding of its
    peak difference cutout by the configured embedder's backend (a difference has no stars to
    subtract) and its light-curve features; shape (n, d), float32."""
    from .events import lightcurve_features

    emb = _event_embedder(settings).embed(np.stack([e.cutout for e in events]))
    lcf = np.stack([lightcurve_features(e, cadence_days) for e in events])
    return np.hstack([emb, lcf]).astype(np.float32)


def describe_again(engine: Engine, rows: list[store.TimeEvent], settings: Settings,
                   chunk: int = 500) -> int:
    """Describe again, and store, the events of ``rows`` whose features another embedder or an
    older definition of the configured one gave (their length differs from
    :func:`event_features`'): the embedding of each one's peak cutout, from its stored strip,
    beside its stored light-curve features; ``chunk`` events at a time. Returns how many."""
    from .events import LIGHTCURVE_FEATURES, peak_cutout

    embedder = _event_embedder(settings)
    n_lc = len(LIGHTCURVE_FEATURES)
    stale = [int(r.id) for r in rows if len(r.features) != 4 * (embedder.dim + n_lc)]
    for start in range(0, len(stale), chunk):  # (strips held, and ids bound, a chunk at a time)
        heavy = store.event_rows(engine, ids=stale[start:start + chunk], heavy=True)
        cutouts = np.stack([peak_cutout(unpack_strip(r), json.loads(r.strip_frames_json),
                                        r.frame_peak) for r in heavy])
        lcf = np.stack([np.frombuffer(r.features, np.float32)[-n_lc:] for r in heavy])
        store.write_event_features(engine, [int(r.id) for r in heavy],
                                   np.hstack([embedder.embed(cutouts), lcf]).astype(np.float32))
    return len(stale)


def _event_embedder(settings: Settings) -> Embedder:
    """What embeds an event's cutout: the configured embedder's backend (a difference has no
    stars to subtract)."""
    from .embedders import get_embedder

    embedder = get_embedder(settings.embedder, settings)
    return getattr(embedder, "base", embedder)


def rank_events(X: np.ndarray, sigma: np.ndarray, mode: str, value: float,
                normal: np.ndarray | None = None, normal_weight: int | None = None):
    """Fit the event model on events described by ``X`` (n, d) and rank them: returns the
    fitted :class:`~reaper_core.detector.PCAAnomalyDetector`, their ranking scores
    (:func:`event_scores` with their significance ``sigma``, shape (n,)) and the threshold
    ``mode``/``value`` gives on them.
    ``normal`` (bool, shape (n,)) marks events a person called normal or an artefact: as
    for cutouts, they count ``normal_weight`` times (the detector's default when None) in the
    fit and damp those like them."""
    from .detector import PCAAnomalyDetector
    from .thresholds import threshold_from_scores

    X = np.asarray(X, np.float64)
    weight = {} if normal_weight is None else {"normal_weight": normal_weight}

    def fit(n_components: float | int) -> PCAAnomalyDetector:
        return PCAAnomalyDetector(n_components=n_components, threshold_mode=mode,
                                  threshold_value=value, **weight).fit(X, normal=normal)

    # Components explaining 90 % of the variance, but at most one per
    # MIN_EVENTS_PER_COMPONENT events: n events and n − 1 components rebuild each event
    # exactly, and a handful of events would all score 0.
    det = fit(0.9)
    most = max(1, len(X) // MIN_EVENTS_PER_COMPONENT)
    if det.n_components_ > most:
        det = fit(most)
    scores = event_scores(det.reconstruction_error(X), sigma, det.normal_damping(X))
    return det, scores, threshold_from_scores(scores, mode, value)


def _region(science: Any) -> list[int] | None:
    if science is None:
        return None
    return [int(science[0].start), int(science[0].stop), int(science[1].start),
            int(science[1].stop)]


def fit_event_model(engine: Engine, settings: Settings) -> store.EventModel | None:
    """Fit the event model on every stored event and score them all (None with fewer than 3
    events); its threshold mode and value are the last event model's, else the settings'.
    Events labelled normal or artefact damp those like them (:func:`rank_events`)."""
    from .events import significance
    from .labels import sinks

    rows = store.event_rows(engine, features=True)
    if len(rows) < 3:
        return None
    if describe_again(engine, rows, settings):
        rows = store.event_rows(engine, features=True)
    X = np.stack([np.frombuffer(r.features, np.float32) for r in rows])
    last = store.current_event_model(engine)
    mode, value = ((last.threshold_mode, last.threshold_value) if last is not None
                   else (settings.threshold_mode, settings.threshold_value))
    damp = np.array([sinks(r.label) for r in rows])
    sigma = significance([r.peak_sigma for r in rows], [r.lc_sigma for r in rows])
    det, scores, threshold = rank_events(X, sigma, mode, value, normal=damp,
                                         normal_weight=settings.normal_weight)
    arrays, meta = det.to_bytes()
    return store.write_event_model(engine, dict(
        embedder=settings.embedder, n_components=det.n_components_, n_train=len(rows),
        threshold_mode=mode, threshold_value=value, threshold=threshold,
        arrays=arrays, meta_json=meta,
        explained_variance_json=json.dumps(det.explained_variance_ratio_.tolist()),
    ), [int(r.id) for r in rows], scores)


def event_scores(errors: np.ndarray, sigma: np.ndarray,
                 damping: np.ndarray | None = None) -> np.ndarray:
    """Events' ranking scores, shape (n,): their PCA reconstruction errors (shape (n,)) to the
    power :data:`STRANGENESS_POWER`, times (their significance,
    :func:`~reaper_core.events.significance`, over the least a kept event has,
    :data:`~reaper_core.events.LEAST_SIGNIFICANCE`) to the
    power :data:`SIGNIFICANCE_POWER`, times ``damping`` (shape (n,), in [0, 1]: what labels
    of normal or artefact leave of each score,
    :meth:`~reaper_core.detector.PCAAnomalyDetector.normal_damping`; ones when None).

    Among events, the strangest-looking difference cutouts are mostly not events at all — a
    bright star's residual beside a faint detection, a dipole — so the PCA score alone ranked
    injected events *below* false ones (ROC AUC 0.30 and 0.44 over two sets of six simulated
    stacks, ``benchmarks/timeline.py``); significance alone 0.960 and 0.993. Strangeness to
    the powers 1, 0.5, 0.33, 0.25, 0.1: 0.919/0.976, 0.941/0.988, 0.949/0.990, 0.951/0.993,
    0.952/0.993. At 0.25 a thousand times the error weighs as 1.5 times the significance, so
    among events of like significance the stranger still ranks first; the labels' damping is
    applied to the score itself, not to the error, so that a look-alike of an event called
    normal sinks as far as before (through the error, its fourth root would barely move it)."""
    from .events import LEAST_SIGNIFICANCE as least

    weight = np.maximum(np.asarray(sigma, float), least) / least
    score = np.asarray(errors, float) ** STRANGENESS_POWER * weight**SIGNIFICANCE_POWER
    return score if damping is None else score * np.asarray(damping, float)


def stack_for_row(row: store.ImageStack) -> Stack:
    """The :class:`~reaper_core.stacks.Stack` a stored stack was made from (frames read from
    their files on use)."""
    from .stacks import StackFrame, stored_wcs

    frames = [StackFrame(**f) for f in json.loads(row.frames_json)]
    wcs = stored_wcs(row.wcs_header)
    region = json.loads(row.science_json) if row.science_json else None
    science = (slice(region[0], region[1]), slice(region[2], region[3])) if region else None
    cube = None
    if frames and frames[0].index is not None:
        from .fits_reader import read_tesscut

        cube = read_tesscut(frames[0].path, name=frames[0].name).flux
    return Stack(name=row.name, frames=frames, shape=(row.ny, row.nx), sector=row.sector,
                 camera=row.camera, ccd=row.ccd, science=science, wcs=wcs, cube=cube)


def auto_stacks(engine: Engine, settings: Settings, added: list[int],
                progress: ProgressFn = noop) -> list[str]:
    """Search the stacks that the newly ``added`` files (ids) make or grow: each TESScut cube,
    each set of ≥ 3 single-frame files of one sector/camera/CCD and size, and each set of ≥ 3
    other frames with times of one field (:func:`~reaper_core.stacks.field_of`) and size.
    Returns one sentence per stack that could not be searched (the others are stored)."""
    if not added:
        return []
    records = store.file_records(engine)
    new = set(added)
    problems = []
    todo: list[tuple[str, Any]] = []
    for r in records:
        if r.id in new and r.layout == "tesscut" and r.stored_path:
            todo.append((f"cube:{r.sha256}", lambda r=r: stack_from_cube(r.stored_path,
                                                                         name=r.name)))
    groups: dict[tuple, list] = {}
    for r in records:
        if r.layout == "tesscut" or not r.stored_path or r.tstart is None:
            continue
        if r.sector is not None and r.ccd is not None:
            groups.setdefault(("ffi", r.sector, r.camera, r.ccd, r.ny, r.nx), []).append(r)
        elif (field := field_of(json.loads(r.header_json or "{}"))) is not None:
            # (one detector of a mosaic: its HDU)
            groups.setdefault(("field", *field, r.hdu, r.ny, r.nx), []).append(r)
    # In a stable order of their keys (str: a camera may be None); the members' reprs were
    # compared too, a cost that grew with every file in the database.
    for (kind, *group), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len(members) < 3 or not new & {m.id for m in members}:
            continue
        if kind == "field":  # frames of one field, not TESS's
            *field, hdu, _, _ = group
            # (one image of each file: its HDU)
            name = chip_name(field_name(tuple(field)),
                             hdu if members[0].name.endswith(f"[{hdu}]") else None)
            key = "field:" + hashlib.sha256(repr(tuple(group)).encode()).hexdigest()
        else:
            sector, camera, ccd, ny, nx = group
            name = stack_name(sector, camera, ccd)
            key = f"ffi:s{sector:04d}-{camera}-{ccd}-{ny}x{nx}"

        def make(members=members, name=name) -> Stack:
            from .stacks import frame_info

            _, img = frame_info(members[0].stored_path, members[0].name, members[0].hdu)
            return stack_from_records(members, name, img.valid, img.wcs)

        todo.append((key, make))
    for key, make in todo:
        try:
            search_and_store(engine, make(), key, settings, progress)
        except ReaperError as exc:  # StackError, FITSReadError: one sentence each
            problems.append(str(exc))
    return problems


def event_columns(engine: Engine, stack_id: int | None = None, kind: str | None = None
                  ) -> dict[str, np.ndarray]:
    """The events as columns :data:`EVENT_COLUMNS` (arrays of shape (n,)), ranked: score
    descending, ties (and unscored events) by id."""
    model = store.current_event_model(engine)
    names = {s.id: s.name for s in store.stacks(engine)}
    rows = store.event_rows(engine, stack_id, kind)
    thr = model.threshold if model is not None else np.inf
    out: dict[str, list] = {c: [] for c in EVENT_COLUMNS}
    for r in rows:
        for c in EVENT_COLUMNS:
            if c == "stack":
                v = names.get(r.stack_id, "")
            elif c == "is_anomaly":
                v = bool(r.score is not None and r.score > thr)
            else:
                v = getattr(r, c)
            out[c].append(v)
    cols = {c: np.array(v, dtype=object) for c, v in out.items()}
    score = np.array([np.nan if v is None else float(v) for v in cols["score"]], float)
    order = np.lexsort((cols["id"].astype(np.int64), -np.nan_to_num(score, nan=-np.inf)))
    return {c: v[order] for c, v in cols.items()}
