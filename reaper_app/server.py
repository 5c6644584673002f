"""Start the dashboard as a child process and wait until it answers (for scripts, benchmarks
and tests that drive it from a browser)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(env: dict[str, str], cwd: str | Path | None = None, port: int | None = None,
                    timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Run ``anomaly-reaper run`` on 127.0.0.1 with ``env`` and wait for its health check.

    Returns (process, base URL). The process leads its own session: stop it with
    :func:`stop_dashboard`. Raises RuntimeError, with the server's last output, when it does
    not answer within ``timeout_s`` seconds.
    """
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reaper_core.cli", "run", "--port", str(port)], cwd=cwd,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    stop_dashboard(proc)
    raise RuntimeError("the dashboard did not start: " + proc.stdout.read().decode()[-2000:])


def stop_dashboard(proc: subprocess.Popen) -> None:
    """Stop a dashboard started by :func:`start_dashboard` (SIGTERM to its session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
