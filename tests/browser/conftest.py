"""Fixtures for the browser tests: one JupyterLab server and one headless Chromium per session.

The tests need Debian's Chromium at /usr/bin/chromium (Playwright's own browser download
cannot work offline). Without it they skip with a line saying how to get it, except in CI
(``CI=true``), where a missing browser fails the run. The server, the browser and every
kernel stop at the end of the session, also when a test fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.lab import CHROMIUM, NotebookPage, chromium, lab_server  # noqa: E402

ENABLE = ("browser tests skipped: {why}. Enable them with `sudo apt-get install chromium` "
          "(Debian/Ubuntu), or point the env variable CHROMIUM at a Chromium binary.")
SCREENSHOTS = ROOT / "build" / "screenshots"
_run_all_times: dict[str, float] = {}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def browser_available() -> None:
    """Skip (or, in CI, fail) when the browser or Playwright is missing."""
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "the Python package playwright is not installed (make install)"
    if why is None and not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        why = f"{CHROMIUM} not found"
    if why is not None:
        if _in_ci():
            pytest.fail(f"CI=true but {why}: .ci/run must install Chromium "
                        "(apt-get install -y chromium)", pytrace=False)
        pytest.skip(ENABLE.format(why=why))


@pytest.fixture(scope="session")
def lab(browser_available):
    """JupyterLab on 127.0.0.1 (random token, free port) over a temporary copy of the course."""
    with lab_server() as server:
        yield server


@pytest.fixture(scope="session")
def browser(browser_available):
    with chromium() as b:
        yield b


@pytest.fixture
def notebook(lab, browser):
    """A fresh browser context and page; closed, and all kernels stopped, after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield NotebookPage(context.new_page(), lab)
    finally:
        context.close()
        lab.shutdown_kernels()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def record_run_all():
    """Call with (name, seconds): printed in a table at the end of the session."""
    return _run_all_times.__setitem__


def pytest_terminal_summary(terminalreporter):
    if _run_all_times:
        terminalreporter.section("Run All in the browser (seconds)")
        for name, seconds in _run_all_times.items():
            terminalreporter.write_line(f"{name:45s} {seconds:6.1f}")


@pytest.fixture(scope="session")
def notebook7_server(browser_available):
    """Jupyter Notebook 7 (``jupyter notebook``) on 127.0.0.1 over a temporary copy of the course."""
    with lab_server(app="notebook") as server:
        yield server


@pytest.fixture
def notebook7(notebook7_server, browser):
    """A page of Notebook 7; closed, and all kernels stopped, after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield NotebookPage(context.new_page(), notebook7_server)
    finally:
        context.close()
        notebook7_server.shutdown_kernels()
