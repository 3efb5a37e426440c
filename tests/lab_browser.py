"""A real JupyterLab with the soopervisor extensions, and Debian's Chromium, for
the browser tests of the sidebar and the views, and the benchmarks.

The prebuilt labextension (``js/`` built into ``jupyter_ext/labextension``) is
found through ``JUPYTER_PATH`` pointing at a folder holding a link to it, so a
fresh build is used without reinstalling anything.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import free_port

if TYPE_CHECKING:
    from typing import Self

REPO = Path(__file__).resolve().parents[1]
LABEXTENSION = REPO / "jupyter_ext" / "labextension"
CHROMIUM = os.environ.get("SOOPERVISOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BUILD_HINT = "build it first: cd js && npm ci && npm run build"
# the documentation's screenshots (docs/tutorials/jupyterlab.md shows them); tracked in git
SCREENSHOTS = REPO / "docs" / "_static" / "screenshots"
AXE = REPO / "js" / "node_modules" / "axe-core" / "axe.min.js"
#: the settings of the soopervisor labextension (the Settings Editor's "soopervisor")
PLUGIN = "soopervisor:plugin"


def tid(name: str) -> str:
    """The CSS selector of an element by its ``data-testid``."""
    return f'[data-testid="{name}"]'


def labextension_path(into: Path) -> Path:
    """A JUPYTER_PATH folder whose ``labextensions/soopervisor`` is the built extension."""
    if not (LABEXTENSION / "package.json").exists():
        raise RuntimeError(f"no prebuilt labextension in {LABEXTENSION}; {BUILD_HINT}")
    target = into / "labextensions" / "soopervisor"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(LABEXTENSION, target_is_directory=True)
    return into


class JupyterLab:
    """``python -m jupyter lab`` on a free loopback port, with a random token."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.root = Path(root)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._scratch = Path(tempfile.mkdtemp(prefix="soopervisor-lab-"))
        self.log_path = log or self._scratch / "jupyterlab.log"
        self._env: dict[str, str] = {
            **os.environ,
            # a config/data dir of its own: no user setting or workspace leaks in
            "JUPYTER_CONFIG_DIR": str(self._scratch / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(self._scratch / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self._scratch / "workspaces"),
            "JUPYTER_PATH": str(labextension_path(self._scratch / "data")),
            **(env or {}),
        }
        #: where the server reads its ``jupyter_*_config.json`` (its own, unless ``env`` names another)
        self.config_dir = Path(self._env["JUPYTER_CONFIG_DIR"])
        self.proc: subprocess.Popen | None = None
        # no "get Jupyter news?" toast over the page
        news = self._scratch / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text('{"fetchNews": "false", "checkForUpdates": false}')

    def lab_url(self, path: str = "") -> str:
        return f"{self.url}/lab{'/tree/' + path if path else ''}?token={self.token}"

    def start(self, timeout: float = 90) -> Self:
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.jpserver_extensions={'soopervisor_jupyter': True}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI machines run as root
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs; stop() closes it
        self.proc = subprocess.Popen(cmd, env=self._env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {timeout}s:\n{self.log_tail()}")

    def get(self, path: str) -> bytes:
        req = urllib.request.Request(f"{self.url}/{path.lstrip('/')}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # jupyter_server shuts down cleanly on SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self._scratch / "config", ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def chromium(playwright) -> Iterator[object]:
    """Debian's Chromium under Playwright; over CDP when the driver refuses its version."""
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        proc = None
    except Exception:  # noqa: BLE001 - a driver/browser version mismatch: drive it over CDP
        browser, proc = _over_cdp(playwright)
    try:
        yield browser
    finally:
        with contextlib.suppress(Exception):
            browser.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def _over_cdp(playwright):
    profile = tempfile.mkdtemp(prefix="soopervisor-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_ARGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("chromium did not open its debugging port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    return playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}"), proc


def docker_image(request) -> str | None:
    """The ``base_image`` fixture's image for a test marked ``docker`` (what its runs use), else None."""
    return request.getfixturevalue("base_image") if request.node.get_closest_marker("docker") else None


@contextlib.contextmanager
def start_lab(root: Path, home: Path, *, env: dict[str, str] | None = None, expose_app: bool = False,
              image: str | None = None) -> Iterator[JupyterLab]:
    """A test's JupyterLab on ``root``, its soopervisor home ``home``; the tail of its log printed at the end.

    ``env`` is added to the server's environment; ``image`` becomes its SOOPERVISOR_IMAGE (the image
    of its runs); ``expose_app`` sets ``LabApp.expose_app_in_browser``, so that the page reaches the
    app as ``window.jupyterapp`` and runs commands with arguments. The log is ``home``'s sibling
    ``jupyterlab.log``, kept with the test's files.
    """
    env = {"SOOPERVISOR_HOME": str(home), **(env or {})}
    if image:
        env["SOOPERVISOR_IMAGE"] = image
    server = JupyterLab(root, env=env, log=Path(home).parent / "jupyterlab.log")
    if expose_app:
        server.config_dir.mkdir(parents=True, exist_ok=True)
        config = {"LabApp": {"expose_app_in_browser": True}}
        (server.config_dir / "jupyter_lab_config.json").write_text(json.dumps(config))
    try:
        with server:
            yield server
    finally:
        # on failure the server's log says why
        print(f"--- jupyter lab log (tail) ---\n{server.log_tail(40)}")


@contextlib.contextmanager
def new_page(*, downloads: bool = True, console: bool = False, timeout: float = 30_000) -> Iterator[object]:
    """A Playwright page of a 1400x1000 window in Chromium (see ``chromium``), closed at the end.

    ``downloads``: downloads are accepted (``page.expect_download``); ``console``: the browser's
    console errors and uncaught page errors are printed (a plugin that did not load says why);
    ``timeout``: the page's default timeout, in ms.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, chromium(p) as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=downloads)
        try:
            page = context.new_page()
            page.set_default_timeout(timeout)
            if console:
                page.on("console", lambda m: m.type == "error" and print(f"console: {m.text}"))
                page.on("pageerror", lambda e: print(f"page error: {e}"))
            yield page
        finally:
            context.close()


#: the modal JupyterLab shows when its theme's stylesheet did not load
THEME_ERROR = '.jp-Dialog[aria-label^="Error Loading Theme"]'


def load_lab(page, url: str | None = None, timeout: float = 60_000) -> None:
    """Go to ``url`` (None: reload the page) and wait until JupyterLab has applied its theme.

    On a loaded machine Chromium now and then fails to fetch JupyterLab's own theme stylesheet (the
    request never reaches the server) and Lab puts a modal dialog over the page, which would swallow
    every click of the test: the page is then loaded again, up to twice, and the dialog is never
    clicked away.
    """
    for attempt in range(3):
        if url is None or attempt:
            page.reload(timeout=timeout)
        else:
            page.goto(url, timeout=timeout)
        page.locator("#jp-main-dock-panel").wait_for(timeout=timeout)
        # attached, not visible: Lab's <body> has no height (its shell is positioned absolutely)
        page.locator(f"body[data-jp-theme-name], {THEME_ERROR}").first.wait_for(state="attached", timeout=timeout)
        if not page.locator(THEME_ERROR).count():
            return
        print(f"lab_browser: JupyterLab's theme stylesheet failed to load; loading the page again ({attempt + 1})")
    raise AssertionError("JupyterLab's theme stylesheet failed to load three times")


def open_panel(page, lab: JupyterLab, path: str = "", timeout: float = 60_000) -> None:
    """Load the lab page and open the soopervisor sidebar (the tab with its icon)."""
    load_lab(page, lab.lab_url(path), timeout)
    tab = page.locator('.jp-SideBar [data-id="soopervisor-panel"]')
    tab.wait_for(timeout=timeout)
    panel = page.locator('[data-testid="sv-panel"]')
    # after a reload JupyterLab restores its layout a moment later, and may reopen the panel itself:
    # a click made just before that toggles it shut, so look again and click until it stays open
    deadline = time.monotonic() + timeout / 1000
    while not panel.is_visible():
        if time.monotonic() > deadline:
            panel.wait_for(state="visible", timeout=1)  # fails with Playwright's own message
        tab.click()
        with contextlib.suppress(Exception):
            panel.wait_for(state="visible", timeout=3_000)


def widen_sidebar(page, width: int = 440) -> None:
    """Drag the handle between the left sidebar and the main area so the panel is ``width`` px wide."""
    panel = page.locator("#soopervisor-panel")
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box, current = handle.bounding_box(), panel.bounding_box()
    if box is None or current is None or current["width"] >= width:
        return
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + width - current["width"], y, steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)  # best effort: a screenshot of a narrower panel is still a screenshot


def screenshot(page, name: str, panel_only: bool = True) -> Path:
    """Save a documentation screenshot: the soopervisor panel down to its last content, or the 1400x1000 page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.wait_for_timeout(300)  # let the last repaint (scroll, highlight) settle
    if not panel_only:
        page.screenshot(path=str(path), animations="disabled")
        return path
    # the panel is as tall as the window: crop the empty space below its content
    # (lines scrolled out of the log's box do not count, the box does)
    clip = page.evaluate(
        """() => {
          const panel = document.querySelector('#soopervisor-panel');
          const box = panel.getBoundingClientRect();
          let bottom = box.top;
          for (const el of panel.querySelectorAll('*')) {
            const inLog = el.closest('[data-testid=sv-log]');
            if ((inLog && inLog !== el) || (el.children.length && el !== inLog)) continue;
            const r = el.getBoundingClientRect();
            if (r.height > 0 && r.bottom <= box.bottom) bottom = Math.max(bottom, r.bottom);
          }
          return {x: box.left, y: box.top, width: box.width, height: Math.min(box.height, bottom - box.top + 16)};
        }"""
    )
    page.screenshot(path=str(path), clip=clip, animations="disabled")
    return path


def put_settings(lab: JupyterLab, values: dict, plugin: str = PLUGIN) -> None:
    """What the Settings Editor saves: the user's settings of ``plugin``, through Lab's settings API."""
    req = urllib.request.Request(
        f"{lab.url}/lab/api/settings/{plugin}",
        data=json.dumps({"raw": json.dumps(values)}).encode(),
        method="PUT",
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204


def palette(page, text: str):
    """Open the command palette with its shortcut and filter it by ``text``; the items shown."""
    page.locator("#jp-main-dock-panel").click(position={"x": 600, "y": 400})
    page.keyboard.press("Control+Shift+C")
    box = page.locator(".lm-CommandPalette-input")
    box.wait_for()
    box.fill(text)
    return page.locator(".lm-CommandPalette-item")


def run_from_palette(page, label: str) -> None:
    """Run the palette's command labelled ``label``, as a user does."""
    items = palette(page, label)
    items.filter(has=page.locator(".lm-CommandPalette-itemLabel", has_text=label)).first.click()


def switch_theme(page, name: str, *, from_palette: bool = False, background_of: str | None = None) -> None:
    """Switch to JupyterLab's theme ``name`` (apputils:change-theme) and wait until it applies.

    ``from_palette``: run the command from the palette, as a user does (else through
    ``window.jupyterapp``, see ``start_lab(expose_app=True)``). The theme's stylesheet applies a frame
    after the body's attribute: with ``background_of`` (a selector) wait until that element's
    background is the theme's (dark or light), else for 300 ms.
    """
    if from_palette:
        run_from_palette(page, f"Use Theme: {name}")
    else:
        page.evaluate("name => window.jupyterapp.commands.execute('apputils:change-theme', { theme: name })", name)
    page.wait_for_function(f"() => document.body.dataset.jpThemeName === {json.dumps(name)}", timeout=60_000)
    if background_of is None:
        page.wait_for_timeout(300)
        return
    page.wait_for_function(
        "([sel, dark]) => { const c = getComputedStyle(document.querySelector(sel)).backgroundColor;"
        " const [r, g, b] = c.match(/\\d+/g).map(Number); return dark ? r + g + b < 200 : r + g + b > 500; }",
        arg=[background_of, name.endswith("Dark")],
    )


def axe_violations(page, root_selector: str) -> list[dict]:
    """axe-core's serious and critical violations inside the element of ``root_selector``."""
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async sel => (await axe.run(document.querySelector(sel), { resultTypes: ['violations'] })).violations"
        ".map(v => ({ id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.html.slice(0, 160)).slice(0, 3) }))",
        root_selector,
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


# the contrast of an element's text over its painted background, as WCAG 2 computes it;
# colours are read through a canvas so that color-mix(), rgba() and color(srgb …) all work
CONTRAST_JS = """(el) => {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const rgba = css => {
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = '#000';
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
    // the canvas premultiplies: undo it
    return a ? [r * 255 / a, g * 255 / a, b * 255 / a, a / 255] : [0, 0, 0, 0];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat(1);
  };
  // the backgrounds from the root down to el, composed
  const chain = [];
  for (let n = el; n; n = n.parentElement) chain.unshift(n);
  let bg = [255, 255, 255, 1];
  for (const n of chain) bg = over(rgba(getComputedStyle(n).backgroundColor), bg);
  const fg = over(rgba(getComputedStyle(el).color), bg);
  const lum = c => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}"""


def contrast(locator) -> float:
    """The WCAG 2 contrast ratio of the element's text over its painted background (4.5 is AA)."""
    return locator.evaluate(CONTRAST_JS)
