"""The discovery loop, measured: a simulated astronomer pages through the app's own queue and
labels each cutout truthfully; how many injected anomalies are found among the first 50, 100
and 200 viewed, against the unsupervised ranking, random order and the ideal. Also the
similarity search (precision@10 by kind, query time at 10⁴–10⁶ cutouts) and the groups
(adjusted Rand index against the injected kinds).

    uv run python benchmarks/discovery.py [--data hdf,tess] [--per-page 24] [--seed 1]

Each page is ``Reaper.discover_queue`` (24 objects, 4 of them from regions no label has reached
yet), exactly as the Discover page shows it; a cutout whose window shows an injected anomaly
is labelled "interesting" (``--judge centred``: only one centred on it), one that shows one of
the simulator's own oddities (a saturated star's bleed trail) "artefact", every other "normal"
(its whole object, as the page does). The real TESS corner is used in its eight orientations
(rotated and mirrored), each a file with its own anomalies, as in the quality benchmark; the
simulator is one frame calibrated on it. After each page, the ROC AUC of the re-ranked score
over the cutouts not yet viewed (centred on an anomaly against showing none), beside the
unsupervised score's on the same cutouts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from _common import machine, table
from quality import GROW, hdf_injected, ingest, label_cutouts, real_tess_injected, sim_injected
from sklearn.metrics import roc_auc_score

from reaper_core.config import Settings
from reaper_core.cutouts import cutout_origins
from reaper_core.embedders import get_embedder
from reaper_core.fits_reader import read_fits
from reaper_core.similarity import SimilarityIndex, oddity_metric

VIEWED = (50, 100, 200)
#: Features of the default embedder (96: statistics, HOG, the core's statistics, the star
#: residual), for the timings on random vectors.
DIM = get_embedder(Settings().embedder).dim


class Truth(NamedTuple):
    """What a person sees in each cutout."""

    #: {cutout id: the injected anomalies its window shows}
    shows: dict[int, set[int]]
    #: {cutout id: the anomaly it is centred on}
    centred: dict[int, int]
    #: {anomaly number: kind}
    kinds: dict[int, str]
    #: how many anomalies
    n: int
    #: cutouts whose window shows one of the frame's own known oddities and no anomaly
    artefacts: set[int]


def truth(reaper, files) -> Truth:
    """What a person sees in each cutout (:class:`Truth`). A window shows an anomaly (or an
    artefact) when it overlaps its box grown by GROW px, as the quality benchmark counts it."""
    cols = reaper.ranking(reaper.model())
    size = reaper.settings.patch_size
    shows: dict[int, set[int]] = {}
    centred: dict[int, int] = {}
    kinds: dict[int, str] = {}
    odd: set[int] = set()
    n = 0
    for path, anomalies, artefacts in files:
        rows = np.flatnonzero(cols["file"] == path.name)
        x, y = cols["x"][rows], cols["y"][rows]
        _, inside = label_cutouts(x, y, path, size, anomalies, artefacts)
        img = read_fits(path)
        wx, wy = cutout_origins(x, y, size, img.data.shape, img.valid)
        for a, m in zip(anomalies, inside, strict=True):
            for cid in cols["cutout_id"][rows[_window_shows(a.box, wx, wy, size)]]:
                shows.setdefault(int(cid), set()).add(n)
            for cid in cols["cutout_id"][rows[m]]:
                centred.setdefault(int(cid), n)
            kinds[n] = a.kind
            n += 1
        for a in artefacts:
            odd.update(int(c) for c in cols["cutout_id"][rows[_window_shows(a.box, wx, wy, size)]])
    return Truth(shows, centred, kinds, n, odd - set(shows))


def _window_shows(box, wx: np.ndarray, wy: np.ndarray, size: int) -> np.ndarray:
    """Whether each window (first pixel wx, wy; ``size`` px) overlaps ``box`` grown by GROW."""
    x0, y0, x1, y1 = box
    return ((wx + size - 1 >= x0 - GROW) & (wx <= x1 + GROW)
            & (wy + size - 1 >= y0 - GROW) & (wy <= y1 + GROW))


def found_among(order: list[int], shows: dict[int, set[int]], k: int) -> int:
    """Distinct anomalies shown by the first ``k`` cutouts of ``order``."""
    return len(set().union(*(shows.get(c, set()) for c in order[:k])))


def loop(reaper, judged: dict, pages: int, per_page: int, explore: int = 4,
         artefacts: set[int] = frozenset(), after_page=None) -> list[int]:
    """The cutouts viewed, in order, by an astronomer labelling the Discover queue: those in
    ``judged`` (showing, or centred on, an injected anomaly) "interesting", those showing a
    known artefact "artefact", the rest "normal" (the last two: their whole object).
    ``after_page(viewed)`` is called before the first page and after each page's labels."""
    viewed: list[int] = []
    for _ in range(pages):
        if after_page is not None:
            after_page(viewed)
        queue = reaper.discover_queue(n=per_page, explore=explore)
        if not queue:
            break
        viewed += queue
        good = [c for c in queue if c in judged]
        odd = [c for c in queue if c not in judged and c in artefacts]
        bad = [c for c in queue if c not in judged and c not in artefacts]
        if good:
            reaper.label(good, "interesting")
        if odd:
            reaper.label(odd, "artefact", whole_object=True)
        if bad:
            reaper.label(bad, "normal", whole_object=True)
    if after_page is not None:
        after_page(viewed)
    return viewed


def unviewed_auc(reaper, viewed: list[int], t: Truth) -> dict[str, float]:
    """ROC AUC of the re-ranked and of the unsupervised score over the cutouts not yet viewed:
    those centred on an anomaly against those showing none (nor an artefact)."""
    r = reaper.reranked()
    ids = r["cutout_id"]
    seen = np.isin(ids, viewed)
    pos = np.array([int(c) in t.centred for c in ids])
    neg = np.array([int(c) not in t.shows and int(c) not in t.artefacts for c in ids])
    keep = ~seen & (pos | neg)
    y = pos[keep]
    if y.all() or not y.any():
        return {"re-ranked": float("nan"), "unsupervised": float("nan")}
    return {"re-ranked": roc_auc_score(y, r["rerank"][keep]),
            "unsupervised": roc_auc_score(y, r["unsupervised"][keep])}


def unsupervised_order(reaper) -> list[int]:
    """The gallery's order: one cutout per object, highest score first."""
    return reaper.ranking(reaper.model(), one_per_object=True)["cutout_id"].tolist()


def similarity_precision(reaper, shows, hit, kinds) -> dict[str, float]:
    """For each injected anomaly's best cutout, the share of its 10 nearest cutouts — those
    showing the same anomaly left out — that show another anomaly of the same kind, by kind;
    an anomaly is often cut into several cutouts, so all 10 can."""
    ranked = reaper.ranking(reaper.model())["cutout_id"].tolist()
    best: dict[int, int] = {}
    for c in ranked:
        if c in hit and hit[c] not in best:
            best[hit[c]] = c
    out: dict[str, list[float]] = {}
    for a, c in best.items():
        near = [i for i, _ in reaper.similar(c, 200) if a not in shows.get(i, set())][:10]
        same = np.mean([any(kinds[b] == kinds[a] for b in shows.get(i, set())) for i in near])
        out.setdefault(kinds[a], []).append(float(same))
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def group_ari(reaper, hit, kinds) -> tuple[float, int]:
    """(adjusted Rand index of the groups against the injected kinds over the flagged cutouts
    centred on an anomaly, how many such cutouts)."""
    from sklearn.metrics import adjusted_rand_score

    groups = reaper.groups()
    ids = [c for c in groups if c in hit]
    if len(ids) < 2:
        return float("nan"), len(ids)
    return adjusted_rand_score([kinds[hit[c]] for c in ids], [groups[c] for c in ids]), len(ids)


def query_times(dim: int = DIM, sizes=(10_000, 100_000, 1_000_000), repeat: int = 20
                ) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        Z = rng.normal(size=(n, dim)).astype(np.float32)
        t0 = time.perf_counter()
        index = SimilarityIndex(np.arange(n), Z)
        build = time.perf_counter() - t0
        times = []
        for i in range(repeat):
            t0 = time.perf_counter()  # as the app queries: weighed by the query's oddity
            index.query(Z[i], 20, exclude=i, weights=oddity_metric(rng.normal(size=dim)))
            times.append(time.perf_counter() - t0)
        rows.append({"cutouts": n, "features": dim, "build s": build,
                     "query ms (median)": 1000 * float(np.median(times)),
                     "query ms (max)": 1000 * float(np.max(times))})
        del Z, index
    return rows


def group_times(dim: int = DIM, sizes=(1_000, 10_000, 35_000, 350_000)) -> list[dict]:
    """Seconds to group ``sizes`` flagged cutouts (:func:`reaper_core.groups.group_anomalies`;
    above ``MAX_CLUSTERED`` a sample is clustered and the rest join their nearest): random rows
    along 20 directions, each at a random strength."""
    from reaper_core.groups import MAX_CLUSTERED, group_anomalies

    rng = np.random.default_rng(2)
    rows = []
    for n in sizes:
        centres = rng.normal(size=(20, dim)) * 3
        Z = (rng.normal(size=(n, dim)) + centres[rng.integers(0, 20, n)]
             * rng.uniform(1, 5, (n, 1))).astype(np.float32)
        t0 = time.perf_counter()
        groups = group_anomalies(Z)
        rows.append({"flagged cutouts": n, "clustered": min(n, MAX_CLUSTERED),
                     "groups": int(groups.max()), "s": time.perf_counter() - t0})
    return rows


def rerank_times(n: int = 100_000, dim: int = DIM, labels=(24, 240, 2400)) -> list[dict]:
    """Seconds to re-rank ``n`` cutouts from a number of labels (the arithmetic of
    ``Reaper.reranked`` once the embeddings and the labels' local scales are in memory, as they
    stay between labels), and to find the local scales of one page of new labels."""
    from reaper_core.rerank import LabelReranker, local_scale, rank_fraction

    rng = np.random.default_rng(1)
    Z = rng.normal(size=(n, dim)).astype(np.float32)
    u = rng.gamma(2.0, 1.0, n)
    rows = []
    for m in labels:
        pick = rng.choice(n, m, replace=False)
        names = rng.choice(["interesting", "normal", "artefact"], m).tolist()
        scale = local_scale(Z[pick], Z)
        t0 = time.perf_counter()
        local_scale(Z[pick[:24]], Z)
        t_page = time.perf_counter() - t0
        t0 = time.perf_counter()
        rr = LabelReranker().fit(Z[pick], names, scale=scale)
        c, p = rr.closeness(Z)
        score = rr.combine(c, p, rank_fraction(u))
        np.lexsort((np.arange(n), -score))
        rows.append({"cutouts": n, "labels": m, "re-rank s": time.perf_counter() - t0,
                     "+ scales of 24 new labels s": t_page})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="hdf,tess,sim")
    ap.add_argument("--sim-size", type=int, default=1024)
    ap.add_argument("--per-page", type=int, default=24)
    ap.add_argument("--n-per-kind", type=int, default=5)
    ap.add_argument("--tess-per-kind", type=int, default=1,
                    help="anomalies of each kind in each of the real TESS corner's 8 "
                         "orientations (128 × 129 science pixels: with one of each, 61 %% "
                         "of the windows show one)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--radius", type=float, default=Settings().rerank_radius)
    ap.add_argument("--explore", type=int, default=4,
                    help="of each page, cutouts from regions no label has reached")
    ap.add_argument("--judge", default="shown", choices=["shown", "centred"],
                    help="what makes a cutout interesting to the simulated astronomer: "
                         "showing an injected anomaly anywhere in its window, or being "
                         "centred on one")
    ap.add_argument("--no-similar", action="store_true", help="skip the query-time table")
    args = ap.parse_args()
    pages = -(-max(VIEWED) // args.per_page)
    settings = Settings(rerank_radius=args.radius)
    rows, sim_rows, group_rows, auc_rows = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        sets = {}
        if "hdf" in args.data:
            sets["Hubble Deep Field"] = [hdf_injected(work, args.n_per_kind, args.seed)]
        if "tess" in args.data:
            sets["real TESS frame (8 orientations)"] = real_tess_injected(
                work, args.tess_per_kind, args.seed)
        if "sim" in args.data:
            sets[f"simulated TESS ({args.sim_size}²)"] = [
                sim_injected(work, 0, args.sim_size, args.n_per_kind, args.seed)]
        for name, files in sets.items():
            reaper = ingest(files, replace(settings, load_demo=0), work)
            t = truth(reaper, files)
            shows, hit, kinds, n = t.shows, t.centred, t.kinds, t.n
            unsup = unsupervised_order(reaper)
            sims = similarity_precision(reaper, shows, hit, kinds)
            ari, n_grouped = group_ari(reaper, hit, kinds)
            reachable = len(set().union(*shows.values())) if shows else 0
            rng = np.random.default_rng(args.seed)
            random_order = [int(c) for c in rng.permutation(unsup)]
            t0 = time.perf_counter()
            judged = hit if args.judge == "centred" else shows
            measuring = [0.0]  # seconds spent measuring the AUCs, not paging

            def after_page(v, name=name, reaper=reaper, t=t, measuring=measuring):
                t1 = time.perf_counter()
                auc_rows.append({"data": name, "viewed": len(v), **unviewed_auc(reaper, v, t)})
                measuring[0] += time.perf_counter() - t1

            viewed = loop(reaper, judged, pages, args.per_page, args.explore, t.artefacts,
                          after_page)
            per_page_s = (time.perf_counter() - t0 - measuring[0]) / pages
            for label, order in (("unsupervised ranking", unsup), ("this loop", viewed),
                                 ("random order", random_order)):
                rows.append({"data": name, "order": label, "anomalies": n,
                             "visible in some cutout": reachable,
                             **{f"found in first {k}": found_among(order, shows, k)
                                for k in VIEWED},
                             "share of first 100 viewed showing one":
                                 float(np.mean([c in shows for c in order[:100]])),
                             "… centred on one":
                                 float(np.mean([c in hit for c in order[:100]]))})
            rows.append({"data": name, "order": "ideal", "anomalies": n,
                         "visible in some cutout": reachable,
                         **{f"found in first {k}": min(k, reachable) for k in VIEWED},
                         "share of first 100 viewed showing one": 1.0,
                         "… centred on one": min(len(hit), 100) / 100})
            rows[-3]["s per page (queue + labels)"] = per_page_s
            sim_rows.append({"data": name, **{f"P@10 {k}": v for k, v in sims.items()}})
            group_rows.append({"data": name, "ARI groups vs kinds": ari,
                               "flagged anomaly cutouts": n_grouped,
                               "groups": max(reaper.groups().values(), default=0)})
            reaper.engine.dispose()
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k)
                  if k in rows[0] else 99)
    print(table([{k: r.get(k, "") for k in keys} for r in rows],
                f"Anomalies found by a simulated astronomer ({machine()})"))
    sim_keys = list(dict.fromkeys(k for r in sim_rows for k in r))
    print(table([{k: r.get(k, "") for k in sim_keys} for r in sim_rows],
                "More like this: share of the 10 nearest of the same injected kind"))
    print(table(group_rows, "Groups of the flagged cutouts"))
    print(table(auc_rows, "ROC AUC over the cutouts not yet viewed, after each page of labels "
                          "(re-ranked score; the unsupervised score on the same cutouts)"))
    if not args.no_similar:
        print(table(rerank_times(), "Re-ranking after a label (embeddings in memory)"))
        print(table(query_times(), "More like this: exact search, one query"))
        print(table(group_times(), "Groups of the flagged cutouts (a store's flagged set)"))


if __name__ == "__main__":
    main()
