"""Ingest on Dask: a LocalCluster of two processes, and a real `dask scheduler` with two
`dask worker` processes on 127.0.0.1, one of them killed (SIGKILL) mid-run; on SQLite and on
the PostgreSQL server the tests start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reaper_app.server import free_port
from reaper_core import store
from reaper_core.cli import main
from reaper_core.config import Settings
from reaper_core.service import Reaper
from reaper_core.simulate import inject_anomalies, simulate_ffi, write_spoc

from .conftest import REAL_DATA
from .test_postgres import _reset, pg_url  # noqa: F401  (a fixture)
from .test_reliability import consistent, read_count

DASK = Path(sys.executable).with_name("dask")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    """Six simulated 512² SPOC frames (different skies) and one bad file, in one folder."""
    folder = tmp_path_factory.mktemp("frames")
    for i in range(6):
        sim = simulate_ffi(size=512, seed=100 + i, sector=3, camera=1, ccd=1 + i % 4)
        inject_anomalies(sim, n_per_kind=1, seed=200 + i)
        write_spoc(sim, folder / f"tess-s0003-1-{1 + i % 4}_{i}_ffic.fits")
    (folder / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    return sorted(folder.glob("*.fits"))


def _expected(frames: list[Path]) -> int:
    return sum(read_count(p) for p in frames if p.name != "broken.fits")


def test_local_cluster_ingests_a_folder_with_a_bad_file(frames, tmp_path):
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'c.db'}", load_demo=0))
    seen = []
    report = reaper.ingest([frames[0].parent], workers=2,
                           on_result=lambda i, n, r: seen.append((i, r.status)))
    by_name = {r.name: r for r in report.results}
    assert by_name["broken.fits"].status == "error"
    assert "broken.fits: is a damaged or truncated FITS file" in by_name["broken.fits"].message
    assert report.count("added") == 6 and report.fitted
    assert [r.name for r in report.results] == [p.name for p in frames]  # the files' order
    assert sorted(i for i, _ in seen) == list(range(7))
    files, cutouts = consistent(reaper.engine)
    assert files == 6 and cutouts == _expected(frames)
    # The same cutouts as in one process, and nothing twice when run again.
    one = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'one.db'}", load_demo=0))
    one.ingest([frames[0].parent])
    assert consistent(one.engine) == (files, cutouts)
    # The workers keep the frames' pixels: each file's preview is made there, the same.
    assert _previews(reaper.engine) == _previews(one.engine)
    again = reaper.ingest([frames[0].parent], workers=2)
    assert again.count("duplicate") == 6 and consistent(reaper.engine) == (files, cutouts)


def test_local_cluster_ingests_each_image_of_a_file(tmp_path):
    """A file of several images (the real HST file's three bands) on Dask: each image its own
    task and record, as in one process; again, each a duplicate."""
    hst = REAL_DATA / "other" / "hst_acs_goodsn_100px_astrocut.fits"
    if not hst.exists():
        pytest.skip("../shared/data/ is not beside the checkout")
    reaper = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'c.db'}", load_demo=0))
    report = reaper.ingest([hst], workers=1)
    assert [(r.name, r.status) for r in report.results] == [
        (f"{hst.name}[{n}]", "added") for n in (1, 2, 3)]
    one = Reaper(Settings(db_url=f"sqlite:///{tmp_path / 'one.db'}", load_demo=0))
    one.ingest([hst])
    assert consistent(one.engine) == consistent(reaper.engine) == (3, sum(
        r.n_cutouts for r in report.results))
    assert reaper.ingest([hst], workers=1).count("duplicate") == 3


def _previews(engine) -> dict[str, tuple[int, int, bytes]]:
    from sqlmodel import Session, select

    with Session(engine) as s:
        return {f.name: (f.ny, f.nx, f.preview_png) for f in s.exec(select(store.FitsFile))}


def test_a_worker_sends_no_frame_pixels(frames):
    from reaper_core.cluster import prepare_on_worker
    from reaper_core.files import sha256_file

    path = next(p for p in frames if p.name != "broken.fits")
    prep = prepare_on_worker(str(path), Settings(load_demo=0), path.name, sha256_file(path), None)
    assert prep.image.data.size == 0 and prep.patches.size == 0
    assert prep.image.shape == (512, 512) and prep.preview_png.startswith(b"\x89PNG")
    assert len(prep.patch_blobs) == len(prep.embeddings) > 0


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes (one thread each)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--dashboard-address", ":0"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    time.sleep(1.0)
    for _ in range(2):
        procs.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1",
                                       "--nworkers", "1", "--no-nanny", "--host", "127.0.0.1",
                                       "--dashboard-address", ":0"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    from distributed import Client

    with Client(address, timeout="60s") as c:
        c.wait_for_workers(2, timeout=120)
    yield address
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def _ingest_killing_a_worker(db_url: str, address: str, frames: list[Path]) -> tuple[int, str]:
    """Run `anomaly-reaper ingest --scheduler` as its own process; SIGKILL a worker as soon
    as it is computing a file; return the command's exit code and output."""
    from distributed import Client

    proc = subprocess.Popen([sys.executable, "-m", "reaper_core.cli", "ingest", "--db-url",
                             db_url, "--scheduler", address, str(frames[0].parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = False
    with Client(address, timeout="60s") as c:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline and proc.poll() is None:
            busy = [w for w, keys in c.processing().items() if keys]
            if busy:
                pid = c.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError("the ingest did not finish: " + out.decode()[-3000:]) from None
    assert killed, "no worker was ever busy"
    return proc.returncode, out.decode()


def test_scheduler_with_a_worker_killed_mid_run(frames, tmp_path, dask_cluster):
    db = f"sqlite:///{tmp_path / 's.db'}"
    # The killed worker's file runs again on the other: the bad file is the only failure.
    rc, out = _ingest_killing_a_worker(db, dask_cluster, frames)
    assert rc == 1
    assert "stored by" not in out  # SQLite: this process is the one writer
    engine = store.make_engine(db)
    files, cutouts = consistent(engine)
    assert files == 6 and cutouts == _expected(frames)
    names = [f.name for f in store.file_records(engine)]
    assert len(names) == len(set(names)) == 6


def test_scheduler_on_postgres(frames, dask_cluster, pg_url):  # noqa: F811
    _reset(pg_url)
    rc, out = _ingest_killing_a_worker(pg_url, dask_cluster, frames)
    assert rc == 1
    # A server database: the workers stored their own files, each in its own transaction.
    assert re.search(r"summary: 6 added, 0 duplicate, 1 failed \(stored by [12] workers?\)",
                     out), out[-2000:]
    engine = store.make_engine(pg_url)
    files, cutouts = consistent(engine)
    assert files == 6 and cutouts == _expected(frames)
    engine.dispose()
    _reset(pg_url)
    # The worker that ran files set its allocator to keep freed memory for the next one.
    from distributed import Client

    with Client(dask_cluster, timeout="30s") as c:
        kept = c.run(lambda: sys.modules["reaper_core.parallel"]._allocator_kept[0]
                     if "reaper_core.parallel" in sys.modules else None)
    assert True in kept.values(), kept


def test_compute_processes_keep_freed_memory():
    """Under Dask's MALLOC_TRIM_THRESHOLD_ (every freed array handed back to the kernel), the
    compute stages set glibc's thresholds themselves, once per process."""
    code = ("from reaper_core.parallel import keep_freed_memory as k, _allocator_kept as a; "
            "print(a[0], k(), k())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536"), check=True)
    assert out.stdout.split() == ["None", "True", "True"]


def test_local_cluster_workers_store_on_postgres(frames, pg_url):  # noqa: F811
    """On PostgreSQL each worker stores its own files; the same rows as one process, and a
    second run adds nothing."""
    _reset(pg_url)
    reaper = Reaper(Settings(db_url=pg_url, load_demo=0))
    report = reaper.ingest([frames[0].parent], workers=2)
    added = [r for r in report.results if r.status == "added"]
    assert len(added) == 6 and report.fitted
    assert all(r.stored_on and r.stored_on.startswith("tcp://") for r in added)
    assert consistent(reaper.engine) == (6, _expected(frames))
    again = reaper.ingest([frames[0].parent], workers=2)
    assert again.count("duplicate") == 6 and consistent(reaper.engine) == (6, _expected(frames))
    reaper.engine.dispose()
    _reset(pg_url)


def test_a_bad_scheduler_setting_is_one_sentence(tmp_path, capsys, frames):
    assert main(["ingest", "--db-url", f"sqlite:///{tmp_path / 'x.db'}", "--scheduler",
                 "localhost:8786", str(frames[0])]) == 2
    assert "scheduler must be a Dask scheduler address" in capsys.readouterr().err


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_fit_scores_every_cutout_on_the_cluster(frames, tmp_path, monkeypatch, db,
                                                  pg_url):  # noqa: F811
    """Above the fit's sample, the scoring of every cutout runs on the workers, one id range a
    task, and gives the scores one process gives."""
    from reaper_core import models

    url = f"sqlite:///{tmp_path / 'f.db'}" if db == "sqlite" else pg_url
    if db == "postgresql":
        _reset(pg_url)
    reaper = Reaper(Settings(db_url=url, load_demo=0))
    reaper.ingest(frames[:3])
    monkeypatch.setattr(models, "FIT_SAMPLE", 400)
    here = reaper.fit()
    said: list[str] = []
    there = reaper.fit(workers=2, progress=lambda stage, f, message: said.append(message))
    assert there.id != here.id and there.row.n_train == here.row.n_train < 1000
    assert any(m == "scoring every cutout on 2 Dask workers" for m in said), said
    ids = store.load_embeddings(reaper.engine, here.embedder)[0].tolist()
    a = store.scores_of(reaper.engine, here.id, ids)
    b = store.scores_of(reaper.engine, there.id, ids)
    assert len(a) == consistent(reaper.engine)[1] and a.keys() == b.keys()
    assert np.allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-9, atol=0)
    assert there.threshold == pytest.approx(here.threshold, rel=1e-9)
    if db == "sqlite":  # the command line's way
        assert main(["fit", "--db-url", url, "--workers", "2"]) == 0
        assert reaper.model().id > there.id
    reaper.engine.dispose()
    if db == "postgresql":
        _reset(pg_url)
