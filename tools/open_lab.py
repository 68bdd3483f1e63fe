"""Open the course in JupyterLab: the command behind ``make lab``.

``python -m tools.open_lab [JUPYTER ARGS...]`` starts ``jupyter lab`` on 127.0.0.1 with Jupyter's
token authentication on (the token is in the URL it prints), showing README.md. Extra arguments
go to Jupyter unchanged, e.g. ``--port=8899 --no-browser``.

Run as root (usual in containers, cloud VMs and Binder-like images), Jupyter refuses to start
unless it gets ``--allow-root``; this script passes it then and prints one line saying so.
Nothing else changes: the server still listens on 127.0.0.1 only, with the token on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOT_NOTE = ("make lab: running as root, so Jupyter gets --allow-root "
             "(still on 127.0.0.1 only, with token authentication)")


def running_as_root() -> bool:
    """True for the POSIX superuser (uid 0); False on Windows, which has no uid."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def lab_command(extra: list[str] | tuple[str, ...] = (), as_root: bool | None = None) -> list[str]:
    """The ``jupyter lab`` command line: localhost only, token on, ``--allow-root`` for root.

    ``extra`` is appended (Jupyter's own options); ``as_root`` defaults to
    :func:`running_as_root`.
    """
    if as_root is None:
        as_root = running_as_root()
    return [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1",
            *(["--allow-root"] if as_root else []), *extra, "README.md"]


def main(argv: list[str] | None = None) -> int:
    extra = sys.argv[1:] if argv is None else argv
    as_root = running_as_root()
    cmd = lab_command(extra, as_root)
    if as_root:
        print(ROOT_NOTE, flush=True)
    os.chdir(ROOT)
    if os.name == "posix":  # become Jupyter: Ctrl-C and signals reach it directly, as before
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)  # Windows has no exec that keeps the console


if __name__ == "__main__":
    sys.exit(main())
