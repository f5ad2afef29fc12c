"""Open notebooks in JupyterLab in a real browser and report what a reader would trip over.

Starts JupyterLab on the project, opens each notebook in Debian's Chromium (driven by Playwright) in a 1600 x 1000
window with the default layout (file browser open), and reports for each: whether opening it marked it modified,
and every output table wider than the room its output area has. Screenshots of each notebook, top to bottom, go
to --out. Not part of `make test`: it needs a browser, which a fresh machine does not have.

    apt install chromium        # /usr/bin/chromium
    pip install playwright      # the driver only: it runs the Chromium above, downloads none
    python tools/lab_check.py results/notebooks/*.ipynb --out /tmp/lab

Prints one JSON object per notebook; exits 1 when a notebook was modified by opening or a table does not fit.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1600, 1000

MEASURE = """() => {
    const panel = document.querySelector('.jp-NotebookPanel');
    const tables = [...panel.querySelectorAll('.jp-OutputArea-output table')];
    return {
        dirty: document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length,
        file_browser_open: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)'),
        images: panel.querySelectorAll('.jp-OutputArea-output img').length,
        tables: tables.map(t => ({
            columns: t.querySelectorAll('thead th').length,
            width: Math.round(t.getBoundingClientRect().width),
            room: t.closest('.jp-OutputArea-output').clientWidth,
            first: t.querySelector('thead') ? t.querySelector('thead').innerText.replace(/\\s+/g, ' ').slice(0, 60) : '',
        })),
    };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str, settings: Path, log) -> subprocess.Popen:
    # every cell rendered (no windowing), so that every table can be measured without scrolling to it
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
                            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={settings}"],
                           stdout=log, stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            time.sleep(1)
    lab.terminate()
    raise SystemExit(f"JupyterLab did not start on port {port}; see its log")


def check(notebooks: list[Path], out: Path, browser_path: str) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    reports = []
    with tempfile.TemporaryDirectory() as settings, open(out / "jupyterlab.log", "w") as log:
        lab = start_lab(port, token, Path(settings), log)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                for notebook in notebooks:
                    relative = notebook.resolve().relative_to(ROOT).as_posix()
                    before = notebook.read_bytes()
                    page.goto(f"http://127.0.0.1:{port}/lab/tree/{relative}?reset&token={token}")
                    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
                    page.wait_for_timeout(4000)  # outputs, images and the kernel's start
                    report = {"notebook": relative, **page.evaluate(MEASURE)}
                    report["too_wide"] = [t for t in report["tables"] if t["width"] > t["room"]]
                    shots = _screenshots(page, out / notebook.stem)
                    report["screenshots"] = [str(s) for s in shots]
                    report["file_unchanged"] = notebook.read_bytes() == before
                    reports.append(report)
                    print(json.dumps({k: v for k, v in report.items() if k != "tables"}), flush=True)
                browser.close()
        finally:
            lab.terminate()
            lab.wait(timeout=30)
    return reports


def _screenshots(page, stem: Path) -> list[Path]:
    """The notebook from top to bottom, one window-height at a time."""
    scroller = ".jp-NotebookPanel .jp-WindowedPanel-outer"
    height = page.evaluate(f"() => document.querySelector('{scroller}').scrollHeight")
    view = page.evaluate(f"() => document.querySelector('{scroller}').clientHeight")
    shots = []
    for k, top in enumerate(range(0, max(height, 1), max(view - 100, 1))):
        page.evaluate(f"() => {{ document.querySelector('{scroller}').scrollTop = {top}; }}")
        page.wait_for_timeout(300)
        path = stem.parent / f"{stem.name}-{k:02d}.png"
        page.screenshot(path=str(path))
        shots.append(path)
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lab_check")
    parser.add_argument("--browser", default="/usr/bin/chromium", help="the Chromium executable")
    args = parser.parse_args(argv)
    missing = [str(n) for n in args.notebooks if not n.is_file()]
    if missing:
        parser.error(f"not a notebook file: {', '.join(missing)}")
    reports = check(args.notebooks, args.out, args.browser)
    bad = [r for r in reports if r["too_wide"] or r["dirty"] or not r["file_unchanged"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
