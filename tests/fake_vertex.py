"""A local fake of the Vertex AI REST endpoint for ``multimodalembedding@001``.

It serves the model lookup (``GET .../publishers/google/models/multimodalembedding@001``) and
``POST ...:predict``, returning a deterministic embedding derived from the image bytes, and can be
told to misbehave (delay, 429, 500, malformed replies) to test the client's retries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import numpy as np


def embedding_for(image_bytes: bytes, dim: int) -> list[float]:
    """Deterministic unit vector from the image bytes (what the fake returns)."""
    seed = int.from_bytes(hashlib.sha256(image_bytes).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=dim)
    return (v / np.linalg.norm(v)).tolist()


class FakeVertex:
    """Run with ``with FakeVertex() as fake: fake.url``; ``fake.faults`` is a list of actions
    consumed one per predict call: ``"429"``, ``"500"``, ``"400"``, ``"malformed"``, ``"short"``,
    ``("sleep", seconds)``."""

    def __init__(self) -> None:
        self.faults: list = []
        self.predict_calls = 0
        self.lookup_calls = 0
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict | str) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = unquote(urlparse(self.path).path)
                if "/publishers/google/models/multimodalembedding" in path:
                    with fake._lock:
                        fake.lookup_calls += 1
                    self._send(200, {
                        "name": "publishers/google/models/multimodalembedding@001",
                        "versionId": "001",
                        "openSourceCategory": "PROPRIETARY",
                        "launchStage": "GA",
                        "publisherModelTemplate":
                            "projects/{project}/locations/{location}/publishers/google/"
                            "models/multimodalembedding@001",
                        "predictSchemata": {
                            "instanceSchemaUri": "gs://google-cloud-aiplatform/schema/predict/"
                                                 "instance/vision_embedding_model_1.0.0.yaml"},
                    })
                else:
                    self._send(404, {"error": {"code": 404, "message": "not found",
                                               "status": "NOT_FOUND"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                path = unquote(urlparse(self.path).path)
                if not path.endswith(":predict"):
                    return self._send(404, {"error": {"code": 404, "message": "no such method"}})
                with fake._lock:
                    fake.predict_calls += 1
                    fake.requests.append(body)
                    fault = fake.faults.pop(0) if fake.faults else None
                if isinstance(fault, tuple) and fault[0] == "sleep":
                    time.sleep(fault[1])
                elif fault == "429":
                    return self._send(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                                      "message": "Quota exceeded"}})
                elif fault == "500":
                    return self._send(500, {"error": {"code": 500, "status": "INTERNAL",
                                                      "message": "internal error"}})
                elif fault == "400":
                    return self._send(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                      "message": "bad image"}})
                elif fault == "malformed":
                    return self._send(200, {"predictions": [{"imageEmbedding": "oops"}]})
                elif fault == "garbage":
                    return self._send(200, "this is not json")
                dim = int(float(body.get("parameters", {}).get("dimension", 1408)))
                image = base64.b64decode(body["instances"][0]["image"]["bytesBase64Encoded"])
                vec = embedding_for(image, dim)
                if fault == "short":
                    vec = vec[:10]
                self._send(200, {"predictions": [{"imageEmbedding": vec}],
                                 "deployedModelId": "fake"})

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that timed out
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeVertex:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
