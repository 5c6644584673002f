"""Time-domain benchmark: recall per event kind and significance, false events per 100 frames,
the ranking of injected against false events, and time per frame — on the real TESScut cube
first (events injected into its real cadences), then on simulated stacks.

    uv run python benchmarks/timeline.py [--frames 200] [--size 256] [--speed-size 2048]
                                         [--speed-frames 24] [--memory-frames 200,800]
                                         [--seeds 6] [--first-seed 0] [--no-real]
                                         [--baseline-seeds 1]
    uv run python benchmarks/timeline.py --residuals   # the differences' scatter at bright stars
    uv run python benchmarks/timeline.py --fields      # nights of a real field from the ground
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import original_design

from reaper_core.config import Settings
from reaper_core.events import search_stack
from reaper_core.simulate_stack import EXPECTED_KIND, add_sine_star, simulate_stack
from reaper_core.stacks import stack_from_cube
from reaper_core.timedomain import event_features, rank_events

CUBE = (Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tess"
        / "tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits")


def matches(truth, ev) -> bool:
    if ev.frame_end < truth.f_start - 2 or ev.frame_start > truth.f_end + 2:
        return False
    if truth.kind in ("asteroid", "satellite"):
        # Anywhere along the true track: a satellite's streak is centred on (x, y); an asteroid
        # is at (x, y) in its middle frame and at (x_end, y_end) in its last.
        back = 1.0 if truth.kind == "satellite" else \
            (truth.f_peak - truth.f_start) / max(truth.f_end - truth.f_peak, 1)
        t = np.linspace(-back, 1, 200)
        lx = truth.x + t * (truth.x_end - truth.x)
        ly = truth.y + t * (truth.y_end - truth.y)
        return np.hypot(lx - ev.x, ly - ev.y).min() < 4
    return np.hypot(ev.x - truth.x, ev.y - truth.y) < 3


def _psf(shape: tuple[int, int], x: float, y: float, sigma: float = 0.85) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return g / (2 * np.pi * sigma**2)


def real_cube(per_kind: int = 12, seed: int = 0) -> None:
    """The real TESScut cube (1,282 cadences of 5×5 px): events found untouched, then flares,
    eclipses and glints injected into its real cadences at S/N 5–100 (S/N of the PSF-matched
    filter against the cube's own frame-to-frame pixel noise)."""
    if not CUBE.exists():
        print(f"real cube not found at {CUBE}; skipped")
        return
    stack = stack_from_cube(CUBE)
    t0 = time.perf_counter()
    untouched = search_stack(stack).events
    dt = time.perf_counter() - t0
    print(f"real TESScut cube {CUBE.name}: {len(stack)} cadences, "
          f"{int((~stack.good).sum())} with severe quality bits; untouched: "
          f"{len(untouched)} events ({', '.join(e.kind for e in untouched) or 'none'}) in "
          f"{dt:.1f} s ({1000 * dt / len(stack):.1f} ms per cadence)")
    original = stack.cube.astype(np.float64)
    rows = np.array([f.index for f in stack.frames])
    good = np.flatnonzero(stack.good)
    sigma_px = stack.pixel_noise()
    ny, nx = original.shape[1:]
    star = np.unravel_index(np.argmax(np.nanmedian(original, 0)), (ny, nx))
    expected = {"flare": {"transient", "single_frame"}, "eclipse": {"variable"},
                "glint": {"single_frame"}}
    print(f"injected into it, one kind at a time ({per_kind} each, S/N 5–100; flares and "
          "eclipses on its star, each flare in a cube of its own, glints anywhere):")
    print(f"{'kind':8s} {'5–10σ':>7s} {'10–30σ':>7s} {'>30σ':>7s} {'kind right':>11s} "
          f"{'not injected':>13s}")
    for kind in expected:
        rng = np.random.default_rng(seed)
        slots = rng.permutation(np.arange(20, len(good) - 20, (len(good) - 40) // per_kind))
        truth, added = [], []
        for slot in slots[:per_kind]:
            snr = float(np.exp(rng.uniform(np.log(5), np.log(100))))
            flux = snr * sigma_px * np.sqrt(4 * np.pi) * 0.85
            f0 = int(good[slot])
            signal = np.zeros_like(original)
            if kind == "glint":
                x, y = rng.uniform(0.5, nx - 1.5), rng.uniform(0.5, ny - 1.5)
                signal[rows[f0]] += flux * _psf((ny, nx), x, y)
                truth.append((x, y, f0, f0, snr))
                added.append(signal)
                continue
            x, y = float(star[1]), float(star[0])
            n = int(rng.integers(2, 6))
            for k in range(min(n, len(stack) - f0)):
                amp = np.exp(-k / 1.5) if kind == "flare" else -1.0
                signal[rows[f0 + k]] += amp * flux * _psf((ny, nx), x, y)
            truth.append((x, y, f0, f0 + n - 1, snr))
            added.append(signal)
        # Flares each in a cube of their own: twelve flares of one star are a flaring star,
        # a variable, in one cube; one flare is a transient.
        groups = ([[i] for i in range(len(truth))] if kind == "flare"
                  else [list(range(len(truth)))])
        not_injected = 0
        bins = {b: [0, 0] for b in range(3)}
        right = 0
        for group in groups:
            stack.cube = (original + sum(added[i] for i in group)).astype(np.float32)
            events = search_stack(stack).events
            hits: set[int] = set()
            for x, y, f0, f1, snr in (truth[i] for i in group):
                hit = [j for j, e in enumerate(events) if np.hypot(e.x - x, e.y - y) < 1.5
                       and e.frame_start <= f1 + 2 and e.frame_end >= f0 - 2]
                hits.update(hit)
                b = 0 if snr < 10 else 1 if snr < 30 else 2
                bins[b][1] += 1
                if hit:
                    bins[b][0] += 1
                    best = max(hit, key=lambda j: events[j].peak_sigma)
                    right += events[best].kind in expected[kind]
            not_injected += len(events) - len(hits)
        cells = [f"{a}/{n}" if n else "—" for a, n in bins.values()]
        found = sum(a for a, _ in bins.values())
        print(f"{kind:8s} {cells[0]:>7s} {cells[1]:>7s} {cells[2]:>7s} {right:>7d}/{found:<3d} "
              f"{not_injected:>13d}")
    stack.cube = original.astype(np.float32)


def recall(frames: int, size: int, seeds: int, first_seed: int,
           cadence_s: float = 1800.0) -> None:
    """Recall by kind and significance, false events and the ranking's ROC AUC over ``seeds``
    simulated stacks of ``frames`` frames of ``size``² px, a frame every ``cadence_s``."""
    found: dict[str, list[tuple[float, bool, bool]]] = {k: [] for k in EXPECTED_KIND}
    n_false, n_frames = 0, 0
    # Every event of every stack, as the store would hold them: features, significance, and
    # whether it is an injected event's best match (1), another match of one (0) or false (-1).
    feats, sigmas, truth = [], [], []
    settings = Settings()
    for seed in range(first_seed, first_seed + seeds):
        sim = simulate_stack(frames, size, seed=seed, cadence_s=cadence_s,
                             events=dict.fromkeys(EXPECTED_KIND, 3))
        stack = sim.as_stack()
        res = search_stack(stack)
        role = np.full(len(res.events), -1)
        for tr in sim.events:
            hit = [j for j, e in enumerate(res.events) if matches(tr, e)]
            best = max(hit, key=lambda j: res.events[j].peak_sigma) if hit else None
            role[hit] = np.maximum(role[hit], 0)
            ok_kind = best is not None and res.events[best].kind == tr.expected
            found[tr.kind].append((tr.peak_sigma, best is not None, ok_kind))
            if best is not None:
                role[best] = 1
        n_false += int((role == -1).sum())
        n_frames += frames
        if res.events:
            feats.append(event_features(res.events, stack.cadence_days, settings))
            sigmas += [e.significance for e in res.events]
            truth += role.tolist()
    print(f"{seeds} stacks (seeds {first_seed}–{first_seed + seeds - 1}) of "
          f"{frames} frames of {size}² px, a frame every {cadence_s:g} s, 3 of each kind each")
    _recall_table(found)
    print(f"false events: {n_false} in {n_frames} frames = {100 * n_false / n_frames:.1f} "
          "per 100 frames (target < 1)")
    truth, sigmas = np.array(truth), np.array(sigmas, float)
    judged = truth != 0  # an injected event's best match, or a false event
    if (truth == 1).any() and (truth == -1).any():
        from sklearn.metrics import roc_auc_score

        # The app's ranking: one event model over every stack's events (as in one store).
        _, scores, _ = rank_events(np.vstack(feats), sigmas, settings.threshold_mode,
                                   settings.threshold_value)
        y = truth[judged] == 1
        print(f"ROC AUC, injected over false events, by the app's event score (target ≥ 0.95): "
              f"{roc_auc_score(y, scores[judged]):.3f}; by significance alone: "
              f"{roc_auc_score(y, sigmas[judged]):.3f}")
    elif (truth == 1).any():
        print("ROC AUC, injected over false events: none to rank (no false event; every "
              "injected event found ranks above every false one)")


def _recall_table(found: dict[str, list[tuple[float, bool, bool | None]]]) -> None:
    """Print recall per kind by significance (5–10σ, 10–30σ, > 30σ) and how many found were
    given the right kind, from (significance, found, kind right or None) per injected event."""
    print(f"{'kind':10s} {'5–10σ':>9s} {'10–30σ':>9s} {'>30σ':>9s} {'kind right':>11s}")
    for kind, rows in found.items():
        cells = []
        for lo, hi in ((5, 10), (10, 30), (30, 1e9)):
            sel = [f for s, f, _ in rows if lo <= s < hi]
            cells.append(f"{sum(sel)}/{len(sel)}" if sel else "—")
        n_found = sum(f for _, f, _ in rows)
        right = ("—" if any(k is None for _, _, k in rows)
                 else f"{sum(k for _, f, k in rows if f)}/{n_found:>3d}")
        print(f"{kind:10s} {cells[0]:>9s} {cells[1]:>9s} {cells[2]:>9s} {right:>11s}")


def original_design_by_frame(frames: int, size: int, seeds: int, first_seed: int) -> None:
    """The original design on the same frames, frame by frame, as the baseline: each frame's
    sources cut and embedded (HOG), one PCA of 2 components over every frame's cutouts, a
    cutout flagged above mean + 2σ of the scores. An injected event counts as found when a
    cutout of one of its frames that lies on it is flagged; every flagged cutout on no event is
    a false one."""
    import tempfile
    from types import SimpleNamespace

    from reaper_core.detector import PCAAnomalyDetector
    from reaper_core.embedders import get_embedder
    from reaper_core.ingest import prepare

    settings = original_design(Settings(db_url="sqlite://"))
    embedder = get_embedder(settings.embedder, settings)
    found: dict[str, list[tuple[float, bool, bool | None]]] = {k: [] for k in EXPECTED_KIND}
    n_false = n_frames = 0
    t0 = time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        sim = simulate_stack(frames, size, seed=seed, events=dict.fromkeys(EXPECTED_KIND, 3))
        with tempfile.TemporaryDirectory() as d:
            preps = [prepare(p, settings, embedder) for p in sim.write(Path(d))]
        X = np.vstack([p.embeddings for p in preps])
        # Fitted as the app fits its model (reaper_core.models) for these settings.
        flagged = PCAAnomalyDetector(
            n_components=settings.n_components, threshold_mode=settings.threshold_mode,
            threshold_value=settings.threshold_value,
            normalize_residuals=bool(settings.normalize_residuals),
            feature_weights=[f.weight for f in embedder.features]).fit(X).predict(X) == -1
        cut = [SimpleNamespace(frame_start=i, frame_end=i, x=float(x), y=float(y))
               for i, p in enumerate(preps) for x, y in zip(p.sources.x, p.sources.y,
                                                             strict=True)]
        hits = [c for c, f in zip(cut, flagged, strict=True) if f]
        for tr in sim.events:
            found[tr.kind].append((tr.peak_sigma, any(matches(tr, c) for c in hits), None))
        n_false += sum(not any(matches(tr, c) for tr in sim.events) for c in hits)
        n_frames += frames
    print(f"\nBaseline: the original design frame by frame (HOG → PCA 2 → mean + 2σ over every "
          f"frame's cutouts), {seeds} stack(s) from seed {first_seed}, "
          f"{time.perf_counter() - t0:.0f} s")
    _recall_table(found)
    print(f"flagged cutouts on no event: {n_false} in {n_frames} frames = "
          f"{100 * n_false / n_frames:.0f} per 100 frames")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seed of the first stack (6: a second set, chosen on nothing)")
    ap.add_argument("--cadence", type=float, default=1800.0,
                    help="seconds between the simulated stacks' frames (TESS FFIs: 1800 in "
                         "sectors 1–26, 600 in 27–55, 200 since): the times and the exposure, "
                         "so the noise, change; the events' lengths are drawn in frames")
    ap.add_argument("--speed-size", type=int, default=2048, help="0: no speed measurement")
    ap.add_argument("--speed-frames", type=int, default=24)
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--baseline-seeds", type=int, default=1,
                    help="stacks (from --first-seed) the original design is run on frame by "
                         "frame as the baseline (0: none)")
    ap.add_argument("--memory-frames", default="200,800",
                    help="stack lengths whose search memory is compared ('': none)")
    ap.add_argument("--variables", default="",
                    help="only the variable-star table: sizes (px) of sector-long stacks "
                         "(1,282 frames, --seeds from --first-seed), e.g. 32,96")
    ap.add_argument("--fields", action="store_true",
                    help="only nights of the real ISAAC field: dithered, turned, with cosmic "
                         "rays (frames of the ground or a space telescope, not TESS's)")
    ap.add_argument("--residuals", action="store_true",
                    help="only the differences' scatter at bright stars against their photon "
                         "noise, by pointing (jitter, momentum dumps)")
    args = ap.parse_args()
    if args.fields:
        field_nights()
        return
    if args.residuals:
        residuals(args.frames, args.size)
        return
    if args.variables:
        variable_stars([int(v) for v in args.variables.split(",")], args.seeds, args.first_seed)
        return
    if not args.no_real:
        real_cube()
    if args.seeds:
        recall(args.frames, args.size, args.seeds, args.first_seed, args.cadence)
    if args.baseline_seeds:
        original_design_by_frame(args.frames, args.size, args.baseline_seeds, args.first_seed)
    if args.memory_frames:
        memory_by_length([int(v) for v in args.memory_frames.split(",")], args.size)
    if args.speed_size <= 0:
        return
    # Speed on full-size frames: the whole search (reference, difference and detection,
    # linking, the light-curve pass) of a stack with events, timed stage by stage.
    speed(args.speed_size, args.speed_frames)


ISAAC = CUBE.parent.parent / "other" / "isaac_vlt_crowded_field.fits"
KEPLER = CUBE.parent.parent / "kepler" / "kplr-ffi_ch01_test.fits"


def field_nights(n: int = 10) -> None:
    """Nights of the real ISAAC field (:func:`~reaper_core.simulate_stack.field_night`: 192²
    px, ten frames ten minutes apart, a transient of 400 counts in frames 3–5): the events
    found, where the transient ranks by significance, and the strongest of the rest."""
    import tempfile

    from astropy.io import fits

    from reaper_core.simulate_stack import field_night
    from reaper_core.stacks import stack_from_files

    if not ISAAC.exists():
        print(f"(no {ISAAC.name}: ../shared/data/ is not beside the checkout)")
        return
    with fits.open(ISAAC) as hdul:
        image, header = hdul[0].data, hdul[0].header
    rng = np.random.default_rng(3)
    dither = [(0, 0)] + [tuple(int(v) for v in rng.integers(-22, 23, 2)) for _ in range(n - 1)]
    turn = [0.0] + [float(v) for v in rng.uniform(-4, 4, n - 1)]
    kepler = fits.getdata(KEPLER, 1).astype(np.float32)
    k_noise = 1.4826 * float(np.median(np.abs(kepler - np.median(kepler))))
    # Kepler's undersampled PSF (σ ≈ 0.7 px): sharper stars, what a cosmic ray must beat.
    on_kepler = dict(field_image=kepler, header=None, size=160, corner=(20, 20),
                     transient=(80.0, 70.0), amplitude=30 * k_noise, psf_sigma=0.65,
                     noise=0.3 * k_noise)
    cases = {
        "one pointing": dict(offsets=[(0, 0)] * n),
        "dithered (≤ 22 px)": dict(offsets=dither),
        "turned (≤ 4°) and dithered": dict(offsets=dither, angles=turn),
        "20 cosmic rays a frame": dict(offsets=[(0, 0)] * n, cosmic_rays=20),
        "all three": dict(offsets=dither, angles=turn, cosmic_rays=20),
        "Kepler's field, 20 cosmic rays a frame": dict(offsets=[(0, 0)] * n, cosmic_rays=20,
                                                        **on_kepler),
    }
    rows = []
    for name, kwargs in cases.items():
        where = (kwargs["transient"][0], kwargs["transient"][1]) if "transient" in kwargs \
            else (120.0, 100.0)
        kwargs = {"field_image": image, "header": header, **kwargs}
        with tempfile.TemporaryDirectory() as d:
            paths, _ = field_night(folder=d, **kwargs)
            t0 = time.perf_counter()
            events = sorted(search_stack(stack_from_files(paths)).events,
                            key=lambda e: -e.significance)
            dt = time.perf_counter() - t0
        hit = next((i for i, e in enumerate(events)
                    if np.hypot(e.x - where[0], e.y - where[1]) < 2), None)
        rest = max((e.significance for i, e in enumerate(events) if i != hit), default=0.0)
        rank, sigma = ("not found", "") if hit is None else \
            (hit + 1, f"{events[hit].significance:.0f}")
        rows.append(f"| {name} | {len(events)} | {rank} | {sigma} | {rest:.1f} | {dt:.1f} |")
    print("\n### Nights of a real field (ISAAC, 192² px, or Kepler's, 160²; 10 frames, a "
          "transient in 3)\n")
    print("| night | events | transient's rank | its σ | strongest other σ | search s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


def variable_stars(sizes: list[int], seeds: int, first_seed: int, frames: int = 1282,
                   amplitude: float = 12.0) -> None:
    """Stars varying through a sector's stack: each stack searched as simulated (no event
    injected: every event found is false) and with a star varying as a sine of period 1 day,
    ``amplitude`` σ of the matched filter at its extremes, at the centre (found: a
    ``variable`` within 2 px of it)."""
    print(f"Variable stars over {frames} frames (a sector of 30-minute cadences), seeds "
          f"{first_seed}–{first_seed + seeds - 1}: a ±{amplitude:g}σ sine of period 1 day")
    print(f"{'size':>6s} {'sine found':>11s} {'false events':>13s} {'… variables':>16s} "
          f"{'s per stack':>12s}")
    for size in sizes:
        found = false = false_variables = 0
        t0 = time.perf_counter()
        for seed in range(first_seed, first_seed + seeds):
            for add in (True, False):
                sim = simulate_stack(frames, size, seed=seed, events={})
                ny, nx = sim.frames.shape[1:]
                cx, cy = nx / 2 - 0.3, ny / 2 + 0.2
                if add:
                    add_sine_star(sim, cx, cy, amplitude)
                events = search_stack(sim.as_stack()).events
                if add:
                    found += any(e.kind == "variable" and np.hypot(e.x - cx, e.y - cy) < 2
                                 for e in events)
                else:
                    false += len(events)
                    false_variables += sum(e.kind == "variable" for e in events)
        print(f"{size:>4d}²  {found:>5d} of {seeds:<3d} {false:>13d} {false_variables:>16d} "
              f"{(time.perf_counter() - t0) / (2 * seeds):>12.1f}")


def residuals(frames: int, size: int, seed: int = 7) -> None:
    """Where a difference's noise exceeds the photon noise: simulated stacks without events
    whose pointing jitters, jumps at momentum dumps, both or neither; over the frames the
    reference was not made from, the scatter of the differences at the brightest 1 % and the
    next 9 % of the pixels in units of their photon noise, what the reference's noise says at
    the brightest, and the pixels above 5σ in the matched-filter S/N per 10,000. The photon
    noise is that of the reference plus the simulator's sky, in one exposure."""
    import inspect

    from reaper_core.difference import build_reference, difference
    from reaper_core.simulate import EXPOSURE_S, READ_NOISE_E

    sky = inspect.signature(simulate_stack).parameters["background"].default

    print(f"Differences' scatter / photon noise ({frames} frames of {size}² px, seed {seed}, "
          "no event)")
    print(f"{'pointing':28s} {'bright 1 %':>10s} {'next 9 %':>9s} {'reference says':>15s} "
          f"{'>5σ per 10⁴':>12s}")
    cases = {"jitter 0.03 px + 2 dumps": {}, "jitter 0.03 px, no dump": {"dump_every": 10**6},
             "2 dumps, no jitter": {"jitter_px": 0.0}}
    for name, kw in cases.items():
        sim = simulate_stack(frames, size, seed=seed, events={}, **kw)
        stack = sim.as_stack()
        ref = build_reference(stack)
        img = ref.image
        photon = np.sqrt(np.clip(img + sky, 0, None) * EXPOSURE_S + READ_NOISE_E**2) / EXPOSURE_S
        bright = img > np.quantile(img, 0.99)
        mid = (img > np.quantile(img, 0.9)) & ~bright
        others = np.setdiff1d(np.arange(1, frames, 3), ref.frames)
        diffs = [difference(stack.frame(int(i)), ref) for i in others]
        ratio = np.stack([d.diff for d in diffs]).std(0) / photon
        above = np.mean([(np.abs(d.snr) > 5).mean() for d in diffs])
        print(f"{name:28s} {np.median(ratio[bright]):>9.2f}× {np.median(ratio[mid]):>8.2f}× "
              f"{np.median((ref.sigma / photon)[bright]):>14.2f}× {1e4 * above:>12.2f}")


def speed(size: int, n_frames: int) -> None:
    """Seconds per frame of :func:`search_stack` on a simulated stack of ``n_frames`` frames
    of ``size``² px (events of every kind injected), stage by stage."""
    sim = simulate_stack(n_frames, size, seed=1)
    stack = sim.as_stack()
    marks: list[tuple[str, float]] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        if not marks or marks[-1][0] != stage:
            marks.append((stage, time.perf_counter()))

    t0 = time.perf_counter()
    res = search_stack(stack, progress=progress)
    end = time.perf_counter()
    spans: dict[str, float] = {}
    for (stage, t), nxt in zip(marks, [m[1] for m in marks[1:]] + [end], strict=True):
        spans[stage] = spans.get(stage, 0.0) + nxt - t
    spans["reference"] = spans.get("reference", 0.0) + (marks[0][1] - t0 if marks else 0.0)
    per = {k: v / n_frames for k, v in spans.items() if k != "reference"}
    total = sum(per.values())
    print(f"\n{size}² frames, the whole search of {n_frames} frames ({len(res.events)} events, "
          f"{res.n_detections} detections): reference {spans['reference']:.1f} s (once); per "
          f"frame: difference + detection {per.get('difference', 0):.2f} s, linking "
          f"{per.get('link', 0):.3f} s, light-curve pass {per.get('light curves', 0):.2f} s, "
          f"strips of the survivors {per.get('cutouts', 0):.2f} s, total {total:.2f} s "
          "(target ≤ 1.5 s)")

def memory_by_length(lengths: list[int], size: int) -> None:
    """The search's memory against the stack's length: the peak of the arrays it allocates
    (``tracemalloc``; the frames themselves, held by the simulated stack, not counted), the
    candidates it linked and measured, seconds per frame."""
    import tracemalloc

    import reaper_core.events as ev_mod

    print(f"\nMemory of the search against the number of frames ({size}² px, seed 0)")
    print(f"{'frames':>7s} {'candidates':>11s} {'measured':>9s} {'events':>7s} "
          f"{'peak MB':>8s} {'s/frame':>8s}")
    real_measure, real_make = ev_mod.measure, ev_mod.make_events
    counts: dict[str, int] = {}

    def spy_make(*args, **kw):
        out = real_make(*args, **kw)
        # Every candidate: the still ones' places, kept or not, and the movers.
        counts["candidates"] = (len(kw["places"]) + sum(e.kind == "mover" for e in out)
                                if kw.get("places") is not None else len(out))
        return out

    def spy_measure(stack, ref, events, shifts, **kw):
        # Every batch's candidates (beyond the light-curve budget, several calls).
        counts["measured"] = counts.get("measured", 0) + len(events)
        return real_measure(stack, ref, events, shifts, **kw)

    search_stack(simulate_stack(30, size, seed=0).as_stack())  # imports and caches, once
    ev_mod.make_events, ev_mod.measure = spy_make, spy_measure
    try:
        for n in lengths:
            stack = simulate_stack(n, size, seed=0).as_stack()
            counts.clear()
            tracemalloc.start()
            t0 = time.perf_counter()
            res = search_stack(stack)
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{n:>7d} {counts['candidates']:>11d} {counts['measured']:>9d} "
                  f"{len(res.events):>7d} {peak / 2**20:>8.0f} {dt / n:>8.3f}")
    finally:
        ev_mod.make_events, ev_mod.measure = real_make, real_measure

if __name__ == "__main__":
    main()
