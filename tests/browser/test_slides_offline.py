"""A static deck from `make slides` works in the browser with the network cut off."""

from __future__ import annotations

import shutil

import pytest

from tools import slides, static_html


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    if not static_html.vendor_cached(slides.NPM) and shutil.which("npm") is None:
        pytest.skip("npm not found: make slides fetches reveal.js and MathJax with it once")
    first = static_html.solution_notebooks()[0].stem
    (path,) = slides.build_decks([first], out=tmp_path_factory.mktemp("slides"))
    return path


def test_deck_renders_offline_with_math_and_images(browser, deck):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        page = context.new_page()
        remote, errors = [], []

        def only_files(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                remote.append(route.request.url)
                route.abort()

        page.route("**/*", only_files)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(deck.as_uri())
        page.wait_for_selector(".reveal.ready", state="attached")  # reveal.js initialised
        page.wait_for_function("() => document.querySelectorAll('.MathJax_CHTML').length > 0")
        assert page.locator(".slides > section").count() > 3
        broken = page.evaluate("""() => [...document.images]
            .filter(i => i.loading !== 'lazy' && (!i.complete || i.naturalWidth === 0))
            .map(i => i.getAttribute('src').slice(0, 80))""")
        assert broken == [], f"images that did not load: {broken}"
        assert remote == [], f"the deck asked the network for {remote}"
        assert errors == [], f"JavaScript errors: {errors}"
    finally:
        context.close()
