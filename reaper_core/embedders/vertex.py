"""Google Vertex AI ``multimodalembedding@001`` embedder (google-cloud-aiplatform SDK).

Patches are stretched to 8-bit PNG and sent one per request (the service does not batch).
Every call has a timeout; quota (429), server (5xx) and timeout errors are retried with
exponential backoff and jitter; requests are paced to a configured rate with a configured number
in flight; and every embedding is cached on disk, keyed by the PNG's hash, the model and the
dimension, so nothing is embedded twice and an interrupted run resumes where it stopped.

Production uses application-default credentials. Tests point ``api_endpoint`` at a local fake
of the REST API (``http://127.0.0.1:PORT``) with anonymous credentials.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EmbeddingError
from .base import Embedder, EmbedProgressFn

MODEL_NAME = "multimodalembedding@001"
DIMENSIONS = (128, 256, 512, 1408)


class _RateLimiter:
    """Spaces calls at least ``60 / per_minute`` seconds apart across threads."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class EmbeddingCache:
    """On-disk cache of embeddings: one ``.npy`` per key (loaded without pickle)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, key: str, vector: np.ndarray) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        tmp.replace(p)


def _retryable(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    if isinstance(exc, (gexc.ResourceExhausted, gexc.ServiceUnavailable, gexc.InternalServerError,
                        gexc.DeadlineExceeded, gexc.BadGateway, gexc.GatewayTimeout,
                        gexc.TooManyRequests)):
        return True
    name = type(exc).__name__
    return name in ("Timeout", "ReadTimeout", "ConnectTimeout", "ConnectionError",
                    "TimeoutError", "RemoteDisconnected")


class VertexEmbedder(Embedder):
    """Embeddings from Vertex AI's multimodal embedding model.

    Parameters
    ----------
    project, location : str
        Google Cloud project and region.
    dimension : {128, 256, 512, 1408}
    api_endpoint : str, optional
        Override the service endpoint (e.g. ``http://127.0.0.1:8080`` for a local fake).
    credentials : google.auth.credentials.Credentials, optional
        Default: application-default credentials.
    timeout_s : float
        Timeout of one request, seconds.
    max_retries : int
        Retries of a retryable failure before giving up.
    requests_per_minute : float
        Pace of requests (the service's quota is per project per minute).
    concurrency : int
        Requests in flight at once.
    cache_dir : str or Path, optional
        On-disk cache folder; no cache when None.
    upscale : int
        Nearest-neighbour enlargement of each patch before PNG encoding.
    stretch : str
        Display stretch used to make the 8-bit image.
    backoff_s : float
        First retry delay, seconds; doubled each retry, with jitter.
    """

    per_patch = False  # one request per batch, a cache on disk: embedded in one call

    name = "vertex"

    def __init__(self, project: str, location: str = "us-central1", dimension: int = 1408, *,
                 api_endpoint: str | None = None, credentials: Any = None,
                 timeout_s: float = 30.0, max_retries: int = 5,
                 requests_per_minute: float = 120.0, concurrency: int = 4,
                 cache_dir: str | Path | None = None, upscale: int = 4, stretch: str = "asinh",
                 backoff_s: float = 1.0) -> None:
        if not project:
            raise ConfigError("the vertex embedder needs a Google Cloud project "
                              "(set vertex_project or ANOMALY_REAPER_VERTEX_PROJECT)")
        if dimension not in DIMENSIONS:
            raise ConfigError(f"vertex dimension must be one of {DIMENSIONS}")
        self.project, self.location, self.dimension = project, location, int(dimension)
        self.api_endpoint, self.credentials = api_endpoint or None, credentials
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.concurrency = max(1, int(concurrency))
        self.upscale, self.stretch, self.backoff_s = upscale, stretch, backoff_s
        self.cache = EmbeddingCache(cache_dir) if cache_dir else None
        self._limiter = _RateLimiter(requests_per_minute)
        self._model = None
        self._lock = threading.Lock()
        self.calls = 0  # requests sent, for tests and benchmarks

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> VertexEmbedder:
        """Build from :class:`~reaper_core.config.Settings`; ``overrides`` win."""
        if settings is None:
            from ..config import load_settings

            settings = load_settings()
        kw = dict(
            project=settings.vertex_project, location=settings.vertex_location,
            dimension=settings.vertex_dimension, api_endpoint=settings.vertex_endpoint or None,
            timeout_s=settings.vertex_timeout_s, max_retries=settings.vertex_max_retries,
            requests_per_minute=settings.vertex_requests_per_minute,
            concurrency=settings.vertex_concurrency,
            cache_dir=Path(settings.cache_dir) / "vertex",
        )
        kw.update(overrides)
        return cls(**kw)

    @property
    def dim(self) -> int:
        return self.dimension

    def _get_model(self):
        with self._lock:
            if self._model is None:
                import vertexai
                from vertexai.vision_models import MultiModalEmbeddingModel

                kwargs: dict[str, Any] = {"project": self.project, "location": self.location}
                if self.api_endpoint:
                    kwargs["api_endpoint"] = self.api_endpoint
                    kwargs["api_transport"] = "rest"
                if self.credentials is not None:
                    kwargs["credentials"] = self.credentials
                vertexai.init(**kwargs)
                model = self._call(lambda: MultiModalEmbeddingModel.from_pretrained(MODEL_NAME),
                                   "model lookup")
                # The SDK's predict has no default timeout; give every request one.
                endpoint = model._endpoint
                predict = endpoint.predict

                def predict_with_timeout(*args: Any, **kw: Any):
                    kw.setdefault("timeout", self.timeout_s)
                    return predict(*args, **kw)

                endpoint.predict = predict_with_timeout
                self._model = model
            return self._model

    def _call(self, fn, what: str):
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except Exception as exc:
                if not _retryable(exc) or attempt == self.max_retries:
                    msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise EmbeddingError(
                        f"Vertex AI {what} failed{tries}: {type(exc).__name__}: {msg}"
                    ) from exc
                time.sleep(delay * (1 + 0.25 * random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    def key(self, png: bytes) -> str:
        """Cache key of one PNG for this model and dimension."""
        return hashlib.sha256(png + f"|{MODEL_NAME}|{self.dimension}".encode()).hexdigest()

    def _embed_png(self, png: bytes) -> np.ndarray:
        from vertexai.vision_models import Image

        model = self._get_model()

        def once() -> np.ndarray:
            self._limiter.wait()
            self.calls += 1
            resp = model.get_embeddings(image=Image(image_bytes=png), dimension=self.dimension)
            vec = resp.image_embedding
            if not isinstance(vec, list) or len(vec) != self.dimension:
                got = len(vec) if isinstance(vec, list) else type(vec).__name__
                raise EmbeddingError(
                    f"Vertex AI returned a malformed embedding (expected {self.dimension} "
                    f"numbers, got {got})")
            arr = np.asarray(vec, dtype=np.float32)
            if not np.isfinite(arr).all():
                raise EmbeddingError("Vertex AI returned non-finite numbers in an embedding")
            return arr

        try:
            return self._call(once, "embedding request")
        except EmbeddingError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise EmbeddingError(f"Vertex AI returned a malformed reply ({exc})") from None

    def embed(self, patches: np.ndarray, progress: EmbedProgressFn | None = None) -> np.ndarray:
        n = len(patches)
        out = np.zeros((n, self.dimension), np.float32)
        from ..cutouts import to_png

        pngs = [to_png(p, self.stretch, self.upscale) for p in patches]
        keys = [self.key(b) for b in pngs]
        todo = []
        for i, k in enumerate(keys):
            cached = self.cache.get(k) if self.cache else None
            if cached is not None and cached.shape == (self.dimension,):
                out[i] = cached
            else:
                todo.append(i)
        done = n - len(todo)
        if progress:
            progress(done, n)
        if not todo:
            return out

        def work(i: int) -> tuple[int, np.ndarray]:
            vec = self._embed_png(pngs[i])
            if self.cache:
                self.cache.put(keys[i], vec)
            return i, vec

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(work, i) for i in todo]
            try:
                for fut in futures:
                    i, vec = fut.result()
                    out[i] = vec
                    done += 1
                    if progress:
                        progress(done, n)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out
