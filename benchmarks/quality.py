"""Detection quality on injected anomalies, through the same ingest and scoring as the app.

Data sets (each its own database, as a user would ingest one kind of data):
  * real pixels: scikit-image's Hubble Deep Field, and every FITS image in ../shared/data/;
  * simulated TESS SPOC FFIs (the project's simulator).
Eight kinds of anomaly are injected at random positions with a fixed seed, the files are written
as FITS and ingested with `pipeline.ingest_paths`. An injected anomaly is *detected* when some
cutout centre falls inside its bounding box grown by 3 px; its score is the highest score of
those cutouts. Negatives are the cutouts whose window (as cut, shifted inwards at the frame's
edge) shows no injected anomaly and no known artefact of the simulator (its own saturated
stars), boxes grown by 3 px; the rest are ignored.

Reported per kind and overall: ROC AUC, average precision, precision@50 (overall, beside the
most a perfect ranking could reach when fewer than 50 anomalies were injected, and once more
with negatives counted one per detected object, as the gallery shows them), recall and
false-alarm rate at the model's threshold, and detection recall (did it get a cutout at all).

    uv run python benchmarks/quality.py            # default pipeline, each embedder, baseline
    uv run python benchmarks/quality.py --tune     # also the sweep the defaults were chosen from
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine, original_design, real_fits_files, table
from reaper_core import views
from reaper_core.config import Settings
from reaper_core.cutouts import cutout_origins
from reaper_core.demo import hubble_deep_field_image
from reaper_core.embedders import EMBEDDERS, get_embedder
from reaper_core.embedders.local import HOG_STRETCHES, LocalEmbedder, sky_units
from reaper_core.fits_reader import read_fits
from reaper_core.ingest import Prepared, prepare
from reaper_core.service import Reaper
from reaper_core.simulate import (
    ANOMALY_KINDS,
    Anomaly,
    inject_anomalies,
    inject_into_image,
    simulate_ffi,
    write_spoc,
)

GROW = 3.0


def hdf_injected(folder: Path, n_per_kind: int, seed: int) -> tuple[Path, list[Anomaly], list]:
    """The Hubble Deep Field with anomalies injected, written as FITS: (path, anomalies, [])."""
    hdf = hubble_deep_field_image()
    anomalies = inject_into_image(hdf, None, n_per_kind, seed=seed, margin=20)
    p = folder / f"hdf_injected_{seed}.fits"
    fits.PrimaryHDU(hdf).writeto(p, overwrite=True)
    return p, anomalies, []


def sim_injected(folder: Path, i: int, size: int, n_per_kind: int, seed: int,
                 density: float = 1.0) -> tuple[Path, list[Anomaly], list[Anomaly]]:
    """Simulated SPOC FFI number ``i`` with anomalies injected: (path, anomalies, artefacts)."""
    sim = simulate_ffi(size=size, seed=100 + i, sector=50 + i, density=density)
    a = inject_anomalies(sim, n_per_kind, seed=seed + 10 + i)
    return (write_spoc(sim, folder / f"sim{i}_{seed}_d{density:g}_ffic.fits"), a,
            sim.artefacts)


REAL_TESS = "tess2018206192942-s0001-1-4-0120-s_ffic.fits"


def real_tess_injected(folder: Path, n_per_kind: int, seed: int, inject=None
                       ) -> list[tuple[Path, list[Anomaly], list]]:
    """The real SPOC frame in its eight orientations (rotated and mirrored), each a file of its
    own with anomalies injected into its science pixels; the 44 collateral columns stay on the
    left, where SPOC puts them, and the headers (science-region keywords) are kept.
    ``inject(frame, region, n_per_kind, seed)``: the injector (default
    :func:`~reaper_core.simulate.inject_into_image`'s eight kinds)."""
    src = next((p for p in real_fits_files() if p.name == REAL_TESS), None)
    if src is None:
        return []
    out = []
    with fits.open(src) as hdul:
        data = hdul[1].data.astype(np.float32)
        ny = data.shape[0]
        science = data[:, 44:44 + ny]  # square, so every orientation has the same shape
        for k in range(8):
            sci = np.rot90(science, k % 4)
            sci = sci[:, ::-1] if k >= 4 else sci
            frame = data.copy()
            frame[:, 44:44 + ny] = sci
            region = (slice(0, ny), slice(44, 44 + ny))
            anomalies = (inject(frame, region, n_per_kind, seed + k) if inject else
                         inject_into_image(frame, region, n_per_kind, seed=seed + k))
            hdul[1].data = frame
            p = folder / REAL_TESS.replace("-0120-", f"-{k:04d}-")
            hdul.writeto(p, overwrite=True)
            out.append((p, anomalies, []))
    return out


#: Kinds that no default was chosen on, injected into the real SPOC frame by ``--held-out``.
HELD_OUT_KINDS = ("dead_cluster", "hot_pixel", "negative_dip", "donut", "star_cluster", "arc",
                  "diffraction_spikes", "nan_block")


def inject_held_out(img: np.ndarray, region: tuple[slice, slice], n_per_kind: int, seed: int
                    ) -> list[Anomaly]:
    """Inject :data:`HELD_OUT_KINDS` into ``img`` in place (amplitudes in its robust noise σ,
    as :func:`~reaper_core.simulate.inject_into_image` does): a 3 × 3 cluster of dead (zero)
    pixels, a hot pixel (20–60σ), a negative PSF dip (an over-subtracted star, 30–100σ in
    all), a defocused star's ring of 3 px radius, a cluster of 25 faint stars, a quarter arc,
    a bright star with faint diffraction spikes, a 5 × 5 block of missing (NaN) pixels. Point
    sources and the arc's trail are drawn with the frame's own PSF."""
    from reaper_core.simulate import _robust_noise, add_sources
    from reaper_core.starfit import frame_psf

    rng = np.random.default_rng(seed)
    ys, xs = region
    sig = _robust_noise(img[region])
    psf = frame_psf(img, region)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    taken: list[tuple[float, float]] = []
    out = []

    def place(margin: float = 20) -> tuple[float, float]:
        for _ in range(500):
            x = rng.uniform(xs.start + margin, xs.stop - margin)
            y = rng.uniform(ys.start + margin, ys.stop - margin)
            if all(np.hypot(x - a, y - b) > 40 for a, b in taken):
                break
        taken.append((x, y))
        return x, y

    for kind in HELD_OUT_KINDS:
        for _ in range(n_per_kind):
            x, y = place()
            ix, iy = round(x), round(y)
            if kind == "dead_cluster":
                img[iy - 1:iy + 2, ix - 1:ix + 2] = 0.0
                box = (ix - 1, iy - 1, ix + 1, iy + 1)
            elif kind == "hot_pixel":
                img[iy, ix] += rng.uniform(20, 60) * sig
                box = (ix, iy, ix, iy)
            elif kind == "negative_dip":
                add_sources(img, [x], [y], [-rng.uniform(30, 100) * sig], psf=psf)
                box = (x - 1, y - 1, x + 1, y + 1)
            elif kind == "donut":
                r = np.hypot(xx - x, yy - y)
                img += rng.uniform(8, 15) * sig * np.exp(-0.5 * ((r - 3) / 0.8) ** 2)
                box = (x - 4, y - 4, x + 4, y + 4)
            elif kind == "star_cluster":
                add_sources(img, x + rng.normal(0, 3, 25), y + rng.normal(0, 3, 25),
                            rng.uniform(5, 20, 25) * sig, psf=psf)
                box = (x - 6, y - 6, x + 6, y + 6)
            elif kind == "arc":
                t = np.linspace(0, np.pi / 2, 80)
                radius = rng.uniform(10, 14)
                add_sources(img, x + radius * np.cos(t) - radius / 2,
                            y + radius * np.sin(t) - radius / 2, np.full(80, 2 * sig),
                            sigma=0.8, half=3, psf=psf)
                box = (x - radius / 2, y - radius / 2, x + radius / 2, y + radius / 2)
            elif kind == "diffraction_spikes":
                flux = rng.uniform(300, 800) * sig
                add_sources(img, [x], [y], [flux], psf=psf)
                t = np.linspace(-10, 10, 60)
                t = t[np.abs(t) > 2]
                for angle in (0.3, 0.3 + np.pi / 2):
                    add_sources(img, x + t * np.cos(angle), y + t * np.sin(angle),
                                np.full(t.size, 0.004 * flux), sigma=0.7, half=2)
                box = (x - 10, y - 10, x + 10, y + 10)
            else:  # nan_block
                img[iy - 2:iy + 3, ix - 2:ix + 3] = np.nan
                box = (ix - 2, iy - 2, ix + 2, iy + 2)
            out.append(Anomaly(kind, float(x), float(y), tuple(float(v) for v in box)))
    return out


def make_datasets(folder: Path, n_per_kind: int, sim_size: int, n_sims: int, seed: int,
                  only: str = "", held_out: bool = False):
    """Write the injected files; returns {name: [(path, [Anomaly, ...], artefacts), ...]}.

    ``only``: keep the data sets whose name contains it (case-insensitive); ``held_out``: only
    the real SPOC frame, with :data:`HELD_OUT_KINDS` instead.
    """
    makers = {
        "real TESS SPOC frame (8 orientations)":
            lambda: real_tess_injected(folder, max(n_per_kind // 3, 1), seed),
        "Hubble Deep Field (real pixels)": lambda: [hdf_injected(folder, n_per_kind, seed)],
    }
    for real in real_fits_files():
        if real.name != REAL_TESS and not real.name.endswith("_astrocut.fits"):
            makers[f"{real.name} (real)"] = lambda real=real: [
                real_injected(folder, real, n_per_kind, seed)]
    makers[f"simulated TESS ({n_sims} × {sim_size}²)"] = lambda: [
        sim_injected(folder, i, sim_size, n_per_kind, seed) for i in range(n_sims)]
    makers[f"simulated TESS, crowded ×4 ({n_sims} × {sim_size}²)"] = lambda: [
        sim_injected(folder, i, sim_size, n_per_kind, seed, density=4.0) for i in range(n_sims)]
    if held_out:
        makers = {"real TESS SPOC frame (8 orientations), held-out kinds":
                  lambda: real_tess_injected(folder, max(n_per_kind // 3, 1), seed,
                                             inject_held_out)}
    sets = {name: make() for name, make in makers.items() if only.lower() in name.lower()}
    return {name: files for name, files in sets.items() if files}


def real_injected(folder: Path, real: Path, n_per_kind: int, seed: int):
    """A real image (its science region) with anomalies injected: (path, anomalies, [])."""
    img = read_fits(real)
    data = img.data.copy()
    a = inject_into_image(data, img.valid, n_per_kind, seed=seed)
    q = folder / f"real_{real.stem}_injected.fits"
    fits.PrimaryHDU(data).writeto(q)
    return q, a, []



def label_cutouts(x: np.ndarray, y: np.ndarray, path: Path, size: int, anomalies, artefacts
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Which cutouts to leave out of the negatives, and which are centred on each anomaly.

    A cutout whose window (shifted inwards at the frame's edge, exactly as the pipeline cuts
    it) shows an injected anomaly or a known artefact of the simulator, its box grown by GROW px
    for the light's wings, is no negative; it is a hit only when its centre lies in the box.

    Returns ``near`` (bool, shape (n,)) and one bool mask of shape (n,) per anomaly.
    """
    img = read_fits(path)
    wx, wy = cutout_origins(x, y, size, img.data.shape, img.valid)
    near = np.zeros(len(x), bool)
    for a in [*anomalies, *artefacts]:
        x0, y0, x1, y1 = a.box
        near |= ((wx + size - 1 >= x0 - GROW) & (wx <= x1 + GROW)
                 & (wy + size - 1 >= y0 - GROW) & (wy <= y1 + GROW))
    inside = []
    for a in anomalies:
        x0, y0, x1, y1 = a.box
        inside.append((x >= x0 - GROW) & (x <= x1 + GROW) & (y >= y0 - GROW) & (y <= y1 + GROW))
    return near, inside


def ranking_metrics(pos_scores: np.ndarray, pos_kinds: np.ndarray,
                    neg_scores: np.ndarray) -> dict:
    """ROC AUC and AP per kind and overall, P@50 overall; an undetected anomaly ranks last.

    ``pos_scores`` (one per anomaly, -inf when it got no cutout) and ``pos_kinds``: shape (m,);
    ``neg_scores``: shape (n,).
    """
    floor = np.nanmin(neg_scores) - 1
    ps = np.where(np.isfinite(pos_scores), pos_scores, floor)

    def one(mask):
        y = np.r_[np.ones(mask.sum()), np.zeros(neg_scores.size)]
        s_ = np.r_[ps[mask], neg_scores]
        return {"n": int(mask.sum()), "ROC AUC": roc_auc_score(y, s_),
                "AP": average_precision_score(y, s_)}

    kinds = [*ANOMALY_KINDS, *HELD_OUT_KINDS]
    out = {"kinds": {k: one(pos_kinds == k) for k in kinds if (pos_kinds == k).any()}}
    out["overall"] = one(np.ones(ps.size, bool))
    out["overall"]["P@20"] = precision_at(pos_scores, neg_scores, 20)
    out["overall"]["P@50"] = precision_at(pos_scores, neg_scores, 50)
    # With fewer than 50 anomalies even a perfect ranking cannot fill the top 50.
    out["overall"]["P@50 max"] = min(1.0, ps.size / 50)
    return out


def precision_at(pos_scores: np.ndarray, neg_scores: np.ndarray, k: int = 50) -> float:
    """Share of anomalies among the ``k`` highest scores; an undetected one (-inf) ranks last."""
    ps = np.where(np.isfinite(pos_scores), pos_scores, np.nanmin(neg_scores) - 1)
    ranked = np.r_[ps, neg_scores]
    labels = np.r_[np.ones(ps.size), np.zeros(np.size(neg_scores))]
    return float(labels[np.argsort(-ranked, kind="stable")[:k]].mean())


def ingest(files, settings: Settings, workdir: Path) -> Reaper:
    """Ingest ``files`` into a fresh SQLite database with ``settings``, as the app does."""
    db = workdir / f"q{time.perf_counter_ns()}.db"
    reaper = Reaper(replace(settings, db_url=f"sqlite:///{db}"))
    report = reaper.ingest([f[0] for f in files])
    bad = [r.message for r in report.results if r.status != "added"]
    if bad:
        raise RuntimeError(bad)
    return reaper


def evaluate(files, settings: Settings, workdir: Path) -> dict:
    """Ingest ``files`` into a fresh database with ``settings`` and measure."""
    reaper = ingest(files, settings, workdir)
    try:
        return measure(reaper, files)
    finally:
        reaper.engine.dispose()


def measure(reaper: Reaper, files) -> dict:
    """The metrics of the current model's scores of ``files`` (already ingested by ``reaper``);
    ``clean`` holds the ids of the negatives (cutouts whose window shows no anomaly)."""
    df = reaper.export_table()
    pos_scores, pos_kinds, pos_found, pos_flag = [], [], [], []
    near_any = np.zeros(len(df), bool)
    for path, anomalies, artefacts in files:
        rows = np.flatnonzero((df["file"] == path.name).to_numpy())
        sc = df["score"].to_numpy()[rows]
        fl = df["is_anomaly"].to_numpy()[rows]
        near, inside = label_cutouts(df["x"].to_numpy()[rows], df["y"].to_numpy()[rows], path,
                                     reaper.settings.patch_size, anomalies, artefacts)
        near_any[rows[near]] = True
        for a, m in zip(anomalies, inside, strict=True):
            pos_kinds.append(a.kind)
            pos_found.append(bool(m.any()))
            pos_scores.append(float(sc[m].max()) if m.any() else -np.inf)
            pos_flag.append(bool(fl[m].any()))
    neg = df.loc[~near_any]
    neg_scores = neg["score"].to_numpy()
    pos_scores, pos_kinds = np.array(pos_scores), np.array(pos_kinds)
    pos_found, pos_flag = np.array(pos_found), np.array(pos_flag)
    out = ranking_metrics(pos_scores, pos_kinds, neg_scores)
    out["n_neg"], out["far"] = int(neg_scores.size), float(neg["is_anomaly"].to_numpy().mean())
    out["clean"] = set(neg["cutout_id"].astype(int))
    for k, m in [*((k, pos_kinds == k) for k in out["kinds"]), ("overall", slice(None))]:
        entry = out["overall"] if k == "overall" else out["kinds"][k]
        entry["recall@thr"], entry["got a cutout"] = pos_flag[m].mean(), pos_found[m].mean()
    # P@50 once more, one per object as the gallery shows them by default: negatives ranked by
    # the best cutout of each detected object (views.one_per_object), anomalies one entry each.
    objects = views.one_per_object(
        neg.sort_values("score", ascending=False).assign(file_id=neg["file"]))
    out["overall"]["P@50 objects"] = precision_at(pos_scores, objects["score"].to_numpy(), 50)
    return out


def result_rows(res: dict) -> list[dict]:
    rows = []
    for k, m in [*res["kinds"].items(), ("overall", res["overall"])]:
        rows.append({"kind": k, "n": m["n"], "ROC AUC": m["ROC AUC"], "AP": m["AP"],
                     "P@50": m.get("P@50", ""), "recall@thr": m["recall@thr"],
                     "false alarms": res["far"], "got a cutout": m["got a cutout"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-per-kind", type=int, default=5)
    ap.add_argument("--sim-size", type=int, default=1024)
    ap.add_argument("--sims", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--only", default="", help="only the data sets whose name contains this")
    ap.add_argument("--feedback", type=int, default=0, metavar="PAGES",
                    help="also a simulated astronomer labelling PAGES gallery pages normal")
    ap.add_argument("--held-out", action="store_true",
                    help="kinds no default was chosen on (HELD_OUT_KINDS), in the real SPOC "
                         "frame")
    ap.add_argument("--bound", action="store_true",
                    help="also the supervised ceiling (a classifier told the injected cutouts)")
    args = ap.parse_args()
    print(f"# Detection quality — {machine()}\n")
    default = Settings(db_url="sqlite://")
    configs = {
        "default (local embedder)": default,
        "the default before stop 45 (no core statistics, 5 components)":
            replace(default, embedder="local+stars", n_components=5),
        "local embedder without the star residual": replace(default, embedder="local+core"),
        "stats embedder": replace(default, embedder="stats"),
        "hog embedder": replace(default, embedder="hog"),
        "baseline: original design (HOG → scaler → PCA 2 → mean + 2σ)":
            original_design(default),
    }
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        sets = make_datasets(work, args.n_per_kind, args.sim_size, args.sims, args.seed,
                             args.only, args.held_out)
        summary = []
        for dname, files in sets.items():
            base = None
            results = {}
            for cname, cfg in configs.items():
                t0 = time.perf_counter()
                res = evaluate(files, cfg, work)
                results[cname] = res
                print(table(result_rows(res),
                            f"{dname} — {cname} ({time.perf_counter() - t0:.0f} s)"))
                if cname.startswith("baseline"):
                    base = res
                o = res["overall"]
                summary.append({"data": dname, "pipeline": cname, "ROC AUC": o["ROC AUC"],
                                "worst kind": min(m["ROC AUC"] for m in res["kinds"].values()),
                                "AP": o["AP"], "P@20": o["P@20"], "P@50": o["P@50"],
                                "P@50 max": o["P@50 max"],
                                "P@50 objects": o["P@50 objects"],
                                "recall@thr": o["recall@thr"], "false alarms": res["far"],
                                "got a cutout": o["got a cutout"]})
            d_ = results["default (local embedder)"]
            worse = [k for k in d_["kinds"] if d_["kinds"][k]["ROC AUC"]
                     <= base["kinds"][k]["ROC AUC"]]
            print(f"Default beats the baseline's ROC AUC on "
                  f"{len(d_['kinds']) - len(worse)} of {len(d_['kinds'])} kinds"
                  + (f"; not on: {', '.join(worse)}" if worse else "") + ".\n")
        print(table(summary, "Summary (overall)"))
        if args.tune:
            tune(sets, default, work)
        if args.feedback:
            for dname, files in sets.items():
                print(table(feedback(files, default, work, args.feedback),
                            f"{dname} — labelled normal, page by page (24 objects a page), "
                            "then re-fitted"))
        if args.bound:
            supervised_bound(work, default, args.sim_size, args.seed, only=args.only)


def tune(sets, default: Settings, work: Path) -> None:
    rows = []
    grid = [("patch 16", replace(default, patch_size=16)),
            ("patch 32", default),
            ("patch 48", replace(default, patch_size=48)),
            ("patch 64", replace(default, patch_size=64))]
    grid += [(f"components {nc:g}", replace(default, n_components=nc))
             for nc in (2, 5, 10, 20, 0.9)]
    grid += [("residuals not normalised", replace(default, normalize_residuals=0))]
    # The stretch HOG sees (the default is asinh(z / 3), z in sky σ); each variant is an embedder
    # of its own name, so its embeddings are stored apart.
    for name in HOG_STRETCHES:
        if name != "asinh":
            EMBEDDERS[f"local[{name}]"] = lambda name=name, **kw: LocalEmbedder(stretch=name)
            grid.append((f"HOG stretch {name}", replace(default, embedder=f"local[{name}]")))
    grid += [("threshold sigma 3", replace(default, threshold_value=3.0)),
             ("threshold percentile 99", replace(default, threshold_mode="percentile",
                                                 threshold_value=99.0))]
    for label, cfg in grid:
        for dname, files in sets.items():
            res = evaluate(files, cfg, work)
            o = res["overall"]
            rows.append({"setting": label, "data": dname, "ROC AUC": o["ROC AUC"],
                         "AP": o["AP"], "P@50": o["P@50"], "recall@thr": o["recall@thr"],
                         "false alarms": res["far"], "got a cutout": o["got a cutout"]})
    print(table(rows, "Tuning sweep (overall, default embedder unless named)"))


def feedback(files, settings: Settings, work: Path, pages: int = 2, per_page: int = 24
             ) -> list[dict]:
    """A simulated astronomer teaching the detector what is normal, through the app's own path.

    Each round, they look at the next page of the gallery (one cutout per object, highest score
    first), label every object whose window shows no injected anomaly *normal* (all of its
    cutouts, as the gallery's "label all cutouts of this object" does) and re-fit
    (``Reaper.fit``, where those cutouts count ``normal_weight`` times). Returns the
    overall metrics before and after each round.
    """
    reaper = ingest(files, settings, work)
    rows: list[dict] = []
    seen: set[int] = set()  # objects shown, by their best cutout
    labelled: set[int] = set()
    try:
        for page in range(pages + 1):
            res = measure(reaper, files)
            table = reaper.cutout_table(reaper.model()).sort_values("score", ascending=False)
            objects = views.one_per_object(table)
            shown = [c for c in objects["cutout_id"].astype(int) if c not in seen][:per_page]
            o = res["overall"]
            rows.append({"pages labelled": page, "cutouts labelled normal": len(labelled),
                         "ROC AUC": o["ROC AUC"], "AP": o["AP"], "P@50": o["P@50"],
                         "P@50 objects": o["P@50 objects"],
                         # What the astronomer sees next: objects whose cutout shows an
                         # injected anomaly (or a simulator artefact), centred or not.
                         "next page showing an anomaly":
                             float(np.mean([c not in res["clean"] for c in shown]))})
            if page == pages:
                break
            seen.update(shown)
            normal = set()
            for cid in shown:
                if cid in res["clean"]:
                    normal |= {cid, *views.object_members(table, cid)["cutout_id"].astype(int)}
            labelled |= normal
            reaper.label(sorted(normal), "normal")
            reaper.fit()
    finally:
        reaper.engine.dispose()
    return rows


def bound_features(prep: Prepared) -> np.ndarray:
    """What the supervised ceiling sees: the default embedding and the central 16 × 16 pixels,
    asinh-stretched in sky σ; shape (n, dim + 256)."""
    s = prep.patches.shape[-1]
    c = HOG_STRETCHES["asinh"](sky_units(prep.patches)[:, s // 4:s - s // 4, s // 4:s - s // 4])
    return np.hstack([prep.embeddings, c.reshape(len(c), -1)])


def _labelled(path: Path, anomalies, artefacts, settings: Settings, embedder):
    """Features of one injected file's cutouts and their labels: (features, near, hit,
    per-anomaly masks, kinds), ``hit`` = centred on some anomaly."""
    prep = prepare(path, settings, embedder)
    near, inside = label_cutouts(prep.sources.x, prep.sources.y, path, settings.patch_size,
                                 anomalies, artefacts)
    hit = np.any(inside, axis=0) if inside else np.zeros(len(near), bool)
    return bound_features(prep), near, hit, inside, [a.kind for a in anomalies]


def supervised_bound(work: Path, settings: Settings, sim_size: int, seed: int,
                     n_train: int = 6, n_test: int = 2, n_per_kind: int = 10,
                     only: str = "") -> None:
    """How well the injected anomalies can be told from the rest *at all*, given the labels.

    A gradient-boosted classifier (scikit-learn) is trained on ``n_train`` injected draws, told
    which cutouts are centred on an anomaly, and scored on ``n_test`` draws it has not seen,
    with the same metrics as the detector. No unsupervised detector can be expected to beat it:
    where it stays low, the injected kind looks, to these features and pixels, like the data's
    own objects.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    embedder = get_embedder(settings.embedder, settings)
    rows = []
    # Each draw is a list of injected files; the real SPOC frame's is its eight orientations
    # (the same stars turned: the classifier has seen this frame's stars, so its ceiling there
    # is if anything too high).
    draws = {"real TESS SPOC frame (8 orientations)":
                 lambda k: real_tess_injected(work, 1, seed + 1000 + 8 * k),
             "Hubble Deep Field": lambda k: [hdf_injected(work, n_per_kind, seed + 1000 + k)],
             f"simulated TESS ({sim_size}²)":
                 lambda k: [sim_injected(work, k, sim_size, max(n_per_kind // 2, 1), seed)],
             f"simulated TESS, crowded ×4 ({sim_size}²)":
                 lambda k: [sim_injected(work, k, sim_size, max(n_per_kind // 2, 1), seed,
                                         density=4.0)]}
    for dname, draw in draws.items():
        if only and only not in dname:
            continue
        t0 = time.perf_counter()

        def labelled(k: int, draw=draw):
            """A draw's files as one: features, near, hit, per-anomaly masks, kinds."""
            parts = [_labelled(*f, settings, embedder) for f in draw(k)]
            if not parts:
                return None
            sizes = [len(part[1]) for part in parts]
            starts = np.cumsum([0, *sizes])
            masks = []
            for i, part in enumerate(parts):
                for m in part[3]:
                    whole = np.zeros(starts[-1], bool)
                    whole[starts[i]:starts[i + 1]] = m
                    masks.append(whole)
            return (np.vstack([part[0] for part in parts]),
                    np.concatenate([part[1] for part in parts]),
                    np.concatenate([part[2] for part in parts]), masks,
                    [kind for part in parts for kind in part[4]])

        train = [labelled(k) for k in range(n_train)]
        if train[0] is None:
            continue
        X = np.vstack([f[hit | ~near] for f, near, hit, _, _ in train])
        y = np.concatenate([hit[hit | ~near] for _, near, hit, _, _ in train])
        clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05,
                                             class_weight="balanced", random_state=0).fit(X, y)
        for j in range(n_test):
            f, near, _, inside, kinds = labelled(n_train + j)
            p = clf.predict_proba(f)[:, 1]
            res = ranking_metrics(np.array([p[m].max() if m.any() else -np.inf for m in inside]),
                                  np.array(kinds), p[~near])
            rows.append({"data": f"{dname}, unseen draw {j + 1}",
                         **{k: m["ROC AUC"] for k, m in res["kinds"].items()},
                         "overall": res["overall"]["ROC AUC"], "AP": res["overall"]["AP"],
                         "P@50": res["overall"]["P@50"]})
        print(f"({dname}: {n_train} training draws, {int(y.sum())} cutouts on anomalies, "
              f"{time.perf_counter() - t0:.0f} s)")
    print(table(rows, "Supervised ceiling: ROC AUC per kind of a classifier told the labels "
                      "(default embedding + central pixels)"))


if __name__ == "__main__":
    main()
