"""Time-domain events: detections in difference images linked through time, classified,
measured (light curve, cutouts) and described for ranking.

Linking follows each detection from frame to frame: a track continues with the detection of the
same sign nearest to where it is expected (its last place, moved by its fitted rate), within
``radius`` pixels — or, for a track seen once, within ``radius + max_rate × frames`` so that a
fast asteroid is caught on its second frame — allowing ``max_gap`` frames without a detection.

Kinds (:data:`EVENT_KINDS`):

``mover``         a track of at least 4 brightenings, in at least 60 % of the frames it
                  spans, moving steadily (a straight line at a constant rate, scatter under
                  0.7 px) by more than 3 px: an asteroid, a comet (a track of dimmings that
                  moves so is a chain of residuals, and no event);
``variable``      a place that dims (negative residual: an eclipse, a star fading), or that
                  brightens in more than one episode; or a star varying through the whole
                  stack (a pulsator, a rotator), whose S/N wanders smoothly from frame to
                  frame (:class:`Coherence`, :func:`settle_variable`);
``transient``     one episode of brightening over at least 2 frames at one place (the last
                  may be below detection, see below): a flare, a supernova, a nova;
``single_frame``  seen in one frame only: a glint, a satellite streak, a cosmic ray.

Detections give a first kind; once an event's light curve is measured, a place that
brightened and was called a ``variable`` becomes a ``transient`` when its light curve shows
one episode of brightening and no dip (:func:`kind_from_episodes`): its detections may have
come in several stretches (a long transient's tail wandering about the threshold) or beside
dips that are no variability (the reference, a median, holding some of a long transient).

Slow events too faint for any one frame (a supernova a few σ a frame for days, a flare
fading over hours) are searched for in bins of frames as well (:data:`BIN_FRAMES`,
:class:`BinnedSearch`): each bin's summed S/N is searched as one frame, the same place in
consecutive bins is one candidate (a ``transient`` when it brightened, a ``variable`` when it
dimmed), measured against its light curve's running mean over as many frames; where the
single frames found it too, the two are one event (:func:`merge_recurrent`).

Events must be significant as a whole: at least :data:`MIN_SIGMA` at their peak, and
:data:`SINGLE_FRAME_SIGMA` for one seen once (a chance excursion of noise in one of a thousand
frames of four million pixels is far likelier than in two consecutive ones) unless the
next frame is still :data:`FADE_SIGMA` up at its place (a flare fading below the detection
threshold: then a ``transient``) or, from :data:`CLEAN_SINGLE_SIGMA`, its difference at the
peak is clean (:data:`CLEAN_PURITY` of its own sign: a faint glint); and, movers
apart, of one sign at their peak (:func:`purity`): a bright star's residual in a frame that is
misaligned or blurred more than most is a dipole, not an event.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .parallel import map_ordered
from .progress import ProgressFn, noop

if TYPE_CHECKING:  # the pipeline (SciPy, photutils) is imported where it runs
    from .difference import Difference, Reference

EVENT_KINDS = ("transient", "variable", "mover", "single_frame")
#: Peak matched-filter S/N an event needs.
MIN_SIGMA = 5.0
#: Peak S/N an event seen in a single frame needs.
SINGLE_FRAME_SIGMA = 6.5
#: Peak S/N from which an event seen once is kept, under :data:`SINGLE_FRAME_SIGMA`, when its
#: difference at the peak is clean: at least :data:`CLEAN_PURITY` of its own sign (a glint, a
#: satellite's streak, a flare of one frame is the PSF's shape; a chance excursion of noise is
#: a bump among other bumps of both signs).
CLEAN_SINGLE_SIGMA = 5.5
CLEAN_PURITY = 0.8
#: Aperture radius for light curves, pixels.
APERTURE_PX = 2.0
#: A mover is seen at least this many times, in at least this fraction of the frames it
#: spans: a real one is seen in most frames of its crossing, while a line through noise
#: detections (among tens of thousands a stack) rarely holds more than three.
MOVER_DETECTIONS = 4
MOVER_FILL = 0.6
#: Of an event's difference at its peak within :data:`PURITY_RADIUS` px, the share that must be
#: of its own sign (:func:`purity`): a star's residual from a misalignment or a change of the
#: PSF is a dipole, as much below the reference as above it, where a flare, a supernova or an
#: eclipse is of one sign.
MIN_PURITY = 0.35
PURITY_RADIUS = 3.0
#: Smallest frame side (px) in which movers are looked for.
MIN_MOVER_FIELD = 16
#: A detection seen once, under :data:`SINGLE_FRAME_SIGMA`, is kept when the next frame's
#: matched-filter S/N at its place is at least this (a flare fading below the detection
#: threshold; noise passes one time in forty).
FADE_SIGMA = 2.0
#: An event seen once must reach this fraction of :data:`SINGLE_FRAME_SIGMA` in its light
#: curve (aperture photometry is ~20 % less sensitive than the matched filter) ...
LC_FRACTION = 0.8
#: ... and one detected more than once this fraction of :data:`MIN_SIGMA`. At 0.8 (4σ), four
#: crowded simulated stacks without events (three times the real density, 300 frames of 256²
#: each, seeds 21–24) gave 12 false events, at 4.0–5.2σ in their light curves: 1.0 per 100
#: frames; at 0.9, 5 (0.4), and on the three benchmark sets one of 277 events above 5σ
#: lost (a 10–30σ flare), one false event of two gone (stop 43).
LC_FRACTION_SEVERAL = 0.9
#: The least light-curve significance a kept event has (movers apart: their detections').
LEAST_SIGNIFICANCE = min(LC_FRACTION * SINGLE_FRAME_SIGMA, LC_FRACTION_SEVERAL * MIN_SIGMA)
#: Frames a light curve needs outside its event to be decorrelated against the pointing.
MIN_DECORRELATION_FRAMES = 20
#: A light curve whose every frame is this many times its measurement error from the
#: reference, of one sign, holds a residual common to every frame (without frames outside the
#: event to measure it against: :func:`_against_every_frame`).
STATIC_SIGMA = 3.0
#: Frames either side of an event's span that still belong to it: its strip shows them, a
#: mover's light curve is measured over them, its light curve's baseline leaves them out.
SPAN_MARGIN_FRAMES = 2
#: An event this close (px) to a star's pixels is measured against its frame's noise factor
#: (:func:`at_star`): its aperture's radius and one pixel of the star's wing. Chosen on
#: simulated stacks, seeds 0–11 (2 px: a false event more per 100 frames; 3.5 px: a faint
#: satellite lost).
STAR_REACH_PX = 3.0
#: Frames of the running median that tells where an event's light curve is still up (its
#: baseline leaves them out: :func:`lightcurve_sigma`).
GROW_MEDIAN_FRAMES = 5
#: Rounds of growing that span at most (each with the baseline the last one left).
GROW_ROUNDS = 4
#: An episode of an event's light curve: frames whose running median over 3 frames is this
#: far (its baseline's robust σ) above, or below, the baseline (2 of 3 frames beyond 3σ by
#: chance: once in 200,000 frames).
EPISODE_SIGMA = 3.0
#: Episodes this few frames apart are one (a long transient's tail dipping into the noise).
EPISODE_GAP_FRAMES = 5
#: A second brightening counts when it reaches this share of the strongest one: a pointing
#: state's offset (tenths of a bright event's peak) is no second episode.
EPISODE_SHARE = 0.5
#: A brightening this many times stronger than every dip at its place is a transient that the
#: reference partly holds (its median includes some of the frames it is up in), which leaves
#: the place looking dimmer before and after it: those dips are no variability.
OUTSHINE = 1.5
#: Lengths (frames) of the bins whose differences are summed and searched as one frame: a
#: slow event too faint for any one frame (a supernova 5σ a frame for tens of frames is some
#: 15σ in 16 of them; a flare fading over hours) is found in its bin. Bins start at multiples
#: of their length; frames with severe quality bits or no data are left out of them.
BIN_FRAMES = (4, 16)
#: A bin's S/N at a place is divided by the root mean square of the bins before it over
#: this many px a side about it, with this many bins of unit variance as a prior.
BIN_NOISE_BOX = 5
BIN_PRIOR = 4
#: Frames of difference cutouts kept per event (the strip).
STRIP_FRAMES = 12
#: Bytes of strips the light-curve pass cuts for its candidates at most. Most candidates of a
#: long stack of large frames fail their light-curve test (tens of thousands in a sector of
#: 2048² frames: gigabytes of strips); beyond this, the pass cuts each candidate's peak cutout
#: only and a third pass over the frames the survivors' strips show cuts their strips.
STRIP_BUDGET_BYTES = 32 * 2**20
#: Bytes of light curves (12 a frame) and cutouts the light-curve pass holds for the candidates
#: it measures at once; more candidates than fit are measured in several passes over the frames
#: (a 2048² sector of 1,300 frames: some 100,000 candidates, 1.6 GB at once).
LIGHTCURVE_BUDGET_BYTES = 512 * 2**20
#: Places whose light curves measure how noisy each frame is (:func:`frame_factors`): at most
#: this many, spread over the candidates, so that the light-curve pass stays bounded however
#: many candidates a long stack of large frames gives; in a long stack fewer, at most
#: :data:`NOISE_PROBE_VALUES` fluxes in all (800 frames: 1,000 places), but never fewer
#: than :data:`MIN_NOISE_PROBES` (a frame's factor is their median).
MAX_NOISE_PROBES = 4000
NOISE_PROBE_VALUES = 800_000
MIN_NOISE_PROBES = 1000
#: A place whose matched-filter S/N wanders smoothly from frame to frame — its variance over
#: the stack less half its mean squared change between consecutive frames (noise alone: 0 ±
#: a few hundredths over hundreds of frames) at least this — is measured as a candidate
#: variable star (:class:`Coherence`): a star varying through the whole stack (a pulsator, a
#: rotator, an eclipsing binary) has no quiet stretch for an event to stand out of, and its
#: own scatter sets its pixels' noise (:func:`reaper_core.difference._noise_model`).
COHERENT_VARIANCE = 1.0
#: Candidate variable stars measured at most, the most coherent first.
MAX_VARIABLES = 200
#: A candidate variable star is kept when its light curve (decorrelated against the
#: pointing), averaged over :data:`VARIABLE_FRAMES` frames, strays at least this far from its
#: median in units of that average's noise (measured from the changes between consecutive
#: frames), and when most of its variance is smooth (:func:`wander`).
VARIABLE_SIGMA = 8.0
VARIABLE_FRAMES = 5
#: Candidate variable stars are looked for this many px inside the widest edge that the
#: search leaves out of any frame (:meth:`Coherence.candidates`).
EDGE_PX = 4
#: A candidate variable star is point-like: its :meth:`Coherence.smooth_variance` stands
#: :data:`COHERENT_VARIANCE` above the median over the ring between these radii (px) about
#: it, which holds at most this share of its peak (a glow's wander is as high on the ring).
POINT_RING_PX = (4, 7)
POINT_RING_SHARE = 0.5
#: A candidate variable star's light curve is judged less each pointing segment's level (a
#: straight line where a difference's sky is no mesh; :func:`wander`): a segment
#: (:func:`pointing_segments`) ends where the pointing jumps by more than this (px; and by
#: 6 robust σ of the frame-to-frame steps), at a momentum dump's flag, or where the cadences
#: leave a gap of more than :data:`SEGMENT_GAP_CADENCES`.
SEGMENT_JUMP_PX = 0.1
SEGMENT_GAP_CADENCES = 5.0


@dataclass
class Event:
    """One event found in a stack.

    Positions are 0-based pixels of the stored array (science offset added); times BTJD.
    ``frames`` are the stack frames of its detections, ``peak`` the frame of its peak.
    """

    kind: str
    x: float
    y: float
    frame_start: int
    frame_peak: int
    frame_end: int
    t_start: float
    t_peak: float
    t_end: float
    peak_sigma: float
    sign: int
    n_detections: int
    flux: float  # peak difference flux over the detection's segment, e⁻/s (signed)
    area: float
    elongation: float
    x_start: float | None = None
    y_start: float | None = None
    x_end: float | None = None
    y_end: float | None = None
    rate: float | None = None  # px per day (movers)
    #: Significance in its own light curve (:func:`lightcurve_sigma`), once measured.
    lc_sigma: float | None = None
    #: :func:`purity` of its peak detection, measured on that frame's difference as it was
    #: searched (None where not measured).
    peak_purity: float | None = None
    #: Frames summed in each of its detections: 1 when found in single frames, else the
    #: length of the bins it was found in (:data:`BIN_FRAMES`; ``peak_sigma`` is then the
    #: bin's S/N).
    binned: int = 1
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int), repr=False)
    track: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)
    #: Light curve columns (see :func:`light_curves`).
    lightcurve: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Difference cutouts across the event, shape (m, s, s), and the frames they are from.
    strip: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.float32),
                              repr=False)
    strip_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int), repr=False)

    @property
    def significance(self) -> float:
        """How significant the event is: the weaker of its detection S/N and its
        light-curve significance (:func:`significance`)."""
        return float(significance(self.peak_sigma, self.lc_sigma))

    @property
    def cutout(self) -> np.ndarray:
        """Difference cutout at the peak, shape (s, s), e⁻/s."""
        return peak_cutout(self.strip, self.strip_frames, self.frame_peak)

    @cached_property
    def _track_fit(self) -> tuple[np.ndarray, np.ndarray]:
        f, x, y = self.track.T
        return np.polyfit(f, x, 1), np.polyfit(f, y, 1)

    def position_at(self, frame: int | np.ndarray) -> tuple[Any, Any]:
        """(x, y) of the event in ``frame`` (a mover along its fitted track)."""
        if self.kind != "mover" or len(self.track) < 2:
            return self.x + 0 * np.asarray(frame), self.y + 0 * np.asarray(frame)
        px, py = self._track_fit
        return np.polyval(px, frame), np.polyval(py, frame)


def link(det: dict[str, np.ndarray], *, radius: float = 1.5, max_rate: float = 4.0,
         max_gap: int = 2) -> list[np.ndarray]:
    """Group detections (columns :data:`~reaper_core.difference.DETECTION_FIELDS`) into tracks;
    returns, per track, the indices of its detections in frame order."""
    order = np.lexsort((det["x"], det["y"], det["frame"]))
    frames = det["frame"][order].astype(int)
    tracks: list[list[int]] = []
    active: list[int] = []
    for f in np.unique(frames):
        here = order[frames == f]
        active = [t for t in active if f - det["frame"][tracks[t][-1]] <= max_gap + 1]
        pairs = []
        for t in active:
            idx = tracks[t]
            last = idx[-1]
            dt = f - det["frame"][last]
            if len(idx) >= 2 and det["frame"][idx[-1]] != det["frame"][idx[0]]:
                tf = det["frame"][idx]
                vx = np.polyfit(tf, det["x"][idx], 1)[0] if len(idx) > 2 else \
                    (det["x"][idx[-1]] - det["x"][idx[0]]) / (tf[-1] - tf[0])
                vy = np.polyfit(tf, det["y"][idx], 1)[0] if len(idx) > 2 else \
                    (det["y"][idx[-1]] - det["y"][idx[0]]) / (tf[-1] - tf[0])
                r = radius + 0.5 * np.hypot(vx, vy) * (dt - 1)
            else:
                vx = vy = 0.0
                r = radius + max_rate * dt
            px, py = det["x"][last] + vx * dt, det["y"][last] + vy * dt
            d = np.hypot(det["x"][here] - px, det["y"][here] - py)
            same = det["sign"][here] == det["sign"][last]
            for j in np.flatnonzero((d <= r) & same):
                pairs.append((d[j], t, int(here[j])))
        taken_t, taken_d = set(), set()
        for _, t, j in sorted(pairs):
            if t in taken_t or j in taken_d:
                continue
            tracks[t].append(j)
            taken_t.add(t)
            taken_d.add(j)
        for j in here:
            if int(j) not in taken_d:
                tracks.append([int(j)])
                active.append(len(tracks) - 1)
    return [np.array(t, int) for t in tracks]


def classify(det: dict[str, np.ndarray], idx: np.ndarray, *, min_motion: float = 3.0
             ) -> tuple[str, float | None]:
    """Kind of a track (see the module docstring) and its rate, px per frame (movers)."""
    f, x, y = det["frame"][idx], det["x"][idx], det["y"][idx]
    if len(idx) == 1:
        return "single_frame", None
    if len(idx) >= MOVER_DETECTIONS and len(idx) >= MOVER_FILL * (np.ptp(f) + 1):
        px, py = np.polyfit(f, x, 1), np.polyfit(f, y, 1)
        rate = float(np.hypot(px[0], py[0]))
        scatter = float(np.sqrt(np.mean((x - np.polyval(px, f)) ** 2
                                        + (y - np.polyval(py, f)) ** 2)))
        if rate * np.ptp(f) > max(min_motion, 5 * scatter) and scatter < 0.7:
            return "mover", rate
    return ("variable" if det["sign"][idx[0]] < 0 else "transient"), None


def make_events(det: dict[str, np.ndarray], times: np.ndarray, offset: tuple[int, int] = (0, 0),
                *, radius: float = 1.5, min_sigma: float = MIN_SIGMA,
                single_sigma: float = SINGLE_FRAME_SIGMA, movers: bool = True,
                min_purity: float | None = None,
                places: list[tuple[float, float, float]] | None = None) -> list[Event]:
    """Link detections into candidate events, classify them and keep those significant in
    their detections, in a stable order (time of peak, then position). ``movers=False`` for
    frames too small to see anything cross them (a TESScut cube of a few pixels).

    With ``min_purity``, a candidate that stands still and whose peak detection's purity
    (the detections' ``purity`` column) is below it is not made an event; ``places``, a list,
    receives (time of peak, y, x) of every candidate that stands still, kept or not (see
    :func:`noise_probes`). Most candidates of a long stack are such dipoles: they are never
    held as events.
    """
    x0, y0 = offset
    cadence = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    out = []
    for t in link(det, radius=radius):
        k, r = classify(det, t, min_motion=3.0 if movers else np.inf)
        sig = det["sigma"][t]
        p = t[int(np.argmax(sig))]
        peak = float(sig.max())
        if k == "single_frame" and min_sigma <= peak < single_sigma and \
                "next_sigma" in det and det["next_sigma"][p] >= FADE_SIGMA:
            k = "transient"  # a flash still there in the next frame, below detection: a flare
        clean = (k == "single_frame" and peak >= min(CLEAN_SINGLE_SIGMA, single_sigma)
                 and "purity" in det and det["purity"][p] >= CLEAN_PURITY)
        if peak < (single_sigma if k == "single_frame" and not clean else min_sigma):
            continue
        if k == "mover" and det["sign"][p] < 0:
            # A moving object brightens the frames it crosses (the reference, a median over
            # the stack, holds none of it): a steady line of dimmings is a chain of residuals.
            continue
        x, y = float(det["x"][p]) + x0, float(det["y"][p]) + y0
        if k != "mover":
            if places is not None:
                places.append((float(times[int(det["frame"][p])]), y, x))
            if min_purity is not None and "purity" in det and det["purity"][p] < min_purity:
                continue
        f = det["frame"][t].astype(int)
        ev = Event(
            kind=k, x=x, y=y,
            frame_start=int(f.min()), frame_peak=int(det["frame"][p]), frame_end=int(f.max()),
            t_start=float(times[f.min()]), t_peak=float(times[int(det["frame"][p])]),
            t_end=float(times[f.max()]), peak_sigma=peak, sign=int(det["sign"][p]),
            n_detections=len(t), flux=float(det["flux"][p]), area=float(det["area"][p]),
            elongation=float(det["elongation"][p]), frames=f,
            track=np.column_stack([f, det["x"][t] + x0, det["y"][t] + y0]),
            peak_purity=float(det["purity"][p]) if "purity" in det else None,
        )
        if k == "mover":
            first, last = t[int(np.argmin(f))], t[int(np.argmax(f))]
            ev.x_start, ev.y_start = float(det["x"][first] + x0), float(det["y"][first] + y0)
            ev.x_end, ev.y_end = float(det["x"][last] + x0), float(det["y"][last] + y0)
            ev.rate = float(r) / cadence if r is not None else None
        out.append(ev)
    out.sort(key=lambda e: (e.t_peak, e.y, e.x))
    return out


class BinnedSearch:
    """The matched-filter S/N of a stack's differences summed over bins of ``length`` frames
    and searched as one frame (:data:`BIN_FRAMES`): give it each searched frame in order
    (:meth:`add`), and :meth:`close` after each frame; a bin is searched once its last frame is
    in. Holds three frames' worth of pixels (the bin's sum, its largest single-frame S/N,
    the bins' squares), whatever the stack's length.

    Each bin's S/N at a place is judged against the bins before it there (:data:`BIN_NOISE_BOX`,
    :data:`BIN_PRIOR`): what a frame's noise model misses is small in one frame but adds up
    over a bin where it lasts (a star's residual in one pointing state, scattered light the
    background left, the reference's own error; without this, one simulated stack of 96² px
    and 160 frames gave three false events).

    A bin's detection where one single frame of the bin was at least as strong (its largest
    absolute S/N at the place ≥ the bin's) is left out: a glint, a satellite's streak, a fast
    asteroid or a star's residual in one frame is no slow event (a slow one, S/N s a frame,
    is s·√length in the bin). Detections keep the columns of
    :func:`~reaper_core.difference.detect` (``frame`` the bin's middle searched frame,
    ``flux`` NaN: a light curve measures it) and add ``purity`` (on the bin's S/N), ``first``
    and ``last`` (the bin's searched frames).
    """

    def __init__(self, length: int, ref: Reference, offset: tuple[int, int] = (0, 0)):
        self.length, self.ref, self.offset = length, ref, offset
        self.total: np.ndarray | None = None
        self.largest: np.ndarray | None = None  # largest |S/N| of one frame
        self.squares: np.ndarray | None = None  # Σ S/N² of the bins searched, per pixel
        self.searched = 0
        self.frames: list[int] = []
        self.found: list[dict[str, np.ndarray]] = []

    def add(self, frame: int, snr: np.ndarray) -> None:
        """Frame ``frame``'s matched-filter S/N, shape (ny, nx)."""
        if self.total is None:
            self.total, self.largest = snr.astype(np.float32), np.abs(snr, dtype=np.float32)
        else:
            self.total += snr
            np.maximum(self.largest, np.abs(snr), out=self.largest)
        self.frames.append(frame)

    def close(self, frame: int, last: bool = False) -> None:
        """Frame ``frame`` is done: search the bin if it ends there (or the stack does)."""
        if (frame + 1) % self.length and not last:
            return
        total, largest, frames = self.total, self.largest, self.frames
        self.total, self.largest, self.frames = None, None, []
        if total is None or len(frames) < max(2, self.length // 2):
            return
        from scipy import ndimage

        from .difference import Difference, detect, sky_noise

        total /= np.sqrt(len(frames))
        total /= sky_noise(total, self.ref.faint & (total != 0))
        # Judged against the bins before it here: their mean square over BIN_NOISE_BOX² px,
        # with BIN_PRIOR bins of unit variance.
        if self.squares is None:
            self.squares = np.zeros(total.shape, np.float32)
        local = ndimage.uniform_filter(self.squares, BIN_NOISE_BOX, mode="nearest")
        scale = np.sqrt((BIN_PRIOR + local) / (BIN_PRIOR + self.searched))
        del local
        self.squares += total * total
        self.searched += 1
        total /= scale
        det = detect(Difference(diff=total, snr=total, sigma=total, shift=(0.0, 0.0)),
                     frame=frames[len(frames) // 2])
        iy = np.clip(np.round(det["y"]).astype(int), 0, total.shape[0] - 1)
        ix = np.clip(np.round(det["x"]).astype(int), 0, total.shape[1] - 1)
        det = {k: v[largest[iy, ix] < det["sigma"]] for k, v in det.items()}
        if len(det["x"]) == 0:
            return
        det["purity"] = detection_purity(total, det, self.offset)
        det["flux"] = np.full(len(det["x"]), np.nan)
        det["first"] = np.full(len(det["x"]), frames[0])
        det["last"] = np.full(len(det["x"]), frames[-1])
        self.found.append(det)

    def detections(self) -> dict[str, np.ndarray]:
        """Every bin's detections so far, one table."""
        from .difference import DETECTION_FIELDS

        keys = (*DETECTION_FIELDS, "purity", "first", "last")
        if not self.found:
            return {k: np.zeros(0) for k in keys}
        return {k: np.concatenate([d[k] for d in self.found]) for k in keys}


def binned_events(det: dict[str, np.ndarray], length: int, times: np.ndarray,
                  offset: tuple[int, int] = (0, 0), *, min_sigma: float = MIN_SIGMA,
                  single_sigma: float = SINGLE_FRAME_SIGMA,
                  min_purity: float | None = None) -> list[Event]:
    """Candidate events from the detections of bins of ``length`` frames
    (:meth:`BinnedSearch.detections`): the same place in consecutive bins is one, a
    ``transient`` when it brightened, else a ``variable``; kept when its peak bin reaches
    ``min_sigma`` (``single_sigma`` when seen in one bin only, as a single frame) and its
    purity there ``min_purity``. Stable order (peak, then place)."""
    x0, y0 = offset
    by_bin = dict(det, frame=det["first"] // length)
    out = []
    for t in link(by_bin, radius=1.5, max_gap=1, max_rate=0.0):
        p = t[int(np.argmax(det["sigma"][t]))]
        need = single_sigma if len(t) == 1 else min_sigma
        if det["sigma"][p] < need or (min_purity is not None
                                           and det["purity"][p] < min_purity):
            continue
        first, last, peak = int(det["first"][t].min()), int(det["last"][t].max()), \
            int(det["frame"][p])
        out.append(Event(
            kind="transient" if det["sign"][p] > 0 else "variable",
            x=float(det["x"][p]) + x0, y=float(det["y"][p]) + y0,
            frame_start=first, frame_peak=peak, frame_end=last, t_start=float(times[first]),
            t_peak=float(times[peak]), t_end=float(times[last]),
            peak_sigma=float(det["sigma"][p]), sign=int(det["sign"][p]), n_detections=len(t),
            flux=float("nan"), area=float(det["area"][p]),
            elongation=float(det["elongation"][p]), peak_purity=float(det["purity"][p]),
            binned=length, frames=np.arange(first, last + 1),
            track=np.column_stack([det["frame"][t], det["x"][t] + x0, det["y"][t] + y0])))
    out.sort(key=lambda e: (e.t_peak, e.y, e.x))
    return out


def significance(peak_sigma: Any, lc_sigma: Any) -> np.ndarray:
    """Events' significance, shape of the inputs: the weaker of the detection S/N at the peak
    (``peak_sigma``) and the significance in the event's own light curve (``lc_sigma``, NaN or
    None where not measured: then ``peak_sigma``). Either can be fooled alone — a frame's
    noise underestimated at one place, a light curve's scatter by a star's residual — and the
    false events left were strong in one only (ROC AUC of injected over false events by the
    app's score, two sets of six simulated stacks: 0.899 / 0.941 by the detection S/N, 0.910 /
    0.951 by the weaker of the two)."""
    peak = np.asarray(peak_sigma, float)
    lc = np.asarray(np.where(np.equal(lc_sigma, None), np.nan, lc_sigma), float)
    return np.where(np.isfinite(lc), np.minimum(peak, lc), peak)


def lightcurve_sigma(ev: Event, frame_factor: np.ndarray | None = None,
                     shifts: np.ndarray | None = None) -> float:
    """Significance of an event in its own light curve: its peak difference flux over the
    robust scatter of the difference flux outside the event (and outside the frames about it
    where its light curve is still up, :func:`_grown_span`), divided by how much noisier than
    usual its peak frame was (``frame_factor``, see :func:`frame_factors`; movers: their
    detections' S/N, their light curve covers only their crossing). With the frames'
    pointing (``shifts``, shape (n, 2), px), the difference flux is first decorrelated
    against it (:func:`_decorrelated`): a star's residual that follows the pointing is no
    event. An event found in bins of frames (``binned``) is measured in its light curve's
    running mean over as many frames, against that running mean's own scatter outside it,
    and is 0 without such a baseline (a slow event is told from a drift by the frames
    without it)."""
    lc = ev.lightcurve
    if ev.kind == "mover" or not lc:
        return ev.peak_sigma
    span = (ev.frame_start, ev.frame_end)
    flux, base, noise = _baseline(lc["diff_flux"], span, shifts)
    if not _measurable(base, noise):
        # (Found in bins: a slow event needs frames without it to tell it from a drift.)
        return _against_every_frame(ev, flux) if ev.binned == 1 else 0.0
    # A long transient detected near its peak only (a supernova's slow tail under the
    # detection threshold): its baseline leaves out the frames about the span where the event
    # is still up (their running median above FADE_SIGMA), found again as the baseline
    # settles (a few rounds) — never past what leaves a baseline too short to decorrelate (a
    # short stack's residual, up most of the time, keeps the baseline it had).
    for _ in range(GROW_ROUNDS):
        grown = _grown_span(ev.sign * (flux - np.median(base)) / noise, span)
        if grown == span:
            break
        wider = _baseline(lc["diff_flux"], grown, shifts)
        if len(wider[1]) < MIN_DECORRELATION_FRAMES or not np.isfinite(wider[2]) or wider[2] <= 0:
            break
        span, (flux, base, noise) = grown, wider
    factor = 1.0 if frame_factor is None else float(frame_factor[ev.frame_peak])
    if ev.binned > 1:
        flux, base, noise = _binned_curve(flux, ev.binned, span)
        if not _measurable(base, noise):
            return 0.0
        if frame_factor is not None:
            near = slice(max(ev.frame_peak - ev.binned // 2, 0), ev.frame_peak + ev.binned // 2 + 1)
            factor = float(np.mean(frame_factor[near]))
    inside = flux[ev.frame_start:ev.frame_end + 1]
    if not np.isfinite(inside).any():
        return ev.peak_sigma
    return float(np.nanmax(ev.sign * (inside - np.median(base))) / noise / factor)


def _against_every_frame(ev: Event, flux: np.ndarray) -> float:
    """An event's significance where too few frames lie outside it for a baseline (a stack of
    a few frames), from its light curve ``flux`` (shape (n,)): its detection S/N, unless no
    frame comes back to the reference — every frame above :data:`STATIC_SIGMA` times the
    curve's measurement error, of the event's sign — when it is a residual that every frame
    holds alike (a reference that misses the sky's structure; a few tens of them at 10–50σ
    in eight frames of a real ISAAC field): then its peak over that floor, in units of the
    larger of that error and the curve's robust scatter."""
    from .difference import robust_std

    ok = np.isfinite(flux)
    err = ev.lightcurve.get("diff_flux_err")
    if ok.sum() < 3 or err is None:
        return ev.peak_sigma
    signed = ev.sign * flux[ok]
    error = float(np.nanmedian(err[ok]))
    floor = float(signed.min())
    if not (error > 0 and floor > STATIC_SIGMA * error):
        return ev.peak_sigma
    noise = max(error, robust_std(signed))
    return float(min(ev.peak_sigma, (signed.max() - floor) / noise))


def _binned_curve(flux: np.ndarray, n: int, span: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """An event found in bins of ``n`` frames is measured as it was found: (the running mean of
    its light curve ``flux`` (shape (m,)) over ``n`` frames; its finite values outside ``span``
    and the frames about it that a bin reaches; their robust scatter, e⁻/s). The running
    mean's own scatter, not the frames' scaled by √n: a light curve's noise is not white (a
    star's residual wanders)."""
    from .difference import robust_std

    smooth = running_mean(flux, n)
    f = np.arange(len(smooth))
    pad = SPAN_MARGIN_FRAMES + n // 2
    base = smooth[((f < span[0] - pad) | (f > span[1] + pad)) & np.isfinite(smooth)]
    return smooth, base, robust_std(base) if len(base) else np.nan


def running_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Centred running mean of ``values`` (shape (m,)) over ``n`` frames, its missing (NaN)
    values left out; NaN where fewer than half of a window's values are finite."""
    from scipy.ndimage import uniform_filter1d

    ok = np.isfinite(values)
    total = uniform_filter1d(np.where(ok, values, 0.0).astype(float), n, mode="constant")
    share = uniform_filter1d(ok.astype(float), n, mode="constant")
    with np.errstate(all="ignore"):
        return np.where(share >= 0.5, total / share, np.nan)


def _baseline(diff_flux: np.ndarray, span: tuple[int, int], shifts: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """(difference flux, decorrelated against the pointing ``shifts`` when given (shape (n,));
    its finite values outside ``span`` (first and last frame, widened by
    :data:`SPAN_MARGIN_FRAMES`); their robust scatter, e⁻/s) of a light curve's
    ``diff_flux`` (shape (n,))."""
    from .difference import robust_std

    f = np.arange(len(diff_flux))
    outside = (f < span[0] - SPAN_MARGIN_FRAMES) | (f > span[1] + SPAN_MARGIN_FRAMES)
    flux = diff_flux if shifts is None else _decorrelated(diff_flux, shifts, outside)
    base = flux[outside & np.isfinite(flux)]
    return flux, base, robust_std(base) if len(base) else np.nan


def _measurable(base: np.ndarray, noise: float) -> bool:
    """Whether a light curve's baseline (:func:`_baseline`: its values outside the event and
    their robust scatter) is long enough (5 frames) and its scatter usable to measure against."""
    return len(base) >= 5 and bool(np.isfinite(noise)) and noise > 0


def _grown_span(z: np.ndarray, span: tuple[int, int]) -> tuple[int, int]:
    """``span`` (first and last frame) grown either way while the running median over
    :data:`GROW_MEDIAN_FRAMES` frames of ``z`` (an event's light curve in units of its
    baseline's scatter, signed as the event; shape (n,)) stays above :data:`FADE_SIGMA`."""
    from scipy.ndimage import median_filter

    up = median_filter(np.nan_to_num(z, nan=0.0), GROW_MEDIAN_FRAMES, mode="nearest") \
        > FADE_SIGMA
    a, b = span
    while a > 0 and up[a - 1]:
        a -= 1
    while b < len(z) - 1 and up[b + 1]:
        b += 1
    return a, b


def episodes(ev: Event, shifts: np.ndarray | None = None) -> tuple[int, int]:
    """(brightenings, dimmings) in an event's light curve: runs of frames whose running
    median over 3 frames is above, or below, its baseline (its difference flux outside the
    event, decorrelated against the pointing ``shifts`` as for :func:`lightcurve_sigma`) by
    :data:`EPISODE_SIGMA` of its scatter and — brightenings — by :data:`EPISODE_SHARE` of the
    strongest brightening, or — dips — by its 1/:data:`OUTSHINE`; runs fewer than
    :data:`EPISODE_GAP_FRAMES` apart counted as one; frames with severe quality bits left out.
    (0, 0) without a usable light curve."""
    from scipy.ndimage import median_filter

    from .tess import good_quality

    lc = ev.lightcurve
    if not lc or "diff_flux" not in lc:
        return 0, 0
    flux, base, noise = _baseline(lc["diff_flux"], (ev.frame_start, ev.frame_end), shifts)
    if not _measurable(base, noise):
        return 0, 0
    usable = np.isfinite(flux)
    if "quality" in lc:
        usable &= good_quality(lc["quality"])
    z = (flux - np.median(base)) / noise
    z = median_filter(z[usable], 3, mode="nearest")
    if len(z) == 0:
        return 0, 0
    peak = float(z.max())
    return (_runs(z > max(EPISODE_SIGMA, EPISODE_SHARE * peak)),
            _runs(z < -max(EPISODE_SIGMA, peak / OUTSHINE)))


def _runs(on: np.ndarray) -> int:
    """How many runs of True ``on`` (bool, shape (n,)) holds, runs fewer than
    :data:`EPISODE_GAP_FRAMES` apart counted as one."""
    where = np.flatnonzero(on)
    if len(where) == 0:
        return 0
    return 1 + int(np.count_nonzero(np.diff(where) > EPISODE_GAP_FRAMES))


def kind_from_episodes(ev: Event, shifts: np.ndarray | None = None) -> str:
    """An event's kind by the module's definitions, read from its light curve
    (:func:`episodes`) where its detections called a place that brightened a ``variable``: one
    whose light curve brightened in one episode and never dipped is a ``transient``. The
    other kinds stay: a light curve of weeks holds excursions of its own (on the real TESScut
    cube, dips deeper than two thirds of a modest flare), which must not make a variable of a
    flare its detections saw as one episode."""
    if ev.kind != "variable" or ev.sign < 0:
        return ev.kind
    return "transient" if episodes(ev, shifts) == (1, 0) else ev.kind


def _decorrelated(d: np.ndarray, shifts: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Difference flux ``d`` (shape (n,)) less its fit, by least squares with 3σ clipping over
    the frames where ``fit`` (bool, shape (n,)) is set, as a quadratic in the frames' pointing
    (``shifts``, shape (n, 2), px): what an undersampled star leaves as the pointing moves
    (pixel-level decorrelation). The fit's constant stays. ``d`` itself when fewer than
    :data:`MIN_DECORRELATION_FRAMES` frames can be fitted."""
    from .difference import robust_std

    ok = np.isfinite(d)
    use = fit & ok
    if use.sum() < MIN_DECORRELATION_FRAMES:
        return d
    dy, dx = (shifts - np.median(shifts, axis=0)).T
    X = np.column_stack([np.ones(len(d)), dx, dy, dx * dx, dy * dy, dx * dy])
    for _ in range(3):
        coef = np.linalg.lstsq(X[use], d[use], rcond=None)[0]
        r = d - X @ coef
        use = fit & ok & (np.abs(r) <= 3 * max(robust_std(r[fit & ok]), 1e-12))
    return d - (X[:, 1:] @ coef[1:])


def purity(ev: Event) -> float:
    """sign × Σ d / Σ |d| of the event's difference cutout at its peak within
    :data:`PURITY_RADIUS` px of it: 1 all of the event's sign, 0 a balanced dipole (a star's
    residual where the frame is misaligned or its PSF changed), −1 the other sign."""
    cut = ev.cutout
    h = cut.shape[0] // 2
    return float(_purities(cut, np.array([h]), np.array([h]), np.array([ev.x - round(ev.x)]),
                           np.array([ev.y - round(ev.y)]), np.array([ev.sign]))[0])


def _purities(img: np.ndarray, cx: np.ndarray, cy: np.ndarray, fx: np.ndarray, fy: np.ndarray,
              sign: np.ndarray) -> np.ndarray:
    """:func:`purity` of ``img`` (shape (ny, nx); zero beyond its edges) about each point
    (cx + fx, cy + fy): integer pixels ``cx``, ``cy`` and offsets ``fx``, ``fy`` from them,
    signs ``sign``, shapes (k,); shape (k,), 1 where the disc holds nothing."""
    r = int(np.ceil(PURITY_RADIUS + 0.5))
    oy, ox = (a.ravel() for a in np.mgrid[-r:r + 1, -r:r + 1])
    near = np.hypot(ox[None] - fx[:, None], oy[None] - fy[:, None]) <= PURITY_RADIUS
    yy, xx = cy[:, None] + oy[None], cx[:, None] + ox[None]
    ny, nx = img.shape
    near &= (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    d = np.where(near, img[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)], 0.0).astype(float)
    total = np.abs(d).sum(axis=1)
    return np.where(total > 0, sign * d.sum(axis=1) / np.where(total > 0, total, 1.0), 1.0)


def detection_purity(diff: np.ndarray, det: dict[str, np.ndarray],
                     offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """:func:`purity` of each detection of one frame (columns of
    :func:`~reaper_core.difference.detect`) on that frame's difference ``diff``, as an event
    peaking there measures it on its cutout (centred on the rounded position, the offset
    ``offset`` of the stack's pixels added to the position first); shape (k,)."""
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    if len(x) == 0:
        return np.zeros(0)
    fx = (x + offset[0]) - np.round(x + offset[0])
    fy = (y + offset[1]) - np.round(y + offset[1])
    return _purities(diff, np.round(x).astype(int), np.round(y).astype(int), fx, fy,
                     np.asarray(det["sign"], float))


def noise_probes(places: list[tuple[float, float, float]], n_frames: int = 0
                 ) -> list[tuple[float, float]]:
    """Places (x, y) whose difference flux :func:`frame_factors` reads, from candidates that
    stand still (``places``: (time of peak, y, x) each, see :func:`make_events`): one per place
    (a cell two apertures wide), in the order of time and position, at most
    :data:`MAX_NOISE_PROBES` of them spread evenly over it. Candidates at one place measure the
    same pixels (in a TESScut cube of a few pixels, all of them), and an event there would set
    its own frame's factor. With ``n_frames``, the stack's length, at most
    :data:`NOISE_PROBE_VALUES` / ``n_frames`` of them (and at least :data:`MIN_NOISE_PROBES`).
    """
    most = MAX_NOISE_PROBES
    if n_frames > 0:
        most = min(most, max(MIN_NOISE_PROBES, NOISE_PROBE_VALUES // n_frames))
    out, seen = [], set()
    for _, y, x in sorted(places):
        cell = (int(x // (2 * APERTURE_PX)), int(y // (2 * APERTURE_PX)))
        if cell not in seen:
            seen.add(cell)
            out.append((x, y))
    if len(out) > most:
        out = [out[i] for i in np.linspace(0, len(out) - 1, most).round().astype(int)]
    return out


def frame_factors(flux: np.ndarray) -> np.ndarray:
    """How much noisier each frame is than usual, from the difference flux of the
    :func:`noise_probes` (shape (k, n): k places, n frames; NaN where a frame holds no data);
    shape (n,), ≥ 1.

    Most candidates are residuals of sharp stars; in a frame that left larger residuals
    everywhere (a pointing excursion, a focus change) their normalised difference fluxes
    scatter more, and every event peaking in it must be that much stronger.
    """
    n = flux.shape[1]
    flux = flux[np.isfinite(flux).sum(axis=1) >= 10]
    if len(flux) < 10:
        return np.ones(n)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # |flux − its median| in units of its robust σ, place by place (float32: the pass's
        # largest array, places × frames).
        z = np.array(flux, np.float32)
        z -= np.nanmedian(z, axis=1)[:, None]
        np.abs(z, out=z)
        noise = 1.4826 * np.nanmedian(z, axis=1)
        z = z[noise > 0]
        if len(z) < 10:
            return np.ones(n)
        z /= noise[noise > 0, None]
        typical = 1.4826 * np.nanmedian(z, axis=0)
    return np.maximum(np.nan_to_num(typical, nan=1.0), 1.0)


def at_star(ev: Event, ref: Reference, offset: tuple[int, int] = (0, 0)) -> bool:
    """Whether a standing event lies within :data:`STAR_REACH_PX` of a star's pixels
    (:attr:`~reaper_core.difference.Reference.stars`), where a frame's larger residuals
    (:func:`frame_factors`, measured at the candidates, mostly stars' residuals) raise its
    noise; an event on the sky (a satellite's streak, a glint, an asteroid) is measured
    against its own light curve's scatter alone. Movers: False. ``offset``: the stack's
    pixels' offset (the events' positions hold it)."""
    if ev.kind == "mover":
        return False
    idx = _aperture(ref.stars.shape, ev.x - offset[0], ev.y - offset[1], STAR_REACH_PX)
    return bool(ref.stars.ravel()[idx].any()) if len(idx) else True


def merge_recurrent(events: list[Event], radius: float = 1.5) -> list[Event]:
    """Events at one place (within ``radius`` px, movers apart) become one: a ``variable``
    (dims, or brightens more than once), unless one brightening outshines every dip by 1.5×
    (a long transient that the reference partly holds, leaving dips around it): then that
    ``transient``. The merged event keeps its strongest member's light curve and cutouts and
    spans them all."""
    still = [e for e in events if e.kind != "mover"]
    parent = list(range(len(still)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(still) > 1:
        from scipy.spatial import cKDTree

        xy = np.array([(e.x, e.y) for e in still])
        # Every pair within the radius (a tree, not all pairs: thousands of events in a
        # long stack of large frames), joined in the order the pairwise loop joined them.
        for a, b in sorted(cKDTree(xy).query_pairs(radius)):
            parent[root(b)] = root(a)
    groups: dict[int, list[Event]] = {}
    for i, e in enumerate(still):
        groups.setdefault(root(i), []).append(e)
    out = [e for e in events if e.kind == "mover"]
    for members in groups.values():
        # Found in single frames and in bins: the single frames' view stands for it.
        best = max(members, key=lambda e: (e.binned == 1, e.peak_sigma, -e.frame_peak))
        if len(members) > 1:
            ups = [e.peak_sigma for e in members if e.sign > 0]
            downs = [e.peak_sigma for e in members if e.sign < 0]
            long_transient = ups and max(ups) > OUTSHINE * max(downs, default=0.0)
            if long_transient and not downs and _separate_spans(
                    [e for e in members if e.sign > 0]) > 1:
                long_transient = False  # brightens more than once: variable
            best.kind = "transient" if long_transient else "variable"
            best.frame_start = min(e.frame_start for e in members)
            best.frame_end = max(e.frame_end for e in members)
            best.t_start = min(e.t_start for e in members)
            best.t_end = max(e.t_end for e in members)
            best.n_detections = sum(e.n_detections for e in members)
            best.frames = np.unique(np.concatenate([e.frames for e in members]))
        out.append(best)
    out.sort(key=lambda e: (e.t_peak, e.y, e.x))
    return out


def _on_track(ev: Event, mover: Event, reach: float = 3.0) -> bool:
    """Whether ``ev`` lies within ``reach`` px of ``mover``'s track (from its first place to
    its last, at any time: a bin's view of an asteroid crossing it, or the faint dimming its
    passage leaves in the reference's patterns before and after)."""
    a = np.array([mover.x_start, mover.y_start], float)
    b = np.array([mover.x_end, mover.y_end], float)
    p = np.array([ev.x, ev.y])
    t = float(np.clip(np.dot(p - a, b - a) / max(float(np.dot(b - a, b - a)), 1e-12), 0, 1))
    return bool(np.hypot(*(a + t * (b - a) - p)) <= reach)


def _separate_spans(events: list[Event]) -> int:
    """How many separate stretches of frames the spans of ``events`` cover (overlapping
    spans, as an event found in single frames and in bins at once, are one)."""
    count, end = 0, -1
    for e in sorted(events, key=lambda e: e.frame_start):
        if e.frame_start > end:
            count += 1
        end = max(end, e.frame_end)
    return count


class Coherence:
    """Per-pixel sums over a stack's matched-filter S/N maps, frame by frame, that tell where
    the S/N wanders smoothly (a variable star) rather than jumping about (noise): its variance
    less half its mean squared change between consecutive searched frames; and where and when
    each pixel's S/N was furthest from 0. Memory: six arrays of a frame, 4 bytes a pixel."""

    def __init__(self) -> None:
        self.n = self.pairs = 0
        self.s1 = self.s2 = self.d2 = self.prev = self.peak = self.peak_frame = None

    def add(self, frame: int, snr: np.ndarray | None) -> None:
        """Add one frame's S/N map (shape (ny, nx)); None (not searched) breaks the
        succession."""
        if snr is None:
            self.prev = None
            return
        from .patch_kernels import add_to_coherence

        snr = np.ascontiguousarray(snr, np.float32)
        if self.s1 is None:
            self.s1, self.s2, self.d2, self.peak = (np.zeros(snr.shape, np.float32)
                                                    for _ in range(4))
            self.peak_frame = np.zeros(snr.shape, np.int32)
        add_to_coherence(snr, self.prev, self.s1, self.s2, self.d2, self.peak, self.peak_frame,
                         frame)
        self.pairs += self.prev is not None
        self.n += 1
        self.prev = snr

    def smooth_variance(self) -> np.ndarray | None:
        """Variance less half the mean squared change between consecutive frames, shape
        (ny, nx); None before 20 frames (too few to tell)."""
        if self.n < MIN_DECORRELATION_FRAMES or self.pairs == 0:
            return None
        mean = self.s1.astype(np.float64) / self.n
        return self.s2 / self.n - mean * mean - self.d2.astype(np.float64) / (2 * self.pairs)

    def candidates(self, times: np.ndarray, offset: tuple[int, int] = (0, 0),
                   edge: int = 0) -> list[Event]:
        """Candidate variable stars: the local maxima (5 × 5) of :meth:`smooth_variance` that
        stand :data:`COHERENT_VARIANCE` above the median of their ring
        (:data:`POINT_RING_PX`), which holds at most :data:`POINT_RING_SHARE` of their peak,
        at most :data:`MAX_VARIABLES` (the highest above their ring first; ties by place), as
        ``variable`` events over the whole stack peaking where their S/N was furthest from
        0."""
        from .difference import psf_kernel
        from .patch_kernels import window_maxima

        c = self.smooth_variance()
        if c is None:
            return []
        c = np.nan_to_num(c, nan=0.0).astype(np.float32)
        # Not within ``edge`` px of the edges, nor :data:`EDGE_PX` beyond: where the search
        # leaves out an edge as wide as each frame's shift, a place is searched in some frames
        # and not in others, its S/N stepping with the pointing as a star's would wander.
        e = max(int(edge), psf_kernel().shape[0] // 2) + EDGE_PX
        inside = np.zeros(c.shape, bool)
        inside[e:-e, e:-e] = True
        rows, cols = window_maxima(c, inside & (c >= COHERENT_VARIANCE), 2)
        # Point-like: a star's wander is as compact as the PSF, what a scattered-light glow
        # leaves under a difference's sky wanders alike over tens of pixels.
        ring = _ring_medians(c, rows, cols)
        peak = c[rows, cols]
        point = (peak - ring >= COHERENT_VARIANCE) & (ring <= POINT_RING_SHARE * peak)
        rows, cols, excess = rows[point], cols[point], (peak - ring)[point]
        order = np.lexsort((cols, rows, -excess))[:MAX_VARIABLES]
        x0, y0 = offset
        last = len(times) - 1
        out = []
        for r, q in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
            f = int(self.peak_frame[r, q])
            out.append(Event(
                kind="variable", x=float(q + x0), y=float(r + y0), frame_start=0,
                frame_peak=f, frame_end=last, t_start=float(times[0]), t_peak=float(times[f]),
                t_end=float(times[last]), peak_sigma=float(abs(self.peak[r, q])),
                sign=1 if self.peak[r, q] >= 0 else -1, n_detections=1, flux=0.0, area=1.0,
                elongation=1.0, frames=np.array([f])))
        return out


def _ring_medians(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Median of ``img`` (shape (ny, nx)) over the ring :data:`POINT_RING_PX` (inner, outer
    radius, px) about each (row, col), shape (m,); the part inside the image."""
    a, b = POINT_RING_PX
    dy, dx = np.mgrid[-b:b + 1, -b:b + 1]
    on = (np.hypot(dy, dx) >= a) & (np.hypot(dy, dx) <= b)
    dy, dx = dy[on], dx[on]
    out = np.empty(len(rows))
    for k, (r, q) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        yy, xx = r + dy, q + dx
        inside = (yy >= 0) & (yy < img.shape[0]) & (xx >= 0) & (xx < img.shape[1])
        out[k] = float(np.median(img[yy[inside], xx[inside]]))
    return out


def pointing_segments(times: np.ndarray, shifts: np.ndarray,
                      quality: np.ndarray | None = None) -> np.ndarray:
    """Number of each frame's pointing segment, shape (n,), int, from 0: a new one begins
    at a frame flagged as a momentum dump (``quality``, shape (n,), bit
    :data:`~reaper_core.tess.MOMENTUM_DUMP`), where the pointing jumps between consecutive
    frames (by more than :data:`SEGMENT_JUMP_PX` and 6 robust σ of the frame-to-frame
    steps; ``shifts`` shape (n, 2), px, all 0 in frames too small to measure it) or where
    the ``times`` (shape (n,), days) leave a gap of more than :data:`SEGMENT_GAP_CADENCES`
    cadences (a downlink)."""
    from .difference import robust_std
    from .tess import MOMENTUM_DUMP, cadence_days

    n = len(shifts)
    new = np.zeros(n, bool)
    if n < 2:
        return new.astype(np.int64)
    step = np.hypot(*np.diff(np.asarray(shifts, float), axis=0).T)
    new[1:] = step > max(SEGMENT_JUMP_PX, 6 * robust_std(step))
    if quality is not None:
        new |= (np.asarray(quality).astype(np.int64) & MOMENTUM_DUMP) > 0
    t = np.asarray(times, float)
    if np.isfinite(t).sum() > 2:
        dt = np.nan_to_num(np.diff(t), nan=0.0)
        new[1:] |= dt > SEGMENT_GAP_CADENCES * cadence_days(t[np.isfinite(t)])
    return np.cumsum(new)


def _less_segment_trends(flux: np.ndarray, times: np.ndarray, segment: np.ndarray,
                         degree: int = 0) -> np.ndarray:
    """``flux`` (shape (n,), NaN where not measured) less a polynomial of ``degree`` (0: its
    mean, 1: a straight line) in ``times`` (shape (n,), days) fitted to each of its pointing
    ``segment`` s (shape (n,)), plus the median of all; NaN in a segment of fewer than 3
    measured frames (nothing to tell its level by)."""
    out = np.full(len(flux), np.nan)
    ok = np.isfinite(flux) & np.isfinite(times)
    if not ok.any():
        return out
    for k in np.unique(segment[ok]):
        m = ok & (segment == k)
        if m.sum() >= 3:
            A = np.vander(times[m] - times[m].mean(), degree + 1)
            out[m] = flux[m] - A @ np.linalg.lstsq(A, flux[m], rcond=None)[0]
    return out + np.median(flux[ok])


def wander(ev: Event, shifts: np.ndarray | None = None, mesh_sky: bool = True
           ) -> np.ndarray | None:
    """How a candidate variable star's light curve (:meth:`Coherence.candidates`) wanders,
    frame by frame, shape (n,): decorrelated against the pointing (``shifts``, shape (n, 2)),
    less the level of each pointing segment (:func:`pointing_segments`; with ``mesh_sky``
    False, a frame too small for a difference's mesh sky, a straight line fitted to it),
    averaged over :data:`VARIABLE_FRAMES` frames, its distance from its median in units of
    that average's noise (the frame-to-frame changes' robust σ / √2, over
    √ :data:`VARIABLE_FRAMES`), NaN where not measured. None unless at least half its
    variance is smooth — the variance at least the mean squared change between consecutive
    frames (white noise: half; a flash in one frame, a star's residual jumping with the
    pointing: about half or less) — or with fewer than 20 measured frames.

    The segments' levels go because an undersampled star's residual steps at each momentum
    dump by more than a quadratic in the pointing takes out: over a sector's 1,282 frames,
    with the pointing drifting by 1.5 px, that wandered as a variable star's light would
    (simulated stacks without an injected variable, seeds 3–6: 2 false variables at 64², 15
    at 96²; none once each segment's level goes, every ±12σ sine of period 1 day still
    found). Under a frame's median or plane sky (20²–63²) a scattered-light glow's ramp is
    left as well: each segment's level alone left 2 false variables there (20² and 48²), its
    straight line none (a sine still found in 3 of 4 stacks at 32², 4 of 4 at 48²). Where
    the sky is a mesh the line is not taken out: it would take a slow transient's rise too
    (the 8σ supernova over 60 frames of ``benchmarks/timeline.py``'s memory row, found by
    this search alone, was lost). Variability slower than a segment (1–3 days between
    dumps) is left to the events' own search."""
    from .difference import robust_std

    d = np.asarray(ev.lightcurve.get("diff_flux", np.zeros(0)), float)
    ok = np.isfinite(d)
    if ok.sum() < MIN_DECORRELATION_FRAMES:
        return None
    if shifts is None:
        flux = d
    else:
        lc = ev.lightcurve
        t = np.asarray(lc["time"], float)
        flux = _less_segment_trends(_decorrelated(d, shifts, ok), t,
                                    pointing_segments(t, shifts, lc.get("quality")),
                                    0 if mesh_sky else 1)
    ok = np.isfinite(flux)
    if ok.sum() < MIN_DECORRELATION_FRAMES:
        return None
    steps = np.diff(flux[ok])
    white = robust_std(steps) / np.sqrt(2.0)
    if not np.isfinite(white) or white <= 0 or np.var(flux[ok]) < np.mean(steps**2):
        return None
    z = (running_mean(flux, VARIABLE_FRAMES) - np.median(flux[ok])) / (
        white / np.sqrt(VARIABLE_FRAMES))
    return z if np.isfinite(z).any() else None


def settle_variable(ev: Event, times: np.ndarray, shifts: np.ndarray | None = None,
                    mesh_sky: bool = True) -> float:
    """A candidate variable star's significance, its largest :func:`wander` (0 when it does
    not wander smoothly); the frames it is :data:`EPISODE_SIGMA` away from its median on the
    side of its peak (where its S/N was furthest from 0) become its span (a slow
    transient that the frames missed then reads as one, by :func:`kind_from_episodes`; a
    star varying throughout spans the stack). ``mesh_sky``: as for :func:`wander`."""
    z = wander(ev, shifts, mesh_sky)
    if z is None:
        return 0.0
    z = np.nan_to_num(z)
    away = np.flatnonzero(ev.sign * z >= EPISODE_SIGMA)
    if len(away):
        ev.frame_start, ev.frame_end = int(away[0]), int(away[-1])
        ev.t_start, ev.t_end = float(times[away[0]]), float(times[away[-1]])
    return float(np.abs(z).max())


@dataclass
class StackSearch:
    """What :func:`search_stack` found: the events, the reference, every frame's shift."""

    events: list[Event]
    reference: Reference
    shifts: np.ndarray  # (n, 2): dy, dx
    n_detections: int


def search_stack(stack, *, patch_size: int = 32, progress: ProgressFn = noop,
                 n_sample: int = 25) -> StackSearch:
    """Difference every frame of ``stack`` against its reference, detect (in each frame and in
    bins of frames, :class:`BinnedSearch`), link, classify, then measure each event's light
    curve and cutouts (a second pass over the frames).

    Frames with severe quality bits are differenced for light curves but not searched.
    """
    from .difference import (
        DETECTION_FIELDS,
        build_reference,
        detect,
        too_small_for_mesh,
        unsearched_edge,
    )

    ref = build_reference(stack, n_sample=n_sample, progress=progress)
    n = len(stack)
    good = stack.good
    shifts = np.zeros((n, 2))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (*DETECTION_FIELDS, "purity",
                                                         "next_sigma")}
    empty = np.zeros(n, bool)
    # A frame's detections wait for the next frame, whose S/N at their places they keep.
    pending: dict[str, np.ndarray] | None = None

    def keep(found: dict[str, np.ndarray], following: np.ndarray | None) -> None:
        found["next_sigma"] = _next_sigma(found, following)
        for k in cols:
            cols[k].append(found[k])

    # Frames differenced on every core, taken in order (their shifts measured, a cadence held
    # as NaN none: nothing to search); detection (photutils, which needs a warnings filter) in
    # this thread.
    binners = [BinnedSearch(b, ref, stack.offset) for b in BIN_FRAMES if b < n]
    coherence = Coherence()
    for i, d in enumerate(_differences(stack, ref, range(n), matched=True)):
        empty[i] = d is None
        found = None
        coherence.add(i, d.snr if d is not None and good[i] else None)
        if d is not None and good[i]:
            found = detect(d, frame=i)
            found["purity"] = detection_purity(d.diff, found, stack.offset)
            for b in binners:
                b.add(i, d.snr)
        for b in binners:
            b.close(i, last=i == n - 1)
        if pending is not None:
            keep(pending, None if d is None else d.snr)
        pending = found
        if d is not None:
            shifts[i] = d.shift
        progress("difference", (i + 1) / n, f"frame {i + 1}/{n}")
    if pending is not None:
        keep(pending, None)
    det = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    # Most candidates are a star's residual, a dipole at their peak: they are not measured
    # (movers are judged on their cutout, along their track), but a spread of them tells how
    # noisy each frame is.
    places: list[tuple[float, float, float]] = []
    events = make_events(det, stack.times, stack.offset,
                         movers=min(ref.image.shape) >= MIN_MOVER_FIELD,
                         min_purity=MIN_PURITY, places=places)
    movers = [e for e in events if e.kind == "mover"]
    events = events + [e for b in binners
                       for e in binned_events(b.detections(), b.length, stack.times,
                                              stack.offset, min_purity=MIN_PURITY)
                       if not any(_on_track(e, m) for m in movers)]
    # Candidate variable stars, measured with the rest (in a frame of under about 20² px, a
    # TESScut cube of a few pixels, no place is far enough inside the edges).
    widest = (np.abs(shifts[~empty]).max(axis=0) if (~empty).any() else np.zeros(2))
    variables = coherence.candidates(stack.times, stack.offset,
                                     unsearched_edge(tuple(widest), ref.image.shape))
    mesh_sky = not too_small_for_mesh(ref.image)
    del coherence
    # By identity (held here, so that no other object takes an id while the batches free the
    # candidates that fail).
    wandering = {id(e): e for e in variables}
    events = events + variables
    probes = noise_probes(places, n)
    progress("link", 1.0, f"{len(events)} candidates of one sign at their peak, of "
                          f"{len(places) + sum(e.kind == 'mover' for e in events)}, from "
                          f"{len(det['x'])} detections")
    # Strips for every candidate while they fit the budget; else for the survivors only.
    cutout_bytes = 4 * patch_size**2
    strips_now = len(events) * (STRIP_FRAMES + 1) * cutout_bytes <= STRIP_BUDGET_BYTES
    # Candidates measured at once: as many as the light-curve budget holds (one pass over the
    # frames for each batch; no event: no second pass at all).
    held = 12 * n + cutout_bytes * ((STRIP_FRAMES + 1) if strips_now else 1)
    size = max(1, LIGHTCURVE_BUDGET_BYTES // held)
    batches = [events[a:a + size] for a in range(0, len(events), size)]
    del events
    kept: list[Event] = []
    regrown: list[Event] = []
    factor = np.ones(n)
    for b in range(len(batches)):
        batch, batches[b] = batches[b], []  # the batch's candidates are freed after it
        probe_flux = measure(stack, ref, batch, shifts, patch_size=patch_size,
                             progress=progress, skip=empty, probes=probes if b == 0 else None,
                             strips=strips_now)
        if b == 0:  # the frames' noise, from the probes measured with the first batch
            factor = frame_factors(probe_flux)
        del probe_flux
        for e in batch:
            if id(e) in wandering:  # a candidate variable star: smooth, of one sign at its peak
                e.lc_sigma = e.peak_sigma = settle_variable(e, stack.times, shifts, mesh_sky)
                if e.lc_sigma >= VARIABLE_SIGMA:
                    e.peak_purity = purity(e)  # on its cutout at its peak, as it was stored
                if e.lc_sigma >= VARIABLE_SIGMA and e.peak_purity >= MIN_PURITY:
                    e.lightcurve = {k: v.astype(float) if v.dtype == np.float32 else v
                                    for k, v in e.lightcurve.items()}
                    kept.append(e)
                continue
            e.lc_sigma = lightcurve_sigma(e, factor if at_star(e, ref, stack.offset) else None,
                                          shifts)
            # (An event found in bins only is too faint for its cutout at one frame to
            # tell: its purity is its bin's, already required.)
            if e.lc_sigma >= _lc_threshold(e) and (e.binned > 1 or purity(e) >= MIN_PURITY):
                if e.binned > 1 and _span_from_lightcurve(e, stack.times, shifts) \
                        and strips_now:
                    regrown.append(e)  # its strip, cut for the bins it was found in, again
                # Its own light curve, float64 (the batch's shared rows are freed).
                e.lightcurve = {k: v.astype(float) if v.dtype == np.float32 else v
                                for k, v in e.lightcurve.items()}
                kept.append(e)
        del batch
    if not strips_now or regrown:
        cut_strips(stack, ref, kept if not strips_now else regrown, shifts,
                   patch_size=patch_size, progress=progress, skip=empty)
    # A variable star where an event was found already, or on a mover's track, is that event
    # (its own search's view of it stands).
    found = [e for e in kept if id(e) not in wandering]
    kept = found + [v for v in kept if id(v) in wandering and not any(
        _on_track(v, e) if e.kind == "mover" else np.hypot(e.x - v.x, e.y - v.y)
        <= STAR_REACH_PX for e in found)]
    events = merge_recurrent(kept)
    for e in events:
        e.kind = kind_from_episodes(e, shifts)
    return StackSearch(events=events, reference=ref, shifts=shifts, n_detections=len(det["x"]))


def _frame_threads(ref: Reference) -> int | None:
    """Threads for a pass over a stack's frames: one for small frames (a TESScut cube of a
    few pixels: the real cube 1.3 ms a cadence in one thread, 2.6 ms handed between two),
    every core (None) for the rest."""
    from .difference import SMALL_FRAME

    return 1 if ref.image.size < SMALL_FRAME else None


def _differences(stack, ref: Reference, frames: Iterable[int], shifts: np.ndarray | None = None,
                 skip: np.ndarray | None = None, matched: bool = False
                 ) -> Iterator[Difference | None]:
    """The differences of ``frames`` (indices into ``stack``), in order, made on every core:
    at their ``shifts`` (shape (n, 2); None: each measured), with the matched filter when
    ``matched``. None for a frame where ``skip`` (bool, shape (n,)) is set, or, without
    ``skip``, for a frame holding no data. The frames are read in this thread: astropy's
    reading runs under a warnings filter, which is not thread-safe."""
    from .difference import difference as make_difference

    def diff(item: tuple[int, np.ndarray | None]) -> Difference | None:
        i, frame = item
        if frame is None or (skip is None and not np.isfinite(frame).any()):
            return None
        return make_difference(frame, ref, shift=None if shifts is None else tuple(shifts[i]),
                               matched=matched, cosmic=stack.has_cosmic_rays)

    items = ((i, None if skip is not None and skip[i] else stack.frame(i)) for i in frames)
    return map_ordered(diff, items, _frame_threads(ref))


def _next_sigma(det: dict[str, np.ndarray], snr: np.ndarray | None) -> np.ndarray:
    """Matched-filter S/N of the next frame (``snr``, shape (ny, nx); None: no next frame)
    at each detection's place, signed as the detection, shape (k,); 0 without a next frame."""
    if snr is None or len(det["x"]) == 0:
        return np.zeros(len(det["x"]))
    ny, nx = snr.shape
    iy = np.clip(np.round(det["y"]).astype(int), 0, ny - 1)
    ix = np.clip(np.round(det["x"]).astype(int), 0, nx - 1)
    return det["sign"] * snr[iy, ix]


def _lc_threshold(ev: Event) -> float:
    """Light-curve significance an event needs: :data:`LC_FRACTION` of
    :data:`SINGLE_FRAME_SIGMA` for one detected once (a faint flash that fades included, and
    one found in a single bin), :data:`LC_FRACTION_SEVERAL` of :data:`MIN_SIGMA` for the
    rest."""
    if ev.n_detections == 1:
        return LC_FRACTION * SINGLE_FRAME_SIGMA
    return LC_FRACTION_SEVERAL * MIN_SIGMA


def _span_from_lightcurve(ev: Event, times: np.ndarray, shifts: np.ndarray | None) -> bool:
    """An event found in bins, its light curve measured: its span grown either way while its
    running mean over a bin stays :data:`FADE_SIGMA` up (:func:`_grown_span`; the bins it was
    found in hold only the part of it that rose above their threshold), its peak moved to
    where that running mean peaks within it, and its ``flux`` read there (e⁻/s, signed).
    Returns whether its span or peak moved."""
    span = (ev.frame_start, ev.frame_end)
    flux = _baseline(ev.lightcurve["diff_flux"], span, shifts)[0]
    smooth, base, noise = _binned_curve(flux, ev.binned, span)
    if not _measurable(base, noise):
        return False
    a, b = _grown_span(ev.sign * (smooth - np.median(base)) / noise, span)
    inside = smooth[a:b + 1]
    if not np.isfinite(inside).any():
        return False
    peak = a + int(np.nanargmax(ev.sign * inside))
    moved = (a, b, peak) != (ev.frame_start, ev.frame_end, ev.frame_peak)
    ev.frame_start, ev.frame_end, ev.frame_peak = a, b, peak
    ev.t_start, ev.t_end, ev.t_peak = float(times[a]), float(times[b]), float(times[peak])
    ev.frames = np.arange(a, b + 1)
    ev.flux = float(smooth[peak])
    return moved


def _aperture(shape: tuple[int, int], x: float, y: float, r: float) -> np.ndarray:
    """Flat indices of the pixels whose centres lie within ``r`` of (x, y); none where the
    disc lies off the frame (a mover's track extended past the edge)."""
    ny, nx = shape
    x0, x1 = max(int(np.floor(x - r)), 0), min(int(np.ceil(x + r)) + 1, nx)
    y0, y1 = max(int(np.floor(y - r)), 0), min(int(np.ceil(y + r)) + 1, ny)
    if x1 <= x0 or y1 <= y0:
        return np.zeros(0, np.int64)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    return (yy[inside] * nx + xx[inside]).astype(np.int64)


def _stamp(img: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    """``size``² pixels of ``img`` centred on (x, y), zero outside, float32."""
    out = np.zeros((size, size), np.float32)
    cx, cy = round(x), round(y)
    h = size // 2
    y0, x0 = cy - h, cx - h
    sy = slice(max(y0, 0), min(y0 + size, img.shape[0]))
    sx = slice(max(x0, 0), min(x0 + size, img.shape[1]))
    if sy.stop > sy.start and sx.stop > sx.start:
        out[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = img[sy, sx]
    return out


def strip_frames(ev: Event, n: int) -> np.ndarray:
    """The frames of an event's strip: up to :data:`STRIP_FRAMES` spread over its span and
    :data:`SPAN_MARGIN_FRAMES` either side (within the ``n`` frames of its stack), and its
    peak; shape (m,)."""
    lo = max(ev.frame_start - SPAN_MARGIN_FRAMES, 0)
    hi = min(ev.frame_end + SPAN_MARGIN_FRAMES, n - 1)
    pick = np.unique(np.linspace(lo, hi, min(STRIP_FRAMES, hi - lo + 1)).round().astype(int))
    return np.union1d(pick, [ev.frame_peak])


def _plan_strips(events: list[Event], frames: list[np.ndarray], patch_size: int
                 ) -> dict[int, list[tuple[int, int]]]:
    """Give each event an empty strip of its ``frames``; {frame: [(event, row), …]}."""
    want: dict[int, list[tuple[int, int]]] = {}
    for e_i, (ev, fr) in enumerate(zip(events, frames, strict=True)):
        ev.strip_frames = np.asarray(fr, int)
        ev.strip = np.zeros((len(fr), patch_size, patch_size), np.float32)
        for j, f in enumerate(ev.strip_frames.tolist()):
            want.setdefault(f, []).append((e_i, j))
    return want


def _cut(d, i: int, events: list[Event], rows: list[tuple[int, int]],
         offset: tuple[int, int], patch_size: int) -> None:
    """Cut frame ``i``'s difference ``d`` into the strips' ``rows`` ((event, row) pairs)."""
    x0, y0 = offset
    for e_i, j in rows:
        px, py = events[e_i].position_at(i)
        events[e_i].strip[j] = _stamp(d.diff, float(px) - x0, float(py) - y0, patch_size)


def cut_strips(stack, ref: Reference, events: list[Event], shifts: np.ndarray, *,
               patch_size: int = 32, progress: ProgressFn = noop,
               skip: np.ndarray | None = None) -> None:
    """Each event's strip of difference cutouts (:func:`strip_frames`), in one pass over only
    the frames they show; fills ``strip`` and ``strip_frames`` in place (blank where ``skip``,
    shape (n,) bool, is set: no data)."""
    want = _plan_strips(events, [strip_frames(ev, len(stack)) for ev in events], patch_size)
    shown = sorted(want)
    for k, d in enumerate(_differences(stack, ref, shown, shifts, skip)):
        if d is not None:
            _cut(d, shown[k], events, want[shown[k]], stack.offset, patch_size)
        progress("cutouts", (k + 1) / len(shown), f"frame {k + 1}/{len(shown)}")


def measure(stack, ref: Reference, events: list[Event], shifts: np.ndarray, *,
            patch_size: int = 32, progress: ProgressFn = noop,
            skip: np.ndarray | None = None,
            probes: list[tuple[float, float]] | None = None,
            strips: bool = True) -> np.ndarray:
    """Second pass: each event's light curve over the whole stack (difference flux and
    aperture flux in e⁻/s with errors, at its place — a mover's along its track, within its
    span) and its strip of difference cutouts (with ``strips=False``, its cutout at its peak
    only: :func:`cut_strips` cuts the rest); fills ``lightcurve``, ``strip``,
    ``strip_frames`` in place. Frames where ``skip`` (bool, shape (n,)) is set hold no data:
    NaN in the light curves, blank in the strips.

    Returns the difference flux at each of ``probes`` (places (x, y)), shape (len(probes),
    n), e⁻/s, float32. The apertures that stand still are summed for all events and probes at
    once per frame (a gather and a ``bincount``); memory is (events + probes) × frames × 4
    bytes (the events' light curves are float32 rows of shared arrays: copy a survivor's).
    """
    n = len(stack)
    x0, y0 = stack.offset
    shape = ref.image.shape
    want = _plan_strips(events, [strip_frames(ev, n) if strips else np.array([ev.frame_peak])
                                 for ev in events], patch_size)
    movers = [e_i for e_i, ev in enumerate(events) if ev.kind == "mover"]
    # Still apertures: the events that stand still, then the probes; rows of one table.
    still = [e_i for e_i, ev in enumerate(events) if ev.kind != "mover"]
    places = [(events[e_i].x, events[e_i].y) for e_i in still] + list(probes or [])
    aps = [_aperture(shape, x - x0, y - y0, APERTURE_PX) for x, y in places]
    pix = np.concatenate(aps) if aps else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(aps)), [len(a) for a in aps])
    empty_ap = np.array([len(a) == 0 for a in aps], bool)
    k, ns = len(aps), len(still)
    ref_sum = np.bincount(owner, ref.image.ravel()[pix].astype(float), minlength=k)
    own = owner < ns  # the events' pixels (their errors are measured; the probes' are not)
    # The events' rows and the probes' apart: the probes' are returned. The events' light
    # curves are rows of three arrays, float32 (a long stack's candidates are thousands, and
    # most fail their light-curve test): :func:`search_stack` copies the survivors' out.
    dflux = np.full((ns, n), np.nan, np.float32)
    dvar = np.full((ns, n), np.nan, np.float32)
    pflux = np.full((k - ns, n), np.nan, np.float32)
    mflux = {e_i: np.full(n, np.nan) for e_i in movers}
    merr = {e_i: np.full(n, np.nan) for e_i in movers}
    mref = {e_i: np.full(n, np.nan) for e_i in movers}
    ref_flat = ref.image.ravel()
    for i, d in enumerate(_differences(stack, ref, range(n), shifts, skip)):
        if d is None:
            progress("light curves", (i + 1) / n, f"frame {i + 1}/{n}")
            continue
        flat = d.diff.ravel()
        if k:
            sums = np.bincount(owner, flat[pix].astype(float), minlength=k)
            dflux[:, i], pflux[:, i] = sums[:ns], sums[ns:]
            sig = d.sigma.ravel()[pix[own]].astype(float)
            dvar[:, i] = np.bincount(owner[own], sig * sig, minlength=ns)
        for e_i in movers:
            ev = events[e_i]
            if not ev.frame_start - SPAN_MARGIN_FRAMES <= i <= ev.frame_end + SPAN_MARGIN_FRAMES:
                continue
            px, py = ev.position_at(i)
            ap = _aperture(shape, float(px) - x0, float(py) - y0, APERTURE_PX)
            if len(ap):
                var = d.sigma.ravel()[ap].astype(float) ** 2
                mflux[e_i][i] = float(flat[ap].sum())
                merr[e_i][i] = float(np.sqrt(var.sum()))
                mref[e_i][i] = float(ref_flat[ap].sum())
        _cut(d, i, events, want.get(i, []), stack.offset, patch_size)
        progress("light curves", (i + 1) / n, f"frame {i + 1}/{n}")
    # An aperture off the frame measures nothing.
    dflux[empty_ap[:ns]], pflux[empty_ap[ns:]] = np.nan, np.nan
    t, q = stack.times, stack.quality
    err = np.sqrt(dvar, out=dvar)
    err[empty_ap[:ns]] = np.nan
    flux = dflux + ref_sum[:ns, None].astype(np.float32)
    for row, e_i in enumerate(still):
        events[e_i].lightcurve = {"time": t, "diff_flux": dflux[row],
                                  "diff_flux_err": err[row], "flux": flux[row], "quality": q}
    for e_i in movers:
        ev = events[e_i]
        ev.lightcurve = {"time": t, "diff_flux": mflux[e_i], "diff_flux_err": merr[e_i],
                         "flux": mflux[e_i] + mref[e_i], "quality": q}
    return pflux


#: Light-curve features appended to an event's cutout embedding, in this order.
LIGHTCURVE_FEATURES = (
    "log peak S/N", "sign", "log duration (days)", "log detections", "log rate (px/day)",
    "elongation", "log area", "rise fraction", "fraction of frames above 3σ",
    "log peak / median |difference|",
)


def peak_cutout(strip: np.ndarray, strip_frames: np.ndarray, frame_peak: int) -> np.ndarray:
    """The cutout of an event's ``strip`` (m, s, s) nearest its peak: of the frames
    ``strip_frames`` (m,) the one closest to ``frame_peak``; shape (s, s)."""
    return strip[int(np.argmin(np.abs(np.asarray(strip_frames) - frame_peak)))]


def lightcurve_features(ev: Event, cadence_days: float) -> np.ndarray:
    """:data:`LIGHTCURVE_FEATURES` of one event, shape (10,)."""
    lc = ev.lightcurve
    snr = np.abs(lc.get("diff_flux", np.zeros(1))) / np.maximum(
        lc.get("diff_flux_err", np.ones(1)), 1e-9)
    snr = snr[np.isfinite(snr)]
    dur = max(ev.t_end - ev.t_start, 0.0) + cadence_days
    span = max(ev.frame_end - ev.frame_start, 1)
    med = float(np.median(snr)) if len(snr) else 1.0
    return np.array([
        np.log10(max(ev.peak_sigma, 1e-3)), float(ev.sign), np.log10(dur),
        np.log10(ev.n_detections), np.log10(1.0 + (ev.rate or 0.0)), min(ev.elongation, 20.0),
        np.log10(max(ev.area, 1.0)), (ev.frame_peak - ev.frame_start) / span,
        float((snr > 3).mean()) if len(snr) else 0.0,
        np.log10(max(ev.peak_sigma, 1e-3) / max(med, 1e-3)),
    ], float)
