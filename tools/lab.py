"""Drive the course in a real browser: JupyterLab on 127.0.0.1 + headless Chromium (Playwright).

Used by the browser tests (``tests/browser``) and the browser benchmark
(``benchmarks/bench_browser.py``). Nothing here downloads anything: the browser is
Debian's Chromium (``apt-get install chromium``), driven by Playwright for Python.

* :func:`lab_server` — a context manager that copies ``solutions/``, ``chapters/`` and
  ``images/`` to a temporary root (so relative ``../images`` links still resolve), starts
  JupyterLab there (or Jupyter Notebook 7: ``app="notebook"``) on a free port with a random
  token, isolated settings (all notebook cells attached to the DOM) and no network calls,
  and stops it and every kernel on exit.
* :func:`chromium` — a context manager for headless Chromium.
* :class:`NotebookPage` — open a notebook in a page, run all cells and wait for the status
  bar's kernel status to read "Idle" with every cell done, read outputs, and drive widgets
  (keyboard on slider handles, clicks on buttons) while watching the widget's ``<img>``.

Every wait is a condition polled by the browser (``wait_for_function``), never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Debian's Chromium; another Chromium-based browser can be named with the env variable CHROMIUM
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
COPIED = ("solutions", "chapters", "images")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
FALLBACK = "explorer: run the notebook to interact"
#: JupyterLab user settings for the tests: every cell in the DOM, no pop-ups
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}

__all__ = ["CHROMIUM", "LabServer", "NotebookPage", "chromium", "count_explorers", "lab_server",
           "notebooks"]


def notebooks(folder: str) -> list[Path]:
    """The notebooks present in ``ROOT/folder`` (``solutions`` or ``chapters``), sorted."""
    return sorted(p for p in (ROOT / folder).glob("[0-9][0-9]-*.ipynb") if ".backup-" not in p.name)


def count_explorers(solution: Path) -> int:
    """How many widgets an executed solution notebook shows: outputs with a widget view, or
    its text fallback (the stored solutions have the widget views stripped)."""
    cells = json.loads(Path(solution).read_text())["cells"]
    datas = [out.get("data", {}) for c in cells if c["cell_type"] == "code"
             for out in c.get("outputs", [])]
    return sum(WIDGET_MIME in d or FALLBACK in "".join(d.get("text/plain", "")) for d in datas)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab (``app="lab"``) or Notebook 7 (``app="notebook"``): ``url`` (no
    trailing slash), ``token``, ``root`` (its files)."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen = field(repr=False)
    app: str = "lab"

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API (``path`` like ``/api/kernels``); JSON in, JSON out."""
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def lab_url(self, path: str) -> str:
        """The URL that opens ``path`` (relative to the root): in a fresh JupyterLab workspace,
        or in Notebook 7's notebook page."""
        if self.app == "notebook":
            return f"{self.url}/notebooks/{path}?token={self.token}"
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Stop every kernel the server runs (and forget the sessions)."""
        for session in self.api("GET", "/api/sessions"):
            with contextlib.suppress(urllib.error.URLError):
                self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            with contextlib.suppress(urllib.error.URLError):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")


def _copy_course(root: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns(
                ".ipynb_checkpoints", "*.backup-*.ipynb"))


@contextlib.contextmanager
def lab_server(startup_timeout: float = 90.0, app: str = "lab") -> Iterator[LabServer]:
    """Start JupyterLab (``app="lab"``) or Jupyter Notebook 7 (``app="notebook"``) on a
    temporary copy of the course; stop it and its kernels on exit."""
    if app not in ("lab", "notebook"):
        raise ValueError(f"app must be 'lab' or 'notebook', got {app!r}")
    with tempfile.TemporaryDirectory(prefix="lab-") as tmp:
        tmp = Path(tmp)
        root, home = tmp / "course", tmp / "home"
        root.mkdir()
        _copy_course(root)
        settings = home / "settings"
        for name, value in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        token, port = secrets.token_hex(24), _free_port()
        env = {**os.environ,
               "JUPYTER_CONFIG_DIR": str(home / "config"),
               "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
               "IPYTHONDIR": str(home / "ipython"),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline",
               "PYTHONUNBUFFERED": "1"}
        if app == "lab":
            app_args = ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                        "--LabApp.extension_manager=readonly"]
        else:
            app_args = ["--JupyterNotebookApp.expose_app_in_browser=True"]
        cmd = [sys.executable, "-m", "jupyter", app,
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}",
               "--ServerApp.open_browser=False",
               f"--ServerApp.root_dir={root}",
               *app_args,
               *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else [])]
        log = (tmp / "server.log").open("w")
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        server = LabServer(f"http://127.0.0.1:{port}", token, root, process, app)
        try:
            _wait_until_up(server, startup_timeout, tmp / "server.log")
            yield server
        finally:
            with contextlib.suppress(Exception):
                server.shutdown_kernels()
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            log.close()
            _kill_kernels_of(home / "runtime")


def _kill_kernels_of(runtime: Path) -> None:
    """Last resort: kill (by pid) any kernel still running with a connection file in ``runtime``."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"{runtime}/kernel-" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def _wait_until_up(server: LabServer, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.process.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            server.api("GET", "/api/status")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start in {timeout:.0f} s:\n"
                                   f"{log.read_text()[-3000:]}") from None
            with contextlib.suppress(subprocess.TimeoutExpired):  # returns early if it exits
                server.process.wait(timeout=0.2)


@contextlib.contextmanager
def chromium(executable: Path = CHROMIUM):
    """Headless Debian Chromium driven by Playwright; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ---------------------------------------------------------------------------- the page

# the kernel status: JupyterLab's status bar ("Python 3 (ipykernel) | Idle"); Notebook 7 has
# none, there the notebook's session context says it ("idle" -> "Idle")
_STATUS_JS = """() => {
  if (document.querySelector('#jp-main-statusbar')) {
    const items = [...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')];
    const kernel = items.map(e => e.innerText.trim()).find(t => / \\| [A-Z][a-z ]+$/.test(t));
    return kernel ? kernel.split(' | ').pop() : null;
  }
  const status = window.jupyterapp?.shell?.currentWidget?.sessionContext?.kernelDisplayStatus;
  return status ? status.charAt(0).toUpperCase() + status.slice(1) : null;
}"""

_CODE_PROMPTS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')]
  .filter(c => (c.querySelector('.jp-InputArea-editor')?.innerText ?? '').trim() !== '')
  .map(c => (c.querySelector('.jp-InputPrompt')?.innerText ?? '').trim())"""

# done: no cell queued or running, and every non-empty code cell numbered (or an error stopped
# the run), and the status bar says Idle
_RUN_DONE_JS = """() => {
  const prompts = (__PROMPTS__)();
  if (!prompts.length || prompts.some(p => p.includes('*'))) return false;
  const numbered = prompts.every(p => /^\\[\\d+\\]:$/.test(p));
  const error = document.querySelector(
    '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  return (numbered || error !== null) && (__STATUS__)() === 'Idle';
}""".replace("__PROMPTS__", _CODE_PROMPTS_JS).replace("__STATUS__", _STATUS_JS)

# SHA-256 of the pixels an <img> shows (decoded, drawn to a canvas)
_DIGEST_JS = """async (img) => {
  await img.decode();
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  const h = await crypto.subtle.digest('SHA-256', px);
  return [...new Uint8Array(h)].map(b => b.toString(16).padStart(2, '0')).join('');
}"""

# the widget's image on show: an explorer's own image, or the visible frame of a
# pre-rendered slider (the other frames are hidden). checkVisibility, not offsetParent: in a
# live deck the cells sit in fixed-position boxes, where offsetParent is always null
_SHOWN_IMAGE_JS = """w => [...w.querySelectorAll('img.widget-image')].find(i => i.checkVisibility())"""

# the image on show is still the one tagged by NotebookPage.change (same <img>, same src)
_SAME_IMAGE_JS = f"""w => {{
  const i = ({_SHOWN_IMAGE_JS})(w);
  return !i || i.dataset.courseBefore === i.src;
}}"""

# a new image is on show (another frame, or new pixels in the same <img>) and is loaded
_NEW_IMAGE_JS = f"""w => {{
  const i = ({_SHOWN_IMAGE_JS})(w);
  return !({_SAME_IMAGE_JS})(w) && i.complete && i.naturalWidth > 0;
}}"""

WIDGET_SELECTOR = ".jp-Notebook .jp-OutputArea-output:has(> .jupyter-widgets)"
SLIDER_HANDLE = ".widget-slider .noUi-handle"


class NotebookPage:
    """A notebook open in JupyterLab in one Playwright page.

    ``page`` is a Playwright ``Page``; ``server`` the :class:`LabServer`.
    """

    def __init__(self, page, server: LabServer, timeout_ms: float = 120_000):
        self.page, self.server, self.timeout = page, server, timeout_ms
        self.page_errors: list[str] = []
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    # -- opening and running ------------------------------------------------------------
    def open(self, path: str) -> None:
        """Open ``path`` (relative to the server root) and wait for its kernel to be Idle."""
        self.page.goto(self.server.lab_url(path))
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=self.timeout)
        self.wait_idle()

    def kernel_status(self) -> str | None:
        """The kernel status shown in the status bar ("Idle", "Busy", ...)."""
        return self.page.evaluate(_STATUS_JS)

    def wait_idle(self) -> None:
        """Wait until the status bar's kernel status reads "Idle"."""
        self.page.wait_for_function(f"() => ({_STATUS_JS})() === 'Idle'", timeout=self.timeout)

    def command(self, name: str, args: dict | None = None) -> None:
        """Run a JupyterLab command (does not wait for it to finish)."""
        self.page.evaluate("([n, a]) => { window.jupyterapp.commands.execute(n, a); }",
                           [name, args or {}])

    def has_command(self, name: str) -> bool:
        return self.page.evaluate("(n) => window.jupyterapp.commands.hasCommand(n)", name)

    def run_all(self) -> float:
        """Clear the outputs, run all cells, wait until done and Idle; the seconds it took."""
        self.command("notebook:clear-all-cell-outputs")
        self.page.wait_for_function(
            f"() => ({_CODE_PROMPTS_JS})().every(p => !/\\d/.test(p))", timeout=self.timeout)
        self.wait_idle()
        start = time.perf_counter()
        self.command("notebook:run-all-cells")
        self.page.wait_for_function(_RUN_DONE_JS, timeout=self.timeout, polling=50)
        return time.perf_counter() - start

    def select_cell_of(self, locator) -> None:
        """Make the cell holding ``locator`` the notebook's active cell."""
        locator.evaluate("""el => {
          const nb = window.jupyterapp.shell.currentWidget.content;
          nb.activeCellIndex = nb.widgets.findIndex(w => w.node === el.closest('.jp-Cell'));
        }""")

    # -- reading outputs ------------------------------------------------------------------
    def outputs(self, mime: str) -> list[str]:
        """The text of every output of MIME type ``mime`` (errors are application/vnd.jupyter.stderr)."""
        return self.page.locator(
            f'.jp-Notebook .jp-OutputArea-output[data-mime-type="{mime}"]').all_inner_texts()

    def errors(self) -> list[str]:
        """Every error or stderr output shown."""
        return self.outputs("application/vnd.jupyter.stderr")

    def text(self) -> str:
        """All output text of the notebook."""
        return "\n".join(self.page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts())

    def widgets(self, expected: int):
        """Wait until ``expected`` widget views show an image; return their locators."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(
                """([sel, n]) => [...document.querySelectorAll(sel)].filter(
                     w => { const i = w.querySelector('img.widget-image');
                            return i && i.complete && i.naturalWidth > 0; }).length >= n""",
                arg=[WIDGET_SELECTOR, expected], timeout=self.timeout)
        except PlaywrightTimeout:
            found = self.page.locator(WIDGET_SELECTOR).count()
            raise AssertionError(f"{found} of {expected} widgets rendered (with an image)") from None
        return self.page.locator(WIDGET_SELECTOR).all()

    # -- driving widgets ------------------------------------------------------------------
    @staticmethod
    def image(widget):
        """The widget's image on show (for a pre-rendered slider: its visible frame)."""
        return widget.locator("img.widget-image").filter(visible=True).first

    def digest(self, widget) -> str:
        """SHA-256 of the pixels the widget's image shows now."""
        return self.image(widget).evaluate(_DIGEST_JS)

    def track_messages(self) -> None:
        """Count, in the page, the kernel messages sent and not yet finished (no "idle" status
        for them yet). ipykernel 7 may answer a later request before it has finished a widget
        update, so the status alone does not tell that an update was handled."""
        self.page.evaluate("""() => {
          const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
          if (window.__courseTracked === kernel) return;
          const pending = window.__coursePending = new Set();
          kernel.anyMessage.connect((_, {msg, direction}) => {
            if (direction === 'send' && msg.channel === 'shell') pending.add(msg.header.msg_id);
            else if (direction === 'recv' && msg.channel === 'iopub' &&
                     msg.header.msg_type === 'status' && msg.content.execution_state === 'idle')
              pending.delete(msg.parent_header.msg_id);
          });
          window.__courseTracked = kernel;
        }""")

    def settle(self) -> None:
        """Wait until the kernel has finished every message sent since :meth:`track_messages`
        (a slider move, a click) and the status bar reads "Idle"."""
        self.page.wait_for_function(
            f"() => window.__coursePending.size === 0 && ({_STATUS_JS})() === 'Idle'",
            timeout=self.timeout)

    def change(self, widget, action) -> tuple[str, str]:
        """Run ``action()``, let the kernel finish it, and wait for the new image to be shown.

        Returns the pixel digests (before, after); equal if the image was not replaced."""
        before = self.digest(widget)
        self.image(widget).evaluate("i => { i.dataset.courseBefore = i.src; }")
        try:
            self.track_messages()
            action()
            self.settle()
            if self.page.evaluate(_SAME_IMAGE_JS, widget.element_handle()):
                return before, before
            self.wait_for_new_image(widget)
            return before, self.digest(widget)
        finally:
            widget.evaluate("w => w.querySelectorAll('img[data-course-before]')"
                            ".forEach(i => { delete i.dataset.courseBefore; })")

    def wait_for_new_image(self, widget) -> None:
        """Inside :meth:`change`'s action: wait until the widget shows a new, loaded image
        without doing anything (e.g. the next step of a playing Play button)."""
        self.page.wait_for_function(_NEW_IMAGE_JS, arg=widget.element_handle(),
                                    timeout=self.timeout)

    def wait_frames_ready(self, widget) -> None:
        """Wait until every pre-rendered control of the widget has all its frames drawn and
        is linked to them in the browser (its Tab has the class ``course-frames-ready``; the
        kernel draws them once it is idle)."""
        self.page.wait_for_function(
            "w => !w.querySelector('.course-frames:not(.course-frames-ready)')",
            arg=widget.element_handle(), timeout=self.timeout)

    # -- the controls of a widget -------------------------------------------------------
    @staticmethod
    def sliders(widget) -> list:
        """``(label, handle)`` for every slider handle of the widget."""
        out = []
        for slider in widget.locator(".widget-slider").all():
            label = slider.locator(".widget-label").first.inner_text().strip()
            out += [(label, h) for h in slider.locator(".noUi-handle").all()]
        return out

    @staticmethod
    def buttons(widget) -> list:
        """``(label, button)`` for every push button (not toggle buttons) of the widget."""
        return [(b.inner_text().strip() or b.get_attribute("title") or "button", b)
                for b in widget.locator(".widget-button").all()]

    @staticmethod
    def dropdowns(widget) -> list:
        """``(label, select)`` for every dropdown of the widget."""
        return [(d.locator(".widget-label").first.inner_text().strip(), d.locator("select").first)
                for d in widget.locator(".widget-dropdown").all()]

    @staticmethod
    def toggles(widget) -> list:
        """``(label, group)`` for every toggle-buttons group of the widget."""
        return [(t.locator(".widget-label").first.inner_text().strip(), t)
                for t in widget.locator(".widget-toggle-buttons").all()]

    @staticmethod
    def plays(widget) -> list:
        """``(play/pause, stop)`` buttons of every Play widget (an animation's controls)."""
        return [(p.locator("button").nth(0), p.locator("button").nth(1))
                for p in widget.locator(".widget-play").all()]

    @staticmethod
    def checkboxes(widget) -> list:
        return [(c.inner_text().strip(), c.locator("input[type=checkbox]").first)
                for c in widget.locator(".widget-checkbox").all()]

    def press_a_key(self, widget) -> str | None:
        """Press a key in one of the widget's controls, as a presenter would (a slider's
        handle: an arrow key away from its end; a dropdown: ArrowDown or ArrowUp; a toggle or
        a button: Enter), trying each control in turn until one changes the widget's image.
        Returns what answered (e.g. "slider 'head'"), or None if nothing did. The control
        keeps the focus."""
        moves = []
        for label, handle in self.sliders(widget):
            moves.append((f"slider {label!r}", lambda h=handle: h.press(
                "ArrowRight" if self.at_extreme(h) == "min" else "ArrowLeft")))
        for label, select in self.dropdowns(widget):
            moves.append((f"dropdown {label!r}", lambda s=select: s.press(
                "ArrowUp" if s.evaluate("s => s.selectedIndex === s.options.length - 1")
                else "ArrowDown")))
        for label, group in self.toggles(widget):
            buttons = group.locator("button")
            moves.append((f"toggle {label!r}", lambda b=buttons: b.nth(b.evaluate_all(
                "bs => bs.findIndex(b => !b.classList.contains('mod-active'))")).press("Enter")))
        for label, button in self.buttons(widget):
            moves.append((f"button {label!r}", lambda b=button: b.press("Enter")))
        for what, move in moves:
            before, after = self.change(widget, move)
            if before != after:
                return what
        return None

    @staticmethod
    def at_extreme(handle) -> str | None:
        """"min" or "max" if the slider handle sits at an end of its range, else None."""
        now, lo, hi = (float(handle.get_attribute(a))
                       for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax"))
        tol = 1e-9 + 1e-6 * abs(hi - lo)
        return "min" if abs(now - lo) <= tol else "max" if abs(now - hi) <= tol else None
