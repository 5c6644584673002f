"""The Vertex AI backend, through the real SDK, against a local fake of the REST endpoint."""

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials

from reaper_core.cutouts import to_png
from reaper_core.embedders.vertex import VertexEmbedder
from reaper_core.errors import ConfigError, EmbeddingError
from reaper_core.ingest import ingest_many
from reaper_core.models import current_model

from .fake_vertex import FakeVertex, embedding_for


@pytest.fixture
def fake():
    with FakeVertex() as f:
        yield f


@pytest.fixture
def patches():
    rng = np.random.default_rng(0)
    return rng.normal(100, 5, (6, 32, 32)).astype(np.float32)


def make(fake, tmp_path, **kw):
    args = dict(project="test-project", location="us-central1", dimension=256,
                api_endpoint=fake.url, credentials=AnonymousCredentials(), timeout_s=5,
                max_retries=3, requests_per_minute=0, concurrency=2,
                cache_dir=tmp_path / "cache", backoff_s=0.01)
    args.update(kw)
    return VertexEmbedder(**args)


def test_embeds_through_sdk_and_caches(fake, tmp_path, patches):
    emb = make(fake, tmp_path)
    X = emb.embed(patches)
    assert X.shape == (6, 256) and emb.dim == 256
    assert fake.lookup_calls >= 1 and fake.predict_calls == 6
    # The request is what the SDK sends: one base64 PNG, dimension as a parameter.
    req = fake.requests[0]
    assert float(req["parameters"]["dimension"]) == 256.0
    assert len(req["instances"]) == 1 and "bytesBase64Encoded" in req["instances"][0]["image"]
    png = to_png(patches[0], "asinh", 4)
    np.testing.assert_allclose(X[0], embedding_for(png, 256), rtol=1e-6)
    # A second run (new embedder, same cache) sends nothing.
    again = make(fake, tmp_path).embed(patches)
    np.testing.assert_array_equal(again, X)
    assert fake.predict_calls == 6


def test_retries_quota_and_server_errors(fake, tmp_path, patches):
    fake.faults = ["429", "500", "429"]
    X = make(fake, tmp_path, concurrency=1).embed(patches[:2])
    assert X.shape == (2, 256) and fake.predict_calls == 5


def test_gives_up_after_retries_with_clear_error(fake, tmp_path, patches):
    fake.faults = ["429"] * 10
    with pytest.raises(EmbeddingError, match=r"after 4 attempts.*(ResourceExhausted|429)"):
        make(fake, tmp_path, concurrency=1).embed(patches[:1])


def test_client_errors_and_malformed_replies_are_not_retried(fake, tmp_path, patches):
    fake.faults = ["400"]
    with pytest.raises(EmbeddingError, match=r"InvalidArgument|400"):
        make(fake, tmp_path, concurrency=1).embed(patches[:1])
    assert fake.predict_calls == 1
    fake.faults = ["malformed"]
    with pytest.raises(EmbeddingError, match="malformed"):
        make(fake, tmp_path, concurrency=1).embed(patches[1:2])
    fake.faults = ["short"]
    with pytest.raises(EmbeddingError, match="expected 256 numbers, got 10"):
        make(fake, tmp_path, concurrency=1).embed(patches[2:3])


def test_non_json_reply_is_a_clear_error(fake, tmp_path, patches):
    fake.faults = ["garbage"]
    with pytest.raises(EmbeddingError, match="Vertex AI embedding request failed"):
        make(fake, tmp_path, concurrency=1).embed(patches[:1])


def test_timeout_is_enforced_and_retried(fake, tmp_path, patches):
    fake.faults = [("sleep", 3.0)]
    emb = make(fake, tmp_path, concurrency=1, timeout_s=0.5)
    X = emb.embed(patches[:1])
    assert X.shape == (1, 256) and fake.predict_calls == 2


def test_partial_run_resumes_from_cache(fake, tmp_path, patches):
    fake.faults = [None, None, "400"]
    with pytest.raises(EmbeddingError):
        make(fake, tmp_path, concurrency=1).embed(patches)
    cached = len(list((tmp_path / "cache").rglob("*.npy")))
    assert cached >= 2
    sent = fake.predict_calls
    X = make(fake, tmp_path, concurrency=1).embed(patches)
    assert X.shape == (6, 256)
    assert fake.predict_calls - sent == 6 - cached  # only the ones not cached before


def test_needs_a_project():
    with pytest.raises(ConfigError, match="project"):
        VertexEmbedder(project="")


def test_ingest_with_vertex_embedder(fake, tmp_path, hdf_file, monkeypatch):
    from reaper_core import embedders
    from reaper_core.config import Settings
    from reaper_core.store import make_engine

    settings = Settings(db_url=f"sqlite:///{tmp_path / 'v.db'}", embedder="vertex",
                        vertex_project="p", vertex_endpoint=fake.url, vertex_dimension=128,
                        vertex_requests_per_minute=0, source_method="grid", patch_size=128)
    monkeypatch.setitem(embedders.EMBEDDERS, "vertex", lambda settings=None, **kw: VertexEmbedder
                        .from_settings(settings, credentials=AnonymousCredentials()))
    engine = make_engine(settings.db_url)
    report = ingest_many(engine, [hdf_file], settings)
    assert report.results[0].status == "added", report.results[0].message
    _m = current_model(engine)
    row, det = _m.row, _m.detector
    assert row.embedder == "vertex" and det.n_features_in_ == 128
    assert fake.predict_calls == report.results[0].n_cutouts == (872 // 128) * (1000 // 128)
