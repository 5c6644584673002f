"""The ``anomaly-reaper`` command line: run, ingest, fit, score, label, events, export,
configure, demo."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from .config import Settings, load_settings, mask_url, save_settings
from .errors import ReaperError
from .events import EVENT_KINDS
from .labels import LABELS, sinks
from .thresholds import THRESHOLD_MODES

# The science stack (astropy, photutils, scikit-learn, SQLAlchemy) is imported inside the
# commands, through the service layer, so `--help` and `run` start at once.


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        Path(args.config) if args.config else None,
        db_url=args.db_url, embedder=getattr(args, "embedder", None),
    )


def _service(args: argparse.Namespace):
    from .service import Reaper

    return Reaper(_settings(args))


def _stage_bar(desc: str):
    """A tqdm bar for one file's stages, and the progress function that drives it."""
    from tqdm import tqdm

    from .progress import overall_fraction

    bar = tqdm(total=100, desc=desc, unit="%", leave=False, file=sys.stderr,
               disable=not sys.stderr.isatty())

    def update(stage: str, fraction: float, message: str) -> None:
        done = overall_fraction(stage, fraction)
        bar.set_postfix_str(f"{stage}: {message}"[:60])
        bar.n = int(100 * done) if done is not None else bar.n
        bar.refresh()

    return bar, update


def cmd_run(args: argparse.Namespace) -> int:
    try:
        import reaper_app
    except ImportError:
        raise ReaperError("the dashboard package reaper_app is not installed") from None

    settings = _settings(args)
    env = dict(os.environ, ANOMALY_REAPER_DB_URL=settings.db_url,
               ANOMALY_REAPER_EMBEDDER=settings.embedder)
    if args.config:
        env["ANOMALY_REAPER_CONFIG"] = str(Path(args.config).resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(reaper_app.ENTRY),
           *reaper_app.server_flags(),
           "--server.address", args.host, "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    print(f"Anomaly Reaper dashboard on http://{args.host}:{args.port} "
          f"(database {mask_url(settings.db_url)})", flush=True)
    return _run_child(cmd, env)


def _run_child(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server as a child; SIGTERM, SIGINT and SIGHUP to this process stop it too, and
    its exit is waited for (no server is left listening)."""
    child = subprocess.Popen(cmd, env=env)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@contextlib.contextmanager
def _sigint_noted(asked: list[int]) -> Iterator[None]:
    """Within the block, SIGINT appends to ``asked`` and raises KeyboardInterrupt as usual
    (in the main thread, where SIGINT has Python's usual handler; an ignored or otherwise
    handled SIGINT stays as it is)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def note(signum: int, frame: FrameType | None) -> None:
        asked.append(signum)
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .files import expand_paths
    from .ingest import to_ingest

    reaper = _service(args)
    skipped: list[Path] = []
    paths = expand_paths(args.paths, skipped)
    if not paths:
        raise ReaperError("no files match the given paths")
    # One item an image: a file of several (a mosaic's CCDs, a field's bands) gives several.
    files = to_ingest(paths, args.hdu)
    if skipped:
        names = ", ".join(p.name for p in skipped[:3]) + (", …" if len(skipped) > 3 else "")
        print(f"note: {len(skipped):,} file{'s' * (len(skipped) != 1)} in the folders "
              f"skipped, not FITS by name ({names})")
    # Progress bars only on a terminal: in a log they would be thousands of lines.
    outer = tqdm(total=len(files), desc="ingest", unit="file", file=sys.stderr,
                 disable=not sys.stderr.isatty())
    state: dict = {}
    done: list = []  # results reported so far

    on_cluster = bool(args.workers or args.scheduler or reaper.settings.scheduler)

    def on_file(i: int, n: int, name: str) -> None:
        outer.set_postfix_str(name[:40])
        state["bar"], state["update"] = _stage_bar(name[:30])

    def on_result(i: int, n: int, result) -> None:
        if "bar" in state and not on_cluster:
            state["bar"].close()
        outer.update(1)
        done.append(result)
        failed = sum(r.status == "error" for r in done)
        if on_cluster:  # files finish in any order: say how many are done and failed
            outer.set_postfix_str(f"{len(done) - failed} done, {failed} failed")
        if result.status == "error":
            tqdm.write(f"error: {result.message}", file=sys.stderr)

    def interrupted() -> int:
        outer.close()
        # Asked of the database: a file may be in although its result was not reported yet.
        tried = files[:len(done) + 1]
        stored = [it.display for it in reaper.stored(tried)]
        print(f"interrupted: {len(stored)} files stored ({', '.join(stored) or 'none'}); "
              f"{len(files) - len(stored)} not stored (each file is stored whole or not at "
              "all); run the same command again to go on", file=sys.stderr)
        return 130

    # Ctrl-C is remembered as well as raised: Python drops an exception raised while a
    # finaliser runs, and the batch would then go on as if no one had asked it to stop.
    asked: list[int] = []
    with _sigint_noted(asked):
        try:
            report = reaper.ingest(files, on_file=None if on_cluster else on_file,
                                   on_result=on_result,
                                   progress=lambda *a: state["update"](*a) if "update" in state
                                   else None, fit_if_missing=not args.no_fit,
                                   workers=args.workers, scheduler=args.scheduler)
        except KeyboardInterrupt:
            return interrupted()
    if asked:
        return interrupted()
    outer.close()
    for r in report.results:
        extra = f", {r.n_anomalies} anomalies" if r.n_anomalies is not None else ""
        line = f"{r.status:9s} {r.name}: {r.message}{extra}" if r.status != "error" else (
            f"{r.status:9s} {r.message}")
        print(line)
        for note in r.notes:
            print(f"{'':9s}   note: {note}")
    print(f"summary: {report.summary()}")
    return 0 if report.ok else 1


def cmd_fit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    reaper = _service(args)
    bar = tqdm(total=100, desc="fit", unit="%", file=sys.stderr, disable=not sys.stderr.isatty())

    def update(stage: str, fraction: float, message: str) -> None:
        bar.n = int(100 * fraction)
        bar.set_postfix_str(f"{stage}: {message}"[:50])
        bar.refresh()

    model = reaper.fit(n_components=args.n_components, progress=update, workers=args.workers,
                       scheduler=args.scheduler)
    bar.close()
    print(f"{model.summary()} Threshold {model.threshold_text()}.")
    return 0


def _label_as(value: str) -> str | None:
    """The label an ``--as`` value names (``none``: no label), or one sentence why not."""
    if value not in (*LABELS, "none"):
        raise ReaperError(f"--as must be one of {', '.join(LABELS)} or none, not {value!r}")
    return None if value == "none" else value


def _print_labelled(label: str | None, n: int, noun: str, then: str) -> None:
    """Say that ``n`` ``noun``s were labelled ``label`` (None: unlabelled), then ``then``."""
    from .words import count

    print(f"{'unlabelled' if label is None else 'labelled ' + label} {count(n, noun)}{then}")


def cmd_label(args: argparse.Namespace) -> int:
    label = _label_as(args.label)
    ids = _service(args).label(args.ids, label, args.note, whole_object=args.object)
    _print_labelled(label, len(ids), "cutout",
                    "; run `anomaly-reaper fit` so that objects like them rank lower"
                    if label == "normal" else "")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    reaper = _service(args)
    model = reaper.require_model(reaper.settings.embedder)
    if args.mode or args.value is not None:
        model = reaper.save_threshold(args.mode or model.row.threshold_mode,
                                      model.row.threshold_value if args.value is None
                                      else args.value, model)
    n = reaper.score_pending(model)
    # Highest score first; with --one-per-object, each object by its best cutout.
    every = reaper.ranking(model)
    print(f"model {model.id}: scored {n} new cutouts; threshold {model.threshold_text()}; "
          f"{int(every['is_anomaly'].sum())} of {len(every['cutout_id'])} cutouts are anomalies")
    cols = reaper.ranking(model, True, every) if args.one_per_object else every
    if args.top:
        names = ["cutout_id", "file", "x", "y", "score", "is_anomaly"]
        names += ["n_cutouts"] if args.one_per_object else []
        print(_text_table({k: cols[k][:args.top] for k in names}))
    if args.explain:
        from .explain import describe

        ids = cols["cutout_id"][:args.explain].tolist()
        why = reaper.reasons(model, ids)
        for rank, (cid, shares) in enumerate(reaper.explain(model, ids, top=3).items(), 1):
            print(f"#{rank} cutout {cid}: {'; '.join(why.get(cid, [])) or 'no plain reason'} "
                  f"({describe(shares)})")
    return 0


def _text_table(cols: dict) -> str:
    """Columns as a plain text table, right-aligned, floats to 4 significant digits."""
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = {k: [cell(v) for v in c.tolist()] for k, c in cols.items()}
    widths = {k: max([len(k), *map(len, c)]) for k, c in cells.items()}
    lines = [" ".join(k.rjust(widths[k]) for k in cells)]
    lines += [" ".join(c[i].rjust(widths[k]) for k, c in cells.items())
              for i in range(len(next(iter(cells.values()), [])))]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    written = _service(args).report(args.output, top=args.top)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    reaper = _service(args)
    n = reaper.prune(args.keep)
    print(f"deleted {n} old models and their scores; {reaper.totals()['models']} kept")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    print(_service(args).remove_files(args.names))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    path, n = _service(args).export(args.output, args.format, args.anomalies_only)
    print(f"wrote {n} rows to {path}")
    return 0


def cmd_stacks(args: argparse.Namespace) -> int:
    import numpy as np

    rows = _service(args).stacks()
    if not rows:
        print("no stacks yet: ingest a TESScut cube, or 3 or more frames of one CCD or of one "
              "field (one OBJECT) with times (or search frames with: anomaly-reaper events "
              "FILES)")
        return 0
    print(_text_table({k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    import numpy as np

    reaper = _service(args)
    if args.label:
        if args.label_as is None:
            raise ReaperError("--label needs --as LABEL (" + ", ".join(LABELS) + " or none)")
        label = _label_as(args.label_as)
        reaper.label_events(args.label, label, args.note)
        _print_labelled(label, len(args.label), "event",
                        "; the events like them now rank lower" if sinks(label) else "")
        return 0
    if args.paths:
        bar, update = _stage_bar("stack")
        try:
            ids = reaper.search_stack(args.paths, progress=update)
        finally:
            bar.close()
        print(f"searched stack{'s' * (len(ids) > 1)} {', '.join(map(str, ids))}",
              file=sys.stderr)
    if args.lightcurve is not None:
        if not args.output:
            raise ReaperError("--lightcurve needs -o FILE (.csv, .fits or .vot)")
        path = reaper.export_lightcurve(args.lightcurve, args.output, args.format)
        print(f"wrote the light curve of event {args.lightcurve} to {path}")
        return 0
    if args.output:
        n = reaper.export_events(args.output, args.format, args.stack, args.kind)
        print(f"wrote {n} events to {args.output}")
        return 0
    cols = reaper.events(args.stack, args.kind)
    if len(cols["id"]) == 0:
        print("no events" + (" of that kind" if args.kind else ""))
        return 0
    show = ("id", "stack", "kind", "x", "y", "t_peak", "peak_sigma", "score", "is_anomaly",
            "label")
    top = {k: cols[k][:args.top] for k in show}
    top["label"] = np.array(["" if v is None else v for v in top["label"]], dtype=object)
    print(_text_table(top))
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    import numpy as np

    reaper = _service(args)
    found = reaper.similar(args.id, args.top)
    cols = reaper.ranking(reaper.require_model())
    pos = {int(c): i for i, c in enumerate(cols["cutout_id"])}
    rows = [pos[c] for c, _ in found]
    print(f"the {len(found)} cutouts most like cutout {args.id} (distance in standardised "
          "feature units):")
    print(_text_table({"cutout_id": cols["cutout_id"][rows], "distance": np.array(
        [d for _, d in found]), "file": cols["file"][rows], "score": cols["score"][rows],
        "label": np.array([v or "" for v in cols["label"][rows]], dtype=object)}))
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from .words import count

    reaper = _service(args)
    r = reaper.reranked()
    pos = {int(c): i for i, c in enumerate(r["cutout_id"])}
    queue = reaper.discover_queue(n=args.top, explore=args.explore, reranked=r)
    rows = [pos[c] for c in queue]
    labelled = sum(v is not None for v in r["label"])
    print(f"re-ranked from {count(labelled, 'label')}; the {len(queue)} unlabelled objects to "
          f"look at next ({args.explore} from regions no label has reached):")
    print(_text_table({"cutout_id": r["cutout_id"][rows], "rerank": r["rerank"][rows],
                       "unsupervised": r["unsupervised"][rows]}))
    return 0


def cmd_groups(args: argparse.Namespace) -> int:
    from collections import Counter

    reaper = _service(args)
    groups = reaper.groups()
    if args.label:
        if args.group is None:
            raise ReaperError("--label needs --group N (see the groups listed without it)")
        ids = [c for c, g in groups.items() if g == args.group]
        if not ids:
            top = max(groups.values(), default=0)
            raise ReaperError(f"no group {args.group}; the groups are 1–{top}")
        reaper.label(ids, args.label)
        print(f"labelled {len(ids)} cutouts of group {args.group} {args.label}")
        return 0
    sizes = Counter(groups.values())
    shared = reaper.group_reasons() if groups else {}
    for g in sorted(sizes):
        members = sorted(c for c, k in groups.items() if k == g)[:8]
        name = "in no group" if g == 0 else f"group {g}"
        print(f"{name}: {sizes[g]} anomalies, e.g. cutouts {', '.join(map(str, members))}")
        if shared.get(g):
            print(f"    what they share: {'; '.join(shared[g])}")
    return 0


def cmd_regions(args: argparse.Namespace) -> int:
    name, text = _service(args).region_file(args.file)
    out = Path(args.output or name)
    try:
        out.write_text(text)
    except OSError as exc:
        raise ReaperError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {text.count(chr(10) + 'box(')} regions to {out} (open the file in DS9, then "
          "Region > Open)")
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    updates = {k: v for k, v in {
        "db_url": args.db_url, "embedder": args.embedder, "threshold_mode": args.threshold_mode,
        "threshold_value": args.threshold, "uploads_dir": args.uploads_dir,
        "vertex_project": args.vertex_project, "vertex_location": args.vertex_location,
        "patch_size": args.patch_size,
    }.items() if v is not None}
    path = Path(args.config) if args.config else None
    if updates:
        written = save_settings(updates, path)
        print(f"saved {', '.join(sorted(updates))} to {written}")
    settings = load_settings(path)
    for k, v in settings.shown().items():
        print(f"{k} = {v}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    reaper = _service(args)
    report = reaper.load_demo(args.folder, size=args.size)
    for r in report.results:
        print(f"{r.status:9s} {r.name}: {r.message}")
    print(f"summary: {report.summary()}")
    return 0 if report.ok else 1


def _whole(minimum: int):
    """An argparse type: a whole number ≥ ``minimum`` (else argparse's one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number ≥ {minimum}, not {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db-url", help="SQLAlchemy database URL (default: SQLite under data/)")
    common.add_argument("--config", help="config file (default: data/config.toml)")

    p = argparse.ArgumentParser(
        prog="anomaly-reaper",
        description="Find anomalies in TESS full-frame images. Settings also come from "
                    "ANOMALY_REAPER_<SETTING> environment variables.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", parents=[common], help="start the dashboard")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=_whole(1), default=8501)
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("ingest", parents=[common], help="ingest FITS files, folders or globs")
    i.add_argument("paths", nargs="+", help="files, folders (searched recursively) or globs")
    i.add_argument("--embedder", help="embedder name (local, stats, hog, vertex)")
    i.add_argument("--no-fit", action="store_true", help="do not fit a model when there is none")
    i.add_argument("--hdu", type=_whole(0),
                   help="read this HDU (0-based) of every file, instead of a TESScut cube's "
                        "pixels, else the largest 2-D image (each of them, stored as FILE[N], "
                        "when a file holds several of the sky: a mosaic's CCDs, a field's "
                        "bands), else a 3-D image's planes")
    i.add_argument("--workers", type=_whole(1), help="run on a local Dask cluster of N processes")
    i.add_argument("--scheduler", help="run on an existing Dask cluster (tcp://host:8786; "
                                       "default: the scheduler setting)")
    i.set_defaults(func=cmd_ingest)

    f = sub.add_parser("fit", parents=[common], help="re-fit the model on every cutout, re-score")
    f.add_argument("--embedder")
    f.add_argument("--n-components", type=float,
                   help="components (≥ 1) or explained-variance fraction (< 1)")
    f.add_argument("--workers", type=_whole(1),
                   help="score every cutout on a local Dask cluster of N processes")
    f.add_argument("--scheduler", help="score on an existing Dask cluster (tcp://host:8786; "
                                       "default: the scheduler setting)")
    f.set_defaults(func=cmd_fit)

    s = sub.add_parser("score", parents=[common],
                       help="score unscored cutouts; optionally set the threshold")
    s.add_argument("--embedder")
    s.add_argument("--mode", choices=THRESHOLD_MODES)
    s.add_argument("--value", type=float, help="k, percentile or absolute score")
    s.add_argument("--top", type=_whole(0), default=0, help="print the N highest-scoring cutouts")
    s.add_argument("--explain", type=_whole(0), default=0,
                   help="explain why the N highest-scoring cutouts are anomalous")
    s.add_argument("--one-per-object", action="store_true",
                   help="with --top/--explain: rank objects by their best cutout (the cells "
                        "of one big galaxy or bleed trail count once)")
    s.set_defaults(func=cmd_score)

    lb = sub.add_parser("label", parents=[common],
                        help="label cutouts by id (normal ones count more in the next fit)")
    lb.add_argument("ids", nargs="+", type=int, help="cutout ids (as `score --top` prints them)")
    lb.add_argument("--as", dest="label", required=True, metavar="LABEL",
                    help=f"{', '.join(LABELS)}; none removes the label")
    lb.add_argument("--note", default="")
    lb.add_argument("--object", action="store_true",
                    help="also every other cutout of the same detected object")
    lb.set_defaults(func=cmd_label)

    rp = sub.add_parser("report", parents=[common],
                        help="the run's figures as a PDF (or PNGs): score distributions, "
                             "anomaly rate over the CCD, components, top cutouts")
    rp.add_argument("-o", "--output", required=True, help="report.pdf, or report.png")
    rp.add_argument("--top", type=_whole(1), default=24, help="cutouts on the contact sheet")
    rp.set_defaults(func=cmd_report)

    pr = sub.add_parser("prune", parents=[common],
                        help="delete old models and their scores (the current one stays)")
    pr.add_argument("--keep", type=_whole(0), help="other models to keep (default: keep_models)")
    pr.set_defaults(func=cmd_prune)

    rm = sub.add_parser("remove", parents=[common],
                        help="remove stored files (their cutouts, scores and labels; the files "
                             "on disk stay) and fit the model anew on what is left")
    rm.add_argument("names", nargs="+", help="stored file names, as the home page lists them")
    rm.set_defaults(func=cmd_remove)

    e = sub.add_parser("export", parents=[common], help="export every cutout as CSV/FITS/VOTable")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--format", choices=["csv", "fits", "votable"])
    e.add_argument("--anomalies-only", action="store_true")
    e.set_defaults(func=cmd_export)

    st = sub.add_parser("stacks", parents=[common],
                        help="the stacks of frames: time span, cadence, gaps, flagged frames")
    st.set_defaults(func=cmd_stacks)

    ev = sub.add_parser("events", parents=[common],
                        help="time-domain events (transients, variables, movers, single-frame "
                             "flashes), ranked; -o writes them as CSV/FITS/VOTable")
    ev.add_argument("paths", nargs="*",
                    help="frames to search first: one TESScut cube, or 3+ FFIs of one CCD")
    ev.add_argument("--kind", choices=EVENT_KINDS)
    ev.add_argument("--stack", help="a stack's id or name")
    ev.add_argument("--top", type=_whole(1), default=30)
    ev.add_argument("-o", "--output", help="write the events (or --lightcurve) to this file")
    ev.add_argument("--format", choices=["csv", "fits", "votable"])
    ev.add_argument("--lightcurve", type=int, metavar="ID",
                    help="write this event's light curve to -o")
    ev.add_argument("--label", type=int, nargs="+", metavar="ID",
                    help="label these events (--as); normal and artefact sink those like them")
    ev.add_argument("--as", dest="label_as", metavar="LABEL",
                    help=f"with --label: {', '.join(LABELS)}; none removes the label")
    ev.add_argument("--note", default="", help="a note stored with the label")
    ev.set_defaults(func=cmd_events)

    m = sub.add_parser("similar", parents=[common],
                       help="the cutouts most like one cutout, across every file")
    m.add_argument("id", type=int, help="cutout id")
    m.add_argument("--top", type=_whole(1), default=20)
    m.set_defaults(func=cmd_similar)

    q = sub.add_parser("rerank", parents=[common],
                       help="the ranking re-made from every label: what to look at next")
    q.add_argument("--top", type=_whole(1), default=24)
    q.add_argument("--explore", type=_whole(0), default=4,
                   help="of them, how many from regions no label has reached yet")
    q.set_defaults(func=cmd_rerank)

    gr = sub.add_parser("groups", parents=[common], help="the anomalies in groups")
    gr.add_argument("--label", choices=LABELS, help="label every cutout of --group so")
    gr.add_argument("--group", type=int, help="a group number (with --label)")
    gr.set_defaults(func=cmd_groups)

    g = sub.add_parser("regions", parents=[common],
                       help="a DS9 region file of one file's anomalies (boxes with id and score)")
    g.add_argument("file", help="the stored file's id or name")
    g.add_argument("-o", "--output", help="region file to write (default: <file>_anomalies.reg)")
    g.set_defaults(func=cmd_regions)

    c = sub.add_parser("configure", parents=[common], help="show or save settings")
    c.add_argument("--embedder")
    c.add_argument("--threshold-mode", choices=THRESHOLD_MODES)
    c.add_argument("--threshold", type=float)
    c.add_argument("--uploads-dir")
    c.add_argument("--vertex-project")
    c.add_argument("--vertex-location")
    c.add_argument("--patch-size", type=int)
    c.set_defaults(func=cmd_configure)

    d = sub.add_parser("demo", parents=[common], help="write and ingest the demo data set")
    d.add_argument("--folder")
    d.add_argument("--size", type=int, default=512, help="side of the simulated frames, px")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ReaperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from .errors import describe_failure

        url = getattr(args, "db_url", None) or os.environ.get("ANOMALY_REAPER_DB_URL", "")
        print(f"error: {describe_failure(exc, mask_url(url) if url else '')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
