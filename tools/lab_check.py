"""Open notebooks and the claims report in JupyterLab in a real browser and report what a reader would trip over.

Starts JupyterLab on the project and drives Debian's Chromium (through Playwright) in a 1600 x 1000 window with the
default layout (file browser open). Checks, each a field of the JSON it prints:

- every notebook given: opening it leaves it unmodified, no output table is wider than its output area, and the
  first verdict line (under `Verdicts at the ... profile`, or the first row of the verdict counts in 99) is whole
  on the first screen;
- `--report results/REPORT.md`: in JupyterLab's Markdown preview, no cell of an "ours" column wraps;
- `--run-all notebooks/01_layer_sweep.ipynb`: Run All (at the profile its parameters cell names, ci), then save,
  close and reopen: no cell raised, no "Error displaying widget" on reopening, and `git status` of the checkout
  and the notebook's bytes are what they were before.

Screenshots go to --out. Not part of `make test`: it needs a browser, which a fresh machine does not have.

    apt install chromium        # /usr/bin/chromium
    pip install playwright      # the driver only: it runs the Chromium above, downloads none
    python tools/lab_check.py results/notebooks/*.ipynb --report results/REPORT.md \\
        --run-all notebooks/01_layer_sweep.ipynb --out /tmp/lab

Prints one JSON object per check; exits 1 when any check found a problem (`problems` in its object).
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
SCROLLER = ".jp-NotebookPanel .jp-WindowedPanel-outer"
# The first output a reader must see: a notebook's verdict summary, or the report notebook's verdict counts.
VERDICT_MARK = r"/^(Verdicts at the|profile\s+supported)/"

MEASURE = """() => {
    const panel = document.querySelector('.jp-NotebookPanel');
    const scroller = document.querySelector('%(scroller)s');
    const tables = [...panel.querySelectorAll('.jp-OutputArea-output table')];
    const outputs = [...panel.querySelectorAll('.jp-OutputArea-output')];
    const verdict = outputs.find(o => %(mark)s.test(o.innerText.trim()));
    // the first verdict line (a list item, or the report's first row) must be whole on the first screen
    const line = verdict ? (verdict.querySelector('li, tbody tr') || verdict) : null;
    const bottom = line ? Math.round(line.getBoundingClientRect().bottom - scroller.getBoundingClientRect().top) : null;
    return {
        dirty: document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length,
        file_browser_open: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)'),
        images: panel.querySelectorAll('.jp-OutputArea-output img').length,
        widget_errors: (panel.innerText.match(/Error displaying widget/g) || []).length,
        verdict_line_bottom: bottom,
        screen: scroller.clientHeight,
        tables: tables.map(t => ({
            columns: t.querySelectorAll('thead th').length,
            width: Math.round(t.getBoundingClientRect().width),
            room: t.closest('.jp-OutputArea-output').clientWidth,
            first: t.querySelector('thead') ? t.querySelector('thead').innerText.replace(/\\s+/g, ' ').slice(0, 60) : '',
        })),
    };
}""" % {"scroller": SCROLLER, "mark": VERDICT_MARK}

# Lines a table cell's text takes: the distinct tops of the rectangles its text is laid out in.
WRAPPED_OURS = """() => {
    const preview = [...document.querySelectorAll('.jp-RenderedMarkdown')].pop();
    if (!preview) return null;
    const wrapped = [];
    let cells = 0;
    for (const table of preview.querySelectorAll('table')) {
        const heads = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
        const columns = heads.map((h, i) => /\\bours\\b/i.test(h) ? i : -1).filter(i => i >= 0);
        for (const row of table.querySelectorAll('tbody tr')) {
            for (const i of columns) {
                const td = row.children[i];
                if (!td || !td.innerText.trim()) continue;
                cells += 1;
                const range = document.createRange();
                range.selectNodeContents(td);
                const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
                if (tops.size > 1) wrapped.push({column: heads[i], text: td.innerText.trim(), lines: tops.size});
            }
        }
    }
    return {cells, wrapped, width: Math.round(preview.getBoundingClientRect().width)};
}"""

RUN_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const cells = [...panel.content.model.cells].filter(c => c.type === 'code');
    return {
        kernel: kernel ? kernel.status : null,
        queued: [...document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt')]
            .filter(p => p.innerText.includes('*')).length,
        unexecuted: cells.filter(c => c.executionCount === null).length,
        errors: cells.flatMap(c => [...Array(c.outputs.length).keys()].map(k => c.outputs.get(k).toJSON()))
            .filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`.slice(0, 200)),
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
    # expose_app_in_browser: window.jupyterapp, to open the Markdown preview and run every cell by command
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
                            "--LabApp.expose_app_in_browser=True",
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


def git_status() -> list[str]:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def problems(report: dict) -> list[str]:
    """What a reader would trip over, from one check's measurements (empty: nothing)."""
    found = []
    if report.get("dirty"):
        found.append("opening it marked it modified")
    if report.get("file_unchanged") is False:
        found.append("opening it changed the file")
    found += [f"table '{t['first']}' is {t['width']} px wide in {t['room']} px" for t in report.get("too_wide", [])]
    if "verdict_line_bottom" in report:
        if report["verdict_line_bottom"] is None:
            found.append("no verdicts shown")
        elif report["verdict_line_bottom"] > report["screen"]:
            found.append(f"the first verdict line ends {report['verdict_line_bottom']} px down, below the first "
                         f"screen ({report['screen']} px)")
    if report.get("widget_errors"):
        found.append(f"{report['widget_errors']} 'Error displaying widget' on reopening")
    found += [f"'{w['text']}' ({w['column']}) wraps over {w['lines']} lines" for w in report.get("wrapped", [])]
    if report.get("cells") == 0:
        found.append("no 'ours' cell found in the report")
    found += [f"a cell raised {e}" for e in report.get("errors", [])]
    if report.get("timed_out"):
        found.append(f"Run All was still running after {report['run_s']} s")
    if report.get("unexecuted"):
        found.append(f"{report['unexecuted']} code cells did not run")
    if report.get("git_status_after") is not None and report["git_status_after"] != report["git_status_before"]:
        changed = sorted(set(report["git_status_after"]) ^ set(report["git_status_before"]))
        found.append(f"git status changed: {changed}")
    return found


def _open(page, port: int, token: str, relative: str) -> None:
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{relative}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    page.wait_for_timeout(4000)  # outputs, images and the kernel's start


def check_notebook(page, port: int, token: str, notebook: Path, out: Path) -> dict:
    relative = notebook.resolve().relative_to(ROOT).as_posix()
    before = notebook.read_bytes()
    _open(page, port, token, relative)
    report = {"check": "notebook", "notebook": relative, **page.evaluate(MEASURE)}
    report["too_wide"] = [t for t in report.pop("tables") if t["width"] > t["room"]]
    report["screenshots"] = [str(s) for s in _screenshots(page, out / notebook.stem)]
    report["file_unchanged"] = notebook.read_bytes() == before
    return report


def check_report(page, port: int, token: str, markdown: Path, out: Path) -> dict:
    relative = markdown.resolve().relative_to(ROOT).as_posix()
    page.goto(f"http://127.0.0.1:{port}/lab?reset&token={token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand('docmanager:open')",
                           timeout=120_000)
    page.evaluate("path => window.jupyterapp.commands.execute('docmanager:open', "
                  "{path, factory: 'Markdown Preview'})", relative)
    page.wait_for_selector(".jp-RenderedMarkdown table", timeout=60_000)
    page.wait_for_timeout(1500)
    report = {"check": "report", "report": relative, **page.evaluate(WRAPPED_OURS)}
    page.screenshot(path=str(out / f"{markdown.stem}.png"))
    report["screenshots"] = [str(out / f"{markdown.stem}.png")]
    return report


def check_run_all(page, port: int, token: str, notebook: Path, out: Path, timeout_s: float) -> dict:
    """Run All, save, close, reopen: what a user's session leaves behind."""
    relative = notebook.resolve().relative_to(ROOT).as_posix()
    report = {"check": "run-all", "notebook": relative, "git_status_before": git_status()}
    before = notebook.read_bytes()  # git status alone cannot see a change to a notebook that is already modified
    _open(page, port, token, relative)
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=120_000)
    started = time.time()
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_timeout(2000)
    state = page.evaluate(RUN_STATE)
    settled = 0
    while time.time() - started < timeout_s and settled < 3:
        page.wait_for_timeout(2000)
        state = page.evaluate(RUN_STATE)
        settled = settled + 1 if state["kernel"] == "idle" and not state["queued"] else 0
    report["run_s"] = round(time.time() - started, 1)
    report.update({k: state[k] for k in ("errors", "unexecuted")})
    report["timed_out"] = settled < 3
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(3000)  # the server's save hook strips the outputs before the file is written
    page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
    page.wait_for_timeout(1000)
    _open(page, port, token, relative)
    reopened = page.evaluate(MEASURE)
    report["widget_errors"] = reopened["widget_errors"]
    report["git_status_after"] = git_status()
    report["file_unchanged"] = notebook.read_bytes() == before
    page.screenshot(path=str(out / f"{notebook.stem}-reopened.png"))
    return report


def _screenshots(page, stem: Path) -> list[Path]:
    """The notebook from top to bottom, one window-height at a time."""
    height = page.evaluate(f"() => document.querySelector('{SCROLLER}').scrollHeight")
    view = page.evaluate(f"() => document.querySelector('{SCROLLER}').clientHeight")
    shots = []
    for k, top in enumerate(range(0, max(height, 1), max(view - 100, 1))):
        page.evaluate(f"() => {{ document.querySelector('{SCROLLER}').scrollTop = {top}; }}")
        page.wait_for_timeout(300)
        path = stem.parent / f"{stem.name}-{k:02d}.png"
        page.screenshot(path=str(path))
        shots.append(path)
    return shots


def check(notebooks: list[Path], report_md: Path | None, run_all: list[Path], out: Path, browser_path: str,
          timeout_s: float) -> list[dict]:
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
                jobs = ([lambda n=n: check_notebook(page, port, token, n, out) for n in notebooks]
                        + ([lambda: check_report(page, port, token, report_md, out)] if report_md else [])
                        + [lambda n=n: check_run_all(page, port, token, n, out, timeout_s) for n in run_all])
                for job in jobs:
                    report = job()
                    report["problems"] = problems(report)
                    reports.append(report)
                    print(json.dumps(report), flush=True)
                browser.close()
        finally:
            lab.terminate()
            lab.wait(timeout=30)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="executed notebooks to open")
    parser.add_argument("--report", type=Path, help="the claims report (results/REPORT.md) to open as Markdown")
    parser.add_argument("--run-all", type=Path, nargs="*", default=[], help="source notebooks to Run All")
    parser.add_argument("--run-timeout", type=float, default=900, help="seconds a Run All may take")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lab_check")
    parser.add_argument("--browser", default="/usr/bin/chromium", help="the Chromium executable")
    args = parser.parse_args(argv)
    given = [*args.notebooks, *args.run_all, *([args.report] if args.report else [])]
    missing = [str(n) for n in given if not n.is_file()]
    if missing:
        parser.error(f"not a file: {', '.join(missing)}")
    if not given:
        parser.error("nothing to check: give notebooks, --report or --run-all")
    reports = check(args.notebooks, args.report, args.run_all, args.out, args.browser, args.run_timeout)
    return 1 if any(r["problems"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
