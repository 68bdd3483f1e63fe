"""Static reveal.js decks of the solution notebooks, in build/slides/, that open offline.

Run from the repository root (``make slides``)::

    python -m tools.slides                      # every solution notebook
    python -m tools.slides 01-self-attention    # some of them
    python -m tools.slides --out /tmp/decks

Then open ``build/slides/01-self-attention.slides.html`` in a browser: no network needed.

How: nbconvert's slides exporter (the cells' ``slideshow`` metadata makes the slides), with
every script and style sheet served from a local copy next to the decks instead of a CDN:
reveal.js, MathJax 2 (nbconvert's reveal template speaks MathJax 2's API), RequireJS and
jQuery, fetched once from the npm registry with ``npm pack`` at the pinned versions below
into ``build/vendor/`` (a cache; nothing is committed) and unpacked into
``build/slides/_static/``. The template's Mermaid import (a CDN module, unused here) is
left out. ``images/`` is copied to ``build/slides/images/`` and the notebooks' ``../images/``
links point there; links between chapters point at their decks. Widgets show their static
figure (the cell before each live explorer): a static deck has no kernel.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "slides"
VENDOR = ROOT / "build" / "vendor"
STATIC = "_static"
#: npm packages and the version of each that the decks use
PACKAGES = {"reveal.js": "4.6.0", "mathjax": "2.7.9", "requirejs": "2.3.8", "jquery": "3.7.1"}
#: the parts of each package the decks load (paths inside the package)
PARTS = {
    "reveal.js": ["dist", "plugin/notes"],
    "mathjax": ["MathJax.js", "config", "extensions", "jax/input/TeX", "jax/output/CommonHTML",
                "jax/element", "fonts/HTML-CSS/TeX/woff", "localization/en"],
    "requirejs": ["require.js"],
    "jquery": ["dist/jquery.min.js"],
}
URLS = {
    "reveal_url_prefix": f"{STATIC}/reveal.js",
    "mathjax_url": f"{STATIC}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    "require_js_url": f"{STATIC}/requirejs/require.js",
    "jquery_url": f"{STATIC}/jquery/dist/jquery.min.js",
}
# nbconvert's reveal template, without its Mermaid import from a CDN
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

__all__ = ["build_decks", "fetch_vendor"]


def _tarball(name: str, version: str) -> Path:
    return VENDOR / f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"


def fetch_vendor() -> dict[str, Path]:
    """The pinned npm tarballs in build/vendor/, packed with ``npm pack`` if not there yet."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    tarballs = {}
    for name, version in PACKAGES.items():
        path = _tarball(name, version)
        if not path.is_file():
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit(f"make slides needs npm once, to fetch {name}@{version} from the "
                                 "npm registry: sudo apt-get install npm")
            subprocess.run([npm, "pack", "--silent", "--pack-destination", str(VENDOR),
                            f"{name}@{version}"], check=True, stdout=subprocess.DEVNULL)
            if not path.is_file():
                raise SystemExit(f"npm pack {name}@{version} did not write {path}")
        tarballs[name] = path
    return tarballs


def _unpack(tarball: Path, parts: list[str], dest: Path) -> None:
    """Extract ``parts`` (files or folders inside the npm package) of ``tarball`` to ``dest``."""
    with tarfile.open(tarball) as tar:
        members = []
        for m in tar.getmembers():
            inner = m.name.split("/", 1)[1] if "/" in m.name else ""  # strip "package/"
            if (m.isfile() or m.isdir()) and any(inner == p or inner.startswith(p + "/")
                                                 for p in parts):
                m.name = inner
                members.append(m)
        tar.extractall(dest, members=members, filter="data")


def _install_static(out: Path) -> None:
    tarballs = fetch_vendor()
    static = out / STATIC
    stamp = static / ".versions"
    wanted = repr(sorted(PACKAGES.items()))
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    shutil.rmtree(static, ignore_errors=True)
    for name, tarball in tarballs.items():
        _unpack(tarball, PARTS[name], static / name)
    stamp.write_text(wanted)


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import SlidesExporter

    return SlidesExporter(
        extra_loaders=[DictLoader({"course-reveal.html.j2": TEMPLATE})],
        template_file="course-reveal.html.j2",
        reveal_scroll=True, reveal_transition="none", reveal_theme="white",
        exclude_input_prompt=True, exclude_output_prompt=True,
        **URLS)


def _relink(html: str) -> str:
    """Images from images/ next to the decks; chapter links to the chapters' decks."""
    html = re.sub(r'(src=["\'])\.\./images/', r"\1images/", html)
    return re.sub(r'(href=["\'])(\d\d-[\w-]+)\.ipynb', r"\1\2.slides.html", html)


def build_decks(names: list[str] | None = None, out: Path = OUT) -> list[Path]:
    """Write ``out/NN-name.slides.html`` for each solution notebook (all if ``names`` is None)."""
    import nbformat

    notebooks = sorted((ROOT / "solutions").glob("[0-9][0-9]-*.ipynb"))
    if names:
        notebooks = [p for p in notebooks if p.stem in names or p.name in names]
        missing = set(names) - {p.stem for p in notebooks} - {p.name for p in notebooks}
        if missing:
            raise SystemExit(f"no solution notebook named {sorted(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    _install_static(out)
    shutil.copytree(ROOT / "images", out / "images", dirs_exist_ok=True)
    exporter, decks = _exporter(), []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        deck = out / f"{path.stem}.slides.html"
        deck.write_text(_relink(html), encoding="utf-8")
        decks.append(deck)
    return decks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all solutions)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    for deck in build_decks(args.names or None, args.out):
        print(deck.relative_to(Path.cwd()) if deck.is_relative_to(Path.cwd()) else deck)
    return 0


if __name__ == "__main__":
    sys.exit(main())
