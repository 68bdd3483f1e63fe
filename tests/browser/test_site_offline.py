"""`make site` in headless Chromium with every request outside the machine blocked: on every
page the maths is typeset (no raw TeX left), every image decodes, no script fails and no
request tries to leave."""

from __future__ import annotations

import shutil

import pytest

from tools import site, static_html

# raw TeX that MathJax should have typeset: $...$ or a command such as \frac, outside code
_RAW_TEX_JS = r"""() => {
  const texts = [...document.querySelectorAll('.jp-RenderedMarkdown, .jp-RenderedHTML')].map(e => {
    const c = e.cloneNode(true);
    c.querySelectorAll('code, pre, script, style, .MathJax_CHTML, .MathJax_Preview')
     .forEach(x => x.remove());
    return c.textContent;
  }).join('\n');
  const found = texts.match(
    /\$[^$\n]{1,80}\$|\\(?:frac|sqrt|top|cdot|times|mathrm|text|left|right|sum|exp|log|operatorname|begin|dots|le|ge|in)\b/g);
  return found ? found.slice(0, 5) : [];
}"""

_BROKEN_IMAGES_JS = """() => [...document.images]
  .filter(i => !i.complete || i.naturalWidth === 0)
  .map(i => (i.getAttribute('src') || '').slice(0, 80))"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    if not static_html.vendor_cached(site.NPM) and shutil.which("npm") is None:
        pytest.skip("npm not found: make site fetches MathJax with it once")
    return site.build_site(out=tmp_path_factory.mktemp("site"))


def test_every_page_works_offline_with_maths_typeset_and_images_decoded(browser, pages):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        remote, errors = [], []

        def only_files(route):
            if route.request.url.startswith(("file://", "data:")):
                route.continue_()
            else:
                remote.append(route.request.url)
                route.abort()

        page.route("**/*", only_files)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            if path.name != "index.html":
                # MathJax runs its queue in order: this resolves once the page is typeset
                page.wait_for_function("() => window.MathJax && MathJax.Hub")
                page.evaluate("() => new Promise(done => MathJax.Hub.Queue(done))")
                assert page.locator(".MathJax_CHTML").count() > 0, f"{path.name}: no maths typeset"
                assert page.locator(".mjx-merror, .MathJax_Error").count() == 0, (
                    f"{path.name}: MathJax could not typeset some maths")
                assert page.evaluate(_RAW_TEX_JS) == [], f"{path.name}: raw TeX is visible"
                assert page.locator("nav.course-nav a[rel=next], nav.course-nav a[rel=prev]").count()
            assert page.locator("img").count() > 0
            assert page.evaluate(_BROKEN_IMAGES_JS) == [], f"{path.name}: images that did not load"
            assert remote == [], f"{path.name} asked the network for {remote}"
            assert errors == [], f"{path.name}: JavaScript errors {errors}"
    finally:
        context.close()
