"""How fast the first hour starts: the dashboard's first paint on an empty folder (the demo then
loads in the background), the command line's start, and opening a cutout's detail.

    uv run python benchmarks/startup.py [--repeat 3]

Drives Debian's chromium (``/usr/bin/chromium``) through Playwright against a dashboard started
from a fresh, empty data folder, exactly as the README's first command does. Prints one table:
each measure, its median over ``--repeat`` tries, the time before this work (from the issue
that asked for it) and the target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, table

from reaper_app.server import start_dashboard, stop_dashboard

CHROMIUM = "/usr/bin/chromium"
#: Before this work (issue "The first hour of a new user"), seconds.
BEFORE = {"first paint": "11 (blank page)", "demo loaded": "20–40 (blocking)",
          "anomaly-reaper --help": "0.2", "anomaly-reaper score --top 20": "4–12",
          "anomaly-reaper export": "4–12", "anomaly-reaper label": "4–12",
          "detail opens": "5–6"}
TARGET = {"first paint": "≤ 2", "demo loaded": "in the background",
          "anomaly-reaper --help": "≤ 1.5", "anomaly-reaper score --top 20": "≤ 1.5",
          "anomaly-reaper export": "≤ 1.5", "anomaly-reaper label": "≤ 1.5",
          "detail opens": "≤ 1"}


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True,
                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])


def first_paint(env: dict[str, str], browser) -> tuple[float, float]:
    """(seconds from the server's first answer to the title on screen, seconds until the
    background demo load has finished and the page shows its files)."""
    proc, base = start_dashboard(env, cwd=ROOT)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        t0 = time.perf_counter()
        page.goto(base)
        page.get_by_role("heading", name="Anomaly Reaper").first.wait_for(timeout=60_000)
        paint = time.perf_counter() - t0
        page.get_by_text("Loading the demo data in the background").first.wait_for(
            timeout=30_000, state="visible")
        page.get_by_text("Loading the demo data in the background").first.wait_for(
            timeout=300_000, state="detached")
        demo = time.perf_counter() - t0
        page.close()
        return paint, demo
    finally:
        stop_dashboard(proc)


def detail_open(env: dict[str, str], browser, repeat: int) -> list[float]:
    """Seconds from a click on a gallery tile's "details" to the detail's heading, per try."""
    proc, base = start_dashboard(env, cwd=ROOT)
    times = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/gallery")
        page.get_by_role("button", name="details").first.wait_for(timeout=120_000)
        for i in range(repeat + 1):  # the first opening warms caches; it is not counted
            buttons = page.get_by_role("button", name="details")
            t0 = time.perf_counter()
            buttons.nth(i).click()
            page.get_by_text("Close detail").wait_for(timeout=60_000)
            page.get_by_role("heading", name="Cutout #").first.wait_for(timeout=60_000)
            if i:
                times.append(time.perf_counter() - t0)
            page.get_by_role("button", name="Close detail").click()
            page.get_by_text("Close detail").wait_for(state="detached", timeout=60_000)
        page.close()
    finally:
        stop_dashboard(proc)
    return times


def cli_times(env: dict[str, str], folder: Path, repeat: int) -> dict[str, list[float]]:
    """Seconds of each light command, start to exit, per try."""
    exe = [sys.executable, "-m", "reaper_core.cli"]
    commands = {
        "anomaly-reaper --help": ["--help"],
        "anomaly-reaper score --top 20": ["score", "--top", "20"],
        "anomaly-reaper export": ["export", "-o", str(folder / "export.csv")],
        "anomaly-reaper label": ["label", "1", "--as", "interesting"],
    }
    out: dict[str, list[float]] = {}
    for name, args in commands.items():
        out[name] = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(exe + args, env=env, cwd=folder, check=True, capture_output=True)
            out[name].append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d, sync_playwright() as p:
        folder = Path(d)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_REAPER_")}
        env["ANOMALY_REAPER_HOME"] = str(folder / "data")
        browser = _launch(p)
        paint, demo = first_paint(env, browser)
        measured = {"first paint": [paint], "demo loaded": [demo]}
        measured |= cli_times(env, folder, args.repeat)
        measured["detail opens"] = detail_open(env, browser, args.repeat)
        browser.close()
    rows = [{"measure": k, "median s": statistics.median(v), "tries": len(v),
             "before s": BEFORE[k], "target s": TARGET[k]} for k, v in measured.items()]
    print(table(rows, f"Start-up ({machine()})"))


if __name__ == "__main__":
    main()
