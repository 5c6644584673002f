"""The wheel ships the library AND the dashboard: built with uv, installed into a fresh virtual
environment, the installed `anomaly-reaper run` starts the dashboard from any folder, and stops
it when it is stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from reaper_app.server import free_port

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None and not os.environ.get("CI"),
                                reason="uv is not installed")


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/_stcore/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the built wheel installed (no editable install).

    The third-party dependencies come from the development environment through a path file,
    whose own .pth files (the editable install among them) Python does not process.
    """
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([UV, "build", "--wheel", "-o", str(work / "dist"), "-q", str(ROOT)],
                   check=True, timeout=300)
    wheel = next((work / "dist").glob("anomaly_reaper-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("reaper_core/service.py", "reaper_app/main.py",
                   "reaper_app/streamlit_config.toml", "reaper_app/app_pages/gallery.py"):
        assert needed in names, needed
    env = work / "venv"
    subprocess.run([UV, "venv", "-q", str(env), "--python", sys.executable], check=True)
    python = env / "bin" / "python"
    subprocess.run([UV, "pip", "install", "-q", "--offline", "--no-deps", "--python",
                    str(python), str(wheel)], check=True, timeout=300)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()
    deps = subprocess.run([sys.executable, "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()
    Path(site, "_dev_dependencies.pth").write_text(deps + "\n")
    return env


def test_installed_wheel_starts_the_dashboard_from_any_folder(venv, tmp_path):
    python = venv / "bin" / "python"
    env = dict(os.environ, ANOMALY_REAPER_HOME=str(tmp_path / "home"),
               ANOMALY_REAPER_LOAD_DEMO="0", PYTHONPATH="")
    # The packages come from the fresh environment, not from the checkout.
    where = subprocess.run(
        [str(python), "-c", "import reaper_app, reaper_core; print(reaper_app.__file__); "
                            "print(reaper_core.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where
    # The installed pages run (AppTest on the installed entry script).
    script = ("import reaper_app\n"
              "from streamlit.testing.v1 import AppTest\n"
              "at = AppTest.from_file(str(reaper_app.ENTRY), default_timeout=60).run()\n"
              "assert not at.exception, at.exception\n"
              "print('TITLE', at.title[0].value)\n")
    out = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "TITLE Anomaly Reaper" in out.stdout, out.stderr[-2000:]
    # `anomaly-reaper run` from the installed scripts, in a folder far from the checkout.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(venv / "bin" / "anomaly-reaper"), "run", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            if _healthy(base):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(proc.stdout.read().decode()[-2000:] if proc.poll() is not None
                                 else "the installed dashboard did not answer")
        with urllib.request.urlopen(base + "/", timeout=5) as r:
            assert r.status == 200
        # SIGTERM to the command stops the server it started: nothing is left listening.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
        time.sleep(0.5)
        assert not _healthy(base)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
