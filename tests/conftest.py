"""Shared fixtures: real pixels (Hubble Deep Field) and small TESS-like simulated FFIs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from reaper_core.config import Settings
from reaper_core.demo import write_hubble_fits
from reaper_core.export import export_table
from reaper_core.ingest import ingest_many
from reaper_core.models import current_model
from reaper_core.simulate import inject_anomalies, simulate_ffi, write_spoc, write_tica
from reaper_core.store import make_engine

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: The real files beside the checkout (``../shared/data/``, see its README).
REAL_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
REAL_SPOC = REAL_DATA / "tess" / "tess2018206192942-s0001-1-4-0120-s_ffic.fits"
REAL_CUBE = REAL_DATA / "tess" / "tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own data folder; nothing leaks from the developer's config."""
    home = tmp_path / "home"
    monkeypatch.setenv("ANOMALY_REAPER_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("ANOMALY_REAPER_") and key != "ANOMALY_REAPER_HOME":
            monkeypatch.delenv(key)
    yield


@pytest.fixture(scope="session")
def fits_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fits")


@pytest.fixture(scope="session")
def sim_small():
    """A 512 × 512 simulated TESS frame with two of each anomaly kind."""
    sim = simulate_ffi(size=512, seed=3, sector=7, camera=2, ccd=3)
    inject_anomalies(sim, n_per_kind=2, seed=5)
    return sim


@pytest.fixture(scope="session")
def spoc_file(fits_dir, sim_small) -> Path:
    return write_spoc(sim_small, fits_dir / "tess-s0007-2-3_ffic.fits")


@pytest.fixture(scope="session")
def tica_file(fits_dir, sim_small) -> Path:
    return write_tica(sim_small, fits_dir / "tess-s0007-2-3_tica.fits")


@pytest.fixture(scope="session")
def hdf_file(fits_dir) -> Path:
    return write_hubble_fits(fits_dir / "hubble_deep_field.fits")


@pytest.fixture(scope="session")
def full_spoc_file(fits_dir) -> Path:
    """A full-size (2078 × 2136, collateral included) simulated SPOC FFI."""
    sim = simulate_ffi(seed=11, sector=42, camera=1, ccd=1)
    inject_anomalies(sim, n_per_kind=3, seed=12)
    return write_spoc(sim, fits_dir / "tess-s0042-1-1_ffic.fits")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(db_url=f"sqlite:///{tmp_path / 'reaper.db'}")


@pytest.fixture
def engine(settings):
    eng = make_engine(settings.db_url)
    yield eng
    eng.dispose()


def ingested_db(folder: Path, files: list[Path]) -> str:
    """A SQLite database in ``folder`` with ``files`` ingested and a model fitted; its URL."""
    url = f"sqlite:///{folder / 'reaper.db'}"
    eng = make_engine(url)
    ingest_many(eng, files, Settings(db_url=url, uploads_dir=str(folder / "uploads")))
    eng.dispose()
    return url


def exported(engine):
    """The export table under the current model (what `anomaly-reaper export` writes)."""
    return export_table(engine, current_model(engine))


def runs_match(engine) -> bool:
    """Whether every file with a run of cutout ids holds exactly the cutouts of that run."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT f.first_cutout_id, f.n_cutouts, min(c.id), max(c.id), count(*) "
            "FROM fits_file f JOIN cutout c ON c.file_id = f.id "
            "WHERE f.first_cutout_id IS NOT NULL GROUP BY f.id")).all()
    return bool(rows) and all(first == lo and lo + n - 1 == hi and cnt == n
                              for first, n, lo, hi, cnt in rows)


def older_features(engine, more: int = 4) -> int:
    """Make ``engine``'s database look written by a version whose embedder gave ``more``
    features: every stored vector ``more`` zeros longer, the model's feature count as many
    more. Returns how many vectors."""
    import json

    import numpy as np
    from sqlalchemy import text

    from reaper_core import store

    rows = [(i, v) for ids, X in store.iter_embeddings(engine, Settings().embedder)
            for i, v in zip(ids, X, strict=True)]
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE embedding SET vector = ? WHERE cutout_id = ?", [
            (np.append(v, np.zeros(more, np.float32)).tobytes(), int(i)) for i, v in rows])
        for mid, meta in conn.execute(text("SELECT id, meta_json FROM detector_model")).all():
            meta = json.loads(meta)
            meta["n_features_in_"] += more
            conn.execute(text("UPDATE detector_model SET meta_json = :m WHERE id = :i"),
                         {"m": json.dumps(meta), "i": mid})
    return len(rows)
