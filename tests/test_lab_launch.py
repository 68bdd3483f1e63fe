"""`make lab` opens the course for everyone, root included: the real command, started on a free port.

``make lab`` runs ``python -m tools.open_lab``; this test starts the same module (with
``--port`` and ``--no-browser`` passed through to Jupyter) and checks what a user sees: one
URL on 127.0.0.1 with a token, a server that refuses requests without the token, nothing
listening on another address, and, when run as root (as in containers and on this CI), the
line saying ``--allow-root`` was passed. One server start: a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.open_lab import ROOT_NOTE, lab_command, running_as_root  # noqa: E402

STARTUP_TIMEOUT = 120.0  # seconds; JupyterLab starts in about 3 s on an idle 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _other_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None if only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``python -m tools.open_lab --port=P --no-browser`` running; yields (port, url, output)."""
    if os.name != "posix":
        pytest.skip("stopping the server's process group needs POSIX")
    home = tmp_path_factory.mktemp("lab-home")
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    log_path = home / "lab.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.open_lab", f"--port={port}", "--ServerApp.port_retries=0",
             "--no-browser"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            pattern = re.compile(rf"http://[^\s/]+:{port}/lab\?token=\w+")
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not pattern.search(output := log_path.read_text()):
                if process.poll() is not None:
                    pytest.fail(f"make lab's command exited with {process.returncode}:\n{output[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no URL with a token after {STARTUP_TIMEOUT:.0f} s:\n{output[-3000:]}")
                time.sleep(0.2)
            yield port, pattern.search(output).group(0), output
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def test_the_command_binds_to_localhost_keeps_the_token_and_allows_root_only_for_root():
    for as_root in (False, True):
        cmd = lab_command(as_root=as_root)
        assert cmd[1:4] == ["-m", "jupyter", "lab"] and cmd[-1] == "README.md"
        assert "--ip=127.0.0.1" in cmd
        assert ("--allow-root" in cmd) == as_root
        assert not any("token" in arg or "password" in arg for arg in cmd)
    assert lab_command(["--port=9999"], as_root=False)[-2] == "--port=9999"


def test_make_lab_runs_this_command():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    assert recipe.strip() == "$(BIN)/python -m tools.open_lab"


def test_prints_a_token_url_on_localhost(lab):
    port, url, output = lab
    assert url.startswith(f"http://127.0.0.1:{port}/lab?token=")
    hosts = set(re.findall(rf"http://([^\s/:]+):{port}/", output))
    assert hosts <= {"127.0.0.1"}, f"the server announces other addresses: {hosts}"
    assert len(url.split("token=")[1]) >= 32


def test_says_so_when_it_passes_allow_root(lab):
    _, _, output = lab
    if running_as_root():
        assert ROOT_NOTE in output.splitlines()
        assert "Running as root is not recommended" not in output
    else:
        assert ROOT_NOTE not in output


def test_refuses_requests_without_the_token(lab):
    port, url, _ = lab
    token = url.split("token=")[1]
    base = f"http://127.0.0.1:{port}"
    assert _status(f"{base}/api/status") == 403
    assert _status(f"{base}/api/contents") == 403
    assert _status(f"{base}/api/status?token=wrong{token}") == 403
    assert _status(f"{base}/api/status?token={token}") == 200


def test_listens_on_localhost_only(lab):
    port, _, _ = lab
    address = _other_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(5)
        s.connect((address, port))
