"""What the offline HTML builds share (``make slides``, ``make site``).

* **Vendored scripts.** Every script, style sheet and font a page loads is served from a
  local copy next to it: npm packages at the pinned versions of :data:`PACKAGES`, fetched
  once from the npm registry with ``npm pack`` into ``build/vendor/`` (a cache; nothing is
  committed), of which the parts in :data:`PARTS` are unpacked into ``<out>/_static/<name>/``
  (:func:`install_static`). Nothing is downloaded when a page is opened.
* **Notebooks for a page** (:func:`for_the_web`): alt text on every figure, from the prose
  that introduces it (:func:`alt_text`); each explorer as one line under its static figure.
* **Links.** ``images/`` is copied next to the pages (:func:`copy_images`) and the
  notebooks' ``../images/`` links point there; links between chapters point at the
  chapters' pages (:func:`relink`).
"""

from __future__ import annotations

import copy
import html
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "build" / "vendor"
STATIC = "_static"
#: npm packages and the version of each that the pages use. MathJax 2: nbconvert's
#: templates speak MathJax 2's API (``MathJax.Hub.Config``).
PACKAGES = {"reveal.js": "4.6.0", "mathjax": "2.7.9", "requirejs": "2.3.8", "jquery": "3.7.1"}
#: the parts of each package the pages load (paths inside the package)
PARTS = {
    "reveal.js": ["dist", "plugin/notes"],
    "mathjax": ["MathJax.js", "config", "extensions", "jax/input/TeX", "jax/output/CommonHTML",
                "jax/element", "fonts/HTML-CSS/TeX/woff", "localization/en"],
    "requirejs": ["require.js"],
    "jquery": ["dist/jquery.min.js"],
}
#: where the pages find them (relative to the page), for nbconvert's exporters
MATHJAX_URL = f"{STATIC}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
REQUIRE_JS_URL = f"{STATIC}/requirejs/require.js"
JQUERY_URL = f"{STATIC}/jquery/dist/jquery.min.js"
REVEAL_URL = f"{STATIC}/reveal.js"

__all__ = ["PACKAGES", "PARTS", "alt_text", "copy_images", "fetch_vendor", "for_the_web",
           "install_static", "relink", "solution_notebooks", "tarball"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: the text/plain of an explorer's output (utils.widgets.Explorer)
EXPLORER_TEXT = "explorer: run the notebook to interact"
#: the class of the explorer's "rerun this cell" output (utils.widgets._core)
RERUN_CLASS = "course-rerun"
WIDGET_NOTE = ("Live explorer: in Jupyter this cell shows the figure above with its controls "
               "(run the notebook to use them).")
#: a template block for nbconvert's HTML templates: a PNG's ``alt`` from its output metadata
#: (set by :func:`for_the_web`)
PNG_ALT_BLOCK = """
{% block data_png scoped %}
{%- set alt = output | get_metadata('alt', 'image/png') -%}
{%- if alt -%}
{{ super() | replace('<img ', '<img alt="' ~ (alt | escape_html) ~ '" ', 1) }}
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock data_png %}
"""


def tarball(name: str, version: str) -> Path:
    """Where ``npm pack name@version`` leaves its tarball in the cache."""
    return VENDOR / f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"


def vendor_cached(names) -> bool:
    """True if the tarballs of the packages ``names`` are all in the cache already."""
    return all(tarball(n, PACKAGES[n]).is_file() for n in names)


def fetch_vendor(names=None) -> dict[str, Path]:
    """The pinned npm tarballs of ``names`` (default: all) in build/vendor/, packed with
    ``npm pack`` if not there yet."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    tarballs = {}
    for name in names or PACKAGES:
        version = PACKAGES[name]
        path = tarball(name, version)
        if not path.is_file():
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit(f"npm is needed once, to fetch {name}@{version} from the npm "
                                 "registry: sudo apt-get install npm")
            subprocess.run([npm, "pack", "--silent", "--pack-destination", str(VENDOR),
                            f"{name}@{version}"], check=True, stdout=subprocess.DEVNULL)
            if not path.is_file():
                raise SystemExit(f"npm pack {name}@{version} did not write {path}")
        tarballs[name] = path
    return tarballs


def _unpack(archive: Path, parts: list[str], dest: Path) -> None:
    """Extract ``parts`` (files or folders inside the npm package) of ``archive`` to ``dest``."""
    with tarfile.open(archive) as tar:
        members = []
        for m in tar.getmembers():
            inner = m.name.split("/", 1)[1] if "/" in m.name else ""  # strip "package/"
            if (m.isfile() or m.isdir()) and any(inner == p or inner.startswith(p + "/")
                                                 for p in parts):
                m.name = inner
                members.append(m)
        tar.extractall(dest, members=members, filter="data")


def install_static(out: Path, names) -> Path:
    """Unpack the packages ``names`` into ``out/_static/`` (once per set of versions)."""
    names = sorted(names)
    static = out / STATIC
    stamp = static / ".versions"
    wanted = repr([(n, PACKAGES[n]) for n in names])
    if stamp.is_file() and stamp.read_text() == wanted:
        return static
    tarballs = fetch_vendor(names)
    shutil.rmtree(static, ignore_errors=True)
    for name, archive in tarballs.items():
        _unpack(archive, PARTS[name], static / name)
    stamp.write_text(wanted)
    return static


def copy_images(out: Path) -> None:
    """``images/`` next to the pages."""
    shutil.copytree(ROOT / "images", out / "images", dirs_exist_ok=True)


def relink(html: str, suffix: str, readme: str | None = None) -> str:
    """Images from images/ next to the pages; a chapter's link ``NN-name.ipynb`` to its page
    ``NN-name<suffix>``; the main page's link ``../README.md`` to ``readme`` (if given)."""
    html = re.sub(r'(src=["\'])\.\./images/', r"\1images/", html)
    html = re.sub(r'(href=["\'])(?:\.\./(?:solutions|chapters)/)?(\d\d-[\w-]+)\.ipynb',
                  rf"\1\2{suffix}", html)
    if readme is not None:
        html = re.sub(r'(href=["\'])\.\./README\.md', rf"\1{readme}", html)
    return html


def solution_notebooks(names: list[str] | None = None) -> list[Path]:
    """The solution notebooks (all, or those whose name or stem is in ``names``), sorted."""
    notebooks = sorted(p for p in (ROOT / "solutions").glob("[0-9][0-9]-*.ipynb")
                       if ".backup-" not in p.name)
    if names:
        notebooks = [p for p in notebooks if p.stem in names or p.name in names]
        missing = set(names) - {p.stem for p in notebooks} - {p.name for p in notebooks}
        if missing:
            raise SystemExit(f"no solution notebook named {sorted(missing)}")
    return notebooks


# ------------------------------------------------------------------------- notebooks


_TEX = [(r"\cdot", "·"), (r"\times", "×"), (r"\sqrt", "√"), (r"^\top", "ᵀ"), (r"\top", "ᵀ"),
        (r"\dots", "…"), (r"\ldots", "…"), (r"\le", "≤"), (r"\ge", "≥"), (r"\ne", "≠"),
        (r"\to", "→"), (r"\infty", "∞"), (r"\!", ""), (r"\,", " "), (r"\;", " "),
        (r"\left", ""), (r"\right", "")]


def _plain(markdown: str) -> str:
    """Markdown with maths as readable plain text (for alt text)."""
    text = re.sub(r"<[^>]+>", "", markdown)  # HTML tags
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    for tex, plain in _TEX:
        text = text.replace(tex, plain)
    text = re.sub(r"\\(?:text|mathrm|operatorname|mathbf|mathit)\{([^}]*)\}", r"\1", text)
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)  # other commands: their name
    text = re.sub(r"[$*`{}]|\\", "", text)
    return re.sub(r"\s+", " ", text).strip()


def alt_text(markdown: str, limit: int = 400) -> str:
    """Alt text for a figure, from the prose that introduces it: the last paragraph of
    ``markdown`` (the markdown cell before the figure's code cell) as plain text, cut at a
    sentence end within ``limit`` characters."""
    paragraphs = [p for p in re.split(r"\n\s*\n", markdown.strip())
                  if p.strip() and not p.lstrip().startswith(("#", "|", "<p", "---"))]
    if not paragraphs:
        heading = re.findall(r"^#+\s*(.+)$", markdown, flags=re.MULTILINE)
        return f"Figure: {_plain(heading[-1])}" if heading else "Figure"
    text = _plain(paragraphs[-1]).rstrip(":").strip()
    if len(text) > limit:
        cut = max(text.rfind(". ", 0, limit), text.rfind("; ", 0, limit))
        text = text[: cut + 1] if cut > 0 else text[: limit - 1] + "…"
    return f"Figure: {text}"


def _is_explorer(output) -> bool:
    data = output.get("data", {})
    return WIDGET_MIME in data or EXPLORER_TEXT in "".join(data.get("text/plain", ""))


def _is_rerun_line(output) -> bool:
    return f'class="{RERUN_CLASS}"' in "".join(output.get("data", {}).get("text/html", ""))


def for_the_web(nb):
    """A copy of the executed notebook ``nb`` ready for a static page: alt text on every
    figure, each explorer as one line under its static figure (the cell before it). The
    live deck skips an explorer's static figure (``utils.authoring.slide_types``); a static
    page has no live explorer, so it shows the figure."""
    from nbformat.v4 import new_output

    nb = copy.deepcopy(nb)
    intro = ""  # the last markdown cell seen
    for cell in nb.cells:
        if (cell.metadata.get("slideshow", {}).get("slide_type") == "skip"
                and ".figure_at(" in cell.source):
            cell.metadata.pop("slideshow")
        if cell.cell_type == "markdown":
            intro = cell.source
            continue
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if _is_rerun_line(output):
                continue
            if _is_explorer(output):
                outputs.append(new_output("display_data", data={
                    "text/html": f'<p class="course-widget-note">{html.escape(WIDGET_NOTE)}</p>',
                    "text/plain": WIDGET_NOTE}))
                continue
            outputs.append(output)
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        for i, output in enumerate(figures):
            alt = alt_text(intro)
            if len(figures) > 1:
                alt += f" (figure {i + 1} of {len(figures)})"
            output.setdefault("metadata", {}).setdefault("image/png", {})["alt"] = alt
        cell.outputs = outputs
    return nb
