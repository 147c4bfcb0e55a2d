"""`snakemake --report` renders every figure and every audio example in a real browser.

The tiny workflow of conftest.py runs in a temporary folder, then `snakemake --report report.html`
(the self-contained HTML report of `make report`). The list of results comes from the report
itself: Snakemake embeds every report()-flagged output as JSON (`var results`, `var categories`),
so stages that add figures or listenable audio are checked without editing this test.

Debian's headless Chromium, driven through chromedriver's W3C WebDriver HTTP interface with the
standard library only (no selenium), opens the report and walks it as a reader would: the menu,
each category and subcategory, each toggle value, and the view button of every row. It checks:

- every result of the report is reachable from a row of its category's table;
- images (png, svg, jpeg) shown by the report's viewer load: `complete`, `naturalWidth > 0`, and a
  PNG's rendered size equals its header's;
- audio results (Snakemake's viewer offers WAVs as download links, it has no player) load in an
  <audio> element (canplaythrough, finite duration, no media error) and decode with
  `decodeAudioData` to non-silent samples;
- HTML results load in the viewer's iframe, and every <img>, <audio> and <video> in them loads;
- PDF results are shown in an iframe whose data is a PDF (headless Chromium's PDF viewer cannot be
  inspected from the page);
- at least one figure; every png/svg/jpeg under results/figures is in the report, with a caption;
- the page logs no JavaScript errors.

Chromium and chromedriver are installed with apt-get when missing and this runs as root; otherwise
the test is skipped and the reason printed. Set ADVMIR_SKIP_REPORT=1 to skip it on purpose. The
browser part takes a few seconds; the apt install, when needed, about 20 s.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import announce, run_snakemake, skip_loudly

pytestmark = pytest.mark.slow

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")
CHROMEDRIVER_CANDIDATES = ("chromedriver", "/usr/lib/chromium/chromedriver")
APT_PACKAGES = ("chromium", "chromium-driver")
# As root, offline: no sandbox, no GPU, and none of the background connections Chromium makes.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--window-size=1400,1000",
)  # fmt: skip
WAIT = 60.0  # seconds for any one thing to load in the page (20 s timed out once on a row while another
# pytest worker loaded both cores; alone, the walk of all 21 results takes about 6 s)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # W3C WebDriver's key of an element reference
FIGURE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")


# --- skipping, loudly ------------------------------------------------------------------------------


def _announce(config: pytest.Config, message: str) -> None:
    announce(config, "test_report", message)


def _skip(config: pytest.Config, reason: str) -> None:
    skip_loudly(config, "test_report", reason)


def _find_browser() -> tuple[str, str] | None:
    chromium = next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    driver = next(filter(None, map(shutil.which, CHROMEDRIVER_CANDIDATES)), None)
    return (chromium, driver) if chromium and driver else None


def _install_browser() -> str | None:
    """apt-get install Chromium and chromedriver; the reason it could not, or None."""
    if not sys.platform.startswith("linux"):
        return f"Chromium is not installed and this is {sys.platform}, not Debian"
    if os.geteuid() != 0:
        return "Chromium/chromedriver are not installed and installing them with apt-get needs root"
    if shutil.which("apt-get") is None:
        return "Chromium/chromedriver are not installed and there is no apt-get to install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    steps = (
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
    )
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def browser_binaries(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(chromium, chromedriver) of Debian's packages, installed here if needed (root and apt)."""
    if os.environ.get("ADVMIR_SKIP_REPORT"):
        _skip(request.config, "ADVMIR_SKIP_REPORT is set")
    found = _find_browser()
    if found is None:
        started = time.monotonic()
        reason = _install_browser()
        found = _find_browser()
        if found is None:
            _skip(request.config, reason or f"apt-get installed {APT_PACKAGES} but found no binaries")
        _announce(request.config, f"installed {' '.join(APT_PACKAGES)} in {time.monotonic() - started:.0f} s")
    return found


# --- the report --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(browser_binaries: tuple[str, str], tiny_workflow: tuple[Path, dict]) -> Path:
    """report.html of the tiny workflow (run once per session by conftest)."""
    work, config = tiny_workflow
    run_snakemake(work, config, "--report", str(work / "report.html"))
    return work / "report.html"


def _embedded(html: str, name: str) -> Any:
    """A JSON object the report embeds as `var NAME = {...};` in its own <script id=NAME>."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.DOTALL)
    assert match, f"report.html has no embedded `var {name}`: has the Snakemake report format changed?"
    return json.loads(match.group(1))


def _data(uri: str) -> bytes:
    """The bytes of a base64 data URI."""
    head, _, payload = uri.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), f"not a base64 data URI: {head[:100]}"
    return base64.b64decode(payload)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


# --- a small W3C WebDriver client (chromedriver speaks it over HTTP) --------------------------------


class Browser:
    """Headless Chromium behind chromedriver, spoken to with urllib only."""

    def __init__(self, chromium: str, chromedriver: str, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.log = folder / "chromedriver.log"
        self.driver = subprocess.Popen(
            [chromedriver, f"--port={port}", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.session = ""
        try:
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    if self._call("GET", "/status").get("ready"):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    raise RuntimeError(f"chromedriver did not start; see {self.log}")
                time.sleep(0.1)
            options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}"]}
            capabilities = {"browserName": "chrome", "goog:chromeOptions": options,
                            "goog:loggingPrefs": {"browser": "ALL"}}  # fmt: skip
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})[
                "sessionId"
            ]
            self.command("POST", "/timeouts", {"script": int(WAIT * 1000) + 5000, "pageLoad": 60_000})
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as err:
            raise AssertionError(f"WebDriver {method} {path}: {err.read().decode()[:3000]}") from None

    def command(self, method: str, path: str, body: dict | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args: Any) -> Any:
        """Run SCRIPT, whose last argument is the callback that returns its value."""
        return self.command("POST", "/execute/async", {"script": script, "args": list(args)})

    def wait_for(self, script: str, *args: Any, what: str, timeout: float = WAIT, soft: bool = False) -> Any:
        """SCRIPT's first truthy value; after TIMEOUT s, fail (or None when SOFT)."""
        deadline = time.monotonic() + timeout
        while not (value := self.js(script, *args)):
            if time.monotonic() >= deadline:
                assert soft, f"timed out after {timeout} s waiting for {what}"
                return None
            time.sleep(0.05)
        return value

    def click(self, element: dict) -> None:
        self.command("POST", f"/element/{element[ELEMENT]}/click", {})

    def frame(self, element: dict | None) -> None:
        """Switch into the iframe ELEMENT, or back to the page with None."""
        if element is None:
            self.command("POST", "/frame/parent", {})
        else:
            self.command("POST", "/frame", {"id": element})

    def console(self) -> list[dict]:
        """Browser console entries since the last call (chromedriver's legacy log endpoint)."""
        return self.command("POST", "/se/log", {"type": "browser"})

    def close(self) -> None:
        try:
            if self.session:
                self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()


@pytest.fixture
def browser(browser_binaries: tuple[str, str], tmp_path: Path) -> Iterator[Browser]:
    chromium, chromedriver = browser_binaries
    session = Browser(chromium, chromedriver, tmp_path)
    try:
        yield session
    finally:
        session.close()


# --- the scripts run in the page -----------------------------------------------------------------

# The menu entry, subcategory entry or toggle value labelled NAME in the report's navbar.
FIND_ENTRY = """
const [name] = arguments;
const nodes = document.querySelectorAll("nav ul li a, nav fieldset label");
return Array.from(nodes).find((node) => node.textContent.trim() === name) || null;
"""
# The home link of the navbar's breadcrumbs.
FIND_HOME = "return document.querySelector('nav ol li a');"
# The view button (first link of the last cell) of each row of the results table.
ROW_BUTTONS = "return Array.from(document.querySelectorAll('nav tbody tr td:last-child a:first-of-type'));"
TOGGLE_VALUES = """
return Array.from(document.querySelectorAll('nav fieldset')).map(
    (set) => Array.from(set.querySelectorAll('label')).map((label) => label.textContent.trim()));
"""
# The result a download link carries (Snakemake's viewer has no player for audio and tables).
RESULT_OF_LINK = """
const [link] = arguments;
const href = link.getAttribute("href");
return Object.keys(results).find((path) => results[path].data_uri === href) || null;
"""
STATE = "return {path: app.state.resultPath || null, trigger: app.state.renderTrigger || null};"
# The viewer's element (img or iframe) once the app shows the result it was asked for.
SHOWN = """
const [trigger] = arguments;
const state = app.state;
if (!state.resultPath || state.renderTrigger === trigger) return null;
const content = document.querySelector('#app > div > div:last-child');
const element = content && content.querySelector('img, iframe');
if (!element || element.getAttribute('src') !== results[state.resultPath].data_uri) return null;
return {path: state.resultPath, element: element};
"""
# The viewer's <img> once loaded; a truncated image still has a naturalWidth, so decode it fully too.
IMAGE_LOADED = """
const [img, done] = arguments;
async function report() {
    const out = {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight};
    try {
        await img.decode();
        const bitmap = await createImageBitmap(img);
        out.decoded = [bitmap.width, bitmap.height];
    } catch (err) {
        out.decodeError = String(err);
    }
    done(out);
}
if (img.complete) { report(); } else {
    img.addEventListener('load', report);
    img.addEventListener('error', report);
}
"""
# Load SRC in an <audio> element until it can play through (or fails), then decode it.
AUDIO_LOADS = """
const [src, timeoutMs, done] = arguments;
const out = {};
const audio = document.createElement('audio');
audio.preload = 'auto';
let settled = false;
async function finish(event) {
    if (settled) return;
    settled = true;
    Object.assign(out, {event: event, readyState: audio.readyState, duration: audio.duration,
                        error: audio.error ? `${audio.error.code} ${audio.error.message}` : null});
    audio.remove();
    try {
        const bytes = await (await fetch(src)).arrayBuffer();
        const buffer = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(bytes);
        let peak = 0;
        for (let c = 0; c < buffer.numberOfChannels; c++) {
            for (const x of buffer.getChannelData(c)) peak = Math.max(peak, Math.abs(x));
        }
        Object.assign(out, {decoded: true, frames: buffer.length, peak: peak});
    } catch (err) {
        Object.assign(out, {decoded: false, decodeError: String(err)});
    }
    done(out);
}
audio.addEventListener('canplaythrough', () => finish('canplaythrough'));
audio.addEventListener('error', () => finish('error'));
setTimeout(() => finish('timeout'), timeoutMs);
document.body.appendChild(audio);
audio.src = src;
"""
# Inside an HTML result's iframe: wait for each <img>, <audio>, <video>, and say how it went.
MEDIA_IN_FRAME = """
const [timeoutMs, done] = arguments;
const deadline = Date.now() + timeoutMs;
const nodes = Array.from(document.querySelectorAll('img, audio, video'));
for (const node of nodes) {
    if (node.tagName !== 'IMG' && node.readyState === 0 && !node.error) {
        node.preload = 'auto';
        node.load();
    }
}
function settled(node) {
    if (node.tagName === 'IMG') return node.complete;
    return node.error !== null || node.readyState >= 4;
}
function check() {
    if (Date.now() < deadline && !nodes.every(settled)) { setTimeout(check, 50); return; }
    done(nodes.map((node) => ({
        tag: node.tagName.toLowerCase(),
        src: (node.currentSrc || node.getAttribute('src') || '').slice(0, 80),
        ok: node.tagName === 'IMG' ? node.complete && node.naturalWidth > 0
                                   : !node.error && node.readyState >= 2 && node.duration > 0,
        state: node.tagName === 'IMG'
            ? `naturalWidth ${node.naturalWidth}`
            : `readyState ${node.readyState}, error ${node.error && node.error.code}`,
    })));
}
check();
"""


def _click_entry(browser: Browser, name: str) -> None:
    entry = browser.wait_for(FIND_ENTRY, name, what=f"the navbar entry {name!r}")
    browser.click(entry)


def _check_audio(browser: Browser, path: str, src: str) -> list[str]:
    got = browser.js_async(AUDIO_LOADS, src, int(WAIT * 1000))
    problems = []
    if got["event"] != "canplaythrough" or got["error"] or not got["duration"] or got["duration"] <= 0:
        problems.append(f"{path}: does not load in an <audio> element: {got}")
    if not got.get("decoded") or got["frames"] <= 0 or got["peak"] <= 0:
        problems.append(f"{path}: does not decode to non-silent audio: {got}")
    return problems


def _check_shown(browser: Browser, path: str, entry: dict, element: dict) -> list[str]:
    """Problems with the result PATH as the report's viewer shows it in ELEMENT (img or iframe)."""
    mime = entry["mime_type"]
    data = _data(entry["data_uri"])
    if mime.startswith("image/"):
        got = browser.js_async(IMAGE_LOADED, element)
        if not got["complete"] or got["width"] <= 0 or got["height"] <= 0 or "decoded" not in got:
            return [f"{path}: the image does not load in the viewer: {got}"]
        if mime == "image/png" and (got["width"], got["height"]) != _png_size(data):
            return [f"{path}: shown {got['width']}x{got['height']}, the PNG is {_png_size(data)}"]
        return []
    if mime == "application/pdf":
        return [] if data.startswith(b"%PDF-") else [f"{path}: the viewer's iframe holds no PDF"]
    if mime == "text/html":
        browser.frame(element)
        try:
            media = browser.js_async(MEDIA_IN_FRAME, int(WAIT * 1000))
        finally:
            browser.frame(None)
        return [
            f"{path}: <{m['tag']} src={m['src']}...> does not load ({m['state']})"
            for m in media
            if not m["ok"]
        ]
    return [f"{path}: shown by the viewer as {mime}, which this test does not know how to check"]


def _walk_rows(browser: Browser, entries: dict, seen: dict[str, str]) -> list[str]:
    """View every row of the results table on screen; record each result in SEEN."""
    problems = []
    for index in range(len(browser.js(ROW_BUTTONS))):
        button = browser.js(ROW_BUTTONS)[index]  # React re-renders rows: look them up again
        path = browser.js(RESULT_OF_LINK, button)
        if path is not None:  # a download link: no viewer for this type
            seen[path] = "download link"
            if entries[path]["mime_type"].startswith("audio/"):
                problems += _check_audio(browser, path, entries[path]["data_uri"])
            continue
        before = browser.js(STATE)
        browser.click(button)
        what = f"row {index + 1}'s result in the viewer"
        shown = browser.wait_for(SHOWN, before["trigger"], what=what, timeout=15.0, soft=True)
        if shown is None:  # once in CI the first row's click never reached the viewer: click it again
            browser.click(browser.js(ROW_BUTTONS)[index])
            shown = browser.wait_for(SHOWN, before["trigger"], what=what)
        path = shown["path"]
        seen[path] = "viewer"
        problems += _check_shown(browser, path, entries[path], shown["element"])
    return problems


def _walk_report(
    browser: Browser, url: str, entries: dict, categories: dict
) -> tuple[dict[str, str], list[str]]:
    """Open the report and view every result through its menus; (how each was reached, problems)."""
    browser.open(url)
    browser.wait_for("return typeof app !== 'undefined' && document.querySelector('nav ul') !== null",
                     what="the report app to start")  # fmt: skip
    seen: dict[str, str] = {}
    problems: list[str] = []
    for category in sorted(categories):
        for subcategory in sorted(categories[category]):
            browser.click(browser.js(FIND_HOME))
            _click_entry(browser, "Results" if len(categories) == 1 else category)
            if len(categories[category]) > 1:
                _click_entry(browser, subcategory)
            browser.wait_for(ROW_BUTTONS, what=f"the results table of {category} / {subcategory}")
            toggles = browser.js(TOGGLE_VALUES)
            for value in [v for values in toggles for v in values] or [None]:
                if value is not None:
                    _click_entry(browser, value)
                problems += _walk_rows(browser, entries, seen)
    return seen, problems


def test_report_renders_every_figure_and_audio(
    report: Path, browser: Browser, request: pytest.FixtureRequest
):
    html = report.read_text()
    entries = _embedded(html, "results")
    categories = _embedded(html, "categories")
    listed = {
        path for subcategories in categories.values() for paths in subcategories.values() for path in paths
    }
    assert listed == set(entries), "results and categories of the report disagree"
    images = sorted(p for p, e in entries.items() if e["mime_type"].startswith("image/"))
    audio = sorted(p for p, e in entries.items() if e["mime_type"].startswith("audio/"))
    assert images, f"the report has no figure; it lists: {sorted(entries)}"
    pages = [p for p, e in entries.items() if e["mime_type"] == "text/html"]
    assert any("<audio" in (report.parent / p).read_text() for p in pages), (
        "no listenable audio in the report"
    )

    in_report = {(report.parent / path).resolve() for path in entries}  # paths as the workflow named them
    figures = report.parent / "results" / "figures"
    on_disk = [p for p in figures.rglob("*") if p.suffix.lower() in FIGURE_SUFFIXES]
    missing = sorted(str(p) for p in on_disk if p.resolve() not in in_report)
    assert not missing, f"figures in results/figures missing from the report (no report() flag?): {missing}"
    uncaptioned = [p for p in images if not re.sub(r"<[^>]+>|\s", "", entries[p].get("caption") or "")]
    assert not uncaptioned, f"figures without a caption: {uncaptioned}"

    started = time.monotonic()
    seen, problems = _walk_report(browser, report.as_uri(), entries, categories)
    errors = [e for e in browser.console() if e.get("level") == "SEVERE"]
    seconds = time.monotonic() - started

    assert not problems, "\n".join(problems)
    unreachable = sorted(set(entries) - set(seen))
    assert not unreachable, f"results with no row in the report's tables: {unreachable}"
    assert not errors, "errors in the browser console:\n" + "\n".join(e["message"][:500] for e in errors)
    _announce(
        request.config,
        f"{len(images)} figures and {len(audio)} audio files of {len(entries)} results load in Chromium "
        f"({seconds:.1f} s in the browser)",
    )
