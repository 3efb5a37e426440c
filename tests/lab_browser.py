"""A real JupyterLab with the soopervisor extensions, and Debian's Chromium, for
the sidebar's browser test and benchmark.

The prebuilt labextension (``js/`` built into ``jupyter_ext/labextension``) is
found through ``JUPYTER_PATH`` pointing at a folder holding a link to it, so a
fresh build is used without reinstalling anything.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self._env = {
            **os.environ,
            # a config/data dir of its own: no user setting or workspace leaks in
            "JUPYTER_CONFIG_DIR": str(self._scratch / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(self._scratch / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self._scratch / "workspaces"),
            "JUPYTER_PATH": str(labextension_path(self._scratch / "data")),
            **(env or {}),
        }
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
        page.locator(f"body[data-jp-theme-name], {THEME_ERROR}").first.wait_for(timeout=timeout)
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
