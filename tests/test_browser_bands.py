"""The band picker in headless Chromium: an N-band collection's pictures show the bands chosen in the page."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import test_browser
from browser import new_page
from conftest import free_port
from PIL import Image
from test_browser import WAIT_MS

from galsearch.embedder import ingest, open_collection
from galsearch.ui.app import launch

pytestmark = pytest.mark.slow
BANDS = ["g", "r", "i", "z", "y"]
PICKER_CHANGED = "(old) => (document.querySelector('#galaxy-picker img')?.src ?? old) !== old"

browser = test_browser.browser  # the fixture of the other browser tests: Chromium


@pytest.fixture(scope="module")
def five_bands(tmp_path_factory) -> Path:
    """24 round galaxies of 5 named bands, each band of a galaxy as bright as a random level, so that the
    colour of a picture's centre tells which bands it shows."""
    folder = tmp_path_factory.mktemp("bands")
    rng = np.random.default_rng(0)
    levels = rng.uniform(0.1, 1.0, (24, 1, 1, 5))
    y, x = np.mgrid[:16, :16] - 7.5
    profile = np.exp(-(x**2 + y**2) / 18)[None, :, :, None]
    images = (levels * profile + rng.normal(0, 0.002, (24, 16, 16, 5))).astype(np.float32)
    np.savez(folder / "cubes.npz", images=images, band_names=np.array(BANDS))
    ingest(folder / "cubes.npz", folder / "coll", progress=False)
    return folder / "coll"


def shown_pictures(page) -> list[np.ndarray]:
    """The pictures of the Search tab's galaxy picker, decoded as the browser received them."""
    sources = page.locator("#galaxy-picker img").evaluate_all("(imgs) => imgs.map((i) => i.src)")
    pictures = []
    for source in sources:
        data = page.evaluate(
            "async (url) => { const b = await (await fetch(url)).arrayBuffer();"
            " return btoa(String.fromCharCode(...new Uint8Array(b))); }",
            source,
        )
        pictures.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
    return pictures


def centres(pictures: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """The mean colour of the central 6 x 6 pixels of each picture."""
    return np.array([np.asarray(p, dtype=float)[5:11, 5:11].mean(axis=(0, 1)) for p in pictures])


def mismatch(pictures: list[np.ndarray], colours: np.ndarray) -> float:
    """How far the pictures are from showing galaxies of these centre colours (one row a galaxy): the
    median over pictures of the largest channel difference to the closest galaxy. The gallery's lossy
    WebP moves a centre by up to about 10; a picture in other bands is tens away."""
    shown = centres(pictures)
    return float(np.median(np.abs(shown[:, None] - colours[None]).max(axis=2).min(axis=1)))


def test_the_band_picker_changes_what_every_picture_shows(browser, five_bands):
    coll = open_collection(five_bands)
    assert coll.bands == BANDS and coll.display_rgb == ["y", "i", "g"]
    port = free_port()
    app = launch(five_bands, port=port, block=False)
    page = new_page(browser, WAIT_MS)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#galaxy-picker img").first.wait_for()
        stored = centres(open_collection(five_bands).images)  # each galaxy's colour, band by band
        assert mismatch(shown_pictures(page), stored[:, [4, 2, 0]]) < 10
        page.get_by_text("Bands shown").click()
        for colour, band in (("red", "z"), ("green", "r"), ("blue", "g")):
            page.locator(f"#bands-{colour} input").click()
            page.locator(f"#bands-{colour}").get_by_role("option", name=band, exact=True).click()
        page.locator("#bands-show").click()
        page.locator("#bands-status").get_by_text("z, r, g").wait_for()
        assert open_collection(five_bands).display_rgb == ["z", "r", "g"]
        before = page.locator("#galaxy-picker img").first.evaluate("(i) => i.src")
        page.reload()  # the picker is filled at each page load, after the page's first drawing
        page.wait_for_function(PICKER_CHANGED, arg=before)
        pictures = shown_pictures(page)
        new, old = mismatch(pictures, stored[:, [3, 1, 0]]), mismatch(pictures, stored[:, [4, 2, 0]])
        assert new < 10 and old > 20
    finally:
        page.close()
        app.close()
