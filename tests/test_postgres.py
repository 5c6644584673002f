"""The same guarantees against a real PostgreSQL server started by the test run.

The server is Debian's `postgresql` (installed by .ci/run), started in a temporary folder on a
free loopback port and stopped afterwards. Run as root, it runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from reaper_core import store
from reaper_core.cli import main
from reaper_core.config import Settings
from reaper_core.models import current_model, fit_model, save_threshold

from .conftest import exported, runs_match
from .test_pipeline_store import check_gallery_pages
from .test_reliability import _run_two, consistent, read_count


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="module")
def pg_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs it)")
        pytest.skip("PostgreSQL is not installed")
    folder = Path(tempfile.mkdtemp(prefix="reaper-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "reaper",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    opts = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c max_connections=50")
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://reaper@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _reset(url: str) -> None:
    engine = store.make_engine(url)
    store.SQLModel.metadata.drop_all(engine)
    engine.dispose()


def test_pipeline_round_trip_on_postgres(pg_url, spoc_file, hdf_file, tmp_path, capsys):
    _reset(pg_url)
    assert main(["ingest", "--db-url", pg_url, str(spoc_file), str(hdf_file)]) == 0
    assert main(["ingest", "--db-url", pg_url, str(hdf_file)]) == 0  # duplicate
    assert "1 duplicate" in capsys.readouterr().out
    engine = store.make_engine(pg_url)
    files, cutouts = consistent(engine)
    assert files == 2 and cutouts == read_count(spoc_file) + read_count(hdf_file)
    _m = current_model(engine)

    thr = save_threshold(engine, _m, "percentile", 95).threshold
    df = exported(engine)
    assert df.score.notna().all()
    assert abs(df.is_anomaly.mean() - 0.05) < 0.02 and thr > 0
    store.set_label(engine, int(df.cutout_id.iloc[0]), "interesting", "a note")
    assert main(["export", "--db-url", pg_url, "-o", str(tmp_path / "pg.csv")]) == 0
    # Labels on many cutouts at once (over one query's chunk of 500), and a fit that uses them.
    top = df.sort_values("score", ascending=False).cutout_id.astype(int).tolist()[:600]
    store.set_label(engine, top, "normal")
    assert store.labelled_ids(engine, "normal").tolist() == sorted(top)
    refit = fit_model(engine, Settings(db_url=pg_url))
    assert refit.n_normal == 600
    # The planner's statistics of the score table are taken again after the fit's bulk write
    # (stale ones made a page's queries take seconds after a re-fit at a million cutouts).
    with engine.connect() as conn:
        sampled = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'score'"))
        rows = conn.execute(text("SELECT count(*) FROM score")).scalar()
        assert sampled.scalar() == rows > 0
    assert exported(engine).set_index("cutout_id").loc[top, "score"].max() < 1e-9
    # The home page's counts, aggregated by PostgreSQL (the HDF has no sector: NULL sorts last).
    o = store.overview(engine, refit.id, refit.threshold)
    after = exported(engine)
    assert (o["files"], o["cutouts"], o["labelled"]) == (2, cutouts, 600)
    assert o["anomalies"] == int(refit.flags(after.score.to_numpy(float)).sum())
    assert len(o["per_file"]) == 2 and sum(o["per_file"].values()) == o["anomalies"]
    top = store.top_scored(engine, refit.id, refit.threshold, 5)
    want = after[after.score > refit.threshold].sort_values(["score", "cutout_id"],
                                                            ascending=[False, True]).head(5)
    assert [t["cutout_id"] for t in top] == want.cutout_id.tolist()
    assert len(store.model_scores(engine, refit.id)) == cutouts
    # Rows go in by COPY: every score comes back to the bit, and a second copy of one is the
    # IntegrityError SQLAlchemy's own statements raise (another writer stored it first).
    back = store.scores_of(engine, refit.id, after.cutout_id.astype(int).tolist())
    assert [back[c] for c in after.cutout_id.astype(int)] == after.score.tolist()
    with pytest.raises(IntegrityError):
        store.write_scores(engine, refit.id, [int(after.cutout_id.iloc[0])], np.array([0.5]))
    assert store.scores_of(engine, refit.id, [int(after.cutout_id.iloc[0])]) == {
        int(after.cutout_id.iloc[0]): after.score.iloc[0]}
    assert (df.segment > 0).mean() > 0.95
    # A database made before cutouts kept their segment gets the column when opened.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE cutout DROP COLUMN segment"))
        conn.execute(text("ALTER TABLE time_event DROP COLUMN lc_sigma"))
        conn.execute(text("ALTER TABLE time_event DROP COLUMN binned"))
    engine.dispose()
    engine = store.make_engine(pg_url)
    df = exported(engine)
    assert len(df) == cutouts and df.segment.isna().all()
    assert {"lc_sigma", "binned"} <= {
        c["name"] for c in inspect(engine).get_columns("time_event")}
    # A file removed on PostgreSQL: its rows go (labels too), the model is fitted anew.
    assert main(["remove", "--db-url", pg_url, hdf_file.name]) == 0
    assert "the model was fitted anew" in capsys.readouterr().out
    assert consistent(engine) == (1, read_count(spoc_file))
    with engine.connect() as conn:
        for table in ("embedding", "score", "label"):
            orphans = conn.execute(text(f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                                        "(SELECT 1 FROM cutout c WHERE c.id = t.cutout_id)"))
            assert orphans.scalar() == 0, table
    assert current_model(engine).row.n_train == read_count(spoc_file)
    engine.dispose()


def test_two_writers_on_postgres(pg_url, spoc_file, tica_file, hdf_file):
    _reset(pg_url)
    store.make_engine(pg_url)
    _run_two(pg_url, [str(spoc_file), str(hdf_file)], [str(tica_file), str(hdf_file)])
    engine = store.make_engine(pg_url)
    files, cutouts = consistent(engine)
    assert files == 3
    assert cutouts == sum(read_count(p) for p in (spoc_file, tica_file, hdf_file))
    assert runs_match(engine)  # a file's run of ids, where recorded, is exactly its cutouts


def test_settings_accept_postgres_url(pg_url, monkeypatch):
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", pg_url)
    from reaper_core.config import load_settings

    assert load_settings().db_url == pg_url


def test_gallery_pages_on_postgres(pg_url, spoc_file, hdf_file):
    """The gallery's ranked index, filters, pages and objects on PostgreSQL."""
    _reset(pg_url)
    engine = store.make_engine(pg_url)
    check_gallery_pages(engine, Settings(db_url=pg_url), [hdf_file, spoc_file])
    engine.dispose()


def test_discovery_on_postgres(pg_url, spoc_file, hdf_file, tmp_path, capsys):
    """Labels, re-ranking, the Discover queue, more like this and groups (with their words)
    on PostgreSQL give what they give on SQLite for the same files and labels, and persist: a
    new service on the same database ranks alike."""
    from reaper_core.service import Reaper

    _reset(pg_url)
    got = {}
    for name, url in (("postgres", pg_url), ("sqlite", f"sqlite:///{tmp_path / 'd.db'}")):
        reaper = Reaper(Settings(db_url=url, load_demo=0))
        assert all(r.status == "added" for r in reaper.ingest([spoc_file, hdf_file]).results)
        df = reaper.export_table().sort_values(["score", "cutout_id"], ascending=[False, True])
        key = {int(c): (f, round(x, 3), round(y, 3))
               for c, f, x, y in zip(df.cutout_id, df.file, df.x, df.y, strict=True)}
        ids = df.cutout_id.astype(int).tolist()
        reaper.label(ids[:5], "interesting")
        reaper.label(ids[200:205], "normal")
        reaper.label(ids[300:302], "artefact")
        again = Reaper(Settings(db_url=url, load_demo=0))  # labels and model persist
        r = again.reranked()
        assert np.array_equal(r["cutout_id"], reaper.reranked()["cutout_id"])
        groups = again.groups()
        words = again.group_reasons()
        assert words and set(words) == set(groups.values()) - {0}
        out = again.export_table().set_index("cutout_id")
        assert out["rerank_score"].between(0, 1).all()
        assert all(out.at[c, "group"] == g for c, g in groups.items())
        got[name] = {
            "reranked": [key[int(c)] for c in r["cutout_id"][:100]],
            "queue": [key[c] for c in again.discover_queue(n=24)],
            "similar": [key[c] for c, _ in again.similar(ids[0], 10)],
            "groups": sorted((key[c], g) for c, g in groups.items()),
            "words": words,
        }
        assert main(["groups", "--db-url", url]) == 0
        assert "    what they share: " in capsys.readouterr().out
        again.engine.dispose()
        reaper.engine.dispose()
    assert got["postgres"] == got["sqlite"]
